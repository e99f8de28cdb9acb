"""TLS served directly (--tls-cert/--tls-key): clients chat over wss://, and plain
HTTP/WebSocket on the same port gets nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import secrets
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from instantroom.client.connection import RoomClient
from instantroom.protocol.codes import CloseCode
from instantroom.protocol.kdf import DeviceKey
from instantroom.testing import (
    LOOPBACK,
    assert_exited_cleanly,
    fresh_room,
    raw_client,
    run,
    running_relay,
    upgrade_request,
)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "instantroom test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_clients_chat_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    room = fresh_room()
    with running_relay("--tls-cert", str(cert), "--tls-key", str(key)) as relay:
        assert "tls=True" in relay.log_text()
        url = f"https://{LOOPBACK}:{relay.port}"

        async def scenario() -> None:
            alice_key = DeviceKey.from_private_bytes(secrets.token_bytes(32))
            async with (
                RoomClient(url, alice_key, "alice", ssl_context=trust) as alice,
                RoomClient(
                    url,
                    DeviceKey.from_private_bytes(secrets.token_bytes(32)),
                    "bob",
                    ssl_context=trust,
                ) as bob,
            ):
                await alice.join(room)
                await bob.join(room)
                await alice.send_text(room.room_id, "over TLS")
                async for received in bob.messages():
                    assert received.message.text == "over TLS"
                    assert received.fingerprint == alice_key.fingerprint
                    break

            # A relay-side close reaches a TLS client too (TLS cannot half-close).
            wss = f"wss://{LOOPBACK}:{relay.port}/ws"
            async with raw_client(wss, ssl=trust) as texter:
                await texter.join(room)
                await texter.send("text")
                assert (await texter.closed()).code == CloseCode.POLICY_VIOLATION

            # Plain text on the TLS port is not a request.
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            writer.write(upgrade_request(relay.port))
            async with asyncio.timeout(5):
                with contextlib.suppress(ConnectionResetError):
                    assert not (await reader.read()).startswith(b"HTTP/1.1 101")
            writer.close()

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_socket_that_never_starts_tls_is_closed_at_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    """Before its TLS handshake a socket is no connection the relay counts: the handshake
    timeout bounds how long it may sit there (asyncio's default would be 60 s)."""
    cert, key = self_signed(tmp_path)
    flags = ("--tls-cert", str(cert), "--tls-key", str(key), "--handshake-timeout", "1")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            try:
                async with asyncio.timeout(10):
                    with contextlib.suppress(ConnectionResetError):
                        assert await reader.read() == b""
            finally:
                writer.close()

        run(scenario())
    assert_exited_cleanly(relay)


async def closed_soon(reader: asyncio.StreamReader) -> bool:
    """Whether the relay closes this socket within a second."""
    try:
        async with asyncio.timeout(1):
            with contextlib.suppress(ConnectionResetError):
                await reader.read()
        return True
    except TimeoutError:
        return False


def test_sockets_waiting_to_start_tls_count_toward_the_relay_s_limit(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with running_relay(
        "--tls-cert", str(cert), "--tls-key", str(key), "--max-connections", "3"
    ) as relay:

        async def scenario() -> None:
            idle = [await asyncio.open_connection(LOOPBACK, relay.port) for _ in range(5)]
            outcomes = await asyncio.gather(*(closed_soon(reader) for reader, _ in idle))
            assert sorted(outcomes) == [False] * 3 + [True] * 2
            for _, writer in idle:
                writer.close()

        run(scenario())
    assert_exited_cleanly(relay)


def test_sockets_waiting_to_start_tls_count_against_their_address(tmp_path: Path) -> None:
    """Each connection is counted from its TCP accept, before its TLS handshake: sockets
    that never start one cannot escape the per-address limit."""
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    flags = ("--tls-cert", str(cert), "--tls-key", str(key), "--connections-per-address", "4")
    room = fresh_room()
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            idle = [await asyncio.open_connection(LOOPBACK, relay.port) for _ in range(10)]
            outcomes = await asyncio.gather(*(closed_soon(reader) for reader, _ in idle))
            assert sorted(outcomes) == [False] * 4 + [True] * 6
            for _, writer in idle:
                writer.close()
            # Their places are given back: a client gets in over TLS.
            device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
            url = f"https://{LOOPBACK}:{relay.port}"
            async with RoomClient(url, device, "alice", ssl_context=trust) as alice:
                async with asyncio.timeout(10):
                    assert (await alice.join(room)).members == 1

        run(scenario())
    assert_exited_cleanly(relay)


def test_behind_a_proxy_over_tls_as_many_connections_as_allowed_get_in(tmp_path: Path) -> None:
    """With --trust-proxy the address is known only from the request: a TLS connection
    is then counted once toward the connections in all, never twice."""
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    flags = ("--tls-cert", str(cert), "--tls-key", str(key), "--trust-proxy")
    room = fresh_room()
    with running_relay(*flags, "--max-connections", "2") as relay:

        async def scenario() -> None:
            wss = f"wss://{LOOPBACK}:{relay.port}/ws"
            forwarded = {"X-Forwarded-For": "203.0.113.5"}
            async with (
                raw_client(wss, ssl=trust, additional_headers=forwarded) as first,
                raw_client(wss, ssl=trust, additional_headers=forwarded) as second,
            ):
                await first.join(room)
                assert (await second.join(room)).members == 2

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_certificate_that_cannot_be_loaded_stops_serve_and_names_its_files(
    tmp_path: Path,
) -> None:
    """A file the relay cannot read (root's own, under a unit's dynamic user) or a key of
    another certificate: one line naming the files, exit 2, no traceback."""
    cert, key = self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed(other)
    missing = tmp_path / "missing.pem"
    for cert_file, key_file, why in (
        (missing, key, "No such file or directory"),
        (cert, other_key, "KEY_VALUES_MISMATCH"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "instantroom", "serve", "--host", LOOPBACK, "--port", "0",
             "--tls-cert", str(cert_file), "--tls-key", str(key_file)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert str(cert_file) in done.stderr
        assert why in done.stderr
        assert "Traceback" not in done.stderr


def test_with_workers_a_certificate_that_cannot_be_loaded_stops_serve_in_one_line(
    tmp_path: Path,
) -> None:
    """Each of the --workers loaded the files itself: each failed with a traceback, and serve
    with exit 1. Checked once, before any worker starts, as with one process."""
    _, key = self_signed(tmp_path)
    missing = tmp_path / "missing.pem"
    with socket.socket() as probe:  # a fixed port, as --workers needs; nothing binds it
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "instantroom", "serve", "--host", LOOPBACK, "--port", str(port),
         "--workers", "2", "--backplane", "redis://127.0.0.1:1/0",
         "--tls-cert", str(missing), "--tls-key", str(key)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"instantroom: --tls-cert/--tls-key: cannot load {missing} and {key} "
        "(No such file or directory)."
    ]

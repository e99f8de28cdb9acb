"""--tls-self-signed: a certificate made in memory at start, its fingerprint logged.

A client that trusts nothing checks that the certificate it is served is the one whose
SHA-256 fingerprint the relay logged (what a user does on a phone), then joins a room over
wss:// and asks /healthz over https://. The relay writes no file anywhere it could.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from instantroom.testing import (
    LOOPBACK,
    TIMEOUT,
    assert_exited_cleanly,
    fresh_room,
    raw_client,
    read_response_head,
    run,
    running_relay,
)

FINGERPRINT = r"event=relay\.tls_self_signed\b.*\bsha256=([0-9A-F]{2}(?::[0-9A-F]{2}){31})\b"


def trusting_nothing() -> ssl.SSLContext:
    """TLS without certificate checks: the caller compares the fingerprint itself."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_fingerprint(ssl_object: ssl.SSLObject | None) -> str:
    assert ssl_object is not None, "not a TLS connection"
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).digest().hex(":").upper()


def served_certificate(ssl_object: ssl.SSLObject | None) -> x509.Certificate:
    assert ssl_object is not None
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def https_get(port: int, path: str, context: ssl.SSLContext, expected: str) -> bytes:
    """GET over TLS; the served certificate must have the ``expected`` fingerprint."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=context)
        try:
            assert served_fingerprint(writer.get_extra_info("ssl_object")) == expected
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            status, headers = await read_response_head(reader)
            assert status == 200
            return await reader.readexactly(int(headers["content-length"]))
        finally:
            writer.close()


def files_under(*directories: Path) -> list[Path]:
    return [path for directory in directories for path in directory.rglob("*")]


def test_self_signed_relay_serves_the_logged_certificate(tmp_path: Path) -> None:
    cwd, home, tmp = tmp_path / "cwd", tmp_path / "home", tmp_path / "tmp"
    for directory in (cwd, home, tmp):
        directory.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(tmp), "XDG_RUNTIME_DIR": str(tmp)}
    room = fresh_room()
    with running_relay("--tls-self-signed", env=env, cwd=cwd) as relay:
        assert "tls=True" in relay.wait_for_log(r"event=relay\.started")
        match = re.search(FINGERPRINT, relay.wait_for_log(FINGERPRINT))
        assert match is not None
        fingerprint = match.group(1)
        # The key and certificate went through a temporary file at most, gone at once.
        assert files_under(cwd, home, tmp) == []

        async def scenario() -> x509.Certificate:
            context = trusting_nothing()
            async with raw_client(f"wss://{LOOPBACK}:{relay.port}/ws", ssl=context) as alice:
                ssl_object = alice.ws.transport.get_extra_info("ssl_object")
                assert served_fingerprint(ssl_object) == fingerprint
                joined = await alice.join(room)
                assert joined.members == 1
                assert await alice.barrier() == []
                certificate = served_certificate(ssl_object)
            body = await https_get(relay.port, "/healthz", context, fingerprint)
            assert json.loads(body)["status"] == "ok"

            # A client that trusts only the certificate the user checked gets through,
            # for each name the certificate is made for ...
            trusted = ssl.create_default_context(
                cadata=certificate.public_bytes(serialization.Encoding.PEM).decode()
            )
            for name in ("localhost", LOOPBACK):
                _, writer = await asyncio.open_connection(
                    LOOPBACK, relay.port, ssl=trusted, server_hostname=name
                )
                writer.close()
            # ... and a client with the usual trust store refuses it.
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(
                    LOOPBACK, relay.port, ssl=ssl.create_default_context()
                )
            return certificate

        certificate = run(scenario())
        assert files_under(cwd, home, tmp) == []
    assert_exited_cleanly(relay)

    # What the certificate is: P-256, 30 days, for the local names and this host.
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert datetime.timedelta(days=30) <= lifetime <= datetime.timedelta(days=30, hours=1)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", socket.gethostname()} <= set(names.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address(LOOPBACK), ipaddress.ip_address("::1")} <= set(
        names.get_values_for_type(x509.IPAddress)
    )


def test_self_signed_conflicts_with_a_certificate(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ["INSTANTROOM_TLS_SELF_SIGNED"] = "yes"
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", "serve", "--host", LOOPBACK, "--port", "0",
         "--tls-cert", str(tmp_path / "cert.pem")],
        capture_output=True, text=True, env=environ, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--tls-self-signed" in result.stderr
    assert "--tls-cert" in result.stderr
    assert "Traceback" not in result.stderr
    assert "relay.started" not in result.stderr
    assert "Traceback" not in result.stderr  # refused before any worker starts


def test_self_signed_refuses_several_workers() -> None:
    """Each worker would make its own certificate: the fingerprint would change from one
    connection to the next. No worker starts serving."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = str(sock.getsockname()[1])
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", "serve", "--host", LOOPBACK, "--port", port,
         "--workers", "2", "--backplane", "redis://127.0.0.1:1/0", "--tls-self-signed"],
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "its own certificate" in result.stderr
    assert "relay.started" not in result.stderr
    assert "Traceback" not in result.stderr  # refused before any worker starts


@pytest.mark.parametrize("memfd", [True, False], ids=["in-memory", "no-memfd"])
def test_the_self_signed_key_never_touches_a_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, memfd: bool
) -> None:
    """The relay writes no file: with no temporary folder to be had, the context is still
    made (in memory), and it serves the certificate whose fingerprint it gives. Where
    memfd_create is refused (a sandbox), a private temporary file, gone at once, does."""
    import tempfile

    from instantroom.relay.tls import self_signed_context

    if memfd:
        monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/instantroom-test")
    else:

        def refused(*args: object) -> int:
            raise PermissionError("memfd_create is not allowed here")

        monkeypatch.setattr(os, "memfd_create", refused)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    context, fingerprint = self_signed_context()
    assert list(tmp_path.iterdir()) == []
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    server_side, client_side = socket.socketpair()
    with (
        context.wrap_socket(server_side, server_side=True, do_handshake_on_connect=False) as server,
        client.wrap_socket(client_side, do_handshake_on_connect=False) as peer,
    ):
        for sock in (server, peer):
            sock.setblocking(False)
        while True:  # both ends of one handshake, in turns, until each is done
            done = 0
            for sock in (server, peer):
                try:
                    sock.do_handshake()
                    done += 1
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if done == 2:
                break
        der = peer.getpeercert(binary_form=True)
    assert der is not None
    digest = hashlib.sha256(der).hexdigest().upper()
    assert fingerprint.replace(":", "").upper() == digest

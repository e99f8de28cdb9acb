"""``instantroom send`` and ``instantroom listen``, run as commands against a relay process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from instantroom.client.connection import RoomClient
from instantroom.client.keystore import KeyStore, StoredRoom
from instantroom.protocol import frames
from instantroom.protocol.codes import CloseCode
from instantroom.protocol.errors import ChecksumMismatch
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.protocol.minikey import (
    BASE58_ALPHABET,
    format_minikey,
    make_minikey,
    parse_minikey,
)
from instantroom.protocol.session import PresenceChanged
from instantroom.testing import (
    LOOPBACK,
    RawClient,
    RelayProcess,
    assert_exited_cleanly,
    raw_client,
    run,
    running_relay,
    text_publish,
)
from tests.client.test_room_client import FakeRelay, Peer, joined_then_closed
from tests.relay.test_tls import self_signed

FINGERPRINT = re.compile(r"^[A-Z2-7]{4}(-[A-Z2-7]{4}){3}$")


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}


def signals_at_default() -> None:
    """For ``preexec_fn``: the signals that stop a listen or a chat start at their default,
    as from a terminal, whatever the test runner's are. A process inherits the signals its
    parent ignores (nohup ignores SIGHUP, a shell's background job SIGINT), listen and chat
    keep ignoring them, and a test that sends one waited for an end that never came."""
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@contextlib.asynccontextmanager
async def reaped(process: asyncio.subprocess.Process) -> AsyncIterator[None]:
    """Kill ``process`` (-9) if it still runs when the block ends, however it ends: none
    is left behind."""
    try:
        yield
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process, signum: int, within: float = 20.0) -> int:
    """Send ``signum`` and return the exit status; a process still running ``within``
    seconds, or when the test gives up, is killed (-9): none is left behind."""
    async with reaped(process):
        process.send_signal(signum)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await process.wait()
    assert process.returncode is not None
    return process.returncode


async def ended(process: asyncio.subprocess.Process, within: float = 20.0) -> tuple[int, bytes]:
    """Wait for ``process`` to end by itself: its exit status and the rest of its standard
    error. One still running ``within`` seconds, or when the test gives up, is killed."""
    assert process.stderr is not None
    async with reaped(process), asyncio.timeout(within):
        err = await process.stderr.read()
        await process.wait()
    assert process.returncode is not None
    return process.returncode, err


async def instantroom(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Run the command to its end, ``stdin`` as its standard input: exit status, stdout,
    stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "instantroom",
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment() | (env or {}),
    )
    out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def typo_of(key: str) -> str:
    """``key`` with one character changed, such that the typo check catches it."""
    for position in range(1, len(key)):
        for char in BASE58_ALPHABET:
            candidate = key[:position] + char + key[position + 1 :]
            try:
                parse_minikey(candidate)
            except ChecksumMismatch:
                return candidate
    raise AssertionError("every change passed the check")


def test_send_and_listen(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    carol_key = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    async def scenario() -> None:
        async with RoomClient(relay.url, carol_key, "carol") as carol:
            await carol.join(room)
            listener = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "instantroom",
                "listen",
                "--server",
                relay.url,
                "--key",
                format_minikey(key),  # as read aloud, in groups
                "--json",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment(),
                preexec_fn=signals_at_default,
            )
            assert listener.stdout is not None
            try:
                # The listener is in when the room counts two.
                async with asyncio.timeout(10):
                    while await carol.next_event() != PresenceChanged(room.room_id, 2):
                        pass

                status, out, err = await instantroom(
                    "send", "--server", relay.url, "--key", key, "--name", "alice", "hi from alice"
                )
                assert (status, out) == (0, ""), err
                # "Taken" means delivered to the members online: carol has it already.
                from_alice = await anext(carol.messages())
                assert from_alice.message.text == "hi from alice"

                await carol.send_text(room.room_id, "and carol ✓")
                invite = f"{relay.url}/#{key}"
                status, _, err = await instantroom(
                    "send", "--server", relay.url, "--key", invite, "--name", "bob", "bob here"
                )
                assert status == 0, err

                lines = []
                async with asyncio.timeout(10):
                    for _ in range(3):
                        lines.append(json.loads(await listener.stdout.readline()))
            finally:
                listener.send_signal(signal.SIGINT)
                await listener.wait()

        assert [(line["name"], line["text"]) for line in lines] == [
            ("alice", "hi from alice"),
            ("carol", "and carol ✓"),
            ("bob", "bob here"),
        ]
        alice, carol_line, bob = lines
        assert alice["fingerprint"] == from_alice.fingerprint
        assert carol_line["fingerprint"] == carol_key.fingerprint
        assert len({alice["fingerprint"], carol_line["fingerprint"], bob["fingerprint"]}) == 3
        for line in lines:
            assert FINGERPRINT.match(line["fingerprint"])
            sent_at = datetime.fromisoformat(line["time"])
            assert sent_at.tzinfo is not None
            assert abs(sent_at.timestamp() * 1000 - line["timestamp_ms"]) < 1
            assert len(bytes.fromhex(line["message_id"])) == 16
        assert alice["message_id"] == from_alice.message.message_id.hex()

    run(scenario())


def test_a_mistyped_key_is_called_a_typo(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)

    async def scenario() -> None:
        for command in ("send", "listen"):
            extra = ["some text"] if command == "send" else []
            status, out, err = await instantroom(
                command, "--server", relay.url, "--key", typo_of(key), *extra
            )
            assert status != 0
            assert "typo" in err
            assert out == ""

    run(scenario())


def test_send_without_a_relay_gives_up_at_its_timeout(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)
    relay.terminate()

    async def scenario() -> None:
        status, _, err = await instantroom(
            "send", "--server", relay.url, "--key", key, "--timeout", "1", "lost"
        )
        assert status == 3  # out of reach, not refused (1) nor slow to take it (4)
        assert "could not be reached" in err

    run(scenario())


def test_a_url_that_is_no_relay_is_an_error_not_a_hang(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)
    wrong = f"{relay.url}/not/the/relay"

    async def scenario() -> None:
        for command in ("send", "listen"):
            extra = ["some text"] if command == "send" else []
            async with asyncio.timeout(10):
                status, _, err = await instantroom(command, "--server", wrong, "--key", key, *extra)
            assert status == 1
            assert "refused" in err
            assert "404" in err
            assert "Traceback" not in err

    run(scenario())


def test_listen_exits_with_the_reason_when_the_relay_refuses_it_for_good() -> None:
    """A relay that lets ``listen`` in and then closes with 1008: the client stops for
    good, and the command says why and exits 1 instead of waiting silently forever."""
    key = make_minikey(secrets.randbelow)

    async def scenario() -> None:
        script = joined_then_closed(CloseCode.POLICY_VIOLATION, after=0.3)
        async with FakeRelay(script) as relay:
            async with asyncio.timeout(15):
                status, out, err = await instantroom("listen", "--server", relay.url, "--key", key)
            assert status == 1
            assert out == ""
            assert "listening in room" in err
            # stderr often ends up in a journal: no room id, not even its first digits.
            assert RoomKeys.from_minikey(key).room_id.hex()[:8] not in err
            assert "instantroom: " in err
            assert "1008" in err
            assert "Traceback" not in err
            assert len(relay.peers) == 1

    run(scenario())


def test_what_a_hostile_relay_says_reaches_the_terminal_without_escapes() -> None:
    key = make_minikey(secrets.randbelow)

    async def script(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            await peer.ws.close(CloseCode.POLICY_VIOLATION, "bye\x1b[2J\x1b]0;owned\x07")

    async def scenario() -> None:
        async with FakeRelay(script) as relay:
            async with asyncio.timeout(15):
                status, _, err = await instantroom("listen", "--server", relay.url, "--key", key)
        assert status == 1
        assert "bye" in err
        assert "\x1b" not in err
        assert "\x07" not in err

    run(scenario())


async def start_listening(
    *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``instantroom listen`` ARGS, once it says it listens."""
    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "instantroom", "listen", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=environment() | (env or {}), preexec_fn=signals_at_default,
    )  # fmt: skip
    if "--json" not in args:
        assert listener.stderr is not None
        try:
            async with asyncio.timeout(20):
                assert b"listening" in await listener.stderr.readline()
        except BaseException:
            listener.kill()
            await listener.wait()
            raise
    return listener


async def lines_until(listener: asyncio.subprocess.Process, last: bytes) -> list[bytes]:
    """What ``listener`` prints, up to the line that holds ``last``."""
    assert listener.stdout is not None
    lines: list[bytes] = []
    async with asyncio.timeout(20):
        while not lines or last not in lines[-1]:
            line = await listener.stdout.readline()
            assert line, f"listen ended: {lines}"
            lines.append(line)
    return lines


def test_plain_listen_output_cannot_be_faked_by_a_member(relay: RelayProcess) -> None:
    """A line break or escape sequence in a name or text shows as what it is: it cannot
    make a line that looks like another member's message."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    forged = "hi\n12:00:00 alice (ABCD-EFGH-IJKL-MNOP): pay bob\r\x1b[2K\u202eevil"

    async def scenario() -> None:
        listener = await start_listening("--server", relay.url, "--key", key)
        try:
            device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
            async with RoomClient(relay.url, device, "mallory\n12:00:00 bob") as mallory:
                await mallory.join(room)
                await mallory.send_text(room.room_id, forged)
                await mallory.send_text(room.room_id, "the end")
            lines = await lines_until(listener, b"the end")
        finally:
            listener.terminate()
            await listener.wait()
        shown = b"".join(lines).decode()
        for control in ("\x1b", "\r", "\u202e"):
            assert control not in shown
        starts = [line[9:].split(b" (")[0] for line in lines if line[:1].isdigit()]
        assert starts == [b"mallory\xef\xbf\xbd12:00:00 bob"] * 2  # one per message sent
        assert any(line.startswith(b"    12:00:00 alice") for line in lines)  # indented

    run(scenario())


def test_listen_json_is_one_ascii_line_per_message_in_any_encoding(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    texts = ["line\u2028separator\u0085next", "emoji \U0001f600 and \u00e9", "the end"]

    async def scenario() -> None:
        listener = await start_listening(
            "--server", relay.url, "--key", key, "--json", env={"PYTHONIOENCODING": "latin-1"}
        )
        try:
            device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
            async with RoomClient(relay.url, device, "zo\u00eb") as sender:
                await sender.join(room)
                async with asyncio.timeout(20):  # until the listener is in too (--json
                    while sender.presence.get(room.room_id, 0) < 2:  # prints no "listening")
                        await sender.next_event()
                for text in texts:
                    await sender.send_text(room.room_id, text)
            lines = await lines_until(listener, b"the end")
        finally:
            listener.terminate()
            await listener.wait()
        output = b"".join(lines)
        assert output.isascii()
        records = [json.loads(line) for line in output.decode().splitlines()]
        assert [(r["name"], r["text"]) for r in records] == [("zo\u00eb", t) for t in texts]
        assert [r["mixed_scripts"] for r in records] == [[]] * 3

    run(scenario())


def test_listen_flags_a_name_that_mixes_look_alike_scripts(relay: RelayProcess) -> None:
    """ "\u0430lice" with a Cyrillic a is not "alice" (PROTOCOL.md 4.4): it is flagged, in
    plain lines and in JSON."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> dict[str, list[bytes]]:
        heard: dict[str, list[bytes]] = {}
        for form in ("plain", "json"):
            listener = await start_listening(
                "--server", relay.url, "--key", key, *(["--json"] if form == "json" else [])
            )
            try:
                for name in ("\u0430lice", "alice"):
                    device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
                    async with RoomClient(relay.url, device, name) as sender:
                        await sender.join(room)
                        async with asyncio.timeout(20):  # until the listener is in too
                            while sender.presence.get(room.room_id, 0) < 2:
                                await sender.next_event()
                        await sender.send_text(room.room_id, f"from {name}")
                heard[form] = await lines_until(listener, b"from alice")
            finally:
                listener.terminate()
                await listener.wait()
        return heard

    heard = run(scenario())
    impostor, real = [line.decode() for line in heard["plain"] if line[:1].isdigit()]
    assert "[name mixes Latin and Cyrillic letters]" in impostor
    assert "mixes" not in real
    records = [json.loads(line) for line in heard["json"]]
    assert [r["mixed_scripts"] for r in records] == [["Latin", "Cyrillic"], []]


def test_listen_stops_when_its_room_expires(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> None:
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        async with RoomClient(relay.url, device, "creator") as creator:
            expires = int(datetime.now().timestamp() * 1000) + 3000
            await creator.join(room, expires)
            listener = await start_listening("--server", relay.url, "--key", key)
            status, err = await ended(listener)
        assert status == 6
        assert err.endswith(b"instantroom: the room has expired.\n")  # not "refused"

    run(scenario())


def test_send_and_listen_over_https_trust_the_system_store_or_ssl_cert_file(
    tmp_path: Path,
) -> None:
    """An https:// relay is verified with the system's trust store, or the certificate
    file SSL_CERT_FILE names; one this machine does not trust is refused at once."""
    cert, key_file = self_signed(tmp_path)
    key = make_minikey(secrets.randbelow)
    with running_relay("--tls-cert", str(cert), "--tls-key", str(key_file)) as relay:
        server = f"https://{LOOPBACK}:{relay.port}"
        trusted = {"SSL_CERT_FILE": str(cert)}

        async def scenario() -> None:
            listener = await start_listening("--server", server, "--key", key, env=trusted)
            try:
                sent = await instantroom(
                    "send", "--server", server, "--key", key, "over tls", env=trusted
                )
                assert sent[0] == 0, sent
                lines = await lines_until(listener, b"over tls")
                assert b": over tls" in lines[-1]
            finally:
                listener.terminate()
                await listener.wait()
            status, _, err = await instantroom("send", "--server", server, "--key", key, "x")
            assert status == 1
            # Said once, by the command: not a second time by the client's log.
            [said] = err.splitlines()
            assert said.startswith("instantroom: ")
            assert "certificate this machine does not trust" in said

        run(scenario())
    assert_exited_cleanly(relay)


def test_listen_on_a_stored_room_prints_no_replay_after_a_restart(
    relay: RelayProcess, tmp_path: Path
) -> None:
    """``listen --room`` keeps the ids of what it printed in the store's room, and a
    relay that sends those messages again to a later ``listen`` has them dropped."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    path = tmp_path / "keystore.json"
    store = KeyStore.create(path, "pw", kdf={"name": "argon2id", "iterations": 1,
                                             "lanes": 1, "memory_kib": 1024})  # fmt: skip
    store.add_room(StoredRoom(key, "team", relay.url, 0))
    store.save()
    env = {"INSTANTROOM_PASSWORD": "pw", "INSTANTROOM_KEYSTORE": str(path)}
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    def publish(ref: int, text: str) -> bytes:
        return text_publish(room, alice, ref, text)

    async def listening(raw: RawClient, *sent: bytes, stop: signal.Signals = signal.SIGINT) -> str:
        """Start ``listen --room team --json``, send ``sent`` once it is in, and return
        the first line it prints; then stop it with ``stop``, which it must survive to
        write what it printed."""
        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instantroom", "listen", "--room", "team", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=environment() | env, preexec_fn=signals_at_default,
        )  # fmt: skip
        assert listener.stdout is not None
        try:
            async with asyncio.timeout(10):
                while await raw.recv() != frames.Presence(room.room_id, 2):
                    pass
                for frame in sent:
                    await raw.send(frame)
                line: str = json.loads(await listener.stdout.readline())["text"]
        finally:
            listener.send_signal(stop)
            await listener.wait()
        assert listener.returncode == 128 + stop, f"not stopped by {stop!r}"
        return line

    async def scenario() -> None:
        once = publish(1, "printed once")
        async with raw_client(relay.ws_url) as raw:
            await raw.join(room)
            # As a service manager stops it: it writes what it printed all the same.
            assert await listening(raw, once, stop=signal.SIGTERM) == "printed once"
            (stored,) = KeyStore.open(path, "pw").rooms
            assert (len(stored.recent), stored.history) == (1, [])
            status, _, err = await instantroom("send", "--room", "team", "mine", env=env)
            assert status == 0, err
            while not isinstance(from_send := await raw.recv(), frames.Deliver):
                pass  # ACKs, presence
            assert len(KeyStore.open(path, "pw").rooms[0].recent) == 2  # what send sent too
            replayed = frames.encode_frame(frames.Publish(3, room.room_id, from_send.envelope))
            assert await listening(raw, once, replayed, publish(2, "new")) == "new"
            # Its store dropped those ids for the bound, keeping the floor instead.
            store = KeyStore.open(path, "pw")
            store.rooms[0].recent_floor_ms = max(e.timestamp_ms for e in store.rooms[0].recent)
            store.rooms[0].recent = []
            store.save()
            assert await listening(raw, once, replayed, publish(4, "newest")) == "newest"

    run(scenario())


def test_listen_run_with_nohup_survives_its_terminal_closing(relay: RelayProcess) -> None:
    """SIGHUP ends a listen (writing what it printed first), unless it was told to
    ignore it, as nohup does. (Each starts as from a terminal, whatever the test
    runner's own signals: run under nohup, the plain one ignored SIGHUP too, and was
    left running.)"""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    def as_nohup() -> None:
        signals_at_default()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    async def scenario() -> None:
        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instantroom", "listen", "--server", relay.url, "--key", key,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=environment(), preexec_fn=as_nohup,
        )  # fmt: skip
        assert listener.stderr is not None
        try:
            async with asyncio.timeout(20):
                assert b"listening" in await listener.stderr.readline()
            listener.send_signal(signal.SIGHUP)
            device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
            async with RoomClient(relay.url, device, "carol") as carol:
                await carol.join(room)
                await carol.send_text(room.room_id, "still there")
            assert len(await lines_until(listener, b"still there")) == 1
            assert listener.returncode is None
        finally:
            status = await stop(listener, signal.SIGINT)
        assert status == 130

        plain = await start_listening("--server", relay.url, "--key", key)
        assert await stop(plain, signal.SIGHUP) == 128 + signal.SIGHUP

    run(scenario())


def test_send_reads_the_text_from_standard_input_when_it_is_a_dash(relay: RelayProcess) -> None:
    """``send -`` takes the message from stdin (a command line shows in ``ps``): all of it,
    without the line break it ends on; with ``--key -`` the key is the first line."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> None:
        async with RoomClient(relay.url, DeviceKey.from_private_bytes(secrets.token_bytes(32)),
                              "carol") as carol:  # fmt: skip
            await carol.join(room)
            received = carol.messages()
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", key, "-", stdin=b"two\nlines\n"
            )
            assert status == 0, err
            assert (await anext(received)).message.text == "two\nlines"
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", "-", "-", stdin=f"{key}\nmore".encode()
            )
            assert status == 0, err
            assert (await anext(received)).message.text == "more"
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", key, "as an argument"
            )
            assert status == 0, err
            assert (await anext(received)).message.text == "as an argument"
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", key, "-", stdin=b""
            )
            assert status == 2
            assert "Nothing to send" in err

    run(scenario())


def test_listen_with_a_one_off_key_flags_no_member_for_sharing_its_name(
    relay: RelayProcess,
) -> None:
    """``listen --key`` writes nothing, from a device key made for this run: its name
    (``anonymous`` unless given) is nobody's in the room. A member of that name is flagged
    only when its key changes, as the docs say, not on every message as an impostor."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> list[bool]:
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        async with RoomClient(relay.url, device, "anonymous") as member:
            await member.join(room)
            listener = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "instantroom", "listen", "--server", relay.url,
                "--key", key, "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                env=environment(), preexec_fn=signals_at_default,
            )  # fmt: skip
            assert listener.stdout is not None
            try:
                async with asyncio.timeout(10):
                    while await member.next_event() != PresenceChanged(room.room_id, 2):
                        pass
                for text in ("one", "two"):
                    await member.send_text(room.room_id, text)
                async with asyncio.timeout(10):
                    lines = [json.loads(await listener.stdout.readline()) for _ in range(2)]
            finally:
                listener.send_signal(signal.SIGINT)
                await listener.wait()
        assert [line["name"] for line in lines] == ["anonymous", "anonymous"]
        return [line["key_changed"] for line in lines]

    assert run(scenario()) == [False, False]


def test_send_refuses_a_message_that_is_not_utf8_in_one_line(relay: RelayProcess) -> None:
    """Bytes that are not UTF-8, on stdin or the command line, are refused before anything
    is sent: one line, exit 2, no traceback (which quoted part of the message)."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> None:
        async with RoomClient(relay.url, DeviceKey.from_private_bytes(secrets.token_bytes(32)),
                              "carol") as carol:  # fmt: skip
            await carol.join(room)
            received = carol.messages()
            for text, stdin in (("-", b"caf\xe9 secret\n"), (os.fsdecode(b"caf\xe9"), None)):
                status, out, err = await instantroom(
                    "send", "--server", relay.url, "--key", key, text, stdin=stdin
                )
                assert (status, out) == (2, ""), err
                assert err.splitlines() == [
                    f"instantroom: {'Standard input' if stdin else 'The message'} is not UTF-8 "
                    "text: nothing was sent."
                ]
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", key, "-", stdin="café ✓".encode()
            )
            assert status == 0, err
            assert (await anext(received)).message.text == "café ✓"  # the first to come

    run(scenario())


def test_listen_stops_quietly_when_what_reads_it_goes_away(relay: RelayProcess) -> None:
    """``listen | head -1``: the next message finds the pipe closed, and listen ends as a
    writer killed by SIGPIPE would (141), saying nothing."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> None:
        read_end, write_end = os.pipe()
        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instantroom", "listen", "--server", relay.url, "--key", key,
            stdout=write_end, stderr=asyncio.subprocess.PIPE, env=environment(),
        )  # fmt: skip
        os.close(write_end)
        assert listener.stderr is not None
        try:
            with os.fdopen(read_end, "rb") as output:
                async with asyncio.timeout(20):
                    assert b"listening" in await listener.stderr.readline()
                device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
                async with RoomClient(relay.url, device, "carol") as carol:
                    await carol.join(room)
                    await carol.send_text(room.room_id, "first")
                    async with asyncio.timeout(20):
                        assert b"first" in await asyncio.to_thread(output.readline)
            # What read it is gone: the next message cannot be written.
            async with RoomClient(relay.url, device, "carol") as carol:
                await carol.join(room)
                await carol.send_text(room.room_id, "second")
        except BaseException:
            await stop(listener, signal.SIGKILL, within=0)
            raise
        status, err = await ended(listener)
        assert status == 128 + signal.SIGPIPE, err
        assert err == b""

    run(scenario())


def test_send_waits_at_most_its_timeout_for_the_join_and_the_send_together() -> None:
    """A relay slow to let us in, and as slow to take the message: each within --timeout,
    both not. ``send`` gives up at the one deadline."""
    key = make_minikey(secrets.randbelow)

    async def slow(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await peer.recv()
                if isinstance(frame, frames.Proof | frames.Publish):
                    await asyncio.sleep(1.0)
                await peer.answer(frame)

    async def scenario() -> None:
        async with FakeRelay(slow) as relay:
            started = asyncio.get_running_loop().time()
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", key, "--timeout", "1.5", "slowly"
            )
            assert status == 4, err
            assert "did not take the message in time" in err
            assert asyncio.get_running_loop().time() - started < 10
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", key, "--timeout", "10", "slowly"
            )
            assert status == 0, err

    run(scenario())


def test_listen_forgets_a_stored_floor_left_ahead_by_a_clock_set_back(
    relay: RelayProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's floor was written while the clock ran a day ahead. Seeded as it is
    (as the present), it would refuse a message stamped a minute ago; pruned first, as
    the store does on every write (PROTOCOL.md 7), it is forgotten."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    path = tmp_path / "keystore.json"
    store = KeyStore.create(path, "pw", kdf={"name": "argon2id", "iterations": 1,
                                             "lanes": 1, "memory_kib": 1024})  # fmt: skip
    stored = store.add_room(StoredRoom(key, "team", relay.url, 0))
    stored.recent_floor_ms = int(time.time() * 1000) + 24 * 3_600_000
    with monkeypatch.context() as writing_a_day_ahead:  # then, the floor was near the clock
        writing_a_day_ahead.setattr(StoredRoom, "prune_known", lambda self, now_ms: None)
        store.save()
    env = {"INSTANTROOM_PASSWORD": "pw", "INSTANTROOM_KEYSTORE": str(path)}
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as raw:
            await raw.join(room)
            listener = await start_listening("--room", "team", env=env)
            try:
                async with asyncio.timeout(10):
                    while await raw.recv() != frames.Presence(room.room_id, 2):
                        pass
                late = int(time.time() * 1000) - 60_000
                await raw.send(text_publish(room, alice, 1, "a minute late", at_ms=late))
                await raw.send(text_publish(room, alice, 2, "on time"))
                lines = await lines_until(listener, b"on time")
            finally:
                listener.terminate()
                await listener.wait()
            assert b"a minute late" in lines[0]

    run(scenario())

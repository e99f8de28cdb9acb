"""``send`` and ``listen`` where what they need is missing: a relay out of reach, a
message too big for a body, standard output closed. Each is said on standard error,
before anything is connected to when it cannot be sent."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from instantroom import cli as cli_module
from instantroom.cli import main
from instantroom.client import connection
from instantroom.client.connection import RoomClient
from instantroom.client.keystore import KeyStore, StoredRoom
from instantroom.protocol import frames
from instantroom.protocol.codes import CloseCode, ErrorCode
from instantroom.protocol.envelope import MAX_BODY_BYTES
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.protocol.minikey import make_minikey
from instantroom.protocol.session import Accepted, Event
from instantroom.testing import LOOPBACK, RelayProcess, assert_exited_cleanly, run, running_relay
from tests.client.test_cli import (
    ended,
    environment,
    instantroom,
    reaped,
    signals_at_default,
    stop,
)
from tests.client.test_cli_review import closed_port
from tests.client.test_keystore import FAST_KDF
from tests.client.test_room_client import FakeRelay, Peer
from tests.client.test_rooms_cli import PASSWORD, cli

TOO_BIG = f"instantroom: A message body is at most {MAX_BODY_BYTES} bytes.\n"


async def said(listener: asyncio.subprocess.Process) -> str:
    """The next line ``listener`` says on standard error."""
    assert listener.stderr is not None
    async with asyncio.timeout(20):
        line = await listener.stderr.readline()
    assert line, "listen ended"
    return line.decode().rstrip("\n")


async def sent_to(listener: asyncio.subprocess.Process, relay: RelayProcess, key: str) -> str:
    """Send a message into the room once ``listener`` is in it; the text it prints."""
    room = RoomKeys.from_minikey(key)
    assert listener.stdout is not None
    device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    async with RoomClient(relay.url, device, "carol") as carol:
        await carol.join(room)
        async with asyncio.timeout(20):
            while carol.presence.get(room.room_id) != 2:
                await carol.next_event()
            await carol.send_text(room.room_id, "still here")
            text: str = json.loads(await listener.stdout.readline())["text"]
    return text


def test_listen_says_once_an_outage_that_its_relay_is_out_of_reach_and_when_it_is_back() -> None:
    """A mistyped port or a relay restart is said on standard error, once however many
    tries fail, and so is the relay's return; the messages on standard output are all
    that is there."""
    key = make_minikey(secrets.randbelow)
    port = closed_port()
    out_of_reach = (
        f"instantroom: The relay at {LOOPBACK}:{port} could not be reached: nothing answers "
        "on that port. Still trying."
    )
    back = f"instantroom: reconnected to the relay at ws://{LOOPBACK}:{port}/ws."

    async def scenario() -> None:
        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instantroom", "listen",
            "--server", f"http://{LOOPBACK}:{port}", "--key", key, "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=environment(), preexec_fn=signals_at_default,
        )  # fmt: skip
        try:
            assert await said(listener) == out_of_reach
            for _ in range(2):  # out of reach from the start, then a relay restart
                await asyncio.sleep(0.5)  # some more tries fail meanwhile: not said again
                with running_relay(port=port) as relay:
                    assert await said(listener) == back
                    assert await sent_to(listener, relay, key) == "still here"
                    relay.terminate()
                    assert await said(listener) == out_of_reach
                assert_exited_cleanly(relay)
        finally:
            status = await stop(listener, signal.SIGTERM)
        assert status == 128 + signal.SIGTERM

    run(scenario())


class _Stderr(io.StringIO):
    """Standard error of a command run in this process, waited on from another thread."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            written = super().write(text)
            self._changed.notify_all()
        return written

    def wait_for(self, part: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: part in self.getvalue(), timeout=20), part


@pytest.mark.parametrize("as_json", [False, True])
def test_listen_says_once_that_a_relay_connected_to_has_not_let_it_into_the_room(
    monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    """A relay that takes the connection and answers, and sends no JOINED: ``listen`` said
    nothing, and the room only looked quiet. Said once, and then that it is in: by the
    "listening in room" line, or with --json (which prints none) in so many words."""
    monkeypatch.setattr(cli_module, "NOT_LET_IN_SAID_AFTER", 0.5)
    stderr = _Stderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    key = make_minikey(secrets.randbelow)
    kept_out = "has not let this client into the room yet, 0.5 s after it connected."
    let_in = "let this client into the room." if as_json else "listening in room..."
    addresses: list[str] = []
    ready = threading.Event()

    async def holding_back(peer: Peer) -> None:
        join = await peer.recv()
        assert isinstance(join, frames.Join)
        try:
            await asyncio.to_thread(stderr.wait_for, kept_out)
            await asyncio.sleep(1)  # a few more looks at it: not said again
            await peer.answer(join)
            await peer.answer(await peer.recv())  # PROOF: JOINED
            await asyncio.to_thread(stderr.wait_for, let_in)
        except AssertionError:
            await peer.ws.close(CloseCode.POLICY_VIOLATION)  # listen ends (1), and fails
            raise
        await peer.send(frames.Error(ErrorCode.ROOM_EXPIRED, 0, join.room_id, "over"))
        await peer.ws.wait_closed()

    async def relay_thread() -> None:
        async with FakeRelay(holding_back) as relay:
            addresses.append(relay.url)
            ready.set()
            await relay.wait_for_connections(1)
            await relay.peers[0].ws.wait_closed()

    relaying = threading.Thread(target=asyncio.run, args=(relay_thread(),))
    relaying.start()
    try:
        assert ready.wait(20)
        json_flag = ["--json"] if as_json else []
        status = main(["listen", "--server", addresses[0], "--key", key, *json_flag])
    finally:
        relaying.join(20)
    assert status == 6  # the room's end, which the relay said
    relay_at = f"instantroom: the relay at ws{addresses[0].removeprefix('http')}/ws"
    assert stderr.getvalue().splitlines()[:2] == [
        f"{relay_at} {kept_out} Still waiting.",
        f"{relay_at} {let_in}" if as_json else let_in,
    ]
    assert stderr.getvalue().count(kept_out) == 1


def test_send_refuses_a_message_too_big_before_connecting() -> None:
    """Over MAX_BODY_BYTES, on the command line or stdin, is refused at once (exit 2), not
    after --timeout spent on an unreachable relay; stdin is read no further than that
    shows, so input that never ends (`yes | send -`) is refused too."""
    key = make_minikey(secrets.randbelow)
    server = f"http://{LOOPBACK}:{closed_port()}"
    send = ("send", "--server", server, "--key", key, "--timeout", "30")

    async def scenario() -> None:
        async with asyncio.timeout(20):  # well within --timeout
            status, out, err = await instantroom(*send, "-", stdin=b"x" * 70_000)
            assert (status, out, err) == (2, "", TOO_BIG)
            status, out, err = await instantroom(*send, "é" * (MAX_BODY_BYTES // 2) + "x")
            assert (status, out, err) == (2, "", TOO_BIG)

            endless = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "instantroom", *send, "-",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=environment(),
            )  # fmt: skip
            assert endless.stdin is not None
            assert endless.stderr is not None
            try:
                async with reaped(endless):
                    endless.stdin.write(b"y\n" * (MAX_BODY_BYTES // 2 + 2))  # and never closed
                    assert await endless.stderr.read() == TOO_BIG.encode()
                    assert await endless.wait() == 2
            finally:
                endless.stdin.close()

    run(scenario())


def test_send_from_stdin_takes_a_full_body_and_refuses_one_byte_more(relay: RelayProcess) -> None:
    """Bounded as it is, reading stdin still takes a body of MAX_BODY_BYTES whole, with the
    line break it ends on; one byte more is refused."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    send = ("send", "--server", relay.url, "--key", key, "-")
    full = ["é" * (MAX_BODY_BYTES // 2), "a" * MAX_BODY_BYTES]

    async def scenario() -> None:
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        async with RoomClient(relay.url, device, "carol") as carol:
            await carol.join(room)
            received = carol.messages()
            for text, ending in zip(full, ("\n", "\r\n"), strict=True):
                status, _, err = await instantroom(*send, stdin=(text + ending).encode())
                assert status == 0, err
                assert (await anext(received)).message.text == text
            for text in ("é" * (MAX_BODY_BYTES // 2) + "a\r\n", "a" * (MAX_BODY_BYTES + 1)):
                status, out, err = await instantroom(*send, stdin=text.encode())
                assert (status, out, err) == (2, "", TOO_BIG)

    run(scenario())


def test_listen_with_standard_output_closed_exits_at_once(relay: RelayProcess) -> None:
    """``listen >&-`` would print every message to nowhere (and, with --room, record them
    as printed): it says so and exits 2 before joining."""
    key = make_minikey(secrets.randbelow)

    async def scenario() -> None:
        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instantroom", "listen", "--server", relay.url, "--key", key,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=environment(),
            preexec_fn=lambda: os.close(1),
        )  # fmt: skip
        status, err = await ended(listener)
        assert status == 2
        assert err == b"instantroom: standard output is closed: listen prints the messages there.\n"

    run(scenario())


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["send", "--key", "SDehB97fmBnFwezqLcANLCCQkQyfz1", "-"], "nothing was sent"),
        (["listen", "--key", "-"], "nothing to read the key from"),
    ],
)
def test_a_dash_with_standard_input_closed_is_one_clear_line(
    relay: RelayProcess, command: list[str], said: str
) -> None:
    """``send - <&-`` and ``listen --key - <&-`` ended in a traceback."""

    async def scenario() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instantroom", *command, "--server", relay.url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=environment(), preexec_fn=lambda: os.close(0),
        )  # fmt: skip
        status, err = await ended(process)
        assert status == 2
        assert err == f"instantroom: Standard input is closed: {said}.\n".encode()

    run(scenario())


async def first_message(relay: RelayProcess, room: RoomKeys, within: float) -> str:
    """Join ``room`` as a listener and return the text of the first message it gets."""
    device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    async with RoomClient(relay.url, device, "") as listener:
        await listener.join(room)
        async with asyncio.timeout(within):
            async for received in listener.messages():
                return received.message.text
    raise AssertionError("the listener stopped")


def send_started_out_of_reach(
    port: int, key: str, timeout: int, text: str
) -> asyncio.Task[tuple[int, str, str]]:
    """``send`` started now to a relay that will listen on ``port``, where nothing does
    yet: its first tries fail."""
    server = f"http://{LOOPBACK}:{port}"
    command = ["send", "--server", server, "--key", key, "--timeout", str(timeout), text]
    return asyncio.create_task(instantroom(*command))


def test_send_during_an_outage_waits_for_members_still_coming_back_within_its_timeout() -> None:
    """A ``send`` started while its relay was out of reach (restarting) joins as soon as
    the relay is back, and others may still be backing off: the message waits for them,
    and goes in time for --timeout (5 s before it) rather than the whole grace (12 s)."""
    key = make_minikey(secrets.randbelow)
    port = closed_port()

    async def scenario() -> None:
        text = "while you were away"
        sending = send_started_out_of_reach(port, key, 10, text)
        await asyncio.sleep(1)  # its first tries fail
        with running_relay(port=port) as relay:
            await asyncio.sleep(2)  # a member still backing off when send got in
            heard = await first_message(relay, RoomKeys.from_minikey(key), within=10)
            status, out, err = await sending
        assert (status, out, err) == (0, "", "")
        assert heard == text

    run(scenario())


def test_send_to_a_relay_out_of_reach_says_so_soon_and_not_only_at_its_timeout() -> None:
    """A mistyped port: ``send`` said nothing for its whole --timeout (30 s by default).
    Said once, a few seconds on; and again when it gives up."""
    key = make_minikey(secrets.randbelow)
    port = closed_port()
    out_of_reach = (
        f"instantroom: The relay at {LOOPBACK}:{port} could not be reached: nothing answers "
        "on that port. Still trying for up to 30 s (--timeout).\n"
    )

    async def scenario() -> None:
        sending = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instantroom", "send", "--server",
            f"http://{LOOPBACK}:{port}", "--key", key, "--timeout", "30", "hello",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )  # fmt: skip
        try:
            assert sending.stderr is not None
            async with asyncio.timeout(cli_module.SEND_UNREACHABLE_SAID_AFTER + 5):
                assert (await sending.stderr.readline()).decode() == out_of_reach
        finally:
            status = await stop(sending, signal.SIGTERM)
        assert status != 0

    run(scenario())


def test_send_with_a_short_timeout_after_an_outage_sends_rather_than_waits() -> None:
    """With --timeout 4 there is no time to wait for members: once in, ``send`` sends at
    once and exits 0, not 4 with the message never sent."""
    key = make_minikey(secrets.randbelow)
    port = closed_port()

    async def scenario() -> None:
        sending = send_started_out_of_reach(port, key, 4, "quick")
        await asyncio.sleep(1)  # its first tries fail
        with running_relay(port=port):
            status, out, err = await sending
        assert (status, out, err) == (0, "", "")

    run(scenario())


def test_send_whose_held_message_never_went_says_nothing_was_sent() -> None:
    """Held for members after an outage, then the relay gone again until --timeout: the
    message never went, so ``send`` exits 3 (nothing sent), not 4 (it may have gone),
    which would tell a script not to send it again."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    port = closed_port()

    async def scenario() -> None:
        sending = send_started_out_of_reach(port, key, 8, "lost?")
        await asyncio.sleep(0.5)  # its first tries fail
        with running_relay(port=port) as relay:
            device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
            async with RoomClient(relay.url, device, "") as carol:
                await carol.join(room)
                async with asyncio.timeout(5):
                    while carol.presence.get(room.room_id) != 2:  # send is in, holding
                        await carol.next_event()
                relay.terminate()
        status, out, err = await sending
        assert (status, out) == (3, "")
        assert err.endswith("(--timeout): nothing was sent.\n"), err

    run(scenario())


def test_a_client_that_found_the_relay_out_of_reach_holds_its_outbox_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The library's side: what a client wrote while its relay was out of reach waits,
    after its JOINED, for the grace (here 3 s), then goes, to whoever came in meanwhile."""
    monkeypatch.setattr(connection, "REJOIN_GRACE", 3.0)
    room = RoomKeys.from_minikey(make_minikey(secrets.randbelow))
    port = closed_port()

    async def scenario() -> None:
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        async with RoomClient(f"http://{LOOPBACK}:{port}", device, "alice") as alice:
            joined = asyncio.create_task(alice.join(room))
            accepted = asyncio.create_task(alice.send_text(room.room_id, "back?"))
            await asyncio.sleep(0.5)
            with running_relay(port=port) as relay:
                await joined
                await asyncio.sleep(1)  # a member still backing off
                assert not accepted.done()
                text = await first_message(relay, room, within=10)
                await accepted
        assert text == "back?"

    run(scenario())


def test_send_whose_ack_is_handled_at_its_deadline_exits_0(
    monkeypatch: pytest.MonkeyPatch, relay: RelayProcess
) -> None:
    """The relay's ACK handled in the same pass as --timeout's deadline (a slow pass does
    that now and then): the relay took the message, and ``send`` says so (0), rather than
    3 (nothing sent: a script would send it twice) or 4."""
    key = make_minikey(secrets.randbelow)
    dispatch = RoomClient._dispatch
    held: list[bool] = []

    def slow_dispatch(client: RoomClient, events: list[Event]) -> None:
        if not held and any(isinstance(event, Accepted) for event in events):
            held.append(True)
            time.sleep(1.2)  # the deadline passes meanwhile
            asyncio.get_running_loop().call_soon(dispatch, client, events)
            return
        dispatch(client, events)

    monkeypatch.setattr(RoomClient, "_dispatch", slow_dispatch)
    status = main(["send", "--server", relay.url, "--key", key, "--timeout", "1", "hello"])
    assert held
    assert status == 0


def test_send_refused_for_the_rate_until_its_timeout_says_nothing_was_sent() -> None:
    """Every copy refused as RATE_LIMITED: the relay has none, so ``send`` exits 3 (nothing
    sent), not 4 (it may have gone)."""
    key = make_minikey(secrets.randbelow)

    async def scenario() -> None:
        # A JOIN takes the one token; each PUBLISH after it is refused.
        with running_relay("--message-burst", "1", "--messages-per-second", "0.01") as relay:
            command = ["send", "--server", relay.url, "--key", key, "--timeout", "3", "hi"]
            status, out, err = await instantroom(*command)
        assert (status, out) == (3, "")
        assert err.endswith("(--timeout): nothing was sent.\n"), err

    run(scenario())


def test_send_whose_room_expires_while_it_waits_exits_6(tmp_path: Path) -> None:
    """The room's lifetime ends while the message waits for the relay (refused for the
    rate here): ``send`` says the room has expired (6), as ``listen`` does, not 1."""
    store = tmp_path / "keystore.json"
    keys = KeyStore.create(store, PASSWORD, kdf=FAST_KDF)
    expires_at_ms = int(time.time() * 1000) + 3_000
    with running_relay("--message-burst", "1", "--messages-per-second", "0.01") as relay:
        key = make_minikey(secrets.randbelow)
        keys.add_room(
            StoredRoom(key=key, label="soon", server=relay.url, expires_at_ms=expires_at_ms)
        )
        keys.save()
        result = cli(store, "send", "--room", "soon", "--timeout", "15", "hi", check=False)
    assert (result.returncode, result.stdout) == (6, "")
    assert result.stderr == "instantroom: the room has expired.\n"

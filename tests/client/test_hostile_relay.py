"""The client against a hostile relay (SECURITY.md, "A relay operator"): a relay may
refuse service, but what it sends must not grow the client's memory or its log without
end, send the client elsewhere, or put its own words unescaped into a log line.

The relay is the stand-in of ``test_room_client`` (``FakeRelay``), scripted to misbehave.
Some tests count the client's own timers: those are what a flood of refusals would pile
up, and the count says it at once, where a memory measure would be slow and noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from http import HTTPStatus

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from instantroom.client.connection import JoinRefused, RelayRefused, RoomClient
from instantroom.protocol import frames
from instantroom.protocol.codes import CloseCode, ErrorCode
from instantroom.protocol.kdf import DeviceKey
from instantroom.protocol.session import (
    ClientSession,
    Event,
    Joined,
    PongReceived,
    PresenceChanged,
)
from instantroom.testing import LOOPBACK, fresh_room, run
from tests.client.test_room_client import FakeRelay, Peer, device, fast_retries, wait_for

FLOOD = 3000


async def pong_after(peer: Peer, token: int = 7) -> None:
    """Send a PONG the client did not ask for: its event says everything before it, in
    order on the connection, has been handled."""
    await peer.send(frames.Pong(token))


async def handled(member: RoomClient, token: int = 7) -> list[Event]:
    """The events until that PONG's."""
    seen: list[Event] = []
    while (event := await member.next_event()) != PongReceived(token):
        seen.append(event)
    return seen


def test_a_redirect_is_not_followed_to_another_server() -> None:
    """A browser's WebSocket follows no redirect; nor does this client. Followed, a relay
    could have the client connect, from inside its network, to any host and port."""
    room = fresh_room()
    reached: list[int] = []

    async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(1)
        writer.close()

    async def scenario() -> None:
        target = await asyncio.start_server(elsewhere, LOOPBACK, 0)
        port = target.sockets[0].getsockname()[1]

        def redirect(connection: ServerConnection, request: Request) -> Response:
            response = connection.respond(HTTPStatus.FOUND, "")
            response.headers["Location"] = f"ws://{LOOPBACK}:{port}/ws?secret=1"
            return response

        async with target, serve(lambda ws: ws.wait_closed(), LOOPBACK, 0,
                                 process_request=redirect) as redirector:  # fmt: skip
            url = f"http://{LOOPBACK}:{redirector.sockets[0].getsockname()[1]}"
            alice = RoomClient(url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                with pytest.raises(RelayRefused) as refused:
                    async with asyncio.timeout(5):
                        await alice.join(room)
        assert "redirect" in str(refused.value)
        assert "secret" not in str(refused.value)  # where it pointed is the server's word
        assert reached == []

    run(scenario(), timeout=20)


def test_a_flood_of_refusals_keeps_one_join_retry_per_room() -> None:
    """ROOM_FULL and RATE_LIMITED say "try later"; a relay may say it thousands of times
    for one JOIN, or for rooms the client is not in. One retry waits per room, none for
    another room: not one timer per refusal, each held for as long as its delay."""
    room = fresh_room()

    async def script(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN: CHALLENGE
            await peer.recv()  # PROOF
            for _ in range(FLOOD):
                await peer.send(frames.Error(ErrorCode.ROOM_FULL, 0, room.room_id, "full"))
                other = secrets.token_bytes(32)
                await peer.send(frames.Error(ErrorCode.RATE_LIMITED, 0, other, "slow"))
            await pong_after(peer)
            await peer.serve()

    async def scenario() -> None:
        async with FakeRelay(script) as relay:
            alice = RoomClient(
                relay.url, device(), "alice", reconnect_delays=fast_retries,
                retry_after_full=60, retry_after_rate_limit=60,
            )  # fmt: skip
            async with alice:
                with pytest.raises(JoinRefused):
                    await alice.join(room)
                await handled(alice)
                assert len(alice._timers) <= 1
                assert alice.failure is None

    run(scenario(), timeout=60)


def test_a_joined_the_client_did_not_ask_for_is_no_news() -> None:
    """JOINED answers our JOIN, once. After a reconnect, the client holds its outbox for
    the members to come back, one timer per JOINED; a relay sending JOINED after JOINED
    would pile them up."""
    room = fresh_room()

    async def many_joined(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN: CHALLENGE
            await peer.recv()  # PROOF
            for n in range(FLOOD):
                # Each with an earlier expiry and a count short of the five of before.
                await peer.send(frames.Joined(room.room_id, 2**52 - n, 1))
            await pong_after(peer)
            await peer.serve()

    async def first(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())
            await peer.recv()
            await peer.send(frames.Joined(room.room_id, 0, 5))
            await peer.ws.close(CloseCode.SERVICE_RESTART)

    async def scenario() -> None:
        async with FakeRelay(first, many_joined) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.join(room)
                joined = [e for e in await handled(alice) if isinstance(e, Joined)]
                assert [(e.expires_at_ms, e.members) for e in joined] == [(0, 5), (2**52, 1)]
                assert alice.session.rooms[room.room_id].expires_at_ms == 2**52
                assert len(alice._timers) <= 1  # the hold's release

    run(scenario(), timeout=60)


def test_the_session_takes_one_joined_per_join() -> None:
    """The pure core: a JOINED with no JOIN of ours unanswered changes nothing, and says
    nothing; PRESENCE still gives the count."""
    room = fresh_room()
    session = ClientSession(
        DeviceKey.from_private_bytes(bytes(32)), "alice", token_bytes=secrets.token_bytes
    )
    session.connection_made()
    session.join(room, 2_000_000_000_000)
    session.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), 0)
    session.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 2)), 0)
    assert session.events() == [Joined(room.room_id, 2_000_000_000_000, 2)]
    session.frames_to_send()
    for expiry in (1_000_000_000_000, 1):
        session.receive(frames.encode_frame(frames.Joined(room.room_id, expiry, 9)), 0)
    session.receive(frames.encode_frame(frames.Joined(fresh_room().room_id, 1, 9)), 0)
    assert session.events() == []
    assert session.frames_to_send() == []
    assert session.rooms[room.room_id].expires_at_ms == 2_000_000_000_000
    assert session.rooms[room.room_id].members == 2
    session.receive(frames.encode_frame(frames.Presence(room.room_id, 3)), 0)
    assert session.events() == [PresenceChanged(room.room_id, 3)]


def test_a_relay_that_pings_and_never_reads_is_cut_off() -> None:
    """Pings are answered at once, whether the relay reads or not: a relay that sends
    them and never reads would have the pongs wait in the client's memory without end.
    Past a bound the connection is cut off, and made again."""
    room = fresh_room()
    # 125-byte pings, unmasked as a server sends them: 24 MB of pings, 25 MB of pongs,
    # more than the kernel's buffers on both sides hold.
    pings = (b"\x89\x7d" + bytes(125)) * (24 * 1024 * 1024 // 127)

    async def script(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            transport = peer.ws.transport
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            transport.pause_reading()
            transport.write(pings)
            await peer.ws.wait_closed()

    async def scenario() -> None:
        async with FakeRelay(script, serving_forever) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.join(room)
                # Well before the client's own keepalive (a ping unanswered for 20 s after
                # 20 s of quiet) would have it reconnect anyway.
                async with asyncio.timeout(15):
                    await relay.wait_for_connections(2)
                assert alice.failure is None

    run(scenario(), timeout=30)


async def serving_forever(peer: Peer) -> None:
    await peer.serve()


def test_the_relay_s_words_stay_out_of_the_log_and_bad_frames_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A close reason is the relay's text: a log line shown in a terminal must not carry
    its escape sequences. And a relay sending bad frames by the thousand makes one
    warning, not one each (a program without logging set up prints every warning)."""
    room = fresh_room()
    escape = "\x1b]0;owned\x07\x1b[2J"

    async def bad_then_close(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            for _ in range(50):
                await peer.ws.send(b"\xfe")  # no such frame type
            await pong_after(peer)
            await peer.ws.recv()  # until the test has seen the pong and pings
            await peer.ws.close(CloseCode.NORMAL, escape)

    async def scenario() -> None:
        async with FakeRelay(bad_then_close, serving_forever) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.join(room)
                await handled(alice)
                await alice.ping()
                await relay.wait_for_connections(2)
                await wait_for(alice, lambda e: isinstance(e, Joined))

    with caplog.at_level(logging.DEBUG, logger="instantroom.client"):
        run(scenario(), timeout=30)
    records = [r for r in caplog.records if r.name == "instantroom.client"]
    assert not [r for r in records if "\x1b" in r.getMessage()]
    assert len([r for r in records if r.levelno >= logging.WARNING]) == 1
    assert any("closed" in r.getMessage() for r in records)


@pytest.mark.parametrize(
    ("keeps_its_own", "stated"),
    [
        (True, "Thu, 01 Jan 2026 00:00:00 GMT"),  # a second one: MultipleValuesError
        (False, "Mon, 01 Jan 2020 00:00:00 +99999999999999999999"),  # a zone beyond timedelta
        (False, "Mon, 01 Jan 99999999999999 00:00:00 GMT"),  # a year beyond a C int
        (False, "Mon, 01 Jan 2020 00:00:00 +9999"),  # a zone of a day or more: ValueError
        (False, "not a date"),
    ],
)
def test_a_date_that_cannot_be_read_is_no_clock_and_no_failure(
    keeps_its_own: bool, stated: str
) -> None:
    """A Date header the parser cannot read, whatever it raises (a second Date beside the
    relay's, a proxy's; OverflowError for numbers too big), is ignored: it raised in the
    connection task, and the client stopped for good (RelayRefused, no reconnection) for
    what only feeds a clock warning."""
    room = fresh_room()

    class BadDate(FakeRelay):
        def _dated(self, ws: ServerConnection, request: Request, response: Response) -> Response:
            if not keeps_its_own:
                del response.headers["Date"]
            response.headers["Date"] = stated
            return response

    async def scenario() -> None:
        async with (
            BadDate(serving_forever) as relay,
            RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries) as alice,
        ):
            await asyncio.wait_for(alice.join(room), 5)
            assert alice.failure is None
            assert alice.clock_offset_ms is None

    run(scenario())

"""The asyncio client library against a relay process: messages, presence, refusals,
rate limits, and a relay restart in mid-conversation; and against a stand-in relay
(``FakeRelay``) for what a real one does not do on cue: fatal close codes, a relay that
accepts and closes at once, a missing subprotocol, a rate-limited join across a
reconnect, RELAY_FULL and NOT_JOINED.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import itertools
import logging
import os
import secrets
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from instantroom.client import connection
from instantroom.client.connection import (
    CLOCK_WARNING_MS,
    JoinRefused,
    MessageNotSent,
    RelayRefused,
    RoomClient,
    RoomGone,
    default_delays,
    now_ms,
    unreachable_reason,
)
from instantroom.display import clock_warning, without_credentials
from instantroom.protocol import frames
from instantroom.protocol.codes import (
    SUBPROTOCOL,
    UPTIME_HEADER,
    UPTIME_SAID_FOR,
    CloseCode,
    ErrorCode,
)
from instantroom.protocol.envelope import Kind
from instantroom.protocol.errors import JoinProofError
from instantroom.protocol.join import verify_join_proof
from instantroom.protocol.kdf import DeviceKey
from instantroom.protocol.session import (
    NOT_SENT_IN_TIME,
    OUTBOX_MAX_AGE_MS,
    Accepted,
    Event,
    Joined,
    MessageReceived,
    MessageRejected,
    NotSent,
    PongReceived,
    PresenceChanged,
    Refused,
    RoomExpired,
)
from instantroom.relay.config import RelayConfig
from instantroom.relay.server import Relay
from instantroom.testing import (
    LOOPBACK,
    RelayProcess,
    TcpProxy,
    assert_exited_cleanly,
    fresh_room,
    member_publish,
    raw_client,
    run,
    running_relay,
    text_publish,
)


def fast_retries() -> Generator[float]:
    while True:
        yield 0.05


def device() -> DeviceKey:
    return DeviceKey.from_private_bytes(secrets.token_bytes(32))


def client(relay: RelayProcess, name: str, key: DeviceKey | None = None) -> RoomClient:
    return RoomClient(relay.url, key or device(), name, reconnect_delays=fast_retries)


async def events_until_pong(member: RoomClient) -> list[Event]:
    """Ping through the relay; return the events that came before the pong."""
    await member.ping()
    seen: list[Event] = []
    while not isinstance(event := await member.next_event(), PongReceived):
        seen.append(event)
    return seen


async def wait_for(member: RoomClient, wanted: Callable[[Event], bool]) -> Event:
    while not wanted(event := await member.next_event()):
        pass
    return event


async def next_message(member: RoomClient) -> MessageReceived:
    async for received in member.messages():
        return received
    raise AssertionError("unreachable")


def test_messages_cross_in_a_room_and_never_into_another(relay: RelayProcess) -> None:
    room_a, room_b = fresh_room(), fresh_room()
    alice_key, bob_key = device(), device()

    async def scenario() -> None:
        async with (
            client(relay, "alice", alice_key) as alice,
            client(relay, "bob", bob_key) as bob,
            client(relay, "carol") as carol,
        ):
            assert (await alice.join(room_a)).members == 1
            assert (await bob.join(room_a)).members == 2
            assert (await carol.join(room_b)).members == 1

            sent = await alice.send_text(room_a.room_id, "hello bob ✓")
            got = await next_message(bob)
            assert got.room_id == room_a.room_id
            assert got.message.text == "hello bob ✓"
            assert got.message.sender_name == "alice"
            assert got.message.message_id == sent.message_id
            assert got.fingerprint == alice_key.fingerprint
            assert not got.key_changed

            reply = await bob.send_text(room_a.room_id, "hi alice")
            got = await next_message(alice)
            assert (got.message.message_id, got.message.text) == (reply.message_id, "hi alice")
            assert (got.message.sender_name, got.fingerprint) == ("bob", bob_key.fingerprint)

            # carol, in room B, heard none of it; room B's talk stays in room B.
            assert not any(isinstance(e, MessageReceived) for e in await events_until_pong(carol))
            for member in (alice, bob):
                await events_until_pong(member)  # what they heard so far
            await carol.send_text(room_b.room_id, "anyone?")
            for member in (alice, bob):
                heard = await events_until_pong(member)
                assert not any(isinstance(e, MessageReceived) for e in heard)
            assert alice.presence == {room_a.room_id: 2}
            assert carol.presence == {room_b.room_id: 1}

    run(scenario())


def test_a_member_s_message_that_is_not_text_costs_the_others_nothing(
    relay: RelayProcess,
) -> None:
    """Only a text message's body must be UTF-8 (PROTOCOL.md 5.6): a typing notice, or a
    kind no client knows yet, may carry any bytes, and must not stop whoever receives it."""
    room = fresh_room()
    mallory = device()

    async def scenario() -> None:
        async with client(relay, "bob") as bob, raw_client(relay.ws_url) as raw:
            await bob.join(room)
            await raw.join(room)
            for ref, kind in enumerate((Kind.TYPING, 99), start=1):
                await raw.send(member_publish(room, mallory, ref, kind, b"\xff\xfe binary"))
            await raw.send(text_publish(room, mallory, 3, "still here?", name="mallory"))
            async with asyncio.timeout(10):
                received = [await next_message(bob) for _ in range(3)]
            assert [(r.message.kind, r.message.body) for r in received[:2]] == [
                (Kind.TYPING, b"\xff\xfe binary"),
                (99, b"\xff\xfe binary"),
            ]
            assert received[2].message.text == "still here?"
            assert bob.failure is None
            assert (await bob.send_text(room.room_id, "yes")).message_id

    run(scenario())


def test_presence_follows_members_coming_and_going(relay: RelayProcess) -> None:
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with client(relay, "alice") as alice:
            await alice.join(room)
            async with client(relay, "bob") as bob:
                assert (await bob.join(room)).members == 2
                await wait_for(alice, lambda e: e == PresenceChanged(rid, 2))
                assert alice.presence[rid] == 2
                await bob.leave(rid)
                await wait_for(alice, lambda e: e == PresenceChanged(rid, 1))
                assert rid not in bob.presence
                assert (await bob.join(room)).members == 2
                await wait_for(alice, lambda e: e == PresenceChanged(rid, 2))
            await wait_for(alice, lambda e: e == PresenceChanged(rid, 1))
            assert alice.presence[rid] == 1

    run(scenario())


def test_closing_a_client_hangs_up_before_close_returns(relay: RelayProcess) -> None:
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with client(relay, "alice") as alice:
            await alice.join(room)
            bob = client(relay, "bob")
            bob.start()
            await bob.join(room)
            await wait_for(alice, lambda e: e == PresenceChanged(rid, 2))
            await bob.close()
            # bob's connection is closed, not left for the garbage collector: the relay
            # has seen him go before it answers alice's ping.
            assert PresenceChanged(rid, 1) in await events_until_pong(alice)

    run(scenario())


def test_a_client_turned_away_by_the_address_limit_tries_again() -> None:
    """A 429 (too many connections from this address) is a reason to back off, not to
    give up."""
    room = fresh_room()
    with running_relay("--connections-per-address", "1") as relay:

        async def scenario() -> None:
            async with TcpProxy(relay.port) as proxy:
                async with client(relay, "alice") as alice:
                    await alice.join(room)
                    bob = RoomClient(
                        f"http://{LOOPBACK}:{proxy.port}",
                        device(),
                        "bob",
                        reconnect_delays=fast_retries,
                    )
                    bob.start()
                    joining = asyncio.create_task(bob.join(room))
                    # A second attempt means the first was turned away and bob retries.
                    await proxy.wait_accepted(2)
                    assert not joining.done()
                async with bob:
                    assert (await joining).members == 1  # alice is gone, bob is in

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_server_that_is_no_relay_fails_the_join() -> None:
    """A handshake refused for good (here a 404) fails join() instead of hanging it."""
    room = fresh_room()
    with running_relay() as relay:

        async def scenario() -> None:
            lost = RoomClient(f"{relay.url}/not/the/relay", device(), "lost")
            async with lost:
                with pytest.raises(RelayRefused) as refused:
                    await lost.join(room)
                assert "404" in str(refused.value)
                with pytest.raises(RelayRefused):
                    await lost.send_text(room.room_id, "anyone?")

        run(scenario(), timeout=10)
    assert_exited_cleanly(relay)


def test_a_refused_join_raises_join_refused() -> None:
    room = fresh_room()
    with running_relay("--members-per-room", "1") as relay:

        async def scenario() -> None:
            async with client(relay, "alice") as alice, client(relay, "bob") as bob:
                await alice.join(room)
                with pytest.raises(JoinRefused) as refused:
                    await bob.join(room)
                assert refused.value.code == ErrorCode.ROOM_FULL

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_join_refused_for_a_held_leaves_place_goes_through() -> None:
    """At the rooms-per-connection limit, the LEAVE held for a room still joining keeps
    its place; a JOIN for another room meanwhile is refused, then sent again behind it."""
    room_a, room_b = fresh_room(), fresh_room()
    with running_relay("--rooms-per-connection", "1") as relay:

        async def scenario() -> None:
            async with client(relay, "alice") as alice:
                await alice.join(room_a)
                await alice.leave(room_a.room_id)
                first = asyncio.create_task(alice.join(room_a))
                await asyncio.sleep(0)  # its JOIN is written; the CHALLENGE is not back yet
                await alice.leave(room_a.room_id)
                with pytest.raises(RoomGone):
                    await first
                joined = await alice.join(room_b)
                assert joined.room_id == room_b.room_id

        run(scenario())
    assert_exited_cleanly(relay)


def test_messages_refused_for_the_rate_are_sent_again_and_arrive_once() -> None:
    room = fresh_room()
    flags = ("--messages-per-second", "50", "--message-burst", "12")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with client(relay, "alice") as alice, client(relay, "bob") as bob:
                await alice.join(room)
                await bob.join(room)
                texts = [f"message {n}" for n in range(20)]  # past the burst
                await asyncio.gather(*(alice.send_text(room.room_id, t) for t in texts))
                got: list[str] = []
                async for received in bob.messages():
                    got.append(received.message.text)
                    if len(got) == len(texts):
                        break
                assert sorted(got) == sorted(texts)
                # Only what was refused went again: no copies for the replay filter to drop.
                heard = await events_until_pong(bob)
                assert sum(isinstance(e, MessageReceived) for e in heard) == len(texts)
                assert not any(isinstance(e, MessageRejected) for e in heard)

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_lost_ack_makes_a_copy_that_the_receiver_drops(relay: RelayProcess) -> None:
    """The relay took a message but its ACK was lost: the sender sends it again after
    reconnecting, and the receiver shows it once."""
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with TcpProxy(relay.port) as proxy:
            alice = RoomClient(
                f"http://{LOOPBACK}:{proxy.port}", device(), "alice", reconnect_delays=fast_retries
            )
            async with alice, client(relay, "bob") as bob:
                await alice.join(room)
                await bob.join(room)
                proxy.swallowing = True  # alice hears nothing more from the relay
                sending = asyncio.create_task(alice.send_text(rid, "only once"))
                first = await next_message(bob)  # the relay took it and told bob
                assert first.message.text == "only once"
                assert not sending.done()  # alice never had the ACK
                await proxy.cut()
                async with asyncio.timeout(10):
                    sent = await sending  # sent again after reconnecting, and taken
                assert sent.message_id == first.message.message_id
                heard = await events_until_pong(bob)  # all bob's events since joining
                assert [e for e in heard if isinstance(e, MessageReceived)] == [first]
                assert MessageRejected(rid, "ReplayedMessage") in heard

    run(scenario())


def slow_retries() -> Generator[float]:
    while True:
        yield 0.4


def retrying_every(seconds: float) -> Callable[[], Generator[float]]:
    """Reconnect delays of ``seconds`` each: a member still backing off after a restart."""

    def delays() -> Generator[float]:
        while True:
            yield seconds

    return delays


def test_a_relay_restart_loses_and_duplicates_nothing() -> None:
    """Messages sent while connected, in flight, and while reconnecting all arrive exactly
    once, across a graceful restart and a crash of the relay.

    bob reconnects more slowly than alice, so alice is back in the room first, alone: her
    outbox must wait for him (the client holds it until the room's count is back).
    """
    room = fresh_room()
    rid = room.room_id
    with running_relay() as first:
        port = first.port

        async def restart(stack: contextlib.ExitStack) -> RelayProcess:
            """A new relay on the same port, started in a thread: the clients keep going."""
            return await asyncio.to_thread(stack.enter_context, running_relay(port=port))

        async def scenario() -> None:
            alice = RoomClient(first.url, device(), "alice", reconnect_delays=fast_retries)
            bob = RoomClient(first.url, device(), "bob", reconnect_delays=slow_retries)
            async with alice, bob, contextlib.AsyncExitStack() as tasks:
                await alice.join(room)
                await bob.join(room)
                heard: dict[str, list[MessageReceived]] = {"alice": [], "bob": []}
                sent: dict[str, list[tuple[bytes, str]]] = {"alice": [], "bob": []}

                async def collect(member: RoomClient, name: str) -> None:
                    async for received in member.messages():
                        heard[name].append(received)

                for member, name in ((alice, "alice"), (bob, "bob")):
                    task = asyncio.create_task(collect(member, name))
                    tasks.push_async_callback(cancelled, task)

                async def say(member: RoomClient, name: str, text: str) -> None:
                    message = await member.send_text(rid, text)
                    sent[name].append((message.message_id, text))

                def saying(phase: str) -> list[Coroutine[Any, Any, None]]:
                    said = [say(alice, "alice", f"alice {phase} {n}") for n in range(3)]
                    return said + [say(bob, "bob", f"bob {phase} {n}") for n in range(3)]

                with contextlib.ExitStack() as relays:
                    await asyncio.gather(*saying("before"))
                    # A graceful restart; what is said in the outage waits in the outbox.
                    assert await asyncio.to_thread(first.terminate) == 0
                    outage = asyncio.gather(*saying("in the outage"))
                    second = await restart(relays)
                    async with asyncio.timeout(15):
                        await outage
                    await asyncio.gather(*saying("after the restart"))

                    # A crash: the relay stops reading, so what is said now is in flight,
                    # never acknowledged, when it dies.
                    second.process.send_signal(signal.SIGSTOP)
                    in_flight = asyncio.gather(*saying("in flight"))
                    await asyncio.sleep(0)  # each send is published before its first await
                    second.process.kill()
                    await asyncio.to_thread(second.process.wait)
                    third = await restart(relays)
                    async with asyncio.timeout(15):
                        await in_flight
                    await asyncio.gather(*saying("after the crash"))

                    # Everything the relay took has been delivered when both pings return.
                    await events_until_pong(alice)
                    await events_until_pong(bob)
                    assert await asyncio.to_thread(third.terminate) == 0
                assert_exited_cleanly(third)

            for listener, speaker in (("bob", "alice"), ("alice", "bob")):
                got = Counter((m.message.message_id, m.message.text) for m in heard[listener])
                assert got == Counter(sent[speaker])
                assert len(sent[speaker]) == 5 * 3

        run(scenario())
    assert_exited_cleanly(first)


def test_a_member_backing_off_for_seconds_still_hears_what_was_said_while_it_was_away() -> None:
    """After a restart, bob's next try comes 5 s after alice is back (a backoff grown
    during a longer outage; the reference clients' reaches 10 s): what alice says
    meanwhile waits in her outbox for him, past the 3 s that it used to wait."""
    room = fresh_room()
    rid = room.room_id

    with running_relay() as first, contextlib.ExitStack() as relays:

        async def scenario() -> None:
            alice = RoomClient(first.url, device(), "alice", reconnect_delays=fast_retries)
            bob = RoomClient(first.url, device(), "bob", reconnect_delays=retrying_every(5.0))
            async with alice, bob:
                await alice.join(room)
                await bob.join(room)
                await alice.send_text(rid, "before")
                assert (await next_message(bob)).message.text == "before"
                assert await asyncio.to_thread(first.terminate) == 0
                outage = asyncio.gather(*(alice.send_text(rid, f"away {n}") for n in range(2)))
                await asyncio.to_thread(relays.enter_context, running_relay(port=first.port))
                async with asyncio.timeout(15):
                    await outage  # taken by the relay once bob was back
                async with asyncio.timeout(5):
                    heard = [(await next_message(bob)).message.text for _ in range(2)]
                assert sorted(heard) == ["away 0", "away 1"]

        run(scenario())


def test_a_client_new_to_a_relay_that_has_just_restarted_waits_for_its_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh client (a ``send``) whose first try gets in, right after a relay restart:
    the relay says it has just started (PROTOCOL.md 10.1), so what the client writes waits
    for the members still reconnecting, here bob, 2 s after it, for the grace (here 4 s).
    It had gone at once, to nobody, and was lost though the relay took it."""
    monkeypatch.setattr(connection, "REJOIN_GRACE", 4.0)
    room = fresh_room()
    rid = room.room_id

    with running_relay() as first, contextlib.ExitStack() as relays:
        says_uptime = ("--say-uptime-for", "60")

        async def scenario() -> None:
            bob = RoomClient(first.url, device(), "bob", reconnect_delays=retrying_every(2.0))
            async with bob:
                await bob.join(room)
                first.process.kill()
                await asyncio.to_thread(first.process.wait)
                again = running_relay(*says_uptime, port=first.port)
                await asyncio.to_thread(relays.enter_context, again)
                async with RoomClient(first.url, device(), "alice") as alice:
                    await alice.join(room)
                    started = time.monotonic()
                    await alice.send_text(rid, "are you back?")
                    waited = time.monotonic() - started
                async with asyncio.timeout(5):
                    heard = await next_message(bob)
                assert heard.message.text == "are you back?"
                assert 3 < waited < 10  # the grace, not for ever

        run(scenario())


def test_a_relay_says_how_long_ago_it_started_in_its_first_minute_only() -> None:
    relay = Relay(RelayConfig(host=LOOPBACK, port=0))
    assert relay.config.say_uptime_for == UPTIME_SAID_FOR == 60

    async def said() -> str | None:
        """What the 101 says; /healthz, which the web client reads (a page cannot read a
        handshake's headers), says the same, to GET and HEAD."""
        url = f"ws://{LOOPBACK}:{relay.port}/ws"
        async with connect(url, subprotocols=[Subprotocol(SUBPROTOCOL)]) as ws:
            assert ws.response is not None
            in_101 = ws.response.headers.get(UPTIME_HEADER)
        for method in ("GET", "HEAD"):
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            writer.write(f"{method} /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            writer.close()
            assert head.startswith("http/1.1 200"), head
            found = [line.partition(":")[2].strip() for line in head.split("\r\n")
                     if line.startswith(UPTIME_HEADER.lower() + ":")]  # fmt: skip
            assert found == ([] if in_101 is None else [in_101]), (method, head)
        return in_101

    async def scenario() -> None:
        await relay.start()
        try:
            assert await said() == "0"
            relay.started -= 30
            assert await said() == "30"
            relay.started -= UPTIME_SAID_FOR - 30  # a minute up
            assert await said() is None
            relay.started += UPTIME_SAID_FOR
            object.__setattr__(relay.config, "say_uptime_for", 0)  # --say-uptime-for 0
            assert await said() is None
        finally:
            await relay.shutdown()

    run(scenario())


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# A stand-in relay, for what a real relay does not do on cue


class Peer:
    """One connection to the stand-in relay, with a relay's answers (PROTOCOL.md 8.5) at
    hand: ``answer`` one frame as a relay would, or ``serve`` until the client goes."""

    def __init__(self, ws: ServerConnection, number: int) -> None:
        self.ws = ws
        self.number = number  # 1 for the first connection
        self.received: list[frames.Frame] = []
        self.challenges: dict[bytes, tuple[bytes, bytes]] = {}  # room id -> (key, challenge)
        self.rooms: set[bytes] = set()

    async def recv(self) -> frames.Frame:
        data = await self.ws.recv()
        assert isinstance(data, bytes)
        frame = frames.decode_frame(data)
        self.received.append(frame)
        return frame

    async def send(self, frame: frames.Frame) -> None:
        await self.ws.send(frames.encode_frame(frame))

    def joins(self) -> int:
        return sum(isinstance(f, frames.Join) for f in self.received)

    async def answer(self, frame: frames.Frame) -> None:
        match frame:
            case frames.Join(room_id, public_key, _):
                challenge = secrets.token_bytes(32)
                self.challenges[room_id] = (public_key, challenge)  # replaces an older one
                await self.send(frames.Challenge(room_id, challenge))
            case frames.Proof(room_id, signature):
                pending = self.challenges.pop(room_id, None)
                if pending is None:
                    await self.send(frames.Error(ErrorCode.NO_CHALLENGE, 0, room_id, "no"))
                    return
                try:
                    verify_join_proof(pending[0], room_id, pending[1], signature)
                except JoinProofError:
                    await self.send(frames.Error(ErrorCode.PROOF_FAILED, 0, room_id, "no"))
                    return
                self.rooms.add(room_id)
                await self.send(frames.Joined(room_id, 0, 1))
            case frames.Publish(ref, room_id, _):
                if room_id in self.rooms:
                    await self.send(frames.Ack(ref))
                else:
                    error = frames.Error(ErrorCode.NOT_JOINED, ref, room_id, "not a member")
                    await self.send(error)
            case frames.Leave(room_id):
                self.rooms.discard(room_id)
                self.challenges.pop(room_id, None)
            case frames.Ping(token):
                await self.send(frames.Pong(token))

    async def serve(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.answer(await self.recv())


Script = Callable[[Peer], Coroutine[Any, Any, None]]


class FakeRelay:
    """A WebSocket server on loopback that runs ``scripts[n - 1]`` for its n-th connection
    (the last script for any after), selecting ``instantroom.v1`` unless told not to."""

    def __init__(
        self, *scripts: Script, subprotocol: bool = True, clock_off_by: float = 0.0
    ) -> None:
        """``clock_off_by``: seconds the Date of its handshake answers is off by."""
        self.scripts = scripts
        self.subprotocol = subprotocol
        self.clock_off_by = clock_off_by
        self.peers: list[Peer] = []
        self.url = ""
        self._server: Server | None = None
        self._connected = asyncio.Condition()

    async def __aenter__(self) -> FakeRelay:
        self._server = await serve(
            self._handle,
            LOOPBACK,
            0,
            subprotocols=[Subprotocol(SUBPROTOCOL)] if self.subprotocol else None,
            compression=None,
            ping_interval=None,
            process_response=self._dated,
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{LOOPBACK}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _dated(self, ws: ServerConnection, request: Request, response: Response) -> Response:
        if self.clock_off_by:
            del response.headers["Date"]
            stamp = email.utils.formatdate(time.time() + self.clock_off_by, usegmt=True)
            response.headers["Date"] = stamp
        return response

    async def wait_for_connections(self, count: int) -> None:
        async with self._connected:
            await self._connected.wait_for(lambda: len(self.peers) >= count)

    async def _handle(self, ws: ServerConnection) -> None:
        peer = Peer(ws, len(self.peers) + 1)
        async with self._connected:
            self.peers.append(peer)
            self._connected.notify_all()
        await self.scripts[min(peer.number, len(self.scripts)) - 1](peer)


def closing_with(code: int) -> Script:
    async def script(peer: Peer) -> None:
        await peer.ws.close(code, "as scripted")

    return script


async def serving(peer: Peer) -> None:
    await peer.serve()


class CountedDelays:
    """Reconnect delays that record each one taken: (which backoff, which delay in it)."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.taken: list[tuple[int, int]] = []
        self.backoffs = 0

    def __call__(self) -> Generator[float]:
        backoff = self.backoffs
        self.backoffs += 1
        for n in itertools.count():
            self.taken.append((backoff, n))
            yield self.delay


@pytest.mark.parametrize("code", [CloseCode.POLICY_VIOLATION, CloseCode.MESSAGE_TOO_BIG])
def test_a_fatal_close_code_stops_the_client(code: int) -> None:
    """PROTOCOL.md 11.2: after 1008 or 1009, "do not reconnect in a loop": the client
    stops, and whoever waits, or calls later, is told why."""
    room = fresh_room()

    async def scenario() -> None:
        async with FakeRelay(closing_with(code)) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                with pytest.raises(RelayRefused) as refused:
                    await alice.join(room)
                assert refused.value.close_code == code
                assert str(code) in str(refused.value)
                assert alice.failure is refused.value
                await asyncio.sleep(0.3)  # six retries' worth
                assert len(relay.peers) == 1
                with pytest.raises(RelayRefused):
                    await alice.send_text(room.room_id, "anyone?")

    run(scenario(), timeout=10)


def test_a_text_message_from_the_relay_is_closed_with_1008_and_stops_the_client() -> None:
    """PROTOCOL.md 10.1: every frame is binary, and the side that receives a text message
    closes with 1008; a relay that sends one is broken, and 11.2 says what follows a 1008:
    "do not reconnect in a loop". The client stops, and whoever reads is told why."""
    room = fresh_room()
    closed: list[int | None] = []

    async def script(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            await peer.ws.send("\x1b[2Jnot a frame")
            await peer.serve()
        closed.append(peer.ws.close_code)

    async def scenario() -> None:
        async with FakeRelay(script) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.join(room)

                async def every_event() -> None:
                    while True:
                        await alice.next_event()

                with pytest.raises(RelayRefused) as refused:
                    await asyncio.wait_for(every_event(), 5)
                assert "text message" in str(refused.value)
                assert "1008" in str(refused.value)
                assert "\x1b" not in str(refused.value)
                assert alice.failure is refused.value
                await asyncio.sleep(0.3)  # six retries' worth
                assert len(relay.peers) == 1
                with pytest.raises(RelayRefused):
                    await alice.send_text(room.room_id, "anyone?")
        assert closed == [CloseCode.POLICY_VIOLATION]

    run(scenario(), timeout=10)


def test_a_relay_that_accepts_then_closes_is_retried_with_backoff() -> None:
    """Every reconnect, also after a connection that opened, waits for the next delay of
    one backoff, which does not start afresh without a JOINED."""
    room = fresh_room()
    delays = CountedDelays()

    async def scenario() -> None:
        async with FakeRelay(closing_with(CloseCode.INTERNAL_ERROR)) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=delays)
            async with alice:
                joining = asyncio.create_task(alice.join(room))
                await relay.wait_for_connections(5)
                assert not joining.done()
                joining.cancel()
        assert delays.backoffs == 1
        assert delays.taken[:4] == [(0, 0), (0, 1), (0, 2), (0, 3)]

    run(scenario(), timeout=10)


def joined_then_closed(code: int, after: float = 0.0) -> Script:
    """Let the client into its room, then close ``after`` seconds later."""

    async def script(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            await asyncio.sleep(after)
            await peer.ws.close(code)

    return script


def test_the_backoff_starts_afresh_only_after_a_connection_lasted_past_its_joined() -> None:
    room = fresh_room()
    delays = CountedDelays()

    async def scenario() -> None:
        closing = closing_with(CloseCode.INTERNAL_ERROR)
        lasting = joined_then_closed(CloseCode.SERVICE_RESTART, after=0.5)
        async with FakeRelay(closing, closing, lasting, serving) as relay:
            alice = RoomClient(
                relay.url, device(), "alice", reconnect_delays=delays, stable_after=0.2
            )
            async with alice:
                await alice.join(room)  # on the third connection
                for _ in range(2):  # the third connection's JOINED, then the fourth's
                    await wait_for(alice, lambda e: isinstance(e, Joined))
                assert len(relay.peers) == 4
        # Two delays of the first backoff, then the first delay of a fresh one.
        assert delays.taken == [(0, 0), (0, 1), (1, 0)]

    run(scenario(), timeout=10)


def test_a_relay_that_lets_us_in_then_fails_is_retried_with_backoff() -> None:
    """A JOINED alone does not restart the backoff: a relay that lets the client in and
    then fails (1011) at once would be reconnected to ten times a second."""
    room = fresh_room()
    delays = CountedDelays()

    async def scenario() -> None:
        async with FakeRelay(joined_then_closed(CloseCode.INTERNAL_ERROR)) as relay:
            alice = RoomClient(
                relay.url, device(), "alice", reconnect_delays=delays, stable_after=0.5
            )
            async with alice:
                await alice.join(room)
                await relay.wait_for_connections(5)
        assert delays.backoffs == 1
        assert delays.taken[:4] == [(0, 0), (0, 1), (0, 2), (0, 3)]

    run(scenario(), timeout=10)


def test_a_server_that_does_not_select_the_subprotocol_is_refused() -> None:
    """PROTOCOL.md 10.1: a client closes a connection on which the relay did not select
    instantroom.v1, and does not try again."""
    room = fresh_room()

    async def scenario() -> None:
        async with FakeRelay(serving, subprotocol=False) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                with pytest.raises(RelayRefused) as refused:
                    await alice.join(room)
                assert SUBPROTOCOL in str(refused.value)
                await asyncio.sleep(0.3)
                assert len(relay.peers) == 1
                assert relay.peers[0].received == []  # not a word to it

    run(scenario(), timeout=10)


def test_a_join_retry_does_not_outlive_its_connection() -> None:
    """A JOIN retry timed after RATE_LIMITED on one connection must not fire on the next,
    which joined already: its second JOIN would replace the challenge under the first
    PROOF, which would fail (PROOF_FAILED) and the room would be given up."""
    room = fresh_room()

    async def rate_limited_then_restarting(peer: Peer) -> None:
        join = await peer.recv()
        assert isinstance(join, frames.Join)
        await peer.send(frames.Error(ErrorCode.RATE_LIMITED, 0, join.room_id, "slow down"))
        await peer.ws.close(CloseCode.SERVICE_RESTART)

    async def slow_to_answer(peer: Peer) -> None:
        await asyncio.sleep(0.8)  # the client's retry, if alive, fires meanwhile
        await peer.serve()

    async def scenario() -> None:
        async with FakeRelay(rate_limited_then_restarting, slow_to_answer) as relay:
            alice = RoomClient(
                relay.url,
                device(),
                "alice",
                reconnect_delays=fast_retries,
                retry_after_rate_limit=0.2,
            )
            async with alice:
                assert (await alice.join(room)).room_id == room.room_id
                assert [peer.joins() for peer in relay.peers] == [1, 1]

    run(scenario(), timeout=10)


def test_a_join_refused_as_relay_full_is_tried_again_later() -> None:
    """RELAY_FULL says "try later": join() says so at once, and the client sends its JOIN
    again after a while, on the same connection; the join goes through once the relay
    has room, and join() again waits for that."""
    room = fresh_room()

    async def full_at_first(peer: Peer) -> None:
        join = await peer.recv()
        await peer.answer(join)  # CHALLENGE
        await peer.recv()  # a good PROOF, but no room for one more room
        full = frames.Error(ErrorCode.RELAY_FULL, 0, room.room_id, "try again later")
        await peer.send(full)
        await peer.serve()

    async def scenario() -> None:
        async with FakeRelay(full_at_first) as relay:
            alice = RoomClient(
                relay.url,
                device(),
                "alice",
                reconnect_delays=fast_retries,
                retry_after_full=0.2,
            )
            async with alice:
                with pytest.raises(JoinRefused) as refused:
                    await alice.join(room)
                assert refused.value.code == ErrorCode.RELAY_FULL
                assert str(refused.value) == "try again later"
                assert (await alice.join(room)).room_id == room.room_id
                assert len(relay.peers) == 1
                assert relay.peers[0].joins() == 2

    run(scenario(), timeout=10)


def test_a_full_room_left_and_joined_again_while_it_waits_is_asked_for_once() -> None:
    """The retry set for a full room is that room's: left and joined again meanwhile, the
    new one has a JOIN and a retry of its own, and the old retry must not add a second."""
    room = fresh_room()
    retry_after = 1.0

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        joins_at: list[float] = []  # when the relay heard each JOIN (and refused it)
        third_join = asyncio.Event()

        async def always_full(peer: Peer) -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    frame = await peer.recv()
                    if isinstance(frame, frames.Join):
                        joins_at.append(loop.time())
                        if len(joins_at) == 3:
                            third_join.set()
                        full = frames.Error(ErrorCode.ROOM_FULL, 0, room.room_id, "Full.")
                        await peer.send(full)

        async with FakeRelay(always_full) as relay:
            alice = RoomClient(relay.url, device(), "alice", retry_after_full=retry_after)
            async with alice:
                with pytest.raises(JoinRefused):
                    await alice.join(room)  # a JOIN at 0 s: its retry comes at 1 s
                await asyncio.sleep(0.5)
                await alice.leave(room.room_id)
                with pytest.raises(JoinRefused):
                    await alice.join(room)  # again at 0.5 s: its retry comes at 1.5 s
                await third_join.wait()
                # The new room's retry, a full delay after its refusal (set no sooner than
                # its JOIN was heard); not the first room's, half a delay sooner.
                assert joins_at[2] - joins_at[1] >= retry_after
                (peer,) = relay.peers
                assert peer.joins() == 3

    run(scenario(), timeout=10)


def test_a_relay_full_join_goes_through_once_a_real_relay_has_room() -> None:
    """The same against a relay that remembers one room: the first room's id, once it
    expired and was kept its while, makes way for the second room."""
    first, second = fresh_room(), fresh_room()
    with running_relay("--max-rooms", "1", "--max-room-lifetime", "1") as relay:

        async def scenario() -> None:
            alice = RoomClient(relay.url, device(), "alice", retry_after_full=0.25)
            bob = RoomClient(relay.url, device(), "bob", retry_after_full=0.25)
            async with alice, bob:
                await alice.join(first, now_ms() + 800)  # the relay's one room fact
                with pytest.raises(JoinRefused) as refused:
                    await bob.join(second)
                assert refused.value.code == ErrorCode.RELAY_FULL
                async with asyncio.timeout(10):
                    # Each JOIN tried again is answered: refused, until one is let in.
                    answers: list[int] = []
                    while True:
                        try:
                            joined = await bob.join(second)
                            break
                        except JoinRefused as again:
                            answers.append(again.code)
                    assert joined.room_id == second.room_id
                    assert set(answers) <= {ErrorCode.RELAY_FULL}

        run(scenario(), timeout=20)
    assert_exited_cleanly(relay)


def test_a_room_full_for_now_is_joined_once_a_place_comes_free() -> None:
    """ROOM_FULL says "try later" too: what the refused member writes meanwhile waits in
    its outbox, and reaches the room once a member has left and its JOIN gets in."""
    room = fresh_room()
    with running_relay("--members-per-room", "2") as relay:

        async def scenario() -> None:
            alice = RoomClient(relay.url, device(), "alice")
            carol = RoomClient(relay.url, device(), "carol")
            bob = RoomClient(relay.url, device(), "bob", retry_after_full=0.25)
            async with alice, carol, bob:
                await alice.join(room)
                await carol.join(room)
                with pytest.raises(JoinRefused) as refused:
                    await bob.join(room)
                assert refused.value.code == ErrorCode.ROOM_FULL
                sending = asyncio.create_task(bob.send_text(room.room_id, "let me in"))
                for _ in range(2):  # the first refusal, then a JOIN tried again, refused too
                    await wait_for(
                        bob, lambda e: isinstance(e, Refused) and e.code == ErrorCode.ROOM_FULL
                    )
                assert not sending.done()
                await carol.leave(room.room_id)
                async with asyncio.timeout(10):
                    await sending
                    received = await wait_for(alice, lambda e: isinstance(e, MessageReceived))
                assert isinstance(received, MessageReceived)
                assert received.message.text == "let me in"
                assert received.message.sender_name == "bob"

        run(scenario(), timeout=20)
    assert_exited_cleanly(relay)


def test_a_message_refused_as_not_joined_is_sent_again_after_joining_again() -> None:
    """PROTOCOL.md 10.6: on NOT_JOINED the client joins again, then resends."""
    room = fresh_room()

    async def forgetful(peer: Peer) -> None:
        await peer.answer(await peer.recv())  # JOIN
        await peer.answer(await peer.recv())  # PROOF: JOINED
        publish = await peer.recv()
        peer.rooms.clear()  # the relay lost track of us
        await peer.answer(publish)  # NOT_JOINED
        await peer.serve()

    async def scenario() -> None:
        async with FakeRelay(forgetful) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.join(room)
                sent = await alice.send_text(room.room_id, "still here")
                assert sent.text == "still here"
                (peer,) = relay.peers
                assert peer.joins() == 2
                publishes = [f for f in peer.received if isinstance(f, frames.Publish)]
                assert len(publishes) == 2
                assert publishes[0].envelope == publishes[1].envelope

    run(scenario(), timeout=10)


def test_a_message_too_big_for_the_relay_stops_the_client_for_good() -> None:
    """A relay whose --max-frame-size is below ours closes with 1009: the client says so
    to the sender and does not come back to send the same message again and again."""
    room = fresh_room()
    with running_relay("--max-frame-size", "4096") as relay:

        async def scenario() -> None:
            async with TcpProxy(relay.port) as proxy:
                alice = RoomClient(
                    f"http://{LOOPBACK}:{proxy.port}",
                    device(),
                    "alice",
                    reconnect_delays=fast_retries,
                )
                async with alice:
                    await alice.join(room)
                    with pytest.raises(RelayRefused) as refused:
                        await alice.send_text(room.room_id, "x" * 10_000)
                    assert refused.value.close_code == CloseCode.MESSAGE_TOO_BIG
                    await asyncio.sleep(0.3)  # six retries' worth of fast_retries
                    assert proxy.accepted == 1
                    assert not alice.connected.is_set()

        run(scenario(), timeout=15)
    assert_exited_cleanly(relay)


async def silent(peer: Peer) -> None:
    """Take every frame, answer none."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await peer.recv()


async def joining_only(peer: Peer) -> None:
    """Answer everything but PUBLISH."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            frame = await peer.recv()
            if not isinstance(frame, frames.Publish):
                await peer.answer(frame)


def test_close_fails_whoever_waits_and_every_later_call() -> None:
    """close() tells a join() or send_text() still waiting, and every later call, that the
    client was closed; readers of messages() and events are told too."""
    room, other = fresh_room(), fresh_room()

    async def scenario() -> None:
        async with FakeRelay(silent) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            alice.start()
            joining = asyncio.create_task(alice.join(room))
            reading = asyncio.create_task(next_message(alice))
            await relay.wait_for_connections(1)
            await asyncio.sleep(0.1)
            await alice.close()
            with pytest.raises(RoomGone, match="closed"):
                await joining
            with pytest.raises(RoomGone, match="closed"):
                await reading
            with pytest.raises(RoomGone, match="closed"):
                await alice.next_event()
            with pytest.raises(RoomGone, match="closed"):
                await alice.join(other)
            with pytest.raises(RoomGone, match="closed"):
                await alice.send_text(room.room_id, "anyone?")

        async with FakeRelay(joining_only) as relay:
            bob = RoomClient(relay.url, device(), "bob", reconnect_delays=fast_retries)
            bob.start()
            await bob.join(room)
            sending = asyncio.create_task(bob.send_text(room.room_id, "never acknowledged"))
            await asyncio.sleep(0.1)
            await bob.close()
            with pytest.raises(RoomGone, match="closed"):
                await sending

    run(scenario(), timeout=10)


def test_a_message_the_relay_never_takes_fails_its_send_after_55_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """send_text() to a relay that never ACKs raises MessageNotSent once the message is
    OUTBOX_MAX_AGE_MS old (PROTOCOL.md 10.6), rather than waiting for an ACK that would
    report as taken a message the others refuse as too old; a late ACK changes nothing."""
    room = fresh_room()

    async def scenario() -> None:
        async with (
            FakeRelay(joining_only) as relay,
            RoomClient(relay.url, device(), "bob", reconnect_delays=fast_retries) as bob,
        ):
            await bob.join(room)
            sending = asyncio.create_task(bob.send_text(room.room_id, "never taken"))
            await asyncio.sleep(0)  # send_text puts it on the wire before its first await
            assert bob.session.in_flight == 1
            await events_until_pong(bob)  # the relay has the PUBLISH
            (publish,) = [f for f in relay.peers[0].received if isinstance(f, frames.Publish)]
            later = now_ms() + OUTBOX_MAX_AGE_MS
            monkeypatch.setattr(connection, "now_ms", lambda: later)  # 55 minutes on
            with pytest.raises(MessageNotSent, match="55 minutes"):
                await sending
            given_up = await wait_for(bob, lambda e: isinstance(e, NotSent))
            assert isinstance(given_up, NotSent)
            assert given_up.room_id == room.room_id
            assert bob.session.unacknowledged == 0
            # The relay answers at last: nothing is accepted, and its place is free.
            await relay.peers[0].send(frames.Ack(publish.ref))
            assert not any(isinstance(e, Accepted) for e in await events_until_pong(bob))
            assert bob.session.in_flight == 0

    run(scenario(), timeout=10)


def test_a_fatal_close_wakes_the_readers_of_messages_and_events() -> None:
    """A client stopped for good raises its failure from messages() and next_event(),
    after what came before, instead of leaving a listener waiting forever."""
    room = fresh_room()

    async def scenario() -> None:
        script = joined_then_closed(CloseCode.POLICY_VIOLATION, after=0.2)
        async with FakeRelay(script) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.join(room)
                with pytest.raises(RelayRefused) as refused:
                    await next_message(alice)
                assert refused.value is alice.failure
                assert refused.value.close_code == CloseCode.POLICY_VIOLATION
                assert isinstance(await alice.next_event(), Joined)  # what came before
                for _ in range(2):  # and again, for whoever asks
                    with pytest.raises(RelayRefused):
                        await alice.next_event()
                assert len(relay.peers) == 1

    run(scenario(), timeout=10)


def test_a_join_cancelled_by_one_caller_goes_on_for_another() -> None:
    room = fresh_room()

    async def slow(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await peer.recv()
                await asyncio.sleep(0.3)
                await peer.answer(frame)

    async def scenario() -> None:
        async with FakeRelay(slow) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                impatient = asyncio.create_task(alice.join(room))
                patient = asyncio.create_task(alice.join(room))
                await asyncio.sleep(0.1)
                impatient.cancel()
                assert (await patient).room_id == room.room_id
                assert impatient.cancelled()
                assert relay.peers[0].joins() == 1

    run(scenario(), timeout=10)


def test_a_room_known_to_have_expired_is_not_joined() -> None:
    """PROTOCOL.md 9: a client MUST NOT join a room it knows has expired; it sends no
    JOIN and says so at once."""
    expired, live = fresh_room(), fresh_room()

    async def scenario() -> None:
        async with FakeRelay(serving) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.connected.wait()
                with pytest.raises(RoomGone, match="expired"):
                    await alice.join(expired, now_ms() - 1)
                await alice.join(live, now_ms() + 60_000)
                joins = [f for f in relay.peers[0].received if isinstance(f, frames.Join)]
                assert [j.room_id for j in joins] == [live.room_id]
                assert expired.room_id not in alice.session.rooms

    run(scenario(), timeout=10)


def test_a_join_retry_does_not_outlive_a_leave_and_join_again() -> None:
    """A JOIN retry timed after RATE_LIMITED, still pending when the room is left and
    joined again, must not send a second JOIN under the new one's PROOF."""
    room = fresh_room()
    retry_after = 0.5

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        answer_at = loop.create_future()  # when the second JOIN may be answered

        async def rate_limited_once(peer: Peer) -> None:
            with contextlib.suppress(ConnectionClosed):
                join = await peer.recv()
                assert isinstance(join, frames.Join)
                await peer.send(frames.Error(ErrorCode.RATE_LIMITED, 0, join.room_id, "no"))
                while True:
                    frame = await peer.recv()
                    if isinstance(frame, frames.Join):  # the old retry falls due meanwhile
                        await asyncio.sleep(max(0.0, await answer_at - loop.time()))
                    await peer.answer(frame)

        async with FakeRelay(rate_limited_once) as relay:
            alice = RoomClient(
                relay.url,
                device(),
                "alice",
                reconnect_delays=fast_retries,
                retry_after_rate_limit=retry_after,
            )
            async with alice:
                first = asyncio.create_task(alice.join(room))
                await wait_for(
                    alice, lambda e: isinstance(e, Refused) and e.code == ErrorCode.RATE_LIMITED
                )
                # The retry was set before the refusal was told: it is due by then.
                answer_at.set_result(loop.time() + retry_after + 0.05)
                await alice.leave(room.room_id)
                with pytest.raises(RoomGone):
                    await first
                assert (await alice.join(room)).room_id == room.room_id
                received = [type(f).__name__ for f in relay.peers[0].received]
                assert received == ["Join", "Leave", "Join", "Proof"]

    run(scenario(), timeout=10)


def test_leaving_and_joining_again_before_the_challenge_comes_joins() -> None:
    """A LEAVE and a second JOIN behind an unanswered JOIN made the relay forget the first
    challenge: the PROOF for it failed and the join was refused for good. The LEAVE now
    waits for the answer, and the new join takes that answer."""
    room = fresh_room()

    async def slow_first_challenge(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            join = await peer.recv()
            await asyncio.sleep(0.3)  # meanwhile the room is left and joined again
            await peer.answer(join)
            await peer.serve()

    async def scenario() -> None:
        async with FakeRelay(slow_first_challenge) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                first = asyncio.create_task(alice.join(room))
                await relay.wait_for_connections(1)
                await asyncio.sleep(0.1)
                await alice.leave(room.room_id)
                with pytest.raises(RoomGone):
                    await first
                assert (await alice.join(room)).room_id == room.room_id
                received = [type(f).__name__ for f in relay.peers[0].received]
                assert received == ["Join", "Proof"]

    run(scenario(), timeout=10)


def test_an_outbox_of_800_written_in_an_outage_arrives_and_the_client_lives_on() -> None:
    """800 messages written while the relay is down all go out once it is back, within
    the relay's default rate limit: at most MAX_IN_FLIGHT on the wire, one pause after
    refusals, so the relay never refuses 500 in a row and closes with 1008."""
    room = fresh_room()
    count = 800
    with running_relay() as first:
        port = first.port

        async def scenario() -> None:
            alice = RoomClient(first.url, device(), "alice", reconnect_delays=fast_retries)
            bob = RoomClient(first.url, device(), "bob", reconnect_delays=fast_retries)
            async with alice, bob:
                await alice.join(room)
                await bob.join(room)
                assert await asyncio.to_thread(first.terminate) == 0
                await asyncio.sleep(0.2)
                assert not alice.connected.is_set()
                texts = [f"outage {n}" for n in range(count)]
                sending = asyncio.gather(*(alice.send_text(room.room_id, t) for t in texts))
                await asyncio.sleep(0.2)
                assert alice.session.unacknowledged == count
                with contextlib.ExitStack() as relays:
                    await asyncio.to_thread(relays.enter_context, running_relay(port=port))
                    async with asyncio.timeout(45):
                        await sending
                        got: list[str] = []
                        async for received in bob.messages():
                            got.append(received.message.text)
                            if len(got) == count:
                                break
                    assert sorted(got) == sorted(texts)
                    assert alice.failure is None
                    assert alice.connected.is_set()
                    assert (await alice.send_text(room.room_id, "still here")).text

        run(scenario(), timeout=90)
    assert_exited_cleanly(first)


def test_what_waits_for_readers_is_bounded_in_bytes_and_gone_at_expiry(
    relay: RelayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that does not keep up (or reads only messages(), or only next_event())
    holds the latest messages up to QUEUE_BYTES each, and none of a room that expired."""
    monkeypatch.setattr(connection, "QUEUE_BYTES", 10 * 1000)
    room, other = fresh_room(), fresh_room()

    async def scenario() -> None:
        async with client(relay, "flood") as sender, client(relay, "slow") as reader:
            expires = now_ms() + 4000
            for joining in (sender, reader):
                await joining.join(room, expires)
                await joining.join(other)
            for n in range(30):
                await sender.send_text(other.room_id, f"{n:03}" + "x" * 997)
            await sender.send_text(room.room_id, "in the room that ends")
            await events_until_pong(sender)  # the relay has handed everything out
            await wait_for(
                reader, lambda e: isinstance(e, MessageReceived) and e.room_id == room.room_id
            )
            kept = []
            while reader._messages._items:  # what waits, read without waiting
                received = await next_message(reader)
                kept.append(received.message.text[:3])
            assert 1 <= len(kept) <= 10
            assert kept[-1] == "in "  # the latest kept, the oldest dropped
            assert kept[:-1] == [f"{n:03}" for n in range(30 - len(kept) + 1, 30)]
            # Sent again, into the room about to end, and left unread: gone at its expiry.
            await sender.send_text(room.room_id, "unread when the room ends")
            await wait_for(reader, lambda e: isinstance(e, RoomExpired))
            assert not [m for m in reader._messages._items if m is not None]

    run(scenario())


def test_whether_ours_were_sent_is_never_dropped_for_a_reader_that_lags(
    relay: RelayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood that fills the events of a reader who lags pushes out old messages, never
    the Accepted (or NotSent) that tells it one of its own was sent."""
    monkeypatch.setattr(connection, "QUEUE_BYTES", 10 * 1000)
    room = fresh_room()

    async def scenario() -> None:
        async with client(relay, "flood") as flood, client(relay, "alice") as alice:
            await alice.join(room)
            await flood.join(room)
            mine = (alice.send_text(room.room_id, f"mine {n}") for n in range(5))
            sent = [message.message_id for message in await asyncio.gather(*mine)]
            for n in range(30):
                await flood.send_text(room.room_id, f"{n:03}" + "x" * 997)
            heard = await events_until_pong(alice)
            assert [e.message_id for e in heard if isinstance(e, Accepted)] == sent
            received = [e for e in heard if isinstance(e, MessageReceived)]
            assert 1 <= len(received) <= 10  # the flood was cut down all the same

    run(scenario())


def test_what_says_ours_were_sent_is_bounded_too_for_a_reader_of_messages_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A program that reads messages() and never next_event() lets events pile up: the
    Accepted kept aside from the dropped ones are at most MAX_OUTBOX, the newest."""
    monkeypatch.setattr(connection, "QUEUE_LIMIT", 3)
    monkeypatch.setattr(connection, "MAX_OUTBOX", 5)
    room = fresh_room().room_id

    async def scenario() -> list[Event]:
        inbox: connection._Inbox[Event] = connection._Inbox()
        for n in range(20):
            inbox.offer(Accepted(room, n.to_bytes(16)))
            inbox.offer(PresenceChanged(room, n))
        return [await inbox.get() for _ in range(5 + 3)]

    kept = run(scenario())
    assert kept[:5] == [Accepted(room, n.to_bytes(16)) for n in range(14, 19)]
    assert kept[5:] == [PresenceChanged(room, 18), Accepted(room, (19).to_bytes(16)),
                        PresenceChanged(room, 19)]  # fmt: skip


def test_reconnect_delays_are_spread_and_bounded() -> None:
    first, second = list(itertools.islice(default_delays(), 30)), []
    second = list(itertools.islice(default_delays(), 30))
    assert first != second  # two clients cut off together do not come back in step
    assert all(0 <= delay <= 10.0 for delay in first + second)
    assert max(first[-5:]) > 4  # and they grow to the cap


def test_a_url_s_credentials_are_never_shown() -> None:
    url = "https://someone:s3cret-pass@relay.example/chat/"
    shown = RoomClient(url, device(), "me").url
    assert shown == "wss://relay.example/chat/ws"
    assert without_credentials("ws://u:p@127.0.0.1:9/ws") == "ws://127.0.0.1:9/ws"


def test_an_outbox_kept_beyond_a_client_goes_with_the_next_one_once(relay: RelayProcess) -> None:
    """post_text() hands back the sealed envelope at once; a later client that joins with
    it sends it byte for byte (Accepted), gives up one too old to go (NotSent), and the
    receiver shows the message once, even when the first client's copy went too."""
    room = fresh_room()
    rid = room.room_id
    alice_key = device()

    async def scenario() -> None:
        async with client(relay, "bob") as bob:
            await bob.join(room)
            offline = RoomClient("http://127.0.0.1:9/", alice_key, "alice")  # nothing there
            async with offline:
                joining = asyncio.create_task(offline.join(room))
                await asyncio.sleep(0)
                message, envelope = offline.post_text(rid, "written offline")
                kept = offline.session.outbox_of(rid)
                assert kept == [(message.message_id, message.timestamp_ms, envelope)]
                joining.cancel()
            too_old = (b"\x01" * 16, now_ms() - OUTBOX_MAX_AGE_MS - 1, envelope)
            async with client(relay, "alice", alice_key) as alice:
                await alice.join(room, outbox=[too_old, *kept])
                assert await wait_for(alice, lambda e: isinstance(e, NotSent)) == NotSent(
                    rid, too_old[0], NOT_SENT_IN_TIME
                )
                taken = await wait_for(alice, lambda e: isinstance(e, Accepted))
                assert taken == Accepted(rid, message.message_id)
                got = await next_message(bob)
                assert (got.message.message_id, got.message.text) == (
                    message.message_id,
                    "written offline",
                )
                # The same envelope once more, as a second copy of the store would send it.
                again = RoomClient(relay.url, alice_key, "alice", reconnect_delays=fast_retries)
                async with again:
                    await again.join(room, outbox=kept)
                    await wait_for(again, lambda e: isinstance(e, Accepted))
                heard = await events_until_pong(bob)  # all bob's events since joining
                assert [e for e in heard if isinstance(e, MessageReceived)] == [got]
                assert MessageRejected(rid, "ReplayedMessage") in heard

    run(scenario())


def test_a_floor_given_to_join_refuses_what_is_stamped_at_or_below_it(relay: RelayProcess) -> None:
    """join(floor_ms=...): the time up to which a restarted client no longer knows which
    messages it had (its store kept only the newest ids); a relay's replay of one of
    those is refused, what is newer comes through."""
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with client(relay, "bob") as bob, raw_client(relay.ws_url) as raw:
            await bob.join(room)
            await raw.join(room)
            before = await bob.send_text(rid, "before the floor")
            while not isinstance(delivered := await raw.recv(), frames.Deliver):
                pass  # presence
            async with client(relay, "alice") as alice:
                await alice.join(room, floor_ms=before.timestamp_ms)
                await raw.send(frames.Publish(1, rid, delivered.envelope))  # a replay
                rejected = await wait_for(alice, lambda e: isinstance(e, MessageRejected))
                assert rejected == MessageRejected(rid, "StaleMessage")
                await bob.send_text(rid, "after the floor")
                assert (await next_message(alice)).message.text == "after the floor"

    run(scenario())


class Frozen:
    """A relay that lets us in, then hears nothing more (a process stopped, a network
    gone): our close frame goes unanswered until ``thaw`` is set."""

    def __init__(self) -> None:
        self.thaw = asyncio.Event()

    async def __call__(self, peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            peer.ws.transport.pause_reading()
            await self.thaw.wait()
            peer.ws.transport.resume_reading()
            await peer.ws.wait_closed()


def test_close_waits_a_moment_at_most_for_a_relay_that_stopped_answering() -> None:
    """websockets waits 10 seconds for the answer to a close frame: close(), and with it a
    script's --timeout or SIGTERM, waited as long for a relay that had stopped answering."""
    room = fresh_room()

    async def scenario() -> None:
        frozen = Frozen()
        async with FakeRelay(frozen) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            alice.start()
            await alice.join(room)
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await alice.close()
            finally:
                frozen.thaw.set()
            assert loop.time() - started < connection.CLOSE_TIMEOUT + 3

    run(scenario(), timeout=30)


def test_close_passes_its_caller_s_cancellation_on() -> None:
    """A timeout or TaskGroup that cancels a task inside close() cancels it: close() took
    the CancelledError for its own task's and swallowed it, and the caller ran on as if
    never cancelled. The connection is not left open either."""
    room = fresh_room()

    async def scenario() -> None:
        frozen = Frozen()
        async with FakeRelay(frozen) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            alice.start()
            await alice.join(room)
            # Frozen, the relay holds close() for CLOSE_TIMEOUT: the timeout falls inside it.
            try:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(connection.CLOSE_TIMEOUT / 5):
                        await alice.close()
            finally:
                frozen.thaw.set()
            # The socket was dropped, not left to finish its close: the relay sees it go.
            async with asyncio.timeout(5):
                await relay.peers[0].ws.wait_closed()
            with pytest.raises(RoomGone, match="closed"):
                await alice.join(room)
            await alice.close()  # and again, to its end

    run(scenario(), timeout=30)


def test_a_closed_client_is_not_started_again() -> None:
    """``async with`` a client already closed connected again, serving nothing."""
    room = fresh_room()

    async def scenario() -> None:
        async with FakeRelay(serving) as relay:
            alice = RoomClient(relay.url, device(), "alice", reconnect_delays=fast_retries)
            async with alice:
                await alice.join(room)
            with pytest.raises(RoomGone, match="closed"):
                async with alice:
                    pass
            await alice.close()
            assert len(relay.peers) == 1

    run(scenario(), timeout=10)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


async def reason_of(member: RoomClient) -> str:
    """Why ``member`` cannot reach its relay, once a try has failed."""
    async with asyncio.timeout(15):
        while member.unreachable is None:  # noqa: ASYNC110 (no event says a try failed)
            await asyncio.sleep(0.02)
    return member.unreachable


def test_a_relay_out_of_reach_says_why_without_the_url_s_password() -> None:
    """A client that cannot reach its relay said nothing of why (the chat showed
    "connecting..." forever): ``unreachable`` says it, naming the relay's host and port
    but never the URL's user name or password, and is None again once connected."""
    room = fresh_room()
    port = free_port()

    async def scenario() -> None:
        url = f"http://someone:s3cret@{LOOPBACK}:{port}/"
        alice = RoomClient(url, device(), "alice", reconnect_delays=fast_retries)
        async with alice, contextlib.AsyncExitStack() as stack:
            assert alice.unreachable is None  # nothing tried yet
            joining = asyncio.create_task(alice.join(room))
            stack.push_async_callback(cancelled, joining)
            reason = await reason_of(alice)
            assert reason.startswith(f"The relay at {LOOPBACK}:{port} could not be reached: ")
            assert "nothing answers on that port" in reason
            assert "s3cret" not in reason
            assert "someone" not in reason
            with contextlib.ExitStack() as relays:  # the relay comes up where it was awaited
                await asyncio.to_thread(relays.enter_context, running_relay(port=port))
                async with asyncio.timeout(15):
                    await joining
                assert alice.unreachable is None

    run(scenario(), timeout=60)


def test_a_relay_reached_with_the_wrong_scheme_says_which_to_use(relay: RelayProcess) -> None:
    """https:// to a relay without TLS, and http:// to one with it, kept trying in
    silence: each says what is wrong."""

    async def reason_for(url: str) -> str:
        async with RoomClient(url, device(), "alice", reconnect_delays=fast_retries) as alice:
            joining = asyncio.create_task(alice.join(fresh_room()))
            try:
                return await reason_of(alice)
            finally:
                await cancelled(joining)

    async def scenario(tls: RelayProcess) -> None:
        tls_url = relay.url.replace("http:", "https:")
        reason = await reason_for(tls_url)
        assert f"The relay at {LOOPBACK}:{relay.port} could not be reached" in reason
        assert "TLS handshake failed" in reason
        assert "http://" in reason
        reason = await reason_for(tls.url)  # http:// to a relay that serves TLS
        assert "no HTTP answer" in reason
        assert "https://" in reason

    with running_relay("--tls-self-signed") as tls:
        run(scenario(tls), timeout=60)


@contextlib.asynccontextmanager
async def answering_status(port: int, status: str) -> AsyncIterator[None]:
    """An HTTP server on ``port`` that answers every request ``status``, as a proxy
    (or a CDN) does in front of a relay that is down or restarting."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, LOOPBACK, port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


def test_a_proxy_whose_relay_is_down_is_retried_whatever_5xx_it_answers() -> None:
    """A CDN answers 520 to 526 for a server that is down: tried again, as 502 and 503
    are, not given up for good."""
    port = free_port()

    async def scenario() -> None:
        alice = RoomClient(f"http://{LOOPBACK}:{port}/", device(), "alice",
                           reconnect_delays=fast_retries)  # fmt: skip
        async with contextlib.AsyncExitStack() as stack:
            async with answering_status(port, "521 Web Server Is Down"):
                await stack.enter_async_context(alice)
                joining = asyncio.create_task(alice.join(fresh_room()))
                stack.push_async_callback(cancelled, joining)
                assert "it answered HTTP 521" in await reason_of(alice)
                await asyncio.sleep(0.3)  # tried again meanwhile, and still waiting
                assert not joining.done()
            with contextlib.ExitStack() as relays:
                await asyncio.to_thread(relays.enter_context, running_relay(port=port))
                async with asyncio.timeout(15):
                    await joining

    run(scenario(), timeout=60)


def test_a_4xx_is_a_refusal_at_first_and_an_outage_once_the_relay_was_reached() -> None:
    """A wrong URL's 404 is said at once. But once let in at that URL, a 404 is a proxy
    whose relay is restarting: a listen or a chat that gave up then was gone for good."""
    port = free_port()

    async def scenario() -> None:
        url = f"http://{LOOPBACK}:{port}/"
        bob = RoomClient(url, device(), "bob", reconnect_delays=fast_retries)
        async with answering_status(port, "404 Not Found"), bob:
            with pytest.raises(RelayRefused):
                await bob.join(fresh_room())
        room = fresh_room()
        alice = RoomClient(url, device(), "alice", reconnect_delays=fast_retries)
        async with alice:
            with contextlib.ExitStack() as relays:
                await asyncio.to_thread(relays.enter_context, running_relay(port=port))
                await alice.join(room)
            alice.connected.clear()
            async with answering_status(port, "404 Not Found"):
                assert "it answered HTTP 404" in await reason_of(alice)
                await asyncio.sleep(0.3)
            with contextlib.ExitStack() as relays:
                await asyncio.to_thread(relays.enter_context, running_relay(port=port))
                async with asyncio.timeout(15):
                    await alice.connected.wait()
                assert (await alice.join(room)).room_id == room.room_id

    run(scenario(), timeout=60)


def test_an_unreachable_reason_holds_no_words_of_the_server_but_its_status() -> None:
    """What a server answered, and an exception's own text, stay out of the reason: only
    its HTTP status, and the system's words for an error number."""
    url = "ws://relay.example:8080/ws"
    answer = InvalidStatus(Response(502, "Bad <secret> Gateway", Headers(), b"<secret>"))
    assert unreachable_reason(answer, url) == (
        "The relay at relay.example:8080 could not be reached: it answered HTTP 502."
    )
    failed = OSError(errno.ENETUNREACH, "<secret>")
    assert "<secret>" not in unreachable_reason(failed, url)
    assert os.strerror(errno.ENETUNREACH).lower() in unreachable_reason(failed, url)
    assert "<secret>" not in unreachable_reason(RuntimeError("<secret>"), url)


def test_a_name_that_could_not_be_looked_up_is_not_called_unknown() -> None:
    """Offline, or with the DNS server down (EAI_AGAIN), the name may well exist."""
    url = "ws://relay.example:8080/ws"
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert unreachable_reason(unknown, url).endswith(": no such host name.")
    offline = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert unreachable_reason(offline, url).endswith(": the host name could not be looked up.")


def test_the_clock_offset_is_read_from_the_relays_date() -> None:
    """This machine's clock against the relay's, from the handshake's Date (PROTOCOL.md 7):
    a warning says so when they are 2 minutes or more apart."""
    room = fresh_room()

    async def offset(clock_off_by: float) -> int | None:
        async with (
            FakeRelay(serving, clock_off_by=clock_off_by) as relay,
            RoomClient(relay.url, device(), "alice") as alice,
        ):
            assert alice.clock_offset_ms is None  # not connected yet
            await alice.join(room)
            return alice.clock_offset_ms

    behind, on_time = run(offset(-600)), run(offset(0))
    assert behind is not None
    assert abs(behind - 600_000) < 2_000  # ours is 10 minutes fast
    assert on_time is not None
    assert abs(on_time) < 2_000
    assert clock_warning(on_time, CLOCK_WARNING_MS) is None
    assert "10 minutes fast" in (clock_warning(behind, CLOCK_WARNING_MS) or "")
    assert "about 3 hours slow" in (clock_warning(-3 * 3_600_000, CLOCK_WARNING_MS) or "")
    assert "about 20610 days slow" in (clock_warning(-1_780_700_000_000, CLOCK_WARNING_MS) or "")
    assert clock_warning(None, CLOCK_WARNING_MS) is None


def test_a_clock_the_relay_says_is_fast_expires_no_room_early() -> None:
    """A room's key is deleted at its expiry, for good: by a clock a day fast, every room
    went at once. Rooms expire by this clock read back by what the relay's says; one on
    time expires them as before."""

    async def expired_within(clock_off_by: float) -> bool:
        room = fresh_room()
        async with (
            FakeRelay(serving, clock_off_by=clock_off_by) as relay,
            RoomClient(relay.url, device(), "alice") as alice,
        ):
            await alice.join(room, now_ms() + 1_500)  # over in 1.5 s, by this clock
            try:
                await asyncio.wait_for(
                    wait_for(alice, lambda e: isinstance(e, RoomExpired)), timeout=4
                )
            except TimeoutError:
                return False
            return True

    assert not run(expired_within(-24 * 3600))  # ours is a day fast: kept
    assert run(expired_within(0))


def test_no_log_line_holds_credentials_room_ids_or_text_with_debug_on_everywhere(
    relay: RelayProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A program using the client turns DEBUG on for every logger: websockets' own DEBUG
    lines (request headers, the first bytes of frames) stay off."""
    room = fresh_room()
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        url = f"http://someone:pw-canary@{LOOPBACK}:{relay.port}"
        async with RoomClient(url, device(), "alice") as alice, client(relay, "bob") as bob:
            await alice.join(room)
            await bob.join(room)
            await alice.send_text(room.room_id, "text-canary")
            assert (await next_message(bob)).message.text == "text-canary"

    run(scenario())
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records  # DEBUG was on (asyncio says which selector it uses)
    for secret in ("pw-canary", "text-canary", room.room_id.hex()[:8], "Authorization"):
        assert secret not in logged

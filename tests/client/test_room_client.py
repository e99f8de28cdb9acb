"""The asyncio client library against a relay process: messages, presence, refusals,
rate limits, and a relay restart in mid-conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections import Counter
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest

from instantroom.client.connection import JoinRefused, RelayRefused, RoomClient
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.kdf import DeviceKey
from instantroom.protocol.session import (
    Event,
    MessageReceived,
    MessageRejected,
    PongReceived,
    PresenceChanged,
)
from instantroom.testing import (
    LOOPBACK,
    RelayProcess,
    TcpProxy,
    assert_exited_cleanly,
    fresh_room,
    run,
    running_relay,
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


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

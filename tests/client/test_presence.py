"""Who is in a room (PROTOCOL.md 5.7), as ``RoomClient`` shows it against a relay process:
announcing clients name each other, one that closes says so (a LEAVE message), one cut
off is found by the roll call, and one that announces nothing is counted, never named.

Waits poll with a deadline (presence runs on each client's one-second tick and on answer
delays of up to two seconds); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator

from instantroom.client import connection
from instantroom.client.connection import RoomClient
from instantroom.protocol.kdf import DeviceKey
from instantroom.protocol.session import MembersChanged, PresenceChanged
from instantroom.testing import LOOPBACK, RelayProcess, TcpProxy, fresh_room, run, running_relay
from tests.client.test_room_client import (
    FakeRelay,
    Peer,
    device,
    events_until_pong,
    fast_retries,
    next_message,
    retrying_every,
    wait_for,
)

# Time enough for a roll call: the count goes down, a JOIN within two seconds and the next
# tick, judged five seconds later at a tick; with room to spare on a loaded machine.
ROLL_CALL_WAIT = 20.0


def announcing(
    url: str,
    name: str,
    key: DeviceKey,
    delays: Callable[[], Generator[float]] = fast_retries,
) -> RoomClient:
    return RoomClient(url, key, name, reconnect_delays=delays, announce=True)


def named(member: RoomClient, room_id: bytes) -> list[tuple[str, str]]:
    """(name, fingerprint) of each member ``member`` has in its roster, oldest first."""
    return [(m.name, m.fingerprint) for m in member.members(room_id)]


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def never() -> Generator[float]:
    """Reconnect delays for a client that must not come back within a test."""
    while True:
        yield 3600.0


def test_announcing_members_name_each_other_and_one_that_closes_says_it_leaves(
    relay: RelayProcess,
) -> None:
    room = fresh_room()
    rid = room.room_id
    alice_key, bob_key, carol_key = device(), device(), device()
    alice_is = ("alice", alice_key.fingerprint)
    bob_is = ("bob", bob_key.fingerprint)
    carol_is = ("carol", carol_key.fingerprint)

    async def scenario() -> None:
        async with (
            announcing(relay.url, "alice", alice_key) as alice,
            announcing(relay.url, "bob", bob_key) as bob,
        ):
            await alice.join(room)
            await bob.join(room)
            # bob's JOIN names him to alice; her HERE, answering it, names her to him.
            await until(lambda: named(alice, rid) == [bob_is], "alice to see bob")
            await until(lambda: named(bob, rid) == [alice_is], "bob to see alice")
            assert not any(m.key_changed for m in alice.members(rid) + bob.members(rid))

            carol = announcing(relay.url, "carol", carol_key)
            carol.start()
            await carol.join(room)
            await until(lambda: named(alice, rid) == [bob_is, carol_is], "alice to see carol")
            await until(lambda: named(bob, rid) == [alice_is, carol_is], "bob to see carol")
            await until(lambda: set(named(carol, rid)) == {alice_is, bob_is}, "carol's roster")

            await events_until_pong(alice)  # what came so far: read
            await carol.close()
            # Her LEAVE message reaches alice before the relay's new count does: she goes
            # at once, not at a roll call five seconds later.
            changes: list[MembersChanged] = []

            def count_down(event: object) -> bool:
                if isinstance(event, MembersChanged):
                    changes.append(event)
                return event == PresenceChanged(rid, 2)

            await wait_for(alice, count_down)
            assert changes, "carol's LEAVE changed nothing before the count went down"
            assert [(m.name, m.fingerprint) for m in changes[-1].members] == [bob_is]
            assert named(alice, rid) == [bob_is]
            await until(lambda: named(bob, rid) == [alice_is], "bob to see carol go")

    run(scenario())


def test_a_member_cut_off_goes_at_the_roll_call_and_a_silent_one_is_never_named(
    relay: RelayProcess,
) -> None:
    """carol's connection is cut (no LEAVE): the count goes down, an announcing member
    calls a roll call, and carol, who does not answer, is removed. The listener, which
    announces nothing, is counted all along, answers no roll call, and is named by none."""
    room = fresh_room()
    rid = room.room_id
    alice_key, bob_key, carol_key = device(), device(), device()
    alice_is = ("alice", alice_key.fingerprint)
    bob_is = ("bob", bob_key.fingerprint)
    carol_is = ("carol", carol_key.fingerprint)

    async def scenario() -> None:
        async with (
            TcpProxy(relay.port) as proxy,
            announcing(relay.url, "alice", alice_key) as alice,
            announcing(relay.url, "bob", bob_key) as bob,
            RoomClient(relay.url, device(), "listener", reconnect_delays=fast_retries) as quiet,
            # Through the proxy, and slow to come back once cut off.
            announcing(f"http://{LOOPBACK}:{proxy.port}", "carol", carol_key, never) as carol,
        ):
            await alice.join(room)
            await quiet.join(room)
            await bob.join(room)
            await carol.join(room)
            await until(lambda: named(alice, rid) == [bob_is, carol_is], "alice's roster")
            # (alice's HERE, answering bob's JOIN, may come after carol's JOIN)
            await until(lambda: set(named(bob, rid)) == {alice_is, carol_is}, "bob's roster")
            # The listener names those it hears announce (alice answering bob's JOIN), and
            # is counted by the relay.
            await until(
                lambda: set(named(quiet, rid)) == {alice_is, bob_is, carol_is}, "its roster"
            )
            assert alice.presence[rid] == 4

            await proxy.cut()
            await until(lambda: alice.presence.get(rid) == 3, "the relay to see carol go")
            assert carol_is in named(alice, rid)  # no LEAVE: still named, till the roll call
            await until(
                lambda: named(alice, rid) == [bob_is], "the roll call at alice", ROLL_CALL_WAIT
            )
            await until(lambda: named(bob, rid) == [alice_is], "the roll call at bob", 5.0)
            # Every announcing member answered that roll call; the listener did not, and is
            # counted without a name: 3 online, alice, and her roster of one (bob).
            assert alice.presence[rid] == 3
            # Announcing nothing, the listener still judges the roll calls it hears.
            await until(
                lambda: set(named(quiet, rid)) == {alice_is, bob_is}, "the listener's roll call"
            )

    run(scenario(), timeout=60)


def test_scripts_announce_nothing() -> None:
    """``instantroom send`` and ``listen`` make their RoomClient with the defaults: a
    client announces only when asked to."""
    client = RoomClient(f"http://{LOOPBACK}:9", device(), "script")
    assert client.session.announce is False


class Stuck:
    """A relay that lets us in, then reads nothing more, with a receive buffer so small
    that what we write soon stays in our own buffers (a relay stopped, a network gone)."""

    def __init__(self) -> None:
        self.thaw = asyncio.Event()

    async def __call__(self, peer: Peer) -> None:
        with contextlib.suppress(Exception):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            sock = peer.ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.ws.transport.pause_reading()
            await self.thaw.wait()
            peer.ws.transport.resume_reading()
            await peer.ws.wait_closed()


def test_close_says_it_leaves_for_a_moment_at_most_when_the_connection_is_stuck() -> None:
    """The LEAVE messages are a courtesy: a connection that takes nothing more (a flush
    already waiting on it) does not hold close() up, nor does its close frame, which
    cannot be written either (websockets' close timeout starts once it is: close() took
    20 seconds, until its keepalive gave up)."""
    room = fresh_room()

    async def scenario() -> None:
        stuck = Stuck()
        async with FakeRelay(stuck) as relay:
            alice = announcing(relay.url, "alice", device())
            alice.start()
            try:
                await alice.join(room)
                # Messages the relay never reads: the connection's flush waits on its buffers.
                for _ in range(60):
                    alice.post_text(room.room_id, "x" * 50_000)
                await until(lambda: alice._send_lock.locked(), "the flush to start")
                await asyncio.sleep(0.5)  # not a timing assertion: time for the buffers to fill
                assert alice._send_lock.locked(), "the flush was not held up"
                loop = asyncio.get_running_loop()
                started = loop.time()
                await alice.close()
                bound = connection.LEAVING_TIMEOUT + connection.HANG_UP_TIMEOUT + 1
                assert loop.time() - started < bound
            finally:
                stuck.thaw.set()
                await alice.close()

    run(scenario(), timeout=30)


def test_a_one_shot_sender_filling_the_count_does_not_release_the_outbox_early() -> None:
    """After a restart carol, who was not in the room, sends once while bob is still
    backing off: the count is back to two, yet alice's outbox waits for bob himself
    (her roster had him), and he hears what she said while he was away."""
    room = fresh_room()
    rid = room.room_id

    with running_relay() as first, contextlib.ExitStack() as relays:

        async def scenario() -> None:
            alice = announcing(first.url, "alice", device())
            bob = announcing(first.url, "bob", device(), retrying_every(4.0))
            async with alice, bob:
                await alice.join(room)
                await bob.join(room)
                await until(lambda: bool(alice.members(rid)), "alice to hear bob's JOIN")
                assert await asyncio.to_thread(first.terminate) == 0
                away = asyncio.create_task(alice.send_text(rid, "said while bob was away"))
                await asyncio.to_thread(relays.enter_context, running_relay(port=first.port))
                await until(lambda: alice.presence.get(rid) == 1, "alice to be back, alone")
                async with RoomClient(first.url, device(), "carol") as carol:
                    await carol.join(room)
                    await carol.send_text(rid, "one-shot")
                    await until(lambda: alice.presence.get(rid) == 2, "alice to count two")
                    await events_until_pong(alice)  # an ACK for her message would be in
                    assert not away.done()  # the count is back, bob is not
                async with asyncio.timeout(10):
                    await away
                    received = await next_message(bob)
                assert received.message.text == "said while bob was away"

        run(scenario())

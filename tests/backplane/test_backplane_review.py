"""The Redis backplane under bursts and partial failures, on a real redis-server."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import pytest

from instantroom.protocol import frames
from instantroom.relay import hub_redis
from instantroom.relay.config import RelayConfig
from instantroom.relay.hub import HubUnavailable, MembersChanged, MemoryHub, RemoteDelivery
from instantroom.relay.server import Relay
from instantroom.testing import LOOPBACK, RawClient, fresh_room, raw_client, run
from tests.backplane.test_redis_backplane import RedisServer, started_hub

BURST = 300  # joins or leaves at once: past the 100 connections of redis-py's pool


def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give each call to Redis 10 s, not 1: what a burst test asks is whether every call
    is made, not how fast Redis answers on a machine the other tests share (with the
    suite's other processes and their browsers, 300 calls had outlasted 1 s)."""
    monkeypatch.setattr(hub_redis, "CALL_DEADLINE", 10.0)


def test_a_burst_of_joins_is_decided_with_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of admissions at once (a relay's members reconnecting here after it
    restarted): each one past the pool's 100 connections failed at once, and was decided
    alone, with the expiry its joiner claimed rather than the room's."""
    unhurried(monkeypatch)
    rooms = [secrets.token_bytes(32) for _ in range(BURST)]
    now = int(time.time() * 1000)
    recorded, claimed = now + 60_000, now + 3_600_000
    store = redis_server.client()
    for room_id in rooms:  # recorded by another relay
        store.set(b"ir:x:" + room_id, str(recorded), px=120_000)

    async def scenario() -> None:
        async with started_hub(redis_server.url) as hub:

            async def join(room_id: bytes) -> tuple[int, int]:
                hub.room_opened(room_id)
                expires = await hub.agree_expiry(room_id, claimed, 60_000)
                return expires, await hub.set_members(room_id, 1)

            answers = await asyncio.gather(*(join(r) for r in rooms), return_exceptions=True)
            refused = [a for a in answers if isinstance(a, BaseException)]
            assert not refused, (len(refused), refused[0])
            assert set(answers) == {(recorded, 1)}
            assert hub.healthy
            counted = [store.hlen(b"ir:p:" + room_id) for room_id in rooms]
            assert counted == [1] * BURST  # (taken back as the hub closes)

    run(scenario(), 60)


def test_a_burst_of_leaves_takes_every_count_back(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay's members all gone at once (a network blip): the counts past the pool's
    size stayed in Redis, and the other relays showed those members for 30 s more."""
    unhurried(monkeypatch)
    rooms = [secrets.token_bytes(32) for _ in range(BURST)]

    async def scenario() -> None:
        async with started_hub(redis_server.url) as hub:
            for room_id in rooms:
                hub.room_opened(room_id)
                await hub.set_members(room_id, 1)

            async def leave(room_id: bytes) -> int:
                hub.room_closed(room_id)
                return await hub.set_members(room_id, 0)

            answers = await asyncio.gather(*(leave(r) for r in rooms), return_exceptions=True)
            refused = [a for a in answers if isinstance(a, BaseException)]
            assert not refused, (len(refused), refused[0])

    run(scenario(), 60)
    store = redis_server.client()
    assert not [room_id for room_id in rooms if store.exists(b"ir:p:" + room_id)]


def test_a_count_redis_refused_is_told_once_it_is_written(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis out of memory refuses a count: the refresh writes it once it can, and must
    tell the other relays, who recount only when told. They showed the old count until
    something else changed in the room."""
    monkeypatch.setattr(hub_redis, "REFRESH_EVERY", 0.2)
    room_id = fresh_room().room_id

    async def scenario() -> None:
        recounts: asyncio.Queue[bytes] = asyncio.Queue()
        async with (
            started_hub(redis_server.url) as here,
            started_hub(redis_server.url, members_changed=recounts.put_nowait) as there,
        ):
            for hub in (here, there):
                hub.room_opened(room_id)
                await hub.subscribed(room_id)
            assert await there.set_members(room_id, 1) == 1
            assert await here.set_members(room_id, 1) == 2
            async with asyncio.timeout(5):
                assert await recounts.get() == room_id
            store = redis_server.client()
            store.config_set("maxmemory-policy", "noeviction")
            store.config_set("maxmemory", "1")  # every write refused: OOM
            with pytest.raises(HubUnavailable):
                await here.set_members(room_id, 2)
            assert here.healthy  # refused, not lost
            store.config_set("maxmemory", "0")
            async with asyncio.timeout(5):
                assert await recounts.get() == room_id
            assert await there.members(room_id) == 3

    run(scenario())


def test_a_leave_redis_refused_is_taken_back_when_it_can_be(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last member here left while Redis refused new connections (its maxclients
    reached): the count was not taken back then, nor remembered to be, and the other
    relays counted that member until the count went stale (30 s, and up to 10 s more)."""
    monkeypatch.setattr(hub_redis, "REFRESH_EVERY", 0.2)
    room_id = fresh_room().room_id
    key = b"ir:p:" + room_id

    async def scenario() -> None:
        async with (
            started_hub(redis_server.url) as leaving,
            started_hub(redis_server.url) as staying,
        ):
            for hub in (leaving, staying):
                hub.room_opened(room_id)
                await hub.subscribed(room_id)
                await hub.set_members(room_id, 1)
            store = redis_server.client()
            store.config_set("maxclients", "1")
            try:
                # The pools' connections go; new ones are refused. (Subscribers stay.)
                store.client_kill_filter(_type="normal", skipme=True)
                leaving.room_closed(room_id)
                with pytest.raises(HubUnavailable):
                    await leaving.set_members(room_id, 0)
                assert leaving.healthy  # refused, not lost
            finally:
                store.config_set("maxclients", "10000")
            async with asyncio.timeout(10):
                while leaving.relay_id in await asyncio.to_thread(store.hkeys, key):  # noqa: ASYNC110 - polled
                    await asyncio.sleep(0.1)
            assert await staying.members(room_id) == 1

    run(scenario(), 30)


class HeldHub(MemoryHub):
    """A backplane shared with other relays whose counts the test hands out, in the
    order it likes: Redis answers on several connections, in any order."""

    shares_rooms = True

    def __init__(self) -> None:
        self.asked: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue()
        self.members_changed: MembersChanged = lambda room_id: None
        self.holding = False

    async def start(self, deliver: RemoteDelivery, members_changed: MembersChanged) -> None:
        self.members_changed = members_changed

    async def _answer(self, count: int) -> int:
        if not self.holding:
            return count
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.asked.put_nowait(answer)
        return await answer

    async def set_members(self, room_id: bytes, count: int) -> int:
        return await self._answer(count)

    async def members(self, room_id: bytes) -> int:
        return await self._answer(0)


async def presences(client: RawClient) -> list[int]:
    """The counts of the PRESENCE frames that came before a barrier."""
    return [f.members for f in await client.barrier() if isinstance(f, frames.Presence)]


def test_an_older_count_from_the_backplane_does_not_undo_a_newer_one() -> None:
    """Two recounts asked one after the other, answered the other way round: the members
    were told the older count last, and kept it until the room changed again."""
    hub = HeldHub()
    relay = Relay(RelayConfig(host=LOOPBACK, port=0), hub)
    room = fresh_room()

    async def scenario() -> None:
        await relay.start()
        try:
            async with raw_client(f"ws://{LOOPBACK}:{relay.port}/ws") as alice:
                await alice.join(room)
                hub.holding = True
                hub.members_changed(room.room_id)  # other relays' members came: 2,
                hub.members_changed(room.room_id)  # then 3
                older, newer = await hub.asked.get(), await hub.asked.get()
                newer.set_result(3)
                older.set_result(2)
                assert await presences(alice) == [3]
        finally:
            await relay.shutdown()

    run(scenario())


def test_a_joiner_is_told_the_newest_count() -> None:
    """The count a join asked for came back after a newer one had been told: the joiner
    took the older from JOINED, and the other members had it from a PRESENCE."""
    hub = HeldHub()
    relay = Relay(RelayConfig(host=LOOPBACK, port=0), hub)
    room = fresh_room()

    async def scenario() -> None:
        await relay.start()
        url = f"ws://{LOOPBACK}:{relay.port}/ws"
        try:
            async with raw_client(url) as alice, raw_client(url) as bob:
                await alice.join(room)
                hub.holding = True
                challenge = await bob.challenge(room)
                await bob.send(bob.proof(room, challenge))
                joining = await hub.asked.get()  # bob's count, written: 2 in all
                hub.members_changed(room.room_id)  # then another relay's member: 3
                recount = await hub.asked.get()
                recount.set_result(3)
                joining.set_result(2)
                seen = await bob.barrier()
                joined = [f.members for f in seen if isinstance(f, frames.Joined)]
                assert joined == [3], seen
                assert await presences(alice) == [3]
        finally:
            await relay.shutdown()

    run(scenario())


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``condition``, a state of the relay or hub no event tells, until it holds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - no event to wait on: polled
            await asyncio.sleep(0.01)


def test_a_joiners_count_read_late_is_not_lost_to_a_recount_read_early(
    redis_server: RedisServer,
) -> None:
    """Asked earlier is not read earlier: a joiner's count write waits for a place to
    call Redis in, a recount asked after it only reads and does not wait. The recount's
    total, without the joiner, was told as the newest, and the joiner's own dropped: the
    room showed one member fewer than it had until it changed again."""
    room = fresh_room()

    async def scenario() -> None:
        async with started_hub(redis_server.url) as there:
            hub = hub_redis.RedisHub(redis_server.url)
            relay = Relay(RelayConfig(host=LOOPBACK, port=0), hub)
            await relay.start()
            await until(lambda: hub.healthy)
            url = f"ws://{LOOPBACK}:{relay.port}/ws"
            try:
                async with raw_client(url) as alice, raw_client(url) as bob:
                    await alice.join(room)
                    there.room_opened(room.room_id)
                    await there.subscribed(room.room_id)
                    # A burst: every place to call Redis in is taken.
                    for _ in range(hub_redis.CALLS_AT_ONCE):
                        await hub._calls.acquire()
                    challenge = await bob.challenge(room)
                    await bob.send(bob.proof(room, challenge))
                    held = relay.rooms[room.room_id]
                    # Bob in, his count waiting for a place.
                    await until(lambda: len(held.members) == 2 and bool(hub._calls._waiters))
                    # Another relay's member comes: this relay is told, and recounts at once.
                    assert await there.set_members(room.room_id, 1) == 2
                    await until(lambda: held.announced == 2)  # read without Bob, and told
                    for _ in range(hub_redis.CALLS_AT_ONCE):
                        hub._calls.release()
                    truth = 3
                    await until(lambda: held.announced == truth)
                    assert await there.members(room.room_id) == truth
                    assert (await presences(alice))[-1] == truth
                    assert (await presences(bob))[-1] == truth
            finally:
                await relay.shutdown()

    run(scenario(), 30)

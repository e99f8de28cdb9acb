"""Several relays sharing rooms through a real redis-server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from instantroom.client.connection import RoomClient
from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.relay import hub_redis
from instantroom.relay.hub import HubUnavailable, MembersChanged, RemoteDelivery
from instantroom.testing import (
    RawClient,
    RelayProcess,
    assert_exited_cleanly,
    fresh_room,
    http_request,
    raw_client,
    run,
    running_relay,
)

F = TypeVar("F", bound=frames.Frame)
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def pause(self) -> None:
        """SIGSTOP: Redis keeps its connections open and answers nothing, as when a
        partition cuts it off or the server hangs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is not None:
            if self.paused:
                self.resume()
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


@contextlib.contextmanager
def relays(count: int, backplane: str, *args: str) -> Iterator[list[RelayProcess]]:
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(running_relay("--backplane", backplane, *args))
            for _ in range(count)
        ]
        for relay in started:
            relay.wait_for_log("event=backplane.up")
        yield started
    for relay in started:
        assert_exited_cleanly(relay)


async def logged_twice(relay: RelayProcess, text: str) -> None:
    async with asyncio.timeout(15):
        while relay.log_text().count(text) < 2:  # noqa: ASYNC110 - a log, not an event
            await asyncio.sleep(0.05)


def device() -> DeviceKey:
    return DeviceKey.from_private_bytes(secrets.token_bytes(32))


@contextlib.asynccontextmanager
async def clients(urls: list[str]) -> AsyncIterator[list[RoomClient]]:
    started = [RoomClient(url, device(), f"member{n}") for n, url in enumerate(urls)]
    for client in started:
        client.start()
    try:
        yield started
    finally:
        for client in started:
            await client.close()


@contextlib.asynccontextmanager
async def talking_across(
    one: RelayProcess, two: RelayProcess, room: RoomKeys
) -> AsyncIterator[list[RoomClient]]:
    """Two members of ``room`` on relay ``one`` and one on ``two``, a message from the
    first having reached both others."""
    async with clients([one.url, one.url, two.url]) as members:
        for member in members:
            await member.join(room)
        await members[0].send_text(room.room_id, "before")
        assert await next_text(members[1]) == "before"
        assert await next_text(members[2]) == "before"
        yield members


async def next_text(client: RoomClient, wait: float = 5.0) -> str:
    async with asyncio.timeout(wait):
        async for received in client.messages():
            return received.message.text
    raise AssertionError("no message")


async def expect_past_presence(client: RawClient, kind: type[F]) -> F:
    """The next frame that is not a PRESENCE: counts from other relays come any time."""
    while True:
        frame = await client.recv()
        if not isinstance(frame, frames.Presence):
            assert isinstance(frame, kind), frame
            return frame


async def settle_presence(members: list[RoomClient], room: RoomKeys, want: int) -> list[int]:
    """Wait until every member has heard the count ``want`` (or time out and show)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        counts = [client.presence.get(room.room_id, 0) for client in members]
        if all(count == want for count in counts):
            return counts
        await asyncio.sleep(0.02)
    return [client.presence.get(room.room_id, 0) for client in members]


def test_members_on_three_relays_chat_and_agree_on_presence(redis_server: RedisServer) -> None:
    with relays(3, redis_server.url) as (one, two, three):

        async def scenario() -> None:
            room = fresh_room()
            async with clients([one.url, two.url, three.url]) as members:
                for member in members:
                    await member.join(room)
                assert await settle_presence(members, room, 3) == [3, 3, 3]
                for sender in members:
                    await sender.send_text(room.room_id, f"from {sender.session.name}")
                    for other in members:
                        if other is not sender:
                            assert await next_text(other) == f"from {sender.session.name}"
                await members[2].leave(room.room_id)
                assert await settle_presence(members[:2], room, 2) == [2, 2]

        run(scenario())


def test_members_of_a_relay_that_shuts_down_leave_the_count_at_once(
    redis_server: RedisServer,
) -> None:
    """A graceful stop takes its members out of the other relays' counts now, not when
    its counts would have expired in Redis (30 s)."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with clients([one.url, two.url]) as (staying, going):
                for member in (staying, going):
                    await member.join(room)
                assert await settle_presence([staying, going], room, 2) == [2, 2]
                await asyncio.to_thread(two.terminate)
                assert await settle_presence([staying], room, 1) == [1]

        run(scenario())


def test_rooms_stay_apart_across_relays(redis_server: RedisServer) -> None:
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room_a, room_b = fresh_room(), fresh_room()
            async with (
                raw_client(one.ws_url) as a1,
                raw_client(two.ws_url) as a2,
                raw_client(one.ws_url) as b1,
                raw_client(two.ws_url) as b2,
            ):
                for client, room in ((a1, room_a), (a2, room_a), (b1, room_b), (b2, room_b)):
                    await client.join(room)
                await b1.send(frames.Publish(1, room_b.room_id, b"\x01" + bytes(284)))
                await expect_past_presence(b1, frames.Ack)
                delivered = await expect_past_presence(b2, frames.Deliver)
                assert delivered.room_id == room_b.room_id
                # Barriers on the members of room A: nothing of room B came before.
                for client in (a1, a2):
                    seen = await client.barrier()
                    assert not any(isinstance(f, frames.Deliver) for f in seen), seen

        run(scenario())


def test_a_leave_while_the_relays_decide_on_a_proof_abandons_the_join(
    redis_server: RedisServer,
) -> None:
    """With a backplane a good PROOF waits for Redis before JOINED. A LEAVE that comes
    meanwhile must end the join: the connection is in no room, gets no DELIVER, and
    counts in no presence. (Sent right behind the PROOF, the LEAVE is read before Redis
    answers; were it read after, the join and the leave would both happen, with the same
    end.)"""
    with relays(1, redis_server.url) as (one,):

        async def scenario() -> None:
            room = fresh_room()
            async with raw_client(one.ws_url) as stay, raw_client(one.ws_url) as left:
                await stay.join(room)
                challenge = await left.challenge(room)
                await left.send(left.proof(room, challenge))
                await left.send(frames.Leave(room.room_id))
                await asyncio.sleep(0.3)  # any admission still running ends meanwhile
                await left.barrier()
                await stay.send(frames.Publish(1, room.room_id, b"\x01" + bytes(284)))
                await expect_past_presence(stay, frames.Ack)
                seen = await left.barrier()
                assert not any(isinstance(f, frames.Deliver) for f in seen), seen
                # Joining again works, and the room counts two, not three.
                joined = await left.join(room)
                assert joined.members == 2

        run(scenario())


def test_expiry_holds_on_every_relay(redis_server: RedisServer) -> None:
    with relays(3, redis_server.url) as (one, two, three):

        async def scenario() -> None:
            room = fresh_room()
            expires = int(time.time() * 1000) + 2_000
            async with raw_client(one.ws_url) as first, raw_client(two.ws_url) as second:
                joined = await first.join(room, expires)
                assert joined.expires_at_ms == expires
                # A relay that learns the room later, from a client that claims a longer
                # life, still enforces the first expiry.
                later = await second.join(room, expires + 600_000)
                assert later.expires_at_ms == expires
                for client in (first, second):
                    client.timeout = 6.0
                    error = await expect_past_presence(client, frames.Error)
                    assert error.code == ErrorCode.ROOM_EXPIRED
                    assert error.room_id == room.room_id
            # After expiry, no relay lets anyone in, even one that never saw the room.
            for relay in (one, two, three):
                async with raw_client(relay.ws_url) as late:
                    challenge = await late.challenge(room, 0)
                    await late.send(RawClient.proof(room, challenge))
                    await late.expect_error(ErrorCode.ROOM_EXPIRED)

        run(scenario())


def test_a_restarted_redis_learns_a_rooms_expiry_again_from_the_relays_that_know_it(
    redis_server: RedisServer,
) -> None:
    """Redis keeps nothing on disk: after a restart a relay that never saw the room would
    take any expiry a joiner claims, unless the relays that know it tell Redis again."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            expires = int(time.time() * 1000) + 60_000
            async with raw_client(one.ws_url) as first:
                assert (await first.join(room, expires)).expires_at_ms == expires
                redis_server.client().flushall()  # what a restart leaves
                async with raw_client(one.ws_url) as second:
                    assert (await second.join(room, 0)).expires_at_ms == expires
                async with raw_client(two.ws_url) as third:
                    later = await third.join(room, expires + 600_000)
                    assert later.expires_at_ms == expires

        run(scenario())


def test_an_earlier_expiry_from_another_relay_holds_where_a_later_one_was_recorded(
    redis_server: RedisServer,
) -> None:
    """After a Redis restart, a relay that never saw the room records the earlier expiry a
    joiner tells. The relay that had recorded a later one must enforce the earlier too,
    as the relays agree once they meet: it kept its own, told joiners so, and its members
    stayed on after the room had expired on the other relay."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            now = int(time.time() * 1000)
            late, early = now + 60_000, now + 2_000
            async with raw_client(one.ws_url) as first:
                assert (await first.join(room, late)).expires_at_ms == late
                redis_server.client().flushall()  # what a restart leaves
                async with raw_client(two.ws_url) as elsewhere:
                    assert (await elsewhere.join(room, early)).expires_at_ms == early
                    async with raw_client(one.ws_url) as second:
                        assert (await second.join(room, 0)).expires_at_ms == early
                        for client in (first, second, elsewhere):
                            client.timeout = 6.0
                            error = await expect_past_presence(client, frames.Error)
                            assert error.code == ErrorCode.ROOM_EXPIRED

        run(scenario())


def test_an_expiry_told_on_another_relay_holds_for_members_who_joined_without_one(
    redis_server: RedisServer,
) -> None:
    """Members who joined by the key alone (no expiry known) on one relay, then the creator
    telling it on another: at expiry every relay's members are told and taken out, as on
    one relay (PROTOCOL.md 9, 10.8). Those on the first relay had talked on past it."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with (
                raw_client(one.ws_url) as first,
                raw_client(one.ws_url) as second,
                raw_client(two.ws_url) as creator,
            ):
                assert (await first.join(room, 0)).expires_at_ms == 0
                await second.join(room, 0)
                expires = int(time.time() * 1000) + 2_000
                assert (await creator.join(room, expires)).expires_at_ms == expires
                for client in (first, second, creator):
                    client.timeout = 6.0
                    error = await expect_past_presence(client, frames.Error)
                    assert error.code == ErrorCode.ROOM_EXPIRED
                    assert error.room_id == room.room_id

        run(scenario())


def test_losing_redis_tells_each_relays_members_their_own_count_at_once(
    redis_server: RedisServer,
) -> None:
    """Cut off from the other relays, a relay's count is its own members' (PROTOCOL.md
    10.8): members must not go on seeing others who no longer get a word of theirs."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with talking_across(one, two, room) as (left1, left2, right):
                assert await settle_presence([left1, left2, right], room, 3) == [3, 3, 3]
                redis_server.stop()
                for relay in (one, two):
                    await asyncio.to_thread(relay.wait_for_log, "event=backplane.down", 5.0)
                assert await settle_presence([left1, left2], room, 2) == [2, 2]
                assert await settle_presence([right], room, 1) == [1]

        run(scenario(), timeout=60)


def test_losing_redis_keeps_local_delivery_and_resumes_when_it_returns(
    redis_server: RedisServer,
) -> None:
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with talking_across(one, two, room) as (left1, left2, right):
                redis_server.stop()
                one.wait_for_log("event=backplane.down")
                for relay in (one, two):
                    response = await http_request(relay.port, "/healthz")
                    assert response.status == 200
                    assert json.loads(response.body)["status"] == "degraded"
                    metrics = await http_request(relay.port, "/metrics")
                    assert b"instantroom_backplane_healthy 0.0" in metrics.body
                # Local delivery goes on; the relays stay up.
                await left1.send_text(room.room_id, "during")
                assert await next_text(left2) == "during"
                # A new member joins the relay that is cut off from the others.
                async with clients([two.url]) as (newcomer,):
                    await newcomer.join(room)

                redis_server.start()
                for relay in (one, two):  # up once at start, and now again
                    await logged_twice(relay, "event=backplane.up")
                # Cross-relay delivery resumes by itself.
                await left1.send_text(room.room_id, "after")
                assert await next_text(left2) == "after"
                texts = []
                while "after" not in texts:
                    texts.append(await next_text(right, wait=10))
                assert "during" not in texts  # pub/sub keeps nothing while Redis was gone
                for relay in (one, two):
                    response = await http_request(relay.port, "/healthz")
                    assert json.loads(response.body)["status"] == "ok"

        run(scenario(), timeout=90)


def test_a_room_made_on_another_relay_is_no_room_made_by_its_joiner(
    redis_server: RedisServer,
) -> None:
    """Joining without an expiry a room whose expiry another relay recorded makes no room:
    an address at its limit of rooms made still joins it (PROTOCOL.md 9)."""
    with relays(2, redis_server.url, "--max-rooms-per-address", "1") as (one, two):

        async def scenario() -> None:
            later = int(time.time() * 1000) + 3_600_000
            mine, theirs = fresh_room(), fresh_room()
            async with raw_client(one.ws_url) as maker, raw_client(two.ws_url) as other:
                await maker.join(mine, later)  # this address's one room on relay one
                await other.join(theirs, later)  # recorded in Redis by relay two
                async with raw_client(one.ws_url) as joiner:
                    joined = await joiner.join(theirs)
                    assert (joined.expires_at_ms, joined.members) == (later, 2)

        run(scenario())


def test_redis_holds_only_short_lived_room_facts(redis_server: RedisServer) -> None:
    secret_text = "the plaintext that must not be stored " + secrets.token_hex(8)
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> RoomKeys:
            room = fresh_room()
            async with clients([one.url, two.url]) as (alice, bob):
                await alice.join(room, int(time.time() * 1000) + 3_600_000)
                await bob.join(room)
                for n in range(20):
                    await alice.send_text(room.room_id, f"{secret_text} {n}")
                for _ in range(20):
                    await next_text(bob)
            return room

        room = run(scenario())
    store = redis_server.client()
    keys = list(store.scan_iter(count=1000))
    assert keys, "the room facts should be there while they last"
    for key in keys:
        assert key in (b"ir:x:" + room.room_id, b"ir:p:" + room.room_id), key
        ttl = store.pttl(key)
        assert 0 < ttl <= 31 * 24 * 3600 * 1000 * 2, (key, ttl)
        kind = store.type(key)
        values = [store.get(key)] if kind == b"string" else list(store.hgetall(key).values())
        for value in values:
            assert value is not None
            assert secret_text.encode() not in value
    dump = b"".join(store.dump(k) or b"" for k in keys)
    assert secret_text.encode() not in dump


def test_workers_need_a_backplane() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", "serve", "--host", "127.0.0.1",
         "--port", str(free_port()), "--workers", "2"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--backplane" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_relay_with_a_backplane_whose_port_is_taken_says_so_and_exits(
    redis_server: RedisServer, workers: str
) -> None:
    # Its hub's tasks had outlived the failed bind: the process stayed up for good,
    # deaf to SIGTERM, and a service manager saw a relay that looked alive.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "instantroom", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", workers, "--backplane", redis_server.url],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_that_dies_stops_the_relay_with_a_failure_status(
    redis_server: RedisServer,
) -> None:
    # One worker killed (the OOM killer, say) had its siblings stopped and serve exit 0:
    # a service manager restarting on failure never started the relay again.
    with running_relay(
        "--workers", "2", "--backplane", redis_server.url, port=free_port()
    ) as relay:
        relay.wait_for_log("event=relay.started", count=2)
        children = Path(f"/proc/{relay.pid}/task/{relay.pid}/children").read_text().split()
        workers = [
            int(pid)
            for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        assert relay.process.wait(timeout=20) == 128 + signal.SIGKILL


@pytest.mark.parametrize(
    "url",
    ["redis://:s3cret-word@127.0.0.1:6x/0", "redis://:s3cret-word@127.0.0.1:99999/0"],
)
def test_a_backplane_url_that_cannot_be_read_is_said_and_its_password_is_not(url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", "serve", "--host", "127.0.0.1",
         "--port", str(free_port()), "--backplane", url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "backplane URL cannot be read" in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_workers_share_a_port_and_its_rooms(redis_server: RedisServer) -> None:
    port = free_port()
    with running_relay("--workers", "2", "--backplane", redis_server.url, port=port) as relay:

        async def scenario() -> None:
            room = fresh_room()
            # Enough members that the kernel spreads them over both workers.
            async with clients([relay.url] * 8) as members:
                for member in members:
                    await member.join(room)
                assert await settle_presence(members, room, 8) == [8] * 8
                await members[0].send_text(room.room_id, "to all workers")
                for member in members[1:]:
                    assert await next_text(member) == "to all workers"

        run(scenario())
    assert relay.returncode == 0


def test_counts_of_rooms_closed_without_a_last_count_are_taken_back_soon(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired room closes with no last count: the hub takes its count out of Redis at
    its next refresh, and forgets the room, rather than at shutdown only."""
    monkeypatch.setattr(hub_redis, "REFRESH_EVERY", 0.2)
    room_id = fresh_room().room_id

    async def scenario() -> None:
        hub = hub_redis.RedisHub(redis_server.url)
        await hub.start(lambda room_id, wire: None, lambda room_id: None)
        try:
            async with asyncio.timeout(10):
                while not hub.healthy:  # noqa: ASYNC110 - a flag the hub sets, polled
                    await asyncio.sleep(0.05)
            hub.room_opened(room_id)
            await hub.subscribed(room_id)
            assert await hub.set_members(room_id, 3) == 3
            hub.room_closed(room_id)  # as at expiry: no set_members(0) follows
            async with asyncio.timeout(10):
                while await hub.members(room_id):  # noqa: ASYNC110 - a count in Redis
                    await asyncio.sleep(0.1)
            assert not hub._unwithdrawn
        finally:
            await hub.close()

    run(scenario())


@contextlib.asynccontextmanager
async def started_hub(
    url: str,
    deliver: RemoteDelivery = lambda room_id, wire: None,
    members_changed: MembersChanged = lambda room_id: None,
) -> AsyncIterator[hub_redis.RedisHub]:
    """A Redis hub in this process, healthy (it answers) before the block."""
    hub = hub_redis.RedisHub(url)
    await hub.start(deliver, members_changed)
    try:
        async with asyncio.timeout(10):
            while not hub.healthy:  # noqa: ASYNC110 - a flag the hub sets, polled
                await asyncio.sleep(0.05)
        yield hub
    finally:
        await hub.close()


async def healthz_status(relay: RelayProcess) -> str:
    response = await http_request(relay.port, "/healthz")
    assert response.status == 200
    status: str = json.loads(response.body)["status"]
    return status


def test_a_redis_that_stops_answering_is_lost_and_joins_do_not_wait_for_it(
    redis_server: RedisServer,
) -> None:
    """A hung Redis (or a partition) closes no connection: the relays must notice that it
    no longer answers, say so, and decide joins alone at once (PROTOCOL.md section 10.8),
    then share rooms again when it answers."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with talking_across(one, two, room) as (left1, left2, right):
                redis_server.pause()
                # Joined at once, before the relay can have noticed anything: its calls to
                # Redis have a deadline. (It waited through socket timeouts and retries,
                # some 27 s, longer than the 10 s a client has to finish its handshake.)
                async with raw_client(two.ws_url) as early:
                    early.timeout = 5.0
                    assert (await early.join(fresh_room())).members == 1
                # Noticed by a relay that had nothing to ask Redis meanwhile (``one``), and
                # soon: its counts are refreshed only every 10 s.
                for relay in (one, two):
                    await asyncio.to_thread(relay.wait_for_log, "event=backplane.down", 5.0)
                    assert await healthz_status(relay) == "degraded"
                    metrics = await http_request(relay.port, "/metrics")
                    assert b"instantroom_backplane_healthy 0.0" in metrics.body
                # Now known lost: the relay decides alone; the count is its own members'.
                async with raw_client(one.ws_url) as late:
                    late.timeout = 5.0
                    assert (await late.join(room)).members == 3
                    await left1.send_text(room.room_id, "during")
                    assert await next_text(left2) == "during"

                redis_server.resume()
                for relay in (one, two):  # up once at start, and now again
                    await logged_twice(relay, "event=backplane.up")
                    assert await healthz_status(relay) == "ok"
                await left1.send_text(room.room_id, "after")
                assert await next_text(left2) == "after"
                texts = []
                while "after" not in texts:
                    texts.append(await next_text(right, wait=10))
                assert "during" not in texts

        run(scenario(), timeout=90)


def test_a_relay_that_never_reaches_redis_says_so_once_and_decides_joins_alone() -> None:
    backplane = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    with running_relay("--backplane", backplane) as relay:
        relay.wait_for_log("event=backplane.down")

        async def scenario() -> None:
            assert await healthz_status(relay) == "degraded"
            async with raw_client(relay.ws_url) as client:
                # Each of these waited 2 s for a subscription that cannot be confirmed;
                # without Redis a join waits for nothing.
                async with asyncio.timeout(5):
                    for _ in range(6):
                        assert (await client.join(fresh_room())).members == 1

        run(scenario())
        time.sleep(1.0)  # a few more attempts to connect, which say nothing new
        down = [line for line in relay.log_text().splitlines() if "backplane" in line]
        assert [line.rsplit(" ", 1)[-1] for line in down] == ["event=backplane.down"], down
        assert backplane not in relay.log_text()
    assert_exited_cleanly(relay)


def test_without_redis_the_hub_answers_at_once() -> None:
    """Not healthy: every call the relay would wait on says so without waiting, so that
    the relay decides alone (a join waited 2 s for a subscription confirmation)."""
    room_id = fresh_room().room_id

    async def scenario() -> None:
        hub = hub_redis.RedisHub(f"redis://127.0.0.1:{free_port()}/0")
        await hub.start(lambda room_id, wire: None, lambda room_id: None)
        try:
            hub.room_opened(room_id)
            calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
                "subscribed": lambda: hub.subscribed(room_id),
                "agree_expiry": lambda: hub.agree_expiry(room_id, 0, 1_000),
                "set_members": lambda: hub.set_members(room_id, 1),
                "members": lambda: hub.members(room_id),
            }
            for name, call in calls.items():
                task = asyncio.create_task(call())
                for _ in range(3):  # a few turns of the loop; no time passes for Redis
                    await asyncio.sleep(0)
                assert task.done(), name
                assert isinstance(task.exception(), HubUnavailable), name
        finally:
            await hub.close()

    run(scenario())


def test_a_room_closed_and_opened_again_at_once_stays_subscribed(
    redis_server: RedisServer,
) -> None:
    """Closed and opened again before the listener ran: the channel was never left, so
    no new confirmation comes, and the join must not wait for one."""
    room_id = fresh_room().room_id

    async def scenario() -> None:
        heard: asyncio.Queue[bytes] = asyncio.Queue()
        async with (
            started_hub(redis_server.url, lambda room, wire: heard.put_nowait(wire)) as hub,
            started_hub(redis_server.url) as other,
        ):
            hub.room_opened(room_id)
            await hub.subscribed(room_id)
            hub.room_closed(room_id)
            hub.room_opened(room_id)  # no await in between: the listener has not run
            await hub.subscribed(room_id)  # raised HubUnavailable after its wait
            # And the room does hear the other relays.
            other.room_opened(room_id)
            await other.subscribed(room_id)
            other.publish(room_id, b"wire bytes")
            async with asyncio.timeout(5):
                assert await heard.get() == b"wire bytes"

    run(scenario())


def test_a_relay_with_many_rooms_gets_back_onto_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new connection's PONG comes after one confirmation per room, which takes a while
    with many rooms: what must come soon is Redis's next answer, not all of them."""
    monkeypatch.setattr(hub_redis, "CONNECT_DEADLINE", 0.5)  # far less than 100,000 take
    rooms = [secrets.token_bytes(32) for _ in range(100_000)]

    async def scenario() -> None:
        hub = hub_redis.RedisHub(redis_server.url)
        for room_id in rooms:
            hub.room_opened(room_id)
        await hub.start(lambda room_id, wire: None, lambda room_id: None)
        try:
            async with asyncio.timeout(20):
                while not hub.healthy:  # noqa: ASYNC110 - a flag the hub sets, polled
                    await asyncio.sleep(0.05)
            await hub.subscribed(rooms[-1])
        finally:
            await hub.close()

    run(scenario(), 30)


def test_members_who_came_while_redis_was_away_count_once_it_is_back(
    redis_server: RedisServer,
) -> None:
    """Counts that changed while Redis was away are the ones written when it returns:
    the relays counted the members from before the outage, until the next change."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with clients([one.url, two.url]) as (left, right):
                for member in (left, right):
                    await member.join(room)
                assert await settle_presence([left, right], room, 2) == [2, 2]
                redis_server.stop()
                for relay in (one, two):
                    await asyncio.to_thread(relay.wait_for_log, "event=backplane.down")
                async with clients([two.url, two.url]) as newcomers:
                    for member in newcomers:
                        await member.join(room)
                    redis_server.start()
                    everyone = [left, right, *newcomers]
                    assert await settle_presence(everyone, room, 4) == [4, 4, 4, 4]

        run(scenario(), timeout=60)


def test_a_room_only_counted_while_redis_was_away_leaves_nothing_to_take_back() -> None:
    """Its count was never written: remembering to withdraw it would grow with every room
    opened and closed during a long outage."""
    room_id = fresh_room().room_id

    async def scenario() -> None:
        hub = hub_redis.RedisHub(f"redis://127.0.0.1:{free_port()}/0")
        await hub.start(lambda room_id, wire: None, lambda room_id: None)
        try:
            hub.room_opened(room_id)
            with pytest.raises(HubUnavailable):
                await hub.set_members(room_id, 1)
            hub.room_closed(room_id)
            assert not hub._unwithdrawn
            assert not hub._local_members
        finally:
            await hub.close()

    run(scenario())


def test_counts_of_a_relay_that_died_leave_the_other_relays_counts(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay killed (no goodbye) stops refreshing its counts: once they are stale, the
    relays still in its rooms take them out and recount. Nothing else would announce the
    change, and their members saw the dead relay's members for as long as the room lived."""
    monkeypatch.setattr(hub_redis, "PRESENCE_TTL_MS", 600)
    monkeypatch.setattr(hub_redis, "REFRESH_EVERY", 0.2)
    room_id = fresh_room().room_id

    async def scenario() -> None:
        recounts: asyncio.Queue[bytes] = asyncio.Queue()
        async with (
            started_hub(redis_server.url, members_changed=recounts.put_nowait) as staying,
            started_hub(redis_server.url) as dying,
        ):
            for hub in (staying, dying):
                hub.room_opened(room_id)
                await hub.subscribed(room_id)
            assert await staying.set_members(room_id, 1) == 1
            assert await dying.set_members(room_id, 1) == 2
            async with asyncio.timeout(5):
                assert await recounts.get() == room_id  # the dying relay's count came
            # Killed: its tasks stop and its connections close, with no count taken back.
            for task in dying._tasks:
                task.cancel()
            await asyncio.wait(dying._tasks)
            dying._tasks, dying._local_members = [], {}
            async with asyncio.timeout(10):
                assert await recounts.get() == room_id
            assert await staying.members(room_id) == 1
            # Taken out of Redis too: the next refresh does not announce it again.
            assert redis_server.client().hkeys(b"ir:p:" + room_id) == [staying.relay_id]

    run(scenario())


def test_garbled_counts_in_redis_neither_hang_a_join_nor_fail_the_relay(
    redis_server: RedisServer,
) -> None:
    """A count that no frame can carry (negative, or past u32) made the JOINED fail to
    encode: the joiner waited for it in vain, and the relay logged a failed task."""
    with relays(1, redis_server.url) as (one,):

        async def scenario() -> None:
            store = redis_server.client()
            now = int(time.time() * 1000)
            negative, huge = fresh_room(), fresh_room()
            store.hset(b"ir:p:" + negative.room_id, b"x" * 16, f"-5:{now}")
            store.hset(b"ir:p:" + huge.room_id, b"x" * 16, f"{2**40}:{now}")
            async with raw_client(one.ws_url) as client:
                assert (await client.join(negative)).members == 1
                assert (await client.join(huge)).members == 2**32 - 1

        run(scenario())


def test_a_redis_that_comes_back_at_once_empty_is_given_the_counts_again(
    redis_server: RedisServer,
) -> None:
    """Redis restarted faster than the relays noticed (here: emptied, and every
    connection dropped). redis-py made the listener's connection again by itself, so the
    hub never wrote its counts again nor had its rooms recount: each relay counted only
    its own members."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with clients([one.url, two.url]) as (left, right):
                for member in (left, right):
                    await member.join(room)
                assert await settle_presence([left, right], room, 2) == [2, 2]
                store = redis_server.client()
                store.flushall()
                store.client_kill_filter(_type="pubsub")
                store.client_kill_filter(_type="normal", skipme=True)
                async with clients([one.url]) as (newcomer,):
                    await newcomer.join(room)
                    everyone = [left, right, newcomer]
                    assert await settle_presence(everyone, room, 3) == [3, 3, 3]

        run(scenario())


def test_a_redis_that_refuses_writes_still_carries_frames(redis_server: RedisServer) -> None:
    """Redis out of memory (or a read-only replica) answers every write with an error. The
    relays connecting to it again must stay connected: they took the refused counts for
    a lost Redis, and connected again and again, up and down, dropping the frames."""
    with relays(2, redis_server.url) as (one, two):

        async def scenario() -> None:
            room = fresh_room()
            async with talking_across(one, two, room) as (left1, _, right):
                store = redis_server.client()
                store.config_set("maxmemory-policy", "noeviction")
                store.config_set("maxmemory", "1")  # every write refused: OOM
                store.client_kill_filter(_type="pubsub")
                for relay in (one, two):
                    await logged_twice(relay, "event=backplane.up")
                await left1.send_text(room.room_id, "still here")
                assert await next_text(right) == "still here"
                for relay in (one, two):
                    events = [
                        line.rsplit("=", 1)[-1]
                        for line in relay.log_text().splitlines()
                        if "event=backplane." in line
                    ]
                    assert events == ["backplane.up", "backplane.down", "backplane.up"], events

        run(scenario())

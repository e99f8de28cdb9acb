"""Relays that share rooms through Redis.

Frames travel over Redis pub/sub, which keeps nothing: one channel per room with members
on this relay, ``ir:r:<room id>``. Each published message is

    0x00 | relay id (16) | WebSocket wire bytes     a frame for the room's members
    0x01 | relay id (16)                             the room's member count changed

and a relay ignores its own. The bytes are the relay's encoded frames, never decoded.

Room facts that relays must agree on live in keys that expire with the room:

    ir:x:<room id>   the room's expiry in ms (SET NX; expires ``keep`` after the room)
    ir:p:<room id>   hash: relay id -> "members:stamp ms" (expires unless refreshed)

A relay's count that is no longer refreshed (the relay was killed) stops counting, and
the relays still in the room take it out and recount.

No message, key or plaintext is ever written. When Redis is lost the hub says so
(``healthy`` is False), drops cross-relay traffic, and reconnects with backoff; the relay
keeps serving its own members throughout. Redis is lost when it refuses us, and also when
it stops answering (a hung server or a partition, which close nothing): the listener pings
it whenever it has heard nothing for a second and wants the answer soon, and every call
the relay waits on has a deadline, so a join never waits long for a Redis that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .hub import HubUnavailable, MembersChanged, RemoteDelivery
from .logs import log_event

T = TypeVar("T")

KIND_FRAME = b"\x00"
KIND_MEMBERS = b"\x01"
RELAY_ID_SIZE = 16
PRESENCE_TTL_MS = 30_000  # a relay that stops refreshing drops out of the counts
REFRESH_EVERY = 10.0
OUTBOX_BYTES = 16 * 1024 * 1024  # frames waiting for Redis; beyond, dropped and counted
# Liveness: with nothing heard for PING_EVERY the listener sends a PING on its connection;
# no answer within PING_DEADLINE (or, on a new connection waiting for its first PONG,
# nothing heard for CONNECT_DEADLINE) and Redis is lost.
PING_EVERY = 1.0
PING_DEADLINE = 1.5
CONNECT_DEADLINE = 2.0
# The longest a call the relay waits on (for a join, a count) waits for Redis. A command
# that outlasts it counts as Redis lost: the relay decides alone until it answers again.
CALL_DEADLINE = 1.0
# How long a join waits for Redis to confirm the subscription to a room's channel.
SUBSCRIBE_DEADLINE = 1.0
# Writing all our counts (after reconnecting, every REFRESH_EVERY, at shutdown): no join
# waits on it, and it may be long with many rooms.
BULK_DEADLINE = 5.0
PING_TOKEN = b"ir-live"
COUNTS_AT_ONCE = 32  # member counts read at once (redis-py's pool holds 100 connections)
# Expiries and counts written at once, for joins and leaves. Past the pool's 100
# connections redis-py fails a call at once (MaxConnectionsError): a burst of joins (the
# members of a relay that restarted, coming here) was decided alone, with expiries the
# joiners claimed, and a burst of leaves left counts in Redis that the others showed.
# With COUNTS_AT_ONCE and the few of the hub's own tasks, this stays within the pool.
CALLS_AT_ONCE = 60
MOST_MEMBERS = 0xFFFF_FFFF  # a count the frames can carry (u32)
# Deletes a relay's count only if it is still the stale value we read: a relay that was
# slow, not gone, may have written a fresh one meanwhile.
_DROP_IF_UNCHANGED = (
    "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then "
    "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0"
)


def _channel(room_id: bytes) -> bytes:
    return b"ir:r:" + room_id


def _expiry_key(room_id: bytes) -> bytes:
    return b"ir:x:" + room_id


def _presence_key(room_id: bytes) -> bytes:
    return b"ir:p:" + room_id


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RedisHub:
    shares_rooms = True

    def __init__(self, url: str, *, relay_id: bytes | None = None) -> None:
        self.url = url
        self.relay_id = relay_id or secrets.token_bytes(RELAY_ID_SIZE)
        self.healthy = False
        self.dropped = 0
        # Pooled connections go stale when Redis restarts: retry once or twice on a fresh
        # one before calling Redis lost (receivers drop a frame that arrives twice).
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=5,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        # The listener's connection never retries: redis-py would connect again by itself
        # and subscribe again, and the hub would not learn that Redis went away, and must
        # have our counts written again (a restarted Redis holds none) and its rooms told.
        self._listener = redis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0)
        )
        self._rooms: set[bytes] = set()
        # This relay's member count per room, kept while Redis is away too: it is what we
        # write when Redis answers again.
        self._local_members: dict[bytes, int] = {}
        # Rooms whose count we may have written to Redis and not taken back since.
        self._stored: set[bytes] = set()
        # Rooms closed here whose count we wrote and have not taken back: at a shutdown
        # they close without a last count, and the other relays must hear that they did.
        self._unwithdrawn: set[bytes] = set()
        # Open rooms whose count changed here and could not be written: the others recount
        # only when told, so the refresh that writes it tells them.
        self._untold: set[bytes] = set()
        self._outbox: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._outbox_bytes = 0
        # Channels subscribed on the current connection; the listener keeps them equal to
        # the rooms with members here.
        self._subscribed: set[bytes] = set()
        self._rooms_changed = False
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        # Channels whose subscription Redis confirmed on the current connection and that
        # we have not unsubscribed since, and SUBSCRIBE commands still to be confirmed.
        self._live: set[bytes] = set()
        self._unconfirmed: dict[bytes, int] = {}
        # The listener drops its connection and makes a new one when this is set.
        self._reconnect = False
        # What backplane.up/down last said: None until the first connection attempt.
        self._reported: bool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._counting = asyncio.Semaphore(COUNTS_AT_ONCE)
        self._calls = asyncio.Semaphore(CALLS_AT_ONCE)
        self._closing = False
        self._deliver: RemoteDelivery = lambda room_id, wire: None
        self._members_changed: MembersChanged = lambda room_id: None

    # lifecycle

    async def start(self, deliver: RemoteDelivery, members_changed: MembersChanged) -> None:
        self._deliver = deliver
        self._members_changed = members_changed
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-listen"),
            asyncio.create_task(self._write(), name="redis-write"),
            asyncio.create_task(self._refresh(), name="redis-refresh"),
        ]

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        # redis-py may swallow a cancellation that lands inside a read; the loops also
        # watch _closing, and we wait for them a bounded time.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3.0)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            if self.healthy:
                async with asyncio.timeout(BULK_DEADLINE):
                    await self._withdraw_counts({*self._local_members, *self._unwithdrawn})
        await self._redis.aclose()
        await self._listener.aclose()

    async def _withdraw_counts(self, rooms: set[bytes]) -> None:
        """Take this relay's counts out of ``rooms`` and have the other relays recount
        now: they recount on a change only, and would show our members until then."""
        if not rooms:
            return
        pipe = self._redis.pipeline(transaction=False)
        for room_id in rooms:
            pipe.hdel(_presence_key(room_id), self.relay_id)
            pipe.publish(_channel(room_id), KIND_MEMBERS + self.relay_id)
        await pipe.execute()
        self._unwithdrawn -= rooms
        self._stored -= rooms

    def _set_health(self, healthy: bool) -> None:
        self.healthy = healthy
        if healthy != self._reported:  # also the first time Redis cannot be reached
            self._reported = healthy
            log_event("backplane.up" if healthy else "backplane.down")

    def _lost(self) -> None:
        """Redis failed us or stopped answering: decide alone from now, until the listener
        has a connection that Redis answers on again."""
        was_healthy = self.healthy
        self._set_health(False)
        self._reconnect = True
        self._reset_confirmations()
        if was_healthy and not self._closing:
            # Counts are now this relay's alone: every room recounts, and its members
            # hear the local count at once, not the others' members, who no longer get
            # a word of theirs, until someone here comes or goes.
            for room_id in list(self._rooms):
                self._members_changed(room_id)

    def _reset_confirmations(self) -> None:
        """Forget every confirmed subscription: they are made again on a new connection.
        Joins waiting for one stop waiting."""
        self._live = set()
        self._unconfirmed = {}
        loop = asyncio.get_running_loop()
        for channel, future in list(self._confirmed.items()):
            future.cancel()
            self._confirmed[channel] = loop.create_future()

    # rooms

    def room_opened(self, room_id: bytes) -> None:
        self._rooms.add(room_id)
        self._rooms_changed = True
        channel = _channel(room_id)
        future = self._confirmed.setdefault(channel, asyncio.get_running_loop().create_future())
        # Closed and opened again before the listener ran: the channel never stopped
        # being subscribed, and no new confirmation will come.
        if channel in self._live and not future.done():
            future.set_result(None)

    def room_closed(self, room_id: bytes) -> None:
        self._rooms.discard(room_id)
        self._rooms_changed = True
        # Our count is no longer refreshed, so it drops out of the room's total; until
        # a last count of 0 (or a shutdown) takes it back at once.
        # (A count only ever kept here, in a room opened and closed while Redis was away,
        # has nothing to take back: remembering it would grow with every such room.)
        self._local_members.pop(room_id, None)
        self._untold.discard(room_id)  # taking its count back tells the others
        if room_id in self._stored:
            self._stored.discard(room_id)
            self._unwithdrawn.add(room_id)
        future = self._confirmed.pop(_channel(room_id), None)
        if future is not None and not future.done():
            future.cancel()

    async def subscribed(self, room_id: bytes) -> None:
        """Return once Redis confirmed our subscription to the room's channel: from then
        on no change by another relay can slip past us. Raise ``HubUnavailable`` at once
        without Redis, and when the confirmation does not come soon."""
        future = self._confirmed.get(_channel(room_id))
        if future is None or self._closing or not self.healthy:
            raise HubUnavailable
        # Cancelled when the room closes or Redis is lost meanwhile; never by us.
        await asyncio.wait([future], timeout=SUBSCRIBE_DEADLINE)
        if not future.done() or future.cancelled():
            raise HubUnavailable

    def publish(self, room_id: bytes, wire: bytes) -> None:
        if not self.healthy or self._outbox_bytes + len(wire) > OUTBOX_BYTES:
            self.dropped += 1
            return
        self._outbox_bytes += len(wire)
        self._outbox.put_nowait((room_id, KIND_FRAME + self.relay_id + wire))

    async def agree_expiry(self, room_id: bytes, proposed_ms: int, keep_ms: int) -> int:
        """The room's expiry: the first one any relay proposed, kept ``keep_ms`` past it."""
        if self._closing or not self.healthy:
            raise HubUnavailable
        key = _expiry_key(room_id)
        async with self._turn():
            pipe = self._redis.pipeline(transaction=True)
            if proposed_ms:  # 0 proposes nothing: it only asks
                ttl = max(1, proposed_ms + keep_ms - _now_ms())
                pipe.set(key, str(proposed_ms), nx=True, px=ttl)
            pipe.get(key)
            stored = (await self._call(pipe.execute()))[-1]
        try:
            return int(stored) if stored is not None else proposed_ms
        except ValueError as exc:
            raise HubUnavailable from exc

    async def set_members(self, room_id: bytes, count: int) -> int:
        """Record this relay's member count and return the room's total across relays."""
        # Recorded without Redis too: members who came or went meanwhile are counted
        # when it answers again, not the count from before it went away.
        if count:
            self._local_members[room_id] = count
        else:
            self._local_members.pop(room_id, None)
        if self._closing or not self.healthy:  # all are told when it answers again
            raise HubUnavailable
        try:
            async with self._turn():
                # The count as it is now: members may have come or gone while we waited.
                count = self._local_members.get(room_id, 0)
                if count:
                    # A fresh count needs no taking back (it would be taken out again).
                    self._unwithdrawn.discard(room_id)
                    self._stored.add(room_id)
                key = _presence_key(room_id)
                pipe = self._redis.pipeline(transaction=True)
                if count:
                    pipe.hset(key, self.relay_id, f"{count}:{_now_ms()}")
                    pipe.pexpire(key, PRESENCE_TTL_MS)
                else:
                    pipe.hdel(key, self.relay_id)
                pipe.hgetall(key)
                pipe.publish(_channel(room_id), KIND_MEMBERS + self.relay_id)
                results = await self._call(pipe.execute())
        except HubUnavailable:
            # Not written: a count is written at the next refresh, which tells the others;
            # a room closed here stays to be taken back (it did not, and its count stayed
            # in Redis, counted by the others, until it went stale 30 s later).
            if room_id in self._local_members:
                self._untold.add(room_id)
            raise
        if not count:
            self._unwithdrawn.discard(room_id)
        return self._total(results[-2])

    async def members(self, room_id: bytes) -> int:
        if self._closing or not self.healthy:
            raise HubUnavailable
        # Recounts come in herds (every room after a reconnect): a few at a time, so that
        # they do not take every connection of the pool.
        async with self._counting:
            entries = await self._call(self._redis.hgetall(_presence_key(room_id)))
        return self._total(entries)

    async def expiry(self, room_id: bytes) -> int:
        """The room's expiry as recorded by any relay, 0 if none: read as counts are, in
        no place a join waits for."""
        if self._closing or not self.healthy:
            raise HubUnavailable
        async with self._counting:
            stored = await self._call(self._redis.get(_expiry_key(room_id)))
        try:
            return int(stored) if stored is not None else 0
        except ValueError as exc:
            raise HubUnavailable from exc

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One of CALLS_AT_ONCE places to call Redis in. A wait for one is the relay's
        own queue, no sign of a lost Redis, but a join waits in it no longer than it
        would for Redis."""
        try:
            async with asyncio.timeout(CALL_DEADLINE):
                await self._calls.acquire()
        except TimeoutError as exc:
            raise HubUnavailable from exc
        try:
            if self._closing or not self.healthy:  # lost while we waited
                raise HubUnavailable
            yield
        finally:
            self._calls.release()

    async def _call(self, command: Awaitable[T], deadline: float | None = None) -> T:
        """Await a Redis command for the relay, at most ``deadline`` (CALL_DEADLINE); a
        command that outlasts it means Redis is lost. Raise ``HubUnavailable`` when it
        fails."""
        try:
            async with asyncio.timeout(CALL_DEADLINE if deadline is None else deadline):
                return await command
        except (TimeoutError, RedisTimeoutError) as exc:
            self._lost()
            raise HubUnavailable from exc
        except (RedisError, OSError) as exc:
            raise HubUnavailable from exc

    @staticmethod
    def _parse(value: Any) -> tuple[int, int] | None:
        """(count, stamp ms) of a presence hash value (b"count:stamp"); None if garbled."""
        count, _, stamp = bytes(value).partition(b":")
        try:
            parsed = int(count), int(stamp or 0)
        except ValueError:
            return None
        return parsed if parsed[0] >= 0 else None

    @classmethod
    def _total(cls, entries: Mapping[Any, Any]) -> int:
        """Sum the fresh counts of a presence hash (values are b"count:stamp")."""
        fresh_after = _now_ms() - PRESENCE_TTL_MS
        total = 0
        for value in entries.values():
            parsed = cls._parse(value)  # not ours to trust: skip what is garbled
            if parsed is not None and parsed[1] >= fresh_after:
                total += parsed[0]
        # No frame could carry more (a negative or huge count failed to encode, and the
        # joiner waiting for it never had its JOINED).
        return min(total, MOST_MEMBERS)

    # tasks

    async def _listen(self) -> None:
        delay = 0.1
        while not self._closing:
            pubsub = self._listener.pubsub()
            try:
                await self._connect(pubsub)
                self._set_health(True)
                delay = 0.1
                async with asyncio.timeout(BULK_DEADLINE):
                    await self._resync_presence()
                await self._serve(pubsub)
            except (RedisError, OSError, TimeoutError):
                self._lost()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if self._closing:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _connect(self, pubsub: redis.client.PubSub) -> None:
        """Subscribe to our rooms on a new connection, and wait until Redis answers a PING
        on it: a server that accepts connections but does not answer is not back."""
        self._reconnect = False
        self._subscribed = set()
        self._rooms_changed = True
        self._reset_confirmations()
        async with asyncio.timeout(BULK_DEADLINE):  # writes only
            # Subscribe to something so that get_message has a connection to read.
            await pubsub.subscribe(b"ir:relay:" + self.relay_id)
            await self._apply_subscriptions(pubsub)
            await pubsub.ping(PING_TOKEN)
        # The PONG comes after one confirmation per room: with many rooms that takes a
        # while, so what counts is that Redis keeps answering, not the whole wait.
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            message = await pubsub.get_message(timeout=0.05)
            if message is not None:
                heard = loop.time()
                if self._handle(message) == "pong":
                    return
            elif loop.time() - heard > CONNECT_DEADLINE:
                raise RedisTimeoutError("Redis did not answer a new connection")

    async def _serve(self, pubsub: redis.client.PubSub) -> None:
        """Read the connection until Redis fails, stops answering, or we are told to
        connect again (a call for the relay found Redis not answering)."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged: float | None = None
        while not self._closing and not self._reconnect:
            async with asyncio.timeout(PING_DEADLINE):  # writes only; never stuck long
                await self._apply_subscriptions(pubsub)
                if pinged is None and loop.time() - heard >= PING_EVERY:
                    await pubsub.ping(PING_TOKEN)
                    pinged = loop.time()
            message = await pubsub.get_message(timeout=0.05)
            if message is not None:
                heard, pinged = loop.time(), None
                self._handle(message)
            elif pinged is not None and loop.time() - pinged > PING_DEADLINE:
                raise RedisTimeoutError("Redis did not answer a PING")

    def _handle(self, message: Mapping[str, Any]) -> str:
        kind = str(message["type"])
        if kind == "message":
            self._received(message["channel"], message["data"])
        elif kind == "subscribe":
            self._confirm(message["channel"])
        return kind

    def _confirm(self, channel: bytes) -> None:
        """Redis confirmed a SUBSCRIBE to ``channel``: once it confirmed the last one we
        sent, and we still want the channel, the room's joins may go on."""
        left = self._unconfirmed.pop(channel, 0) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        if channel in self._subscribed:
            self._live.add(channel)
            confirmed = self._confirmed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _apply_subscriptions(self, pubsub: redis.client.PubSub) -> None:
        if not self._rooms_changed:
            return
        self._rooms_changed = False
        wanted = {_channel(room_id) for room_id in self._rooms}
        if wanted != self._subscribed:
            added, gone = wanted - self._subscribed, self._subscribed - wanted
            self._subscribed = wanted
            if added:
                for channel in added:
                    self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
                await pubsub.subscribe(*added)
            if gone:
                self._live -= gone
                await pubsub.unsubscribe(*gone)

    def _received(self, channel: bytes, data: bytes) -> None:
        if len(data) < 1 + RELAY_ID_SIZE or data[1 : 1 + RELAY_ID_SIZE] == self.relay_id:
            return
        room_id = channel[5:]
        if room_id not in self._rooms:
            return
        if data[:1] == KIND_FRAME:
            self._deliver(room_id, data[1 + RELAY_ID_SIZE :])
        elif data[:1] == KIND_MEMBERS:
            self._members_changed(room_id)

    async def _write(self) -> None:
        while True:
            room_id, data = await self._outbox.get()
            batch = [(room_id, data)]
            while not self._outbox.empty() and len(batch) < 256:
                batch.append(self._outbox.get_nowait())
            self._outbox_bytes -= sum(len(payload) - 1 - RELAY_ID_SIZE for _, payload in batch)
            if not self.healthy:  # queued before Redis was found lost: too late now
                self.dropped += len(batch)
                continue
            pipe = self._redis.pipeline(transaction=False)
            for room, payload in batch:
                pipe.publish(_channel(room), payload)
            try:
                # Nothing waits on these: a slow Redis is given longer before it is lost.
                await self._call(pipe.execute(), BULK_DEADLINE)
            except HubUnavailable:
                self.dropped += len(batch)

    async def _write_counts(self, announce: bool) -> None:
        """Write this relay's member counts again, so that they do not expire."""
        if not self._local_members:
            return
        pipe = self._redis.pipeline(transaction=False)
        stamp = _now_ms()
        self._stored.update(self._local_members)
        untold, self._untold = self._untold, set()
        for room_id, count in self._local_members.items():
            pipe.hset(_presence_key(room_id), self.relay_id, f"{count}:{stamp}")
            pipe.pexpire(_presence_key(room_id), PRESENCE_TTL_MS)
            if announce or room_id in untold:
                pipe.publish(_channel(room_id), KIND_MEMBERS + self.relay_id)
        try:
            await pipe.execute()
        except BaseException:
            self._untold |= untold & self._local_members.keys()  # told next time
            raise

    async def _resync_presence(self) -> None:
        """After (re)connecting: write our counts again and let every room recount."""
        # Redis that answers but refuses (out of memory, a read-only replica) is no lost
        # Redis: frames still cross, and the refresh writes the counts once it can. Taken
        # as lost, the listener connected again at once, and again, for as long as it
        # refused, and the relay was down but for moments.
        with contextlib.suppress(ResponseError):
            await self._withdraw_counts(set(self._unwithdrawn))
            await self._write_counts(announce=True)
        for room_id in list(self._local_members):
            self._members_changed(room_id)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            if self.healthy:
                with contextlib.suppress(HubUnavailable):
                    # Rooms closed with no last count (expired ones) are taken back here,
                    # so the set of them stays small and the others stop counting them.
                    await self._call(self._refresh_counts(), BULK_DEADLINE)

    async def _refresh_counts(self) -> None:
        await self._withdraw_counts(set(self._unwithdrawn))
        await self._write_counts(announce=False)
        await self._drop_stale_counts()

    async def _drop_stale_counts(self) -> None:
        """Take out of our rooms the counts that relays stopped refreshing (a relay that
        was killed, or cut off from Redis): they no longer count, but nobody announced
        it, and the members here would see them until something else changed the room."""
        rooms = list(self._local_members)
        if not rooms:
            return
        pipe = self._redis.pipeline(transaction=False)
        for room_id in rooms:
            pipe.hgetall(_presence_key(room_id))
        fresh_after = _now_ms() - PRESENCE_TTL_MS
        stale: list[tuple[bytes, bytes, bytes]] = []
        for room_id, entries in zip(rooms, await pipe.execute(), strict=True):
            for relay_id, value in entries.items():
                parsed = self._parse(value)
                if relay_id != self.relay_id and parsed is not None and parsed[1] < fresh_after:
                    stale.append((room_id, relay_id, value))
        if not stale:
            return
        pipe = self._redis.pipeline(transaction=False)
        for room_id, relay_id, value in stale:
            pipe.eval(_DROP_IF_UNCHANGED, 1, _presence_key(room_id), relay_id, value)
        dropped = await pipe.execute()
        changed = {room_id for (room_id, _, _), gone in zip(stale, dropped, strict=True) if gone}
        if not changed:
            return
        pipe = self._redis.pipeline(transaction=False)
        for room_id in changed:  # the other relays recount too
            pipe.publish(_channel(room_id), KIND_MEMBERS + self.relay_id)
        await pipe.execute()
        for room_id in changed:
            self._members_changed(room_id)

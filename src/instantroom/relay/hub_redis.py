"""Relays that share rooms through Redis.

Frames travel over Redis pub/sub, which keeps nothing: one channel per room with members
on this relay, ``ir:r:<room id>``. Each published message is

    0x00 | relay id (16) | WebSocket wire bytes     a frame for the room's members
    0x01 | relay id (16)                             the room's member count changed

and a relay ignores its own. The bytes are the relay's encoded frames, never decoded.

Room facts that relays must agree on live in keys that expire with the room:

    ir:x:<room id>   the room's expiry in ms (SET NX; expires ``keep`` after the room)
    ir:p:<room id>   hash: relay id -> "members:stamp ms" (expires unless refreshed)

No message, key or plaintext is ever written. When Redis is lost the hub says so
(``healthy`` is False), drops cross-relay traffic, and reconnects with backoff; the relay
keeps serving its own members throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .hub import HubUnavailable, MembersChanged, RemoteDelivery
from .logs import log_event

KIND_FRAME = b"\x00"
KIND_MEMBERS = b"\x01"
RELAY_ID_SIZE = 16
PRESENCE_TTL_MS = 30_000  # a relay that stops refreshing drops out of the counts
REFRESH_EVERY = 10.0
OUTBOX_BYTES = 16 * 1024 * 1024  # frames waiting for Redis; beyond, dropped and counted


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
        self._rooms: set[bytes] = set()
        self._local_members: dict[bytes, int] = {}
        # Rooms closed here whose count we wrote and have not taken back: at a shutdown
        # they close without a last count, and the other relays must hear that they did.
        self._unwithdrawn: set[bytes] = set()
        self._outbox: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._outbox_bytes = 0
        # Channels subscribed on the current connection; the listener keeps them equal to
        # the rooms with members here.
        self._subscribed: set[bytes] = set()
        self._rooms_changed = False
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
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
        with contextlib.suppress(RedisError, OSError):
            if self.healthy:
                await self._withdraw_counts({*self._local_members, *self._unwithdrawn})
        await self._redis.aclose()

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

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            log_event("backplane.up" if healthy else "backplane.down")

    # rooms

    def room_opened(self, room_id: bytes) -> None:
        self._rooms.add(room_id)
        self._rooms_changed = True
        self._confirmed.setdefault(_channel(room_id), asyncio.get_running_loop().create_future())

    def room_closed(self, room_id: bytes) -> None:
        self._rooms.discard(room_id)
        self._rooms_changed = True
        # Our count is no longer refreshed, so it drops out of the room's total; until
        # a last count of 0 (or a shutdown) takes it back at once.
        if self._local_members.pop(room_id, None) is not None:
            self._unwithdrawn.add(room_id)
        future = self._confirmed.pop(_channel(room_id), None)
        if future is not None and not future.done():
            future.cancel()

    async def subscribed(self, room_id: bytes) -> None:
        """Return once Redis confirmed our subscription to the room's channel: from then
        on no change by another relay can slip past us."""
        future = self._confirmed.get(_channel(room_id))
        if future is None:
            raise HubUnavailable
        try:
            await asyncio.wait_for(asyncio.shield(future), 2.0)
        except (TimeoutError, asyncio.CancelledError) as exc:
            raise HubUnavailable from exc

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
        try:
            pipe = self._redis.pipeline(transaction=True)
            if proposed_ms:  # 0 proposes nothing: it only asks
                ttl = max(1, proposed_ms + keep_ms - _now_ms())
                pipe.set(key, str(proposed_ms), nx=True, px=ttl)
            pipe.get(key)
            stored = (await pipe.execute())[-1]
        except (RedisError, OSError) as exc:
            raise HubUnavailable from exc
        try:
            return int(stored) if stored is not None else proposed_ms
        except ValueError as exc:
            raise HubUnavailable from exc

    async def set_members(self, room_id: bytes, count: int) -> int:
        """Record this relay's member count and return the room's total across relays."""
        if self._closing or not self.healthy:
            raise HubUnavailable
        self._unwithdrawn.discard(room_id)
        if count:
            self._local_members[room_id] = count
        else:
            self._local_members.pop(room_id, None)
        key = _presence_key(room_id)
        try:
            pipe = self._redis.pipeline(transaction=True)
            if count:
                pipe.hset(key, self.relay_id, f"{count}:{_now_ms()}")
                pipe.pexpire(key, PRESENCE_TTL_MS)
            else:
                pipe.hdel(key, self.relay_id)
            pipe.hgetall(key)
            pipe.publish(_channel(room_id), KIND_MEMBERS + self.relay_id)
            results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HubUnavailable from exc
        return self._total(results[-2])

    async def members(self, room_id: bytes) -> int:
        if self._closing or not self.healthy:
            raise HubUnavailable
        try:
            entries = await self._redis.hgetall(_presence_key(room_id))
        except (RedisError, OSError) as exc:
            raise HubUnavailable from exc
        return self._total(entries)

    @staticmethod
    def _total(entries: Mapping[Any, Any]) -> int:
        """Sum the fresh counts of a presence hash (values are b"count:stamp")."""
        fresh_after = _now_ms() - PRESENCE_TTL_MS
        total = 0
        for value in entries.values():
            count, _, stamp = bytes(value).partition(b":")
            with contextlib.suppress(ValueError):  # not ours to trust: skip what is garbled
                if int(stamp or 0) >= fresh_after:
                    total += int(count)
        return total

    # tasks

    async def _listen(self) -> None:
        delay = 0.1
        while not self._closing:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.ping()
                self._subscribed = set()
                self._rooms_changed = True
                # Subscribe to something so that get_message has a connection to read,
                # and to our rooms, before saying we are back.
                await pubsub.subscribe(b"ir:relay:" + self.relay_id)
                await self._apply_subscriptions(pubsub)
                self._set_health(True)
                delay = 0.1
                await self._resync_presence()
                while not self._closing:
                    await self._apply_subscriptions(pubsub)
                    message = await pubsub.get_message(timeout=0.05)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._received(message["channel"], message["data"])
                    elif message["type"] == "subscribe":
                        confirmed = self._confirmed.get(message["channel"])
                        if confirmed is not None and not confirmed.done():
                            confirmed.set_result(None)
            except (RedisError, OSError):
                self._set_health(False)
                # Subscriptions are made again on the next connection: wait for those.
                for channel, future in list(self._confirmed.items()):
                    if future.done():
                        self._confirmed[channel] = asyncio.get_running_loop().create_future()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _apply_subscriptions(self, pubsub: redis.client.PubSub) -> None:
        if not self._rooms_changed:
            return
        self._rooms_changed = False
        wanted = {_channel(room_id) for room_id in self._rooms}
        if wanted != self._subscribed:
            added, gone = wanted - self._subscribed, self._subscribed - wanted
            if added:
                await pubsub.subscribe(*added)
            if gone:
                await pubsub.unsubscribe(*gone)
            self._subscribed = wanted

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
            try:
                pipe = self._redis.pipeline(transaction=False)
                for room, payload in batch:
                    pipe.publish(_channel(room), payload)
                await pipe.execute()
            except (RedisError, OSError):
                # Lost with Redis; the listener, which owns ``healthy``, notices too.
                self.dropped += len(batch)

    async def _write_counts(self, announce: bool) -> None:
        """Write this relay's member counts again, so that they do not expire."""
        if not self._local_members:
            return
        pipe = self._redis.pipeline(transaction=False)
        stamp = _now_ms()
        for room_id, count in self._local_members.items():
            pipe.hset(_presence_key(room_id), self.relay_id, f"{count}:{stamp}")
            pipe.pexpire(_presence_key(room_id), PRESENCE_TTL_MS)
            if announce:
                pipe.publish(_channel(room_id), KIND_MEMBERS + self.relay_id)
        await pipe.execute()

    async def _resync_presence(self) -> None:
        """After (re)connecting: write our counts again and let every room recount."""
        await self._withdraw_counts(set(self._unwithdrawn))
        await self._write_counts(announce=True)
        for room_id in list(self._local_members):
            self._members_changed(room_id)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            if self.healthy:
                with contextlib.suppress(RedisError, OSError):
                    # Rooms closed with no last count (expired ones) are taken back here,
                    # so the set of them stays small and the others stop counting them.
                    await self._withdraw_counts(set(self._unwithdrawn))
                    await self._write_counts(announce=False)

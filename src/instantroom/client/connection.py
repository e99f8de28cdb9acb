"""An asyncio client for any relay, driving the sans-I/O ``ClientSession``.

    async with RoomClient("https://relay.example", device, "alice") as client:
        room = RoomKeys.from_minikey(key)
        await client.join(room)
        await client.send_text(room.room_id, "hello")      # returns once the relay took it
        async for received in client.messages():
            print(received.message.sender_name, received.message.text)

It reconnects by itself with backoff, joins its rooms again, and resends what the relay
had not acknowledged; receivers drop duplicates by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import backoff, process_exception
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from instantroom.protocol.codes import SUBPROTOCOL, ErrorCode
from instantroom.protocol.envelope import Message
from instantroom.protocol.errors import FrameError, UsageError
from instantroom.protocol.frames import MAX_FRAME_SIZE
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.protocol.session import (
    Accepted,
    ClientSession,
    Event,
    Joined,
    MessageReceived,
    PresenceChanged,
    Refused,
    RoomExpired,
)

logger = logging.getLogger("instantroom.client")
# How long the outbox waits, after a reconnect, for the room's members to come back.
REJOIN_GRACE = 3.0
RETRY_AFTER_RATE_LIMIT = 1.0


class JoinRefused(Exception):
    """The relay would not let us into the room."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class RelayRefused(Exception):
    """What answers at the relay's URL refused the connection for good (not a relay, a
    refused origin or protocol version, a bad URL): trying again would not help."""


def _retry_or_give_up(exc: Exception) -> Exception | None:
    """Back off and retry on whatever may pass, a 429 (too many connections) too."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code == 429:
        return None
    return process_exception(exc)


def websocket_url(server: str) -> str:
    """The relay's WebSocket endpoint for a server URL: http(s):// or ws(s)://."""
    parts = urlsplit(server.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise UsageError(f"A server is an http://, https://, ws:// or wss:// URL, not {server!r}.")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def default_delays() -> Generator[float]:
    return backoff(initial_delay=0.2, min_delay=0.2, max_delay=10.0, factor=1.6)


class RoomClient:
    """A connection to one relay, in any number of rooms, surviving reconnects."""

    def __init__(
        self,
        server: str,
        device: DeviceKey,
        name: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reconnect_delays: Callable[[], Generator[float]] = default_delays,
    ) -> None:
        self.url = websocket_url(server)
        self.session = ClientSession(device, name, token_bytes=secrets.token_bytes)
        self.connected = asyncio.Event()
        self.presence: dict[bytes, int] = {}
        self._ssl = ssl_context
        self._delays = reconnect_delays
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._messages: asyncio.Queue[MessageReceived] = asyncio.Queue()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._joined: dict[bytes, asyncio.Future[Joined]] = {}
        self._accepted: dict[bytes, asyncio.Future[None]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._flushes: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._failure: RelayRefused | None = None

    async def __aenter__(self) -> RoomClient:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="instantroom-client")

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        # Cancelled, the task forgets its connection, and the iterator of connections that
        # owns it is only closed when garbage-collected: close it here, now.
        ws = self._ws
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if ws is not None:
            await ws.close()

    # rooms and messages

    async def join(self, room: RoomKeys, expires_at_ms: int = 0) -> Joined:
        """Join ``room`` and wait for the relay to let us in."""
        if self._failure is not None:
            raise self._failure
        future = self._joined.get(room.room_id)
        if future is None or future.done():
            future = self._joined[room.room_id] = asyncio.get_running_loop().create_future()
        self.session.join(room, expires_at_ms)
        await self._flush()
        return await future

    async def leave(self, room_id: bytes) -> None:
        self.session.leave(room_id)
        self.presence.pop(room_id, None)
        await self._flush()

    async def send_text(self, room_id: bytes, text: str) -> Message:
        """Send ``text`` and return once the relay has taken it."""
        if self._failure is not None:
            raise self._failure
        message = self.session.send_text(room_id, text, now_ms())
        future = self._accepted[message.message_id] = asyncio.get_running_loop().create_future()
        await self._flush()
        await future
        return message

    async def messages(self) -> AsyncIterator[MessageReceived]:
        while True:
            yield await self._messages.get()

    async def next_event(self) -> Event:
        return await self._events.get()

    async def ping(self) -> None:
        """Send a PING; its PONG comes back after the relay handled all we sent before."""
        self.session.ping(secrets.randbits(63))
        await self._flush()

    # the connection

    async def _run(self) -> None:
        try:
            await self._connections()
        except InvalidHandshake as exc:  # refused for good: whoever waits is told
            self._failure = RelayRefused(f"The relay at {self.url} refused us: {exc}")
            self._failure.__cause__ = exc
            waiting: list[asyncio.Future[Any]] = [*self._joined.values(), *self._accepted.values()]
            for future in waiting:
                if not future.done():
                    future.set_exception(self._failure)

    async def _connections(self) -> None:
        async for ws in connect(
            self.url,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            compression=None,
            max_size=MAX_FRAME_SIZE,
            ssl=self._ssl,
            reconnect_delays=self._delays,
            proxy=None,
            open_timeout=10,
            process_exception=_retry_or_give_up,
        ):
            self._ws = ws
            self.session.connection_made()
            self.connected.set()
            try:
                await self._flush()
                async for data in ws:
                    if isinstance(data, str):
                        continue
                    try:
                        self.session.receive(data, now_ms())
                    except FrameError as exc:
                        logger.warning("relay sent a bad frame: %s", exc)
                    self._dispatch(self.session.events())
                    await self._flush()
            except ConnectionClosed:
                pass
            finally:
                self.connected.clear()
                self._ws = None
                self.session.connection_lost()

    async def _flush(self) -> None:
        async with self._send_lock:
            frames_out = self.session.frames_to_send()
            ws = self._ws
            if ws is None:
                return  # the session sends them again after reconnecting
            with contextlib.suppress(ConnectionClosed):
                for frame in frames_out:
                    await ws.send(frame)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            action()
            task = loop.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case MessageReceived():
                    self._messages.put_nowait(event)
                case Accepted(message_id=message_id):
                    accepted = self._accepted.pop(message_id, None)
                    if accepted is not None and not accepted.done():
                        accepted.set_result(None)
                case PresenceChanged(room_id=room_id, members=members):
                    self.presence[room_id] = members
                case Joined(room_id=room_id, members=members):
                    self.presence[room_id] = members
                    joined = self._joined.get(room_id)
                    if joined is not None and not joined.done():
                        joined.set_result(event)
                    if self.session.holding(room_id):
                        self._later(REJOIN_GRACE, functools.partial(self.session.release, room_id))
                case Refused(code=code, room_id=room_id, ref=ref, reason=reason):
                    if code == ErrorCode.RATE_LIMITED and ref:
                        self._later(RETRY_AFTER_RATE_LIMIT, self.session.resend_unacknowledged)
                    waiting = self._joined.get(room_id)
                    if waiting is not None and not waiting.done() and not ref:
                        waiting.set_exception(JoinRefused(code, reason))
                case RoomExpired(room_id=room_id):
                    self.presence.pop(room_id, None)
                case _:
                    pass
            self._events.put_nowait(event)

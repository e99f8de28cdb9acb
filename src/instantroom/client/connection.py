"""An asyncio client for any relay, driving the sans-I/O ``ClientSession``.

    async with RoomClient("https://relay.example", device, "alice") as client:
        room = RoomKeys.from_minikey(key)
        await client.join(room)
        await client.send_text(room.room_id, "hello")      # returns once the relay took it
        async for received in client.messages():
            print(received.message.sender_name, received.message.text)

It reconnects by itself with backoff, joins its rooms again, and resends what the relay
had not acknowledged; receivers drop duplicates by message id. Every reconnect waits its
turn in the backoff, which starts afresh only once a connection has stayed up
``STABLE_AFTER`` seconds after the relay let us into a room (JOINED): a relay that accepts
connections and closes them at once, or lets us in and then fails, is not hammered.

It stops for good, raising ``RelayRefused`` to whoever waits and to every later call,
when trying again would fail the same way (PROTOCOL.md 10.1, 11.2): the handshake was
refused (not a relay, a bad URL), the server answered with a redirect (never followed:
a browser's WebSocket follows none either), the server did not select the
``instantroom.v1`` subprotocol, the relay closed the connection with a code that says "your data was
wrong" (1008 policy violation, 1009 message too big, and the WebSocket layer's 1002,
1003, 1007), or the relay sent a text message (every frame is binary: the client closes
the connection with 1008). ``failure`` then says why, and ``messages()`` and
``next_event()`` raise it once what came before is read.

``close()`` ends the client: whoever waits in ``join()`` or ``send_text()``, and every later
call, gets ``RoomGone``; ``messages()`` and ``next_event()`` raise it too.

A client made with ``announce=True`` tells the others in its rooms who it is (PROTOCOL.md
5.7): a JOIN message at each JOINED, a HERE to answer theirs, a LEAVE message when it
leaves a room or closes. ``members(room_id)`` is who the others said they are, and a
``MembersChanged`` event comes whenever that changes; every client, announcing or not,
hears the others. Scripts keep the default (False): they are counted, not named.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import functools
import logging
import os
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import backoff, process_exception
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
)
from websockets.typing import Subprotocol

from instantroom.client.invite import address_problem
from instantroom.display import printable, without_credentials
from instantroom.protocol.codes import SUBPROTOCOL, UPTIME_HEADER, CloseCode, ErrorCode
from instantroom.protocol.envelope import Message
from instantroom.protocol.errors import FrameError, UsageError
from instantroom.protocol.frames import MAX_FRAME_SIZE
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.protocol.minikey import holds_a_key
from instantroom.protocol.roster import Member
from instantroom.protocol.session import (
    MAX_OUTBOX,
    Accepted,
    ClientSession,
    Event,
    Joined,
    MessageReceived,
    NotSent,
    PresenceChanged,
    Refused,
    RoomExpired,
    RoomState,
)

logger = logging.getLogger("instantroom.client")
# How long the outbox waits, after a reconnect, for the room's members to come back:
# longer than the longest reconnect delay of either reference client (10 s) and a
# handshake, so that a member still backing off when the relay came back is back in time.
REJOIN_GRACE = 12.0
# What waits for readers of messages() and of next_event(), each: bounded in count and
# in message bytes, the oldest dropped first, so that a room flooding a reader that does
# not keep up (or one that reads only one of them) costs no more memory than this.
QUEUE_LIMIT = 10_000
QUEUE_BYTES = 16 * 1024 * 1024
# JOIN or PUBLISH refused with RATE_LIMITED: send it again after this many seconds.
RETRY_AFTER_RATE_LIMIT = 1.0
# JOIN refused with RELAY_FULL or ROOM_FULL ("try later"): a place does not come free in
# a second.
RETRY_AFTER_FULL = 15.0
# Refusals of a JOIN that the client tries again later, keeping the room and its outbox.
_TRY_LATER = frozenset({ErrorCode.RELAY_FULL, ErrorCode.ROOM_FULL})
# How often rooms whose time is over are looked for, and what presence has due is done
# (a HERE, a roll call, a removal: ClientSession.tick).
TICK_EVERY = 1.0
# A connection up this long after its first JOINED shows that the relay works: the next
# drop starts the backoff afresh. Before that, a drop takes the backoff's next delay.
STABLE_AFTER = 10.0
CLOSED = "The client was closed."
# Seconds a connection may take to open (TCP, TLS and the WebSocket handshake).
OPEN_TIMEOUT = 10.0
# How long a hang-up waits for the relay's answer to our close frame. websockets waits 10
# seconds: for a relay that has stopped answering (frozen, or its network gone), close(),
# and a script's --timeout or SIGTERM, would wait as long. A relay that answers does so
# within a round trip; one that does not loses only the courtesy of a clean close.
CLOSE_TIMEOUT = 1.0
# How long close() waits, at most, for the connection to close cleanly: the close frame
# written, and the relay's answer (CLOSE_TIMEOUT). A connection whose buffers the relay
# does not empty (it stopped reading) would keep the close frame from going out at all.
HANG_UP_TIMEOUT = 2 * CLOSE_TIMEOUT
# How long close() waits, at most, for its LEAVE messages to be written before it hangs up.
# They are a courtesy (one that vanishes without one is found by the next roll call): a
# connection too backed up to take them in this long is not waited for.
LEAVING_TIMEOUT = 0.5
# Close codes after which trying again would fail the same way: this client sent what the
# relay (or the WebSocket layer) will never take. PROTOCOL.md 11.2 says "fix the bug; do
# not reconnect in a loop" for 1008 and 1009; 1002, 1003 and 1007 are the WebSocket
# layer's own "your data was wrong".
FATAL_CLOSE_CODES = frozenset(
    {1002, 1003, 1007, CloseCode.POLICY_VIOLATION, CloseCode.MESSAGE_TOO_BIG}
)
# Bytes waiting to be written to the relay, at most, before the connection is cut off. Our
# own frames wait for the socket to drain past websockets' write limit (32 KiB), but its
# answers to the relay's WebSocket pings do not: a relay that sends pings and never reads
# would grow this buffer without end (each 2-byte ping costs us a 6-byte pong).
MAX_WRITE_BUFFER = 1024 * 1024
# A clock this far from the relay's is said (PROTOCOL.md 7): receivers drop messages dated
# more than 5 minutes ahead of their clocks, so at 5 minutes either way one side goes
# unheard; 2 leaves room for the others' clocks and the relay's.
CLOCK_WARNING_MS = 120_000
# Rooms expire by this clock read back by as much as the relay's says it is fast, but by no
# more than this: the longest lifetime a relay gives a room by default (31 days). A relay
# saying more would keep keys past their room's end for as long as it liked.
MAX_CLOCK_READ_BACK_MS = 31 * 86_400_000


class RoomGone(Exception):
    """The room went away (it expired, we left it, or the relay refused it) before the
    relay took the message."""


class RoomExpiredError(RoomGone):
    """The room's lifetime is over (PROTOCOL.md 9): it is gone for good, with its
    messages."""


class MessageNotSent(RoomGone):
    """The relay did not take the message in time (``OUTBOX_MAX_AGE_MS`` in
    ``instantroom.protocol.session``, 55 minutes): the others would refuse it as too old,
    so it was given up (PROTOCOL.md 10.6). Send it again. A ``RoomGone`` too, so that code
    that handles a message the relay never took handles this one."""


class JoinRefused(Exception):
    """The relay would not let us into the room. For ``RELAY_FULL`` and ``ROOM_FULL``
    (``code``) only for now: the client keeps the room and what waits for it, and tries
    again every ``retry_after_full`` seconds; ``join`` again waits for the next answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class RelayRefused(Exception):
    """What answers at the relay's URL refused us for good (not a relay, a refused origin
    or protocol version, a bad URL, a close code that says so): trying again would not
    help. ``close_code`` is the relay's close code when that is how it refused."""

    def __init__(self, reason: str, close_code: int | None = None) -> None:
        super().__init__(reason)
        self.close_code = close_code


class _Connection(ClientConnection):
    """A websockets connection that a relay cannot make buffer without end."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # answers pings at once, whether the relay reads or not
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.transport.abort()  # seen as a lost connection: reconnected with backoff


class _Connect(connect):
    """websockets' connect, without following redirects. A browser's WebSocket follows
    none, and the relay is the one the person named: an answer that sends us elsewhere
    would have this machine connect, from inside its network, to any host and port the
    server chose, and take it for the relay."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def _retry_or_give_up(exc: Exception, url: str, *, reached: bool) -> Exception | None:
    """Back off and retry on whatever may pass, a 429 (too many connections) too; a
    certificate that cannot be verified will not pass on the next try either, nor will a
    redirect, which is not followed. Any 5xx is a relay down behind its proxy (520 to 526
    from a CDN too); and once this client has been let in at ``url`` (``reached``), so is
    any 4xx: a proxy answers 404 while the relay's container restarts, and a listen or a
    chat that gave up then would be gone for good."""
    status = exc.response.status_code if isinstance(exc, InvalidStatus) else 0
    if status == 429 or 500 <= status < 600 or (reached and 400 <= status < 500):
        return None
    if 300 <= status < 400:
        # Where it points is the server's word: not shown.
        return RelayRefused(
            f"The server at {url} answered with a redirect (HTTP {status}), which the "
            "client does not follow: give it the relay's own address."
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RelayRefused(
            f"The relay at {url} has a certificate this machine does not trust "
            f"({exc.verify_message}). For a certificate of your own, point SSL_CERT_FILE "
            "at it."
        )
    return process_exception(exc)


def unreachable_reason(exc: Exception, url: str) -> str:
    """Why a try to reach the relay at ``url`` (shown as it is: give it one without
    credentials) failed with ``exc``, in words for people. Nothing the server sent but its
    status, and no exception text but the system's own words for an error number."""
    parts = urlsplit(url)
    tls = parts.scheme in ("wss", "https")
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 429:
            why = "too many connections from this address"
        else:  # a proxy whose relay is down or restarting, or a relay in trouble
            why = f"it answered HTTP {status}"
    elif isinstance(exc, InvalidMessage):  # no HTTP answer: the one retried
        why = "no HTTP answer" + ("" if tls else " (a relay with TLS needs https://)")
    elif tls and isinstance(exc, ssl.SSLError | ConnectionResetError | EOFError):
        # A relay without TLS cuts off a TLS handshake it cannot read.
        why = "the TLS handshake failed (a relay without TLS needs http://)"
    elif isinstance(exc, socket.gaierror):
        # EAI_AGAIN (offline, a DNS server down) is no verdict on the name.
        no_name = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None))
        why = "no such host name" if no_name else "the host name could not be looked up"
    elif isinstance(exc, ConnectionRefusedError):
        why = "nothing answers on that port"
    elif isinstance(exc, TimeoutError):
        why = f"no answer within {OPEN_TIMEOUT:g} s"
    elif isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        why = os.strerror(exc.errno).lower()
    else:
        why = f"the connection failed ({type(exc).__name__})"
    return f"The relay at {printable(parts.netloc)} could not be reached: {why}."


def relay_clock_offset(ws: ClientConnection, received_ms: int) -> int | None:
    """This machine's clock less the relay's, in ms, from the Date header of the relay's
    handshake answer (whole seconds: the middle of the second is taken); None without one.
    The relay's clock is believed for a warning only, never to date or judge a message."""
    response = ws.response
    dates = response.headers.get_all("Date") if response is not None else []
    if len(dates) != 1:  # none, or several (a proxy's and the relay's): no clock to believe
        return None
    stated = dates[0]
    try:
        relay = email.utils.parsedate_to_datetime(stated)
    except (TypeError, ValueError, IndexError, OverflowError):
        # Not a date that can be read: no clock to believe. OverflowError from a number
        # too big for datetime or timedelta ("+99999999999999999999" as the zone).
        return None
    if relay.tzinfo is None:  # "-0000": no zone said; HTTP dates are UTC
        relay = relay.replace(tzinfo=datetime.UTC)
    return received_ms - (int(relay.timestamp() * 1000) + 500)


# websockets logs, at DEBUG, each request's headers (an Authorization from a URL's
# credentials) and the first bytes of each frame (room ids): not even when a program
# that uses this client turns DEBUG on for every logger.
_ws_logger = logging.getLogger("instantroom.client.websockets")
_ws_logger.setLevel(logging.WARNING)


def _connect(url: str, tls: ssl.SSLContext | None, open_timeout: float) -> _Connect:
    """A connection to the relay at ``url``, as every client here makes one: the
    subprotocol, no compression, no proxy, frames up to MAX_FRAME_SIZE."""
    return _Connect(
        url,
        logger=_ws_logger,
        create_connection=_Connection,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        compression=None,
        max_size=MAX_FRAME_SIZE,
        proxy=None,
        open_timeout=open_timeout,
        close_timeout=CLOSE_TIMEOUT,
        ssl=tls,
    )


# How long relay_clock_offsets waits for all the relays it asks, in seconds.
CLOCK_ASK_TIMEOUT = 3.0
# What each relay last said of this machine's clock in this process (relay_clock_offsets,
# each connection), by its WebSocket URL without credentials. A client starts from it: a
# room that its relay's clock kept when the store opened is not judged over by this clock
# alone before the client has connected.
_clock_offsets: dict[str, int] = {}


def clock_read_back_ms(offset: int | None) -> int:
    """How far rooms' expiry reads this clock back, for a relay's ``offset`` (this clock
    less the relay's): all of it when this clock is fast by ``CLOCK_WARNING_MS`` to
    ``MAX_CLOCK_READ_BACK_MS``, else nothing (a clock said slow is not read forward)."""
    if offset is not None and CLOCK_WARNING_MS <= offset <= MAX_CLOCK_READ_BACK_MS:
        return offset
    return 0


def _expiry_now(offset: int | None) -> int:
    return now_ms() - clock_read_back_ms(offset)


def relay_expiry_now(server: str) -> int:
    """The time the rooms of ``server`` expire by, as ``RoomClient.expiry_now``, from what
    its relay last said of this clock in this process: this machine's clock when it said
    nothing yet (or ``server`` is no relay's address)."""
    try:
        url = without_credentials(websocket_url(server))
    except UsageError:
        return now_ms()
    return _expiry_now(_clock_offsets.get(url))


async def relay_clock_offsets(servers: Iterable[str]) -> dict[str, int]:
    """This machine's clock less each relay's, in ms (``relay_clock_offset``), by server as
    given: one WebSocket handshake with each, all at once, connecting as ``RoomClient``
    does, then closed. Within ``CLOCK_ASK_TIMEOUT`` seconds in all; a relay not answered by then,
    out of reach, refusing, not a relay, or giving no Date, is left out."""
    offsets: dict[str, int] = {}

    async def ask(server: str) -> None:
        try:
            url = websocket_url(server)
        except UsageError:
            return
        tls = ssl.create_default_context() if url.startswith("wss:") else None
        async with _connect(url, tls, CLOCK_ASK_TIMEOUT) as ws:
            offset = relay_clock_offset(ws, now_ms())
            if ws.subprotocol == SUBPROTOCOL and offset is not None:  # a relay's word only
                offsets[server] = _clock_offsets[without_credentials(url)] = offset

    asks = [asyncio.ensure_future(ask(server)) for server in dict.fromkeys(servers)]
    if not asks:
        return offsets
    _, late = await asyncio.wait(asks, timeout=CLOCK_ASK_TIMEOUT)
    for task in late:
        task.cancel()
    await asyncio.gather(*asks, return_exceptions=True)  # out of reach, refused: no offset
    return offsets


def _close_code(closed: ConnectionClosed) -> int | None:
    """The close code that ended a connection: the relay's, else ours, else None."""
    frame = closed.rcvd or closed.sent
    return frame.code if frame is not None else None


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as seen: its callers may all have given up."""
    if not future.cancelled():
        future.exception()


T = TypeVar("T")


def _of_room(room_id: bytes, item: object) -> bool:
    return isinstance(item, MessageReceived) and item.room_id == room_id


def _size(item: object) -> int:
    # The body, not the text: only a text message's body is sure to be UTF-8.
    return len(item.message.body) if isinstance(item, MessageReceived) else 0


class _Inbox(Generic[T]):
    """A queue bounded in items and in message bytes: the oldest go first when full, except
    what says whether one of ours was sent (``Accepted``, ``NotSent``), kept aside up to
    ``MAX_OUTBOX`` of them (as many as can wait to be sent; a reader that never reads
    events loses the oldest of those too)."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._kept: deque[T] = deque()  # pushed out of _items, and served first
        self._bytes = 0
        self._ready = asyncio.Event()

    def offer(self, item: T) -> None:
        self._items.append(item)
        self._bytes += _size(item)
        while len(self._items) > 1 and (
            len(self._items) > QUEUE_LIMIT or self._bytes > QUEUE_BYTES
        ):
            oldest = self._items.popleft()
            self._bytes -= _size(oldest)
            if isinstance(oldest, Accepted | NotSent):
                self._kept.append(oldest)
                if len(self._kept) > MAX_OUTBOX:
                    self._kept.popleft()
        self._ready.set()

    async def get(self) -> T:
        while not self._items and not self._kept:
            self._ready.clear()
            await self._ready.wait()
        if self._kept:
            return self._kept.popleft()
        item = self._items.popleft()
        self._bytes -= _size(item)
        return item

    def put_back(self, item: T) -> None:
        """Put ``item`` first again, for the next reader."""
        self._items.appendleft(item)
        self._bytes += _size(item)
        self._ready.set()

    def drop(self, unwanted: Callable[[T], bool]) -> None:
        """Forget what waits and is ``unwanted``."""
        self._items = deque(item for item in self._items if not unwanted(item))
        self._kept = deque(item for item in self._kept if not unwanted(item))
        self._bytes = sum(_size(item) for item in self._items)


def websocket_url(server: str) -> str:
    """The relay's WebSocket endpoint for a server URL: http(s):// or ws(s)://, in
    printable ASCII (``address_problem``)."""
    server = server.strip()
    if (wrong := address_problem(server)) is not None:
        raise UsageError(f"The server's address {wrong}.")
    # Not echoed: what was typed there might be a key pasted in the wrong place.
    refusal = UsageError("A server is an http://, https://, ws:// or wss:// URL.")
    try:
        parts = urlsplit(server)
    except ValueError:  # a malformed host, such as an unclosed [IPv6
        raise refusal from None
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise refusal
    try:
        parts.hostname.encode("idna")
    except UnicodeError:  # else said at the first connection, as "the relay refused us"
        raise UsageError(
            "The server's host name is not one: a part between dots is empty or longer "
            "than 63 characters."
        ) from None
    # Refused here: the client would otherwise stop on its first connection with nothing
    # better to say than "ValueError" (or wait on port 0 until its timeout).
    try:
        port = parts.port  # None when not given; ValueError: no number, or beyond 65535
    except ValueError:
        port = 0
    if port == 0:
        raise UsageError("The server's port is a number from 1 to 65535.")
    if len(server) > MAX_SERVER_LENGTH:
        raise UsageError(f"A server's address is at most {MAX_SERVER_LENGTH} characters.")
    if holds_a_key(unquote(parts.path)):
        # An invite link that lost its #: the key would go to the server in the request,
        # and be quoted with the address in every message.
        raise UsageError(
            "The server's address has what looks like a room key in its path: in an invite "
            "link the key comes after a #. Nothing was sent."
        )
    path = parts.path
    if path.endswith("/index.html"):  # the web client's page, as an invite link may name it
        path = path.removesuffix("index.html")
    path = path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


MAX_SERVER_LENGTH = 2048  # no relay's address is longer, and a key is looked for in it


def relay_uptime(ws: ClientConnection) -> int | None:
    """How many seconds ago the relay started, if it said so in its handshake answer (a
    relay says it in its first minute, PROTOCOL.md 10.1)."""
    said = ws.response.headers.get(UPTIME_HEADER, "") if ws.response is not None else ""
    return int(said) if said.isascii() and said.isdigit() and len(said) <= 6 else None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def default_delays() -> Generator[float]:
    """websockets' backoff, each delay drawn between half and all of it: clients cut off
    together by a relay restart come back spread out, not in waves."""
    for delay in backoff(initial_delay=0.2, min_delay=0.2, max_delay=10.0, factor=1.6):
        yield delay * (0.5 + secrets.randbelow(1001) / 2000)


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
        retry_after_rate_limit: float = RETRY_AFTER_RATE_LIMIT,
        retry_after_full: float = RETRY_AFTER_FULL,
        stable_after: float = STABLE_AFTER,
        announce: bool = False,
    ) -> None:
        """``announce``: tell the others in each room who we are (PROTOCOL.md 5.7); a
        script that only sends or listens keeps the default, and is counted, not named."""
        self._connect_url = websocket_url(server)  # with credentials, if any
        self.url = without_credentials(self._connect_url)  # what is shown
        self._announce = announce
        self.session = ClientSession(
            device, name, token_bytes=secrets.token_bytes, announce=announce
        )
        self.connected = asyncio.Event()
        self.presence: dict[bytes, int] = {}
        # websockets takes ssl=None for "no TLS", and refuses it for wss://: a wss:// URL
        # gets the system's trust store (or the file SSL_CERT_FILE names) unless told so.
        if ssl_context is None and self._connect_url.startswith("wss:"):
            ssl_context = ssl.create_default_context()
        self._ssl = ssl_context
        self._delays = reconnect_delays
        # The backoff under way; None: the next reconnect starts a fresh one.
        self._backoff: Generator[float] | None = None
        self._last_delay = 0.0
        self._retry_after_rate_limit = retry_after_rate_limit
        self._retry_after_full = retry_after_full
        self._stable_after = stable_after
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        # Bounded: a reader that does not keep up loses the oldest, never our memory.
        # None, last: the client has stopped (failure, or closed); readers raise.
        self._messages: _Inbox[MessageReceived | None] = _Inbox()
        self._events: _Inbox[Event | None] = _Inbox()
        # One future per room, shared by its join() callers, each awaiting it shielded.
        self._joined: dict[bytes, asyncio.Future[Joined]] = {}
        # message id -> (room id, the future its sender awaits)
        self._accepted: dict[bytes, tuple[bytes, asyncio.Future[None]]] = {}
        # Retries and hold releases: they belong to one connection and die with it.
        self._timers: set[asyncio.TimerHandle] = set()
        # room id -> the room's state a JOIN retry is timed for: one at a time per room,
        # however many refusals the relay sends.
        self._join_retries: dict[bytes, RoomState] = {}
        # The one retry of refused PUBLISHes (RATE_LIMITED), and the backoff's restart.
        self._resend_timer: asyncio.TimerHandle | None = None
        self._stable_timer: asyncio.TimerHandle | None = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._failure: RelayRefused | None = None
        self._unreachable: str | None = None
        self._reached = False
        # Until then (the event loop's time), the relay of this connection is one that
        # has just started, its members maybe reconnecting: rooms joined hold their outbox.
        self._relay_young_until = 0.0
        self._clock_offset_ms: int | None = _clock_offsets.get(self.url)
        self._closed = False
        self._readers_stopped = False

    async def __aenter__(self) -> RoomClient:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def failure(self) -> RelayRefused | None:
        """Why the client stopped for good, or None while it keeps (re)connecting."""
        return self._failure

    @property
    def clock_offset_ms(self) -> int | None:
        """This machine's clock less the relay's, in ms, as the last connection's handshake
        told it (``relay_clock_offset``); None before one, or from a relay that gave no
        time. ``CLOCK_WARNING_MS`` or more either way is worth telling the user."""
        return self._clock_offset_ms

    def expiry_now(self) -> int:
        """The time rooms expire by, in ms: this machine's clock, read back by as much as the
        relay's says it is fast (``CLOCK_WARNING_MS`` or more, ``MAX_CLOCK_READ_BACK_MS`` at
        most). A room's key is deleted at its expiry, for good, and by a clock days fast
        every room would go at once; a relay's word never deletes one early (a clock said
        slow is not read forward), nor keeps one for more than a room's longest life."""
        return _expiry_now(self._clock_offset_ms)

    @property
    def reached(self) -> bool:
        """Whether a connection to the relay was ever made: what was sent may have reached
        it, connected now or not."""
        return self._reached

    @property
    def unreachable(self) -> str | None:
        """Why the last try to connect failed, in words for people (``unreachable_reason``),
        while the client keeps trying; None while connected, and before any try failed."""
        return self._unreachable

    def start(self) -> None:
        # Once closed, for good: a client started again would connect and serve nothing.
        self._check_running()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="instantroom-client")
            self._schedule_tick()

    async def close(self) -> None:
        """Hang up and stop for good: waiting and later calls get ``RoomGone``. An
        announcing client first tells its rooms it leaves (best effort: for
        ``LEAVING_TIMEOUT`` at most)."""
        self._closed = True
        self._cancel_timers()
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        # Cancelled, the task closes its connection on the way out; closing it here as well
        # makes sure it is closed, not left to the garbage collector, when close() returns.
        ws = self._ws
        try:
            if self._announce and ws is not None:
                self.session.announce_leaving(now_ms())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LEAVING_TIMEOUT):
                        await self._flush()
            if self._task is not None:
                self._task.cancel()
                # wait(), not await: the task's CancelledError is its own, while one that
                # reaches us here is our caller's (a timeout, a TaskGroup) and must go on.
                done, _ = await asyncio.wait([self._task], timeout=HANG_UP_TIMEOUT)
                if not done and ws is not None:
                    # Its close frame waits behind what the relay does not read, and
                    # websockets' close timeout starts only once it is written.
                    ws.transport.abort()
                    await asyncio.wait([self._task])
                self._task = None
            if ws is not None:
                await ws.close()
        except asyncio.CancelledError:
            if ws is not None:  # no time left for a clean close: no socket left open
                ws.transport.abort()
            raise
        finally:
            self._fail_waiting(lambda: RoomGone(CLOSED))
            self._stop_readers()

    # rooms and messages

    def _check_running(self) -> None:
        """Raise at once what a call on a stopped client would meet."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RoomGone(CLOSED)

    async def join(
        self,
        room: RoomKeys,
        expires_at_ms: int = 0,
        known: Iterable[tuple[bytes, int]] = (),
        outbox: Iterable[tuple[bytes, int, bytes]] = (),
        floor_ms: int = 0,
    ) -> Joined:
        """Join ``room`` and wait for the relay to let us in; ``JoinRefused`` if it
        refuses (for a full room or relay, the client keeps trying: see ``JoinRefused``).
        A room whose expiry has passed is not joined (PROTOCOL.md 9): ``RoomGone`` at once.
        ``known`` are the (message id, time) of messages this client has already (kept or
        deleted): the room's replay filter drops them if a relay sends them again
        (PROTOCOL.md 7), and ``floor_ms`` is the time up to which it no longer knows which
        it had: the filter refuses everything stamped at or below it.
        ``outbox`` are the (id, time, envelope) of our messages the relay had not taken
        before a restart (``ClientSession.outbox_of``): each is sent again as it is, and
        an ``Accepted`` or ``NotSent`` event follows for it (PROTOCOL.md 10.6); one that
        finds the outbox full gets ``NotSent`` at once."""
        self._check_running()
        now = now_ms()
        if 0 < expires_at_ms <= self.expiry_now():
            raise RoomExpiredError("The room has expired.")
        state = self.session.rooms.get(room.room_id)
        future = self._joined.get(room.room_id)
        if state is not None and state.joined and future is not None and future.done():
            return Joined(room.room_id, state.expires_at_ms, state.members)
        if future is None or future.done():
            future = self._joined[room.room_id] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
        if state is None:
            self.session.join(room, expires_at_ms)
            if self._relay_young_until > asyncio.get_running_loop().time():
                self.session.connect_failed()  # joined on a relay that has just started
            for message_id, timestamp_ms in known:  # before any DELIVER can come
                self.session.remember(room.room_id, message_id, timestamp_ms, now)
            if floor_ms:
                self.session.remember_floor(room.room_id, floor_ms, now)
            for message_id, timestamp_ms, envelope in outbox:
                try:
                    self.session.restore(room.room_id, message_id, timestamp_ms, envelope, now)
                except UsageError as exc:
                    self._events.offer(NotSent(room.room_id, message_id, str(exc)))
            self._dispatch(self.session.events())  # those given up as too old
        await self._flush()
        # Shielded: a caller that gives up does not cancel the wait of another.
        return await asyncio.shield(future)

    async def leave(self, room_id: bytes) -> None:
        """Leave ``room_id`` (an announcing client tells the others first)."""
        self.session.leave(room_id, now_ms())
        self._room_gone(room_id, "You left the room.")
        await self._flush()

    def stop_waiting(self, room_id: bytes) -> None:
        """Send what waits for ``room_id``'s members to come back (after a reconnect, or a
        relay that was out of reach; PROTOCOL.md 10.6) now, without the rest of the grace,
        and send at once after any later drop too: for a caller whose deadline is near."""
        self.session.release(room_id, for_good=True)
        self._flush_soon()

    def members(self, room_id: bytes) -> tuple[Member, ...]:
        """Who the others in ``room_id`` said they are and are believed present, oldest
        first (PROTOCOL.md 5.7); never ourselves, and empty for a room we are not in. Each
        is a claim: the relay's count (``presence``) says how many are online, and those
        who announce nothing are counted there only."""
        return self.session.members(room_id)

    def post_text(self, room_id: bytes, text: str) -> tuple[Message, bytes]:
        """Seal ``text`` into the outbox and return at once the message and its envelope
        (to keep it beyond a restart, for ``join(outbox=...)``); an ``Accepted`` or
        ``NotSent`` event follows. Raises as ``send_text`` does at once."""
        self._check_running()
        message = self.session.send_text(room_id, text, now_ms())
        self._flush_soon()
        envelope = next(
            envelope
            for message_id, _, envelope in self.session.outbox_of(room_id)
            if message_id == message.message_id
        )
        return message, envelope

    async def send_text(self, room_id: bytes, text: str) -> Message:
        """Send ``text`` and return once the relay has taken it.

        Raises ``MessageNotSent`` when the relay has not taken it within 55 minutes (it is
        then given up: the others would refuse it as too old), ``RoomGone`` when the room
        goes away first (expired, left, refused) or the client is closed, ``RelayRefused``
        when the relay refused this client for good, and ``UsageError`` at once, sending
        nothing, for a room not joined or while ``MAX_OUTBOX`` (10,000) messages wait for
        the relay."""
        message, _ = self.post_text(room_id, text)
        await self.taken(room_id, message.message_id)
        return message

    def taken(self, room_id: bytes, message_id: bytes) -> asyncio.Future[None]:
        """A future done once the relay has taken the message ``message_id`` of
        ``room_id``, just given to ``post_text`` (ask with no await between the two); it
        fails as ``send_text`` raises. Waited for with a timeout (``asyncio.wait``), it
        is not cancelled by it: an ACK in the same pass as the deadline still counts."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a caller that gave up is not told of it
        self._accepted[message_id] = (room_id, future)
        return future

    async def messages(self) -> AsyncIterator[MessageReceived]:
        """Every message received, as it comes. Once the client has stopped (refused for
        good, or closed), raises why after the messages that came before."""
        while True:
            received = await self._messages.get()
            if received is None:
                self._messages.put_back(None)  # for every later reader too
                raise self._stop_reason()
            yield received

    async def next_event(self) -> Event:
        """The next event; raises as ``messages()`` does once the client has stopped."""
        event = await self._events.get()
        if event is None:
            self._events.put_back(None)
            raise self._stop_reason()
        return event

    def _stop_reason(self) -> Exception:
        return self._failure if self._failure is not None else RoomGone(CLOSED)

    def _stop_readers(self) -> None:
        if not self._readers_stopped:
            self._readers_stopped = True
            self._messages.offer(None)
            self._events.offer(None)

    def _fail_waiting(self, error: Callable[[], Exception]) -> None:
        """Fail every join() and send_text() still waiting."""
        waiting: list[asyncio.Future[Any]] = [
            *self._joined.values(),
            *(future for _, future in self._accepted.values()),
        ]
        for future in waiting:
            if not future.done():
                future.set_exception(error())

    async def ping(self) -> None:
        """Send a PING; its PONG comes back after the relay handled all we sent before."""
        self.session.ping(secrets.randbits(63))
        await self._flush()

    # the connection

    async def _run(self) -> None:
        try:
            await self._connections()
        except RelayRefused as exc:  # refused for good: whoever waits is told
            # Not a warning: a program without logging set up (the command line) would
            # have it printed once more, unasked, next to its own words.
            logger.info("%s", exc)
            self._failure = exc
        except InvalidHandshake as exc:
            # What the server answered (its status, headers) is its own words.
            answer = printable(str(exc))
            self._failure = RelayRefused(f"The relay at {self.url} refused us: {answer}")
            self._failure.__cause__ = exc
        except Exception as exc:  # a bug or the unexpected: never leave anyone waiting
            # Its type only: its message could quote what a member sent.
            name = type(exc).__name__
            logger.error("the client's connection task failed: %s", name)
            self._failure = RelayRefused(f"The connection to {self.url} failed: {name}")
        else:
            return
        failure = self._failure
        self._fail_waiting(lambda: failure)
        self._stop_readers()

    async def _connections(self) -> None:
        """Connect, serve the connection, back off, and again, until refused for good."""
        while True:
            try:
                ws = await _connect(self._connect_url, self._ssl, OPEN_TIMEOUT)
            except Exception as exc:
                refusal = _retry_or_give_up(exc, self.url, reached=self._reached)
                if refusal is exc:
                    raise
                if refusal is not None:
                    raise refusal from exc
                logger.info("could not connect to %s: %s", self.url, exc)
                self._unreachable = unreachable_reason(exc, self.url)
                self.session.connect_failed()  # its rooms' members may be reconnecting too
            else:
                async with ws:
                    if ws.subprotocol != SUBPROTOCOL:
                        # Not a relay, or one of another version (PROTOCOL.md 10.1).
                        await ws.close(1002, f"{SUBPROTOCOL} was not selected")
                        raise RelayRefused(
                            f"The server at {self.url} is not an InstantRoom relay: it did "
                            f"not select the {SUBPROTOCOL} subprotocol."
                        )
                    closed = await self._serve(ws)
                self._check_close(closed)
                # Its code only: the reason is the relay's text, which a log line shown in
                # a terminal must not carry (escape sequences).
                logger.info("the connection to %s closed (%s)", self.url, _close_code(closed))
            await asyncio.sleep(self._next_delay())

    async def _serve(self, ws: ClientConnection) -> ConnectionClosed:
        """Run one connection until it closes; return how it closed."""
        self._ws = ws
        self._unreachable = None
        self._reached = True
        offset = relay_clock_offset(ws, now_ms())
        if offset is not None:
            self._clock_offset_ms = _clock_offsets[self.url] = offset
        uptime = relay_uptime(ws)
        now = asyncio.get_running_loop().time()
        self._relay_young_until = 0.0 if uptime is None else now + REJOIN_GRACE - uptime
        if self._relay_young_until > now:
            # As after a try that failed: the members it had may be reconnecting still.
            self.session.connect_failed()
        self.session.connection_made()
        self.connected.set()
        bad_frames = 0
        try:
            await self._flush()
            while True:
                data = await ws.recv()
                if isinstance(data, str):
                    # A protocol violation (PROTOCOL.md 10.1): closed with 1008, and, as
                    # for the relay's 1008, not reconnected to in a loop (11.2).
                    await ws.close(CloseCode.POLICY_VIOLATION, "binary frames only")
                    raise RelayRefused(
                        f"The relay at {self.url} sent a text message, which an InstantRoom "
                        "relay never sends: the connection was closed (1008), and trying "
                        "again would fail the same way."
                    )
                try:
                    self.session.receive(data, now_ms())
                except FrameError as exc:
                    # Once a connection: a relay could send bad frames by the thousand, and
                    # a program without logging set up prints each warning.
                    bad_frames += 1
                    if bad_frames == 1:
                        logger.warning("relay sent a bad frame: %s", exc)
                    else:
                        logger.debug("relay sent a bad frame: %s", exc)
                self._dispatch(self.session.events())
                await self._flush()
        except ConnectionClosed as exc:
            return exc
        finally:
            self.connected.clear()
            self._ws = None
            self._relay_young_until = 0.0  # of this connection's relay; the next one says
            if self._stable_timer is not None:
                self._stable_timer.cancel()
                self._stable_timer = None
            # A retry or release timed for this connection must not act on the next one.
            self._cancel_timers()
            self.session.connection_lost(now_ms())

    def _check_close(self, closed: ConnectionClosed) -> None:
        """Raise RelayRefused if the relay closed the connection with a fatal code."""
        rcvd = closed.rcvd
        # Only a close the relay started says something about us: when we started it,
        # its code is our own, echoed.
        if rcvd is None or closed.rcvd_then_sent is False or rcvd.code not in FATAL_CLOSE_CODES:
            return
        # The relay's words reach logs and terminals: without its control characters.
        why = f": {printable(rcvd.reason)}" if rcvd.reason else ""
        raise RelayRefused(
            f"The relay at {self.url} closed the connection for good ({rcvd.code}{why}); "
            "trying again would fail the same way.",
            close_code=rcvd.code,
        )

    def _next_delay(self) -> float:
        """The next reconnect delay; a backoff that runs out repeats its last delay."""
        if self._backoff is None:
            self._backoff = self._delays()
        self._last_delay = next(self._backoff, self._last_delay)
        return self._last_delay

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
        """Run ``action``, then send what it made, after ``delay`` seconds, unless this
        connection drops first."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            action()
            self._flush_soon()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._join_retries.clear()
        if self._resend_timer is not None:
            self._resend_timer.cancel()
            self._resend_timer = None

    def _resend_later(self) -> None:
        """One retry for every PUBLISH refused meanwhile, not one per refusal."""
        if self._resend_timer is not None:
            return

        def fire() -> None:
            self._resend_timer = None
            self.session.resend_unacknowledged()
            self._flush_soon()

        loop = asyncio.get_running_loop()
        self._resend_timer = loop.call_later(self._retry_after_rate_limit, fire)

    def _stable(self) -> None:
        self._stable_timer = None
        self._backoff = None  # the relay works: the next drop backs off afresh

    def _flush_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _schedule_tick(self) -> None:
        self._tick_timer = asyncio.get_running_loop().call_later(TICK_EVERY, self._tick)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case MessageReceived():
                    self._messages.offer(event)
                case Accepted(message_id=message_id):
                    _, accepted = self._accepted.pop(message_id, (b"", None))
                    if accepted is not None and not accepted.done():
                        accepted.set_result(None)
                case NotSent(message_id=message_id, reason=reason):
                    _, given_up = self._accepted.pop(message_id, (b"", None))
                    if given_up is not None and not given_up.done():
                        given_up.set_exception(MessageNotSent(reason))
                case PresenceChanged(room_id=room_id, members=members):
                    self.presence[room_id] = members
                case Joined(room_id=room_id, members=members):
                    if self._stable_timer is None and self._ws is not None:
                        # The backoff starts afresh once this connection has lasted.
                        loop = asyncio.get_running_loop()
                        self._stable_timer = loop.call_later(self._stable_after, self._stable)
                    self.presence[room_id] = members
                    joined = self._joined.get(room_id)
                    if joined is not None and not joined.done():
                        joined.set_result(event)
                    since = self.session.held_since(room_id)
                    if since is not None:  # the grace counts time joined during the wait
                        left = REJOIN_GRACE - max(0, now_ms() - since) / 1000
                        self._later(left, functools.partial(self.session.release, room_id))
                case Refused(code=ErrorCode.RATE_LIMITED, ref=ref, room_id=room_id):
                    if not ref:
                        self._retry_join_later(self._retry_after_rate_limit, room_id)
                case Refused(code=code, ref=0, room_id=room_id, reason=reason) if (
                    code in _TRY_LATER and room_id in self.session.rooms
                ):
                    # Whoever waits on join() hears of it now; the room waits for a place.
                    waiting = self._joined.get(room_id)
                    if waiting is not None and not waiting.done():
                        waiting.set_exception(JoinRefused(code, printable(reason)))
                    self._retry_join_later(self._retry_after_full, room_id)
                case Refused(code=code, room_id=room_id, reason=reason):
                    if room_id not in self.session.rooms:  # the session gave the room up
                        said = printable(reason)  # the relay's words, without its escapes
                        waiting = self._joined.get(room_id)
                        if waiting is not None and not waiting.done():
                            waiting.set_exception(JoinRefused(code, said))
                        self._room_gone(room_id, said, expired=code == ErrorCode.ROOM_EXPIRED)
                case RoomExpired(room_id=room_id):
                    self._room_gone(room_id, "The room has expired.", expired=True)
                    # Its messages are deleted at expiry (PROTOCOL.md 9), unread ones too.
                    self._messages.drop(functools.partial(_of_room, room_id))
                    self._events.drop(functools.partial(_of_room, room_id))
                case _:
                    pass
            self._events.offer(event)
        if self.session.waiting_to_resend:  # a PUBLISH was refused: try again later
            self._resend_later()

    def _retry_join_later(self, delay: float, room_id: bytes) -> None:
        """Send the room's JOIN again after ``delay``: only for this very room, as one left
        and joined again meanwhile has a JOIN, and a retry, of its own (two would double
        its JOINs for as long as it waits). One retry at a time per room, and none for a
        room we are not in: each refusal is the relay's to send, by the thousand, and one
        timer each would pile up for as long as the delay."""
        state = self.session.rooms.get(room_id)
        if state is None or self._join_retries.get(room_id) is state:
            return
        self._join_retries[room_id] = state

        def retry() -> None:
            if self._join_retries.get(room_id) is state:
                del self._join_retries[room_id]
            if self.session.rooms.get(room_id) is state:
                self.session.retry_join(room_id)

        self._later(delay, retry)

    def _room_gone(self, room_id: bytes, reason: str, *, expired: bool = False) -> None:
        """Nothing more will be sent to ``room_id``: tell whoever waits for it."""
        gone = RoomExpiredError if expired else RoomGone
        self.presence.pop(room_id, None)
        joined = self._joined.pop(room_id, None)
        if joined is not None and not joined.done():
            joined.set_exception(gone(reason))
        for message_id, (room, future) in list(self._accepted.items()):
            if room == room_id:
                del self._accepted[message_id]
                if not future.done():
                    future.set_exception(gone(reason))

    def _tick(self) -> None:
        """Once a second: rooms whose time is over are forgotten, here and now, and left
        on the relay; then what presence has due is done (by this clock as it reads:
        presence times are this device's own, never compared with another's)."""
        self.session.expire(self.expiry_now())
        self.session.tick(now_ms())
        self._dispatch(self.session.events())
        self._flush_soon()
        self._schedule_tick()

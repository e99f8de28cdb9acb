"""The relay: WebSocket connections in, ciphertext fanned out, nothing kept.

Each connection is an ``asyncio.Protocol`` around websockets' sans-I/O ``ServerProtocol``
(HTTP handshake and WebSocket framing come from the library). The hot path:

    PUBLISH in -> look up the room by its 32 id bytes -> DELIVER = 0x11 || frame[5:]
    -> one WebSocket frame encoded once -> appended to each member's out buffer

Out buffers are flushed once per event-loop pass, so a member that is sent several
frames in one pass gets them in one write, and a lone frame waits for nothing. A member
whose kernel buffer passes ``send_buffer`` is cut off: it never stalls its room.

The relay imports the frame codec and the join proof check, never a key derivation or
an envelope: it cannot decrypt.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import http
import ipaddress
import json
import logging
import resource
import secrets
import signal
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Any, NamedTuple, cast

from websockets.datastructures import Headers
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, StatusLike, Subprotocol

from instantroom import __version__
from instantroom.protocol import frames
from instantroom.protocol.codes import (
    SUBPROTOCOL,
    UPTIME_HEADER,
    CloseCode,
    ErrorCode,
    FrameType,
)
from instantroom.protocol.errors import FrameError, JoinProofError
from instantroom.protocol.join import ROOM_ID_SIZE, SIGNATURE_SIZE, verify_join_proof

from .config import RelayConfig, read_metrics_token
from .hub import Hub, HubUnavailable, MemoryHub
from .logs import Redactor, log_event, report_suppressed
from .metrics import RelayMetrics, render_metrics
from .rooms import RoomFacts
from .tls import certificate_context, check_tls_options, self_signed_context

WEBSOCKET_PATH = "/ws"
_ROOM_FIRST = {FrameType.JOIN, FrameType.PROOF}  # room id right after the type byte
CLOSE_TIMEOUT = 2.0  # seconds a peer has to answer our close frame or EOF
# Fragments of one message: our clients send none; websockets bounds only their bytes.
MAX_FRAGMENTS = 64
# Bytes of a request head (request line and headers) read before it is answered 431.
# websockets allows 128 lines of 8 KiB, about 1 MiB held by each socket before any
# request: a few hundred addresses could fill the relay's memory. Browsers send 1-4 KiB.
MAX_REQUEST_HEAD = 32 * 1024
JOIN_BUCKETS_PRUNED = 10.0  # seconds between sweeps of the per-address JOIN buckets
LISTEN_BACKLOG = 100  # as asyncio's create_server
FILES_KEPT = 64  # file descriptors the relay keeps for itself (logs, Redis, static files)
MOST_FILES = 1_048_576  # raised to at most this when the hard limit is unlimited
_ACK = bytes([FrameType.ACK])
# Who recorded an expiry learned from the other relays, in RoomFacts (no client address).
_FROM_BACKPLANE = "backplane"
# A member's frames closer together than this (seconds) are queued for one write per
# event-loop pass; further apart, each is written at once (Relay.fan_out).
DIRECT_WRITE_GAP = 0.005
_PROOF_SIZE = 1 + ROOM_ID_SIZE + SIGNATURE_SIZE
# Headers read here that must come once; a request with two of one is refused.
_SINGLE_HEADERS = ("Host", "Upgrade")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}
_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        # 'wasm-unsafe-eval' lets the QR scanner compile its WebAssembly (from 'self'); no
        # inline or third-party script. connect-src names ws:/wss: as people may point the
        # web client at any relay; nothing else is ever fetched from elsewhere.
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
        "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; "
        "worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'",
    ),
    # A page that opened ours (an invite link) keeps no handle on it: it cannot navigate it
    # to a look-alike lock screen, or feed it invite links later.
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
# Every answer is checked with the relay before use (a relay upgrade shows at once), but
# Vite's hashed files, whose names change with their bytes, are kept for good: a phone
# does not fetch the scanner's megabyte of WebAssembly again each time.
_REVALIDATE = "no-cache"
_HASHED_ASSETS = "/assets/"
_IMMUTABLE = "public, max-age=31536000, immutable"
# Served at / when the web client was not built into the package (scripts/setup builds it).
_PLACEHOLDER_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>InstantRoom relay</title></head>
<body><main><h1>InstantRoom relay</h1>
<p>This relay carries end-to-end encrypted InstantRoom messages. It cannot read them.</p>
<p>The web client was not built into this installation (scripts/setup builds it). Use the
terminal client: <code>instantroom join</code>, <code>send</code> and <code>listen</code>.</p>
</main></body></html>
"""
# websockets logs every connection at INFO with no way to hide addresses; keep it quiet.
_ws_logger = logging.getLogger("instantroom.relay.websockets")
_ws_logger.setLevel(logging.WARNING)


class StaticFile(NamedTuple):
    """One file of the web client, as the relay serves it."""

    body: bytes
    content_type: str
    etag: str
    cache_control: str


def _etag_matches(if_none_match: list[str], etag: str) -> bool:
    """Whether If-None-Match names ``etag``; weak comparison, as RFC 9110 13.1.2 asks."""
    for header in if_none_match:
        for tag in header.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") == etag:
                return True
    return False


def address_key(address: str) -> str:
    """What the per-address limit counts: an IPv4 address, or an IPv6 client's /64
    (one host usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return str(ip)


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, as servers do (it
    is often 1,024, about 1,000 connections); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_FILES if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return MOST_FILES if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return soft
    return wanted


def encode_wire(frame: bytes) -> bytes:
    """One unmasked binary WebSocket frame: the same bytes for every recipient."""
    return Frame(Opcode.BINARY, frame).serialize(mask=False)


def _error_wire(
    code: ErrorCode, reason: str, ref: int = 0, room_id: bytes = frames.NO_ROOM
) -> bytes:
    return encode_wire(frames.encode_frame(frames.Error(code, ref, room_id, reason)))


class RoomRefused(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Room:
    __slots__ = ("announced", "counts_asked", "counts_told", "expires_at_ms", "members", "room_id")

    def __init__(self, room_id: bytes, expires_at_ms: int) -> None:
        self.room_id = room_id
        self.expires_at_ms = expires_at_ms
        self.members: set[RelayConnection] = set()
        self.announced = 0  # the member count last told to members
        # With a backplane, counts asked of it (numbered) and the last one told: answers
        # come back in any order, and an older one must not undo a newer one.
        self.counts_asked = 0
        self.counts_told = 0


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


# What websockets answers 414 or 431 by itself: a request line or a header line over
# 8 KiB, or more than 128 headers.
_HEAD_TOO_LARGE = (RequestLineTooLong, HeaderLineTooLong, TooManyHeaders)


class _ServerProtocol(ServerProtocol):
    """websockets' server side, except that EOF is sent once however often it is asked,
    and that its refusals carry the relay's security headers as its other answers do.

    Bytes after a request in the same read are parsed as WebSocket frames at once; when
    they are none, websockets fails the connection (and sends EOF) before the relay has
    answered the request, and its answer asked for EOF again: an AssertionError.
    """

    def send_eof(self) -> None:
        if not self.eof_sent:
            super().send_eof()

    def reject(self, status: StatusLike, text: str) -> Response:
        # Also those websockets makes itself (414, 431), and those that quote the request
        # (a refused Origin): plain text, never sniffed, framed or kept.
        response = super().reject(status, text)
        for name, value in _SECURITY_HEADERS:
            response.headers[name] = value
        response.headers["Cache-Control"] = "no-store"
        return response


class RelayConnection(asyncio.Protocol):
    """One client connection: handshake, then frames."""

    __slots__ = (
        "ack_queued",
        "address",
        "admitting",
        "bucket",
        "closing",
        "closing_first",
        "closing_queued",
        "closing_since",
        "dirty",
        "fragments",
        "fragments_dropped",
        "hangup",
        "head_bytes",
        "last_seen",
        "opened_at",
        "out",
        "past_handshake",
        "pending",
        "ping_sent",
        "refusals",
        "refused_from",
        "refused_lately",
        "relay",
        "rooms",
        "sent_at",
        "transport",
        "ws",
    )

    def __init__(self, relay: Relay, counted_address: str = "") -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.ws = _ServerProtocol(
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            max_size=relay.config.max_frame_size,
            logger=_ws_logger,
        )
        # Set when the address was counted already, as TLS connections are, at accept.
        self.address = counted_address
        self.out: list[bytes] = []
        self.dirty = False
        self.ack_queued = False  # flushed after the pass's other connections
        self.sent_at = 0.0  # when fan_out last had a frame for this member
        self.closing = False
        self.closing_first = 0.0  # set by the sweeper: when it first saw us closing,
        self.closing_since = 0.0  # when it last saw our queued bytes leave,
        self.closing_queued = 0  # and how many were left then
        self.hangup = False  # send EOF after the queued bytes
        self.rooms: dict[bytes, Room] = {}
        self.pending: dict[bytes, tuple[bytes, int, bytes]] = {}
        # Proven, waiting for the backplane's answer: room id -> that admission's token
        # (a LEAVE meanwhile removes it, and the admission then ends with nothing).
        self.admitting: dict[bytes, object] = {}
        # Joined a room, or waits for a place in one: the handshake timeout is over.
        self.past_handshake = False
        self.fragments: list[bytes] | None = None
        self.fragments_dropped = False  # the rest of a message refused for the rate
        self.head_bytes = 0  # read before the request came; -1 once it came or was answered
        now = relay.now()
        self.opened_at = now
        self.last_seen = now
        self.ping_sent = False
        self.refusals = 0  # refused frames in a row
        self.refused_lately = 0  # refused frames since the last sweep (once a second)
        self.refused_from = ""  # turned away: the address it waits on to close, for
        self.bucket = TokenBucket(relay.config.messages_per_second, relay.config.message_burst, now)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=self.relay.config.send_buffer)
        if self.address:
            self.relay.connection_opened(self, counted=True)
            return
        peer = transport.get_extra_info("peername")
        self.address = address_key(str(peer[0])) if peer else "unknown"
        self.relay.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        self.last_seen = relay.now()
        self.ping_sent = False
        relay.metrics.bytes_in += len(data)
        ws = self.ws
        try:  # no extra call per read: this is the hot path
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, Frame):
                    self._frame_received(event)
                elif isinstance(event, Request):
                    self._request_received(event)
                    # Its answer goes before what frames sent with it make the relay say.
                    self._pull_protocol_writes()
                if self.transport is None:
                    return
            if self.head_bytes >= 0 and not ws.eof_sent:  # no answer yet, nor given up
                self.head_bytes += len(data)
                if self.head_bytes > MAX_REQUEST_HEAD:
                    self._answer_too_large()
            elif self.head_bytes >= 0 and isinstance(ws.handshake_exc, _HEAD_TOO_LARGE):
                self.head_bytes = -1  # answered by websockets (414, 431): counted here
                relay.metrics.rejections["request_too_large"] += 1
            self._pull_protocol_writes()
        except Exception as exc:
            # A bug costs this connection and one log line (its type only: the message
            # could quote the peer's bytes), never the relay or a page of traceback.
            log_event("connection.error", logging.ERROR, error=type(exc).__name__)
            self.drop("internal_error")

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._pull_protocol_writes()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True
        self.out.clear()
        self.relay.connection_closed(self)

    def pause_writing(self) -> None:
        # Before the upgrade, only our own HTTP response is queued (at most the largest
        # static file): a phone on a slow link must get all of the QR scanner's wasm.
        if self.ws.state is not State.CONNECTING and not self.closing:
            # Called from inside a write, maybe in a loop over the room's members: the
            # drop, which leaves the room, waits until that loop is over.
            self.closing = True
            self.out.clear()
            self.relay.call_soon(self.drop, "too_slow")

    # sending

    def push(self, wire: bytes) -> None:
        """Queue one encoded WebSocket frame; it leaves with this pass's flush."""
        if self.closing:
            return
        self.out.append(wire)
        if not self.dirty:
            self.dirty = True
            self.relay.mark_dirty(self)

    def push_ack(self, wire: bytes) -> None:
        """Queue an ACK: it leaves with this pass's flush, after every other connection's
        frames of the pass (an ACK says that the message was passed on to the members)."""
        if not self.closing:
            self.ack_queued = True
            self.push(wire)

    def flush(self) -> None:
        self.dirty = self.ack_queued = False
        out = self.out
        transport = self.transport
        if transport is None:
            return
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            self.relay.metrics.frames_out += len(out)
            self.relay.metrics.bytes_out += len(data)
            out.clear()
            transport.write(data)
        if self.hangup:
            self.hangup = False
            self._hang_up(transport)

    @staticmethod
    def _hang_up(transport: asyncio.Transport) -> None:
        """Send EOF after the queued bytes, and keep reading until the peer closes too.

        Closing a socket that still has unread input resets the connection, and the
        peer may then lose the close frame or HTTP response just written. The peer's
        EOF closes the transport (``eof_received``); the sweeper aborts laggards.
        """
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:  # TLS cannot half-close
            transport.close()

    def _pull_protocol_writes(self) -> None:
        ws = self.ws
        if not self.closing and ws.close_sent is not None and ws.close_rcvd is None:
            # websockets failed the connection itself (a message too big, a protocol
            # error): a close by the relay all the same, counted as its own are.
            try:
                name = CloseCode(ws.close_sent.code).name.lower()
            except ValueError:  # 1002, 1007: the peer broke the WebSocket protocol
                name = "protocol_error"
            self.relay.metrics.disconnects[name] += 1
        for chunk in ws.data_to_send():
            if chunk:
                self.out.append(chunk)
            else:  # websockets asks for EOF: finish what is queued, then hang up
                self.closing = True
                self.hangup = True
        if ws.state is State.CLOSED or ws.close_expected():
            self.closing = True
            if self.rooms:  # a member saying goodbye has left: no need to wait for EOF
                self.relay.leave_all(self)
        if (self.out or self.closing) and not self.dirty:
            self.dirty = True
            self.relay.mark_dirty(self)

    def turn_away(self, reason: str, status: int, text: str) -> None:
        """Answer the upgrade request, still to come, with ``status``: this connection is
        not counted against its address (``reason`` names the rejection in /metrics)."""
        relay = self.relay
        relay.metrics.rejections[reason] += 1
        self.head_bytes = -1  # its request is read and thrown away, however long
        address, self.address = self.address, ""
        if not relay.may_linger(self, address):
            # As many of its address's turned away are still open: no answer, or one
            # address could keep every place of the relay taken with refused sockets.
            self.closing = True
            transport, self.transport = self.transport, None  # nothing more is read
            if transport is not None:
                transport.abort()
            return
        self.ws.send_response(self.ws.reject(status, text))
        self._pull_protocol_writes()

    def close(self, code: CloseCode, reason: str) -> None:
        """Say goodbye with a close frame, then hang up once it is written."""
        if self.closing or self.transport is None:
            return
        self.relay.metrics.disconnects[code.name.lower()] += 1
        self.closing = True
        self.relay.leave_all(self)
        if self.ws.state is State.OPEN:
            # Failed, in RFC 6455's words: EOF follows the close frame, and what comes in
            # after is thrown away unread. A peer answering is read for nothing; a peer
            # sending PINGs on was answered PONG by PONG, a core's worth for as long as
            # its output kept draining (up to --idle-timeout).
            self.ws.fail(code, reason)
            self._pull_protocol_writes()
        else:  # no WebSocket yet, nothing to say goodbye with
            self.transport.close()

    def drop(self, reason: str) -> None:
        """Hang up at once, with no goodbye: for readers too slow to hear one."""
        if self.transport is None:
            return
        self.relay.metrics.disconnects[reason] += 1
        log_event(
            "connection.dropped", reason=reason, address=self.relay.redact.address(self.address)
        )
        self.closing = True
        self.out.clear()
        self.relay.leave_all(self)
        self.transport.abort()

    # HTTP

    def _answer_too_large(self) -> None:
        self.head_bytes = -1
        self.relay.metrics.rejections["request_too_large"] += 1
        self.ws.send_response(self.ws.reject(431, "The request's headers are too large.\n"))

    def _request_received(self, request: Request) -> None:
        relay = self.relay
        self.head_bytes = -1
        headers = request.headers
        if any(len(headers.get_all(name)) > 1 for name in _SINGLE_HEADERS):
            relay.metrics.rejections["handshake"] += 1
            self.ws.send_response(self.ws.reject(400, "A header that comes once came twice.\n"))
            return
        if relay.config.trust_proxy:
            # The last entry is the one our proxy added (a proxy may add a header of its own
            # after the client's); without one, the peer's address.
            forwarded = ",".join(headers.get_all("X-Forwarded-For")).split(",")[-1].strip()
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self.address = (
                address_key(forwarded)
                if forwarded
                else (address_key(str(peer[0])) if peer else "unknown")
            )
            if not relay.claim_address(self):
                return
        path = request.path.split("?", 1)[0]
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path == WEBSOCKET_PATH and upgrade:
            self._accept_websocket(request)
            return
        self.ws.send_response(relay.http_response(request.method, path, headers))

    def _accept_websocket(self, request: Request) -> None:
        ws = self.ws
        relay = self.relay
        allowed = relay.config.origin_list
        host = request.headers.get("Host", "")
        # Non-browser clients send no Origin; a page served by this relay is always let in;
        # --origins adds the pages elsewhere that may use it.
        ws.origins = [
            None,
            Origin(f"http://{host}"),
            Origin(f"https://{host}"),
            *(Origin(o) for o in allowed),
        ]
        response = ws.accept(request)
        if response.status_code == 101 and ws.subprotocol is None:
            response = ws.reject(400, f"Speak the {SUBPROTOCOL} subprotocol.\n")
        if response.status_code == 101:
            relay.say_uptime(response)
        else:
            reason = (
                "origin"
                if ws.handshake_exc and "origin" in str(ws.handshake_exc).lower()
                else "handshake"
            )
            relay.metrics.rejections[reason] += 1
        ws.send_response(response)

    # frames

    def _frame_received(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.BINARY:
            if frame.fin:
                self._message_received(bytes(frame.data))
            else:
                self.fragments = [bytes(frame.data)]
                self._fragment_paid()
        elif opcode is Opcode.CONT and self.fragments_dropped:
            # The rest of a message refused for the rate: paid for, frame by frame.
            self.fragments_dropped = not frame.fin
            if not frame.fin and not self.bucket.take(self.relay.now()):
                self.relay.metrics.rejections["rate_limited"] += 1
                self._count_refusal()
        elif opcode is Opcode.CONT and self.fragments is not None:
            # websockets bounds the bytes of a message, not its frames: empty ones are free.
            if len(self.fragments) >= MAX_FRAGMENTS:
                self.fragments = None  # what follows is dropped
                self.relay.metrics.rejections["too_many_fragments"] += 1
                self.close(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
                return
            self.fragments.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self.fragments)
                self.fragments = None
                self._message_received(data)
            else:
                self._fragment_paid()
        elif opcode is Opcode.TEXT:
            self.relay.metrics.rejections["text_frame"] += 1
            self.close(CloseCode.POLICY_VIOLATION, "binary frames only")
        elif opcode in (Opcode.PING, Opcode.PONG) and not self.bucket.take(self.relay.now()):
            # websockets answers pings itself; they still cost a token, or a flood of them
            # would cost the relay CPU and bandwidth for free.
            self.relay.metrics.rejections["rate_limited"] += 1
            self._count_refusal()
        # CLOSE is answered by websockets itself.

    def _fragment_paid(self) -> None:
        """Take a token for a fragment that is not a message's last (the message takes
        one for its last): a message of 64 fragments parsed for one token let a connection
        at the rate limit cost the relay 64 times its share. Past the rate the message is
        refused, as a whole one would be, and the rest of its fragments dropped."""
        if self.bucket.take(self.relay.now()):
            return
        assert self.fragments is not None
        first = self.fragments[0]
        self.fragments = None
        self.fragments_dropped = True
        self._rate_limited(first)

    def _count_refusal(self) -> bool:
        """Count one refused frame, and close a flood of them: more than --max-refusals in
        a row, or within a second. (In a row alone, one good frame now and then would let
        a connection send refused ones at any rate; our clients, with at most 100 in
        flight and a pause after a refusal, have far fewer in a second.)"""
        self.refusals += 1
        self.refused_lately += 1
        limit = self.relay.config.max_refusals
        if self.refusals > limit or self.refused_lately > limit:
            self.close(CloseCode.POLICY_VIOLATION, "too many refused frames")
            return True
        return False

    def refuse(
        self, code: ErrorCode, reason: str, ref: int = 0, room_id: bytes = frames.NO_ROOM
    ) -> None:
        relay = self.relay
        relay.metrics.rejections[code.name.lower()] += 1
        if self._count_refusal():
            return
        self.push(_error_wire(code, reason, ref, room_id))

    def _message_received(self, data: bytes) -> None:
        relay = self.relay
        relay.metrics.frames_in += 1
        if self.closing:
            return
        is_publish = data[:1] == b"\x10"
        # A PROOF answering our own challenge is part of its JOIN, which paid already.
        answers_challenge = (
            data[:1] == b"\x03" and len(data) == _PROOF_SIZE and data[1:33] in self.pending
        )
        over_rate = not answers_challenge and not self.bucket.take(relay.now())
        if over_rate:
            if data[:1] != b"\x05" or len(data) != 33:
                self._rate_limited(data)
                return
            # A LEAVE is honoured all the same: refused, it would keep the client in a room
            # it believes it left, and its ERROR could not be told from one for its next
            # JOIN. It still counts toward the refusals that close a flood.
            if self._count_refusal():
                return
            relay.metrics.rejections["leave_over_rate"] += 1
        if is_publish and frames.PUBLISH_HEADER_SIZE < len(data) <= frames.MAX_FRAME_SIZE:
            # The hot path: no decode, one slice, one encoding for all members.
            # (Past MAX_FRAME_SIZE no member could decode it: decode_frame refuses it.)
            room = self.rooms.get(data[5:37])
            if room is None:
                ref = int.from_bytes(data[1:5])
                self.refuse(ErrorCode.NOT_JOINED, "Join the room first.", ref, data[5:37])
                return
            self.refusals = 0
            relay.fan_out(room, self, encode_wire(frames.deliver_from_publish(data)))
            # Not held for company (5 ms, as before): that shared no write at the default
            # rate limit and measured no cheaper (benchmarks/README.md).
            self.push_ack(encode_wire(_ACK + data[1:5]))
            return
        try:
            frame = frames.decode_frame(data)
        except FrameError as exc:
            self.refuse(ErrorCode(exc.code), str(exc))
            return
        refused_before = self.refusals  # a JOIN or PROOF refused below is no good frame
        match frame:
            case frames.Join():
                self._join(frame)
            case frames.Proof():
                self._prove(frame)
            case frames.Leave():
                if frame.room_id in self.rooms:
                    relay.leave(self, frame.room_id)
                self.pending.pop(frame.room_id, None)
                self.admitting.pop(frame.room_id, None)
            case frames.Ping():
                self.push(encode_wire(frames.encode_frame(frames.Pong(frame.token))))
            case _:
                self.refuse(ErrorCode.UNKNOWN_FRAME_TYPE, "Clients do not send this frame type.")
                return
        # A PROOF whose admission waits for the backplane is judged when it is decided.
        admitting = isinstance(frame, frames.Proof) and frame.room_id in self.admitting
        if not self.closing and not over_rate and self.refusals == refused_before and not admitting:
            self.refusals = 0

    def _rate_limited(self, data: bytes) -> None:
        """Refuse a frame over the rate, naming its room (and ref) when it carries them."""
        kind = data[0] if data else 0  # an empty message is refused as any other
        ref, room_id = 0, frames.NO_ROOM
        if kind == FrameType.PUBLISH and len(data) >= frames.PUBLISH_HEADER_SIZE:
            ref, room_id = int.from_bytes(data[1:5]), data[5:37]
        elif kind in _ROOM_FIRST and len(data) >= 33:
            room_id = data[1:33]
        self.refuse(ErrorCode.RATE_LIMITED, "Too many frames: slow down.", ref, room_id)

    def _join(self, frame: frames.Join) -> None:
        room_id = frame.room_id
        if room_id in self.rooms or room_id in self.admitting:
            self.refuse(ErrorCode.ALREADY_JOINED, "Already in this room.", room_id=room_id)
            return
        taken = len(self.rooms) + len(self.pending) + len(self.admitting)
        if room_id not in self.pending and taken >= self.relay.config.rooms_per_connection:
            self.refuse(
                ErrorCode.TOO_MANY_ROOMS, "Too many rooms on one connection.", room_id=room_id
            )
            return
        if not self.relay.may_join(self.address):
            self.refuse(
                ErrorCode.RATE_LIMITED,
                "Too many joins from your address: slow down.",
                room_id=room_id,
            )
            return
        challenge = secrets.token_bytes(32)
        self.pending[room_id] = (frame.room_public_key, frame.expires_at_ms, challenge)
        self.push(encode_wire(frames.encode_frame(frames.Challenge(room_id, challenge))))

    def _prove(self, frame: frames.Proof) -> None:
        room_id = frame.room_id
        pending = self.pending.pop(room_id, None)  # a challenge is good once
        if pending is None:
            self.refuse(
                ErrorCode.NO_CHALLENGE,
                "Send JOIN first, then a proof for its challenge.",
                room_id=room_id,
            )
            return
        public_key, expires_at_ms, challenge = pending
        try:
            verify_join_proof(public_key, room_id, challenge, frame.signature)
        except JoinProofError:
            self.refuse(ErrorCode.PROOF_FAILED, "The join proof does not verify.", room_id=room_id)
            return
        try:
            self.relay.admit(self, room_id, expires_at_ms)
        except RoomRefused as exc:
            self.refuse_admission(exc, room_id)

    def refuse_admission(self, refused: RoomRefused, room_id: bytes) -> None:
        """Refuse a JOIN whose proof verified. One refused for now (the room or the relay
        is full) is asked again on this connection every 15 s (PROTOCOL.md 10.6): it is
        past its handshake, as a member's is, rather than cut off by its timeout. Anyone
        may be a member of a room of their own, so this lets nobody stay longer."""
        if refused.code in (ErrorCode.ROOM_FULL, ErrorCode.RELAY_FULL):
            self.past_handshake = True
        self.refuse(refused.code, refused.reason, room_id=room_id)


class Relay:
    """Rooms, connections and limits of one relay process."""

    def __init__(
        self, config: RelayConfig, hub: Hub | None = None, *, reuse_port: bool = False
    ) -> None:
        self.config = config
        self.hub: Hub = hub or MemoryHub()
        self.metrics = RelayMetrics()
        self._metrics_token = read_metrics_token(config)
        self.redact = Redactor(config.log_ids)
        self.rooms: dict[bytes, Room] = {}
        self.facts = RoomFacts(
            keep_ms=int(config.max_room_lifetime * 1000),
            limit=config.max_rooms,
            per_address=config.max_rooms_per_address,
        )
        self.connections: set[RelayConnection] = set()
        self.per_address: Counter[str] = Counter()
        self.refused_per_address: Counter[str] = Counter()  # turned away, still open
        # JOINs of each address, all its connections together: each costs a join proof
        # check (~0.2 ms, the relay's costliest work, and a bad PROOF is free), and an
        # address's 64 connections would otherwise have it check 3,200 a second.
        self.joins_per_address: dict[str, TokenBucket] = {}
        self._joins_pruned = 0.0
        self._dirty: list[RelayConnection] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        # With TLS, the relay accepts connections itself (see _accept_tls).
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._handshaking = 0  # TLS handshakes under way
        self.connection_limit = config.max_connections
        self._sweeper: asyncio.TimerHandle | None = None
        # Wakes at the next room's expiry: a room ends then, not at the next sweep.
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_due = 0  # ms since the epoch that timer is set for
        self._all_closed: asyncio.Event | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._reuse_port = reuse_port
        self._lifetime_ms = int(config.max_room_lifetime * 1000)
        self._static = self._load_static()
        self.port = 0
        self.started = self.now()  # when it began to listen, for UPTIME_HEADER

    @staticmethod
    def now() -> float:
        return time.monotonic()

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    # lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        check_tls_options(self.config, shared_port=self._reuse_port)
        files = raise_file_limit()
        if not self.connection_limit:
            self.connection_limit = max(1, files - FILES_KEPT)
        await self.hub.start(self._remote_delivery, self._members_changed)
        self.started = self.now()
        try:
            context = await self._open()
        except BaseException:
            # The hub's tasks would outlive the failure (a port in use), and the process
            # would wait on them for good, deaf to SIGTERM.
            await self.hub.close()
            raise
        self._sweeper = loop.call_later(1.0, self._sweep)
        log_event(
            "relay.started",
            version=__version__,
            port=self.port,
            tls=bool(context),
            max_connections=self.connection_limit,
        )

    async def _open(self) -> ssl.SSLContext | None:
        """Listen on the relay's host and port; the TLS context served, if any."""
        loop = asyncio.get_running_loop()
        context = None
        if self.config.tls_cert:
            context = certificate_context(self.config)
        elif self.config.tls_self_signed:
            context, fingerprint = self_signed_context()
            log_event("relay.tls_self_signed", sha256=fingerprint)
        if context is None:
            self._server = await loop.create_server(
                lambda: RelayConnection(self),
                self.config.host,
                self.config.port,
                reuse_address=True,
                reuse_port=self._reuse_port,
            )
            self.port = self._server.sockets[0].getsockname()[1]
        else:
            self._listeners = await self._listen()
            self._accepting = [
                loop.create_task(self._accept_tls(listener, context))
                for listener in self._listeners
            ]
            self.port = self._listeners[0].getsockname()[1]
        return context

    async def shutdown(self) -> None:
        """Stop accepting, tell every member to reconnect elsewhere or later, then stop."""
        if self._server is None and not self._listeners:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for accepting in self._accepting:
            accepting.cancel()
        for listener in self._listeners:
            listener.close()
        # Everyone leaves at once: no presence counts going down before each one's close.
        for room_id in self.rooms:
            self.hub.room_closed(room_id)
        self.rooms.clear()
        for conn in self.connections:
            conn.rooms.clear()
        for conn in list(self.connections):
            conn.close(CloseCode.SERVICE_RESTART, "relay restarting: reconnect")
        self._flush()
        if self.connections:
            self._all_closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), self.config.shutdown_grace)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper:
            self._sweeper.cancel()
        if self._expiry_timer:
            self._expiry_timer.cancel()
        # Recounts and admissions still running would use the hub while it closes.
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=3.0)
        await self.hub.close()
        self._server = None
        self._listeners, self._accepting = [], []
        report_suppressed()
        log_event("relay.stopped")

    async def _listen(self) -> list[socket.socket]:
        """Listening sockets for the relay's host and port, as ``create_server`` makes."""
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(
            self.config.host or None,
            self.config.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
        listeners: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(found):
                listener = socket.socket(family, kind, proto)
                listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self._reuse_port:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind(address)
                listener.listen(LISTEN_BACKLOG)
                listener.setblocking(False)
        except OSError:
            for listener in listeners:
                listener.close()
            raise
        return listeners

    async def _accept_tls(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        """Accept TCP connections and count each against its address before its TLS
        handshake: with ``ssl=`` the loop would show the relay a connection only once
        its handshake is done, and sockets that never start one would escape the limit."""
        loop = asyncio.get_running_loop()
        limit = self.config.connections_per_address
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError:  # out of file descriptors, say: the backlog waits meanwhile
                await asyncio.sleep(0.1)
                continue
            address = "" if self.config.trust_proxy else address_key(str(peer[0]))
            if len(self.connections) + self._handshaking >= self.connection_limit:
                self.metrics.rejections["max_connections"] += 1
                sock.close()
                continue
            if address and self.per_address[address] >= limit:
                # No TLS yet, so no HTTP 429: the client sees the connection fail, and
                # tries again later as after a 429.
                self.metrics.rejections["too_many_connections"] += 1
                sock.close()
                continue
            if address:
                self.per_address[address] += 1
            self._handshaking += 1
            self._spawn(self._tls_handshake(sock, address, context))

    async def _tls_handshake(
        self, sock: socket.socket, address: str, context: ssl.SSLContext
    ) -> None:
        conn = RelayConnection(self, address)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: conn,
                sock,
                ssl=context,
                ssl_handshake_timeout=self.config.handshake_timeout,
            )
        except BaseException as exc:
            # A failed or timed-out handshake is no news to log. Unless the connection was
            # made all the same (cancelled at shutdown, just after), which gives its place
            # back as it closes, its place is given back here.
            if conn not in self.connections and not conn.closing:
                self._release_address(address)
            sock.close()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._handshaking -= 1

    def _release_address(self, address: str) -> None:
        if address:
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]

    async def run_until_signal(self) -> None:
        # Handlers first: a SIGTERM right after "relay.started" is a graceful stop too.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log_event("relay.stopping")
        await self.shutdown()

    # connections

    def connection_opened(self, conn: RelayConnection, *, counted: bool = False) -> None:
        self.connections.add(conn)
        self.metrics.connections_total += 1
        if self._stopping:
            # A TLS handshake that ends during the grace period: hung up on as the
            # half-open handshakes were, not let in to join rooms nobody will close.
            if not counted:
                conn.address = ""  # not counted against its address: nothing to give back
            conn.close(CloseCode.SERVICE_RESTART, "relay restarting: reconnect")
            return
        if counted:
            return
        # (With TLS, _accept_tls counted the handshakes too, before this connection's.)
        if len(self.connections) > self.connection_limit:
            if self.config.trust_proxy:
                conn.address = ""  # the proxy's: whose it is, only its request says
            conn.turn_away("max_connections", 503, "This relay is full: try again later.\n")
            return
        if self.config.trust_proxy:
            conn.address = ""  # not counted until its request says whose it is
        else:
            self.claim_address(conn)

    def claim_address(self, conn: RelayConnection) -> bool:
        if self.per_address[conn.address] >= self.config.connections_per_address:
            conn.turn_away("too_many_connections", 429, "Too many connections from your address.\n")
            return False
        self.per_address[conn.address] += 1
        return True

    def may_join(self, address: str) -> bool:
        """Whether ``address`` may be challenged once more: its connections together
        join at most as fast as one connection may send frames."""
        now = self.now()
        bucket = self.joins_per_address.get(address)
        if bucket is None:
            config = self.config
            bucket = TokenBucket(config.messages_per_second, config.message_burst, now)
            self.joins_per_address[address] = bucket
        return bucket.take(now)

    def _prune_join_buckets(self, now: float) -> None:
        """Forget the buckets that have filled up again: they say nothing more. (Kept
        until then, so that hanging up and coming back does not fill one.)"""
        if now - self._joins_pruned < JOIN_BUCKETS_PRUNED:
            return
        self._joins_pruned = now
        self.joins_per_address = {
            address: bucket
            for address, bucket in self.joins_per_address.items()
            if bucket.tokens + (now - bucket.stamp) * bucket.rate < bucket.burst
        }

    def may_linger(self, conn: RelayConnection, address: str) -> bool:
        """Whether ``conn``, turned away, may stay open for its answer (until its peer
        closes, or the sweeper gives up): as many of one address at once as it may have
        connections. One whose address is not known yet (behind a proxy) may."""
        if not address:
            return True
        if self.refused_per_address[address] >= self.config.connections_per_address:
            return False
        self.refused_per_address[address] += 1
        conn.refused_from = address
        return True

    def connection_closed(self, conn: RelayConnection) -> None:
        self.connections.discard(conn)
        self._release_address(conn.address)
        if conn.refused_from:
            self.refused_per_address[conn.refused_from] -= 1
            if self.refused_per_address[conn.refused_from] <= 0:
                del self.refused_per_address[conn.refused_from]
            conn.refused_from = ""
        self.leave_all(conn)
        if self._all_closed is not None and not self.connections:
            self._all_closed.set()

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        assert self._loop is not None
        self._loop.call_soon(callback, *args)

    def mark_dirty(self, conn: RelayConnection) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        acking = []
        for conn in dirty:
            if conn.ack_queued:
                acking.append(conn)
            else:
                conn.flush()
        # ACKs last: a relay that dies during the flush has then sent no ACK for a message
        # some member did not get, and the sender sends it again after reconnecting.
        for conn in acking:
            conn.flush()

    # rooms

    def admit(self, conn: RelayConnection, room_id: bytes, requested_ms: int) -> None:
        """Let ``conn`` into ``room_id`` (its proof verified), or raise ``RoomRefused``.

        ``requested_ms`` is the expiry the joiner knows, 0 if none. The first one recorded
        for a room stands; a room nobody gave one has none (JOINED says 0).
        """
        facts = self.facts
        if facts.expired(room_id):
            raise RoomRefused(ErrorCode.ROOM_EXPIRED, "This room has expired.")
        if facts.expiry(room_id) is None and requested_ms:
            if requested_ms > self.now_ms() + self._lifetime_ms:
                raise RoomRefused(ErrorCode.EXPIRY_TOO_FAR, "This relay keeps rooms for less time.")
            if requested_ms <= self.now_ms():
                raise RoomRefused(ErrorCode.ROOM_EXPIRED, "This room has expired.")

        self._check_room_space(room_id)
        # A new room, or a new fact: an open room without an expiry gets one recorded now.
        if facts.expiry(room_id) is None and (requested_ms or room_id not in self.rooms):
            self._check_space(conn, requested_ms)
        if self.hub.shares_rooms:
            # Marked now, not when the task starts: a LEAVE read with the PROOF must see it.
            token = conn.admitting[room_id] = object()
            self._spawn(self._admit_shared(conn, room_id, requested_ms, token))
            return
        facts.record(room_id, requested_ms, conn.address)
        self._schedule_expiry()
        room = self._enter(conn, room_id, facts.expiry(room_id) or 0)
        self._joined(conn, room, len(room.members))

    async def _admit_shared(
        self, conn: RelayConnection, room_id: bytes, requested_ms: int, token: object
    ) -> None:
        try:
            # What this relay knows goes first: a Redis that restarted has forgotten the
            # expiry, and a relay that never saw the room would take a later one.
            proposed = self.facts.expiry(room_id) or requested_ms
            try:
                expires = await self.hub.agree_expiry(room_id, proposed, self._lifetime_ms)
            except HubUnavailable:  # decide alone; the relays agree again once it is back
                expires = self.facts.expiry(room_id) or requested_ms
            if (known := self.facts.expiry(room_id)) and expires:
                # Recorded here while Redis was away, and another there: the earlier holds,
                # as it does for clients (PROTOCOL.md 9), and is the one this relay enforces.
                expires = min(known, expires)
                if expires < known:  # recorded here first, it would stand: brought forward
                    self.facts.shorten(room_id, expires)
                    self._schedule_expiry()
                    if (open_room := self.rooms.get(room_id)) is not None:
                        open_room.expires_at_ms = expires
            if conn.closing or room_id in conn.rooms or conn.admitting.get(room_id) is not token:
                return  # gone, already in, or left meanwhile: nothing to answer
            try:
                if self.facts.expired(room_id):  # while the backplane was asked
                    raise RoomRefused(ErrorCode.ROOM_EXPIRED, "This room has expired.")
                self._check_room_space(room_id)  # filled meanwhile
                if expires and self.facts.expiry(room_id) is None:
                    # Again: admissions in flight together all passed the first check.
                    # (An expiry from the backplane, not the joiner, is no room it made.)
                    self._check_space(conn, requested_ms)
                self.facts.record(room_id, expires, conn.address)
                self._schedule_expiry()
                room = self._enter(conn, room_id, expires)
                conn.refusals = 0
            except RoomRefused as exc:
                conn.refuse_admission(exc, room_id)
                return
        finally:
            if conn.admitting.get(room_id) is token:
                del conn.admitting[room_id]
        with contextlib.suppress(HubUnavailable):
            await self.hub.subscribed(room_id)
        room.counts_asked += 1
        asked = room.counts_asked
        total = await self._shared_count(room)
        if conn.rooms.get(room_id) is room:
            if asked > room.counts_told:
                room.counts_told = asked
                self._joined(conn, room, total)
            else:
                # A newer count was told meanwhile, to the joiner too: JOINED says that one.
                joined = frames.Joined(room_id, room.expires_at_ms, room.announced)
                conn.push(encode_wire(frames.encode_frame(joined)))
                self._ask_again_if_differs(room, total)

    def _check_space(self, conn: RelayConnection, requested_ms: int) -> None:
        """Raise ``RoomRefused`` unless one more fact fits, and, for one with an expiry,
        unless ``conn``'s address may record one more live room."""
        if not self.facts.make_space():
            raise RoomRefused(ErrorCode.RELAY_FULL, "This relay is full: try again later.")
        if requested_ms and not self.facts.may_record(conn.address):
            raise RoomRefused(
                ErrorCode.RELAY_FULL,
                "This relay keeps no more new rooms from your address now: try later.",
            )

    def _check_room_space(self, room_id: bytes) -> None:
        """Raise ``RoomRefused`` if ``room_id`` is full: before anything about the joiner
        is recorded (its expiry, its address's rooms), as for any refused join."""
        room = self.rooms.get(room_id)
        if room is not None and len(room.members) >= self.config.members_per_room:
            raise RoomRefused(ErrorCode.ROOM_FULL, "This room is full.")

    def _enter(self, conn: RelayConnection, room_id: bytes, expires: int) -> Room:
        """Put ``conn`` in ``room_id``, which has space (``_check_room_space``)."""
        if expires and expires <= self.now_ms():
            raise RoomRefused(ErrorCode.ROOM_EXPIRED, "This room has expired.")
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id, expires)
            self.hub.room_opened(room_id)
        room.expires_at_ms = room.expires_at_ms or expires
        room.members.add(conn)
        conn.rooms[room_id] = room
        conn.past_handshake = True
        return room

    def _joined(self, conn: RelayConnection, room: Room, total: int) -> None:
        joined = frames.Joined(room.room_id, room.expires_at_ms, total)
        conn.push(encode_wire(frames.encode_frame(joined)))
        self._presence(room, total, exclude=conn)

    def leave(self, conn: RelayConnection, room_id: bytes) -> None:
        room = conn.rooms.pop(room_id, None)
        if room is None:
            return
        room.members.discard(conn)
        if not room.members:
            self.rooms.pop(room_id, None)
            self.hub.room_closed(room_id)
        if self.hub.shares_rooms:
            self._spawn(self._recount(room, local_changed=True))
        elif room.members:
            self._presence(room, len(room.members))

    async def _shared_count(self, room: Room) -> int:
        """Tell the other relays our count; return the room's total across relays."""
        # The room as it is now: ``room`` may have closed and opened again since this
        # task was spawned, and its stale 0 must not overwrite the new room's count.
        current = self.rooms.get(room.room_id)
        count = len(current.members) if current is not None else 0
        try:
            return await self.hub.set_members(room.room_id, count)
        except HubUnavailable:
            return count

    async def _recount(self, room: Room, local_changed: bool = False) -> None:
        room.counts_asked += 1
        asked = room.counts_asked
        if local_changed:
            total = await self._shared_count(room)
        else:
            if not room.expires_at_ms:
                await self._learn_expiry(room)
            try:
                total = await self.hub.members(room.room_id)
            except HubUnavailable:
                total = len(room.members)
        if self.rooms.get(room.room_id) is not room:
            return
        if asked > room.counts_told:
            room.counts_told = asked
            self._presence(room, total)
        else:
            self._ask_again_if_differs(room, total)

    async def _learn_expiry(self, room: Room) -> None:
        """A room open here with no expiry may have had one recorded by another relay, a
        joiner there having told it; that relay's members came, so ours recount. The
        first one recorded stands on every relay (PROTOCOL.md 10.8): its members here are
        told and taken out at it too, not left talking in a room over elsewhere."""
        try:
            expires = await self.hub.expiry(room.room_id)
        except HubUnavailable:
            return
        if not expires or self.rooms.get(room.room_id) is not room or room.expires_at_ms:
            return
        if self.facts.expiry(room.room_id) is None:
            # No room made by anyone here: the room is open, and its fact is one more
            # only for as long as it has members here (no place is asked of an address).
            self.facts.make_space()
            self.facts.record(room.room_id, expires, _FROM_BACKPLANE)
        room.expires_at_ms = self.facts.expiry(room.room_id) or expires
        self._schedule_expiry()

    def _ask_again_if_differs(self, room: Room, total: int) -> None:
        """An older answer came after a newer one was told. Asked earlier is not read
        earlier (a write waits for a place to call Redis in, a read does not): if they
        differ, the one told may be the stale one, so Redis is read once more."""
        if total != room.announced:
            self._spawn(self._recount(room))

    def _members_changed(self, room_id: bytes) -> None:
        """Another relay's members of ``room_id`` came or went."""
        room = self.rooms.get(room_id)
        if room is not None:
            self._spawn(self._recount(room))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_event("relay.task_failed", logging.ERROR, error=type(task.exception()).__name__)

    def leave_all(self, conn: RelayConnection) -> None:
        for room_id in list(conn.rooms):
            self.leave(conn, room_id)
        conn.pending.clear()

    def _presence(self, room: Room, total: int, exclude: RelayConnection | None = None) -> None:
        """Tell the room's members its new count, once per change."""
        if total == room.announced and exclude is None:
            return
        room.announced = total
        wire = encode_wire(frames.encode_frame(frames.Presence(room.room_id, total)))
        for member in room.members:
            if member is not exclude:
                member.push(wire)

    def fan_out(self, room: Room, sender: RelayConnection | None, wire: bytes) -> None:
        # A frame to a member that had none for DIRECT_WRITE_GAP, and has nothing queued,
        # is written at once: members of small or quiet rooms get frames far apart, and
        # queueing each would cost more than the write. A member getting frames closer
        # than that (a big room under load) has them queued, to leave with the event-loop
        # pass's flush: several frames in one write. Neither is held back past the pass.
        members = room.members
        now = time.monotonic()
        written = 0
        for member in members:
            if member is sender:
                continue
            last = member.sent_at
            member.sent_at = now
            if now - last > DIRECT_WRITE_GAP and not member.out and not member.closing:
                member.transport.write(wire)  # type: ignore[union-attr]  # open: not closing
                written += 1
            else:
                member.push(wire)
        if written:
            metrics = self.metrics
            metrics.frames_out += written
            metrics.bytes_out += written * len(wire)
        self.metrics.messages_delivered += len(members) - (sender is not None)
        if sender is not None:
            self.hub.publish(room.room_id, wire)

    def _remote_delivery(self, room_id: bytes, wire: bytes) -> None:
        room = self.rooms.get(room_id)
        if room is not None:
            self.fan_out(room, None, wire)

    def _expire_rooms(self, now_ms: int) -> None:
        for room_id in self.facts.due(now_ms):
            room = self.rooms.pop(room_id, None)
            if room is None:
                continue
            wire = _error_wire(ErrorCode.ROOM_EXPIRED, "This room has expired.", room_id=room_id)
            # All leave at once: no presence counts going down before each one's notice.
            for member in room.members:
                member.rooms.pop(room_id, None)
                member.push(wire)
            room.members.clear()
            self.hub.room_closed(room_id)
            log_event("room.expired", room=self.redact.room(room_id))
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        """Wake when the next room fact is due, if before the wake already set: at expiry
        the members are told and taken out (PROTOCOL.md 9), rather than carried on until
        the next sweep, up to a second later. (The sweep still runs: a wall clock that
        jumps forward is caught there.)"""
        due = self.facts.next_due()
        if due is None or self._loop is None or self._stopping:
            return
        now = self.now_ms()
        if self._expiry_timer is not None:
            # A timer set for a time already past is set again: it waits on the monotonic
            # clock, which stood still while a host slept (or the wall clock was stepped
            # forward), and would leave rooms to the sweep until it fired, maybe hours on.
            if now < self._expiry_due <= due:
                return
            self._expiry_timer.cancel()
        self._expiry_due = due
        # One ms late rather than early: a fact is due once the clock has reached it.
        delay = max(0.0, (due - now + 1) / 1000)
        self._expiry_timer = self._loop.call_later(delay, self._expiry_fired)

    def _expiry_fired(self) -> None:
        self._expiry_timer = None
        self._expire_rooms(self.now_ms())

    def _sweep(self) -> None:
        """Once a second: expiries, handshake deadlines, idle pings and timeouts."""
        assert self._loop is not None
        self._sweeper = self._loop.call_later(1.0, self._sweep)
        report_suppressed()
        self._expire_rooms(self.now_ms())
        now = self.now()
        self._prune_join_buckets(now)
        config = self.config
        for conn in list(self.connections):
            if conn.closing:
                # A peer that takes nothing more of what we queued, or has it all and does
                # not answer our close frame or EOF, is cut off after CLOSE_TIMEOUT; one
                # still reading (a slow phone fetching the web client) is not.
                transport, idle_timeout = conn.transport, config.idle_timeout
                queued = transport.get_write_buffer_size() if transport is not None else 0
                if not conn.closing_first:
                    conn.closing_first = conn.closing_since = now
                    conn.closing_queued = queued
                elif queued < conn.closing_queued and now - conn.closing_first < idle_timeout:
                    conn.closing_since = now
                    conn.closing_queued = queued
                elif now - conn.closing_since > CLOSE_TIMEOUT and transport is not None:
                    transport.abort()
                continue
            if not conn.past_handshake and now - conn.opened_at > config.handshake_timeout:
                self.metrics.rejections["handshake_timeout"] += 1
                if conn.ws.state is State.OPEN:
                    conn.close(CloseCode.HANDSHAKE_TIMEOUT, "join a room sooner")
                else:
                    conn.drop("handshake_timeout")
                continue
            conn.refused_lately = 0
            quiet = now - conn.last_seen
            if quiet > config.idle_timeout:
                conn.close(CloseCode.IDLE_TIMEOUT, "idle")
            elif (
                quiet > config.ping_interval and not conn.ping_sent and conn.ws.state is State.OPEN
            ):
                conn.ping_sent = True
                conn.ws.send_ping(secrets.token_bytes(4))
                conn._pull_protocol_writes()

    # HTTP

    @staticmethod
    def _load_static() -> dict[str, StaticFile]:
        files: dict[str, StaticFile] = {}
        root = resources.files("instantroom.relay") / "static"

        def static_file(body: bytes, content_type: str, name: str) -> StaticFile:
            # From the bytes, not a file time: relays of one build behind a proxy agree.
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            hashed = name.startswith(_HASHED_ASSETS)
            return StaticFile(body, content_type, etag, _IMMUTABLE if hashed else _REVALIDATE)

        def walk(node: Any, prefix: str) -> None:
            for child in node.iterdir():
                name = f"{prefix}/{child.name}"
                if child.is_dir():
                    walk(child, name)
                else:
                    suffix = "." + child.name.rsplit(".", 1)[-1]
                    content_type = _CONTENT_TYPES.get(suffix, "application/octet-stream")
                    files[name] = static_file(child.read_bytes(), content_type, name)

        if root.is_dir():
            walk(root, "")
        if "/index.html" not in files:
            files["/index.html"] = static_file(_PLACEHOLDER_PAGE, _CONTENT_TYPES[".html"], "/")
        files["/"] = files["/index.html"]
        return files

    def gauges(self) -> dict[str, float]:
        return {
            "connections_open": len(self.connections),
            "rooms_open": len(self.rooms),
            "room_members": sum(len(r.members) for r in self.rooms.values()),
            "backplane_healthy": 1.0 if self.hub.healthy else 0.0,
            "backplane_frames_dropped": self.hub.dropped,
            "room_facts": len(self.facts),
        }

    def http_response(self, method: str, path: str, headers: Headers) -> Response:
        """The answer to a plain (no upgrade) request: GET or HEAD of ``path``."""
        if method not in ("GET", "HEAD"):
            response = self._response(
                405, b"Only GET and HEAD are answered here.\n", "text/plain; charset=utf-8"
            )
            response.headers["Allow"] = "GET, HEAD"
            return response
        response = self._get_response(path, headers)
        if method == "HEAD":  # GET's headers, Content-Length included; no body
            return Response(response.status_code, response.reason_phrase, response.headers)
        return response

    def say_uptime(self, response: Response) -> None:
        """In the relay's first minute, how long ago it started (PROTOCOL.md 10.1)."""
        uptime = self.now() - self.started
        if uptime < self.config.say_uptime_for:
            response.headers[UPTIME_HEADER] = str(int(uptime))

    def _get_response(self, path: str, headers: Headers) -> Response:
        if path == "/healthz":
            status = "ok" if self.hub.healthy else "degraded"
            body = json.dumps({"status": status, "version": __version__}).encode()
            response = self._response(200, body, "application/json")
            self.say_uptime(response)  # to the web client, which cannot read the 101's
            return response
        if path == "/metrics":
            if not self._may_read_metrics(headers.get_all("Authorization")):
                self.metrics.rejections["metrics_unauthorized"] += 1
                response = self._response(
                    401, b"/metrics needs this relay's token.\n", "text/plain; charset=utf-8"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="instantroom metrics"'
                return response
            body = render_metrics(self.metrics, self.gauges)
            return self._response(200, body, "text/plain; version=0.0.4; charset=utf-8")
        found = self._static.get(path)
        if found is None:
            return self._response(404, b"Not found.\n", "text/plain; charset=utf-8")
        if _etag_matches(headers.get_all("If-None-Match"), found.etag):
            # The browser's copy is this one (RFC 9110 13.1.2, 15.4.5): no body to send.
            response = self._response(304, b"", found.content_type, found.cache_control)
            del response.headers["Content-Type"]
            del response.headers["Content-Length"]
        else:
            response = self._response(200, found.body, found.content_type, found.cache_control)
        response.headers["ETag"] = found.etag
        return response

    def _may_read_metrics(self, authorization: list[str]) -> bool:
        if self._metrics_token is None:
            return True
        if len(authorization) != 1:
            return False
        scheme, _, given = authorization[0].partition(" ")
        # Compared in constant time; a scheme is case-blind (RFC 9110 11.1). websockets
        # reads header values as ISO-8859-1: any byte is a character, and back.
        matches = hmac.compare_digest(given.strip().encode("latin-1"), self._metrics_token)
        return scheme.lower() == "bearer" and matches

    @staticmethod
    def _response(
        status: int, body: bytes, content_type: str, cache_control: str = _REVALIDATE
    ) -> Response:
        headers = Headers(
            [
                # Clients compare their clock with it, to warn of one set wrong (PROTOCOL.md 7).
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                *_SECURITY_HEADERS,
                ("Cache-Control", cache_control),
            ]
        )
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

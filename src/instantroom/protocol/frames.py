"""The relay wire format: every frame a client and a relay exchange.

Each frame is one binary WebSocket message: a type byte, then fixed fields, then at most
one variable field that runs to the end. Integers are big-endian. Frames print without
their byte fields (room ids, keys, envelopes), so that none ends up in a log or a test
report.

    JOIN       01 | room id (32) | room public key (32) | expires at ms (u64, 0 = unknown)
    CHALLENGE  02 | room id (32) | challenge (32)
    PROOF      03 | room id (32) | signature (64)
    JOINED     04 | room id (32) | expires at ms (u64) | members (u32)
    LEAVE      05 | room id (32)
    PUBLISH    10 | ref (u32) | room id (32) | envelope
    DELIVER    11 | room id (32) | envelope
    ACK        12 | ref (u32)
    PRESENCE   13 | room id (32) | members (u32)
    PING       20 | token (u64)
    PONG       21 | token (u64)
    ERROR      7F | code (u16) | ref (u32) | room id (32, zero if none) | reason (UTF-8)

DELIVER is PUBLISH without its ref: the relay makes it with one slice, never looking at
the envelope, and sends the same bytes to every member.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .codes import MAX_ENVELOPE_SIZE, ErrorCode, FrameType
from .errors import FrameError, UsageError
from .join import CHALLENGE_SIZE, PUBLIC_KEY_SIZE, ROOM_ID_SIZE, SIGNATURE_SIZE

MAX_REASON_BYTES = 200
# Times are ms since 1970 below 2^53, so that every language holds them exactly (a
# JavaScript number does); 2^53 ms is some 285,000 years away.
MAX_TIME_MS = 2**53
NO_ROOM = bytes(ROOM_ID_SIZE)
PUBLISH_HEADER_SIZE = 1 + 4 + ROOM_ID_SIZE
MAX_FRAME_SIZE = PUBLISH_HEADER_SIZE + MAX_ENVELOPE_SIZE

_JOIN = struct.Struct(f">{ROOM_ID_SIZE}s{PUBLIC_KEY_SIZE}sQ")
_CHALLENGE = struct.Struct(f">{ROOM_ID_SIZE}s{CHALLENGE_SIZE}s")
_PROOF = struct.Struct(f">{ROOM_ID_SIZE}s{SIGNATURE_SIZE}s")
_JOINED = struct.Struct(f">{ROOM_ID_SIZE}sQI")
_ROOM = struct.Struct(f">{ROOM_ID_SIZE}s")
_PUBLISH = struct.Struct(f">I{ROOM_ID_SIZE}s")
_ACK = struct.Struct(">I")
_PRESENCE = struct.Struct(f">{ROOM_ID_SIZE}sI")
_TOKEN = struct.Struct(">Q")
_ERROR = struct.Struct(f">HI{ROOM_ID_SIZE}s")


@dataclass(frozen=True)
class Join:
    room_id: bytes = field(repr=False)
    room_public_key: bytes = field(repr=False)
    expires_at_ms: int


@dataclass(frozen=True)
class Challenge:
    room_id: bytes = field(repr=False)
    challenge: bytes = field(repr=False)


@dataclass(frozen=True)
class Proof:
    room_id: bytes = field(repr=False)
    signature: bytes = field(repr=False)


@dataclass(frozen=True)
class Joined:
    room_id: bytes = field(repr=False)
    expires_at_ms: int
    members: int


@dataclass(frozen=True)
class Leave:
    room_id: bytes = field(repr=False)


@dataclass(frozen=True)
class Publish:
    ref: int
    room_id: bytes = field(repr=False)
    envelope: bytes = field(repr=False)


@dataclass(frozen=True)
class Deliver:
    room_id: bytes = field(repr=False)
    envelope: bytes = field(repr=False)


@dataclass(frozen=True)
class Ack:
    ref: int


@dataclass(frozen=True)
class Presence:
    room_id: bytes = field(repr=False)
    members: int


@dataclass(frozen=True)
class Ping:
    token: int


@dataclass(frozen=True)
class Pong:
    token: int


@dataclass(frozen=True)
class Error:
    code: int
    ref: int
    room_id: bytes = field(repr=False)
    reason: str


Frame = (
    Join | Challenge | Proof | Joined | Leave | Publish | Deliver | Ack | Presence | Ping | Pong
    | Error
)  # fmt: skip


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame``. Raises ``UsageError`` for fields out of range."""
    try:
        return _encode(frame)
    except struct.error as exc:
        raise UsageError(f"A field of {type(frame).__name__} is out of range.") from exc


def _exact(value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise UsageError(f"Expected {size} bytes, got {len(value)}.")
    return value


def _encode(frame: Frame) -> bytes:
    match frame:
        case Join(room_id, public_key, expires_at_ms):
            _check_time(expires_at_ms)
            body = _JOIN.pack(
                _exact(room_id, ROOM_ID_SIZE), _exact(public_key, PUBLIC_KEY_SIZE), expires_at_ms
            )
            return bytes([FrameType.JOIN]) + body
        case Challenge(room_id, challenge):
            body = _CHALLENGE.pack(_exact(room_id, ROOM_ID_SIZE), _exact(challenge, CHALLENGE_SIZE))
            return bytes([FrameType.CHALLENGE]) + body
        case Proof(room_id, signature):
            body = _PROOF.pack(_exact(room_id, ROOM_ID_SIZE), _exact(signature, SIGNATURE_SIZE))
            return bytes([FrameType.PROOF]) + body
        case Joined(room_id, expires_at_ms, members):
            _check_time(expires_at_ms)
            body = _JOINED.pack(_exact(room_id, ROOM_ID_SIZE), expires_at_ms, members)
            return bytes([FrameType.JOINED]) + body
        case Leave(room_id):
            return bytes([FrameType.LEAVE]) + _exact(room_id, ROOM_ID_SIZE)
        case Publish(ref, room_id, envelope):
            _check_envelope(envelope)
            head = _PUBLISH.pack(ref, _exact(room_id, ROOM_ID_SIZE))
            return bytes([FrameType.PUBLISH]) + head + envelope
        case Deliver(room_id, envelope):
            _check_envelope(envelope)
            return bytes([FrameType.DELIVER]) + _exact(room_id, ROOM_ID_SIZE) + envelope
        case Ack(ref):
            return bytes([FrameType.ACK]) + _ACK.pack(ref)
        case Presence(room_id, members):
            return bytes([FrameType.PRESENCE]) + _PRESENCE.pack(
                _exact(room_id, ROOM_ID_SIZE), members
            )
        case Ping(token):
            return bytes([FrameType.PING]) + _TOKEN.pack(token)
        case Pong(token):
            return bytes([FrameType.PONG]) + _TOKEN.pack(token)
        case Error(code, ref, room_id, reason):
            try:
                text = reason.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise UsageError("An error reason must be encodable as UTF-8.") from exc
            if len(text) > MAX_REASON_BYTES:
                raise UsageError(f"An error reason is at most {MAX_REASON_BYTES} bytes.")
            head = _ERROR.pack(code, ref, _exact(room_id, ROOM_ID_SIZE))
            return bytes([FrameType.ERROR]) + head + text
    raise UsageError(f"Not a frame: {type(frame).__name__}")


def _check_envelope(envelope: bytes) -> None:
    if not 0 < len(envelope) <= MAX_ENVELOPE_SIZE:
        raise UsageError(f"An envelope is 1 to {MAX_ENVELOPE_SIZE} bytes.")


def deliver_from_publish(publish: bytes) -> bytes:
    """The DELIVER frame for a PUBLISH frame already checked by ``decode_frame``."""
    return b"\x11" + publish[5:]


def _check_time(value: int) -> None:
    if value >= MAX_TIME_MS:
        raise UsageError("A time in ms is below 2^53.")


def _time(value: int) -> int:
    if value >= MAX_TIME_MS:
        raise FrameError("A time in ms is below 2^53.", ErrorCode.MALFORMED_FRAME)
    return value


def _fixed(data: bytes, layout: struct.Struct, name: str) -> tuple[Any, ...]:
    if len(data) != 1 + layout.size:
        raise FrameError(
            f"A {name} frame is {1 + layout.size} bytes, not {len(data)}.",
            ErrorCode.MALFORMED_FRAME,
        )
    return layout.unpack_from(data, 1)


def decode_frame(data: bytes) -> Frame:
    """Parse one frame. Any bytes that are not a frame raise ``FrameError``, nothing else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FrameError("A frame is a binary message.", ErrorCode.MALFORMED_FRAME)
    data = bytes(data)
    if not data:
        raise FrameError("An empty frame.", ErrorCode.MALFORMED_FRAME)
    if len(data) > MAX_FRAME_SIZE:
        raise FrameError("The frame is larger than any frame can be.", ErrorCode.FRAME_TOO_LARGE)
    kind = data[0]
    if kind == FrameType.PUBLISH or kind == FrameType.DELIVER:
        head = 1 + (4 if kind == FrameType.PUBLISH else 0) + ROOM_ID_SIZE
        if len(data) <= head:
            raise FrameError("A message frame without a message.", ErrorCode.MALFORMED_FRAME)
        if len(data) - head > MAX_ENVELOPE_SIZE:
            raise FrameError("The envelope is larger than any can be.", ErrorCode.FRAME_TOO_LARGE)
        if kind == FrameType.PUBLISH:
            ref, room_id = _PUBLISH.unpack_from(data, 1)
            return Publish(ref, room_id, data[head:])
        return Deliver(data[1:head], data[head:])
    if kind == FrameType.ERROR:
        if len(data) < 1 + _ERROR.size:
            raise FrameError("An ERROR frame is cut short.", ErrorCode.MALFORMED_FRAME)
        code, ref, room_id = _ERROR.unpack_from(data, 1)
        if len(data) - 1 - _ERROR.size > MAX_REASON_BYTES:
            raise FrameError("An ERROR reason is too long.", ErrorCode.MALFORMED_FRAME)
        try:
            reason = data[1 + _ERROR.size :].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("An ERROR reason is not UTF-8.", ErrorCode.MALFORMED_FRAME) from exc
        return Error(code, ref, room_id, reason)
    if kind == FrameType.JOIN:
        room_id, public_key, expires = _fixed(data, _JOIN, "JOIN")
        return Join(room_id, public_key, _time(expires))
    if kind == FrameType.CHALLENGE:
        room_id, challenge = _fixed(data, _CHALLENGE, "CHALLENGE")
        return Challenge(room_id, challenge)
    if kind == FrameType.PROOF:
        room_id, signature = _fixed(data, _PROOF, "PROOF")
        return Proof(room_id, signature)
    if kind == FrameType.JOINED:
        room_id, expires, members = _fixed(data, _JOINED, "JOINED")
        return Joined(room_id, _time(expires), members)
    if kind == FrameType.LEAVE:
        (room_id,) = _fixed(data, _ROOM, "LEAVE")
        return Leave(room_id)
    if kind == FrameType.ACK:
        (ref,) = _fixed(data, _ACK, "ACK")
        return Ack(ref)
    if kind == FrameType.PRESENCE:
        room_id, members = _fixed(data, _PRESENCE, "PRESENCE")
        return Presence(room_id, members)
    if kind == FrameType.PING:
        (token,) = _fixed(data, _TOKEN, "PING")
        return Ping(token)
    if kind == FrameType.PONG:
        (token,) = _fixed(data, _TOKEN, "PONG")
        return Pong(token)
    raise FrameError(f"Unknown frame type 0x{kind:02x}.", ErrorCode.UNKNOWN_FRAME_TYPE)

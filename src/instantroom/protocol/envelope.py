"""Message envelopes: what a member seals and every other member opens.

    envelope  = version (1 byte, 0x01) || nonce (12) || AES-256-GCM(padded, aad)
    aad       = version || room id (32)
    padded    = inner || 0x80 || 0x00 ... up to the smallest size bucket that fits
    inner     = signed || signature (64)
    signed    = message id (16) || timestamp ms (u64) || kind (u8)
                || sender device key (32) || name length (u8) || name (UTF-8)
                || body length (u32) || body
    signature = Ed25519 by the sender's device key over
                "instantroom/v1/message-signature" || room id || signed

Integers are big-endian. The relay never sees any of it but the outer length, which the
padding reduces to one of five buckets.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .codes import ENVELOPE_VERSION, NONCE_SIZE, PADDING_BUCKETS, TAG_SIZE
from .errors import (
    BadSignature,
    DecryptionFailed,
    MalformedEnvelope,
    ReplayedMessage,
    StaleMessage,
    UsageError,
)
from .join import signature_is_good
from .kdf import SIGNATURE_SIZE, DeviceKey, RoomKeys

MESSAGE_ID_SIZE = 16
MAX_NAME_BYTES = 64
MAX_BODY_BYTES = 60_000
LABEL_MESSAGE_SIGNATURE = b"instantroom/v1/message-signature"

_HEAD = struct.Struct(">16sQB32sB")  # id, timestamp, kind, device key, name length
_BODY_LENGTH = struct.Struct(">I")


class Kind(IntEnum):
    """What a message is. Receivers ignore kinds they do not know."""

    TEXT = 1
    JOIN = 2
    LEAVE = 3
    TYPING = 4
    HERE = 5  # the answer to a JOIN (PROTOCOL.md 5.7)


@dataclass(frozen=True)
class Message:
    """One message as its sender wrote it. ``repr`` shows no content, name or key."""

    message_id: bytes
    timestamp_ms: int
    kind: int
    sender_key: bytes = field(repr=False)
    sender_name: str = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def new_message(
    device: DeviceKey,
    name: str,
    kind: int,
    body: bytes,
    *,
    token_bytes: Callable[[int], bytes],
    now_ms: int,
) -> Message:
    """A message from this device, with a fresh random id. Pass ``secrets.token_bytes``."""
    return Message(token_bytes(MESSAGE_ID_SIZE), now_ms, kind, device.public_key, name, body)


def _signed_part(message: Message) -> bytes:
    try:
        name = message.sender_name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError("A name must be encodable as UTF-8.") from exc
    if len(name) > MAX_NAME_BYTES:
        raise UsageError(f"A name is at most {MAX_NAME_BYTES} bytes of UTF-8.")
    if len(message.body) > MAX_BODY_BYTES:
        raise UsageError(f"A message body is at most {MAX_BODY_BYTES} bytes.")
    if len(message.message_id) != MESSAGE_ID_SIZE or not 0 <= message.kind <= 255:
        raise UsageError("A message id is 16 bytes and a kind fits in one byte.")
    if not 0 <= message.timestamp_ms < 2**64 or len(message.sender_key) != 32:
        raise UsageError("A timestamp fits in 64 bits and a device key is 32 bytes.")
    if message.kind == Kind.TEXT:
        try:
            message.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError("A text message's body must be UTF-8.") from exc
    head = _HEAD.pack(
        message.message_id, message.timestamp_ms, message.kind, message.sender_key, len(name)
    )
    return head + name + _BODY_LENGTH.pack(len(message.body)) + message.body


def _signature_input(room_id: bytes, signed: bytes) -> bytes:
    return LABEL_MESSAGE_SIGNATURE + room_id + signed


def pad(inner: bytes) -> bytes:
    """ISO/IEC 7816-4 padding up to the smallest bucket that holds ``inner`` and 0x80."""
    for bucket in PADDING_BUCKETS:
        if len(inner) < bucket:
            return inner + b"\x80" + bytes(bucket - len(inner) - 1)
    raise UsageError("The message is too large for the largest padding bucket.")


def unpad(padded: bytes) -> bytes:
    if len(padded) not in PADDING_BUCKETS:
        raise MalformedEnvelope("The padded message is not one of the size buckets.")
    end = len(padded.rstrip(b"\x00"))
    if end == 0 or padded[end - 1] != 0x80:
        raise MalformedEnvelope("The message padding is not well-formed.")
    return padded[: end - 1]


def seal_envelope(room: RoomKeys, device: DeviceKey, message: Message, nonce: bytes) -> bytes:
    """Sign, pad and encrypt ``message`` for ``room``. ``nonce``: 12 fresh random bytes."""
    if message.sender_key != device.public_key:
        raise UsageError("A device seals only messages that carry its own public key.")
    if len(nonce) != NONCE_SIZE:
        raise UsageError("The nonce is 12 bytes.")
    signed = _signed_part(message)
    signature = device.private_key.sign(_signature_input(room.room_id, signed))
    header = bytes([ENVELOPE_VERSION])
    ciphertext = AESGCM(room.message_key).encrypt(
        nonce, pad(signed + signature), header + room.room_id
    )
    return header + nonce + ciphertext


def open_envelope(
    room: RoomKeys, envelope: bytes, before_signature: Callable[[Message], None] | None = None
) -> Message:
    """Decrypt, check and return the message in ``envelope``.

    Raises an ``EnvelopeError``: ``MalformedEnvelope`` for a bad layout,
    ``DecryptionFailed`` when the bytes were not sealed for this room or were altered,
    ``BadSignature`` when the named sender did not sign it. ``before_signature`` (a
    receiver's ``ReplayFilter.check``, PROTOCOL.md 5.6) runs on the message before its
    signature is verified, and may raise to drop it there.
    """
    if len(envelope) < 1 + NONCE_SIZE + PADDING_BUCKETS[0] + TAG_SIZE:
        raise MalformedEnvelope("The envelope is too short.")
    if envelope[0] != ENVELOPE_VERSION:
        raise DecryptionFailed("The envelope's version is not one this client reads.")
    nonce = envelope[1 : 1 + NONCE_SIZE]
    try:
        padded = AESGCM(room.message_key).decrypt(
            nonce, envelope[1 + NONCE_SIZE :], envelope[:1] + room.room_id
        )
    except InvalidTag as exc:
        raise DecryptionFailed("The message was not sealed for this room, or was altered.") from exc
    inner = unpad(padded)
    message, signed, signature = _parse_inner(inner)
    if before_signature is not None:
        # A relay can send one recorded envelope again and again: each would cost a
        # signature check (some 30 times the rest of opening) to be dropped after it.
        before_signature(message)
    if not signature_is_good(message.sender_key, signature, _signature_input(room.room_id, signed)):
        raise BadSignature("The message's signature does not match its sender.")
    return message


def _parse_inner(inner: bytes) -> tuple[Message, bytes, bytes]:
    if len(inner) < _HEAD.size + _BODY_LENGTH.size + SIGNATURE_SIZE:
        raise MalformedEnvelope("The message is too short.")
    message_id, timestamp_ms, kind, sender_key, name_length = _HEAD.unpack_from(inner)
    offset = _HEAD.size
    if name_length > MAX_NAME_BYTES:
        raise MalformedEnvelope("The sender's name is longer than allowed.")
    name_bytes = inner[offset : offset + name_length]
    offset += name_length
    if len(name_bytes) != name_length or len(inner) < offset + _BODY_LENGTH.size:
        raise MalformedEnvelope("The message's name field is cut short.")
    (body_length,) = _BODY_LENGTH.unpack_from(inner, offset)
    offset += _BODY_LENGTH.size
    if body_length > MAX_BODY_BYTES:
        raise MalformedEnvelope("The message body is longer than allowed.")
    if len(inner) != offset + body_length + SIGNATURE_SIZE:
        raise MalformedEnvelope("The message's body length does not match.")
    body = inner[offset : offset + body_length]
    signed = inner[: offset + body_length]
    signature = inner[offset + body_length :]
    try:
        name = name_bytes.decode("utf-8")
        if kind == Kind.TEXT:
            body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEnvelope("The message's text is not valid UTF-8.") from exc
    return Message(message_id, timestamp_ms, kind, sender_key, name, body), signed, signature


class ReplayFilter:
    """Drops duplicates and messages whose time is far from the present.

    Memory is bounded: ids are kept only while their timestamp is inside the window, and
    when ``capacity`` is reached the oldest id is forgotten and the window's floor rises
    to its timestamp, so a forgotten message still cannot come back.
    """

    def __init__(
        self,
        max_age_ms: int = 60 * 60 * 1000,
        max_future_ms: int = 5 * 60 * 1000,
        capacity: int = 100_000,
    ) -> None:
        self.max_age_ms = max_age_ms
        self.max_future_ms = max_future_ms
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes]] = []
        self._floor_ms = -1

    def check(self, message: Message, now_ms: int) -> None:
        """Raise ``StaleMessage`` or ``ReplayedMessage`` as ``accept`` would for a message
        out of the window or already received, remembering nothing of it: run before its
        signature is verified (PROTOCOL.md 5.6), then ``accept`` once it is."""
        oldest = max(now_ms - self.max_age_ms, self._floor_ms + 1)
        if message.timestamp_ms < oldest or message.timestamp_ms > now_ms + self.max_future_ms:
            raise StaleMessage("The message's time is too far from the present.")
        self._forget_old(now_ms)  # what time alone forgets: no sender's doing
        if message.message_id in self._seen:
            raise ReplayedMessage("This message was already received.")

    def accept(self, message: Message, now_ms: int) -> None:
        """Remember ``message`` or raise ``ReplayedMessage`` / ``StaleMessage``."""
        self.check(message, now_ms)
        if not self._make_room(message.timestamp_ms):
            raise StaleMessage("The message's time is too far from the present.")
        self._seen.add(message.message_id)
        heapq.heappush(self._by_time, (message.timestamp_ms, message.message_id))

    def remember(self, message_id: bytes, timestamp_ms: int, now_ms: int) -> None:
        """Remember a message this receiver already has (kept history, a deleted message,
        one it sent), so that the same id is later dropped as ``ReplayedMessage``: a filter
        starts empty, and a restarted client would otherwise take the last hour again.

        An id whose time is before the window (older than ``max_age_ms``, or at or below
        the floor) is not kept: the freshness check refuses it anyway. An id stamped ahead
        of the window is kept: it enters the window as the clock moves on. Memory stays
        bounded by ``capacity`` as in ``accept``. Remembering never raises for a message
        already remembered.
        """
        if len(message_id) != MESSAGE_ID_SIZE:
            raise UsageError(f"A message id is {MESSAGE_ID_SIZE} bytes.")
        if timestamp_ms < max(now_ms - self.max_age_ms, self._floor_ms + 1):
            return
        self._forget_old(now_ms)
        if message_id in self._seen or not self._make_room(timestamp_ms):
            return
        self._seen.add(message_id)
        heapq.heappush(self._by_time, (timestamp_ms, message_id))

    def raise_floor(self, floor_ms: int) -> None:
        """Refuse, from now on, every message stamped at or below ``floor_ms``, as if the
        filter had forgotten their ids at capacity: a client that restarts with only the
        newest of the ids it had seeds this, the newest time among those it dropped, so
        that the dropped ones cannot come back either."""
        if type(floor_ms) is not int:
            raise UsageError("A floor is a time: a whole number of ms.")
        self._floor_ms = max(self._floor_ms, floor_ms)

    def _forget_old(self, now_ms: int) -> None:
        while self._by_time and self._by_time[0][0] < now_ms - self.max_age_ms:
            # The floor rises with what is forgotten: a clock that steps back cannot
            # bring a forgotten message back inside the window.
            self._forget_oldest()

    def _make_room(self, timestamp_ms: int) -> bool:
        """Forget the oldest id if ``capacity`` are remembered; False if an id stamped
        ``timestamp_ms`` is then at or below the floor (and must not be remembered)."""
        if len(self._by_time) >= self.capacity:
            self._forget_oldest()
            if timestamp_ms <= self._floor_ms:
                return False
        return True

    def _forget_oldest(self) -> None:
        timestamp, forgotten = heapq.heappop(self._by_time)
        self._seen.discard(forgotten)
        self._floor_ms = max(self._floor_ms, timestamp)

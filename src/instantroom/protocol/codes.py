"""Numbers both sides must agree on: frame types, error codes, close codes."""

from __future__ import annotations

from enum import IntEnum

SUBPROTOCOL = "instantroom.v1"
# A relay that started less than UPTIME_SAID_FOR seconds ago (by default) says how long
# ago, in whole seconds, in this header of its handshake answer (PROTOCOL.md 10.1): the
# members it had before may still be reconnecting.
UPTIME_HEADER = "InstantRoom-Uptime"
UPTIME_SAID_FOR = 60

# Envelope sizes: the relay needs them to bound frames, clients to seal and open.
ENVELOPE_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
PADDING_BUCKETS = (256, 1024, 4096, 16384, 65536)
MAX_ENVELOPE_SIZE = 1 + NONCE_SIZE + PADDING_BUCKETS[-1] + TAG_SIZE


class FrameType(IntEnum):
    """The first byte of every frame."""

    JOIN = 0x01  # client -> relay
    CHALLENGE = 0x02  # relay -> client
    PROOF = 0x03  # client -> relay
    JOINED = 0x04  # relay -> client
    LEAVE = 0x05  # client -> relay
    PUBLISH = 0x10  # client -> relay
    DELIVER = 0x11  # relay -> client
    ACK = 0x12  # relay -> client
    PRESENCE = 0x13  # relay -> client
    PING = 0x20  # client -> relay
    PONG = 0x21  # relay -> client
    ERROR = 0x7F  # relay -> client


class ErrorCode(IntEnum):
    """Why the relay refused a frame. Sent in ERROR frames; the connection stays open."""

    MALFORMED_FRAME = 1
    UNKNOWN_FRAME_TYPE = 2
    FRAME_TOO_LARGE = 3
    RATE_LIMITED = 4
    NOT_JOINED = 5
    PROOF_FAILED = 6
    NO_CHALLENGE = 7
    TOO_MANY_ROOMS = 8
    ROOM_FULL = 9
    ROOM_EXPIRED = 10
    ALREADY_JOINED = 11
    EXPIRY_TOO_FAR = 12
    RELAY_FULL = 13  # the relay remembers as many rooms as it can: try later


class CloseCode(IntEnum):
    """WebSocket close codes the relay uses when it ends a connection."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008  # too many refused frames, or a text frame
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # graceful shutdown: reconnect
    HANDSHAKE_TIMEOUT = 4001  # joined no room in time
    TOO_SLOW = 4002  # send buffer passed its bound
    IDLE_TIMEOUT = 4003

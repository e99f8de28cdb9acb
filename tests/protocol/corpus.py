"""The published test vectors, loaded once, and the layouts they follow, written out here
independently of ``src`` so that the tests check the code against the documents rather
than against itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from instantroom.protocol.envelope import Message
from instantroom.protocol.kdf import DeviceKey, RoomKeys

VECTORS_DIR = Path(__file__).resolve().parents[2] / "vectors"
PROTOCOL: dict[str, Any] = json.loads((VECTORS_DIR / "protocol.json").read_text("utf-8"))
MINIKEY: dict[str, Any] = json.loads((VECTORS_DIR / "minikey.json").read_text("utf-8"))

KEY_A: str = PROTOCOL["derivations"][0]["minikey"]
KEY_B: str = PROTOCOL["derivations"][1]["minikey"]
ROOM_A = RoomKeys.from_minikey(KEY_A)
ROOM_B = RoomKeys.from_minikey(KEY_B)
DEVICE_A = DeviceKey.from_private_bytes(bytes.fromhex(PROTOCOL["devices"][0]["seed"]))
DEVICE_B = DeviceKey.from_private_bytes(bytes.fromhex(PROTOCOL["devices"][1]["seed"]))

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# Labels and sizes as PROTOCOL.md and the module docstrings give them.
MESSAGE_SIGNATURE_LABEL = b"instantroom/v1/message-signature"
JOIN_PROOF_LABEL = b"instantroom/v1/join-proof"
ROOM_ID_LABEL = b"instantroom/v1/room-id"
BUCKETS = (256, 1024, 4096, 16384, 65536)
HEAD_SIZE = 16 + 8 + 1 + 32 + 1  # id, timestamp, kind, device key, name length
SIGNATURE_SIZE = 64
ENVELOPE_OVERHEAD = 1 + 12 + 16  # version, nonce, tag


def cases(section: str, id_field: str = "id") -> list[Any]:
    """The entries of one section of protocol.json as pytest params, ids = vector ids."""
    return [pytest.param(entry, id=str(entry[id_field])) for entry in PROTOCOL[section]]


def passes_check(key: str) -> bool:
    """The mini key typo check, computed here rather than by the code under test."""
    return hashlib.sha256(key.encode("utf-8") + b"?").digest()[0] == 0


def hkdf_sha256(secret: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF-SHA256 with an empty salt, written out with ``hmac``."""
    prk = hmac.new(bytes(32), secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def signed_part(message: Message) -> bytes:
    """The signed part of a message, byte for byte as envelope.py's docstring lays it out."""
    name = message.sender_name.encode("utf-8")
    return (
        message.message_id
        + struct.pack(">QB", message.timestamp_ms, message.kind)
        + message.sender_key
        + bytes([len(name)])
        + name
        + struct.pack(">I", len(message.body))
        + message.body
    )


def inner_size(name: str, body: bytes) -> int:
    """The length of signed part + signature for a message with this name and body."""
    return HEAD_SIZE + len(name.encode("utf-8")) + 4 + len(body) + SIGNATURE_SIZE


def bucket_for(size: int) -> int:
    """The smallest bucket strictly larger than ``size`` (room for the 0x80 marker)."""
    return next(bucket for bucket in BUCKETS if bucket > size)


def iso_pad(inner: bytes) -> bytes:
    return inner + b"\x80" + bytes(bucket_for(len(inner)) - len(inner) - 1)

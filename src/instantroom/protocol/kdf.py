"""Everything a room needs, derived from its root secret with HKDF-SHA256.

    root      = SHA-256(mini key)                               (minikey.root_secret)
    msg key   = HKDF(root, salt="", info="instantroom/v1/message-key", 32)
    sign seed = HKDF(root, salt="", info="instantroom/v1/room-signing-key", 32)
    room pub  = Ed25519 public key of sign seed
    room id   = SHA-256("instantroom/v1/room-id" || room pub)

The relay sees only the room id and the room's public key: neither reveals the secret,
and only a holder of the secret can sign for that public key.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .join import PUBLIC_KEY_SIZE, ROOM_ID_SIZE, SIGNATURE_SIZE, room_id_for
from .minikey import root_secret

LABEL_MESSAGE_KEY = b"instantroom/v1/message-key"
LABEL_ROOM_SIGNING_KEY = b"instantroom/v1/room-signing-key"
LABEL_FINGERPRINT = b"instantroom/v1/fingerprint"

__all__ = ["PUBLIC_KEY_SIZE", "ROOM_ID_SIZE", "SIGNATURE_SIZE", "DeviceKey", "RoomKeys"]


def hkdf_sha256(secret: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 with an empty salt (RFC 5869: a string of zeros)."""
    return HKDF(algorithm=SHA256(), length=length, salt=None, info=info).derive(secret)


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class RoomKeys:
    """The keys of one room. ``repr`` never shows a secret."""

    message_key: bytes = field(repr=False)
    signing_key: Ed25519PrivateKey = field(repr=False)
    public_key: bytes = field(repr=False)
    room_id: bytes = field(repr=False)

    @classmethod
    def from_root(cls, root: bytes) -> RoomKeys:
        signing_key = Ed25519PrivateKey.from_private_bytes(
            hkdf_sha256(root, LABEL_ROOM_SIGNING_KEY)
        )
        public_key = public_key_bytes(signing_key)
        return cls(
            message_key=hkdf_sha256(root, LABEL_MESSAGE_KEY),
            signing_key=signing_key,
            public_key=public_key,
            room_id=room_id_for(public_key),
        )

    @classmethod
    def from_minikey(cls, key: str) -> RoomKeys:
        """Derive from a key already checked by ``parse_minikey``."""
        return cls.from_root(root_secret(key))


def fingerprint(device_public_key: bytes) -> str:
    """A short, readable name for a device key: 16 base32 characters in groups of four.

    80 bits: enough that nobody can make a key with a chosen fingerprint.
    """
    digest = hashlib.sha256(LABEL_FINGERPRINT + device_public_key).digest()[:10]
    text = base64.b32encode(digest).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True)
class DeviceKey:
    """This install's own Ed25519 key: it signs every message the install sends."""

    private_key: Ed25519PrivateKey = field(repr=False)
    public_key: bytes

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> DeviceKey:
        key = Ed25519PrivateKey.from_private_bytes(raw)
        return cls(private_key=key, public_key=public_key_bytes(key))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

"""Key derivation, fingerprints and the redaction of secrets."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instantroom.protocol.join import room_id_for
from instantroom.protocol.kdf import (
    DeviceKey,
    RoomKeys,
    fingerprint,
    private_key_bytes,
    public_key_bytes,
)
from instantroom.protocol.minikey import root_secret

from .corpus import DEVICE_A, KEY_A, KEY_B, ROOM_ID_LABEL, hkdf_sha256

CRYPTO = settings(max_examples=50, deadline=None)
CHEAP = settings(max_examples=200, deadline=None)
secrets32 = st.binary(min_size=32, max_size=32)


@CRYPTO
@given(secrets32)
def test_room_keys_follow_the_documented_derivation(root: bytes) -> None:
    room = RoomKeys.from_root(root)
    assert room.message_key == hkdf_sha256(root, b"instantroom/v1/message-key")
    seed = hkdf_sha256(root, b"instantroom/v1/room-signing-key")
    assert private_key_bytes(room.signing_key) == seed
    assert room.public_key == public_key_bytes(room.signing_key)
    assert room.room_id == hashlib.sha256(ROOM_ID_LABEL + room.public_key).digest()
    assert room.room_id == room_id_for(room.public_key)
    assert len({room.message_key, seed, room.public_key, room.room_id, root}) == 5


def test_from_minikey_is_from_root_of_sha256() -> None:
    for key in (KEY_A, KEY_B):
        a, b = RoomKeys.from_minikey(key), RoomKeys.from_root(root_secret(key))
        assert (a.message_key, a.public_key, a.room_id) == (b.message_key, b.public_key, b.room_id)
        assert root_secret(key) == hashlib.sha256(key.encode("ascii")).digest()
    assert RoomKeys.from_minikey(KEY_A).room_id != RoomKeys.from_minikey(KEY_B).room_id


@CRYPTO
@given(secrets32)
def test_device_key_from_seed(seed: bytes) -> None:
    device = DeviceKey.from_private_bytes(seed)
    assert private_key_bytes(device.private_key) == seed
    assert device.public_key == public_key_bytes(device.private_key)
    assert len(device.public_key) == 32


@CHEAP
@given(secrets32)
def test_fingerprint_is_80_bits_of_base32_in_fours(public_key: bytes) -> None:
    shown = fingerprint(public_key)
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", shown)
    digest = hashlib.sha256(b"instantroom/v1/fingerprint" + public_key).digest()[:10]
    assert shown.replace("-", "") == base64.b32encode(digest).decode("ascii")


def test_device_fingerprint_is_of_its_public_key() -> None:
    assert DEVICE_A.fingerprint == fingerprint(DEVICE_A.public_key)
    other = DeviceKey.from_private_bytes(bytes(32))
    assert other.fingerprint != DEVICE_A.fingerprint


def _forms(secret: bytes) -> list[str]:
    """Ways a secret could show up in text."""
    return [secret.hex(), secret.hex().upper(), repr(secret), str(secret)[2:-1]]


@pytest.mark.parametrize("key", [KEY_A, KEY_B])
def test_room_keys_repr_shows_no_secret(key: str) -> None:
    room = RoomKeys.from_minikey(key)
    shown = repr(room) + str(room) + f"{room}"
    secrets = [root_secret(key), room.message_key, private_key_bytes(room.signing_key)]
    for secret in secrets:
        for form in _forms(secret):
            assert form not in shown
    assert key not in shown
    assert room.message_key.hex()[:16] not in shown


def test_device_key_repr_shows_no_secret() -> None:
    shown = repr(DEVICE_A) + str(DEVICE_A)
    seed = private_key_bytes(DEVICE_A.private_key)
    for form in _forms(seed):
        assert form not in shown
    assert seed.hex()[:16] not in shown

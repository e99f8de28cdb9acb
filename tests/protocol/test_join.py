"""The join proof: bound to the room, the challenge and its context string."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from instantroom.protocol.errors import JoinProofError, PeerError, UsageError
from instantroom.protocol.join import room_id_for, sign_join_proof, verify_join_proof
from instantroom.protocol.kdf import RoomKeys, load_public_key

from .corpus import JOIN_PROOF_LABEL, MESSAGE_SIGNATURE_LABEL, ROOM_A, ROOM_B

CRYPTO = settings(max_examples=50, deadline=None)
bytes32 = st.binary(min_size=32, max_size=32)


@CRYPTO
@given(bytes32, bytes32)
def test_proof_verifies_for_its_room_and_challenge(root: bytes, challenge: bytes) -> None:
    room = RoomKeys.from_root(root)
    signature = sign_join_proof(room.signing_key, room.room_id, challenge)
    assert len(signature) == 64
    verify_join_proof(room.public_key, room.room_id, challenge, signature)
    # The documented input: context string, room id, challenge.
    load_public_key(room.public_key).verify(signature, JOIN_PROOF_LABEL + room.room_id + challenge)


@CRYPTO
@given(bytes32, bytes32, bytes32)
def test_proof_is_for_one_challenge(root: bytes, challenge: bytes, other: bytes) -> None:
    room = RoomKeys.from_root(root)
    signature = sign_join_proof(room.signing_key, room.room_id, challenge)
    if other != challenge:
        with pytest.raises(JoinProofError):
            verify_join_proof(room.public_key, room.room_id, other, signature)


@CRYPTO
@given(bytes32)
def test_proof_is_for_one_room(challenge: bytes) -> None:
    signature = sign_join_proof(ROOM_A.signing_key, ROOM_A.room_id, challenge)
    with pytest.raises(JoinProofError):  # A's proof, shown for B
        verify_join_proof(ROOM_B.public_key, ROOM_B.room_id, challenge, signature)
    with pytest.raises(JoinProofError):  # A's key, claiming B's id
        verify_join_proof(ROOM_A.public_key, ROOM_B.room_id, challenge, signature)
    with pytest.raises(JoinProofError):  # B's key, A's id
        verify_join_proof(ROOM_B.public_key, ROOM_A.room_id, challenge, signature)


@CRYPTO
@given(bytes32, st.integers(0, 63), st.integers(0, 7))
def test_flipped_signature_bit_is_refused(challenge: bytes, index: int, bit: int) -> None:
    signature = bytearray(sign_join_proof(ROOM_A.signing_key, ROOM_A.room_id, challenge))
    signature[index] ^= 1 << bit
    with pytest.raises(JoinProofError):
        verify_join_proof(ROOM_A.public_key, ROOM_A.room_id, challenge, bytes(signature))


@pytest.mark.parametrize(
    "signed",
    [
        pytest.param(lambda rid, c: rid + c, id="no-context"),
        pytest.param(lambda rid, c: b"instantroom/v1/join-prooF" + rid + c, id="other-context"),
        pytest.param(lambda rid, c: MESSAGE_SIGNATURE_LABEL + rid + c, id="message-context"),
        pytest.param(lambda rid, c: JOIN_PROOF_LABEL + c + rid, id="swapped-fields"),
        pytest.param(lambda rid, c: JOIN_PROOF_LABEL + c, id="no-room-id"),
        pytest.param(lambda rid, c: b"secured", id="the-old-constant"),
    ],
)
def test_signature_over_other_input_is_refused(signed: Callable[[bytes, bytes], bytes]) -> None:
    """The room key signing anything but this exact input makes no proof."""
    challenge = bytes(range(32))
    signature = ROOM_A.signing_key.sign(signed(ROOM_A.room_id, challenge))
    with pytest.raises(JoinProofError):
        verify_join_proof(ROOM_A.public_key, ROOM_A.room_id, challenge, signature)


def test_nobody_without_the_key_can_claim_a_room() -> None:
    """An outsider's own key pair gives its own room id, never an existing one."""
    outsider = Ed25519PrivateKey.from_private_bytes(bytes(32))
    challenge = bytes(32)
    signature = sign_join_proof(outsider, ROOM_A.room_id, challenge)
    outsider_public = outsider.public_key().public_bytes_raw()
    with pytest.raises(JoinProofError):
        verify_join_proof(outsider_public, ROOM_A.room_id, challenge, signature)
    # With its own room id it verifies: that is another room.
    verify_join_proof(
        outsider_public,
        room_id_for(outsider_public),
        challenge,
        sign_join_proof(outsider, room_id_for(outsider_public), challenge),
    )
    assert room_id_for(outsider_public) != ROOM_A.room_id


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        pytest.param(bytes(31), bytes(64), id="short-key"),
        pytest.param(bytes(33), bytes(64), id="long-key"),
        pytest.param(bytes([0xFF]) * 32, bytes(64), id="key-not-a-point"),
        pytest.param(ROOM_A.public_key, bytes(63), id="short-signature"),
        pytest.param(ROOM_A.public_key, b"", id="no-signature"),
        pytest.param(ROOM_A.public_key, bytes(65), id="long-signature"),
    ],
)
def test_bad_peer_input_raises_only_join_proof_error(public_key: bytes, signature: bytes) -> None:
    """Whatever a client sends, the relay sees one documented error."""
    with pytest.raises(JoinProofError) as caught:
        verify_join_proof(public_key, room_id_for(public_key), bytes(32), signature)
    assert isinstance(caught.value, PeerError)


@CRYPTO
@given(st.binary(max_size=40), st.binary(max_size=80))
def test_any_public_key_and_signature_raise_only_join_proof_error(
    public_key: bytes, signature: bytes
) -> None:
    with pytest.raises(JoinProofError):
        verify_join_proof(public_key, room_id_for(public_key), bytes(32), signature)


@pytest.mark.parametrize(
    ("room_id", "challenge"),
    [
        pytest.param(bytes(31), bytes(32), id="short-room-id"),
        pytest.param(bytes(32), bytes(31), id="short-challenge"),
        pytest.param(bytes(32), bytes(33), id="long-challenge"),
    ],
)
def test_signing_wrong_sizes_is_a_usage_error(room_id: bytes, challenge: bytes) -> None:
    with pytest.raises(UsageError):
        sign_join_proof(ROOM_A.signing_key, room_id, challenge)


def test_room_id_is_the_hash_of_the_public_key() -> None:
    assert room_id_for(ROOM_A.public_key) == ROOM_A.room_id
    assert len(ROOM_A.room_id) == 32
    assert room_id_for(ROOM_B.public_key) != ROOM_A.room_id


def test_a_proof_under_a_small_order_room_key_fails() -> None:
    """The identity point as a room key: S B = R + h * identity holds for R = B and S = 1,
    under any verification equation; the subgroup rule (PROTOCOL.md 5.6) refuses it."""
    identity = (1).to_bytes(32, "little")
    base_point = bytes.fromhex("58" + "66" * 31)
    forged = base_point + (1).to_bytes(32, "little")
    with pytest.raises(JoinProofError):
        verify_join_proof(identity, room_id_for(identity), bytes(32), forged)

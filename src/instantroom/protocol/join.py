"""The join proof: how a client shows the relay it holds a room's key.

    client -> relay   JOIN       room id, room public key, expiry
    relay  -> client  CHALLENGE  room id, 32 fresh random bytes
    client -> relay   PROOF      room id, Ed25519 signature by the room signing key over
                                 "instantroom/v1/join-proof" || room id || challenge

The relay checks that the room id is the hash of the public key, then the signature.
A challenge is made for one join on one connection and used once, so a proof seen
elsewhere is worthless. This module is all of the crypto the relay runs; it holds no
secret and derives nothing.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_core_ed25519_is_valid_point

from .errors import JoinProofError, UsageError

LABEL_ROOM_ID = b"instantroom/v1/room-id"
LABEL_JOIN_PROOF = b"instantroom/v1/join-proof"
ROOM_ID_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
CHALLENGE_SIZE = 32


def room_id_for(room_public_key: bytes) -> bytes:
    """The room id the relay sees: a hash of the room's public signing key."""
    return hashlib.sha256(LABEL_ROOM_ID + room_public_key).digest()


def _proof_input(room_id: bytes, challenge: bytes) -> bytes:
    if len(room_id) != ROOM_ID_SIZE or len(challenge) != CHALLENGE_SIZE:
        raise UsageError("A room id and a challenge are 32 bytes each.")
    return LABEL_JOIN_PROOF + room_id + challenge


def sign_join_proof(signing_key: Ed25519PrivateKey, room_id: bytes, challenge: bytes) -> bytes:
    """The PROOF signature for ``challenge``, made with the room signing key."""
    return signing_key.sign(_proof_input(room_id, challenge))


def signature_is_good(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` by ``public_key`` over ``data`` is good by the rule of
    PROTOCOL.md 5.6: RFC 8032's strict checks (canonical encodings, S below the group
    order), and the public key and R points of the prime-order subgroup, neither of small
    order nor with a torsion part. Verifiers that multiply by the cofactor (the web
    client's) and those that do not (OpenSSL's, here) then agree on every signature."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    # libsodium's check: canonical, on the curve, in the main subgroup, not of small order.
    if not crypto_core_ed25519_is_valid_point(public_key):
        return False
    if not crypto_core_ed25519_is_valid_point(signature[:32]):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except InvalidSignature:
        return False
    return True


def verify_join_proof(
    room_public_key: bytes, room_id: bytes, challenge: bytes, signature: bytes
) -> None:
    """Return if the proof is good; raise ``JoinProofError`` otherwise."""
    if not hmac.compare_digest(room_id_for(room_public_key), room_id):
        raise JoinProofError("The room id does not belong to this public key.")
    if not signature_is_good(room_public_key, signature, _proof_input(room_id, challenge)):
        raise JoinProofError("The join proof does not verify.")

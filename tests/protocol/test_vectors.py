"""Every published vector, checked against the code. pytest ids are the vector ids."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from instantroom.client.invite import parse_invite
from instantroom.protocol import errors, frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.envelope import Kind, Message, ReplayFilter, open_envelope, seal_envelope
from instantroom.protocol.errors import FrameError, JoinProofError, MiniKeyError, UsageError
from instantroom.protocol.join import room_id_for, sign_join_proof, verify_join_proof
from instantroom.protocol.kdf import DeviceKey, RoomKeys, fingerprint, private_key_bytes
from instantroom.protocol.minikey import (
    BASE58_ALPHABET,
    format_minikey,
    parse_minikey,
    root_secret,
    spell_minikey,
)
from instantroom.protocol.names import canonical_name, mixed_scripts, spoken_list
from instantroom.protocol.roster import Roster

from .corpus import (
    ENVELOPE_OVERHEAD,
    MINIKEY,
    PROTOCOL,
    ROOM_ID_LABEL,
    bucket_for,
    cases,
    hkdf_sha256,
    inner_size,
)

FRAME_TYPES: dict[str, type[Any]] = {
    name: getattr(frames, name)
    for name in (
        "Join", "Challenge", "Proof", "Joined", "Leave", "Publish", "Deliver", "Ack",
        "Presence", "Ping", "Pong", "Error",
    )
}  # fmt: skip


def test_every_section_is_checked() -> None:
    checked = {
        "about", "derivations", "fingerprints", "devices", "minikey_parsing", "envelopes",
        "envelope_failures", "join_proofs", "frames", "frame_failures", "canonical_names",
        "invites", "replay_filter", "presence",
    }  # fmt: skip
    assert set(PROTOCOL) == checked, "a new vector section needs its tests here"
    assert all(PROTOCOL[section] for section in checked - {"about"})


# vectors/minikey.json: the published Bitcoin example


def test_minikey_alphabet_is_base58() -> None:
    assert MINIKEY["base58_alphabet"] == BASE58_ALPHABET


@pytest.mark.parametrize("entry", MINIKEY["valid"], ids=lambda e: e["minikey"])
def test_minikey_valid(entry: dict[str, Any]) -> None:
    key = entry["minikey"]
    assert parse_minikey(key) == key
    assert root_secret(key).hex() == entry["sha256"]
    assert hashlib.sha256(key.encode()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("entry", MINIKEY["invalid"], ids=lambda e: e["why"])
def test_minikey_invalid(entry: dict[str, Any]) -> None:
    with pytest.raises(MiniKeyError):
        parse_minikey(entry["minikey"])


# protocol.json


@pytest.mark.parametrize("entry", cases("derivations", "minikey"))
def test_derivation(entry: dict[str, Any]) -> None:
    key = entry["minikey"]
    assert parse_minikey(key) == key
    assert parse_minikey(entry["grouped"]) == key
    assert format_minikey(key) == entry["grouped"]
    assert spell_minikey(key) == entry["spelled"]
    root = root_secret(key)
    assert root.hex() == entry["root_secret"]
    room = RoomKeys.from_minikey(key)
    from_root = RoomKeys.from_root(root)
    assert (from_root.message_key, from_root.room_id) == (room.message_key, room.room_id)
    assert room.message_key.hex() == entry["message_key"]
    assert private_key_bytes(room.signing_key).hex() == entry["room_signing_seed"]
    assert room.public_key.hex() == entry["room_public_key"]
    assert room.room_id.hex() == entry["room_id"]
    # The same values computed from the documented formulas, not by the code under test.
    assert hashlib.sha256(key.encode("ascii")).hexdigest() == entry["root_secret"]
    assert hkdf_sha256(root, b"instantroom/v1/message-key").hex() == entry["message_key"]
    assert hkdf_sha256(root, b"instantroom/v1/room-signing-key").hex() == entry["room_signing_seed"]
    public_key = bytes.fromhex(entry["room_public_key"])
    assert hashlib.sha256(ROOM_ID_LABEL + public_key).hexdigest() == entry["room_id"]
    assert room_id_for(public_key).hex() == entry["room_id"]


@pytest.mark.parametrize("entry", cases("fingerprints", "fingerprint"))
def test_fingerprint(entry: dict[str, Any]) -> None:
    assert fingerprint(bytes.fromhex(entry["public_key"])) == entry["fingerprint"]


@pytest.mark.parametrize("entry", cases("devices", "public_key"))
def test_device(entry: dict[str, Any]) -> None:
    device = DeviceKey.from_private_bytes(bytes.fromhex(entry["seed"]))
    assert device.public_key.hex() == entry["public_key"]
    assert private_key_bytes(device.private_key).hex() == entry["seed"]


@pytest.mark.parametrize("entry", cases("minikey_parsing"))
def test_minikey_parsing(entry: dict[str, Any]) -> None:
    if entry["error"] is None:
        key = entry["key"]
        assert parse_minikey(entry["input"]) == key
        # What is left once the separators go: the key's characters, in order.
        assert "".join(char for char in entry["input"] if char in BASE58_ALPHABET) == key
        return
    assert entry["key"] is None
    expected = getattr(errors, entry["error"])
    with pytest.raises(MiniKeyError) as caught:
        parse_minikey(entry["input"])
    assert type(caught.value) is expected


def _message(fields: dict[str, Any]) -> Message:
    return Message(
        message_id=bytes.fromhex(fields["message_id"]),
        timestamp_ms=fields["timestamp_ms"],
        kind=fields["kind"],
        sender_key=bytes.fromhex(fields["sender_public_key"]),
        sender_name=fields["sender_name"],
        body=bytes.fromhex(fields["body"]),
    )


@pytest.mark.parametrize("entry", cases("envelopes"))
def test_envelope_seal(entry: dict[str, Any]) -> None:
    room = RoomKeys.from_minikey(entry["minikey"])
    device = DeviceKey.from_private_bytes(bytes.fromhex(entry["device_seed"]))
    message = _message(entry["message"])
    assert device.public_key == message.sender_key
    sealed = seal_envelope(room, device, message, bytes.fromhex(entry["nonce"]))
    assert sealed.hex() == entry["envelope"]


@pytest.mark.parametrize("entry", cases("envelopes"))
def test_envelope_open(entry: dict[str, Any]) -> None:
    room = RoomKeys.from_minikey(entry["minikey"])
    assert open_envelope(room, bytes.fromhex(entry["envelope"])) == _message(entry["message"])


@pytest.mark.parametrize("entry", cases("envelopes"))
def test_envelope_padded_size(entry: dict[str, Any]) -> None:
    envelope = bytes.fromhex(entry["envelope"])
    assert len(envelope) - ENVELOPE_OVERHEAD == entry["padded_size"]
    message = _message(entry["message"])
    assert entry["padded_size"] == bucket_for(inner_size(message.sender_name, message.body))


@pytest.mark.parametrize("entry", cases("envelope_failures"))
def test_envelope_failure(entry: dict[str, Any]) -> None:
    room = RoomKeys.from_minikey(entry["minikey"])
    expected = getattr(errors, entry["error"])
    with pytest.raises(errors.EnvelopeError) as caught:
        open_envelope(room, bytes.fromhex(entry["envelope"]))
    assert type(caught.value) is expected


@pytest.mark.parametrize("entry", cases("join_proofs"))
def test_join_proof(entry: dict[str, Any]) -> None:
    room = RoomKeys.from_minikey(entry["minikey"])
    room_id = bytes.fromhex(entry["room_id"])
    public_key = bytes.fromhex(entry["room_public_key"])
    challenge = bytes.fromhex(entry["challenge"])
    signature = bytes.fromhex(entry["signature"])
    assert room.room_id == room_id
    assert room.public_key == public_key
    assert sign_join_proof(room.signing_key, room_id, challenge) == signature
    verify_join_proof(public_key, room_id, challenge, signature)

    other = next(e for e in PROTOCOL["join_proofs"] if e["id"] != entry["id"])
    with pytest.raises(JoinProofError):
        verify_join_proof(public_key, bytes.fromhex(other["room_id"]), challenge, signature)
    with pytest.raises(JoinProofError):
        verify_join_proof(
            bytes.fromhex(other["room_public_key"]),
            bytes.fromhex(other["room_id"]),
            challenge,
            signature,
        )
    changed = bytes([challenge[0] ^ 0x01]) + challenge[1:]
    with pytest.raises(JoinProofError):
        verify_join_proof(public_key, room_id, changed, signature)
    with pytest.raises(JoinProofError):
        verify_join_proof(public_key, room_id, bytes.fromhex(other["challenge"]), signature)
    flipped = signature[:-1] + bytes([signature[-1] ^ 0x80])
    with pytest.raises(JoinProofError):
        verify_join_proof(public_key, room_id, challenge, flipped)


def _frame(entry: dict[str, Any]) -> frames.Frame:
    cls = FRAME_TYPES[entry["type"]]
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    assert set(kinds) == set(entry["fields"])
    values = {
        name: bytes.fromhex(value) if kinds[name] == "bytes" else value
        for name, value in entry["fields"].items()
    }
    frame: frames.Frame = cls(**values)
    return frame


@pytest.mark.parametrize("entry", cases("frames"))
def test_frame_encode(entry: dict[str, Any]) -> None:
    assert frames.encode_frame(_frame(entry)).hex() == entry["encoded"]


@pytest.mark.parametrize("entry", cases("frames"))
def test_frame_decode(entry: dict[str, Any]) -> None:
    decoded = frames.decode_frame(bytes.fromhex(entry["encoded"]))
    assert type(decoded).__name__ == entry["type"]
    assert decoded == _frame(entry)


def test_publish_vector_becomes_deliver_vector() -> None:
    encoded = {entry["id"]: bytes.fromhex(entry["encoded"]) for entry in PROTOCOL["frames"]}
    assert frames.deliver_from_publish(encoded["publish"]) == encoded["deliver"]


@pytest.mark.parametrize("entry", cases("frame_failures"))
def test_frame_failure(entry: dict[str, Any]) -> None:
    if entry["encoded"] is None:
        first = bytes.fromhex(entry["first_byte"])
        data = first + bytes(entry["length"] - len(first))
    else:
        data = bytes.fromhex(entry["encoded"])
    assert len(data) == entry["length"]
    assert data[:1].hex() == entry["first_byte"]
    with pytest.raises(FrameError) as caught:
        frames.decode_frame(data)
    assert caught.value.code == ErrorCode[entry["error_code"]]


@pytest.mark.parametrize("entry", cases("invites"))
def test_invite(entry: dict[str, Any]) -> None:
    if "error" not in entry:
        assert parse_invite(entry["text"]) == (entry["server"], entry["key"])
        return
    wanted = UsageError if entry["error"] == "BadRelayAddress" else getattr(errors, entry["error"])
    with pytest.raises(wanted) as refused:
        parse_invite(entry["text"])
    assert type(refused.value) is wanted


@pytest.mark.parametrize("entry", cases("canonical_names"))
def test_canonical_name(entry: dict[str, Any]) -> None:
    name = entry["name"]
    assert " ".join(f"{ord(char):04X}" for char in name) == entry["code_points"]
    assert canonical_name(name) == entry["canonical"]
    # A canonical form is its own canonical form.
    assert canonical_name(entry["canonical"]) == entry["canonical"]
    assert mixed_scripts(name) == entry["mixed_scripts"]


@pytest.mark.parametrize("entry", cases("replay_filter"))
def test_replay_filter(entry: dict[str, Any]) -> None:
    replay = ReplayFilter(
        max_age_ms=entry["max_age_ms"],
        max_future_ms=entry["max_future_ms"],
        capacity=entry["capacity"],
    )
    for number, step in enumerate(entry["steps"]):
        if step["op"] == "raise_floor":
            replay.raise_floor(step["floor"])
        elif step["op"] == "remember":
            replay.remember(bytes.fromhex(step["id"]), step["t"], step["now"])
        else:
            message = Message(bytes.fromhex(step["id"]), step["t"], Kind.TEXT, bytes(32), "", b"")
            try:
                (replay.check if step["op"] == "check" else replay.accept)(message, step["now"])
                outcome = "accepted"
            except (errors.StaleMessage, errors.ReplayedMessage) as exc:
                outcome = type(exc).__name__
            assert outcome == step["result"], f"step {number}"


def _kind(named: str | int) -> int:
    """A kind as the vectors write it: its name, or its number for one v1 does not name."""
    if isinstance(named, int):
        assert named not in set(Kind), "a kind v1 names is written by its name"
        return named
    return Kind[named]


@pytest.mark.parametrize("entry", cases("presence"))
def test_presence(entry: dict[str, Any]) -> None:
    roster = Roster(bytes.fromhex(entry["own_key"]), announce=entry["announce"])
    for number, step in enumerate(entry["steps"]):
        match step["op"]:
            case "joined":
                roster.joined(step["count"], step["now"])
            case "count":
                roster.count_changed(step["count"], step["now"])
            case "heard":
                roster.heard(
                    _kind(step["kind"]),
                    bytes.fromhex(step["from"]),
                    step["name"],
                    step["key_changed"],
                    step["now"],
                    step["sent"],
                )
            case "tick":
                roster.tick(step["now"])
            case "leaving":
                roster.leaving()
            case other:
                pytest.fail(f"step {number}: no op {other!r}")
        assert [kind.name for kind in roster.take_sends()] == step["sends"], f"step {number}"
        members = [
            {"key": m.device_key.hex(), "name": m.name, "key_changed": m.key_changed}
            for m in roster.members
        ]
        assert members == step["members"], f"step {number}"
        assert [m.fingerprint for m in roster.members] == [
            fingerprint(m.device_key) for m in roster.members
        ]


def test_presence_vectors_cover_what_protocol_md_lists() -> None:
    """Section 13.2: every op, every kind (and one v1 does not name), both kinds of
    roster, and each of what a roster sends."""
    steps = [step for entry in PROTOCOL["presence"] for step in entry["steps"]]
    assert {step["op"] for step in steps} == {"joined", "count", "heard", "tick", "leaving"}
    heard = {step["kind"] for step in steps if step["op"] == "heard"}
    assert {"JOIN", "HERE", "LEAVE", "TEXT", "TYPING"} <= heard
    assert any(isinstance(kind, int) for kind in heard)
    assert {entry["announce"] for entry in PROTOCOL["presence"]} == {True, False}
    assert {kind for step in steps for kind in step["sends"]} == {"JOIN", "HERE", "LEAVE"}
    own_heard = [
        step for entry in PROTOCOL["presence"] for step in entry["steps"]
        if step["op"] == "heard" and step["from"] == entry["own_key"]
    ]  # fmt: skip
    assert own_heard
    assert any(m["key_changed"] for step in steps for m in step["members"])


def test_names_that_look_alike_share_a_canonical_form() -> None:
    """The look-alikes PROTOCOL.md 4.4 is for, named here rather than read from the code."""
    by_id = {entry["id"]: entry["canonical"] for entry in PROTOCOL["canonical_names"]}
    alice = [
        "plain", "capital", "all-capitals", "trailing-space", "no-break-space",
        "zero-width-space-inside", "zero-width-joiner-inside", "soft-hyphen-inside",
        "byte-order-mark-first", "bidi-override-after", "fullwidth",
    ]  # fmt: skip
    assert {by_id[key] for key in alice} == {"alice"}
    assert by_id["decomposed-diaeresis"] == by_id["composed-diaeresis"] == "zo\u00eb"
    assert by_id["greek-final-sigma"].endswith("\u03c2")  # final sigma
    assert by_id["cyrillic-a-not-latin"] != "alice"  # homoglyphs across scripts: not caught
    assert by_id["empty"] == by_id["only-invisible"] == ""


def test_names_that_mix_look_alike_scripts_are_flagged_and_one_script_is_not() -> None:
    """What PROTOCOL.md 4.4's mixed-script check is for, named here."""
    mixed = {entry["id"]: entry["mixed_scripts"] for entry in PROTOCOL["canonical_names"]}
    assert mixed["cyrillic-a-not-latin"] == ["Latin", "Cyrillic"]
    assert mixed["greek-alpha-in-latin"] == ["Latin", "Greek"]
    assert mixed["three-scripts"] == ["Latin", "Greek", "Cyrillic"]
    assert spoken_list(mixed["three-scripts"]) == "Latin, Greek and Cyrillic"
    assert spoken_list(mixed["cyrillic-a-not-latin"]) == "Latin and Cyrillic"
    for alone in ("plain", "all-cyrillic", "all-cyrillic-looking-latin", "all-greek",
                  "latin-with-digits-and-emoji", "latin-and-han", "shared-mark-with-cyrillic",
                  "greek-final-sigma", "unassigned-after-cyrillic", "empty"):  # fmt: skip
        assert mixed[alone] == [], alone

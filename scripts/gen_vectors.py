"""Make vectors/protocol.json from fixed inputs; with --check, fail if it has drifted.

Every value in the file is computed here by the protocol core from the inputs written
below, so the file changes exactly when the protocol does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_core_ed25519_add, crypto_scalarmult_ed25519_base_noclamp

from instantroom.client.invite import parse_invite
from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.envelope import (
    Kind,
    Message,
    ReplayFilter,
    _signed_part,
    pad,
    seal_envelope,
)
from instantroom.protocol.errors import (
    FrameError,
    MiniKeyError,
    ReplayedMessage,
    StaleMessage,
    UsageError,
)
from instantroom.protocol.join import sign_join_proof
from instantroom.protocol.kdf import DeviceKey, RoomKeys, fingerprint, private_key_bytes
from instantroom.protocol.minikey import (
    BASE58_ALPHABET,
    format_minikey,
    parse_minikey,
    root_secret,
    spell_minikey,
)
from instantroom.protocol.names import canonical_name, mixed_scripts
from instantroom.protocol.roster import (
    ANSWER_GAP_MS,
    DOUBT_CALL_EVERY_MS,
    MAX_HEARD_AGE_MS,
    ROLL_CALL_EVERY_MS,
    ROLL_CALL_WINDOW_MS,
    Roster,
    answer_delay_ms,
)

OUT = Path(__file__).resolve().parent.parent / "vectors" / "protocol.json"
KEY_A = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"  # the published example of the format


def fixed_bytes(label: str, size: int) -> bytes:
    """Deterministic test input: SHA-256 counter blocks over a label."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def fixed_minikey(seed: int) -> str:
    rng = random.Random(seed)  # fixed inputs for vectors, not for real keys
    while True:
        candidate = "S" + "".join(rng.choice(BASE58_ALPHABET) for _ in range(29))
        if hashlib.sha256(candidate.encode() + b"?").digest()[0] == 0:
            return candidate


KEY_B = fixed_minikey(2)
DEVICE_A = DeviceKey.from_private_bytes(fixed_bytes("device-a", 32))
DEVICE_B = DeviceKey.from_private_bytes(fixed_bytes("device-b", 32))


def derivation(key: str) -> dict[str, Any]:
    room = RoomKeys.from_minikey(key)
    return {
        "minikey": key,
        "grouped": format_minikey(key),
        "spelled": spell_minikey(key),
        "root_secret": root_secret(key).hex(),
        "message_key": room.message_key.hex(),
        "room_signing_seed": private_key_bytes(room.signing_key).hex(),
        "room_public_key": room.public_key.hex(),
        "room_id": room.room_id.hex(),
    }


def message_fields(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.message_id.hex(),
        "timestamp_ms": message.timestamp_ms,
        "kind": message.kind,
        "sender_public_key": message.sender_key.hex(),
        "sender_name": message.sender_name,
        "body": message.body.hex(),
    }


def envelopes() -> list[dict[str, Any]]:
    cases = [
        ("text-short", KEY_A, DEVICE_A, "alice", Kind.TEXT, b"hello, room"),
        ("text-unicode-name", KEY_A, DEVICE_B, "Zoë 🦊", Kind.TEXT, "ça va ?".encode()),
        ("join-empty-body", KEY_B, DEVICE_A, "alice", Kind.JOIN, b""),
        ("text-second-bucket", KEY_B, DEVICE_B, "bob", Kind.TEXT, b"x" * 300),
        # head 58 + name 1 + body length 4 + body 128 + signature 64 = 255: with the
        # 0x80 byte it fills 256 exactly; one more byte of body spills into 1024.
        ("text-fits-first-bucket", KEY_A, DEVICE_A, "a", Kind.TEXT, b"y" * 128),
        ("text-spills-to-second-bucket", KEY_A, DEVICE_A, "a", Kind.TEXT, b"y" * 129),
        # A leading U+FEFF is a character like any other: decoders must keep it.
        ("text-leading-bom", KEY_B, DEVICE_A, "\ufeffalice", Kind.TEXT, "\ufeffhi".encode()),
    ]
    out = []
    for number, (name, key, device, sender, kind, body) in enumerate(cases):
        room = RoomKeys.from_minikey(key)
        message = Message(
            fixed_bytes(f"message-id-{number}", 16),
            1_790_000_000_000 + number,
            kind,
            device.public_key,
            sender,
            body,
        )
        nonce = fixed_bytes(f"nonce-{number}", 12)
        envelope = seal_envelope(room, device, message, nonce)
        out.append(
            {
                "id": name,
                "minikey": key,
                "device_seed": private_key_bytes(device.private_key).hex(),
                "message": message_fields(message),
                "nonce": nonce.hex(),
                "padded_size": len(envelope) - 1 - 12 - 16,
                "envelope": envelope.hex(),
            }
        )
    return out


def non_canonical_signature(seed: bytes, message: bytes) -> bytes:
    """An Ed25519 "signature" of ``message`` by ``seed`` whose R is the identity point
    encoded non-canonically (y = 1 + p) and S = k * a. The group equation holds, so a
    ZIP-215 verifier accepts it; RFC 8032's strict checks (as in cryptography) refuse it.
    A member could otherwise post what only some clients show."""
    p = 2**255 - 19
    order = 2**252 + 27742317777372353535851937790883648493
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little")
    scalar = (scalar & ((1 << 254) - 8)) | (1 << 254)
    public_key = DeviceKey.from_private_bytes(seed).public_key
    r = (1 + p).to_bytes(32, "little")
    k = int.from_bytes(hashlib.sha512(r + public_key + message).digest(), "little") % order
    return r + (k * scalar % order).to_bytes(32, "little")


ORDER = 2**252 + 27742317777372353535851937790883648493
FIELD = 2**255 - 19
# A point of order 8 (one of the small-order points libsodium refuses), the base point,
# and the identity point written canonically and with y = p + 1.
ORDER_8_POINT = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
BASE_POINT = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")
IDENTITY = (1).to_bytes(32, "little")
IDENTITY_NON_CANONICAL = (FIELD + 1).to_bytes(32, "little")


def _scalar(value: int) -> bytes:
    return (value % ORDER).to_bytes(32, "little")


def _secret_scalar(seed: bytes) -> int:
    digest = hashlib.sha512(seed).digest()
    return (int.from_bytes(digest[:32], "little") & ((1 << 254) - 8)) | (1 << 254)


def _challenge(r_point: bytes, public_key: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r_point + public_key + data).digest(), "little") % ORDER


def off_group_signatures() -> list[tuple[str, bytes, Any]]:
    """Signatures whose public key or R lies outside the prime-order subgroup, each of
    which a verifier that multiplies by the cofactor and one that does not could judge
    differently (PROTOCOL.md 5.6): (id, sender key, a function of the signed data giving
    the signature)."""
    seed = fixed_bytes("device-a", 32)
    a = _secret_scalar(seed)
    public_key = DeviceKey.from_private_bytes(seed).public_key
    mixed_key = crypto_core_ed25519_add(public_key, ORDER_8_POINT)
    r = int.from_bytes(fixed_bytes("off-group-r", 32), "little") % ORDER

    def identity_key(data: bytes) -> bytes:
        return BASE_POINT + _scalar(1)  # S B = R + h * identity, with or without cofactor

    def torsion_in_r(data: bytes) -> bytes:
        r_base = crypto_scalarmult_ed25519_base_noclamp(_scalar(r))
        r_point = crypto_core_ed25519_add(r_base, ORDER_8_POINT)
        return r_point + _scalar(r + _challenge(r_point, public_key, data) * a)

    def mixed_order_key(h_divisible_by_8: bool) -> Any:
        def sign(data: bytes) -> bytes:
            for tweak in range(1000):  # an R whose challenge is (or is not) a multiple of 8
                r_point = crypto_scalarmult_ed25519_base_noclamp(_scalar(r + tweak))
                h = _challenge(r_point, mixed_key, data)
                if (h % 8 == 0) == h_divisible_by_8:
                    return r_point + _scalar(r + tweak + h * a)
            raise AssertionError("no R found")

        return sign

    return [
        ("small-order-sender-key", IDENTITY, identity_key),
        ("non-canonical-sender-key", IDENTITY_NON_CANONICAL, identity_key),
        ("torsion-in-r", public_key, torsion_in_r),
        ("mixed-order-sender-key", mixed_key, mixed_order_key(False)),
        ("mixed-order-sender-key-h-multiple-of-8", mixed_key, mixed_order_key(True)),
    ]


def envelope_failures() -> list[dict[str, Any]]:
    room = RoomKeys.from_minikey(KEY_A)
    message = Message(fixed_bytes("bad-id", 16), 1_790_000_000_000, Kind.TEXT,
                      DEVICE_A.public_key, "alice", b"I am alice")  # fmt: skip
    nonce = fixed_bytes("bad-nonce", 12)
    good = seal_envelope(room, DEVICE_A, message, nonce)
    aesgcm = AESGCM(room.message_key)
    aad = b"\x01" + room.room_id

    def flipped(index: int) -> str:
        data = bytearray(good)
        data[index] ^= 0x01
        return bytes(data).hex()

    signed = _signed_part(message)
    signature = DEVICE_A.private_key.sign(
        b"instantroom/v1/message-signature" + room.room_id + signed
    )
    relabelled = signed.replace(DEVICE_A.public_key, DEVICE_B.public_key, 1)
    relabelled_envelope = b"\x01" + nonce + aesgcm.encrypt(nonce, pad(relabelled + signature), aad)
    lax_signature = non_canonical_signature(
        fixed_bytes("device-a", 32), b"instantroom/v1/message-signature" + room.room_id + signed
    )
    lax_envelope = b"\x01" + nonce + aesgcm.encrypt(nonce, pad(signed + lax_signature), aad)
    bad_padding = (signed + signature).ljust(256, b"\x00")
    bad_padding_envelope = b"\x01" + nonce + aesgcm.encrypt(nonce, bad_padding, aad)
    other_room = RoomKeys.from_minikey(KEY_B)
    off_group = []
    for case, sender_key, sign in off_group_signatures():
        forged = Message(message.message_id, message.timestamp_ms, message.kind, sender_key,
                         message.sender_name, message.body)  # fmt: skip
        forged_signed = _signed_part(forged)
        forged_signature = sign(b"instantroom/v1/message-signature" + room.room_id + forged_signed)
        sealed = b"\x01" + nonce + aesgcm.encrypt(nonce, pad(forged_signed + forged_signature), aad)
        off_group.append({"id": case, "minikey": KEY_A, "envelope": sealed.hex(),
                          "error": "BadSignature"})  # fmt: skip
    return [
        {"id": "flipped-version", "minikey": KEY_A, "envelope": flipped(0),
         "error": "DecryptionFailed"},
        {"id": "flipped-nonce", "minikey": KEY_A, "envelope": flipped(5),
         "error": "DecryptionFailed"},
        {"id": "flipped-ciphertext", "minikey": KEY_A, "envelope": flipped(40),
         "error": "DecryptionFailed"},
        {"id": "flipped-tag", "minikey": KEY_A, "envelope": flipped(len(good) - 1),
         "error": "DecryptionFailed"},
        {"id": "other-room", "minikey": KEY_B, "envelope": good.hex(),
         "error": "DecryptionFailed"},
        {"id": "relabelled-sender", "minikey": KEY_A, "envelope": relabelled_envelope.hex(),
         "error": "BadSignature"},
        {"id": "non-canonical-signature", "minikey": KEY_A, "envelope": lax_envelope.hex(),
         "error": "BadSignature"},
        {"id": "bad-padding", "minikey": KEY_A, "envelope": bad_padding_envelope.hex(),
         "error": "MalformedEnvelope"},
        {"id": "truncated", "minikey": KEY_A, "envelope": good[:100].hex(),
         "error": "MalformedEnvelope"},
        {"id": "wrong-room-id-in-aad", "minikey": KEY_A,
         "envelope": (b"\x01" + nonce + aesgcm.encrypt(
             nonce, pad(signed + signature), b"\x01" + other_room.room_id)).hex(),
         "error": "DecryptionFailed"},
        *off_group,
    ]  # fmt: skip


def join_proofs() -> list[dict[str, Any]]:
    out = []
    for number, key in enumerate([KEY_A, KEY_B]):
        room = RoomKeys.from_minikey(key)
        challenge = fixed_bytes(f"challenge-{number}", 32)
        out.append(
            {
                "id": f"proof-{number}",
                "minikey": key,
                "room_id": room.room_id.hex(),
                "room_public_key": room.public_key.hex(),
                "challenge": challenge.hex(),
                "signature": sign_join_proof(room.signing_key, room.room_id, challenge).hex(),
            }
        )
    return out


def frame_cases() -> list[dict[str, Any]]:
    room = RoomKeys.from_minikey(KEY_A)
    rid = room.room_id
    envelope = bytes.fromhex(envelopes()[0]["envelope"])
    cases: list[tuple[str, frames.Frame]] = [
        ("join", frames.Join(rid, room.public_key, 1_790_086_400_000)),
        ("join-expiry-unknown", frames.Join(rid, room.public_key, 0)),
        ("challenge", frames.Challenge(rid, fixed_bytes("challenge-0", 32))),
        ("proof", frames.Proof(rid, fixed_bytes("signature", 64))),
        ("joined", frames.Joined(rid, 1_790_086_400_000, 3)),
        ("leave", frames.Leave(rid)),
        ("publish", frames.Publish(7, rid, envelope)),
        ("deliver", frames.Deliver(rid, envelope)),
        ("ack", frames.Ack(7)),
        ("presence", frames.Presence(rid, 12)),
        ("ping", frames.Ping(0x000F1E2D3C4B5A69)),
        ("pong", frames.Pong(0x000F1E2D3C4B5A69)),
        ("error-room", frames.Error(ErrorCode.ROOM_FULL, 0, rid, "This room is full.")),
        ("error-publish", frames.Error(ErrorCode.RATE_LIMITED, 7, frames.NO_ROOM, "Slow down.")),
        ("error-leading-bom", frames.Error(ErrorCode.RATE_LIMITED, 0, frames.NO_ROOM, "\ufeffhi")),
    ]
    out = []
    for name, frame in cases:
        fields = {
            key: (value.hex() if isinstance(value, bytes) else value)
            for key, value in vars(frame).items()
        }
        out.append({"id": name, "type": type(frame).__name__, "fields": fields,
                    "encoded": frames.encode_frame(frame).hex()})  # fmt: skip
    return out


def frame_failures() -> list[dict[str, Any]]:
    inputs = {
        "empty": b"",
        "unknown-type": b"\x99" + bytes(8),
        "join-short": b"\x01" + bytes(40),
        "join-long": b"\x01" + bytes(73),
        "publish-no-envelope": b"\x10" + bytes(36),
        "deliver-no-envelope": b"\x11" + bytes(32),
        "error-bad-utf8": b"\x7f" + bytes(38) + b"\xff",
        "ping-short": b"\x20\x00",
        "too-large": b"\x10" + bytes(frames.MAX_FRAME_SIZE),
        "join-expiry-beyond-2-53": b"\x01" + bytes(64) + (2**53).to_bytes(8, "big"),
        "joined-expiry-beyond-2-53": b"\x04" + bytes(32) + b"\xff" * 8 + bytes(4),
    }
    out = []
    for name, data in inputs.items():
        try:
            frames.decode_frame(data)
        except FrameError as exc:
            code = ErrorCode(exc.code).name
        else:
            raise AssertionError(f"{name} decoded")
        shown = data.hex() if len(data) < 1000 else None
        out.append({"id": name, "encoded": shown, "length": len(data), "first_byte": data[:1].hex(),
                    "error_code": code})  # fmt: skip
    return out


def minikey_errors() -> list[dict[str, Any]]:
    cases = {
        "typo": "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRz",
        "too-short": "S6c56bnXQiBjk9mqSYE7ykVQ7NzrR",
        "zero": "S0c56bnXQiBjk9mqSYE7ykVQ7NzrRy",
        "wrong-prefix": "T6c56bnXQiBjk9mqSYE7ykVQ7NzrRy",
        "grouped-ok": "S6c56 bnXQi-Bjk9m qSYE7 ykVQ7 NzrRy ",
        "other-separators": "\tS6c56_bnXQi.Bjk9m\u00a0qSYE7\u2013ykVQ7\u2014NzrRy\n",
        "thin-and-zero-width-spaces": "S6c56\u2009bnXQi\u202fBjk9m\u200bqSYE7 ykVQ7 NzrRy",
        "hyphens-and-invisible-separators": (
            "\ufeffS6c56\u00adbnXQi\u2010Bjk9m\u2011qSYE7\u2060ykVQ7 NzrRy"
        ),
        # Beyond printable ASCII comes first: named, not counted in a wrong length.
        "invisible-extra": "S6c56bnXQi\u200cBjk9mqSYE7ykVQ7NzrRy",
        "look-alike": "S6\u044156bnXQiBjk9mqSYE7ykVQ7NzrRy",
        "look-alike-and-short": "S6\u044156bnXQiBjk9mqSYE7ykVQ7NzrR",
        # All small after the S, and passing the check (one in 256 does): typed in one case.
        "one-case": "S6c56bnxqibjk9mqsye7ykvq7n113c",
    }
    out = []
    for name, text in cases.items():
        try:
            parsed: str | None = parse_minikey(text)
            error = None
        except Exception as exc:
            parsed, error = None, type(exc).__name__
        out.append({"id": name, "input": text, "key": parsed, "error": error})
    return out


# Names as a sender may write them, and the canonical form a receiver compares them in
# (PROTOCOL.md 4.4). Only characters assigned by Unicode 14 (Python 3.11's tables), so
# that every implementation's tables agree on them.
NAMES = {
    "plain": "alice",
    "capital": "Alice",
    "all-capitals": "ALICE",
    "trailing-space": "alice ",
    "leading-and-inner-spaces": "  alice   smith  ",
    "no-break-space": "alice\u00a0",
    "tab-and-newline": "alice\tsmith\n",
    "line-separator": "alice\u2028smith",
    "ideographic-space": "alice\u3000smith",
    "zero-width-space-inside": "a\u200blice",
    "zero-width-joiner-inside": "al\u200dice",
    "soft-hyphen-inside": "al\u00adice",
    "byte-order-mark-first": "\ufeffalice",
    "bidi-override-after": "alice\u202e",
    # Shown reversed, this reads "alice"; the canonical form does not see that (the
    # display layer shows bidi controls as escapes).
    "bidi-override-before": "\u202eecila",
    "format-between-spaces": "alice \u200b smith",
    "control-character": "ali\x07ce",
    "fullwidth": "\uff21\uff4c\uff49\uff43\uff45",
    "kelvin-sign": "\u212aate",
    "ligature": "\ufb01ona",
    "roman-numeral": "Louis \u216b",
    "decomposed-diaeresis": "Zoe\u0308",
    "composed-diaeresis": "Zo\u00eb",
    "greek-final-sigma": "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3",
    "greek-final-sigma-before-space": "\u039f\u0394\u039f\u03a3 \u039a\u0391\u0399",
    "greek-sigma-alone": "\u03a3",
    "dotted-capital-i": "\u0130stanbul",
    "emoji-zwj-sequence": "\U0001f469\u200d\U0001f4bb",
    "cyrillic-a-not-latin": "\u0430lice",
    "greek-alpha-in-latin": "p\u03b1ypal",
    "three-scripts": "\u03a9mega \u0414\u0438\u043c\u0430",
    "all-cyrillic": "\u0414\u043c\u0438\u0442\u0440\u0438\u0439",
    # Reads like the Latin "ape", but written in one script: not flagged.
    "all-cyrillic-looking-latin": "\u0430\u0440\u0435",
    "all-greek": "\u039d\u03af\u03ba\u03b7",
    "latin-with-digits-and-emoji": "bob 2\u00b2 \U0001f600",
    "latin-and-han": "Bob \u738b",
    # U+0485 (a combining mark) belongs to Latin and Cyrillic: it fits either.
    "shared-mark-with-cyrillic": "\u0430\u0485",
    "shared-mark-with-greek": "\u03b1\u0485",
    "fullwidth-latin-and-cyrillic": "\uff41\u0430",
    # U+209F is unassigned (Unicode 17 too): its script is Unknown, and it does not count.
    "unassigned-after-cyrillic": "\u0414\u0438\u043c\u0430\u209f",
    "empty": "",
    "only-invisible": "\u200b\u200d \u00a0",
}


def canonical_names() -> list[dict[str, Any]]:
    # code_points spells the name out, since most of these characters are invisible.
    return [{"id": key, "name": name, "code_points": " ".join(f"{ord(c):04X}" for c in name),
             "canonical": canonical_name(name), "mixed_scripts": mixed_scripts(name)}
            for key, name in NAMES.items()]  # fmt: skip


def invites() -> list[dict[str, Any]]:
    grouped = format_minikey(KEY_A)
    texts = {
        "bare-key": KEY_A,
        "bare-key-grouped-in-white-space": f" \u3000{grouped}\n",
        "hash-and-key": f"#{KEY_A}",
        "link": f"https://chat.example.org/#{KEY_A}",
        "link-in-a-folder-with-index-html": f"https://example.org/chat/index.html#{KEY_A}",
        "no-scheme": f"chat.example.org#{KEY_A}",
        "no-scheme-with-port": f"127.0.0.1:8080/#{KEY_A}",
        "websocket-scheme": f"wss://chat.example.org/#{KEY_A}",
        "written-one-way": f"HTTPS://Chat.Example.ORG:08443/Team/index.html?x=1#{KEY_A}",
        "ipv6": f"http://[::1]:8765#{KEY_A}",
        "byte-order-mark-and-next-line-around": f"\ufeffhttps://chat.example.org/#{KEY_A}\x85",
        "typo-in-the-key": f"https://chat.example.org/#{KEY_A[:-1]}z",
        "key-error-before-address-error": f"ftp://chat.example.org/#{KEY_A[:20]}",
        "scheme-not-a-relays": f"ftp://chat.example.org/#{KEY_A}",
        "no-host": f"https:///chat#{KEY_A}",
        "scheme-relative": f"//chat.example.org/#{KEY_A}",
        "user-and-password": f"https://someone:secret@chat.example.org/#{KEY_A}",
        "empty-user-name": f"https://@chat.example.org/#{KEY_A}",
        "port-out-of-range": f"https://chat.example.org:65536/#{KEY_A}",
        "port-zero": f"https://chat.example.org:0/#{KEY_A}",
        "port-not-a-number": f"https:chat.example.org#{KEY_A}",
        "backslash-in-host": f"https://chat.example.org\\team#{KEY_A}",
        "unclosed-ipv6": f"https://[::1/#{KEY_A}",
        "ipv6-that-is-no-address": f"https://[1.2.3.4]/#{KEY_A}",
        "ipv6-with-ipv4-end": f"https://[::ffff:127.0.0.1]:8443/#{KEY_A}",
        "space-in-path": f"https://chat.example.org/a b/#{KEY_A}",
        "direction-override": f"https://chat.exa\u202eelpmaxe.org/#{KEY_A}",
        "host-in-another-script": f"https://\u0441hat.example.org/#{KEY_A}",
        "separator-around-a-bare-key-is-not-white-space": f"\x1c{KEY_A}",
    }
    cases: list[dict[str, Any]] = []
    for case, text in texts.items():
        try:
            server, key = parse_invite(text)
        except MiniKeyError as exc:
            cases.append({"id": case, "text": text, "error": type(exc).__name__})
        except UsageError:
            cases.append({"id": case, "text": text, "error": "BadRelayAddress"})
        else:
            cases.append({"id": case, "text": text, "server": server, "key": key})
    return cases


def _replay_scenario(
    case: str, steps: list[tuple[Any, ...]], *, capacity: int = 100_000,
    max_age_ms: int = 3_600_000, max_future_ms: int = 300_000,
) -> dict[str, Any]:  # fmt: skip
    """Run ``steps`` through the reference filter and record each outcome. A step is
    ("accept", id, t, now), ("check", id, t, now), ("remember", id, t, now) or
    ("raise_floor", floor); ids are small numbers, written as 16 big-endian bytes (so they
    sort as the numbers do)."""
    replay = ReplayFilter(max_age_ms=max_age_ms, max_future_ms=max_future_ms, capacity=capacity)
    recorded = []
    for op, *args in steps:
        if op == "raise_floor":
            replay.raise_floor(args[0])
            recorded.append({"op": op, "floor": args[0]})
            continue
        number, t, now = args
        message_id = number.to_bytes(16, "big")
        step = {"op": op, "id": message_id.hex(), "t": t, "now": now}
        if op == "remember":
            replay.remember(message_id, t, now)
        else:
            message = Message(message_id, t, Kind.TEXT, bytes(32), "", b"")
            try:
                (replay.check if op == "check" else replay.accept)(message, now)
                step["result"] = "accepted"
            except (StaleMessage, ReplayedMessage) as exc:
                step["result"] = type(exc).__name__
        recorded.append(step)
    return {"id": case, "capacity": capacity, "max_age_ms": max_age_ms,
            "max_future_ms": max_future_ms, "steps": recorded}  # fmt: skip


def replay_filter() -> list[dict[str, Any]]:
    now = 1_790_000_000_000
    return [
        _replay_scenario(
            "window-edges",
            [
                ("accept", 1, now - 3_600_000, now),  # exactly an hour old: in
                ("accept", 2, now - 3_600_001, now),  # a ms older: stale
                ("accept", 3, now + 300_000, now),  # exactly 5 minutes ahead: in
                ("accept", 4, now + 300_001, now),  # a ms further: stale
                ("accept", 1, now - 3_600_000, now),  # again: a replay
            ],
        ),
        _replay_scenario(
            "floor-refuses-at-and-below-keeps-ids",
            [
                ("accept", 1, now, now),
                ("raise_floor", now),
                ("accept", 1, now + 1, now + 1),  # its id is kept: a replay, whatever its time
                ("accept", 2, now, now + 1),  # at the floor: stale
                ("accept", 3, now + 1, now + 1),  # above it: in
            ],
        ),
        _replay_scenario(
            "check-remembers-nothing",
            [
                ("check", 1, now, now),  # would be accepted
                ("check", 1, now, now),  # still: the check remembered nothing
                ("accept", 1, now, now),  # the signature verified: now it is remembered
                ("check", 1, now, now),  # a replay, seen before its signature is checked
                ("check", 2, now - 3_600_001, now),  # stale
                ("check", 3, now + 300_001, now),  # stale
                ("accept", 3, now + 300_000, now),  # the check left nothing behind
            ],
        ),
        _replay_scenario(
            "capacity-forgets-oldest-then-smallest-id",
            [
                ("remember", 4, now - 3, now - 3),
                ("remember", 1, now - 3, now - 3),  # the same time: the smaller id goes first
                ("remember", 5, now + 25, now - 5),  # forgets id 1; the floor rises to now - 3
                ("accept", 4, now + 15, now - 15),  # id 4 still kept: a replay
                ("accept", 1, now - 2, now - 2),  # id 1 forgotten, but a new time above the floor
                ("accept", 6, now - 3, now - 2),  # at the floor: stale
            ],
            capacity=2,
            max_age_ms=10,
            max_future_ms=30,
        ),
    ]


# Members of the presence scenarios: device keys from labels, as the devices above.
PRESENCE_KEYS = {
    who: DeviceKey.from_private_bytes(fixed_bytes(f"presence-{who}", 32)).public_key
    for who in ("bob", "carol", "dave", "erin", "frank", "grace", "heidi")
}


def _kind_name(kind: int) -> str | int:
    return Kind(kind).name if kind in Kind._value2member_map_ else kind


def _presence_scenario(
    case: str,
    own_key: bytes,
    steps: list[tuple[Any, ...]],
    *,
    announce: bool = True,
    clock_goes_back: bool = False,
) -> dict[str, Any]:
    """Run ``steps`` through the reference roster and record, after each, what it sends
    and holds. A step is ("joined", count, now), ("count", count, now), ("heard", kind,
    who, name, key_changed, now[, sent]) with ``who`` a name of PRESENCE_KEYS or a key and
    ``sent`` the message's timestamp (``now`` if not given), ("tick", now) or
    ("leaving",)."""
    roster = Roster(own_key, announce=announce)
    recorded = []
    clock = 0
    for op, *args in steps:
        step: dict[str, Any] = {"op": op}
        if op != "leaving":
            now = args[4] if op == "heard" else args[-1]
            assert clock_goes_back or now >= clock, f"{case}: time goes back"
            clock = now
        if op == "joined":
            roster.joined(*args)
            step |= {"count": args[0], "now": args[1]}
        elif op == "count":
            roster.count_changed(*args)
            step |= {"count": args[0], "now": args[1]}
        elif op == "heard":
            kind, who, name, key_changed, now, *sent_given = args
            sent = sent_given[0] if sent_given else now  # sent as heard, unless said
            key = PRESENCE_KEYS[who] if isinstance(who, str) else who
            roster.heard(kind, key, name, key_changed, now, sent)
            step |= {"kind": _kind_name(kind), "from": key.hex(), "name": name,
                     "key_changed": key_changed, "now": now, "sent": sent}  # fmt: skip
        elif op == "tick":
            roster.tick(args[0])
            step["now"] = args[0]
        else:
            assert op == "leaving"
            roster.leaving()
        step["sends"] = [kind.name for kind in roster.take_sends()]
        step["members"] = [
            {"key": m.device_key.hex(), "name": m.name, "key_changed": m.key_changed}
            for m in roster.members
        ]
        recorded.append(step)
    return {"id": case, "own_key": own_key.hex(), "announce": announce, "steps": recorded}


def presence() -> list[dict[str, Any]]:
    now = 1_790_000_000_000
    own = DEVICE_A.public_key
    window = ROLL_CALL_WINDOW_MS
    gap = ANSWER_GAP_MS
    doubt = DOUBT_CALL_EVERY_MS
    every = ROLL_CALL_EVERY_MS
    max_age = MAX_HEARD_AGE_MS

    def d(who: str) -> int:
        return answer_delay_ms(own, PRESENCE_KEYS[who])

    d0 = answer_delay_ms(own, bytes(32))  # a roll call of our own
    assert min(d0, *(d(who) for who in PRESENCE_KEYS)) > 1, "the ticks below need d > 1"
    j, h, lv, text, typing = Kind.JOIN, Kind.HERE, Kind.LEAVE, Kind.TEXT, Kind.TYPING
    return [
        _presence_scenario(
            "answer-delay-and-coalescing",
            own,
            [
                ("joined", 1, now),  # our own JOIN, at once
                ("heard", j, "bob", "bob", False, now + 6000),  # a HERE in d(bob)
                ("heard", j, "carol", "carol", False, now + 6050),  # the same HERE answers
                ("tick", now + 6000 + d("bob") - 1),
                ("tick", now + 6000 + d("bob")),  # one HERE for both JOINs
                ("tick", now + 9500),  # nothing more
                ("heard", j, "dave", "dave", False, now + 10_000),  # after it: a new HERE,
                ("tick", now + 10_000 + d("dave")),  # not before ANSWER_GAP_MS since ours
                ("tick", now + 6000 + d("bob") + gap - 1),
                ("tick", now + 6000 + d("bob") + gap),
            ],
        ),
        _presence_scenario(
            "own-join-on-each-joined-answers-too",
            own,
            [
                ("joined", 2, now),
                ("heard", h, "bob", "bob", False, now + 300),
                ("heard", j, "carol", "carol", False, now + 10_000),  # a HERE waits...
                ("joined", 3, now + 10_001),  # ...a reconnect: our JOIN answers instead
                ("tick", now + 10_000 + d("carol")),  # so no HERE
                ("heard", h, "carol", "carol", False, now + 10_200),
                ("tick", now + 10_001 + window),  # bob, silent since, is gone
            ],
        ),
        _presence_scenario(
            "a-join-due-with-a-here-goes-alone",
            own,
            [
                ("joined", 3, now),
                ("heard", h, "bob", "bob", False, now + 10),
                ("heard", j, "carol", "carol", False, now + gap + 20),  # a HERE in d(carol)
                ("count", 2, now + gap + 30),  # someone went: our JOIN planned in d0
                ("tick", now + gap + max(20 + d("carol"), 30 + d0)),  # both due: the JOIN only
                ("tick", now + gap + 5000),
            ],
        ),
        _presence_scenario(
            "leave-and-kinds",
            own,
            [
                ("joined", 4, now),
                ("heard", typing, "bob", "bob", False, now + 1),  # any kind adds
                ("heard", 9, "carol", "carol", False, now + 2),  # one v1 does not name too
                ("heard", text, "dave", "dave", False, now + 3),
                ("heard", h, "bob", "Bob", True, now + 4),  # a new name: kept in its place
                ("heard", 255, "bob", "Bob", True, now + 5),  # heard again: no change
                ("heard", lv, "carol", "carol", False, now + 6),  # removed
                ("heard", lv, "erin", "erin", False, now + 7),  # not known: nothing to remove
                ("leaving",),  # our LEAVE; from now on we answer nothing
                ("heard", j, "frank", "frank", False, now + 8),
                ("tick", now + 8 + d("frank")),
                ("tick", now + 9 + window),
                ("joined", 3, now + 20_000),  # let in again: announcing again
            ],
        ),
        _presence_scenario(
            "roll-call-removes-who-did-not-answer",
            own,
            [
                ("joined", 3, now),
                ("heard", h, "bob", "bob", False, now + 100),
                ("heard", h, "carol", "carol", False, now + 200),
                ("tick", now + window),  # our JOIN's roll call: both answered
                ("heard", j, "dave", "dave", False, now + 10_000),  # dave's roll call
                ("heard", h, "bob", "bob", False, now + 10_500),  # bob answers, carol not
                ("tick", now + 10_000 + d("dave")),  # our answer
                ("tick", now + 10_000 + window - 1),
                ("tick", now + 10_000 + window),  # carol, last heard before it, goes
            ],
        ),
        _presence_scenario(
            "one-roll-call-judged-at-a-time",
            own,
            [
                ("joined", 6, now),
                ("heard", text, "erin", "erin", False, now + 1000),
                ("tick", now + window),  # the first roll call
                ("heard", j, "bob", "bob", False, now + 10_000),  # judged at +15 000
                ("heard", text, "grace", "grace", False, now + 10_500),
                ("heard", j, "carol", "carol", False, now + 11_000),  # remembered...
                ("heard", text, "frank", "frank", False, now + 11_500),
                ("heard", j, "dave", "dave", False, now + 12_000),  # ...then replaced
                ("heard", text, "heidi", "heidi", False, now + 12_500),
                ("heard", h, "bob", "bob", False, now + 13_000),
                ("tick", now + 10_000 + window),  # erin goes
                ("tick", now + 11_000 + window),  # carol's roll call is not judged
                ("tick", now + 12_000 + window - 1),
                ("tick", now + 12_000 + window),  # dave's: grace, carol and frank go
            ],
        ),
        _presence_scenario(
            "count-down-calls-a-roll-call",
            own,
            [
                ("joined", 3, now),
                ("heard", h, "bob", "bob", False, now + 100),
                ("heard", h, "carol", "carol", False, now + 200),
                ("tick", now + window),
                ("count", 3, now + 9000),  # the same count again: nothing
                ("count", 4, now + 9500),  # up: nothing
                ("count", 3, now + 10_000),  # down: our JOIN in d0
                ("count", 2, now + 10_100),  # down again: the plan stands
                ("tick", now + 10_000 + d0 - 1),
                ("tick", now + 10_000 + d0),  # the roll call
                ("heard", h, "bob", "bob", False, now + 10_000 + d0 + 300),
                ("tick", now + 10_000 + d0 + window),  # carol goes
                ("heard", lv, "bob", "bob", False, now + 20_000),
                ("count", 1, now + 30_000),  # down, but the roster is empty...
                ("tick", now + 30_000 + d0 + 1000),  # ...so no roll call
            ],
        ),
        _presence_scenario(
            "count-down-a-leave-explains",
            own,
            [
                ("joined", 5, now),
                ("heard", h, "bob", "bob", False, now + 1),
                ("heard", h, "carol", "carol", False, now + 2),
                ("heard", h, "dave", "dave", False, now + 3),
                ("heard", h, "erin", "erin", False, now + 4),
                ("heard", lv, "bob", "bob", False, now + 1000),
                ("count", 4, now + 1000 + window),  # explained: 3 others, 3 entries
                ("tick", now + 1000 + window + d0),
                ("count", 3, now + 11_000),  # not: 2 others for 3 entries
                ("tick", now + 11_000 + d0),  # the roll call
                ("heard", h, "carol", "carol", False, now + 11_600),
                ("heard", h, "dave", "dave", False, now + 11_700),
                ("heard", h, "erin", "erin", False, now + 11_800),
                ("count", 4, now + 14_000),  # someone came, silent
                ("heard", lv, "carol", "carol", False, now + 20_000),
                ("count", 3, now + 20_001 + window),  # 3 others for 2, but 5 001 ms late
                ("tick", now + 20_001 + window + d0),
            ],
        ),
        _presence_scenario(
            "count-down-plan-dropped-by-a-join",
            own,
            [
                ("joined", 3, now),
                ("heard", h, "bob", "bob", False, now + 1),
                ("heard", h, "carol", "carol", False, now + 2),
                ("count", 2, now + 10_000),
                ("heard", j, "dave", "dave", False, now + 10_001),  # the roll call: no JOIN
                ("tick", now + 10_000 + d0),
                ("tick", now + 10_001 + d("dave")),  # only the answer
                ("count", 1, now + 20_000),
                ("joined", 2, now + 20_001),  # our own JOIN (a reconnect) drops it too
                ("tick", now + 20_000 + d0),
            ],
        ),
        _presence_scenario(
            "a-member-that-announces-nothing",
            DEVICE_B.public_key,
            [
                ("heard", text, "bob", "bob", False, now),
                ("joined", 3, now + 10),  # no JOIN, so no roll call of its own
                ("tick", now + 10 + window),  # bob stays
                ("heard", j, "carol", "carol", False, now + 9000),  # no HERE; a roll call
                ("heard", h, "dave", "dave", False, now + 9030),
                ("tick", now + 9000 + gap),
                ("count", 2, now + 9000 + gap + 500),  # no roll call of its own either
                ("tick", now + 9000 + window),  # carol's: bob goes
                ("heard", lv, "dave", "dave", False, now + 20_000),
                ("leaving",),
            ],
            announce=False,
        ),
        _presence_scenario(
            "own-key-heard-is-ignored",
            own,
            [
                ("joined", 3, now),
                ("heard", h, "bob", "bob", False, now + 1),
                ("tick", now + window),
                ("heard", j, own, "me", False, now + 10_000),  # no entry, HERE nor roll call
                ("heard", text, own, "me", False, now + 10_001),
                ("tick", now + 10_000 + window),  # bob stays
                ("heard", lv, own, "me", False, now + 20_000),  # explains nothing...
                ("tick", now + 20_000),  # ...and is another window of ours: a HERE
                ("count", 2, now + 20_001),  # a roll call, in d0 and the gap after our HERE
                ("tick", now + 20_000 + gap - 1),
                ("tick", now + 20_000 + gap),
            ],
        ),
        _presence_scenario(
            "a-clock-set-back",
            own,
            [
                ("joined", 3, now),
                ("heard", h, "bob", "bob", False, now + 100),
                ("heard", j, "carol", "carol", False, now + 10_000),  # a roll call
                ("heard", h, "bob", "bob", False, now + 10_500 - 3_600_000),  # an hour back
                ("tick", now + 10_000 + window - 3_600_000),  # still a window after: bob stays
                ("tick", now + 10_000 + window + 600 - 3_600_000),
            ],
            clock_goes_back=True,
        ),
        _presence_scenario(
            "leaves-explain-one-step-each",
            own,
            [
                ("joined", 5, now),
                ("heard", h, "bob", "bob", False, now + 1),
                ("heard", h, "carol", "carol", False, now + 2),
                ("heard", lv, "erin", "erin", False, now + 10_000),  # not listed: explains
                ("count", 4, now + 10_001),  # nothing, so a roll call
                ("tick", now + 10_001 + d0),
                ("heard", h, "bob", "bob", False, now + 11_000),
                ("heard", h, "carol", "carol", False, now + 11_001),
                ("tick", now + 10_001 + d0 + window),
                ("heard", lv, "bob", "bob", False, now + 20_000),
                ("count", 2, now + 20_001),  # two steps down, one LEAVE
                ("tick", now + 20_001 + d0),  # a roll call
                ("heard", h, "carol", "carol", False, now + 21_000),
                ("heard", lv, "carol", "carol", False, now + 30_000),
                ("count", 1, now + 30_001),  # explained, and the roster is empty
                ("tick", now + 30_001 + d0),
            ],
        ),
        _presence_scenario(
            "too-late-by-their-timestamps",
            own,
            [
                ("joined", 3, now),
                ("heard", h, "bob", "bob", False, now + 1),
                ("heard", lv, "bob", "bob", False, now + 10_000),
                ("heard", h, "bob", "bob", False, now + 10_001, now + 9000),  # sent before
                ("heard", h, "carol", "carol", False, now + 10_002, now + 10_002),
                ("heard", lv, "carol", "carol", False, now + 10_003, now + 10_001),  # overtaken
                ("heard", h, "bob", "bob", False, now + 10_004, now + 10_004),  # back after it
            ],
        ),
        _presence_scenario(
            "the-newest-leave-counts-for-ten-minutes",
            own,
            [
                ("joined", 3, now),
                ("heard", lv, "bob", "bob", False, now + 10_000, now + 9_000),
                ("heard", lv, "bob", "bob", False, now + 10_001, now + 5_000),  # older
                ("heard", h, "bob", "bob", False, now + 10_002, now + 6_000),  # still before
                ("heard", h, "bob", "bob", False, now + 10_003 + max_age, now + 8_000),  # the
                # LEAVE heard over ten minutes ago: a clock set right since may stamp earlier
            ],
        ),
        _presence_scenario(
            "a-roll-call-every-five-minutes",
            own,
            [
                ("joined", 2, now),
                ("heard", h, "bob", "bob", False, now + 1),
                ("tick", now + window),
                ("tick", now + every - 1),
                ("tick", now + every),  # nobody called one: ours, in d0
                ("tick", now + every + d0),
                ("heard", h, "bob", "bob", False, now + every + d0 + 1),
                ("heard", j, "carol", "carol", False, now + 2 * every - 1),  # carol's counts
                ("tick", now + 2 * every + d0),
            ],
        ),
        _presence_scenario(
            "a-name-two-keys-claim",
            own,
            [
                ("joined", 4, now),
                ("heard", h, "bob", "bob", False, now + 1),
                ("heard", h, "carol", "Bob", False, now + 2),  # both flagged
                ("heard", h, "dave", "BOB ", True, now + 3),  # flagged as heard
                ("heard", lv, "carol", "Bob", False, now + 4),  # bob and dave still
                ("heard", lv, "dave", "BOB ", True, now + 5),  # bob alone: not flagged
            ],
        ),
        _presence_scenario(
            "outgrown-roster-calls-a-roll-call-now-and-then",
            own,
            [
                ("joined", 2, now),  # one other counted
                ("heard", h, "bob", "bob", False, now + 1),
                ("tick", now + window),
                ("heard", h, "carol", "carol", False, now + 30_000),  # two listed
                ("tick", now + 30_000),  # seen at a tick: a roll call in d0
                ("tick", now + 30_000 + d0),
                ("heard", h, "bob", "bob", False, now + 30_000 + d0 + 1),
                ("heard", h, "carol", "carol", False, now + 30_000 + d0 + 2),
                ("tick", now + 30_000 + d0 + window),  # both answered
                ("tick", now + 30_000 + d0 + doubt - 1),  # not yet again
                ("tick", now + 30_000 + d0 + doubt),  # planned in d0
                ("count", 3, now + 30_000 + 2 * d0 - 1 + doubt),  # counted now: dropped
                ("tick", now + 30_000 + 2 * d0 + doubt),
                ("count", 2, now + 30_000 + 2 * d0 + doubt + 1),  # a lagging count...
                ("heard", j, "dave", "dave", False, now + 30_000 + 2 * d0 + doubt + 2),
                ("tick", now + 30_000 + 3 * d0 + doubt + 2),  # ...and dave's roll call
            ],
        ),
    ]


def build() -> dict[str, Any]:
    return {
        "about": "InstantRoom protocol v1 test vectors. Made by scripts/gen_vectors.py; "
        "see PROTOCOL.md, section 'Test vectors', for the format and how to check each.",
        "derivations": [derivation(KEY_A), derivation(KEY_B)],
        "fingerprints": [
            {"public_key": d.public_key.hex(), "fingerprint": fingerprint(d.public_key)}
            for d in (DEVICE_A, DEVICE_B)
        ],
        "devices": [
            {"seed": private_key_bytes(d.private_key).hex(), "public_key": d.public_key.hex()}
            for d in (DEVICE_A, DEVICE_B)
        ],
        "minikey_parsing": minikey_errors(),
        "envelopes": envelopes(),
        "envelope_failures": envelope_failures(),
        "join_proofs": join_proofs(),
        "frames": frame_cases(),
        "frame_failures": frame_failures(),
        "canonical_names": canonical_names(),
        "invites": invites(),
        "replay_filter": replay_filter(),
        "presence": presence(),
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file has drifted")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run scripts/gen_vectors.py", file=sys.stderr)
            return 1
        print(f"{OUT.name} matches the protocol core.")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

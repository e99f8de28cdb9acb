"""Message envelopes: sealing, opening, tampering, padding and the replay filter."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from instantroom.protocol import frames
from instantroom.protocol.codes import MAX_ENVELOPE_SIZE
from instantroom.protocol.envelope import (
    MAX_BODY_BYTES,
    MAX_NAME_BYTES,
    Kind,
    Message,
    ReplayFilter,
    new_message,
    open_envelope,
    pad,
    seal_envelope,
    unpad,
)
from instantroom.protocol.errors import (
    BadSignature,
    DecryptionFailed,
    EnvelopeError,
    MalformedEnvelope,
    ReplayedMessage,
    StaleMessage,
    UsageError,
)
from instantroom.protocol.kdf import DeviceKey, RoomKeys, load_public_key

from .corpus import (
    BUCKETS,
    DEVICE_A,
    DEVICE_B,
    ENVELOPE_OVERHEAD,
    MESSAGE_SIGNATURE_LABEL,
    ROOM_A,
    ROOM_B,
    bucket_for,
    inner_size,
    iso_pad,
    signed_part,
)

CHEAP = settings(max_examples=200, deadline=None)
CRYPTO = settings(max_examples=50, deadline=None)

nonces = st.binary(min_size=12, max_size=12)
names = st.text(max_size=16)  # at most 64 bytes of UTF-8
kinds = st.integers(min_value=0, max_value=255)


@st.composite
def messages(draw: st.DrawFn, device: DeviceKey = DEVICE_A) -> Message:
    kind = draw(st.one_of(st.sampled_from(Kind), kinds))
    if kind == Kind.TEXT:
        body = draw(st.text(max_size=1000)).encode("utf-8")
    else:
        body = draw(st.binary(max_size=4096))
    return Message(
        message_id=draw(st.binary(min_size=16, max_size=16)),
        timestamp_ms=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        kind=int(kind),
        sender_key=device.public_key,
        sender_name=draw(names),
        body=body,
    )


def _message(body: bytes = b"hello", name: str = "alice", device: DeviceKey = DEVICE_A) -> Message:
    return Message(bytes(range(16)), 1_790_000_000_000, Kind.TEXT, device.public_key, name, body)


def _encrypt(room: RoomKeys, plaintext: bytes, nonce: bytes = bytes(12)) -> bytes:
    """An envelope around any plaintext, made the way the layout says, bypassing seal."""
    return (
        b"\x01" + nonce + AESGCM(room.message_key).encrypt(nonce, plaintext, b"\x01" + room.room_id)
    )


def _signed_inner(room: RoomKeys, device: DeviceKey, message: Message) -> bytes:
    signed = signed_part(message)
    return signed + device.private_key.sign(MESSAGE_SIGNATURE_LABEL + room.room_id + signed)


# Round trips and the layout


@CRYPTO
@given(messages(), nonces)
def test_seal_open_round_trip(message: Message, nonce: bytes) -> None:
    envelope = seal_envelope(ROOM_A, DEVICE_A, message, nonce)
    assert open_envelope(ROOM_A, envelope) == message
    assert envelope[0] == 1
    assert envelope[1:13] == nonce
    assert len(envelope) - ENVELOPE_OVERHEAD == bucket_for(
        inner_size(message.sender_name, message.body)
    )


@CRYPTO
@given(messages(device=DEVICE_B), nonces)
def test_sealed_bytes_follow_the_documented_layout(message: Message, nonce: bytes) -> None:
    envelope = seal_envelope(ROOM_B, DEVICE_B, message, nonce)
    padded = AESGCM(ROOM_B.message_key).decrypt(nonce, envelope[13:], b"\x01" + ROOM_B.room_id)
    signed = signed_part(message)
    assert padded[: len(signed)] == signed
    signature = padded[len(signed) : len(signed) + 64]
    load_public_key(DEVICE_B.public_key).verify(
        signature, MESSAGE_SIGNATURE_LABEL + ROOM_B.room_id + signed
    )
    assert padded == iso_pad(signed + signature)


def test_new_message_takes_id_and_time_from_the_caller() -> None:
    asked: list[int] = []

    def token_bytes(n: int) -> bytes:
        asked.append(n)
        return bytes([7]) * n

    message = new_message(DEVICE_A, "alice", Kind.TEXT, b"hi", token_bytes=token_bytes, now_ms=42)
    assert asked == [16]
    assert message == Message(bytes([7]) * 16, 42, Kind.TEXT, DEVICE_A.public_key, "alice", b"hi")
    assert message.text == "hi"


def test_message_repr_leaves_out_the_body() -> None:
    assert "secret plans" not in repr(_message(b"secret plans"))


def test_largest_name_and_body() -> None:
    name = "é" * (MAX_NAME_BYTES // 2)
    assert len(name.encode()) == MAX_NAME_BYTES
    message = _message(b"x" * MAX_BODY_BYTES, name=name)
    envelope = seal_envelope(ROOM_A, DEVICE_A, message, bytes(12))
    assert len(envelope) == MAX_ENVELOPE_SIZE
    assert open_envelope(ROOM_A, envelope) == message
    # The largest envelope fits the relay's frames, both ways.
    publish = frames.encode_frame(frames.Publish(1, ROOM_A.room_id, envelope))
    assert frames.decode_frame(publish) == frames.Publish(1, ROOM_A.room_id, envelope)
    deliver = frames.deliver_from_publish(publish)
    assert frames.decode_frame(deliver) == frames.Deliver(ROOM_A.room_id, envelope)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"sender_name": "x" * (MAX_NAME_BYTES + 1)}, id="name-too-long"),
        pytest.param({"sender_name": "é" * 33}, id="name-too-long-utf8"),
        pytest.param({"body": b"x" * (MAX_BODY_BYTES + 1)}, id="body-too-long"),
        pytest.param({"message_id": bytes(15)}, id="short-id"),
        pytest.param({"message_id": bytes(17)}, id="long-id"),
        pytest.param({"kind": -1}, id="negative-kind"),
        pytest.param({"kind": 256}, id="kind-too-large"),
        pytest.param({"sender_key": DEVICE_B.public_key}, id="not-this-device"),
        pytest.param({"timestamp_ms": -1}, id="negative-timestamp"),
        pytest.param({"timestamp_ms": 2**64}, id="timestamp-too-large"),
        pytest.param({"sender_name": "\ud800"}, id="name-not-encodable"),
    ],
)
def test_misuse_of_seal_raises_usage_error(change: dict[str, object]) -> None:
    message = dataclasses.replace(_message(), **change)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        seal_envelope(ROOM_A, DEVICE_A, message, bytes(12))


@pytest.mark.parametrize("size", [0, 11, 13])
def test_seal_needs_a_12_byte_nonce(size: int) -> None:
    with pytest.raises(UsageError):
        seal_envelope(ROOM_A, DEVICE_A, _message(), bytes(size))


def test_seal_makes_nothing_that_open_refuses() -> None:
    """A TEXT body must be UTF-8 for the receiver; the sender must hear of it first."""
    message = _message(b"\xff\xfe not utf-8")
    try:
        envelope = seal_envelope(ROOM_A, DEVICE_A, message, bytes(12))
    except UsageError:
        return
    assert open_envelope(ROOM_A, envelope) == message


# Tampering


def _sealed(body_size: int) -> bytes:
    return seal_envelope(ROOM_A, DEVICE_A, _message(b"y" * body_size), bytes(range(12)))


SEALED = [_sealed(10), _sealed(500)]  # first and second bucket


@CHEAP
@given(st.sampled_from(SEALED), st.data())
def test_any_flipped_bit_is_refused(envelope: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(envelope) - 1), label="index")
    bit = data.draw(st.integers(0, 7), label="bit")
    tampered = bytearray(envelope)
    tampered[index] ^= 1 << bit
    with pytest.raises(DecryptionFailed):
        open_envelope(ROOM_A, bytes(tampered))


@CHEAP
@given(st.integers(0, 31), st.integers(0, 7))
def test_any_flipped_bit_in_the_room_id_is_refused(index: int, bit: int) -> None:
    room_id = bytearray(ROOM_A.room_id)
    room_id[index] ^= 1 << bit
    other = RoomKeys(
        message_key=ROOM_A.message_key,
        signing_key=ROOM_A.signing_key,
        public_key=ROOM_A.public_key,
        room_id=bytes(room_id),
    )
    with pytest.raises(DecryptionFailed):
        open_envelope(other, SEALED[0])


def test_other_room_cannot_open() -> None:
    with pytest.raises(DecryptionFailed):
        open_envelope(ROOM_B, SEALED[0])
    same_id_other_key = dataclasses.replace(ROOM_A, message_key=ROOM_B.message_key)
    with pytest.raises(DecryptionFailed):
        open_envelope(same_id_other_key, SEALED[0])


@CRYPTO
@given(messages(device=DEVICE_A), nonces)
def test_relabelled_sender_is_refused(message: Message, nonce: bytes) -> None:
    """Signed by device A, then the sender key swapped for device B's, re-encrypted."""
    inner = _signed_inner(ROOM_A, DEVICE_A, message)
    relabelled = signed_part(dataclasses.replace(message, sender_key=DEVICE_B.public_key))
    forged = _encrypt(ROOM_A, iso_pad(relabelled + inner[-64:]), nonce)
    with pytest.raises(BadSignature):
        open_envelope(ROOM_A, forged)
    # The same bytes without the swap open fine: the forgery is what is refused.
    assert open_envelope(ROOM_A, _encrypt(ROOM_A, iso_pad(inner), nonce)) == message


@CRYPTO
@given(messages(device=DEVICE_A))
def test_signature_is_bound_to_the_room(message: Message) -> None:
    """A member of two rooms cannot move a message from one room into the other."""
    inner = _signed_inner(ROOM_A, DEVICE_A, message)
    with pytest.raises(BadSignature):
        open_envelope(ROOM_B, _encrypt(ROOM_B, iso_pad(inner)))


@CRYPTO
@given(messages(device=DEVICE_A), st.binary(min_size=1, max_size=64))
def test_altered_body_is_refused(message: Message, extra: bytes) -> None:
    inner = _signed_inner(ROOM_A, DEVICE_A, message)
    altered = signed_part(dataclasses.replace(message, body=message.body + extra))
    with pytest.raises((BadSignature, MalformedEnvelope)):
        open_envelope(ROOM_A, _encrypt(ROOM_A, iso_pad(altered + inner[-64:])))


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(bytes(256), id="all-zero"),
        pytest.param(b"\x01" * 256, id="no-marker"),
        pytest.param(iso_pad(b"x" * 100)[:-1] + b"\x01", id="trailing-junk"),
        pytest.param(iso_pad(b"x" * 100) + b"\x00" * 44, id="not-a-bucket"),
        pytest.param(iso_pad(b"x" * 100), id="inner-too-short"),
        pytest.param(
            iso_pad(signed_part(_message())[:57] + b"\xff" + bytes(80)), id="name-overruns"
        ),
        pytest.param(iso_pad(signed_part(_message()) + bytes(63)), id="body-length-mismatch"),
        pytest.param(
            iso_pad(
                _signed_inner(ROOM_A, DEVICE_A, _message(name="ab")).replace(b"ab", b"\xff\xfe", 1)
            ),
            id="name-not-utf8",
        ),
    ],
)
def test_malformed_plaintext_is_refused(plaintext: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        open_envelope(ROOM_A, _encrypt(ROOM_A, plaintext))


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(_message(name="x" * (MAX_NAME_BYTES + 1)), id="name-too-long"),
        pytest.param(_message(b"x" * (MAX_BODY_BYTES + 1)), id="body-too-long"),
    ],
)
def test_receivers_enforce_the_limits_senders_keep(message: Message) -> None:
    """Well signed and well padded, but past a limit seal would refuse."""
    forged = _encrypt(ROOM_A, iso_pad(_signed_inner(ROOM_A, DEVICE_A, message)))
    with pytest.raises(MalformedEnvelope):
        open_envelope(ROOM_A, forged)


@CHEAP
@given(st.binary(max_size=3000), st.booleans())
def test_open_raises_only_envelope_errors_for_any_plaintext(plaintext: bytes, padded: bool) -> None:
    envelope = _encrypt(ROOM_A, iso_pad(plaintext) if padded else plaintext)
    # Decryption succeeds; nothing random carries a good signature, so it must be refused.
    with pytest.raises((MalformedEnvelope, BadSignature)):
        open_envelope(ROOM_A, envelope)


@CHEAP
@given(st.binary(max_size=3000))
def test_open_raises_only_envelope_errors_for_any_bytes(envelope: bytes) -> None:
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(ROOM_A, envelope)
    assert type(caught.value) in (MalformedEnvelope, DecryptionFailed)


# Padding


def _boundary_sizes() -> Iterator[int]:
    for bucket in BUCKETS:
        yield from (bucket - 2, bucket - 1, bucket)
    yield 0


@pytest.mark.parametrize("size", sorted(set(_boundary_sizes()) - {BUCKETS[-1]}))
def test_pad_picks_smallest_bucket_strictly_larger(size: int) -> None:
    inner = bytes([0x80]) * size  # ends like the marker, to trip a sloppy unpad
    padded = pad(inner)
    assert len(padded) == bucket_for(size)
    assert len(padded) > size
    assert all(b < len(padded) for b in BUCKETS if b <= size)
    assert padded == iso_pad(inner)
    assert unpad(padded) == inner


def test_pad_refuses_what_no_bucket_holds() -> None:
    with pytest.raises(UsageError):
        pad(bytes(BUCKETS[-1]))


@CHEAP
@given(st.binary(max_size=5000))
def test_pad_unpad_round_trip(inner: bytes) -> None:
    padded = pad(inner)
    assert len(padded) in BUCKETS
    assert len(padded) == bucket_for(len(inner))
    assert unpad(padded) == inner


@pytest.mark.parametrize(
    "padded",
    [
        pytest.param(bytes(256), id="all-zero"),
        pytest.param(b"x" * 256, id="no-marker"),
        pytest.param(b"x" * 255 + b"\x81", id="wrong-marker"),
        pytest.param(b"x\x80" + bytes(298), id="not-a-bucket"),
        pytest.param(b"", id="empty"),
    ],
)
def test_unpad_refuses_bad_padding(padded: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        unpad(padded)


@pytest.mark.parametrize(
    ("body_size", "inner", "bucket"), [(128, 255, 256), (129, 256, 1024), (0, 127, 256)]
)
def test_envelope_size_at_the_first_boundary(body_size: int, inner: int, bucket: int) -> None:
    message = _message(b"z" * body_size, name="a")
    assert inner_size("a", message.body) == inner
    envelope = seal_envelope(ROOM_A, DEVICE_A, message, bytes(12))
    assert len(envelope) - ENVELOPE_OVERHEAD == bucket
    assert open_envelope(ROOM_A, envelope) == message


# The replay filter

NOW = 1_790_000_000_000
HOUR = 60 * 60 * 1000


def _at(number: int, timestamp_ms: int) -> Message:
    return Message(
        number.to_bytes(16, "big"), timestamp_ms, Kind.TEXT, DEVICE_A.public_key, "a", b""
    )


def test_replay_is_dropped() -> None:
    seen = ReplayFilter()
    seen.accept(_at(1, NOW), NOW)
    seen.accept(_at(2, NOW), NOW)
    with pytest.raises(ReplayedMessage):
        seen.accept(_at(1, NOW), NOW + 1000)
    with pytest.raises(ReplayedMessage):
        seen.accept(_at(2, NOW), NOW)


def test_window_edges() -> None:
    seen = ReplayFilter(max_age_ms=HOUR, max_future_ms=5 * 60 * 1000)
    seen.accept(_at(1, NOW - HOUR), NOW)
    seen.accept(_at(2, NOW + 5 * 60 * 1000), NOW)
    with pytest.raises(StaleMessage):
        seen.accept(_at(3, NOW - HOUR - 1), NOW)
    with pytest.raises(StaleMessage):
        seen.accept(_at(4, NOW + 5 * 60 * 1000 + 1), NOW)
    with pytest.raises(StaleMessage):
        seen.accept(_at(5, 0), NOW)


def test_old_message_stays_refused_after_it_is_forgotten() -> None:
    seen = ReplayFilter(max_age_ms=HOUR)
    seen.accept(_at(1, NOW), NOW)
    with pytest.raises(StaleMessage):
        seen.accept(_at(1, NOW), NOW + HOUR + 1)


def test_a_floor_raised_by_the_caller_refuses_all_at_or_below_it() -> None:
    seen = ReplayFilter(max_age_ms=HOUR)
    seen.raise_floor(NOW - 10)
    with pytest.raises(StaleMessage):
        seen.accept(_at(1, NOW - 10), NOW)
    seen.accept(_at(2, NOW - 9), NOW)
    seen.raise_floor(NOW - 20)  # never lowered
    with pytest.raises(StaleMessage):
        seen.accept(_at(3, NOW - 15), NOW)
    for not_a_time in (1.5, True, "1000"):
        with pytest.raises(UsageError):
            seen.raise_floor(not_a_time)  # type: ignore[arg-type]


def test_capacity_floor() -> None:
    seen = ReplayFilter(max_age_ms=HOUR, capacity=3)
    for number in (1, 2, 3):
        seen.accept(_at(number, NOW + number), NOW)
    seen.accept(_at(4, NOW + 4), NOW)  # forgets 1, the oldest; the floor rises to its time
    with pytest.raises(StaleMessage):
        seen.accept(_at(1, NOW + 1), NOW)  # evicted, and still cannot come back
    with pytest.raises(StaleMessage):
        seen.accept(_at(9, NOW + 1), NOW)  # nothing at or below the floor gets in
    with pytest.raises(ReplayedMessage):
        seen.accept(_at(3, NOW + 3), NOW)  # still remembered
    seen.accept(_at(5, NOW + 5), NOW)  # forgets 2
    with pytest.raises(StaleMessage):
        seen.accept(_at(2, NOW + 2), NOW)
    with pytest.raises(ReplayedMessage):
        seen.accept(_at(5, NOW + 5), NOW)


def test_clock_stepping_back_does_not_let_a_forgotten_message_back() -> None:
    """Times come from the caller's wall clock, which can step back (NTP, a user)."""
    seen = ReplayFilter(max_age_ms=HOUR)
    seen.accept(_at(1, NOW), NOW)
    seen.accept(_at(2, NOW + HOUR + 10), NOW + HOUR + 10)  # ages 1 out
    with pytest.raises((ReplayedMessage, StaleMessage)):
        seen.accept(_at(1, NOW), NOW + HOUR - 10)  # the clock stepped back 20 ms


@CHEAP
@given(
    st.integers(1, 4),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10 * 60_000)), max_size=40),
)
def test_no_message_is_accepted_twice(capacity: int, steps: list[tuple[int, int]]) -> None:
    """Each message has one fixed time; the clock only moves forward."""
    seen = ReplayFilter(max_age_ms=HOUR // 2, max_future_ms=HOUR // 4, capacity=capacity)
    sent_at = {number: NOW + number * 60_000 for number in range(8)}
    accepted: set[int] = set()
    now = NOW
    for number, advance in steps:
        now += advance
        try:
            seen.accept(_at(number, sent_at[number]), now)
        except (ReplayedMessage, StaleMessage):
            continue
        assert number not in accepted
        accepted.add(number)


@CHEAP
@given(st.lists(st.integers(-HOUR, 5 * 60 * 1000), max_size=50))
def test_fresh_messages_in_the_window_are_accepted(offsets: list[int]) -> None:
    seen = ReplayFilter(max_age_ms=HOUR, max_future_ms=5 * 60 * 1000)
    for number, offset in enumerate(offsets):
        seen.accept(_at(number, NOW + offset), NOW)
    for number, offset in enumerate(offsets):
        with pytest.raises(ReplayedMessage):
            seen.accept(_at(number, NOW + offset), NOW)


def test_replay_filter_works_on_opened_messages() -> None:
    seen = ReplayFilter()
    envelope = seal_envelope(ROOM_A, DEVICE_A, _message(), bytes(12))
    seen.accept(open_envelope(ROOM_A, envelope), _message().timestamp_ms)
    with pytest.raises(ReplayedMessage):
        seen.accept(open_envelope(ROOM_A, envelope), _message().timestamp_ms + 1)


# Seeding the filter with what a receiver already has (a restart starts it empty)


def test_a_remembered_id_is_dropped_as_a_replay_and_others_get_in() -> None:
    seen = ReplayFilter()
    seen.remember(_at(1, NOW - 1000).message_id, NOW - 1000, NOW)
    with pytest.raises(ReplayedMessage):
        seen.accept(_at(1, NOW - 1000), NOW)
    seen.accept(_at(2, NOW - 1000), NOW)  # never remembered: it gets in


def test_an_id_older_than_the_window_is_not_remembered() -> None:
    seen = ReplayFilter(max_age_ms=HOUR)
    seen.remember(_at(1, NOW).message_id, NOW - HOUR - 1, NOW)
    seen.remember(_at(2, NOW).message_id, NOW - HOUR, NOW)  # at the edge: kept
    assert len(seen._by_time) == 1
    assert seen._floor_ms == -1  # ignoring it raised no floor


def test_an_id_stamped_ahead_of_the_window_is_remembered_until_it_enters_it() -> None:
    seen = ReplayFilter(max_age_ms=HOUR, max_future_ms=5 * 60 * 1000)
    ahead = NOW + 10 * 60 * 1000
    seen.remember(_at(1, ahead).message_id, ahead, NOW)
    with pytest.raises(StaleMessage):
        seen.accept(_at(1, ahead), NOW)
    with pytest.raises(ReplayedMessage):
        seen.accept(_at(1, ahead), ahead)


def test_remembering_twice_or_past_capacity_keeps_the_floor_rule() -> None:
    seen = ReplayFilter(max_age_ms=HOUR, capacity=2)
    for number in (1, 1, 2, 3):  # 3 forgets 1, the oldest, and the floor rises to it
        seen.remember(_at(number, NOW).message_id, NOW + number, NOW)
    assert len(seen._by_time) == 2
    with pytest.raises(StaleMessage):
        seen.accept(_at(1, NOW + 1), NOW)
    with pytest.raises(ReplayedMessage):
        seen.accept(_at(3, NOW + 3), NOW)


def test_remember_needs_a_16_byte_id() -> None:
    with pytest.raises(UsageError):
        ReplayFilter().remember(b"short", NOW, NOW)

"""The relay wire format: exact layouts, round trips, and a decoder that raises only
``FrameError`` whatever bytes it is fed."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instantroom.protocol import frames
from instantroom.protocol.codes import MAX_ENVELOPE_SIZE, ErrorCode, FrameType
from instantroom.protocol.errors import FrameError, PeerError, UsageError
from tests import strategies

from .corpus import PROTOCOL

CHEAP = settings(max_examples=200, deadline=None)

room_ids = st.binary(min_size=32, max_size=32)
envelopes = st.binary(min_size=1, max_size=2048)
any_frame = strategies.any_frame(room_ids, envelopes)

VECTOR_FRAMES = [bytes.fromhex(entry["encoded"]) for entry in PROTOCOL["frames"]]

# (type byte, total length) of every fixed-size frame, from the layout table.
FIXED_SIZES = {
    FrameType.JOIN: 1 + 32 + 32 + 8,
    FrameType.CHALLENGE: 1 + 32 + 32,
    FrameType.PROOF: 1 + 32 + 64,
    FrameType.JOINED: 1 + 32 + 8 + 4,
    FrameType.LEAVE: 1 + 32,
    FrameType.ACK: 1 + 4,
    FrameType.PRESENCE: 1 + 32 + 4,
    FrameType.PING: 1 + 8,
    FrameType.PONG: 1 + 8,
}


def _decodes_only_to_itself(data: bytes) -> None:
    """The decoder's contract: a FrameError with a known code, or a frame that is exactly
    these bytes."""
    try:
        frame = frames.decode_frame(data)
    except FrameError as exc:
        error: FrameError = exc
    else:
        assert frames.encode_frame(frame) == data
        return
    assert error.code in set(ErrorCode)
    assert isinstance(error, PeerError)


@CHEAP
@given(any_frame)
def test_round_trip(frame: frames.Frame) -> None:
    data = frames.encode_frame(frame)
    assert data[0] == FrameType[type(frame).__name__.upper()]
    assert frames.decode_frame(data) == frame
    assert frames.decode_frame(cast(bytes, bytearray(data))) == frame
    assert frames.decode_frame(cast(bytes, memoryview(data))) == frame


@CHEAP
@given(st.builds(frames.Publish, strategies.u32, room_ids, envelopes))
def test_deliver_is_publish_without_its_ref(publish: frames.Publish) -> None:
    data = frames.encode_frame(publish)
    assert data[5:37] == publish.room_id  # where the relay reads the room id
    deliver = frames.deliver_from_publish(data)
    assert deliver == frames.encode_frame(frames.Deliver(publish.room_id, publish.envelope))
    assert frames.decode_frame(deliver) == frames.Deliver(publish.room_id, publish.envelope)


@pytest.mark.parametrize(("kind", "size"), sorted(FIXED_SIZES.items()))
def test_fixed_frames_have_exact_sizes(kind: int, size: int) -> None:
    frames.decode_frame(bytes([kind]) + bytes(size - 1))
    for wrong in (1, size - 1, size + 1, size + 32):
        with pytest.raises(FrameError) as caught:
            frames.decode_frame(bytes([kind]) + bytes(wrong - 1))
        assert caught.value.code == ErrorCode.MALFORMED_FRAME


def test_every_unassigned_type_byte_is_unknown() -> None:
    for kind in set(range(256)) - set(FrameType):
        with pytest.raises(FrameError) as caught:
            frames.decode_frame(bytes([kind]) + bytes(40))
        assert caught.value.code == ErrorCode.UNKNOWN_FRAME_TYPE


@pytest.mark.parametrize("data", ["text", None, 5, [1, 2]], ids=repr)
def test_non_bytes_raise_frame_error(data: object) -> None:
    with pytest.raises(FrameError) as caught:
        frames.decode_frame(cast(Any, data))
    assert caught.value.code == ErrorCode.MALFORMED_FRAME


def test_oversized_frames_are_refused_before_parsing() -> None:
    for kind in (FrameType.PUBLISH, FrameType.DELIVER, FrameType.ERROR, 0x99):
        with pytest.raises(FrameError) as caught:
            frames.decode_frame(bytes([kind]) + bytes(frames.MAX_FRAME_SIZE))
        assert caught.value.code == ErrorCode.FRAME_TOO_LARGE


def test_largest_publish_round_trips() -> None:
    publish = frames.Publish(2**32 - 1, bytes(32), b"\x01" * MAX_ENVELOPE_SIZE)
    data = frames.encode_frame(publish)
    assert len(data) == frames.MAX_FRAME_SIZE
    assert frames.decode_frame(data) == publish


@CHEAP
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    _decodes_only_to_itself(data)


@CHEAP
@given(st.sampled_from(FrameType), st.binary(max_size=200))
def test_arbitrary_bodies_after_each_type_byte(kind: FrameType, body: bytes) -> None:
    _decodes_only_to_itself(bytes([kind]) + body)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(
        draw(st.one_of(st.sampled_from(VECTOR_FRAMES), any_frame.map(frames.encode_frame)))
    )
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "truncate", "extend", "drop"]))
        if how == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif how == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif how == "extend":
            data += draw(st.binary(min_size=1, max_size=100))
        elif how == "drop" and data:
            del data[draw(st.integers(0, len(data) - 1))]
    return bytes(data)


@CHEAP
@given(mutated_frames())
def test_mutated_frames(data: bytes) -> None:
    _decodes_only_to_itself(data)


def test_long_error_reason_decodes_only_to_itself() -> None:
    """An ERROR frame from a relay whose reason is longer than encode allows."""
    data = bytes([FrameType.ERROR]) + bytes(2 + 4 + 32) + b"a" * (frames.MAX_REASON_BYTES + 1)
    _decodes_only_to_itself(data)


def test_largest_deliver_decodes_only_to_itself() -> None:
    """A DELIVER frame as large as a frame may be, so its envelope passes the maximum."""
    data = bytes([FrameType.DELIVER]) + bytes(32) + b"\x01" * (frames.MAX_FRAME_SIZE - 33)
    _decodes_only_to_itself(data)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(frames.Ack(-1), id="negative-ref"),
        pytest.param(frames.Ack(2**32), id="ref-too-large"),
        pytest.param(frames.Ping(2**64), id="token-too-large"),
        pytest.param(frames.Joined(bytes(32), 0, -1), id="negative-members"),
        pytest.param(frames.Join(bytes(31), bytes(32), 0), id="short-room-id"),
        pytest.param(frames.Join(bytes(32), bytes(33), 0), id="long-public-key"),
        pytest.param(frames.Challenge(bytes(32), bytes(31)), id="short-challenge"),
        pytest.param(frames.Proof(bytes(32), bytes(63)), id="short-signature"),
        pytest.param(frames.Leave(bytes(33)), id="long-room-id"),
        pytest.param(frames.Publish(0, bytes(32), b""), id="empty-envelope"),
        pytest.param(
            frames.Deliver(bytes(32), bytes(MAX_ENVELOPE_SIZE + 1)), id="envelope-too-large"
        ),
        pytest.param(frames.Error(2**16, 0, bytes(32), ""), id="code-too-large"),
        pytest.param(
            frames.Error(1, 0, bytes(32), "x" * (frames.MAX_REASON_BYTES + 1)),
            id="reason-too-long",
        ),
    ],
)
def test_encoding_bad_fields_is_a_usage_error(frame: frames.Frame) -> None:
    with pytest.raises(UsageError):
        frames.encode_frame(frame)


def test_encoding_a_non_frame_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        frames.encode_frame(cast(Any, object()))


@pytest.mark.parametrize("kind", [frames.Join, frames.Joined])
def test_times_stay_below_2_53(kind: type[frames.Join] | type[frames.Joined]) -> None:
    too_late = frames.MAX_TIME_MS
    frame = (
        frames.Join(bytes(32), bytes(32), too_late)
        if kind is frames.Join
        else frames.Joined(bytes(32), too_late, 1)
    )
    with pytest.raises(UsageError):
        frames.encode_frame(frame)
    fine = frames.Join(bytes(32), bytes(32), too_late - 1)
    assert frames.decode_frame(frames.encode_frame(fine)) == fine

"""Hypothesis strategies for relay frames, shared by the core's and the relay's tests."""

from __future__ import annotations

from hypothesis import strategies as st

from instantroom.protocol import frames

u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
times = st.integers(0, frames.MAX_TIME_MS - 1)  # ms since 1970, exact in JavaScript
keys = st.binary(min_size=32, max_size=32)
reasons = st.text(max_size=frames.MAX_REASON_BYTES // 4)  # at most 200 bytes of UTF-8


def any_frame(
    room_ids: st.SearchStrategy[bytes], envelopes: st.SearchStrategy[bytes]
) -> st.SearchStrategy[frames.Frame]:
    """Every frame type, with fields in range: what an encoder may produce."""
    return st.one_of(
        st.builds(frames.Join, room_ids, keys, times),
        st.builds(frames.Challenge, room_ids, keys),
        st.builds(frames.Proof, room_ids, st.binary(min_size=64, max_size=64)),
        st.builds(frames.Joined, room_ids, times, u32),
        st.builds(frames.Leave, room_ids),
        st.builds(frames.Publish, u32, room_ids, envelopes),
        st.builds(frames.Deliver, room_ids, envelopes),
        st.builds(frames.Ack, u32),
        st.builds(frames.Presence, room_ids, u32),
        st.builds(frames.Ping, u64),
        st.builds(frames.Pong, u64),
        st.builds(frames.Error, u16, u32, room_ids, reasons),
    )

"""The sans-I/O client session, driven frame by frame with no event loop and no relay."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.envelope import Kind, Message, new_message, open_envelope, seal_envelope
from instantroom.protocol.errors import UsageError
from instantroom.protocol.join import signature_is_good, verify_join_proof
from instantroom.protocol.kdf import DeviceKey, RoomKeys, fingerprint
from instantroom.protocol.roster import (
    ANSWER_GAP_MS,
    MAX_HEARD_AGE_MS,
    ROLL_CALL_WINDOW_MS,
    Member,
    answer_delay_ms,
)
from instantroom.protocol.session import (
    MAX_IN_FLIGHT,
    MAX_NAMES_PER_ROOM,
    MAX_OUTBOX,
    NOT_SENT_IN_TIME,
    NOT_SENT_REFUSED,
    OUTBOX_MAX_AGE_MS,
    REJOIN_PAUSE_MS,
    Accepted,
    ClientSession,
    Joined,
    MembersChanged,
    MessageReceived,
    MessageRejected,
    NotSent,
    PongReceived,
    PresenceChanged,
    Refused,
    RoomExpired,
)

KEY_A = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
KEY_B = "SDehB97fmBnFwezqLcANLCCQkQyfz1"
NOW = 1_790_000_000_000
ROOM_A_ID = RoomKeys.from_minikey(KEY_A).room_id


def make_session(seed: int, name: str) -> ClientSession:
    device = DeviceKey.from_private_bytes(bytes([seed]) * 32)
    counter = itertools.count(seed * 1_000_000)
    return ClientSession(device, name, token_bytes=lambda n: next(counter).to_bytes(n, "big"))


def decoded(session: ClientSession) -> list[frames.Frame]:
    return [frames.decode_frame(f) for f in session.frames_to_send()]


def join_fully(session: ClientSession, room: RoomKeys, members: int = 1) -> None:
    """Play the relay's side of the handshake and check the proof as a relay would."""
    session.join(room)
    (join,) = decoded(session)
    assert isinstance(join, frames.Join)
    assert join.room_id == room.room_id
    assert join.room_public_key == room.public_key
    challenge = bytes(range(32))
    session.receive(frames.encode_frame(frames.Challenge(room.room_id, challenge)), NOW)
    (proof,) = decoded(session)
    assert isinstance(proof, frames.Proof)
    verify_join_proof(join.room_public_key, room.room_id, challenge, proof.signature)
    session.receive(frames.encode_frame(frames.Joined(room.room_id, NOW + 3_600_000, members)), NOW)
    assert session.events() == [Joined(room.room_id, NOW + 3_600_000, members)]


def connect_and_join_again(session: ClientSession, room: RoomKeys, members: int) -> None:
    """Connect ``session``, whose rooms it knows, and play the relay letting it back into
    ``room`` with ``members`` there; what that sends and tells is left out."""
    session.connection_made()
    decoded(session)
    session.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    decoded(session)
    session.receive(frames.encode_frame(frames.Joined(room.room_id, 0, members)), NOW)
    session.events()


def joining(room: RoomKeys) -> ClientSession:
    """Alice, connected, with her JOIN for ``room`` on the wire and not answered yet."""
    session = make_session(1, "alice")
    session.connection_made()
    session.join(room)
    decoded(session)
    return session


def relay_deliver(publish: bytes) -> bytes:
    return frames.deliver_from_publish(publish)


@pytest.fixture
def room() -> RoomKeys:
    return RoomKeys.from_minikey(KEY_A)


def test_join_answers_the_challenge_with_a_proof_that_verifies(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)


def test_a_message_crosses_from_one_session_to_another(room: RoomKeys) -> None:
    alice, bob = make_session(1, "alice"), make_session(2, "bob")
    for session in (alice, bob):
        session.connection_made()
        join_fully(session, room, members=2)
    sent = alice.send_text(room.room_id, "hello bob", NOW)
    (publish,) = alice.frames_to_send()
    bob.receive(relay_deliver(publish), NOW + 5)
    (event,) = bob.events()
    assert isinstance(event, MessageReceived)
    assert event.message.text == "hello bob"
    assert event.message.sender_name == "alice"
    assert event.message.message_id == sent.message_id
    assert event.fingerprint == alice.device.fingerprint
    assert not event.key_changed


def test_a_replayed_or_stale_envelope_is_dropped_before_its_signature_is_checked(
    room: RoomKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay can send one recorded envelope again and again: each cost a signature
    check (some 30 times the rest of opening; in a browser, 3 ms) before the replay filter
    dropped it (PROTOCOL.md 5.6)."""
    alice, bob = make_session(1, "alice"), make_session(2, "bob")
    for session in (alice, bob):
        session.connection_made()
        join_fully(session, room, members=2)
    alice.send_text(room.room_id, "hello bob", NOW)
    (publish,) = alice.frames_to_send()
    checked: list[bytes] = []
    verify = signature_is_good

    def counted(public_key: bytes, signature: bytes, data: bytes) -> bool:
        checked.append(signature)
        return verify(public_key, signature, data)

    monkeypatch.setattr("instantroom.protocol.envelope.signature_is_good", counted)
    for _ in range(50):
        bob.receive(relay_deliver(publish), NOW + 5)
    first, *again = bob.events()
    assert isinstance(first, MessageReceived)
    assert [e.reason for e in again if isinstance(e, MessageRejected)] == ["ReplayedMessage"] * 49
    # Out of the window: dropped before the check too.
    bob.receive(relay_deliver(publish), NOW + 3_600_001)
    assert [e.reason for e in bob.events() if isinstance(e, MessageRejected)] == ["StaleMessage"]
    assert len(checked) == 1


def test_a_message_dropped_as_dated_ahead_says_by_how_much(room: RoomKeys) -> None:
    """A sender whose clock is 12 minutes fast has every message dropped (PROTOCOL.md 7):
    the event says how far ahead, for the user to be told of a clock set wrong."""
    alice, bob, carol = make_session(1, "alice"), make_session(2, "bob"), make_session(3, "c")
    for session in (alice, bob, carol):
        session.connection_made()
        join_fully(session, room, members=3)
    alice.send_text(room.room_id, "from a clock 12 minutes fast", NOW)
    (publish,) = alice.frames_to_send()
    bob.receive(relay_deliver(publish), NOW - 12 * 60_000)
    carol.receive(relay_deliver(publish), NOW - 5 * 60_000)  # just inside the window
    assert bob.events() == [MessageRejected(room.room_id, "StaleMessage", 12 * 60_000)]
    assert [type(e) for e in carol.events()] == [MessageReceived]
    bob.receive(relay_deliver(publish), NOW + 2 * 3_600_000)  # too old: not ahead
    assert bob.events() == [MessageRejected(room.room_id, "StaleMessage", 0)]


def test_the_outbox_holds_a_message_until_the_relay_acknowledges_it(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    sent = alice.send_text(room.room_id, "one", NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    assert publish.ref != 0
    assert alice.unacknowledged == 1
    alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert alice.events() == [Accepted(room.room_id, sent.message_id)]
    assert alice.unacknowledged == 0


def test_a_message_written_before_joining_leaves_once_joined(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.join(room)
    alice.send_text(room.room_id, "early", NOW)
    assert alice.frames_to_send() == []  # not connected: nothing to send yet
    alice.connection_made()
    (join,) = decoded(alice)
    assert isinstance(join, frames.Join)
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)


def test_after_a_reconnect_unacknowledged_messages_are_resent_byte_for_byte(
    room: RoomKeys,
) -> None:
    alice, bob = make_session(1, "alice"), make_session(2, "bob")
    for session in (alice, bob):
        session.connection_made()
        join_fully(session, room, members=2)
    alice.send_text(room.room_id, "lost ack", NOW)
    (first,) = decoded(alice)
    assert isinstance(first, frames.Publish)
    alice.connection_lost()
    alice.send_text(room.room_id, "written while away", NOW + 1)
    assert alice.frames_to_send() == []
    alice.connection_made()
    (join,) = decoded(alice)
    assert isinstance(join, frames.Join)
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    decoded(alice)
    # Only alice is back: the outbox waits for the room to refill.
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    alice.events()
    assert alice.holding(room.room_id)
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 2)), NOW)
    assert alice.events() == [PresenceChanged(room.room_id, 2)]
    resent = decoded(alice)
    assert len(resent) == 2
    assert isinstance(resent[0], frames.Publish)
    assert resent[0].envelope == first.envelope
    # The first copy had been delivered: bob drops the second by its id.
    bob.receive(relay_deliver(frames.encode_frame(first)), NOW + 2)
    bob.receive(relay_deliver(frames.encode_frame(resent[0])), NOW + 3)
    events = bob.events()
    assert [type(e) for e in events] == [MessageReceived, MessageRejected]
    assert isinstance(events[1], MessageRejected)
    assert events[1].reason == "ReplayedMessage"


def test_release_ends_the_wait_for_members(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=3)
    alice.connection_lost()
    alice.send_text(room.room_id, "anyone?", NOW)
    alice.connection_made()
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    assert alice.holding(room.room_id)
    assert alice.frames_to_send() == []
    alice.release(room.room_id)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)


@pytest.mark.parametrize("joined_between_failed_tries", [False, True])
def test_a_room_first_joined_after_the_relay_was_out_of_reach_waits_the_whole_grace(
    room: RoomKeys, joined_between_failed_tries: bool
) -> None:
    """A client that found the relay out of reach (restarting) has no count from before:
    whoever else is in the room may be reconnecting too, so what it wrote waits until the
    caller's grace is over, however many members the relay says are back."""
    alice = make_session(1, "alice")
    if not joined_between_failed_tries:
        alice.join(room)
    alice.connect_failed()
    if joined_between_failed_tries:
        alice.join(room)
    alice.connect_failed()  # the backoff's next try
    alice.send_text(room.room_id, "the relay is back?", NOW)
    connect_and_join_again(alice, room, members=5)
    assert alice.holding(room.room_id)
    assert alice.held_since(room.room_id) == NOW
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 6)), NOW + 1)
    assert alice.frames_to_send() == []  # no count says when all are back
    alice.release(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Publish]


def test_a_failed_try_long_ago_holds_no_room_joined_since(room: RoomKeys) -> None:
    """Only rooms there when a try fails are held: a room joined later (the web client
    stops trying while it has no room) sends at once once the relay lets it in."""
    alice = make_session(1, "alice")
    other = RoomKeys.from_minikey(KEY_B)
    alice.join(other)
    alice.connect_failed()
    alice.leave(other.room_id)
    alice.join(room)
    alice.send_text(room.room_id, "an hour later", NOW)
    connect_and_join_again(alice, room, members=2)
    assert not alice.holding(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Publish]


def test_went_out_says_whether_the_relay_may_have_a_message(room: RoomKeys) -> None:
    """Refused copies are not on the relay; one on the wire when the connection dropped
    may be, whatever becomes of the copies after it."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=1)
    alice.connection_lost()
    message = alice.send_text(room.room_id, "went?", NOW)
    assert not alice.went_out(message.message_id)  # only waited
    connect_and_join_again(alice, room, members=1)
    (copy,) = sent_publishes(alice)
    assert alice.went_out(message.message_id)
    limited = frames.Error(ErrorCode.RATE_LIMITED, copy.ref, room.room_id, "slow down")
    alice.receive(frames.encode_frame(limited), NOW)
    assert not alice.went_out(message.message_id)  # refused: the relay has none
    alice.resend_unacknowledged()
    (copy,) = sent_publishes(alice)
    alice.connection_lost()  # on the wire: taken and passed on, maybe
    connect_and_join_again(alice, room, members=1)
    (copy,) = sent_publishes(alice)
    alice.receive(frames.encode_frame(dataclasses.replace(limited, ref=copy.ref)), NOW)
    assert alice.went_out(message.message_id)


def test_a_release_for_good_outlasts_later_failed_tries_and_drops(room: RoomKeys) -> None:
    """A caller whose deadline is near (``send --timeout``) wants its message sent, not
    held past that deadline by a try that fails after it said so, or by a later drop."""
    alice = make_session(1, "alice")
    alice.join(room)
    alice.release(room.room_id, for_good=True)
    alice.connect_failed()
    alice.send_text(room.room_id, "now", NOW)
    connect_and_join_again(alice, room, members=1)
    assert not alice.holding(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Publish]
    alice.connection_lost()
    alice.connect_failed()
    connect_and_join_again(alice, room, members=1)
    assert not alice.holding(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Publish]  # resent at once


def test_a_room_joined_at_the_first_try_or_joined_before_waits_as_before(room: RoomKeys) -> None:
    """Reached at its first try, a client sends at once; one that had been in the room
    waits for the count from before, not the whole grace, after failed tries too."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=2)
    alice.send_text(room.room_id, "at once", NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Publish]
    alice.connection_lost()
    alice.connect_failed()
    alice.send_text(room.room_id, "after the outage", NOW + 1)
    connect_and_join_again(alice, room, members=1)
    assert alice.holding(room.room_id)
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 2)), NOW + 2)
    assert not alice.holding(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Publish, frames.Publish]


def test_a_drop_during_the_wait_keeps_waiting_for_the_count_before_the_first(
    room: RoomKeys,
) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=3)
    alice.connection_lost()
    alice.send_text(room.room_id, "anyone?", NOW)
    connect_and_join_again(alice, room, members=1)
    alice.connection_lost()  # again, before the others are back
    connect_and_join_again(alice, room, members=2)
    assert alice.holding(room.room_id)
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 3)), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Publish]


def test_a_rate_limited_message_stays_in_the_outbox_and_is_resent(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.send_text(room.room_id, "too fast", NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    error = frames.Error(ErrorCode.RATE_LIMITED, publish.ref, frames.NO_ROOM, "slow down")
    alice.receive(frames.encode_frame(error), NOW)
    assert isinstance(alice.events()[0], Refused)
    assert alice.unacknowledged == 1
    alice.resend_unacknowledged()
    (again,) = decoded(alice)
    assert isinstance(again, frames.Publish)
    assert again.envelope == publish.envelope


def test_a_known_name_with_a_new_key_is_flagged(room: RoomKeys) -> None:
    alice, mallory, bob = make_session(1, "alice"), make_session(3, "alice"), make_session(2, "b")
    for session in (alice, mallory, bob):
        session.connection_made()
        join_fully(session, room)
    alice.send_text(room.room_id, "it is me", NOW)
    mallory.send_text(room.room_id, "it is me too", NOW)
    bob.receive(relay_deliver(alice.frames_to_send()[0]), NOW)
    bob.receive(relay_deliver(mallory.frames_to_send()[0]), NOW)
    first, second = bob.events()
    assert isinstance(first, MessageReceived)
    assert isinstance(second, MessageReceived)
    assert not first.key_changed
    assert second.key_changed
    assert first.fingerprint != second.fingerprint


def test_every_message_under_our_own_name_from_another_key_is_flagged(room: RoomKeys) -> None:
    """PROTOCOL.md 4.3: no message of ours comes back to us, so without our own name known
    with our key, Mallory's first "alice" would go unflagged, and the rest would follow."""
    alice, mallory = make_session(1, "alice"), make_session(3, "Alice ")
    also_alice = make_session(1, "alice")  # the same device: another process of ours
    nameless, stranger = make_session(4, ""), make_session(5, "")
    for session in (alice, mallory, also_alice, nameless, stranger):
        session.connection_made()
        join_fully(session, room)
    for text in ("it is me", "still me"):
        mallory.send_text(room.room_id, text, NOW)
    also_alice.send_text(room.room_id, "me, from another window", NOW)
    for publish in mallory.frames_to_send() + also_alice.frames_to_send():
        alice.receive(relay_deliver(publish), NOW)
    events = alice.events()
    assert all(isinstance(e, MessageReceived) for e in events)
    assert [e.key_changed for e in events if isinstance(e, MessageReceived)] == [
        True,
        True,
        False,
    ]
    # No name is no name of ours: a stranger without one is not flagged for it.
    stranger.send_text(room.room_id, "hello", NOW)
    nameless.receive(relay_deliver(stranger.frames_to_send()[0]), NOW)
    (event,) = nameless.events()
    assert isinstance(event, MessageReceived)
    assert not event.key_changed


def test_a_text_that_is_not_utf8_is_refused_without_quoting_it(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    with pytest.raises(UsageError, match="encodable as UTF-8") as refused:
        alice.send_text(room.room_id, "secret \udcff", NOW)
    assert "secret" not in str(refused.value)
    assert refused.value.__suppress_context__  # no traceback quoting it either
    assert alice.frames_to_send() == []
    assert alice.unacknowledged == 0


def test_a_delivery_from_another_room_is_rejected_not_shown(room: RoomKeys) -> None:
    other = RoomKeys.from_minikey(KEY_B)
    alice, bob = make_session(1, "alice"), make_session(2, "bob")
    alice.connection_made()
    join_fully(alice, other)
    bob.connection_made()
    join_fully(bob, room)
    alice.send_text(other.room_id, "wrong room", NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    # A relay relabels the envelope with bob's room id.
    forged = frames.encode_frame(frames.Deliver(room.room_id, publish.envelope))
    bob.receive(forged, NOW)
    assert bob.events() == [MessageRejected(room.room_id, "DecryptionFailed")]


def test_room_expiry_forgets_the_room_and_its_outbox(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.send(room.room_id, Kind.TEXT, b"late", NOW)
    decoded(alice)
    error = frames.Error(ErrorCode.ROOM_EXPIRED, 0, room.room_id, "expired")
    alice.receive(frames.encode_frame(error), NOW)
    events = alice.events()
    assert RoomExpired(room.room_id) in events
    assert room.room_id not in alice.rooms
    assert alice.unacknowledged == 0


def test_ping_and_pong(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    alice.ping(42)
    assert decoded(alice) == [frames.Ping(42)]
    alice.receive(frames.encode_frame(frames.Pong(42)), NOW)
    assert alice.events() == [PongReceived(42)]


def test_a_client_only_frame_from_the_relay_is_a_frame_error(room: RoomKeys) -> None:
    from instantroom.protocol.errors import FrameError

    alice = make_session(1, "alice")
    alice.connection_made()
    with pytest.raises(FrameError):
        alice.receive(frames.encode_frame(frames.Ping(1)), NOW)


def test_a_frame_while_disconnected_counts_for_nothing(room: RoomKeys) -> None:
    """A JOINED taken with no connection would have the next connection publish the outbox
    before its own JOINED, into a room it is not in yet."""
    alice = make_session(1, "alice")
    alice.connection_made()
    alice.join(room)
    decoded(alice)
    alice.connection_lost()
    waiting = alice.send_text(room.room_id, "after the outage", NOW)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 2)), NOW)
    assert alice.events() == []
    assert not alice.rooms[room.room_id].joined
    alice.connection_made()
    assert [type(f) for f in decoded(alice)] == [frames.Join]  # no PUBLISH before JOINED
    assert [m for m, _, _ in alice.outbox_of(room.room_id)] == [waiting.message_id]


def test_the_earlier_expiry_holds_and_a_relay_cannot_erase_it(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    alice.join(room, NOW + 1000)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    decoded(alice)
    # The relay says "not known" (0): the room keeps its own expiry.
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    assert alice.events() == [Joined(room.room_id, NOW + 1000, 1)]
    alice.expire(NOW + 999)
    assert room.room_id in alice.rooms
    alice.send_text(room.room_id, "unsent", NOW)
    alice.expire(NOW + 1000)
    assert alice.events() == [RoomExpired(room.room_id)]
    assert room.room_id not in alice.rooms
    assert alice.unacknowledged == 0


def test_a_relay_cannot_stretch_a_room_past_what_the_client_knows(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    alice.join(room, NOW + 1000)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, NOW + 10**9, 1)), NOW)
    assert alice.rooms[room.room_id].expires_at_ms == NOW + 1000


def test_one_room_cannot_exhaust_another_rooms_replay_filter(room: RoomKeys) -> None:
    other = RoomKeys.from_minikey(KEY_B)
    alice, bob = make_session(1, "alice"), make_session(2, "bob")
    for session in (alice, bob):
        session.connection_made()
        join_fully(session, room)
        join_fully(session, other)
    bob.rooms[other.room_id].replays.capacity = 3
    for n in range(5):  # a flood in the other room, stamped in the future
        alice.send_text(other.room_id, f"flood {n}", NOW + 200_000)
    for publish in alice.frames_to_send():
        bob.receive(relay_deliver(publish), NOW)
    bob.events()
    alice.send_text(room.room_id, "still heard", NOW)
    bob.receive(relay_deliver(alice.frames_to_send()[0]), NOW)
    (event,) = bob.events()
    assert isinstance(event, MessageReceived)
    assert event.message.text == "still heard"


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.PROOF_FAILED,
        ErrorCode.TOO_MANY_ROOMS,
        ErrorCode.EXPIRY_TOO_FAR,
    ],
)
def test_a_refused_join_forgets_the_room_and_gives_up_its_outbox(
    room: RoomKeys, code: ErrorCode
) -> None:
    alice = joining(room)
    waiting = alice.send_text(room.room_id, "never sent", NOW)
    refusal = frames.Error(code, 0, room.room_id, "no")
    alice.receive(frames.encode_frame(refusal), NOW)
    assert room.room_id not in alice.rooms
    assert alice.events() == [
        Refused(code, room.room_id, 0, "no"),
        NotSent(room.room_id, waiting.message_id, NOT_SENT_REFUSED),
    ]
    assert alice.outbox_of(room.room_id) == []
    alice.connection_lost()
    alice.connection_made()
    assert alice.frames_to_send() == []  # not asked again after a reconnect


@pytest.mark.parametrize("code", [ErrorCode.ROOM_FULL, ErrorCode.RELAY_FULL])
def test_a_join_refused_for_want_of_a_place_keeps_the_room_and_its_outbox(
    room: RoomKeys, code: ErrorCode
) -> None:
    """PROTOCOL.md 10.6: a full room or relay has a place again once someone leaves, so
    the room and what waits for it stay until ``retry_join`` gets it in."""
    alice = joining(room)
    waiting = alice.send_text(room.room_id, "sent once there is room", NOW)
    alice.receive(frames.encode_frame(frames.Error(code, 0, room.room_id, "full")), NOW)
    assert alice.events() == [Refused(code, room.room_id, 0, "full")]
    assert room.room_id in alice.rooms
    assert [m for m, _, _ in alice.outbox_of(room.room_id)] == [waiting.message_id]
    alice.retry_join(room.room_id)
    (join,) = decoded(alice)
    assert isinstance(join, frames.Join)
    alice.retry_join(room.room_id)  # its JOIN is unanswered: no second one
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 2)), NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert alice.events()[-1] == Accepted(room.room_id, waiting.message_id)


def test_a_member_back_from_an_outage_to_a_room_now_full_keeps_it(room: RoomKeys) -> None:
    """A member whose place was taken while it reconnected waits for another; what it
    wrote meanwhile is not given up."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=2)
    alice.connection_lost()
    waiting = alice.send_text(room.room_id, "written during the outage", NOW)
    alice.connection_made()
    decoded(alice)
    refusal = frames.Error(ErrorCode.ROOM_FULL, 0, room.room_id, "This room is full.")
    alice.receive(frames.encode_frame(refusal), NOW)
    assert alice.events() == [Refused(ErrorCode.ROOM_FULL, room.room_id, 0, "This room is full.")]
    assert [m for m, _, _ in alice.outbox_of(room.room_id)] == [waiting.message_id]
    alice.retry_join(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Join]


def test_expiry_leaves_the_room_on_the_relay(room: RoomKeys) -> None:
    """PROTOCOL.md 9: at expiry by its own clock a client forgets the room and sends
    LEAVE, whether or not the relay said anything."""
    alice = make_session(1, "alice")
    alice.connection_made()
    alice.join(room, NOW + 1000)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, NOW + 1000, 1)), NOW)
    alice.events()
    alice.expire(NOW + 999)
    assert alice.frames_to_send() == []
    alice.expire(NOW + 1000)
    assert decoded(alice) == [frames.Leave(room.room_id)]
    assert alice.events() == [RoomExpired(room.room_id)]


def test_expiry_while_disconnected_sends_nothing(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.join(room, NOW + 1000)
    alice.expire(NOW + 1000)
    assert alice.events() == [RoomExpired(room.room_id)]
    alice.connection_made()
    assert alice.frames_to_send() == []  # nothing to leave, nothing to join


def test_not_joined_joins_again_then_resends(room: RoomKeys) -> None:
    """PROTOCOL.md 10.6: on NOT_JOINED a client joins again, then resends, once for all
    the PUBLISHes the relay refused."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.send_text(room.room_id, "one", NOW)
    alice.send_text(room.room_id, "two", NOW)
    first, second = decoded(alice)
    assert isinstance(first, frames.Publish)
    assert isinstance(second, frames.Publish)
    for publish in (first, second):
        refusal = frames.Error(ErrorCode.NOT_JOINED, publish.ref, room.room_id, "not a member")
        alice.receive(frames.encode_frame(refusal), NOW)
    # One JOIN, not two: a second would replace the challenge under the first PROOF.
    (join,) = decoded(alice)
    assert join == frames.Join(room.room_id, room.public_key, NOW + 3_600_000)
    assert not alice.rooms[room.room_id].joined
    assert alice.unacknowledged == 2
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    (proof,) = decoded(alice)
    assert isinstance(proof, frames.Proof)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, NOW + 3_600_000, 1)), NOW)
    resent = decoded(alice)
    assert [type(f) for f in resent] == [frames.Publish, frames.Publish]
    assert [f.envelope for f in resent if isinstance(f, frames.Publish)] == [
        first.envelope,
        second.envelope,
    ]


def test_a_relay_refusing_as_not_joined_again_and_again_gets_one_proof_per_pause(
    room: RoomKeys,
) -> None:
    """PROTOCOL.md 10.6: a relay that lets the member back in, then refuses its message as
    NOT_JOINED again, got a proof per round trip, at will. Once a connection a NOT_JOINED
    joins again at once; then not sooner than REJOIN_PAUSE_MS after the last proof."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.send_text(room.room_id, "one", NOW)
    proofs = 0
    for n in range(20):
        now = NOW + n * 100  # twenty round trips in two seconds
        alice.tick(now)
        for frame in decoded(alice):
            if isinstance(frame, frames.Publish):
                refusal = frames.Error(ErrorCode.NOT_JOINED, frame.ref, room.room_id, "no")
                alice.receive(frames.encode_frame(refusal), now)
            elif isinstance(frame, frames.Join):
                challenge = frames.Challenge(room.room_id, n.to_bytes(32, "big"))
                alice.receive(frames.encode_frame(challenge), now)
                proofs += sum(isinstance(f, frames.Proof) for f in decoded(alice))
                joined = frames.Joined(room.room_id, NOW + 3_600_000, 1)
                alice.receive(frames.encode_frame(joined), now)
    assert proofs == 1
    assert alice.unacknowledged == 1  # the message waits, kept
    proved = NOW + 100  # the proof for the first JOIN again
    alice.tick(proved + REJOIN_PAUSE_MS - 1)
    assert decoded(alice) == []
    alice.tick(proved + REJOIN_PAUSE_MS)
    assert [type(f) for f in decoded(alice)] == [frames.Join]  # the pause is over
    # A new connection starts afresh: its JOIN, and one more at once after a NOT_JOINED.
    alice.connection_lost()
    alice.connection_made()
    assert [type(f) for f in decoded(alice)] == [frames.Join]


def test_a_relay_refusing_each_proof_as_rate_limited_gets_one_per_pause(room: RoomKeys) -> None:
    """PROTOCOL.md 10.6: the client retries a JOIN refused as RATE_LIMITED (retry_join): a
    relay refusing every PROOF so got one a retry. Not sooner than REJOIN_PAUSE_MS after
    the last one, but for the first retry on a connection."""
    alice = make_session(1, "alice")
    alice.connection_made()
    alice.join(room)
    proofs = []
    for n in range(20):
        now = NOW + n * 1000  # the client retries a second after each refusal
        alice.tick(now)
        alice.retry_join(room.room_id)
        for frame in decoded(alice):
            assert isinstance(frame, frames.Join)
            alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), now)
            (proof,) = decoded(alice)
            assert isinstance(proof, frames.Proof)
            proofs.append(now)
            limited = frames.Error(ErrorCode.RATE_LIMITED, 0, room.room_id, "slow down")
            alice.receive(frames.encode_frame(limited), now)
    assert proofs == [NOW, NOW + 1000, NOW + 11_000]


def test_not_joined_naming_no_publish_of_ours_in_that_room_sends_no_join(room: RoomKeys) -> None:
    """Each JOIN costs a join proof the relay keeps (PROTOCOL.md 8.6): a NOT_JOINED naming
    a ref never used, ref 0, or a PUBLISH of another room got one each, as fast as the
    relay liked to ask."""
    other = RoomKeys.from_minikey(KEY_B)
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    join_fully(alice, other)
    alice.send_text(other.room_id, "in the other room", NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    for ref in (7777, 0, publish.ref):  # the last: our PUBLISH, but of the other room
        refusal = frames.Error(ErrorCode.NOT_JOINED, ref, room.room_id, "not a member")
        alice.receive(frames.encode_frame(refusal), NOW)
    # The refused PUBLISH goes again (it was not taken); no JOIN goes anywhere.
    assert [type(f) for f in decoded(alice)] == [frames.Publish]
    assert alice.rooms[room.room_id].joined


def test_not_joined_for_a_room_not_joined_yet_sends_no_join(room: RoomKeys) -> None:
    alice = joining(room)
    refusal = frames.Error(ErrorCode.NOT_JOINED, 7, room.room_id, "not a member")
    alice.receive(frames.encode_frame(refusal), NOW)
    assert alice.frames_to_send() == []  # the JOIN already sent is still under way
    assert room.room_id in alice.rooms


def test_an_error_naming_an_unknown_ref_frees_no_place(room: RoomKeys) -> None:
    """Only the ref of a PUBLISH on the wire frees a place: an ERROR naming an unknown ref
    changes nothing."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.send_text(room.room_id, "one", NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    stray = frames.Error(ErrorCode.RATE_LIMITED, publish.ref + 1, room.room_id, "slow down")
    alice.receive(frames.encode_frame(stray), NOW)
    assert alice.in_flight == 1
    assert not alice.waiting_to_resend


def sent_publishes(session: ClientSession) -> list[frames.Publish]:
    out = decoded(session)
    assert all(isinstance(f, frames.Publish) for f in out)
    return [f for f in out if isinstance(f, frames.Publish)]


def test_at_most_max_in_flight_publishes_are_unanswered_on_the_wire(room: RoomKeys) -> None:
    """PROTOCOL.md 10.6: a client keeps at most MAX_IN_FLIGHT PUBLISHes unanswered; each
    ACK lets the next leave, oldest first."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    sent = [alice.send_text(room.room_id, f"m{n}", NOW) for n in range(MAX_IN_FLIGHT + 50)]
    first = sent_publishes(alice)
    assert len(first) == MAX_IN_FLIGHT == alice.in_flight
    assert alice.unacknowledged == MAX_IN_FLIGHT + 50
    for publish in first[:10]:
        alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert alice.events() == [Accepted(room.room_id, m.message_id) for m in sent[:10]]
    more = sent_publishes(alice)
    assert len(more) == 10
    assert alice.in_flight == MAX_IN_FLIGHT
    assert len({p.ref for p in first + more}) == MAX_IN_FLIGHT + 10

    # Everything answered, everything sent, in the order written.
    on_wire = first[10:] + more
    while on_wire:
        for publish in on_wire:
            alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
        on_wire = sent_publishes(alice)
    assert alice.unacknowledged == 0
    accepted = [e.message_id for e in alice.events() if isinstance(e, Accepted)]
    assert accepted == [m.message_id for m in sent[10:]]


def test_a_rate_limited_publish_pauses_publishing_until_the_one_retry(room: RoomKeys) -> None:
    """After RATE_LIMITED nothing more is published, even as ACKs free places, until the
    caller's one retry; then the refused go first, in their order, within the limit."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    for n in range(MAX_IN_FLIGHT + 20):
        alice.send_text(room.room_id, f"m{n}", NOW)
    first = sent_publishes(alice)
    for publish in first[:30]:  # taken
        alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert len(sent_publishes(alice)) == 20  # the rest of the outbox: 90 on the wire
    for publish in first[30:40]:  # refused for the rate: the next must wait
        limited = frames.Error(ErrorCode.RATE_LIMITED, publish.ref, room.room_id, "slow down")
        alice.receive(frames.encode_frame(limited), NOW)
        assert alice.waiting_to_resend
    assert alice.in_flight == 80
    alice.send_text(room.room_id, "written meanwhile", NOW)
    for publish in first[40:50]:
        alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert alice.frames_to_send() == []  # paused: places free, nothing sent
    assert alice.in_flight == 70
    alice.resend_unacknowledged()
    assert not alice.waiting_to_resend
    again = sent_publishes(alice)
    assert [p.envelope for p in again[:10]] == [p.envelope for p in first[30:40]]
    assert len(again) == 11  # the ten refused, then the one written meanwhile
    assert alice.in_flight == 81


def test_a_reconnect_ends_the_pause_and_resends_within_the_limit(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    for n in range(3 * MAX_IN_FLIGHT):
        alice.send_text(room.room_id, f"m{n}", NOW)
    (publish, *_) = sent_publishes(alice)
    limited = frames.Error(ErrorCode.RATE_LIMITED, publish.ref, room.room_id, "slow down")
    alice.receive(frames.encode_frame(limited), NOW)
    alice.connection_lost()
    assert alice.in_flight == 0
    assert not alice.waiting_to_resend
    alice.connection_made()
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    resent = sent_publishes(alice)
    assert len(resent) == MAX_IN_FLIGHT
    assert resent[0].envelope == publish.envelope


def test_a_publish_of_a_left_room_keeps_its_place_until_answered(room: RoomKeys) -> None:
    """A PUBLISH on the wire counts until the relay answers it, even for a room left."""
    other = RoomKeys.from_minikey(KEY_B)
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    join_fully(alice, other)
    for n in range(MAX_IN_FLIGHT):
        alice.send_text(room.room_id, f"m{n}", NOW)
    first = sent_publishes(alice)
    alice.leave(room.room_id)
    assert decoded(alice) == [frames.Leave(room.room_id)]
    alice.send_text(other.room_id, "elsewhere", NOW)
    assert alice.frames_to_send() == []
    refusal = frames.Error(ErrorCode.NOT_JOINED, first[0].ref, room.room_id, "not a member")
    alice.receive(frames.encode_frame(refusal), NOW)
    (publish,) = sent_publishes(alice)
    assert publish.room_id == other.room_id
    alice.receive(frames.encode_frame(frames.Ack(first[1].ref)), NOW)
    assert not any(isinstance(e, Accepted) for e in alice.events())


def test_a_message_the_relay_has_not_taken_is_given_up_at_55_minutes(room: RoomKeys) -> None:
    """PROTOCOL.md 7 and 10.6: receivers refuse a message over an hour old, so the outbox
    gives one up at OUTBOX_MAX_AGE_MS, waiting to be sent or not, and says so."""
    assert OUTBOX_MAX_AGE_MS == 55 * 60 * 1000
    alice = make_session(1, "alice")
    alice.join(room)  # not connected: an outage
    early = alice.send_text(room.room_id, "early", NOW)
    late = alice.send_text(room.room_id, "late", NOW + 1000)
    alice.expire(NOW + OUTBOX_MAX_AGE_MS - 1)
    assert alice.events() == []
    assert alice.unacknowledged == 2
    alice.expire(NOW + OUTBOX_MAX_AGE_MS)
    assert alice.events() == [NotSent(room.room_id, early.message_id, NOT_SENT_IN_TIME)]
    assert alice.unacknowledged == 1
    assert room.room_id in alice.rooms  # the room stays
    # Back online, only the younger one is sent.
    connect_and_join_again(alice, room, members=1)
    (publish,) = sent_publishes(alice)
    alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert alice.events() == [Accepted(room.room_id, late.message_id)]


def test_a_message_given_up_on_the_wire_keeps_its_place_until_its_late_ack(
    room: RoomKeys,
) -> None:
    """A PUBLISH given up while on the wire still counts as in flight until answered; its
    ACK then reports nothing, and frees its place for the next."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    old = [alice.send_text(room.room_id, f"old {n}", NOW) for n in range(MAX_IN_FLIGHT)]
    on_wire = sent_publishes(alice)
    assert alice.in_flight == MAX_IN_FLIGHT
    young = alice.send_text(room.room_id, "young", NOW + 60_000)
    assert alice.frames_to_send() == []  # no place on the wire
    alice.expire(NOW + OUTBOX_MAX_AGE_MS)
    assert alice.events() == [NotSent(room.room_id, m.message_id, NOT_SENT_IN_TIME) for m in old]
    assert alice.unacknowledged == 1
    assert alice.in_flight == MAX_IN_FLIGHT  # still on the wire, unanswered
    alice.receive(frames.encode_frame(frames.Ack(on_wire[0].ref)), NOW + OUTBOX_MAX_AGE_MS)
    assert alice.events() == []  # a late ACK for a message given up: nothing accepted
    assert alice.in_flight == MAX_IN_FLIGHT  # its place went to the young message
    (publish,) = sent_publishes(alice)
    alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW + OUTBOX_MAX_AGE_MS)
    assert alice.events() == [Accepted(room.room_id, young.message_id)]
    for answered in on_wire[1:]:
        alice.receive(frames.encode_frame(frames.Ack(answered.ref)), NOW + OUTBOX_MAX_AGE_MS)
    assert alice.events() == []
    assert alice.in_flight == 0
    assert alice.unacknowledged == 0
    alice.send_text(room.room_id, "after", NOW + OUTBOX_MAX_AGE_MS)
    assert len(sent_publishes(alice)) == 1


def test_the_outbox_holds_at_most_max_outbox_messages(room: RoomKeys) -> None:
    assert MAX_OUTBOX == 10_000
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    for n in range(MAX_OUTBOX):
        alice.send_text(room.room_id, f"m{n}", NOW)
    first = sent_publishes(alice)
    assert len(first) == MAX_IN_FLIGHT
    with pytest.raises(UsageError, match="10000 messages are waiting"):
        alice.send_text(room.room_id, "one too many", NOW)
    assert alice.unacknowledged == MAX_OUTBOX
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Ack(first[0].ref)), NOW)
    sent_publishes(alice)  # the next waiting one takes the free place on the wire
    alice.send_text(room.room_id, "room again", NOW)  # an ACK made room
    assert alice.unacknowledged == MAX_OUTBOX


def test_a_late_join_retry_sends_no_second_join(room: RoomKeys) -> None:
    """A JOIN retry timed after RATE_LIMITED fires after the room was left and joined
    again: its JOIN would replace the challenge under the new JOIN's PROOF. retry_join
    sends nothing while a JOIN is unanswered."""
    alice = joining(room)
    limited = frames.Error(ErrorCode.RATE_LIMITED, 0, room.room_id, "slow down")
    alice.receive(frames.encode_frame(limited), NOW)
    alice.leave(room.room_id)
    alice.join(room)
    assert [type(f) for f in decoded(alice)] == [frames.Leave, frames.Join]
    alice.retry_join(room.room_id)  # the first JOIN's timer, late
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Proof]
    alice.retry_join(room.room_id)
    assert alice.frames_to_send() == []
    # Refused for the rate again: now the retry does send a JOIN.
    alice.receive(frames.encode_frame(limited), NOW)
    alice.retry_join(room.room_id)
    assert decoded(alice) == [frames.Join(room.room_id, room.public_key, 0)]


def test_leaving_and_joining_again_before_the_answer_sends_no_second_join(
    room: RoomKeys,
) -> None:
    """A LEAVE and a new JOIN behind an unanswered JOIN would make the relay forget the
    first challenge and send a second: the PROOF for the first would then fail, and the
    room be given up. The LEAVE waits for the answer; joining again cancels it."""
    alice = make_session(1, "alice")
    alice.connection_made()
    alice.join(room)
    assert [type(f) for f in decoded(alice)] == [frames.Join]
    alice.leave(room.room_id)
    alice.join(room)
    assert alice.frames_to_send() == []
    challenge = bytes(range(32))
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, challenge)), NOW)
    (proof,) = decoded(alice)
    assert isinstance(proof, frames.Proof)
    verify_join_proof(room.public_key, room.room_id, challenge, proof.signature)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 2)), NOW)
    assert alice.events() == [Joined(room.room_id, 0, 2)]


@pytest.mark.parametrize(
    ("answer", "then"),
    [
        (frames.Challenge(ROOM_A_ID, bytes(32)), True),
        (frames.Joined(ROOM_A_ID, 0, 1), True),
        (frames.Error(ErrorCode.ALREADY_JOINED, 0, ROOM_A_ID, "in"), True),
        (frames.Error(ErrorCode.RATE_LIMITED, 0, ROOM_A_ID, "slow"), False),
        (frames.Error(ErrorCode.PROOF_FAILED, 0, ROOM_A_ID, "no"), False),
    ],
)
def test_a_room_left_before_its_join_was_answered_is_left_once_it_is(
    room: RoomKeys, answer: frames.Frame, then: bool
) -> None:
    """The held LEAVE goes out with the answer when that answer left us challenged or a
    member; after a refusal there is nothing to leave. Either way the answer is not
    shown, and a later JOIN goes out at once."""
    alice = joining(room)
    alice.leave(room.room_id)
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(answer), NOW)
    assert decoded(alice) == ([frames.Leave(room.room_id)] if then else [])
    assert alice.events() == []
    alice.join(room)
    assert decoded(alice) == [frames.Join(room.room_id, room.public_key, 0)]


def test_a_reconnect_forgets_a_held_leave(room: RoomKeys) -> None:
    alice = joining(room)
    alice.leave(room.room_id)
    alice.connection_lost()
    alice.connection_made()
    alice.join(room)
    assert decoded(alice) == [frames.Join(room.room_id, room.public_key, 0)]


def test_a_join_refused_for_a_held_leaves_place_is_sent_again_behind_it() -> None:
    """A held LEAVE keeps its room's place on the relay until the answer comes: at the
    relay's rooms-per-connection limit, a JOIN for another room sent meanwhile is refused
    TOO_MANY_ROOMS. That JOIN goes again, once, behind the LEAVE."""
    room_a, room_b = RoomKeys.from_minikey(KEY_A), RoomKeys.from_minikey(KEY_B)
    alice = joining(room_a)
    alice.leave(room_a.room_id)
    alice.join(room_b)
    assert decoded(alice) == [frames.Join(room_b.room_id, room_b.public_key, 0)]
    alice.receive(frames.encode_frame(frames.Challenge(room_a.room_id, bytes(32))), NOW)
    assert decoded(alice) == [frames.Leave(room_a.room_id)]
    too_many = frames.Error(ErrorCode.TOO_MANY_ROOMS, 0, room_b.room_id, "too many")
    alice.receive(frames.encode_frame(too_many), NOW)
    assert decoded(alice) == [frames.Join(room_b.room_id, room_b.public_key, 0)]
    assert alice.events() == []
    # Refused again: that one is the relay's limit, and the room is given up.
    alice.receive(frames.encode_frame(too_many), NOW)
    assert alice.frames_to_send() == []
    assert alice.events() == [Refused(ErrorCode.TOO_MANY_ROOMS, room_b.room_id, 0, "too many")]
    assert room_b.room_id not in alice.rooms


def test_a_join_refused_before_the_held_leave_went_out_waits_for_it() -> None:
    """With several relays JOINED comes late: the refusal of the other room's JOIN can
    come first. Its JOIN then waits until the held LEAVE has gone out."""
    room_a, room_b = RoomKeys.from_minikey(KEY_A), RoomKeys.from_minikey(KEY_B)
    alice = joining(room_a)
    alice.receive(frames.encode_frame(frames.Challenge(room_a.room_id, bytes(32))), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Proof]
    alice.leave(room_a.room_id)
    alice.join(room_b)
    decoded(alice)
    too_many = frames.Error(ErrorCode.TOO_MANY_ROOMS, 0, room_b.room_id, "too many")
    alice.receive(frames.encode_frame(too_many), NOW)
    assert alice.frames_to_send() == []
    alice.retry_join(room_b.room_id)  # a caller's timer changes nothing
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Joined(room_a.room_id, 0, 1)), NOW)
    assert decoded(alice) == [
        frames.Leave(room_a.room_id),
        frames.Join(room_b.room_id, room_b.public_key, 0),
    ]
    assert alice.events() == []


def test_leaving_a_room_whose_join_waits_behind_a_held_leave_sends_nothing() -> None:
    room_a, room_b = RoomKeys.from_minikey(KEY_A), RoomKeys.from_minikey(KEY_B)
    alice = joining(room_a)
    alice.leave(room_a.room_id)
    alice.join(room_b)
    decoded(alice)
    too_many = frames.Error(ErrorCode.TOO_MANY_ROOMS, 0, room_b.room_id, "too many")
    alice.receive(frames.encode_frame(too_many), NOW)
    alice.leave(room_b.room_id)
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Challenge(room_a.room_id, bytes(32))), NOW)
    assert decoded(alice) == [frames.Leave(room_a.room_id)]


# A CHALLENGE is answered only for an outstanding JOIN, once (PROTOCOL.md 8.6): a relay
# must not get proofs for challenges it brought from elsewhere.


def challenge_frame(room: RoomKeys, fill: int = 7) -> bytes:
    return frames.encode_frame(frames.Challenge(room.room_id, bytes([fill]) * 32))


def test_a_joined_session_does_not_answer_a_challenge(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.receive(challenge_frame(room), NOW)
    assert alice.frames_to_send() == []
    assert alice.events() == []


def test_a_second_challenge_for_one_join_is_not_answered(room: RoomKeys) -> None:
    alice = joining(room)
    alice.receive(challenge_frame(room, 1), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Proof]
    alice.receive(challenge_frame(room, 2), NOW)
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    assert alice.events() == [Joined(room.room_id, 0, 1)]


def test_a_challenge_with_no_join_sent_is_not_answered(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.join(room)  # not connected: no JOIN has gone out
    alice.receive(challenge_frame(room), NOW)
    assert alice.frames_to_send() == []
    alice.connection_made()
    alice.connection_lost()  # that JOIN is lost with its connection
    alice.receive(challenge_frame(room), NOW)
    assert alice.frames_to_send() == []


def test_a_challenge_after_the_join_was_refused_is_not_answered(room: RoomKeys) -> None:
    alice = joining(room)
    limited = frames.Error(ErrorCode.RATE_LIMITED, 0, room.room_id, "slow down")
    alice.receive(frames.encode_frame(limited), NOW)
    alice.events()
    alice.receive(challenge_frame(room), NOW)
    assert alice.frames_to_send() == []
    # A new JOIN is answered again, once.
    alice.retry_join(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Join]
    alice.receive(challenge_frame(room, 1), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Proof]
    alice.receive(challenge_frame(room, 2), NOW)
    assert alice.frames_to_send() == []


def test_a_challenge_after_a_join_refused_behind_a_held_leave_is_not_answered(
    room: RoomKeys,
) -> None:
    """TOO_MANY_ROOMS behind a held LEAVE answers the JOIN; its retry waits for the
    LEAVE, so a CHALLENGE meanwhile is none of ours."""
    other = RoomKeys.from_minikey(KEY_B)
    alice = joining(room)
    alice.receive(challenge_frame(room), NOW)
    decoded(alice)
    alice.leave(room.room_id)  # held: its JOIN is unanswered
    alice.join(other)
    decoded(alice)
    too_many = frames.Error(ErrorCode.TOO_MANY_ROOMS, 0, other.room_id, "too many")
    alice.receive(frames.encode_frame(too_many), NOW)
    assert alice.frames_to_send() == []
    alice.receive(challenge_frame(other), NOW)
    assert alice.frames_to_send() == []


def test_leaving_and_joining_again_does_not_earn_a_second_proof(room: RoomKeys) -> None:
    """Joining again behind an unanswered JOIN sends no JOIN (its answer serves the new
    join): the CHALLENGE already answered for it is not answered again."""
    alice = joining(room)
    alice.receive(challenge_frame(room, 1), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Proof]
    alice.leave(room.room_id)
    alice.join(room)
    assert alice.frames_to_send() == []
    alice.receive(challenge_frame(room, 2), NOW)
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    assert alice.events() == [Joined(room.room_id, 0, 1)]
    assert alice.frames_to_send() == []


def test_each_reconnect_answers_its_own_join_once(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.connection_lost()
    alice.connection_made()
    assert [type(f) for f in decoded(alice)] == [frames.Join]
    alice.receive(challenge_frame(room), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Proof]
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW)
    alice.receive(challenge_frame(room), NOW)
    assert alice.frames_to_send() == []


# Likewise a refusal with ref 0 of a code that answers only a JOIN or PROOF counts only
# as the answer to an outstanding JOIN (PROTOCOL.md 8.6): a relay sending them at will
# would make a joined room "full for now", or have the client give a room up.
_ANSWERS_A_JOIN = [
    ErrorCode.RATE_LIMITED,
    ErrorCode.PROOF_FAILED,
    ErrorCode.NO_CHALLENGE,
    ErrorCode.TOO_MANY_ROOMS,
    ErrorCode.ROOM_FULL,
    ErrorCode.ALREADY_JOINED,
    ErrorCode.EXPIRY_TOO_FAR,
    ErrorCode.RELAY_FULL,
]


@pytest.mark.parametrize("code", _ANSWERS_A_JOIN)
def test_a_joined_room_ignores_a_refusal_of_a_join_it_did_not_send(
    room: RoomKeys, code: ErrorCode
) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=2)
    alice.receive(frames.encode_frame(frames.Error(code, 0, room.room_id, "no")), NOW)
    assert alice.events() == []
    state = alice.rooms[room.room_id]
    assert state.joined
    assert not state.join_sent
    assert not state.full_for_now
    alice.retry_join(room.room_id)
    assert alice.frames_to_send() == []
    message = alice.send_text(room.room_id, "still here", NOW)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert alice.events() == [Accepted(room.room_id, message.message_id)]


def test_a_joined_room_still_expires_when_the_relay_says_so(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    expired = frames.Error(ErrorCode.ROOM_EXPIRED, 0, room.room_id, "")
    alice.receive(frames.encode_frame(expired), NOW)
    assert room.room_id not in alice.rooms
    assert alice.events() == [
        Refused(ErrorCode.ROOM_EXPIRED, room.room_id, 0, ""),
        RoomExpired(room.room_id),
    ]


def test_only_the_answer_to_a_join_makes_a_room_full_for_now(room: RoomKeys) -> None:
    alice = joining(room)
    alice.receive(challenge_frame(room), NOW)
    assert [type(f) for f in decoded(alice)] == [frames.Proof]
    full = frames.encode_frame(frames.Error(ErrorCode.ROOM_FULL, 0, room.room_id, "full"))
    alice.receive(full, NOW)  # the answer to that PROOF
    assert alice.events() == [Refused(ErrorCode.ROOM_FULL, room.room_id, 0, "full")]
    assert alice.rooms[room.room_id].full_for_now
    # While the caller waits to try again, no JOIN is outstanding: nothing answers one.
    alice.receive(full, NOW)
    failed = frames.Error(ErrorCode.PROOF_FAILED, 0, room.room_id, "bad")
    alice.receive(frames.encode_frame(failed), NOW)
    assert alice.events() == []
    assert room.room_id in alice.rooms  # not given up
    alice.retry_join(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Join]
    alice.receive(full, NOW)  # the answer to the retry's JOIN
    assert alice.events() == [Refused(ErrorCode.ROOM_FULL, room.room_id, 0, "full")]
    alice.retry_join(room.room_id)
    assert [type(f) for f in decoded(alice)] == [frames.Join]
    alice.receive(challenge_frame(room), NOW)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 2)), NOW)
    assert alice.events() == [Joined(room.room_id, 0, 2)]


# Names compared in their canonical form (PROTOCOL.md 4.4), and how many are remembered.


def deliver_as(
    device_seed: int,
    name: str,
    room: RoomKeys,
    number: int,
    kind: int = Kind.TEXT,
    now_ms: int = NOW,
) -> bytes:
    """A DELIVER of a message by the device of ``device_seed`` under ``name``."""
    device = DeviceKey.from_private_bytes(bytes([device_seed]) * 32)
    counter = itertools.count(device_seed * 10**9 + number * 10)
    message = new_message(
        device,
        name,
        kind,
        b"hi" if kind == Kind.TEXT else b"",
        token_bytes=lambda n: next(counter).to_bytes(n, "big"),
        now_ms=now_ms,
    )
    envelope = seal_envelope(room, device, message, next(counter).to_bytes(12, "big"))
    return frames.encode_frame(frames.Deliver(room.room_id, envelope))


def received(session: ClientSession) -> list[MessageReceived]:
    events = session.events()
    assert all(isinstance(e, MessageReceived) for e in events)
    return [e for e in events if isinstance(e, MessageReceived)]


@pytest.mark.parametrize(
    "look_alike",
    ["alice ", "alice\u00a0", "Alice", "a\u200blice", "\uff41\uff4c\uff49\uff43\uff45",
     "alice\u202e", " ALICE\t"],
)  # fmt: skip
def test_a_look_alike_name_with_a_new_key_is_flagged(room: RoomKeys, look_alike: str) -> None:
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    bob.receive(deliver_as(1, "alice", room, 0), NOW)
    bob.receive(deliver_as(3, look_alike, room, 1), NOW)
    first, second = received(bob)
    assert not first.key_changed
    assert second.key_changed
    assert second.message.sender_name == look_alike  # shown as sent


@pytest.mark.parametrize("kind", [Kind.JOIN, Kind.TYPING, 9])
def test_a_message_not_shown_does_not_make_a_new_key_the_names(room: RoomKeys, kind: int) -> None:
    """Clients show TEXT only: a new key under a known name in another kind (flagged, but
    not shown) must not make the next TEXT with that key pass unflagged."""
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    bob.receive(deliver_as(1, "alice", room, 0), NOW)
    bob.receive(deliver_as(3, "alice", room, 1, kind), NOW)
    bob.receive(deliver_as(3, "Alice", room, 2), NOW)
    bob.receive(deliver_as(3, "alice", room, 3), NOW)  # a new key, once flagged, is the name's
    assert [e.key_changed for e in received(bob)] == [False, True, True, False]
    # A name not known yet is known from any kind: its first key is no key change.
    bob.receive(deliver_as(1, "carol", room, 4, kind), NOW)
    bob.receive(deliver_as(3, "carol", room, 5), NOW)
    assert [e.key_changed for e in received(bob)] == [False, True]


def test_one_device_under_spellings_of_one_name_is_not_flagged(room: RoomKeys) -> None:
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    for number, name in enumerate(["alice", "Alice ", "ALICE"]):
        bob.receive(deliver_as(1, name, room, number), NOW)
    assert [e.key_changed for e in received(bob)] == [False, False, False]


def test_a_homoglyph_from_another_script_is_another_name(room: RoomKeys) -> None:
    """Cyrillic a (U+0430) for Latin a: not caught; the fingerprint is the identity."""
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    bob.receive(deliver_as(1, "alice", room, 0), NOW)
    bob.receive(deliver_as(3, "\u0430lice", room, 1), NOW)
    first, second = received(bob)
    assert not second.key_changed
    assert first.fingerprint != second.fingerprint


def test_the_names_remembered_per_room_are_bounded(room: RoomKeys) -> None:
    """At most MAX_NAMES_PER_ROOM names per room; the least recently seen goes first."""
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    for number in range(MAX_NAMES_PER_ROOM):
        bob.receive(deliver_as(1, f"n{number}", room, number), NOW)
    bob.receive(deliver_as(1, "n0", room, MAX_NAMES_PER_ROOM), NOW)  # n0 seen again
    bob.receive(deliver_as(1, "newcomer", room, MAX_NAMES_PER_ROOM + 1), NOW)
    received(bob)
    names = bob.rooms[room.room_id].names
    assert len(names) == MAX_NAMES_PER_ROOM
    assert "n0" in names
    assert "n1" not in names  # the least recently seen
    # Another device under n0 is flagged; under n1, forgotten, it is not.
    bob.receive(deliver_as(3, "n0", room, 0), NOW)
    bob.receive(deliver_as(3, "n1", room, 1), NOW)
    assert [e.key_changed for e in received(bob)] == [True, False]
    assert len(names) == MAX_NAMES_PER_ROOM


# Telling a (restarted) session the messages it already has (PROTOCOL.md 7)


def test_a_remembered_message_is_dropped_as_a_replay_after_a_restart(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    kept = alice.send_text(room.room_id, "kept", NOW)
    deleted = alice.send_text(room.room_id, "deleted", NOW + 1)
    fresh = alice.send_text(room.room_id, "never seen", NOW + 2)
    old = alice.send_text(room.room_id, "an hour ago", NOW - 3_600_000)
    publishes = alice.frames_to_send()
    # Bob restarted: a new session, whose filter starts empty. He tells it what he has.
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    later = NOW + 60_000
    bob.remember(room.room_id, kept.message_id, kept.timestamp_ms, later)
    bob.remember(room.room_id, deleted.message_id, deleted.timestamp_ms, later)
    bob.remember(room.room_id, old.message_id, old.timestamp_ms, later)  # out of the window
    assert len(bob.rooms[room.room_id].replays._by_time) == 2
    for publish in publishes[:3]:  # the relay sends them again
        bob.receive(relay_deliver(publish), later)
    events = bob.events()
    assert [e.reason for e in events if isinstance(e, MessageRejected)] == [
        "ReplayedMessage",
        "ReplayedMessage",
    ]
    (shown,) = [e for e in events if isinstance(e, MessageReceived)]
    assert shown.message.message_id == fresh.message_id


def test_a_session_drops_its_own_message_sent_back_to_it(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    alice.send_text(room.room_id, "mine", NOW)
    (publish,) = alice.frames_to_send()
    alice.receive(relay_deliver(publish), NOW + 5)
    assert alice.events() == [MessageRejected(room.room_id, "ReplayedMessage")]


def test_remember_needs_the_room_joined(room: RoomKeys) -> None:
    alice = make_session(1, "alice")
    with pytest.raises(UsageError):
        alice.remember(room.room_id, bytes(16), NOW, NOW)
    with pytest.raises(UsageError):
        alice.remember_floor(room.room_id, NOW, NOW)


def test_a_remembered_floor_refuses_what_the_client_no_longer_knows_it_had(
    room: RoomKeys,
) -> None:
    """A client that kept only the newest of the ids it had seeds the newest time among
    those it dropped: a relay sending any of them again is not believed."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    dropped = alice.send_text(room.room_id, "its id was dropped", NOW)
    newer = alice.send_text(room.room_id, "after the floor", NOW + 1)
    publishes = alice.frames_to_send()
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    bob.remember_floor(room.room_id, dropped.timestamp_ms, NOW + 60_000)
    for publish in publishes:
        bob.receive(relay_deliver(publish), NOW + 60_000)
    events = bob.events()
    assert [e.reason for e in events if isinstance(e, MessageRejected)] == ["StaleMessage"]
    (shown,) = [e for e in events if isinstance(e, MessageReceived)]
    assert shown.message.message_id == newer.message_id


def test_a_floor_ahead_of_the_clock_is_taken_as_the_present(room: RoomKeys) -> None:
    """Ids stamped ahead (a member's clock, or ours since set back) must not leave a floor
    that refuses every message until then."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    ahead = alice.send_text(room.room_id, "stamped a minute ahead", NOW + 60_000)
    (publish,) = alice.frames_to_send()
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room)
    bob.remember_floor(room.room_id, NOW + 5 * 60_000, NOW)
    bob.receive(relay_deliver(publish), NOW)
    (shown,) = [e for e in bob.events() if isinstance(e, MessageReceived)]
    assert shown.message.message_id == ahead.message_id


# Restoring an outbox kept beyond the session (the web client's, across a lock or reload)


def kept_outbox(room: RoomKeys, *texts: str) -> list[tuple[bytes, int, bytes]]:
    """What a session that sent ``texts`` offline keeps of its outbox, before it stops."""
    alice = make_session(1, "alice")
    alice.join(room)
    for n, text in enumerate(texts):
        alice.send_text(room.room_id, text, NOW + n)
    assert alice.frames_to_send() == []
    return alice.outbox_of(room.room_id)


def test_a_restored_message_goes_again_byte_for_byte_and_arrives_once(room: RoomKeys) -> None:
    (kept,) = kept_outbox(room, "written offline")
    bob = make_session(2, "bob")
    bob.connection_made()
    join_fully(bob, room, members=2)
    alice = make_session(1, "alice")  # after the restart
    alice.join(room)
    assert alice.restore(room.room_id, *kept, NOW + 10)
    assert alice.restore(room.room_id, *kept, NOW + 10)  # twice changes nothing
    assert alice.unacknowledged == 1
    connect_and_join_again(alice, room, members=2)
    (publish,) = decoded(alice)
    assert isinstance(publish, frames.Publish)
    assert publish.envelope == kept[2]
    # Delivered before the restart too (its ACK lost): bob shows it once.
    for at in (NOW + 20, NOW + 30):
        bob.receive(relay_deliver(frames.encode_frame(publish)), at)
    assert [type(e) for e in bob.events()] == [MessageReceived, MessageRejected]
    alice.receive(relay_deliver(frames.encode_frame(publish)), NOW + 40)  # in her filter too
    assert [type(e) for e in alice.events()] == [MessageRejected]


def test_restored_messages_go_before_younger_ones_waiting(room: RoomKeys) -> None:
    old = kept_outbox(room, "old 1", "old 2")
    alice = make_session(1, "alice")
    alice.join(room)
    waiting = alice.send_text(room.room_id, "written after", NOW + 200)
    for kept in reversed(old):
        alice.restore(room.room_id, *kept, NOW + 300)
    assert [m for m, _, _ in alice.outbox_of(room.room_id)] == [
        old[0][0],
        old[1][0],
        waiting.message_id,
    ]


def test_a_restored_message_too_old_is_given_up_and_the_outbox_bound_holds(
    room: RoomKeys,
) -> None:
    (kept,) = kept_outbox(room, "long ago")
    alice = make_session(1, "alice")
    alice.join(room)
    assert not alice.restore(room.room_id, *kept, kept[1] + OUTBOX_MAX_AGE_MS)
    assert alice.events() == [NotSent(room.room_id, kept[0], NOT_SENT_IN_TIME)]
    assert alice.unacknowledged == 0
    for n in range(MAX_OUTBOX):
        alice.restore(room.room_id, n.to_bytes(16), NOW + n, b"\x01", NOW + n)
    with pytest.raises(UsageError):
        alice.restore(room.room_id, kept[0], kept[1], kept[2], NOW)
    with pytest.raises(UsageError):
        make_session(3, "carol").restore(room.room_id, *kept, NOW)  # not joined


# Presence (PROTOCOL.md 5.7): JOIN, HERE and LEAVE messages, and the roster of each room.


def announcing(seed: int, name: str) -> ClientSession:
    device = DeviceKey.from_private_bytes(bytes([seed]) * 32)
    counter = itertools.count(seed * 1_000_000)
    return ClientSession(
        device, name, token_bytes=lambda n: next(counter).to_bytes(n, "big"), announce=True
    )


def announced(session: ClientSession, room: RoomKeys) -> list[Message]:
    """The messages ``session`` publishes now (every frame must be a PUBLISH), opened."""
    return [open_envelope(room, publish.envelope) for publish in sent_publishes(session)]


# A member answers no JOIN sooner than ANSWER_GAP_MS after its own JOIN (at NOW here).
AFTER_GAP = NOW + ANSWER_GAP_MS


def kinds_published(session: ClientSession, room: RoomKeys) -> list[int]:
    return [message.kind for message in announced(session, room)]


def in_room(room: RoomKeys, *sessions: ClientSession) -> None:
    """Connect and let in each of ``sessions``; their own JOIN messages are dropped."""
    for session in sessions:
        session.connection_made()
        join_fully(session, room, members=len(sessions))
        session.frames_to_send()


def member(session: ClientSession) -> Member:
    key = session.device.public_key
    return Member(key, session.name, fingerprint(key), False)


def test_an_announcing_session_publishes_a_join_at_once_on_joined(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=2)
    (publish,) = sent_publishes(alice)
    join = open_envelope(room, publish.envelope)
    assert (join.kind, join.body, join.sender_name) == (Kind.JOIN, b"", "alice")
    assert join.sender_key == alice.device.public_key
    assert join.timestamp_ms == NOW
    # Not the user's message: not kept, not reported when the relay takes it.
    assert alice.outbox_of(room.room_id) == []
    assert alice.unacknowledged == 0
    assert alice.in_flight == 1
    alice.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert alice.in_flight == 0
    assert alice.events() == []


def test_the_join_message_goes_before_what_waited_in_the_outbox(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    alice.join(room)
    alice.send_text(room.room_id, "written offline", NOW)
    connect_and_join_again(alice, room, members=1)
    assert [m.kind for m in announced(alice, room)] == [Kind.JOIN, Kind.TEXT]
    assert len(alice.outbox_of(room.room_id)) == 1


def test_a_join_is_answered_with_a_here_after_the_delay(room: RoomKeys) -> None:
    """Once ANSWER_GAP_MS has passed since bob's own JOIN: none sooner."""
    alice, bob = announcing(1, "alice"), announcing(2, "bob")
    in_room(room, bob)
    alice.connection_made()
    join_fully(alice, room, members=2)
    (join,) = alice.frames_to_send()
    bob.receive(relay_deliver(join), AFTER_GAP)
    heard, changed = bob.events()
    assert isinstance(heard, MessageReceived)
    assert changed == MembersChanged(room.room_id, (member(alice),))
    assert bob.members(room.room_id) == (member(alice),)
    delay = answer_delay_ms(bob.device.public_key, alice.device.public_key)
    bob.tick(AFTER_GAP + delay - 1)
    assert bob.frames_to_send() == []
    bob.tick(AFTER_GAP + delay)
    (here_publish,) = bob.frames_to_send()
    publish = frames.decode_frame(here_publish)
    assert isinstance(publish, frames.Publish)
    here = open_envelope(room, publish.envelope)
    assert (here.kind, here.body, here.sender_name) == (Kind.HERE, b"", "bob")
    assert here.timestamp_ms == AFTER_GAP + delay
    assert bob.events() == []
    alice.receive(relay_deliver(here_publish), AFTER_GAP + delay)
    assert alice.events()[1:] == [MembersChanged(room.room_id, (member(bob),))]
    # The relay answers the HERE: no Accepted, nothing kept.
    bob.receive(frames.encode_frame(frames.Ack(publish.ref)), NOW)
    assert bob.events() == []
    assert bob.outbox_of(room.room_id) == []


def back_and_heard(
    member: ClientSession, listener: ClientSession, room: RoomKeys, members: int, at: int
) -> None:
    """``member`` drops and is let back in with ``members`` there; ``listener`` hears the
    JOIN message it announces itself with, at ``at``."""
    member.connection_lost()
    connect_and_join_again(member, room, members)
    (join,) = member.frames_to_send()
    listener.receive(relay_deliver(join), at)
    listener.events()


def back_first_with_a_newcomer(room: RoomKeys, text: str) -> tuple[ClientSession, ClientSession]:
    """Alice and bob, announcing, in ``room``; the relay restarts, and alice is back first
    with ``text`` written while away; a newcomer (a one-shot sender) brings the count
    back to 2 while bob is still reconnecting."""
    alice, bob = announcing(1, "alice"), announcing(2, "bob")
    in_room(room, alice, bob)
    back_and_heard(bob, alice, room, members=2, at=NOW)
    assert alice.members(room.room_id) == (member(bob),)
    alice.connection_lost()
    alice.send_text(room.room_id, text, NOW + 1)
    connect_and_join_again(alice, room, members=1)
    assert kinds_published(alice, room) == [Kind.JOIN]  # her JOIN goes; her text waits
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 2)), NOW + 2)
    alice.events()
    return alice, bob


def test_after_a_reconnect_the_outbox_waits_for_the_roster_not_only_the_count(
    room: RoomKeys,
) -> None:
    """A one-shot sender that joins while bob is still reconnecting brings the count back
    to what it was: alice's outbox still waits until bob himself is heard again."""
    alice, bob = back_first_with_a_newcomer(room, "said while away")
    assert alice.holding(room.room_id)
    assert alice.frames_to_send() == []
    back_and_heard(bob, alice, room, members=3, at=NOW + 3)  # bob is back, and says so
    assert not alice.holding(room.room_id)
    assert [m.body for m in announced(alice, room)] == [b"said while away"]


def test_release_ends_the_wait_for_the_roster_too(room: RoomKeys) -> None:
    alice, _ = back_first_with_a_newcomer(room, "anyone?")
    assert alice.holding(room.room_id)
    assert alice.held_since(room.room_id) == NOW
    alice.release(room.room_id)
    assert alice.held_since(room.room_id) is None
    assert [m.body for m in announced(alice, room)] == [b"anyone?"]


def test_a_room_that_never_emptied_waits_for_nobody(room: RoomKeys) -> None:
    """Only our connection dropped: the count is as it was, and nobody left."""
    alice, bob = announcing(1, "alice"), announcing(2, "bob")
    in_room(room, alice, bob)
    back_and_heard(bob, alice, room, members=2, at=NOW)
    alice.connection_lost()
    alice.send_text(room.room_id, "back", NOW + 1)
    connect_and_join_again(alice, room, members=2)
    assert not alice.holding(room.room_id)
    assert kinds_published(alice, room) == [Kind.JOIN, Kind.TEXT]


def test_after_failed_tries_a_full_count_still_waits_for_the_roster(room: RoomKeys) -> None:
    """The relay was out of reach (restarting): a newcomer who got in before alice can
    fill bob's place in the count, so the count alone no longer says that nobody left.
    Alice's outbox waits for bob himself, who says so when he is back."""
    alice, bob = announcing(1, "alice"), announcing(2, "bob")
    in_room(room, alice, bob)
    back_and_heard(bob, alice, room, members=2, at=NOW)
    alice.connection_lost()
    alice.connect_failed()
    alice.send_text(room.room_id, "said while away", NOW + 1)
    connect_and_join_again(alice, room, members=2)  # a newcomer, not bob
    assert kinds_published(alice, room) == [Kind.JOIN]
    assert alice.holding(room.room_id)
    assert alice.held_since(room.room_id) == NOW
    back_and_heard(bob, alice, room, members=3, at=NOW + 3)
    assert not alice.holding(room.room_id)
    assert [m.body for m in announced(alice, room)] == [b"said while away"]
    alice.connection_lost()  # and, reached at the first try this time, waits for nobody
    alice.send_text(room.room_id, "again", NOW + 4)
    connect_and_join_again(alice, room, members=3)
    assert not alice.holding(room.room_id)


def test_a_member_awaited_stays_awaited_across_a_second_drop(room: RoomKeys) -> None:
    """Bob, still reconnecting, is taken off alice's roster by the roll call her JOIN
    started; when alice drops again, she still waits for him, not only for the count a
    newcomer can fill."""
    alice, bob = announcing(1, "alice"), announcing(2, "bob")
    in_room(room, alice, bob)
    back_and_heard(bob, alice, room, members=2, at=NOW - 10_000)
    alice.connection_lost()
    alice.send_text(room.room_id, "said while away", NOW + 1)
    connect_and_join_again(alice, room, members=1)
    alice.frames_to_send()
    alice.tick(NOW + ROLL_CALL_WINDOW_MS)
    assert alice.members(room.room_id) == ()  # bob was not heard since
    alice.connection_lost()
    connect_and_join_again(alice, room, members=1)
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 2)), NOW + 2)  # a newcomer
    assert alice.holding(room.room_id)
    back_and_heard(bob, alice, room, members=3, at=NOW + 3)
    assert not alice.holding(room.room_id)


def test_a_member_that_never_announced_is_only_counted(room: RoomKeys) -> None:
    """A script's message put it in alice's roster; back after a restart, it says nothing,
    and the outbox does not wait for it past the count."""
    alice, bot = announcing(1, "alice"), make_session(9, "bot")
    in_room(room, alice, bot)
    bot.send_text(room.room_id, "build ok", NOW)
    (post,) = bot.frames_to_send()
    alice.receive(relay_deliver(post), NOW)
    alice.events()
    assert [m.name for m in alice.members(room.room_id)] == ["bot"]
    alice.connection_lost()
    alice.send_text(room.room_id, "after the restart", NOW + 1)
    connect_and_join_again(alice, room, members=1)
    assert kinds_published(alice, room) == [Kind.JOIN]
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 2)), NOW + 2)
    assert not alice.holding(room.room_id)
    assert [m.body for m in announced(alice, room)] == [b"after the restart"]


def test_the_grace_counts_the_time_joined_during_the_wait(room: RoomKeys) -> None:
    """A relay down again during the wait does not use up the grace; a connection that
    keeps dropping does not renew it."""
    alice = make_session(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=3)
    alice.connection_lost(NOW - 100)
    alice.send_text(room.room_id, "patience", NOW)
    connect_and_join_again(alice, room, members=1)  # JOINED at NOW
    assert alice.held_since(room.room_id) == NOW
    alice.connection_lost(NOW + 3000)  # 3 s joined, then down for 14 s
    assert alice.held_since(room.room_id) is None  # not joined: nothing counts
    alice.connection_made()
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW + 17_000)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 1)), NOW + 17_000)
    assert alice.holding(room.room_id)
    assert alice.held_since(room.room_id) == NOW + 14_000  # 3 s of the grace spent
    alice.receive(frames.encode_frame(frames.Presence(room.room_id, 3)), NOW + 18_000)
    assert alice.held_since(room.room_id) is None
    assert [type(f) for f in decoded(alice)] == [frames.Publish]


def test_a_join_announcement_refused_for_the_rate_goes_again_after_the_pause(
    room: RoomKeys,
) -> None:
    """Others wait for a member coming back to say so (PROTOCOL.md 10.6): a JOIN message
    the relay refused as rate limited is not dropped, as news would be."""
    alice = announcing(1, "alice")
    alice.connection_made()
    join_fully(alice, room, members=2)
    (join,) = sent_publishes(alice)
    limited = frames.Error(ErrorCode.RATE_LIMITED, join.ref, room.room_id, "slow down")
    alice.receive(frames.encode_frame(limited), NOW)
    alice.tick(NOW + 1)
    assert alice.frames_to_send() == []  # paused
    alice.resend_unacknowledged()
    alice.tick(NOW + 2)
    assert kinds_published(alice, room) == [Kind.JOIN]


def test_an_announcement_sent_back_to_its_sender_is_a_replay(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    (join,) = alice.frames_to_send()
    alice.receive(relay_deliver(join), NOW + 1)
    assert alice.events() == [MessageRejected(room.room_id, "ReplayedMessage")]
    assert alice.members(room.room_id) == ()


def test_an_announcement_refused_for_the_rate_pauses_and_the_next_waits(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    (join,) = sent_publishes(alice)
    limited = frames.Error(ErrorCode.RATE_LIMITED, join.ref, room.room_id, "slow down")
    alice.receive(frames.encode_frame(limited), NOW)
    assert alice.events() == [Refused(ErrorCode.RATE_LIMITED, room.room_id, join.ref, "slow down")]
    assert alice.waiting_to_resend
    assert alice.in_flight == 0
    # Paused: a HERE due now waits for the next tick after the retry, and so does the
    # refused JOIN (not in the outbox): others may wait for it (PROTOCOL.md 10.6).
    alice.receive(deliver_as(3, "carol", room, 1, Kind.JOIN), NOW)
    alice.events()
    alice.tick(AFTER_GAP)
    assert alice.frames_to_send() == []
    alice.tick(AFTER_GAP + 1000)
    assert alice.frames_to_send() == []
    alice.resend_unacknowledged()
    assert alice.frames_to_send() == []
    alice.tick(AFTER_GAP + 2000)
    assert kinds_published(alice, room) == [Kind.JOIN, Kind.HERE]
    alice.tick(AFTER_GAP + 3000)
    assert alice.frames_to_send() == []  # once


def test_announcements_wait_while_max_in_flight_publishes_are_unanswered(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    in_room(room, alice)
    for n in range(MAX_IN_FLIGHT - 1):  # our JOIN holds the last place
        alice.send_text(room.room_id, f"m{n}", NOW)
    refs = [publish.ref for publish in sent_publishes(alice)]
    assert len(refs) == MAX_IN_FLIGHT - 1 == alice.in_flight - 1
    alice.receive(deliver_as(3, "carol", room, 1, Kind.JOIN), NOW)
    alice.events()
    alice.tick(AFTER_GAP)
    alice.tick(AFTER_GAP + 500)
    assert alice.frames_to_send() == []  # no place on the wire
    alice.receive(frames.encode_frame(frames.Ack(refs[0])), AFTER_GAP + 600)
    alice.tick(AFTER_GAP + 1000)
    assert kinds_published(alice, room) == [Kind.HERE]


def test_an_announcement_refused_as_not_joined_joins_again_for_nothing(room: RoomKeys) -> None:
    """PROTOCOL.md 10.6: only a PUBLISH from the outbox, refused as NOT_JOINED, joins
    again. The session publishes announcements on its own, and each JOIN costs a proof
    (8.6): a hostile relay refusing announcements would get proofs at will."""
    alice = announcing(1, "alice")
    alice.connection_made()
    join_fully(alice, room)
    (join,) = sent_publishes(alice)
    refusal = frames.Error(ErrorCode.NOT_JOINED, join.ref, room.room_id, "not a member")
    alice.receive(frames.encode_frame(refusal), NOW)
    assert decoded(alice) == []
    # A message of the outbox refused so does join again, once.
    alice.events()
    alice.send_text(room.room_id, "hi", NOW + 1)
    (publish,) = sent_publishes(alice)
    refusal = frames.Error(ErrorCode.NOT_JOINED, publish.ref, room.room_id, "not a member")
    alice.receive(frames.encode_frame(refusal), NOW + 2)
    assert decoded(alice) == [frames.Join(room.room_id, room.public_key, NOW + 3_600_000)]


def test_announcements_sent_long_ago_say_nothing_of_who_is_here(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    in_room(room, alice)
    old = NOW - MAX_HEARD_AGE_MS - 1
    alice.receive(deliver_as(3, "carol", room, 1, Kind.HERE, now_ms=old), NOW)
    alice.receive(deliver_as(4, "dave", room, 1, Kind.HERE, now_ms=NOW - MAX_HEARD_AGE_MS), NOW)
    assert [m.name for m in alice.members(room.room_id)] == ["dave"]


def test_announcements_due_while_disconnected_are_dropped(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    in_room(room, alice)
    alice.receive(deliver_as(3, "carol", room, 1, Kind.JOIN), NOW)
    alice.events()
    alice.connection_lost()
    alice.tick(NOW + 2000)  # the HERE is due: nobody to send it to
    alice.announce_leaving(NOW + 2000)
    assert alice.frames_to_send() == []
    alice.connection_made()
    (join,) = decoded(alice)
    assert isinstance(join, frames.Join)
    alice.receive(frames.encode_frame(frames.Challenge(room.room_id, bytes(32))), NOW + 3000)
    decoded(alice)
    alice.receive(frames.encode_frame(frames.Joined(room.room_id, 0, 2)), NOW + 3000)
    assert [m.kind for m in announced(alice, room)] == [Kind.JOIN]  # not the HERE
    alice.tick(NOW + 10_000)
    assert alice.frames_to_send() == []


def test_announcements_past_max_in_flight_are_dropped(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    in_room(room, alice)
    for n in range(MAX_IN_FLIGHT):  # with her JOIN message, one more than go at once
        alice.send_text(room.room_id, f"m{n}", NOW)
    first = sent_publishes(alice)
    assert alice.in_flight == MAX_IN_FLIGHT
    alice.receive(deliver_as(3, "carol", room, 1, Kind.JOIN), NOW)
    alice.tick(NOW + 2000)
    assert alice.frames_to_send() == []
    alice.receive(frames.encode_frame(frames.Ack(first[0].ref)), NOW)
    # The place that came free goes to the outbox; the HERE was not kept for it.
    assert [m.text for m in announced(alice, room)] == [f"m{MAX_IN_FLIGHT - 1}"]
    alice.tick(NOW + 4000)
    assert alice.frames_to_send() == []


def test_leave_sends_the_leave_message_before_the_leave_frame(room: RoomKeys) -> None:
    alice, bob = announcing(1, "alice"), announcing(2, "bob")
    in_room(room, alice, bob)
    alice.send_text(room.room_id, "bye", NOW)
    (text,) = alice.frames_to_send()
    bob.receive(relay_deliver(text), NOW)
    assert bob.members(room.room_id) == (member(alice),)
    bob.events()
    alice.leave(room.room_id, NOW + 10)
    publish, leave = decoded(alice)
    assert leave == frames.Leave(room.room_id)
    assert isinstance(publish, frames.Publish)
    message = open_envelope(room, publish.envelope)
    assert (message.kind, message.timestamp_ms) == (Kind.LEAVE, NOW + 10)
    bob.receive(frames.encode_frame(frames.Deliver(room.room_id, publish.envelope)), NOW + 10)
    assert bob.events()[1:] == [MembersChanged(room.room_id, ())]


def test_a_leave_without_a_time_is_stamped_with_the_latest_one_given(room: RoomKeys) -> None:
    alice = announcing(1, "alice")
    in_room(room, alice)
    alice.tick(NOW + 7000)
    alice.leave(room.room_id)
    publish, _ = decoded(alice)
    assert isinstance(publish, frames.Publish)
    assert open_envelope(room, publish.envelope).timestamp_ms == NOW + 7000


def test_announce_leaving_says_so_in_every_joined_room(room: RoomKeys) -> None:
    other, waiting = RoomKeys.from_minikey(KEY_B), RoomKeys.from_root(bytes([7]) * 32)
    alice = announcing(1, "alice")
    in_room(room, alice)
    join_fully(alice, other)
    alice.frames_to_send()
    alice.join(waiting)  # its JOIN not answered yet: not in it
    alice.frames_to_send()
    alice.announce_leaving(NOW + 20)
    publishes = sent_publishes(alice)  # LEAVE messages, no LEAVE frame
    assert [p.room_id for p in publishes] == [room.room_id, other.room_id]
    kinds = [
        open_envelope(r, p.envelope).kind for r, p in zip((room, other), publishes, strict=True)
    ]
    assert kinds == [Kind.LEAVE, Kind.LEAVE]
    assert set(alice.rooms) == {room.room_id, other.room_id, waiting.room_id}
    # Leaving: nothing more, not even an answer to a JOIN, until let in again.
    alice.receive(deliver_as(3, "carol", room, 1, Kind.JOIN), NOW + 30)
    alice.tick(NOW + 10_000)
    assert alice.frames_to_send() == []


def test_a_roll_call_removes_a_silent_member_at_a_tick(room: RoomKeys) -> None:
    bob = announcing(2, "bob")
    in_room(room, bob)
    bob.receive(deliver_as(3, "carol", room, 1, Kind.HERE), NOW + 100)
    bob.receive(deliver_as(4, "dave", room, 1, Kind.JOIN), NOW + 1000)  # dave's roll call
    bob.events()
    bob.tick(NOW + ROLL_CALL_WINDOW_MS)  # bob's own roll call: carol answered it
    assert [m.name for m in bob.members(room.room_id)] == ["carol", "dave"]
    assert not any(isinstance(e, MembersChanged) for e in bob.events())
    bob.tick(NOW + 1000 + ROLL_CALL_WINDOW_MS)  # dave's: carol did not answer
    (changed,) = bob.events()
    assert isinstance(changed, MembersChanged)
    assert [m.name for m in changed.members] == ["dave"]


def test_a_session_that_announces_nothing_sends_nothing_but_keeps_the_roster(
    room: RoomKeys,
) -> None:
    alice, bob = announcing(1, "alice"), make_session(2, "bob")
    assert not bob.announce
    bob.connection_made()
    join_fully(bob, room, members=2)
    assert bob.frames_to_send() == []  # no JOIN message
    alice.connection_made()
    join_fully(alice, room, members=2)
    (join,) = alice.frames_to_send()
    bob.receive(relay_deliver(join), NOW)
    (event,) = bob.events()  # no MembersChanged: its events are as they were
    assert isinstance(event, MessageReceived)
    assert bob.members(room.room_id) == (member(alice),)
    bob.receive(frames.encode_frame(frames.Presence(room.room_id, 1)), NOW + 1)
    bob.tick(NOW + 60_000)
    bob.announce_leaving(NOW + 60_000)
    assert bob.frames_to_send() == []
    bob.leave(room.room_id, NOW + 60_000)
    assert decoded(bob) == [frames.Leave(room.room_id)]


def test_members_of_a_room_not_known_is_empty(room: RoomKeys) -> None:
    assert make_session(1, "alice").members(room.room_id) == ()


def test_an_announcing_session_needs_a_name_it_can_seal() -> None:
    device = DeviceKey.from_private_bytes(bytes([1]) * 32)
    for name in ("x" * 65, "\ud800"):
        with pytest.raises(UsageError):
            ClientSession(device, name, token_bytes=bytes, announce=True)
        ClientSession(device, name, token_bytes=bytes)  # sends nothing itself

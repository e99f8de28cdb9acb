"""The client endpoint: one sans-I/O object that every client drives.

Feed it what the relay sent (``receive``) and tell it what the user wants (``join``,
``send``); take the frames to send from ``frames_to_send()`` and what happened from
``events()``. It never touches a socket or a clock: the caller passes ``now_ms``.

    join(room) ----JOIN-----> relay
               <--CHALLENGE--
               ----PROOF----> (signed with the room key, for this challenge only)
               <--JOINED----- => Joined event; the outbox for the room is sent
    send(text) ---PUBLISH(ref)->                    <--ACK(ref)-- => Accepted event
               <--DELIVER---- => MessageReceived (opened, signature checked, not a replay)

Each room has a replay filter (PROTOCOL.md 7). It starts empty: a client that restarts
tells the session, with ``remember`` right after ``join``, the messages it already has
(kept history, messages the user deleted), or a relay could send them again within the
hour. The session remembers the messages it sends itself.

The outbox keeps every message until the relay acknowledges it, and keeps at most
``MAX_IN_FLIGHT`` PUBLISHes unanswered on the wire: the next leaves, oldest first, as an
ACK or an ERROR answers one. After a relay refused a PUBLISH (RATE_LIMITED) nothing more is
published until the caller's one timer calls ``resend_unacknowledged`` (PROTOCOL.md 10.6):
a burst of refusals would make the relay close the connection (1008). After a reconnect
(``connection_lost`` then ``connection_made``) the session joins its rooms again and
resends what was not acknowledged; receivers drop the duplicates by message id. A
PUBLISH refused with NOT_JOINED in a room the session thought it was in has it join
again, then resend (PROTOCOL.md 10.6).

The outbox is bounded in age and in size (PROTOCOL.md 10.6). ``expire`` gives up every
message whose timestamp is ``OUTBOX_MAX_AGE_MS`` old, sent or not, with a ``NotSent``
event: receivers would refuse it as stale (PROTOCOL.md 7), so an ACK for it would only
hide its loss; an ACK that still comes for it is ignored. ``send`` refuses (UsageError)
while ``MAX_OUTBOX`` messages wait.

A CHALLENGE is answered only for a room whose JOIN is outstanding, and once per JOIN; any
other is ignored (PROTOCOL.md 8.6): a proof is not bound to the relay, so a relay that got
one for a challenge it relayed from another relay could join the room there.
A JOINED, likewise, counts only as the answer to an outstanding JOIN: another is ignored,
so that a relay cannot make news (an expiry, a count, a Joined event) of every frame.

Timers are the caller's: after RATE_LIMITED it calls ``retry_join`` or (once for all the
refused PUBLISHes, while ``waiting_to_resend``) ``resend_unacknowledged`` a little later,
after RELAY_FULL or ROOM_FULL ``retry_join`` much later (the room and its outbox wait
meanwhile: a place may come free), and ``release`` when the wait for members is over.
Those belong to one connection: the caller drops them in ``connection_lost``, as
``connection_made`` joins every room anyway. ``retry_join`` does nothing while a JOIN for
the room is unanswered, so a late timer cannot send a second JOIN, which would replace the
relay's challenge under the first PROOF.

Each room has a roster too (PROTOCOL.md 5.7): who is there, from the members' JOIN, HERE
and LEAVE messages (``members``, ``MembersChanged`` events). A session made with
``announce=True`` announces itself: a JOIN on each JOINED, a HERE in answer to others'
JOINs (``tick``, about once a second, sends what is due), a LEAVE before leaving a room
(``leave``) or closing (``announce_leaving``). Announcements are news, not the user's
messages: published at once or dropped (room not joined, disconnected, publishing paused,
``MAX_IN_FLIGHT`` on the wire), never kept in the outbox, resent or reported (no
``Accepted`` or ``NotSent``). A session that announces nothing still keeps the rosters of
what others announce (``members``), but tells no ``MembersChanged``: its events are what
they were before rosters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import frames
from .codes import ErrorCode
from .envelope import (
    MAX_NAME_BYTES,
    MESSAGE_ID_SIZE,
    Kind,
    Message,
    ReplayFilter,
    new_message,
    open_envelope,
    seal_envelope,
)
from .errors import EnvelopeError, FrameError, StaleMessage, UsageError
from .join import sign_join_proof
from .kdf import DeviceKey, RoomKeys, fingerprint
from .names import canonical_name
from .roster import MAX_HEARD_AGE_MS, Member, Roster

MAX_REF = 2**32 - 1
# PUBLISHes sent and not yet answered (ACK or ERROR) on one connection, at most
# (PROTOCOL.md 10.6): well under the relay's default burst (200 frames) and the refusals
# in a row after which it closes the connection (500), so a large outbox never trips them.
MAX_IN_FLIGHT = 100
# How old a message in the outbox may get before the session gives it up (NotSent):
# receivers refuse a message whose timestamp is over an hour old (PROTOCOL.md 7), and one
# sent later than this might reach them after that, with 5 minutes left for clock skew
# between devices and for the trip. Sent or not, it is dropped: an ACK for it now would
# report as taken a message that no one would show.
OUTBOX_MAX_AGE_MS = 55 * 60 * 1000
# Messages waiting for their ACK, at most, per session: a program that sends without
# waiting, to a relay that never answers, must not grow the outbox without end. Far more
# than a person writes in the 55 minutes a message may wait.
MAX_OUTBOX = 10_000
# Names remembered per room for the key-change warning (PROTOCOL.md 4.4), the most
# recently seen; the least recently seen goes first. Every accepted message under a new
# name would otherwise add one entry for the room's whole life, and a member can make up
# names without end. A thousand is far more than a room's members (a relay admits 256 by
# default), and at most 64 + 32 bytes of name and key each, some 100 KB per room.
MAX_NAMES_PER_ROOM = 1000
# The reason of a NotSent for a message too old to send.
NOT_SENT_IN_TIME = (
    "The relay did not take the message within 55 minutes, and the others would now refuse "
    "it as too old: it was not sent. Send it again."
)
# The reason of a NotSent for a message waiting in a room the relay refused for good.
NOT_SENT_REFUSED = "The relay refused the room: the message was not sent."


@dataclass(frozen=True)
class Joined:
    room_id: bytes
    expires_at_ms: int
    members: int


@dataclass(frozen=True)
class PresenceChanged:
    room_id: bytes
    members: int


@dataclass(frozen=True)
class MessageReceived:
    room_id: bytes
    message: Message
    fingerprint: str
    # True when this name (compared in its canonical form, PROTOCOL.md 4.4) was seen in
    # the room before with another device key.
    key_changed: bool


@dataclass(frozen=True)
class MessageRejected:
    """A DELIVER that could not be trusted; ``reason`` is the error's class name.

    ``ahead_ms``: for a ``StaleMessage`` dated ahead of the receiver's clock (more than
    the 5 minutes of PROTOCOL.md 7), by how much; else 0. Such drops are a clock set wrong,
    the sender's or this one's, far more often than an attack: worth telling the user."""

    room_id: bytes
    reason: str
    ahead_ms: int = 0


@dataclass(frozen=True)
class Accepted:
    room_id: bytes
    message_id: bytes


@dataclass(frozen=True)
class Refused:
    """The relay refused something. ``ref`` is set when it was one of our messages."""

    code: int
    room_id: bytes
    ref: int
    reason: str


@dataclass(frozen=True)
class NotSent:
    """One of our messages was given up before the relay took it; ``reason`` says why, for
    people. No ``Accepted`` follows for it."""

    room_id: bytes
    message_id: bytes
    reason: str


@dataclass(frozen=True)
class RoomExpired:
    room_id: bytes


@dataclass(frozen=True)
class PongReceived:
    token: int


@dataclass(frozen=True)
class MembersChanged:
    """The roster of ``room_id`` changed (PROTOCOL.md 5.7): ``members`` is it now. Only
    from a session that announces."""

    room_id: bytes
    members: tuple[Member, ...]


Event = (
    Joined | PresenceChanged | MessageReceived | MessageRejected | Accepted | NotSent
    | Refused | RoomExpired | PongReceived | MembersChanged
)  # fmt: skip

# Refusals of a JOIN after which the session stops trying the room. Not ROOM_FULL or
# RELAY_FULL: a place comes free when a member leaves or a room expires, so the room and
# what waits for it stay, and the caller tries again later (PROTOCOL.md 10.6).
_FATAL_FOR_ROOM = {
    ErrorCode.PROOF_FAILED,
    ErrorCode.ROOM_EXPIRED,
    ErrorCode.TOO_MANY_ROOMS,
    ErrorCode.EXPIRY_TOO_FAR,
}

# Refusals that answer only a JOIN or its PROOF (PROTOCOL.md 8.4, 11.1). With ref 0, for a
# room with no JOIN of ours outstanding, one answers nothing and is ignored, as an unasked
# JOINED is (8.6). Not ROOM_EXPIRED: the relay sends it unasked when the room expires.
_ANSWERS_A_JOIN = {
    ErrorCode.RATE_LIMITED,
    ErrorCode.PROOF_FAILED,
    ErrorCode.NO_CHALLENGE,
    ErrorCode.TOO_MANY_ROOMS,
    ErrorCode.ROOM_FULL,
    ErrorCode.ALREADY_JOINED,
    ErrorCode.EXPIRY_TOO_FAR,
    ErrorCode.RELAY_FULL,
}


@dataclass
class RoomState:
    keys: RoomKeys = field(repr=False)
    expires_at_ms: int  # 0: not known
    roster: Roster = field(repr=False)
    joined: bool = False
    # A JOIN was sent and neither JOINED nor a refusal has answered it yet.
    join_sent: bool = False
    # That JOIN went out while a held LEAVE (below) still kept a place on the relay: a
    # TOO_MANY_ROOMS for it may be that place's doing, and earns one more JOIN.
    behind_held_leave: bool = False
    members: int = 0
    # After a reconnect the outbox waits until the room has as many members as before,
    # so that what was written during the outage reaches those who come back,
    awaited_members: int = 0
    # and, if the room had emptied, until each member of the roster then that announces
    # itself has been heard again: the count alone cannot tell a member back from one who
    # was not there (a one-shot ``send``).
    awaited_keys: set[bytes] = field(default_factory=set, repr=False)
    # Tries to connect failed since the drop: the relay may have restarted, and a
    # newcomer may fill a returning member's place in the count. The announcers are then
    # awaited at any count (those still connected answer our JOIN within seconds).
    keys_awaited_at_any_count: bool = False
    # First joined after the relay was out of reach, with no count from before to await:
    # if the relay restarted, the others are reconnecting too, one by one, and nothing
    # says when all are back. The outbox waits the whole grace (``release``).
    awaits_whole_grace: bool = False
    # False once the caller said it can wait no more (``release(for_good=True)``).
    may_hold: bool = True
    # The caller's grace counts the time joined while it waits (``held_since``): since the
    # JOINED of this connection (None: not joined now), plus the time joined before.
    hold_since_ms: int | None = None
    hold_spent_ms: int = 0
    # canonical name -> device key last seen with it, least recently seen first; at most
    # MAX_NAMES_PER_ROOM.
    names: dict[str, bytes] = field(default_factory=dict, repr=False)
    # One filter per room: a member of one room cannot make us drop another's messages.
    replays: ReplayFilter = field(default_factory=ReplayFilter, repr=False)
    # Announcements that found publishing paused or MAX_IN_FLIGHT on the wire: tried again
    # at the next tick, while the room stays joined (PROTOCOL.md 5.7). Each kind once.
    unsent: list[Kind] = field(default_factory=list, repr=False)
    # When we last signed a join proof for the room on this connection, whether we joined
    # it again on this connection, and when a JOIN asked for again sooner goes
    # (PROTOCOL.md 10.6): None, none yet / none waits.
    proved_ms: int | None = None
    joined_again: bool = False
    # The relay's last refusal of our JOIN said the room or the relay is full for now:
    # the caller tries again after its own pause (RETRY_AFTER_FULL), not ours.
    full_for_now: bool = False
    rejoin_due_ms: int | None = None


def _sealable_name(name: str) -> bool:
    try:
        return len(name.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:  # lone surrogates
        return False


# The number of an announcement on the wire: never a place in the outbox, so its ACK
# reports nothing.
_NOT_IN_OUTBOX = -1
# After a NOT_JOINED made us join a room again, another joins again only this much later
# (PROTOCOL.md 10.6): each JOIN costs a proof the relay keeps, as a reconnect does, whose
# pause grows to as much.
REJOIN_PAUSE_MS = 10_000


def _past(due_ms: int, now_ms: int) -> bool:
    """``due_ms`` has come by ``now_ms``, or the clock was set back past the pause before
    it: a room must not wait an hour for a clock set back an hour."""
    return not 0 < due_ms - now_ms <= REJOIN_PAUSE_MS


@dataclass
class _Outgoing:
    number: int  # its place in the outbox: the oldest goes first
    room_id: bytes
    message_id: bytes
    timestamp_ms: int  # the message's own: its age decides when it is given up
    envelope: bytes = field(repr=False)
    ref: int = 0
    kind: Kind = Kind.TEXT  # an announcement's (number _NOT_IN_OUTBOX) kind
    # A PUBLISH of it was handed to a connection and not refused: the relay may have it;
    went_out: bool = False
    # or one was on the wire when a connection dropped (a later copy's refusal says
    # nothing of that one).
    lost_on_the_wire: bool = False


class ClientSession:
    """A client's protocol state across any number of rooms and reconnects."""

    def __init__(
        self,
        device: DeviceKey,
        name: str,
        *,
        token_bytes: Callable[[int], bytes],
        announce: bool = False,
    ) -> None:
        if announce and not _sealable_name(name):
            # Checked now: announcements are sealed inside receive() and tick().
            raise UsageError(f"A name is at most {MAX_NAME_BYTES} bytes of UTF-8.")
        self.device = device
        self.name = name
        # Send JOIN, HERE and LEAVE messages (PROTOCOL.md 5.7); scripts do not.
        self.announce = announce
        self.rooms: dict[bytes, RoomState] = {}
        self.connected = False
        self._token_bytes = token_bytes
        # Oldest first; kept until an ACK. A ref of 0: waiting to be published.
        self._outbox: dict[int, _Outgoing] = {}
        self._next_number = 0
        # ref -> what a PUBLISH on the wire carries, until an ACK or ERROR answers it (also
        # when its room was forgotten meanwhile: it still takes a place on the wire).
        self._in_flight: dict[int, _Outgoing] = {}
        # The relay refused a PUBLISH: publish nothing until resend_unacknowledged().
        self._paused = False
        # Rooms left while their JOIN was unanswered: the LEAVE waits for the answer, so
        # that joining again never puts a second JOIN behind the first (PROTOCOL.md 8.5).
        self._leave_on_answer: set[bytes] = set()
        # Rooms refused as TOO_MANY_ROOMS behind held LEAVEs: they JOIN again once every
        # held LEAVE has gone out.
        self._join_after_leaves: list[bytes] = []
        # Rooms whose outstanding JOIN has had its CHALLENGE answered: one PROOF per JOIN.
        # Kept across leave() and join() while that JOIN is unanswered (its answer serves
        # the new join too), dropped when it is answered or a new JOIN goes out.
        self._proved: set[bytes] = set()
        self._next_ref = 1
        self._frames: list[bytes] = []
        self._events: list[Event] = []
        # The latest time a caller gave: the timestamp of a LEAVE sent without one.
        self._now_ms = 0

    # what the caller takes

    def frames_to_send(self) -> list[bytes]:
        out, self._frames = self._frames, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    @property
    def unacknowledged(self) -> int:
        return len(self._outbox)

    @property
    def in_flight(self) -> int:
        """PUBLISHes sent on this connection that no ACK or ERROR has answered yet."""
        return len(self._in_flight)

    @property
    def waiting_to_resend(self) -> bool:
        """True after the relay refused a PUBLISH (RATE_LIMITED, or a refusal we do not
        understand): nothing more is published until the caller calls
        ``resend_unacknowledged``, once, a little later."""
        return self._paused

    # what the user does

    def join(self, room: RoomKeys, expires_at_ms: int = 0) -> None:
        """Join ``room`` now if connected, and again after every reconnect."""
        if room.room_id in self.rooms:
            return
        roster = Roster(self.device.public_key, announce=self.announce)
        state = self.rooms[room.room_id] = RoomState(room, expires_at_ms, roster)
        if room.room_id in self._leave_on_answer:
            # Left and joined again before the relay answered the first JOIN: its answer
            # serves this join too.
            self._leave_on_answer.discard(room.room_id)
            state.join_sent = True
        elif self.connected:
            self._send_join(room.room_id)

    def remember(self, room_id: bytes, message_id: bytes, timestamp_ms: int, now_ms: int) -> None:
        """Tell the replay filter of ``room_id`` (joined first) about a message this client
        already has: one it keeps in its history, or one the user deleted. A DELIVER of it
        is then dropped as a replay (``MessageRejected``), also after a restart, which
        starts every filter empty (PROTOCOL.md 7). A message older than the filter's
        window is ignored: it is refused as stale anyway."""
        state = self.rooms.get(room_id)
        if state is None:
            raise UsageError("Join the room before telling it the messages it has.")
        state.replays.remember(message_id, timestamp_ms, now_ms)

    def remember_floor(self, room_id: bytes, floor_ms: int, now_ms: int) -> None:
        """Tell the replay filter of ``room_id`` (joined first) that this client no longer
        knows which messages stamped at or below ``floor_ms`` it had: each is then refused
        (``MessageRejected``), as after the filter forgot ids at capacity (PROTOCOL.md 7).
        Never past ``now_ms``: a floor ahead of the clock (ids stamped ahead, or a clock
        since set back) would refuse every message until then."""
        state = self.rooms.get(room_id)
        if state is None:
            raise UsageError("Join the room before telling it the messages it has.")
        state.replays.raise_floor(min(floor_ms, now_ms))

    def leave(self, room_id: bytes, now_ms: int | None = None) -> None:
        """Leave ``room_id`` and forget it. An announcing session first sends the room a
        LEAVE message (stamped ``now_ms``, or the latest time it was given), ahead of the
        LEAVE frame that takes it out of the room."""
        state = self.rooms.get(room_id)
        if state is not None:
            state.roster.leaving()
            self._announce(room_id, self._clock(now_ms))
        self._leave_on_wire(room_id)
        self._forget(room_id)

    def announce_leaving(self, now_ms: int | None = None) -> None:
        """Send every joined room a LEAVE message (an announcing session only): the client
        is about to close. Best effort: what cannot go now is dropped."""
        now_ms = self._clock(now_ms)
        for room_id, state in self.rooms.items():
            if state.joined:
                state.roster.leaving()
                self._announce(room_id, now_ms)

    def members(self, room_id: bytes) -> tuple[Member, ...]:
        """Who is in ``room_id`` as its members announce (PROTOCOL.md 5.7), oldest entry
        first, never ourselves; empty for a room not known."""
        state = self.rooms.get(room_id)
        return state.roster.members if state is not None else ()

    def tick(self, now_ms: int) -> None:
        """Do what the rosters have due (PROTOCOL.md 5.7): answer JOINs with a HERE, call a
        roll call, remove who did not answer one. Call it about once a second."""
        self._now_ms = now_ms
        for room_id, state in list(self.rooms.items()):
            if state.rejoin_due_ms is not None and _past(state.rejoin_due_ms, now_ms):
                state.rejoin_due_ms = None
                if self.connected and not state.joined and not state.join_sent:
                    self._send_join(room_id)
            version = state.roster.version
            state.roster.tick(now_ms)
            self._announce(room_id, now_ms)
            self._members_changed(room_id, version)

    def send(self, room_id: bytes, kind: int, body: bytes, now_ms: int) -> Message:
        """Seal a message into the outbox; it leaves as soon as the room is joined. Raises
        UsageError, and sends nothing, while ``MAX_OUTBOX`` messages wait for the relay."""
        state = self.rooms.get(room_id)
        if state is None:
            raise UsageError("Join the room before sending to it.")
        self._now_ms = now_ms
        if len(self._outbox) >= MAX_OUTBOX:
            raise UsageError(
                f"{MAX_OUTBOX} messages are waiting for the relay to take them: wait for "
                "some to be taken (or given up) before sending more. Nothing was sent."
            )
        message = new_message(
            self.device, self.name, kind, body, token_bytes=self._token_bytes, now_ms=now_ms
        )
        envelope = seal_envelope(state.keys, self.device, message, self._token_bytes(12))
        # Our own message, sent back to us by a relay, is a replay too.
        state.replays.remember(message.message_id, message.timestamp_ms, now_ms)
        outgoing = _Outgoing(
            self._next_number, room_id, message.message_id, message.timestamp_ms, envelope
        )
        self._next_number += 1
        self._outbox[outgoing.number] = outgoing
        self._pump()
        return message

    def restore(
        self, room_id: bytes, message_id: bytes, timestamp_ms: int, envelope: bytes, now_ms: int
    ) -> bool:
        """Put back into the outbox a message this client sealed before it restarted and
        the relay had not acknowledged (kept with ``outbox_of``): ``envelope`` goes again as
        it is, in timestamp order among the messages waiting (never before one on the wire),
        within the limits of ``send``, its id remembered in the replay filter. True once it
        waits (restoring twice changes nothing); False when it is ``OUTBOX_MAX_AGE_MS`` old
        already, given up with ``NotSent``. Raises UsageError, restoring nothing, for a room
        not joined or while ``MAX_OUTBOX`` messages wait (PROTOCOL.md 10.6)."""
        state = self.rooms.get(room_id)
        if state is None:
            raise UsageError("Join the room before restoring its outbox.")
        if len(message_id) != MESSAGE_ID_SIZE or not envelope:
            raise UsageError(f"A message id is {MESSAGE_ID_SIZE} bytes; an envelope, some.")
        entries = list(self._outbox.values())
        if any(
            (o.room_id, o.message_id, o.timestamp_ms) == (room_id, message_id, timestamp_ms)
            for o in entries
        ):
            return True
        if now_ms - timestamp_ms >= OUTBOX_MAX_AGE_MS:
            self._events.append(NotSent(room_id, message_id, NOT_SENT_IN_TIME))
            return False
        if len(entries) >= MAX_OUTBOX:
            raise UsageError(
                f"{MAX_OUTBOX} messages are waiting for the relay to take them: this one "
                "was not put back."
            )
        state.replays.remember(message_id, timestamp_ms, now_ms)
        at = len(entries)
        while at and not entries[at - 1].ref and entries[at - 1].timestamp_ms > timestamp_ms:
            at -= 1
        restored = _Outgoing(0, room_id, message_id, timestamp_ms, envelope)
        if at < len(entries):  # numbered again from there: the order is the outbox's
            entries.insert(at, restored)
            self._outbox = {}
        else:
            entries = [restored]
        for outgoing in entries:
            outgoing.number = self._next_number
            self._next_number += 1
            self._outbox[outgoing.number] = outgoing
        self._pump()
        return True

    def outbox_of(self, room_id: bytes) -> list[tuple[bytes, int, bytes]]:
        """(message id, timestamp, envelope) of each message of ``room_id`` the relay has
        not acknowledged, oldest first: to keep them beyond this session (``restore``)."""
        return [
            (o.message_id, o.timestamp_ms, o.envelope)
            for o in self._outbox.values()
            if o.room_id == room_id
        ]

    def went_out(self, message_id: bytes) -> bool:
        """True if a message still in the outbox was handed to a connection in a PUBLISH
        the relay did not refuse, or that was on the wire when a connection dropped: the
        relay may have it (and passed it on) though no ACK came. False while it has only
        waited (not joined, held for members, paused) or had each copy refused, and for
        one not in the outbox."""
        return any(
            o.went_out or o.lost_on_the_wire
            for o in self._outbox.values()
            if o.message_id == message_id
        )

    def send_text(self, room_id: bytes, text: str, now_ms: int) -> Message:
        try:
            body = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates; the error would quote the text
            raise UsageError("A message must be encodable as UTF-8.") from None
        return self.send(room_id, Kind.TEXT, body, now_ms)

    def ping(self, token: int) -> None:
        self._frames.append(frames.encode_frame(frames.Ping(token)))

    # what the connection does

    def connect_failed(self) -> None:
        """A try to connect failed: the relay, or the way to it, was out of reach (or the
        relay said it has just started, PROTOCOL.md 10.1; call it before connection_made). Each
        room not joined on this session before (so with no count to await) then holds its
        outbox from its next JOINED for the caller's whole grace (``held_since``,
        ``release``): if the relay restarted, its members are reconnecting too. A room
        joined before awaits its announcing members whatever the count."""
        for state in self.rooms.values():
            if state.joined:
                continue
            if state.awaited_members:
                state.keys_awaited_at_any_count = True
            else:
                state.awaits_whole_grace = True

    def connection_made(self) -> None:
        self.connected = True
        for room_id in self.rooms:
            self._send_join(room_id)

    def connection_lost(self, now_ms: int | None = None) -> None:
        """The connection closed, at ``now_ms`` (None: not known; a wait for members
        then counts its grace afresh from the next JOINED)."""
        self.connected = False
        self._frames.clear()
        for state in self.rooms.values():
            if state.hold_since_ms is not None:
                # A relay down again during the wait does not use up its grace.
                if now_ms is not None:
                    state.hold_spent_ms += max(0, now_ms - state.hold_since_ms)
                state.hold_since_ms = None
            if state.joined:  # the count awaited from an earlier drop stays awaited
                state.awaited_members = max(state.members, state.awaited_members)
                # Only an announcing session hears them again: the others answer its JOIN.
                # Those awaited from an earlier drop stay awaited: a roll call since may
                # have taken one still reconnecting off the roster.
                if self.announce:
                    state.awaited_keys |= state.roster.announcers()
            state.joined = False
            state.join_sent = False
            state.proved_ms = state.rejoin_due_ms = None  # a new connection joins anyway
            state.joined_again = False
        self._leave_on_answer.clear()  # the relay forgot this connection's rooms
        self._join_after_leaves.clear()
        self._proved.clear()
        for outgoing in self._in_flight.values():
            outgoing.lost_on_the_wire = True
        for outgoing in self._outbox.values():
            outgoing.ref = 0
        self._in_flight.clear()
        self._paused = False  # a new connection: the relay's rate limit starts afresh

    def holding(self, room_id: bytes) -> bool:
        """True while the outbox of ``room_id`` waits for members to come back."""
        state = self.rooms.get(room_id)
        return (
            state is not None
            and state.joined
            and state.may_hold
            and (
                state.awaits_whole_grace
                or state.members < state.awaited_members
                or bool(state.awaited_keys)
            )
        )

    def release(self, room_id: bytes, *, for_good: bool = False) -> None:
        """Stop waiting for members of ``room_id`` (the caller's grace time is over); with
        ``for_good``, after any later drop or failed try too (the caller's own deadline
        is near)."""
        state = self.rooms.get(room_id)
        if state is not None:
            state.may_hold = state.may_hold and not for_good
            state.awaited_members = 0
            state.awaited_keys.clear()
            state.keys_awaited_at_any_count = state.awaits_whole_grace = False
            state.hold_since_ms = None
            state.hold_spent_ms = 0
            self._pump()

    def held_since(self, room_id: bytes) -> int | None:
        """While the outbox of ``room_id`` waits for members, when it would have begun to
        wait had it been joined all along: the JOINED of this connection, less the time
        joined during the wait before the last drop; None otherwise. The caller's grace
        time counts from it: time joined, not time out of reach."""
        state = self.rooms.get(room_id)
        if state is None or state.hold_since_ms is None or not self.holding(room_id):
            return None
        return state.hold_since_ms - state.hold_spent_ms

    def expire(self, now_ms: int) -> None:
        """Forget every room whose time is over, and its outbox (RoomExpired events), and
        leave it on the relay: a client leaves at expiry by its own clock (PROTOCOL.md 9).
        Then give up every message in the outbox whose timestamp is ``OUTBOX_MAX_AGE_MS``
        old, on the wire or not (NotSent events, PROTOCOL.md 10.6). Call it about once a
        second."""
        for room_id, state in list(self.rooms.items()):
            if 0 < state.expires_at_ms <= now_ms:
                self._leave_on_wire(room_id)
                self._forget(room_id)
                self._events.append(RoomExpired(room_id))
        for number, outgoing in list(self._outbox.items()):
            if now_ms - outgoing.timestamp_ms >= OUTBOX_MAX_AGE_MS:
                # One on the wire keeps its place in flight until answered; its ACK then
                # finds it gone from the outbox and reports nothing.
                del self._outbox[number]
                self._events.append(
                    NotSent(outgoing.room_id, outgoing.message_id, NOT_SENT_IN_TIME)
                )

    def retry_join(self, room_id: bytes) -> None:
        """Send JOIN again for a room not joined yet (the relay said: rate limited, relay
        full or room full). Does nothing while a JOIN for the room is unanswered (a second JOIN
        would replace the challenge under the first one's PROOF) or waits for held LEAVEs."""
        state = self.rooms.get(room_id)
        if (
            self.connected
            and state is not None
            and not state.joined
            and not state.join_sent
            and room_id not in self._join_after_leaves
        ):
            self._join_again(room_id, paused=not state.full_for_now)

    def resend_unacknowledged(self) -> None:
        """Publish again, oldest first, what the relay refused for the moment (it said:
        rate limited), and what waits behind it, up to ``MAX_IN_FLIGHT`` on the wire."""
        self._paused = False
        self._pump()

    def receive(self, data: bytes, now_ms: int) -> None:
        """Handle one frame from the relay. A frame that makes no sense raises FrameError.
        While disconnected there is no relay to hear from: a frame then is ignored (a JOINED
        taken then would count us in a room the next connection has not let us into)."""
        if not self.connected:
            return
        self._now_ms = now_ms
        frame = frames.decode_frame(data)
        match frame:
            case frames.Deliver(room_id, envelope):
                self._deliver(room_id, envelope, now_ms)
            case frames.Ack(ref):
                self._acknowledged(ref)
            case frames.Challenge(room_id, challenge):
                self._challenged(room_id, challenge)
            case frames.Joined(room_id, expires_at_ms, members):
                self._proved.discard(room_id)
                state = self.rooms.get(room_id)
                if self._answered_after_leave(room_id):
                    pass
                elif state is not None and state.join_sent:
                    # Only the answer to our JOIN, once: a JOINED the relay adds would
                    # count as news (a new expiry, a new count) at each, as often as it
                    # likes to send them.
                    state.joined = True
                    state.join_sent = False
                    # The earlier of what we knew and what the relay says; 0 says nothing.
                    known = [t for t in (state.expires_at_ms, expires_at_ms) if t]
                    state.expires_at_ms = min(known, default=0)
                    state.members = members
                    if members >= state.awaited_members and not state.keys_awaited_at_any_count:
                        state.awaited_keys.clear()  # the room never emptied: nobody left it
                    if self.holding(room_id) and state.hold_since_ms is None:
                        state.hold_since_ms = now_ms
                    self._events.append(Joined(room_id, state.expires_at_ms, members))
                    # Our JOIN message first: the others learn who we are before they
                    # read what waited in the outbox.
                    state.unsent = []  # our JOIN says it all
                    state.roster.joined(members, now_ms)
                    self._announce(room_id, now_ms)
                    self._ready(room_id)  # once the members are back, wait no more
                    self._pump()
            case frames.Presence(room_id, members):
                state = self.rooms.get(room_id)
                if state is not None:
                    state.members = members
                    self._events.append(PresenceChanged(room_id, members))
                    state.roster.count_changed(members, now_ms)
                    self._ready(room_id)  # once the members are back, wait no more
                    self._pump()
            case frames.Pong(token):
                self._events.append(PongReceived(token))
            case frames.Error(code, ref, room_id, reason):
                self._refused(code, ref, room_id, reason)
            case _:
                raise FrameError(
                    "The relay sent a frame only clients send.", ErrorCode.UNKNOWN_FRAME_TYPE
                )

    # inside

    def _clock(self, now_ms: int | None) -> int:
        if now_ms is not None:
            self._now_ms = now_ms
        return self._now_ms

    def _announce(self, room_id: bytes, now_ms: int) -> None:
        """Publish now what the roster of ``room_id`` has to send (PROTOCOL.md 5.7): while
        publishing is paused or MAX_IN_FLIGHT are on the wire it waits for the next tick;
        while the room is not joined it is dropped: presence is news, and the next JOINED
        announces anyway. Like any PUBLISH it takes a ref and a place in flight until
        answered, but no place in the outbox."""
        state = self.rooms[room_id]
        kinds, state.unsent = state.unsent, []
        kinds += [kind for kind in state.roster.take_sends() if kind not in kinds]
        for kind in kinds:
            if not self.connected or not state.joined:
                continue  # news no more: the next JOINED announces anyway
            if self._paused or len(self._in_flight) >= MAX_IN_FLIGHT:
                state.unsent.append(kind)  # the relay is busy, not gone: at the next tick
                continue
            message = new_message(
                self.device, self.name, kind, b"", token_bytes=self._token_bytes, now_ms=now_ms
            )
            envelope = seal_envelope(state.keys, self.device, message, self._token_bytes(12))
            state.replays.remember(message.message_id, message.timestamp_ms, now_ms)
            self._publish(
                _Outgoing(_NOT_IN_OUTBOX, room_id, message.message_id, now_ms, envelope, kind=kind)
            )

    def _members_changed(self, room_id: bytes, version: int) -> None:
        """A MembersChanged event if the roster of ``room_id`` is not at ``version`` now.
        Not from a session that announces nothing: scripts show no roster, and their events
        stay as they were before rosters (``members`` still answers)."""
        state = self.rooms.get(room_id)
        if self.announce and state is not None and state.roster.version != version:
            self._events.append(MembersChanged(room_id, state.roster.members))

    def _leave_on_wire(self, room_id: bytes) -> None:
        """Tell the relay we leave ``room_id``: now, or once its unanswered JOIN is
        answered (a LEAVE now and a JOIN later would be two JOINs in flight)."""
        state = self.rooms.get(room_id)
        if state is None or not self.connected:
            return
        if room_id in self._join_after_leaves:  # its JOIN was refused: nothing to leave
            self._join_after_leaves.remove(room_id)
        elif state.join_sent:
            self._leave_on_answer.add(room_id)
        else:
            self._frames.append(frames.encode_frame(frames.Leave(room_id)))

    def _answered_after_leave(self, room_id: bytes, member: bool = True) -> bool:
        """The answer to the JOIN of a room left meanwhile: send its LEAVE now if the
        answer leaves us in the room (or challenged), and tell the caller to drop it."""
        if room_id not in self._leave_on_answer:
            return False
        self._leave_on_answer.discard(room_id)
        if member:
            self._frames.append(frames.encode_frame(frames.Leave(room_id)))
        if not self._leave_on_answer:
            waiting, self._join_after_leaves = self._join_after_leaves, []
            for waiting_id in waiting:
                if waiting_id in self.rooms:
                    self._send_join(waiting_id)
        return True

    def _challenged(self, room_id: bytes, challenge: bytes) -> None:
        """Sign the CHALLENGE of our outstanding JOIN for ``room_id``, once; ignore any
        other (PROTOCOL.md 8.6). A proof is not bound to the relay that asked for it: one
        for a challenge a hostile relay brought from another relay would let it join the
        room there."""
        if room_id in self._proved:
            return  # one CHALLENGE per JOIN: this one we did not ask for
        if self._answered_after_leave(room_id):
            return
        state = self.rooms.get(room_id)
        if state is None or not state.join_sent:
            return  # no JOIN of ours waits for it
        self._proved.add(room_id)
        state.proved_ms = self._now_ms
        signature = sign_join_proof(state.keys.signing_key, room_id, challenge)
        self._frames.append(frames.encode_frame(frames.Proof(room_id, signature)))

    def _join_again(self, room_id: bytes, *, paused: bool = True) -> None:
        """JOIN a room again on this connection (a NOT_JOINED, a retry): at once the first
        time, and whenever we signed no proof for it in the last REJOIN_PAUSE_MS; else
        once the pause is over (tick), the room's messages waiting meanwhile as after a
        reconnect. A relay that lets us in, or challenges us, and then refuses, again and
        again, gets a proof per pause, not one per round trip (PROTOCOL.md 10.6). Not
        ``paused``: a retry the caller paces itself (a room or relay full for now)."""
        state = self.rooms[room_id]
        first, state.joined_again = not state.joined_again, True
        if (
            first
            or not paused
            or state.proved_ms is None
            or _past(state.proved_ms + REJOIN_PAUSE_MS, self._now_ms)
        ):
            self._send_join(room_id)
        else:
            state.rejoin_due_ms = state.proved_ms + REJOIN_PAUSE_MS

    def _send_join(self, room_id: bytes) -> None:
        state = self.rooms[room_id]
        self._proved.discard(room_id)  # a new JOIN: its CHALLENGE is still to come
        join = frames.Join(room_id, state.keys.public_key, state.expires_at_ms)
        self._frames.append(frames.encode_frame(join))
        state.join_sent = True
        state.behind_held_leave = bool(self._leave_on_answer)

    def _ready(self, room_id: bytes) -> bool:
        """True if the outbox of ``room_id`` may be published now. A room whose members
        are back stops waiting for them for good."""
        state = self.rooms.get(room_id)
        if state is None or not state.joined or self.holding(room_id):
            return False
        state.awaited_members = 0
        state.keys_awaited_at_any_count = False
        state.hold_since_ms = None
        state.hold_spent_ms = 0
        return True

    def _pump(self) -> None:
        """Publish what waits, oldest first, while fewer than MAX_IN_FLIGHT PUBLISHes are
        unanswered, unless a refusal paused publishing (PROTOCOL.md 10.6)."""
        if not self.connected or self._paused:
            return
        ready: dict[bytes, bool] = {}
        for outgoing in self._outbox.values():
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                return
            if outgoing.ref:
                continue
            room_id = outgoing.room_id
            if room_id not in ready:
                ready[room_id] = self._ready(room_id)
            if ready[room_id]:
                self._publish(outgoing)

    def _publish(self, outgoing: _Outgoing) -> None:
        ref = self._next_ref
        while ref in self._in_flight:  # after 2^32 refs: skip one still unanswered
            ref = ref % MAX_REF + 1
        self._next_ref = ref % MAX_REF + 1
        outgoing.ref = ref
        outgoing.went_out = True
        self._in_flight[ref] = outgoing
        publish = frames.Publish(ref, outgoing.room_id, outgoing.envelope)
        self._frames.append(frames.encode_frame(publish))

    def _acknowledged(self, ref: int) -> None:
        outgoing = self._in_flight.pop(ref, None)
        if outgoing is None:
            return
        if self._outbox.pop(outgoing.number, None) is not None:
            self._events.append(Accepted(outgoing.room_id, outgoing.message_id))
        self._pump()

    def _deliver(self, room_id: bytes, envelope: bytes, now_ms: int) -> None:
        state = self.rooms.get(room_id)
        if state is None:
            return
        dated: list[int] = []  # the timestamp, once decrypted (not yet authenticated)

        def check(opened: Message) -> None:
            dated.append(opened.timestamp_ms)
            state.replays.check(opened, now_ms)

        try:
            # Stale or already received: dropped before its signature costs anything;
            # remembered only once it is verified.
            message = open_envelope(state.keys, envelope, check)
            state.replays.accept(message, now_ms)
        except EnvelopeError as exc:
            ahead = dated[0] - now_ms if dated and isinstance(exc, StaleMessage) else 0
            if ahead <= state.replays.max_future_ms:
                ahead = 0  # not dropped for being ahead
            elif dated[0] >= 2**53:
                ahead = 2**53 - 1  # past what JavaScript's numbers hold exactly
            self._events.append(MessageRejected(room_id, type(exc).__name__, ahead))
            return
        # Names that look alike are one name here (PROTOCOL.md 4.4); shown as sent.
        name = canonical_name(message.sender_name)
        own_name = canonical_name(self.name)
        if own_name and name == own_name:
            # Our own name is known with our own key, always (PROTOCOL.md 4.3): each
            # message under it from another device is flagged, not just the first.
            key_changed = message.sender_key != self.device.public_key
        else:
            known = state.names.pop(name, None)
            key_changed = known is not None and known != message.sender_key
            # Only a TEXT message, which clients show with the warning, makes another key
            # the name's: another kind (a TYPING, a kind we ignore) is not shown, and a new
            # key taken from it would let the next TEXT under the name pass unflagged.
            keep = message.sender_key
            if known is not None and key_changed and message.kind != Kind.TEXT:
                keep = known
            state.names[name] = keep  # now the most recently seen
            if len(state.names) > MAX_NAMES_PER_ROOM:
                del state.names[next(iter(state.names))]  # the least recently seen
        self._events.append(
            MessageReceived(room_id, message, fingerprint(message.sender_key), key_changed)
        )
        if now_ms - message.timestamp_ms > MAX_HEARD_AGE_MS:
            return  # sent long ago: it says nothing of who is here now (PROTOCOL.md 5.7)
        if message.sender_key in state.awaited_keys:  # back (or gone, for a LEAVE)
            state.awaited_keys.discard(message.sender_key)
            if self._ready(room_id):
                self._pump()
        version = state.roster.version
        state.roster.heard(
            message.kind,
            message.sender_key,
            message.sender_name,
            key_changed,
            now_ms,
            message.timestamp_ms,
        )
        self._members_changed(room_id, version)  # an answer, if any, waits for a tick

    def _refused(self, code: int, ref: int, room_id: bytes, reason: str) -> None:
        state = self.rooms.get(room_id)
        if not ref and code in _ANSWERS_A_JOIN and state is not None and not state.join_sent:
            # No JOIN of ours waits for it: a relay sending them at will would make a
            # joined room "full for now", or give it up (PROTOCOL.md 8.6). A room left
            # with its JOIN unanswered is not in ``rooms`` (its answer is awaited below).
            return
        if not ref:
            self._proved.discard(room_id)  # a refusal of its JOIN or PROOF answers the JOIN
        if not ref and self._answered_after_leave(room_id, code == ErrorCode.ALREADY_JOINED):
            return
        if (
            code == ErrorCode.TOO_MANY_ROOMS
            and not ref
            and state is not None
            and state.behind_held_leave
            and not state.joined
        ):
            # Perhaps a held LEAVE's place: JOIN once more, behind every held LEAVE.
            state.behind_held_leave = False
            if self._leave_on_answer:
                state.join_sent = False  # answered: a CHALLENGE now is none of ours
                self._join_after_leaves.append(room_id)
            else:
                self._send_join(room_id)
            return
        outgoing = self._in_flight.pop(ref, None) if ref else None
        if outgoing is not None:
            outgoing.ref = 0  # not taken: stays in the outbox, in its place
            outgoing.went_out = False  # this copy was refused: the relay has none
            if code != ErrorCode.NOT_JOINED:
                # Rate limited (or refused for a reason we do not know): publish nothing
                # more until the caller's timer says so, or the refusals pile up.
                self._paused = True
        self._events.append(Refused(code, room_id, ref, reason))
        if state is None:
            self._pump()
            return
        if (
            outgoing is not None
            and outgoing.number == _NOT_IN_OUTBOX
            and outgoing.room_id == room_id
            and code != ErrorCode.NOT_JOINED
            and state.joined
            and self.connected
            and outgoing.kind not in state.unsent
        ):
            # A refused announcement (rate limited) goes again at the next tick after the
            # pause: others wait for a member coming back to say so (PROTOCOL.md 10.6).
            state.unsent.append(outgoing.kind)
        if not ref:
            state.join_sent = False  # a refusal of its JOIN or PROOF answers the JOIN
            state.full_for_now = code in (ErrorCode.ROOM_FULL, ErrorCode.RELAY_FULL)
        if code == ErrorCode.NOT_JOINED:
            # The relay does not count us in a room we thought we were in: join again;
            # the outbox (the refused message too, its ref now 0) follows the JOINED.
            # Only once: further PUBLISHes sent before it are refused too, and a second
            # JOIN would replace the challenge under the first PROOF. Only as the answer
            # to a PUBLISH of ours in that room: each JOIN costs a proof the relay keeps
            # (PROTOCOL.md 8.6), and one naming no such PUBLISH would get one at will.
            # Nor as the answer to an announcement, published by the session on its own
            # (at each tick, after each JOINED): a hostile relay refusing those would get
            # a proof per JOIN message we send.
            answers_ours = (
                outgoing is not None
                and outgoing.room_id == room_id
                and outgoing.number != _NOT_IN_OUTBOX
            )
            if state.joined and self.connected and answers_ours:
                state.joined = False
                self._join_again(room_id)
        elif code == ErrorCode.ROOM_EXPIRED:
            self._forget(room_id)
            self._events.append(RoomExpired(room_id))
        elif code in _FATAL_FOR_ROOM and not state.joined:
            # The relay will not let us in: do not ask again, and say what will not go.
            for outgoing in self._outbox.values():
                if outgoing.room_id == room_id:
                    self._events.append(NotSent(room_id, outgoing.message_id, NOT_SENT_REFUSED))
            self._forget(room_id)
        self._pump()

    def _forget(self, room_id: bytes) -> None:
        self.rooms.pop(room_id, None)
        self._outbox = {n: o for n, o in self._outbox.items() if o.room_id != room_id}

"""Who is in a room: the roster each member keeps from ``JOIN``, ``HERE`` and ``LEAVE``
messages (PROTOCOL.md 5.7).

The relay counts a room's connections and knows no names; members tell each other who
they are. A ``Roster`` is one member's view of one room: pure, like the rest of the core.
The caller tells it what happened (``joined``, ``count_changed``, ``heard``, ``leaving``)
and ticks it about once a second (``tick``) with its own clock's ``now_ms``; it says what
to send (``take_sends``: kinds, to seal with an empty body) and who is there
(``members``).

    joined (JOINED) ------> JOIN sent, a roll call starts
    heard JOIN ------------> the sender added, a roll call starts, a HERE in d ms
    count_changed (down) --> a roll call's JOIN planned in d ms, unless a LEAVE explains it
    tick -----------------> what is due: a HERE, a planned JOIN, a roll call judged

A roll call started at ``t`` is judged at ``t + ROLL_CALL_WINDOW_MS``: every entry last
heard before ``t`` is removed, since every announcing member had time to answer. Only an
announcing roster sends anything; one that announces nothing still keeps the entries it
hears and judges the roll calls others' ``JOIN``s start.

The JavaScript core (``web/src/protocol/roster.js``) does the same; the vectors
``presence`` in ``vectors/protocol.json`` check both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import Kind
from .errors import UsageError
from .kdf import fingerprint

# Answers to one JOIN are spread over this many ms, by the XOR of the two device keys.
ANSWER_SPREAD_MS = 2000
# A roll call is judged this long after its JOIN: the longest answer delay, a second for
# the answering client's timer, and the way there and back.
ROLL_CALL_WINDOW_MS = 5000
# Entries kept per room, at most: a hostile member can announce keys without end.
MAX_ROSTER = 1000

DEVICE_KEY_SIZE = 32
# ``their`` key for a roll call after the count went down: nobody's in particular.
_NOBODY = bytes(DEVICE_KEY_SIZE)


def answer_delay_ms(own_key: bytes, their_key: bytes) -> int:
    """``d`` of PROTOCOL.md 5.7: from the first two bytes of each key, so that the members
    answering one JOIN do not all answer at once, and each always after the same delay."""
    high = own_key[0] ^ their_key[0]
    low = own_key[1] ^ their_key[1]
    return (high * 256 + low) % ANSWER_SPREAD_MS


@dataclass(frozen=True)
class Member:
    """One entry of a roster, as shown. ``repr`` shows no name or key."""

    device_key: bytes = field(repr=False)
    name: str = field(repr=False)
    fingerprint: str  # fingerprint(device_key), PROTOCOL.md 4.3
    # The name was known in the room with another device key (PROTOCOL.md 4.4).
    key_changed: bool


@dataclass
class _Entry:
    member: Member
    heard_ms: int  # when it was last heard, by this device's clock


class Roster:
    """One member's roster of one room (PROTOCOL.md 5.7)."""

    def __init__(self, own_key: bytes, *, announce: bool) -> None:
        if len(own_key) != DEVICE_KEY_SIZE:
            raise UsageError(f"A device key is {DEVICE_KEY_SIZE} bytes.")
        self.own_key = own_key
        self.announce = announce
        # By when each was added, oldest first: the order shown.
        self._entries: dict[bytes, _Entry] = {}
        # The same keys by when each was last heard, least recently first: who goes first
        # past MAX_ROSTER. Call order, not ``now_ms``: no ties, and a clock set back
        # changes nothing.
        self._recency: dict[bytes, None] = {}
        self._version = 0
        self._members: tuple[Member, ...] = ()
        self._members_version = 0
        self._sends: list[Kind] = []
        # The relay's last count of the room (JOINED, then PRESENCE); None before JOINED.
        self._count: int | None = None
        # When the HERE that answers every JOIN heard so far is due; None: none waits.
        self._here_due_ms: int | None = None
        # When the JOIN of a roll call of our own (the count went down) is due.
        self._join_due_ms: int | None = None
        # The roll call being judged (its JOIN's time), and the latest one started since.
        self._roll_call_ms: int | None = None
        self._next_roll_call_ms: int | None = None
        # When a LEAVE was last heard: it may explain the count going down.
        self._leave_heard_ms: int | None = None
        # leaving() was called: nothing more is sent until the next joined().
        self._left = False

    # what happened

    def joined(self, count: int, now_ms: int) -> None:
        """The relay let us into the room (JOINED, with its count): announce ourselves. Our
        JOIN is a roll call, and answers every JOIN heard before it, as a HERE would."""
        self._count = count
        self._left = False
        self._join_due_ms = None
        if self.announce:
            self._send_join(now_ms)

    def count_changed(self, count: int, now_ms: int) -> None:
        """The relay's count of the room (PRESENCE). When it goes down, someone may have
        gone without a LEAVE: an announcing member calls a roll call, in ``d`` ms, unless a
        LEAVE heard within ROLL_CALL_WINDOW_MS explains it (the count still covers the
        roster and us)."""
        before, self._count = self._count, count
        if before is None or count >= before or not self._entries or not self._may_send():
            return
        explained = (
            self._leave_heard_ms is not None
            and now_ms - self._leave_heard_ms <= ROLL_CALL_WINDOW_MS
            and count - 1 >= len(self._entries)
        )
        if not explained and self._join_due_ms is None:  # one planned before goes sooner
            self._join_due_ms = now_ms + answer_delay_ms(self.own_key, _NOBODY)

    def heard(
        self, kind: int, device_key: bytes, name: str, key_changed: bool, now_ms: int
    ) -> None:
        """A message of ``kind`` from ``device_key`` passed every check (PROTOCOL.md 5.6).
        Our own key is never an entry: our own messages, sent back, change nothing."""
        if device_key == self.own_key:
            return
        if kind == Kind.LEAVE:
            self._leave_heard_ms = now_ms
            if self._entries.pop(device_key, None) is not None:
                del self._recency[device_key]
                self._version += 1
            return
        self._keep(device_key, name, key_changed, now_ms)
        if kind == Kind.JOIN:
            self._join_due_ms = None  # this JOIN is the roll call
            self._start_roll_call(now_ms)
            if self._may_send() and self._here_due_ms is None:
                self._here_due_ms = now_ms + answer_delay_ms(self.own_key, device_key)

    def tick(self, now_ms: int) -> None:
        """Do what is due by ``now_ms``: judge roll calls, then send a planned JOIN (which
        answers as a HERE would) or else a HERE."""
        while self._roll_call_ms is not None and now_ms >= self._roll_call_ms + ROLL_CALL_WINDOW_MS:
            self._judge(self._roll_call_ms)
            self._roll_call_ms, self._next_roll_call_ms = self._next_roll_call_ms, None
        if self._join_due_ms is not None and now_ms >= self._join_due_ms:
            self._join_due_ms = None
            self._send_join(now_ms)
        elif self._here_due_ms is not None and now_ms >= self._here_due_ms:
            self._here_due_ms = None
            self._sends.append(Kind.HERE)

    def leaving(self) -> None:
        """We are about to leave the room on purpose: say so (if announcing), and send
        nothing more until the next ``joined``: a HERE after our LEAVE would bring us back
        into the others' rosters."""
        if self._may_send():
            self._sends.append(Kind.LEAVE)
        self._left = True
        self._here_due_ms = self._join_due_ms = None

    # what the caller takes

    def take_sends(self) -> list[Kind]:
        """The kinds to send now, in order; empties the list."""
        out, self._sends = self._sends, []
        return out

    @property
    def members(self) -> tuple[Member, ...]:
        """Who is believed present, oldest entry first; never ourselves."""
        if self._members_version != self._version:
            self._members = tuple(entry.member for entry in self._entries.values())
            self._members_version = self._version
        return self._members

    @property
    def version(self) -> int:
        """Goes up whenever ``members`` changes (an entry added or removed, a name or flag
        changed); not when an entry is only heard again."""
        return self._version

    # inside

    def _may_send(self) -> bool:
        return self.announce and not self._left

    def _send_join(self, now_ms: int) -> None:
        self._sends.append(Kind.JOIN)
        self._here_due_ms = None  # the JOIN says we are here too
        self._start_roll_call(now_ms)

    def _start_roll_call(self, now_ms: int) -> None:
        if self._roll_call_ms is None:
            self._roll_call_ms = now_ms
        else:
            self._next_roll_call_ms = now_ms  # the latest only: it covers those before

    def _judge(self, call_ms: int) -> None:
        gone = [key for key, entry in self._entries.items() if entry.heard_ms < call_ms]
        for key in gone:
            del self._entries[key]
            del self._recency[key]
        if gone:
            self._version += 1

    def _keep(self, device_key: bytes, name: str, key_changed: bool, now_ms: int) -> None:
        entry = self._entries.get(device_key)
        if entry is None:
            member = Member(device_key, name, fingerprint(device_key), key_changed)
            self._entries[device_key] = _Entry(member, now_ms)
            self._version += 1
            if len(self._entries) > MAX_ROSTER:
                oldest = next(iter(self._recency))  # the least recently heard
                del self._recency[oldest]
                del self._entries[oldest]
        else:
            entry.heard_ms = now_ms
            del self._recency[device_key]
            old = entry.member
            if (old.name, old.key_changed) != (name, key_changed):
                entry.member = Member(device_key, name, old.fingerprint, key_changed)
                self._version += 1
        self._recency[device_key] = None

"""Who is in a room: the roster each member keeps from ``JOIN``, ``HERE`` and ``LEAVE``
messages (PROTOCOL.md 5.7).

The relay counts a room's connections and knows no names; members tell each other who
they are. A ``Roster`` is one member's view of one room: pure, like the rest of the core.
The caller tells it what happened (``joined``, ``count_changed``, ``heard``, ``leaving``)
and ticks it about once a second (``tick``) with its own clock's ``now_ms``; it says what
to send (``take_sends``: kinds, to seal with an empty body) and who is there
(``members``).

    joined (JOINED) ------> JOIN sent, a roll call starts
    heard JOIN ------------> the sender added, a roll call starts, a HERE in d ms (not
                             sooner than ANSWER_GAP_MS after our last JOIN or HERE)
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

from collections import Counter
from dataclasses import dataclass, field, replace

from .envelope import Kind
from .errors import UsageError
from .kdf import fingerprint
from .names import canonical_name

# Answers to one JOIN are spread over this many ms, by the XOR of the two device keys.
ANSWER_SPREAD_MS = 2000
# A member announces itself (JOIN or HERE) at most once in this many ms but for its own
# JOINs: a member sending JOINs without end must not make the whole room answer each.
ANSWER_GAP_MS = 5000
# A roll call is judged this long after its JOIN: the longest wait for an answer (the gap,
# which is longer than the spread), a second for the answering client's timer, and the way
# there and back.
ROLL_CALL_WINDOW_MS = 8000
# Entries kept per room, at most: a hostile member can announce keys without end.
MAX_ROSTER = 1000
# A message sent longer ago than this (by its timestamp and our clock) says nothing of who
# is here now: the caller does not pass it to ``heard`` (a relay could keep and replay
# an old HERE of a member long gone).
MAX_HEARD_AGE_MS = 120_000
# A roster that outgrows the relay's count (more entries than others counted) holds keys
# that are not connected: an announcing member calls a roll call, at most this often.
OUTGROWN_CALL_EVERY_MS = 30_000

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
    member: Member  # as heard; shown flagged too while another entry claims its name
    canonical: str  # canonical_name(member.name)
    heard_ms: int  # roster time (``Roster._time``) it was last heard
    # It answered a roll call: a key that was connected, not only announced.
    confirmed: bool = False


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
        # When each LEAVE that took an entry out was heard, oldest first: each may explain
        # one step down of the count, once.
        self._leaves: list[int] = []
        # When we last sent a JOIN (a roll call), for OUTGROWN_CALL_EVERY_MS, and a JOIN or
        # a HERE, for ANSWER_GAP_MS.
        self._called_ms: int | None = None
        self._announced_ms: int | None = None
        # Roster time: the caller's clock with every step back taken out (``_time``).
        self._offset_ms = 0
        self._last_ms: int | None = None
        # leaving() was called: nothing more is sent until the next joined().
        self._left = False

    # what happened

    def joined(self, count: int, now_ms: int) -> None:
        """The relay let us into the room (JOINED, with its count): announce ourselves. Our
        JOIN is a roll call, and answers every JOIN heard before it, as a HERE would."""
        now_ms = self._time(now_ms)
        self._count = count
        self._left = False
        self._join_due_ms = None
        if self.announce:
            self._send_join(now_ms)

    def count_changed(self, count: int, now_ms: int) -> None:
        """The relay's count of the room (PRESENCE). When it goes down, someone may have
        gone without a LEAVE: an announcing member calls a roll call, in ``d`` ms, unless
        LEAVEs heard within ROLL_CALL_WINDOW_MS explain it, one step down each (and the
        count still covers the roster and us)."""
        now_ms = self._time(now_ms)
        before, self._count = self._count, count
        if before is None or count >= before:
            return
        steps = before - count
        recent = [at for at in self._leaves if now_ms - at <= ROLL_CALL_WINDOW_MS]
        explained = len(recent) >= steps and count - 1 >= len(self._entries)
        self._leaves = recent[steps:]  # each LEAVE explains one step, once
        if not explained and self._entries and self._may_send():
            self._plan_roll_call(now_ms)

    def heard(
        self, kind: int, device_key: bytes, name: str, key_changed: bool, now_ms: int
    ) -> None:
        """A message of ``kind`` from ``device_key`` passed every check (PROTOCOL.md 5.6),
        sent at most MAX_HEARD_AGE_MS ago. Our own key is never an entry: our own messages,
        sent back, change nothing; but a LEAVE under it is another window of ours leaving,
        not us, and we say at once that we are still here."""
        now_ms = self._time(now_ms)
        if device_key == self.own_key:
            if kind == Kind.LEAVE and self._may_send():
                self._here_due_ms = now_ms
            return
        if kind == Kind.LEAVE:
            if self._entries.pop(device_key, None) is not None:
                del self._recency[device_key]
                self._version += 1
                self._leaves.append(now_ms)
                del self._leaves[:-MAX_ROSTER]
            return
        self._keep(device_key, name, key_changed, now_ms)
        if kind == Kind.JOIN:
            self._join_due_ms = None  # this JOIN is the roll call
            self._start_roll_call(now_ms)
            if self._may_send() and self._here_due_ms is None:
                due = now_ms + answer_delay_ms(self.own_key, device_key)
                if self._announced_ms is not None:
                    due = max(due, self._announced_ms + ANSWER_GAP_MS)
                self._here_due_ms = due

    def tick(self, now_ms: int) -> None:
        """Do what is due by ``now_ms``: judge roll calls, then send a planned JOIN (which
        answers as a HERE would) or else a HERE."""
        now_ms = self._time(now_ms)
        while self._roll_call_ms is not None and now_ms >= self._roll_call_ms + ROLL_CALL_WINDOW_MS:
            self._judge(self._roll_call_ms)
            self._roll_call_ms, self._next_roll_call_ms = self._next_roll_call_ms, None
        self._check_outgrown(now_ms)
        if self._join_due_ms is not None and now_ms >= self._join_due_ms:
            self._join_due_ms = None
            self._send_join(now_ms)
        elif self._here_due_ms is not None and now_ms >= self._here_due_ms:
            self._here_due_ms = None
            self._sends.append(Kind.HERE)
            self._announced_ms = now_ms

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
        """Who is believed present, oldest entry first; never ourselves. A name claimed by
        two entries is flagged in both: either may be the impostor, whoever spoke first."""
        if self._members_version != self._version:
            claims = Counter(entry.canonical for entry in self._entries.values())
            self._members = tuple(
                replace(entry.member, key_changed=True)
                if claims[entry.canonical] > 1 and not entry.member.key_changed
                else entry.member
                for entry in self._entries.values()
            )
            self._members_version = self._version
        return self._members

    @property
    def version(self) -> int:
        """Goes up whenever ``members`` changes (an entry added or removed, a name or flag
        changed); not when an entry is only heard again with the same name and flag."""
        return self._version

    # inside

    def _may_send(self) -> bool:
        return self.announce and not self._left

    def _time(self, now_ms: int) -> int:
        """Roster time: ``now_ms`` with every step back of the caller's clock taken out, so
        that a clock set back never makes members look long unheard."""
        now_ms += self._offset_ms
        if self._last_ms is not None and now_ms < self._last_ms:
            self._offset_ms += self._last_ms - now_ms
            now_ms = self._last_ms
        self._last_ms = now_ms
        return now_ms

    def _send_join(self, now_ms: int) -> None:
        self._sends.append(Kind.JOIN)
        self._here_due_ms = None  # the JOIN says we are here too
        self._called_ms = self._announced_ms = now_ms
        self._start_roll_call(now_ms)

    def _plan_roll_call(self, now_ms: int) -> None:
        """A JOIN of ours in ``d`` ms, with nobody's key as ``their``; one planned earlier
        goes as planned."""
        if self._join_due_ms is None:
            self._join_due_ms = now_ms + answer_delay_ms(self.own_key, _NOBODY)

    def _check_outgrown(self, now_ms: int) -> None:
        """More entries than the relay counts others: some are not connected (announced
        by a hostile member, or gone unseen). A roll call sorts them out, at most every
        OUTGROWN_CALL_EVERY_MS: a hostile member may keep answering for its keys."""
        if (
            self._may_send()
            and self._count is not None
            and len(self._entries) > self._count - 1
            and (self._called_ms is None or now_ms - self._called_ms >= OUTGROWN_CALL_EVERY_MS)
        ):
            self._plan_roll_call(now_ms)

    def _start_roll_call(self, now_ms: int) -> None:
        if self._roll_call_ms is None:
            self._roll_call_ms = now_ms
        else:
            self._next_roll_call_ms = now_ms  # the latest only: it covers those before

    def _judge(self, call_ms: int) -> None:
        """The roll call of ``call_ms`` is over: who was not heard since goes; the others
        answered it, and are confirmed."""
        gone = [key for key, entry in self._entries.items() if entry.heard_ms < call_ms]
        for key in gone:
            del self._entries[key]
            del self._recency[key]
        for entry in self._entries.values():
            entry.confirmed = True
        if gone:
            self._version += 1

    def _keep(self, device_key: bytes, name: str, key_changed: bool, now_ms: int) -> None:
        entry = self._entries.get(device_key)
        self._recency.pop(device_key, None)
        self._recency[device_key] = None  # now the most recently heard
        if entry is None:
            member = Member(device_key, name, fingerprint(device_key), key_changed)
            self._entries[device_key] = _Entry(member, canonical_name(name), now_ms)
            self._version += 1
            if len(self._entries) > MAX_ROSTER:
                self._drop_one(device_key)
            self._check_outgrown(now_ms)
            return
        entry.heard_ms = now_ms
        old = entry.member
        if (old.name, old.key_changed) != (name, key_changed):
            entry.member = Member(device_key, name, old.fingerprint, key_changed)
            entry.canonical = canonical_name(name)
            self._version += 1

    def _drop_one(self, added: bytes) -> None:
        """Past MAX_ROSTER: the least recently heard entry that no roll call confirmed goes
        (never the one just ``added``), else the least recently heard. Keys a hostile member
        announces by the thousand never push out members who answer roll calls."""
        victim = next(
            (key for key in self._recency if key != added and not self._entries[key].confirmed),
            next(iter(self._recency)),
        )
        del self._recency[victim]
        del self._entries[victim]

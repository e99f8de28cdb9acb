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
    count_changed (down) --> a roll call's JOIN planned in d ms, unless LEAVEs explain it
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
# JOIN on each JOINED: a member sending JOINs without end, or a relay's count going up and
# down, must not make the whole room answer each.
ANSWER_GAP_MS = 5000
# A roll call is judged this long after its JOIN: the longest wait for an answer (the gap,
# which is longer than the spread), a second for the answering client's timer, and the way
# there and back.
ROLL_CALL_WINDOW_MS = 8000
# Entries kept per room, at most: a hostile member can announce keys without end.
MAX_ROSTER = 1000
# A message sent longer ago than this (by its timestamp and our clock) says nothing of who
# is here now: the caller does not pass it to ``heard`` (a relay could keep and replay an
# old HERE of a member long gone). Twice the 5 minutes a sender's clock may be ahead or
# behind ours (the replay filter's), so that a member whose clock is off is still heard.
MAX_HEARD_AGE_MS = 600_000
# Roll calls a member calls for a roster it doubts (more entries than the relay counts
# others; LEAVEs that explained the count going down): at most this often, counted from
# the last roll call heard or sent. A hostile member may keep answering for keys that are
# not connected, and each roll call costs every member a HERE.
DOUBT_CALL_EVERY_MS = 30_000
# A roll call at least this often while the roster is not empty (anyone's counts): a
# relay that holds back a member's LEAVE, and keeps the count as it was, would keep a
# member long gone listed for ever.
ROLL_CALL_EVERY_MS = 300_000

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
    added_ms: int  # roster time (``Roster._time``) it was added
    heard_ms: int  # roster time it was last heard
    sent_ms: int  # the newest timestamp (the sender's clock) heard from it
    # It was there when a roll call started, and answered it: a key that is connected,
    # not only announced.
    confirmed: bool = False
    # It announced itself (a JOIN or a HERE), as scripts do not: back from an outage, it
    # says so at once (ClientSession waits for that, PROTOCOL.md 10.6).
    announces: bool = False


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
        # past MAX_ROSTER. Call order, not ``now_ms``: no ties.
        self._recency: dict[bytes, None] = {}
        # Each key's newest LEAVE: its timestamp (the sender's clock) and when it was
        # heard (roster time), least recently heard first, at most MAX_ROSTER, each for
        # MAX_HEARD_AGE_MS: a message the key sent before is not heard (a relay bringing
        # back an old HERE; another window's HERE overtaken by its LEAVE).
        self._left_at: dict[bytes, tuple[int, int]] = {}
        self._version = 0
        self._members: tuple[Member, ...] = ()
        self._members_version = 0
        self._sends: list[Kind] = []
        # The relay's last count of the room (JOINED, then PRESENCE); None before JOINED.
        self._count: int | None = None
        # When the HERE that answers every JOIN heard so far is due; None: none waits.
        self._here_due_ms: int | None = None
        # When the JOIN of a roll call of our own is due; for a roster that outgrew the
        # count, only if it still has when it is due (a count that lagged a JOIN).
        self._join_due_ms: int | None = None
        self._join_if_outgrown = False
        # The roll call being judged (its JOIN's time), and the latest one started since.
        self._roll_call_ms: int | None = None
        self._next_roll_call_ms: int | None = None
        # When each LEAVE that took an entry out was heard, oldest first: each may explain
        # one step down of the count, once.
        self._leaves: list[int] = []
        # When a roll call was last heard or sent (DOUBT_CALL_EVERY_MS), and when we last
        # sent a JOIN or a HERE (ANSWER_GAP_MS).
        self._called_ms: int | None = None
        self._announced_ms: int | None = None
        # When to make sure a roll call came after LEAVEs explained the count going down.
        self._doubt_ms: int | None = None
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
        count still covers the roster and us); then it makes sure of it later."""
        now_ms = self._time(now_ms)
        before, self._count = self._count, count
        if before is None or count >= before:
            return
        steps = before - count
        recent = [at for at in self._leaves if now_ms - at <= ROLL_CALL_WINDOW_MS]
        explained = len(recent) >= steps and count - 1 >= len(self._entries)
        self._leaves = recent[steps:]  # each LEAVE explains one step, once
        if not self._entries or not self._may_send():
            return
        if not explained:
            self._plan_roll_call(now_ms)
        elif self._doubt_ms is None:
            # LEAVEs of keys a hostile member announced could explain a member gone
            # without a word: a roll call comes, later.
            self._doubt_ms = now_ms + DOUBT_CALL_EVERY_MS

    def heard(
        self,
        kind: int,
        device_key: bytes,
        name: str,
        key_changed: bool,
        now_ms: int,
        sent_ms: int | None = None,
    ) -> None:
        """A message of ``kind`` from ``device_key`` passed every check (PROTOCOL.md 5.6),
        sent at ``sent_ms`` (its timestamp; None: not known), at most MAX_HEARD_AGE_MS ago.
        Our own key is never an entry: our own messages, sent back, change nothing; but a
        LEAVE under it is another window of ours leaving, not us, and we say at once that
        we are still here. A message sent before the last LEAVE heard from its key, or a
        LEAVE sent before the newest message heard from it, comes too late to count."""
        now_ms = self._time(now_ms)
        if device_key == self.own_key:
            if kind == Kind.LEAVE and self._may_send():
                self._here_due_ms = now_ms
            return
        entry = self._entries.get(device_key)
        left_at = self._left_at.pop(device_key, None)
        if left_at is not None and now_ms - left_at[1] > MAX_HEARD_AGE_MS:
            left_at = None  # long ago: a clock set right since may stamp earlier
        if kind == Kind.LEAVE:
            if sent_ms is not None:
                if entry is not None and sent_ms < entry.sent_ms:
                    if left_at is not None:
                        self._left_at[device_key] = left_at
                    return
                if left_at is None or sent_ms >= left_at[0]:
                    left_at = (sent_ms, now_ms)
            if left_at is not None:
                self._left_at[device_key] = left_at
                if len(self._left_at) > MAX_ROSTER:
                    del self._left_at[next(iter(self._left_at))]
            if self._entries.pop(device_key, None) is not None:
                del self._recency[device_key]
                self._version += 1
                self._leaves.append(now_ms)
                del self._leaves[:-MAX_ROSTER]
            return
        if left_at is not None:
            self._left_at[device_key] = left_at
            if sent_ms is not None and sent_ms < left_at[0]:
                return
        self._keep(device_key, name, key_changed, now_ms, sent_ms)
        if kind in (Kind.JOIN, Kind.HERE) and (entry := self._entries.get(device_key)):
            entry.announces = True
        if kind == Kind.JOIN:
            self._join_due_ms = None  # this JOIN is the roll call
            self._start_roll_call(now_ms)
            if self._may_send() and self._here_due_ms is None:
                self._here_due_ms = self._answer_at(now_ms, device_key)

    def tick(self, now_ms: int) -> None:
        """Do what is due by ``now_ms``: judge roll calls; plan one of ours for a roster
        we doubt; then send a planned JOIN (which answers as a HERE would) or else a
        HERE."""
        now_ms = self._time(now_ms)
        while self._roll_call_ms is not None and now_ms >= self._roll_call_ms + ROLL_CALL_WINDOW_MS:
            self._judge(self._roll_call_ms)
            self._roll_call_ms, self._next_roll_call_ms = self._next_roll_call_ms, None
        if self._doubt_ms is not None and now_ms >= self._doubt_ms:
            self._doubt_ms = None
            if self._entries and self._may_send() and not self._called_since(now_ms):
                self._plan_roll_call(now_ms)
        if self._outgrown() and not self._called_since(now_ms):
            self._plan_roll_call(now_ms, if_outgrown=True)
        elif (
            self._entries
            and self._may_send()
            and self._count is not None  # let in: our own JOIN was the first roll call
            and not self._called_since(now_ms, ROLL_CALL_EVERY_MS)
        ):
            self._plan_roll_call(now_ms)
        if self._join_due_ms is not None and now_ms >= self._join_due_ms:
            self._join_due_ms = None
            if not self._join_if_outgrown or self._outgrown():
                self._send_join(now_ms)
        if self._here_due_ms is not None and now_ms >= self._here_due_ms:
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

    def announcers(self) -> set[bytes]:
        """The device keys of the entries that announced themselves (a JOIN or a HERE)."""
        return {key for key, entry in self._entries.items() if entry.announces}

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
        self._announced_ms = now_ms
        self._start_roll_call(now_ms)

    def _answer_at(self, now_ms: int, their_key: bytes) -> int:
        """When our answer to ``their_key`` is due: ``d`` ms from now, and ANSWER_GAP_MS
        at least since our last JOIN or HERE."""
        due = now_ms + answer_delay_ms(self.own_key, their_key)
        if self._announced_ms is not None:
            due = max(due, self._announced_ms + ANSWER_GAP_MS)
        return due

    def _plan_roll_call(self, now_ms: int, *, if_outgrown: bool = False) -> None:
        """A JOIN of ours, answering no one's in particular (``their``: nobody's key); one
        planned earlier goes as planned (and goes whatever the count then, if either
        plan was not only for a roster that outgrew it)."""
        if self._join_due_ms is None:
            self._join_due_ms = self._answer_at(now_ms, _NOBODY)
            self._join_if_outgrown = if_outgrown
        elif not if_outgrown:
            self._join_if_outgrown = False

    def _outgrown(self) -> bool:
        """More entries than the relay counts others: some are not connected (announced
        by a hostile member, or gone unseen), or the count lags."""
        return self._may_send() and self._count is not None and len(self._entries) > self._count - 1

    def _called_since(self, now_ms: int, within_ms: int = DOUBT_CALL_EVERY_MS) -> bool:
        """A roll call was heard or sent within ``within_ms``."""
        return self._called_ms is not None and now_ms - self._called_ms < within_ms

    def _start_roll_call(self, now_ms: int) -> None:
        self._called_ms = now_ms
        if self._roll_call_ms is None:
            self._roll_call_ms = now_ms
        else:
            self._next_roll_call_ms = now_ms  # the latest only: it covers those before

    def _judge(self, call_ms: int) -> None:
        """The roll call of ``call_ms`` is over: who was not heard since goes. Who was there
        when it started and answered (or was confirmed before) is confirmed, oldest entry
        first, as many as the relay counts others: a hostile member answering for keys by
        the hundred confirms no more than the room holds, and those there first keep
        their places."""
        gone = [key for key, entry in self._entries.items() if entry.heard_ms < call_ms]
        for key in gone:
            del self._entries[key]
            del self._recency[key]
        places = len(self._entries) if self._count is None else self._count - 1
        for entry in self._entries.values():
            entry.confirmed = places > 0 and (entry.confirmed or entry.added_ms <= call_ms)
            places -= entry.confirmed
        if gone:
            self._version += 1

    def _keep(
        self, device_key: bytes, name: str, key_changed: bool, now_ms: int, sent_ms: int | None
    ) -> None:
        entry = self._entries.get(device_key)
        self._recency.pop(device_key, None)
        self._recency[device_key] = None  # now the most recently heard
        sent = -1 if sent_ms is None else sent_ms
        if entry is None:
            member = Member(device_key, name, fingerprint(device_key), key_changed)
            self._entries[device_key] = _Entry(member, canonical_name(name), now_ms, now_ms, sent)
            self._version += 1
            if len(self._entries) > MAX_ROSTER:
                self._drop_one()
            return
        entry.heard_ms = now_ms
        entry.sent_ms = max(entry.sent_ms, sent)
        old = entry.member
        if (old.name, old.key_changed) != (name, key_changed):
            entry.member = Member(device_key, name, old.fingerprint, key_changed)
            entry.canonical = canonical_name(name)
            self._version += 1

    def _drop_one(self) -> None:
        """Past MAX_ROSTER: the least recently heard entry that no roll call confirmed
        goes, the one just added if no other. Keys a hostile member announces by the
        thousand never push out members who answered roll calls."""
        victim = next(key for key in self._recency if not self._entries[key].confirmed)
        del self._recency[victim]
        del self._entries[victim]

"""The roster of PROTOCOL.md 5.7, alone: who is in a room, and what a member sends to say so.

The shared vectors (``presence``) check fixed scenarios in both cores; here each rule is
checked by itself, and Hypothesis runs random histories against the invariants.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instantroom.protocol import roster as roster_module
from instantroom.protocol.envelope import Kind
from instantroom.protocol.errors import UsageError
from instantroom.protocol.kdf import fingerprint
from instantroom.protocol.roster import (
    ANSWER_GAP_MS,
    ANSWER_SPREAD_MS,
    DOUBT_CALL_EVERY_MS,
    MAX_HEARD_AGE_MS,
    MAX_ROSTER,
    ROLL_CALL_EVERY_MS,
    ROLL_CALL_WINDOW_MS,
    Member,
    Roster,
    answer_delay_ms,
)

NOW = 1_790_000_000_000
OWN = bytes([0x12, 0x34]) + bytes(range(30))
BOB = bytes([0x56, 0x78]) + bytes(30)
CAROL = bytes([0x9A, 0xBC]) + bytes(30)
DAVE = bytes([0xDE, 0xF0]) + bytes(30)
# d of PROTOCOL.md 5.7, worked out by hand: ((0x12 ^ 0x56) * 256 + (0x34 ^ 0x78)) % 2000.
D_BOB = (0x44 * 256 + 0x4C) % 2000  # 1484
D_CAROL = (0x88 * 256 + 0x88) % 2000  # 34952 % 2000 = 952
D_OWN_CALL = (0x12 * 256 + 0x34) % 2000  # their = 32 zero bytes: 4660 % 2000 = 660


def names(roster: Roster) -> list[str]:
    return [member.name for member in roster.members]


def announcing(count: int = 4) -> Roster:
    """An announcing roster let into the room at NOW (its JOIN taken), with bob and carol
    heard, and its own roll call over."""
    roster = Roster(OWN, announce=True)
    roster.joined(count, NOW)
    assert roster.take_sends() == [Kind.JOIN]
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 1)
    roster.heard(Kind.HERE, CAROL, "carol", False, NOW + 2)
    roster.tick(NOW + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["bob", "carol"]
    assert roster.take_sends() == []
    return roster


def test_the_answer_delay_is_the_xor_formula() -> None:
    assert (D_BOB, D_CAROL, D_OWN_CALL) == (1484, 952, 660)
    assert answer_delay_ms(OWN, BOB) == answer_delay_ms(BOB, OWN) == D_BOB
    assert answer_delay_ms(OWN, CAROL) == D_CAROL
    assert answer_delay_ms(OWN, bytes(32)) == D_OWN_CALL
    assert answer_delay_ms(OWN, OWN) == 0
    assert answer_delay_ms(b"\xff\xff" + bytes(30), bytes(32)) == 65535 % 2000
    assert max(answer_delay_ms(bytes([a, b]) + bytes(30), bytes(32))
               for a in range(256) for b in (0, 255)) < ANSWER_SPREAD_MS  # fmt: skip


def test_a_device_key_is_32_bytes() -> None:
    with pytest.raises(UsageError):
        Roster(OWN[:31], announce=True)


def test_joined_sends_a_join_at_once_only_when_announcing() -> None:
    loud, silent = Roster(OWN, announce=True), Roster(OWN, announce=False)
    for roster in (loud, silent):
        roster.joined(1, NOW)
    assert loud.take_sends() == [Kind.JOIN]
    assert loud.take_sends() == []  # taken once
    assert silent.take_sends() == []


def test_a_join_is_answered_after_d_once_for_every_join_before_the_answer() -> None:
    roster = Roster(OWN, announce=True)
    roster.heard(Kind.JOIN, BOB, "bob", False, NOW)
    roster.heard(Kind.JOIN, CAROL, "carol", False, NOW + 100)  # carol's d is shorter
    roster.tick(NOW + D_BOB - 1)
    assert roster.take_sends() == []
    roster.tick(NOW + D_BOB)
    assert roster.take_sends() == [Kind.HERE]
    roster.tick(NOW + 10_000)
    assert roster.take_sends() == []
    roster.heard(Kind.JOIN, CAROL, "carol", False, NOW + 20_000)  # after it: answered again
    roster.tick(NOW + 20_000 + D_CAROL)
    assert roster.take_sends() == [Kind.HERE]


def test_a_late_tick_sends_one_here() -> None:
    roster = Roster(OWN, announce=True)
    roster.heard(Kind.JOIN, BOB, "bob", False, NOW)
    roster.tick(NOW + 60_000)
    assert roster.take_sends() == [Kind.HERE]


@pytest.mark.parametrize("kind", [Kind.JOIN, Kind.HERE, Kind.TEXT, Kind.TYPING, 0, 9, 255])
def test_any_kind_but_leave_adds_its_sender(kind: int) -> None:
    roster = Roster(OWN, announce=False)
    roster.heard(kind, BOB, "bob", True, NOW)
    assert roster.members == (Member(BOB, "bob", fingerprint(BOB), True),)
    assert roster.version == 1


def test_entries_keep_their_place_and_take_the_latest_name_and_flag() -> None:
    roster = announcing()
    version = roster.version
    roster.heard(Kind.TEXT, BOB, "bob", False, NOW + 10_000)
    assert roster.version == version  # heard again, nothing shown changed
    roster.heard(Kind.TEXT, BOB, "Bobby", False, NOW + 10_001)
    assert names(roster) == ["Bobby", "carol"]
    assert roster.version == version + 1
    roster.heard(Kind.TYPING, BOB, "Bobby", True, NOW + 10_002)
    assert [m.key_changed for m in roster.members] == [True, False]
    assert roster.version == version + 2


def test_a_leave_removes_its_sender() -> None:
    roster = announcing()
    version = roster.version
    roster.heard(Kind.LEAVE, BOB, "bob", False, NOW + 10_000)
    assert names(roster) == ["carol"]
    assert roster.version == version + 1
    roster.heard(Kind.LEAVE, DAVE, "dave", False, NOW + 10_001)  # not known: nothing
    assert roster.version == version + 1
    assert roster.take_sends() == []


@pytest.mark.parametrize("kind", [Kind.JOIN, Kind.HERE, Kind.TEXT, 9])
def test_our_own_key_is_never_an_entry_and_changes_nothing(kind: int) -> None:
    roster = announcing()
    version = roster.version
    roster.heard(kind, OWN, "me", False, NOW + 10_000)
    assert OWN not in [m.device_key for m in roster.members]
    assert roster.version == version
    # Not a roll call (bob and carol stay), and nothing to answer.
    roster.tick(NOW + 10_000 + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["bob", "carol"]
    assert roster.take_sends() == []


def test_a_leave_under_our_own_key_is_another_window_leaving_and_we_say_we_are_here() -> None:
    roster = announcing()
    version = roster.version
    roster.heard(Kind.LEAVE, OWN, "me", False, NOW + 10_000)
    assert (names(roster), roster.version) == (["bob", "carol"], version)
    assert roster.take_sends() == []  # at the next tick, at once
    roster.tick(NOW + 10_000)
    assert roster.take_sends() == [Kind.HERE]
    roster.leaving()  # having left ourselves, we say nothing
    roster.take_sends()
    roster.heard(Kind.LEAVE, OWN, "me", False, NOW + 11_000)
    roster.tick(NOW + 11_000)
    assert roster.take_sends() == []


def test_a_roll_call_removes_who_was_last_heard_before_it() -> None:
    roster = announcing()
    roster.heard(Kind.TEXT, DAVE, "dave", False, NOW + 9_999)
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_000)  # the roll call, at t
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_000)  # heard at t: not before it
    roster.tick(NOW + 10_000 + ROLL_CALL_WINDOW_MS - 1)
    assert names(roster) == ["bob", "carol", "dave"]
    version = roster.version
    roster.tick(NOW + 10_000 + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["bob", "dave"]
    assert roster.version == version + 1


def test_one_roll_call_is_judged_at_a_time_then_the_latest_one_started_during_it() -> None:
    roster = announcing()
    t = NOW + 10_000
    roster.heard(Kind.JOIN, DAVE, "dave", False, t)
    roster.heard(Kind.TEXT, BOB, "bob", False, t + 500)
    roster.heard(Kind.JOIN, DAVE, "dave", False, t + 1000)  # remembered, then replaced
    roster.heard(Kind.JOIN, DAVE, "dave", False, t + 2000)
    roster.tick(t + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["bob", "dave"]  # carol goes
    roster.tick(t + 1000 + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["bob", "dave"]  # the roll call at t + 1000 is not judged
    roster.tick(t + 2000 + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["dave"]  # the one at t + 2000 is: bob, at t + 500, goes


def test_a_late_tick_judges_the_roll_calls_in_turn() -> None:
    roster = announcing()
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_000)
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_500)
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 11_000)
    roster.tick(NOW + 60_000)
    assert names(roster) == ["dave"]


def test_the_count_going_down_calls_a_roll_call_after_d() -> None:
    roster = announcing(count=3)
    roster.count_changed(3, NOW + 10_000)  # the same count: nothing
    roster.count_changed(2, NOW + 10_000)
    roster.count_changed(1, NOW + 10_300)  # the plan stands, not put off
    roster.tick(NOW + 10_000 + D_OWN_CALL - 1)
    assert roster.take_sends() == []
    roster.tick(NOW + 10_000 + D_OWN_CALL)
    assert roster.take_sends() == [Kind.JOIN]
    roster.heard(Kind.HERE, CAROL, "carol", False, NOW + 11_000)
    roster.tick(NOW + 10_000 + D_OWN_CALL + ROLL_CALL_WINDOW_MS)  # our JOIN's roll call
    assert names(roster) == ["carol"]
    assert roster.take_sends() == []


def test_the_count_going_up_or_down_to_an_empty_roster_calls_nothing() -> None:
    roster = Roster(OWN, announce=True)
    roster.joined(3, NOW)
    roster.take_sends()
    roster.count_changed(2, NOW + 1)  # nobody to check
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 2)
    roster.count_changed(3, NOW + 3)
    roster.tick(NOW + 10_000)
    assert roster.take_sends() == []


def test_a_count_before_joined_is_not_a_count_going_down() -> None:
    roster = Roster(OWN, announce=True)
    roster.heard(Kind.HERE, BOB, "bob", False, NOW)
    roster.count_changed(1, NOW + 1)
    roster.tick(NOW + 10_000)
    assert roster.take_sends() == []


@pytest.mark.parametrize(
    ("count", "after_ms", "called"),
    [
        (4, ROLL_CALL_WINDOW_MS, False),  # 3 others for 1 entry, at most 5000 ms after
        (2, 0, False),  # 1 other for 1 entry
        (4, ROLL_CALL_WINDOW_MS + 1, True),  # too late to explain it
        (1, 0, True),  # 0 others for 1 entry: someone else went too
    ],
)
def test_a_recent_leave_explains_the_count_going_down_if_it_still_covers_the_roster(
    count: int, after_ms: int, called: bool
) -> None:
    roster = announcing(count=count + 1)
    roster.heard(Kind.LEAVE, BOB, "bob", False, NOW + 10_000)
    roster.count_changed(count, NOW + 10_000 + after_ms)
    roster.tick(NOW + 10_000 + after_ms + D_OWN_CALL)
    assert roster.take_sends() == ([Kind.JOIN] if called else [])


def test_a_join_heard_or_sent_first_drops_the_planned_roll_call() -> None:
    roster = announcing(count=3)
    roster.count_changed(2, NOW + 10_000)
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_001)  # the roll call already
    roster.tick(NOW + 10_000 + D_OWN_CALL)
    assert roster.take_sends() == [Kind.HERE]  # only the answer to dave (his d is 420)
    roster.count_changed(1, NOW + 20_000)
    roster.joined(2, NOW + 20_001)  # a reconnect: our JOIN is the roll call
    assert roster.take_sends() == [Kind.JOIN]
    roster.tick(NOW + 20_000 + D_OWN_CALL)
    assert roster.take_sends() == []


def test_a_join_we_send_answers_as_a_here_would() -> None:
    roster = announcing(count=3)
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_000)
    roster.joined(3, NOW + 10_001)
    assert roster.take_sends() == [Kind.JOIN]
    roster.tick(NOW + 20_000)
    assert roster.take_sends() == []
    # A roll call's JOIN due with a HERE goes alone.
    roster.heard(Kind.JOIN, BOB, "bob", False, NOW + 30_000)
    roster.count_changed(2, NOW + 30_001)
    roster.tick(NOW + 40_000)
    assert roster.take_sends() == [Kind.JOIN]


def test_leaving_sends_a_leave_then_nothing_until_joined_again() -> None:
    roster = announcing(count=3)
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_000)  # a HERE waits
    roster.count_changed(2, NOW + 10_001)
    roster.leaving()
    assert roster.take_sends() == [Kind.LEAVE]
    roster.heard(Kind.JOIN, BOB, "bob", False, NOW + 10_002)
    roster.count_changed(1, NOW + 10_003)
    roster.tick(NOW + 20_000)
    assert roster.take_sends() == []
    assert names(roster) == ["bob"]  # still kept: the roll calls removed carol and dave
    roster.joined(2, NOW + 30_000)
    assert roster.take_sends() == [Kind.JOIN]
    roster.heard(Kind.JOIN, BOB, "bob", False, NOW + 30_001)
    roster.tick(NOW + 30_000 + ANSWER_GAP_MS)  # not sooner after our JOIN
    assert roster.take_sends() == [Kind.HERE]


def test_a_member_answers_at_most_once_per_gap_however_many_joins() -> None:
    roster = announcing()
    heres = []
    for second in range(60):  # bob sends a JOIN every second
        now = NOW + 10_000 + second * 1000
        roster.heard(Kind.JOIN, BOB, "bob", False, now)
        roster.tick(now)
        heres += [now for kind in roster.take_sends() if kind == Kind.HERE]
    assert heres[0] == NOW + 10_000 + -(-D_BOB // 1000) * 1000  # the first in d
    gaps = {later - earlier for earlier, later in itertools.pairwise(heres)}
    assert gaps == {ANSWER_GAP_MS}
    assert names(roster) == ["bob"]  # carol, silent, went at a roll call


def test_a_silent_roster_sends_nothing_yet_judges_others_roll_calls() -> None:
    roster = Roster(OWN, announce=False)
    roster.heard(Kind.TEXT, BOB, "bob", False, NOW)
    roster.joined(3, NOW + 1)  # no JOIN sent: no roll call of its own
    roster.tick(NOW + 1 + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["bob"]
    roster.heard(Kind.JOIN, CAROL, "carol", False, NOW + 10_000)
    roster.count_changed(2, NOW + 10_001)
    roster.leaving()
    roster.tick(NOW + 10_000 + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["carol"]
    assert roster.take_sends() == []


def test_past_max_roster_the_least_recently_heard_goes() -> None:
    roster = Roster(OWN, announce=False)
    keys = [bytes([1]) + n.to_bytes(31, "big") for n in range(MAX_ROSTER + 1)]
    for n, key in enumerate(keys[:MAX_ROSTER]):
        roster.heard(Kind.HERE, key, f"m{n}", False, NOW + n)
    roster.heard(Kind.TEXT, keys[0], "m0", False, NOW + MAX_ROSTER)  # the oldest, heard again
    roster.heard(Kind.HERE, keys[MAX_ROSTER], "new", False, NOW + MAX_ROSTER + 1)
    members = roster.members
    assert len(members) == MAX_ROSTER
    assert [m.name for m in members[:2]] == ["m0", "m2"]  # m1 went; m0 kept its place
    assert members[-1].name == "new"


def test_a_clock_set_back_makes_nobody_look_unheard() -> None:
    roster = announcing()
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_000)  # a roll call starts
    hour = 3_600_000
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_500 - hour)  # the clock went back
    roster.heard(Kind.HERE, CAROL, "carol", False, NOW + 10_600 - hour)
    roster.tick(NOW + 10_000 + ROLL_CALL_WINDOW_MS - hour)  # 5 s later, on this clock
    assert names(roster) == ["bob", "carol", "dave"]
    roster.tick(NOW + 10_000 + 2 * ROLL_CALL_WINDOW_MS - hour)  # long after: still here
    assert names(roster) == ["bob", "carol", "dave"]


def test_only_a_leave_that_took_an_entry_out_explains_the_count_going_down() -> None:
    roster = announcing(count=4)
    roster.heard(Kind.LEAVE, DAVE, "dave", False, NOW + 10_000)  # dave was not listed
    roster.count_changed(3, NOW + 10_001)
    roster.tick(NOW + 10_001 + D_OWN_CALL)
    assert roster.take_sends() == [Kind.JOIN]


def test_each_leave_explains_one_step_down_once() -> None:
    roster = announcing(count=5)
    roster.heard(Kind.HERE, DAVE, "dave", False, NOW + 6000)
    roster.heard(Kind.LEAVE, BOB, "bob", False, NOW + 10_000)
    roster.count_changed(3, NOW + 10_001)  # two went, one said so
    roster.tick(NOW + 10_001 + D_OWN_CALL)
    assert roster.take_sends() == [Kind.JOIN]
    roster.heard(Kind.HERE, CAROL, "carol", False, NOW + 11_000)
    roster.heard(Kind.HERE, DAVE, "dave", False, NOW + 11_001)
    roster.tick(NOW + 30_000)
    assert names(roster) == ["carol", "dave"]
    roster.heard(Kind.LEAVE, CAROL, "carol", False, NOW + 30_002)
    roster.count_changed(2, NOW + 30_003)  # explained by carol's LEAVE
    roster.tick(NOW + 30_003 + D_OWN_CALL)
    assert roster.take_sends() == []
    roster.count_changed(1, NOW + 30_004)  # carol's LEAVE explained a step already
    roster.tick(NOW + 30_004 + D_OWN_CALL)
    assert roster.take_sends() == [Kind.JOIN]


def test_a_name_two_entries_claim_is_flagged_in_both() -> None:
    roster = announcing()
    mallory = bytes([0x01, 0x02]) + bytes(30)
    roster.heard(Kind.HERE, mallory, "Bob", False, NOW + 10_000)  # looks like bob
    assert [(m.name, m.key_changed) for m in roster.members] == [
        ("bob", True),
        ("carol", False),
        ("Bob", True),
    ]
    roster.heard(Kind.LEAVE, mallory, "Bob", False, NOW + 10_001)
    assert [m.key_changed for m in roster.members] == [False, False]


def test_past_max_roster_keys_no_roll_call_confirmed_go_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(roster_module, "MAX_ROSTER", 4)
    roster = announcing(count=300)
    # Bob and carol, there when dave's roll call starts, answer it: confirmed, as dave.
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_000)
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_001)
    roster.heard(Kind.HERE, CAROL, "carol", False, NOW + 10_002)
    junk = [bytes([0xEE]) + n.to_bytes(31, "big") for n in range(50)]
    roster.heard(Kind.HERE, junk[0], "x0", False, NOW + 10_003)  # came during it
    roster.tick(NOW + 10_000 + ROLL_CALL_WINDOW_MS)
    for n, key in enumerate(junk[1:], start=1):
        roster.heard(Kind.HERE, key, f"x{n}", False, NOW + 20_000 + n)
    assert names(roster) == ["bob", "carol", "dave", "x49"]


def test_a_roll_call_confirms_no_more_entries_than_the_relay_counts_others_oldest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(roster_module, "MAX_ROSTER", 3)
    roster = announcing(count=3)  # two others counted
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 10_000)  # a third, with a roll call
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_001)
    roster.heard(Kind.HERE, CAROL, "carol", False, NOW + 10_002)
    roster.tick(NOW + 10_000 + ROLL_CALL_WINDOW_MS)  # bob and carol confirmed, not dave
    roster.heard(Kind.HERE, bytes([0xEE]) + bytes(31), "x", False, NOW + 20_000)
    assert names(roster) == ["bob", "carol", "x"]  # dave, unconfirmed, made way


def test_the_newest_leave_of_a_key_counts_for_max_heard_age() -> None:
    roster = announcing()
    roster.heard(Kind.LEAVE, BOB, "bob", False, NOW + 10_000, sent_ms=NOW + 9_000)
    roster.heard(Kind.LEAVE, BOB, "bob", False, NOW + 10_001, sent_ms=NOW + 5_000)  # held back
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_002, sent_ms=NOW + 6_000)
    assert names(roster) == ["carol"]
    later = NOW + 10_001 + MAX_HEARD_AGE_MS
    roster.heard(Kind.HERE, BOB, "bob", False, later, sent_ms=NOW + 8_000)  # clock set right
    assert names(roster) == ["carol", "bob"]


def test_a_roll_call_comes_every_five_minutes_unless_someone_called_one() -> None:
    roster = announcing()
    roster.tick(NOW + ROLL_CALL_EVERY_MS - 1)
    assert roster.take_sends() == []
    roster.tick(NOW + ROLL_CALL_EVERY_MS)
    roster.tick(NOW + ROLL_CALL_EVERY_MS + D_OWN_CALL)
    assert roster.take_sends() == [Kind.JOIN]
    roster.heard(Kind.JOIN, DAVE, "dave", False, NOW + 2 * ROLL_CALL_EVERY_MS)
    roster.tick(NOW + 2 * ROLL_CALL_EVERY_MS + D_OWN_CALL + 1)
    assert Kind.JOIN not in roster.take_sends()


def test_a_roster_never_let_in_calls_no_roll_call_of_its_own() -> None:
    """Found by the silent-against-announcing property: a roster not let into the room
    (no JOINED yet) has no JOIN of its own behind it, and must not time one out."""
    roster = Roster(OWN, announce=True)
    roster.heard(Kind.HERE, BOB, "bob", False, NOW)
    for after in (0, 661, ROLL_CALL_EVERY_MS, ROLL_CALL_EVERY_MS + ROLL_CALL_WINDOW_MS):
        roster.tick(NOW + after)
    assert roster.take_sends() == []
    assert names(roster) == ["bob"]


def test_a_roster_past_the_relays_count_calls_a_roll_call_now_and_then() -> None:
    roster = announcing(count=3)  # two others counted, bob and carol listed
    roster.heard(Kind.HERE, DAVE, "dave", False, NOW + 40_000)  # one too many
    roster.tick(NOW + 40_000)  # seen at a tick: a roll call in d
    assert roster.take_sends() == []
    called = NOW + 40_000 + D_OWN_CALL
    roster.tick(called)
    assert roster.take_sends() == [Kind.JOIN]
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 41_000)
    roster.heard(Kind.HERE, DAVE, "dave", False, NOW + 41_001)  # dave answers too
    roster.tick(called + ROLL_CALL_WINDOW_MS)
    assert names(roster) == ["bob", "dave"]  # carol did not answer
    mallory = bytes([0x01, 0x02]) + bytes(30)
    roster.heard(Kind.HERE, mallory, "mallory", False, NOW + 50_000)
    roster.tick(NOW + 50_000)
    roster.tick(NOW + 50_000 + D_OWN_CALL)
    assert roster.take_sends() == []  # not again so soon
    roster.tick(called + DOUBT_CALL_EVERY_MS)
    roster.tick(called + DOUBT_CALL_EVERY_MS + D_OWN_CALL)
    assert roster.take_sends() == [Kind.JOIN]


def test_a_roll_call_heard_from_another_member_counts_as_ours() -> None:
    """A roster that outgrew the count (a count lagging by one, a ghost key) does not make
    every member call a roll call of its own: anyone's counts."""
    roster = announcing(count=3)
    roster.heard(Kind.HERE, DAVE, "dave", False, NOW + 40_000)
    roster.tick(NOW + 40_000)  # planned...
    roster.heard(Kind.JOIN, BOB, "bob", False, NOW + 40_100)  # ...and bob's comes first
    for second in range(1, 30):
        roster.tick(NOW + 40_000 + second * 1000)
    assert Kind.JOIN not in roster.take_sends()


def test_a_planned_roll_call_for_an_outgrown_roster_is_dropped_if_the_count_catches_up() -> None:
    roster = announcing(count=3)
    roster.heard(Kind.HERE, DAVE, "dave", False, NOW + 40_000)  # before the PRESENCE...
    roster.tick(NOW + 40_000)
    roster.count_changed(4, NOW + 40_001)  # ...that counts dave
    roster.tick(NOW + 40_000 + D_OWN_CALL)
    assert roster.take_sends() == []


def test_leaves_that_explain_the_count_going_down_bring_a_roll_call_later() -> None:
    """A hostile member's LEAVEs of keys it announced could explain, for ever, the count
    going down as a member vanishes without a word: a roll call comes all the same."""
    roster = announcing(count=4)
    roster.heard(Kind.HERE, DAVE, "dave", False, NOW + 40_000)
    roster.heard(Kind.LEAVE, DAVE, "dave", False, NOW + 40_001)
    roster.count_changed(3, NOW + 40_002)  # explained
    roster.tick(NOW + 40_002 + D_OWN_CALL)
    assert roster.take_sends() == []
    roster.tick(NOW + 40_002 + DOUBT_CALL_EVERY_MS)
    roster.tick(NOW + 40_002 + DOUBT_CALL_EVERY_MS + D_OWN_CALL)
    assert roster.take_sends() == [Kind.JOIN]


def test_messages_sent_before_a_leave_and_a_leave_sent_before_a_message_do_not_count() -> None:
    roster = announcing()
    roster.heard(Kind.LEAVE, BOB, "bob", False, NOW + 10_000, sent_ms=NOW + 10_000)
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_001, sent_ms=NOW + 9_000)  # brought back
    assert names(roster) == ["carol"]
    roster.heard(Kind.HERE, CAROL, "carol", False, NOW + 10_002, sent_ms=NOW + 10_002)
    roster.heard(Kind.LEAVE, CAROL, "carol", False, NOW + 10_003, sent_ms=NOW + 10_001)
    assert names(roster) == ["carol"]  # that LEAVE was overtaken by a later HERE
    roster.heard(Kind.HERE, BOB, "bob", False, NOW + 10_004, sent_ms=NOW + 10_004)
    assert names(roster) == ["carol", "bob"]  # back, after his LEAVE


def test_a_member_shows_neither_name_nor_key() -> None:
    member = Member(BOB, "a secret name", fingerprint(BOB), False)
    assert "secret" not in repr(member)
    assert BOB.hex() not in repr(member)
    assert fingerprint(BOB) in repr(member)


# Random histories against the invariants.

KEYS = [OWN, BOB, CAROL, DAVE, bytes([0x13, 0x35]) + bytes(30)]
KINDS = [Kind.JOIN, Kind.HERE, Kind.LEAVE, Kind.TEXT, Kind.TYPING, 0, 9, 255]


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Steps as in the vectors, with a clock that only moves forward."""
    now = NOW
    steps: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(0, 60))):
        now += draw(st.integers(0, 3000))
        op = draw(
            st.sampled_from(["joined", "count", "heard", "heard", "heard", "tick", "leaving"])
        )
        if op in ("joined", "count"):
            steps.append((op, draw(st.integers(1, 8)), now))
        elif op == "heard":
            kind, key = draw(st.sampled_from(KINDS)), draw(st.sampled_from(KEYS))
            name = draw(st.sampled_from(["a", "b", "c"]))
            steps.append((op, kind, key, name, draw(st.booleans()), now))
        elif op == "tick":
            steps.append((op, now))
        else:
            steps.append((op,))
    return steps


def run(roster: Roster, step: tuple[Any, ...]) -> None:
    match step:
        case ("joined", count, now):
            roster.joined(count, now)
        case ("count", count, now):
            roster.count_changed(count, now)
        case ("heard", kind, key, name, key_changed, now):
            roster.heard(kind, key, name, key_changed, now)
        case ("tick", now):
            roster.tick(now)
        case ("leaving",):
            roster.leaving()
        case _:
            raise AssertionError(step)


def shown(roster: Roster) -> list[tuple[bytes, str, bool]]:
    return [(m.device_key, m.name, m.key_changed) for m in roster.members]


@settings(max_examples=300, deadline=None)
@given(histories(), st.booleans())
def test_invariants_hold_through_any_history(steps: list[tuple[Any, ...]], announce: bool) -> None:
    roster = Roster(OWN, announce=announce)
    left = False
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(roster_module, "MAX_ROSTER", 3)  # small, so that histories reach it
        for step in steps:
            before, version = shown(roster), roster.version
            run(roster, step)
            sends = roster.take_sends()
            after = shown(roster)
            assert OWN not in [key for key, _, _ in after]
            assert len(after) <= 3
            assert len({key for key, _, _ in after}) == len(after)
            # The version moves whenever what is shown changes, and only up. (It may move
            # with nothing shown changed: a flag heard for a name two entries claim.)
            assert roster.version >= version
            if before != after:
                assert roster.version != version
            assert all(m.fingerprint == fingerprint(m.device_key) for m in roster.members)
            if step[0] == "leaving":
                assert sends == ([Kind.LEAVE] if announce and not left else [])
                left = True
            elif step[0] == "joined":
                left = False
                assert sends == ([Kind.JOIN] if announce else [])
            else:
                assert len(sends) <= 1
                assert not sends or (announce and not left)
                assert set(sends) <= {Kind.JOIN, Kind.HERE}
                if step[0] != "tick":
                    assert sends == []  # what is planned waits for a tick


@settings(max_examples=100, deadline=None)
@given(histories())
def test_a_silent_roster_holds_what_an_announcing_one_holds(steps: list[tuple[Any, ...]]) -> None:
    """Answering changes what a member sends, never whom it lists, as long as both hear
    the same things. (Not its own JOINs, which are roll calls: no joined or count here.)"""
    loud, silent = Roster(OWN, announce=True), Roster(OWN, announce=False)
    for step in steps:
        if step[0] in ("joined", "count"):
            continue
        run(loud, step)
        run(silent, step)
        assert shown(loud) == shown(silent)

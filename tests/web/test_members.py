"""Who is here, on the web client's room screen (PROTOCOL.md 5.7): phones in a room see each
other by name and fingerprint, one online who says nothing (``instantroom listen``) is
counted apart, and a member who leaves, locks or closes the page goes from the list."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.protocol import frames
from instantroom.protocol.envelope import Kind
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.testing import RelayProcess, member_publish
from tests.web.conftest import FINGERPRINT, Phone, listening
from tests.web.test_replay import raw_member

# A page closed without a word is found gone by the others' next roll call: the relay's
# count goes down, a JOIN within 2 s, 8 s for the answers, a tick of the clock.
ROLL_CALL_TIMEOUT_MS = 20_000
# A member who says it leaves goes at once; without its LEAVE message it would stay until
# the roll call, 8 s at least after the count went down. A wait shorter than that tells
# the two apart (and is still ages for a message through a relay on this machine).
SAID_LEAVING_TIMEOUT_MS = 4_000
# The members the open list shows, at most (MEMBERS_LISTED in web/src/app/App.jsx).
MEMBERS_LISTED = 50


def in_room(phone: Phone, url: str, key: str, nickname: str) -> None:
    phone.open(url)
    phone.set_password(f"{nickname}'s long password")
    phone.join(key, nickname)


def open_members(phone: Phone) -> None:
    """Open the "Who is here" line to its list (it shows closed, and draws the list only
    while open)."""
    expect(phone.by("member-details")).to_be_visible()
    if phone.by("member-details").get_attribute("open") is None:
        phone.by("members-summary").click()
    expect(phone.by("member-details")).to_have_attribute("open", "")


def fingerprint_of_sender(reader: Phone, writer: Phone, text: str) -> str:
    """The fingerprint ``reader`` shows beside ``writer``'s message ``text``."""
    writer.send(text)
    return reader.expect_message(text).fingerprint


def test_phones_in_a_room_see_each_other_by_name_and_fingerprint(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Who is here", "Alice")
    alice.open_room()
    alice.expect_members(1)
    expect(alice.by("member-details")).to_have_count(0)  # alone: nothing to list

    in_room(bob, relay.url, room.key, "Bob")
    alice.expect_members(2)
    bob.expect_members(2)
    expect(alice.by("members-summary")).to_contain_text("Bob")
    expect(alice.by("member")).to_have_count(0)  # the list is drawn once opened
    open_members(alice)
    open_members(bob)
    expect(alice.by("member-name")).to_have_text(["Bob"])
    expect(bob.by("member-name")).to_have_text(["Alice"])

    # Each shows the other's fingerprint, the one beside their messages; not its own.
    members = alice.page.get_by_role("list", name="Members who said who they are")
    expect(members.get_by_role("listitem")).to_have_count(1)
    bobs = fingerprint_of_sender(alice, bob, "Bob writes")
    alices = fingerprint_of_sender(bob, alice, "Alice writes")
    assert FINGERPRINT.fullmatch(bobs)
    assert FINGERPRINT.fullmatch(alices)
    assert bobs != alices
    expect(alice.by("member-fingerprint")).to_have_text([bobs])
    expect(bob.by("member-fingerprint")).to_have_text([alices])
    expect(alice.by("member-key-change-warning")).to_have_count(0)
    expect(alice.by("members-unnamed")).to_have_count(0)
    # The open list fits a phone's width.
    assert alice.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # One online who says nothing (a script) is counted, not named.
    with listening(relay.url, room.key):
        alice.expect_members(3)
        expect(alice.by("members-unnamed")).to_have_text(
            re.compile(r"^\s*1 more online has not said who they are\.\s*$")
        )
        expect(alice.by("member-name")).to_have_text(["Bob"])
        expect(bob.by("members-unnamed")).to_be_attached()
    alice.expect_members(2)
    expect(alice.by("members-unnamed")).to_have_count(0)
    expect(alice.by("member-name")).to_have_text(["Bob"])


def test_a_member_who_leaves_locks_or_closes_the_page_goes_from_the_list(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob, carol, dan = phones(), phones(), phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Comings and goings", "Alice")
    alice.open_room()
    for phone, nickname in ((bob, "Bob"), (carol, "Carol"), (dan, "Dan")):
        in_room(phone, relay.url, room.key, nickname)
    alice.expect_members(4)
    open_members(alice)
    open_members(dan)
    # Oldest first: at Alice's, in the order they came; Dan heard the others answer his
    # JOIN, each after a delay of its own.
    expect(alice.by("member-name")).to_have_text(["Bob", "Carol", "Dan"])
    expect(dan.by("member-name")).to_have_count(3)
    assert sorted(dan.by("member-name").all_text_contents()) == ["Alice", "Bob", "Carol"]

    # Bob leaves and forgets the room: he says so as he goes.
    bob.page.get_by_role("button", name="Room options").click()
    bob.by("leave-room").click()
    bob.answer(yes=True)
    expect(bob.by("nav-new")).to_be_visible()
    expect(alice.by("member-name")).to_have_text(["Carol", "Dan"], timeout=SAID_LEAVING_TIMEOUT_MS)
    expect(dan.by("member-name")).to_have_count(2, timeout=SAID_LEAVING_TIMEOUT_MS)
    assert sorted(dan.by("member-name").all_text_contents()) == ["Alice", "Carol"]
    alice.expect_members(3)

    # Carol locks: her page says it leaves before it hangs up.
    carol.by("nav-settings").click()
    carol.by("lock-now").click()
    expect(carol.by("password")).to_be_visible()
    expect(alice.by("member-name")).to_have_text(["Dan"], timeout=SAID_LEAVING_TIMEOUT_MS)
    alice.expect_members(2)

    # Dan's phone goes away without a word: the others' roll call finds him gone.
    dan.context.close()
    alice.expect_members(1)
    expect(alice.by("member-name")).to_have_count(0, timeout=ROLL_CALL_TIMEOUT_MS)
    expect(alice.by("member-details")).to_have_count(0)


def test_a_name_heard_with_another_key_or_in_look_alike_letters_is_flagged(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob, impostor, look_alike = phones(), phones(), phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Trust but check", "Alice")
    alice.open_room()
    in_room(bob, relay.url, room.key, "Bob")
    open_members(alice)
    expect(alice.by("member-name")).to_have_text(["Bob"])
    expect(alice.by("members-summary")).not_to_contain_text("warning")

    # Another device says it is Bob; a third, "Bob" with a Cyrillic capital Ve and small o.
    in_room(impostor, relay.url, room.key, "Bob")
    in_room(look_alike, relay.url, room.key, "\u0412\u043eb")
    expect(alice.by("member-name")).to_have_text(["Bob", "Bob", "\u0412\u043eb"])
    members = alice.by("member")
    # Whoever answered first may be the impostor: both who claim the name are flagged.
    for nth in (0, 1):
        expect(members.nth(nth).get_by_test_id("member-key-change-warning")).to_contain_text(
            "More than one device here says it is Bob"
        )
    expect(members.nth(2).get_by_test_id("mixed-scripts-flag")).to_contain_text(
        "mixes Latin and Cyrillic letters"
    )
    expect(members.nth(0).get_by_test_id("mixed-scripts-flag")).to_have_count(0)
    expect(members.nth(2).get_by_test_id("member-key-change-warning")).to_have_count(0)
    # The closed line says there is something to look at.
    expect(alice.by("members-summary")).to_contain_text("with a warning")
    fingerprints = alice.by("member-fingerprint").all_text_contents()
    assert len(set(fingerprints)) == 3
    # The first Bob leaves: the one left under the name came with another key than his.
    bob.page.get_by_role("button", name="Room options").click()
    bob.by("leave-room").click()
    bob.answer(yes=True)
    expect(alice.by("member-name")).to_have_text(
        ["Bob", "\u0412\u043eb"], timeout=SAID_LEAVING_TIMEOUT_MS
    )
    expect(alice.by("member").nth(0).get_by_test_id("member-key-change-warning")).to_contain_text(
        "Bob is here with another device key than before"
    )


def test_a_name_with_a_comma_reads_as_one_name_on_the_closed_line(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The closed line names the first members: "Alice, Bob" is one member's name, and must
    not read as Alice and Bob."""
    alice, carol = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Commas", "Alice, Bob")
    alice.open_room()
    in_room(carol, relay.url, room.key, "Carol")
    carol.expect_members(2)
    # Each name is an element of its own, in quotes: the comma inside one is its own.
    expect(carol.by("members-summary-name")).to_have_text(["Alice, Bob"])
    expect(carol.by("members-summary")).to_contain_text("Who is here: “Alice, Bob”")
    expect(alice.by("members-summary-name")).to_have_text(["Carol"])


def test_a_thousand_throwaway_names_list_in_brief_warnings_first(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """A member announcing throwaway keys by the dozen (a roster keeps up to a thousand):
    the open list shows a bounded number of them, those with a warning first, and counts
    the others."""
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Crowded", "Alice")
    alice.open_room()
    keys = RoomKeys.from_minikey(room.key)
    throwaway = [DeviceKey.from_private_bytes(secrets.token_bytes(32)) for _ in range(53)]
    names = [f"t{n}" for n in range(len(throwaway) - 1)] + ["\u0412\u043eb"]  # look-alike last
    with raw_member(relay, keys) as member:
        for ref, (device, name) in enumerate(zip(throwaway, names, strict=True), start=1):
            member.ws.send(member_publish(keys, device, ref, Kind.HERE, b"", name=name))
            assert member.expect(frames.Ack) == frames.Ack(ref)
        alice.expect_members(2)  # one connection, 53 names
        expect(alice.by("members-summary")).to_contain_text(f"and {len(names) - 3} more")
        expect(alice.by("members-summary")).to_contain_text("with a warning")
        expect(alice.by("member")).to_have_count(0)
        open_members(alice)
        expect(alice.by("member")).to_have_count(MEMBERS_LISTED)
        # The cut hides no warning: the look-alike, come last, is listed first.
        expect(alice.by("member-name").first).to_have_text("\u0412\u043eb")
        expect(alice.by("member").first.get_by_test_id("mixed-scripts-flag")).to_be_attached()
        expect(alice.by("member-name").nth(1)).to_have_text("t0")
        expect(alice.by("members-not-listed")).to_have_text(
            re.compile(rf"^\s*{len(names) - MEMBERS_LISTED} more members are not listed here\.\s*$")
        )

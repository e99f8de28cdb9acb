"""Chatting in the web client: two phones through a real relay, a phone with the terminal
client, and joining by a typed key (a typo is called one)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.protocol.minikey import spell_character
from instantroom.testing import RelayProcess
from tests.client.test_cli import typo_of
from tests.web.conftest import (
    FINGERPRINT,
    Phone,
    instantroom,
    listening,
)


def texts_in_order(phone: Phone) -> list[str]:
    return [
        text.strip()
        for text in phone.by("messages").get_by_test_id("message-text").all_inner_texts()
    ]


def test_two_phones_chat_through_a_relay(relay: RelayProcess, phones: Callable[..., Phone]) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Weekend trip", "Alice", expiry="day")

    # The Share screen: the key in groups, spelled out, the invite link and its QR code.
    assert room.invite == f"{relay.url}/#{room.key}"
    spelled = alice.by("room-key-spelled").inner_text()
    position = 0
    for char in room.key:  # every character spelled, in order
        position = spelled.index(spell_character(char), position) + 1
    expect(alice.by("qr")).to_be_visible()
    alice.open_room()
    expect(alice.by("room-title")).to_contain_text("Weekend trip")
    alice.expect_members(1)

    bob.open(room.invite)
    bob.set_password("bob's long password", then="join-key")
    prefilled = "".join(bob.by("join-key").input_value().split())
    assert room.key in prefilled
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)
    bob.expect_members(2)

    alice.send("Hello Bob, the train leaves at 9.")
    at_bob = bob.expect_message("Hello Bob, the train leaves at 9.")
    own_at_alice = alice.expect_message("Hello Bob, the train leaves at 9.")
    assert at_bob.sender == own_at_alice.sender == "Alice"

    bob.send("Got it ✓ see you there", enter=True)  # Enter sends too
    at_alice = alice.expect_message("Got it ✓ see you there")
    own_at_bob = bob.expect_message("Got it ✓ see you there")
    assert at_alice.sender == own_at_bob.sender == "Bob"

    # Each side shows the same fingerprint for a sender; two senders, two fingerprints.
    assert at_bob.fingerprint == own_at_alice.fingerprint != ""
    assert at_alice.fingerprint == own_at_bob.fingerprint != ""
    assert at_bob.fingerprint != at_alice.fingerprint
    assert not any(m.key_changed for m in (at_bob, own_at_alice, at_alice, own_at_bob))
    expected = ["Hello Bob, the train leaves at 9.", "Got it ✓ see you there"]
    assert texts_in_order(alice) == texts_in_order(bob) == expected

    # Bob closes his phone: Alice's count goes down.
    bob.context.close()
    alice.expect_members(1)


def test_what_members_write_is_shown_as_text(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Plain text", "Alice")
    alice.open_room()
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.join(room.key, "<b>Bob</b>")
    markup = '<img src=x onerror="document.title=1"><script>document.title=2</script> & <i>hi</i>'
    bob.send(markup)
    shown = alice.expect_message(markup)
    assert shown.sender == "<b>Bob</b>"
    log = alice.by("messages")
    for tag in ("img", "script", "i", "b"):
        expect(log.locator(tag)).to_have_count(0)
    assert alice.page.title() not in ("1", "2")


def test_a_phone_and_the_terminal_client_chat(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    phone.set_password("a phone's long password")
    room = phone.create_room("With the terminal", "Pat", expiry="week")
    phone.open_room()
    phone.expect_members(1)

    # The key through the environment, not the command line (where ps would show it).
    with listening(relay.url, room.key) as lines:
        phone.expect_members(2)  # the listener is in

        phone.send("From the browser ✓")
        heard = json.loads(lines.next_line())
        assert (heard["name"], heard["text"]) == ("Pat", "From the browser ✓")
        assert heard["key_changed"] is False
        # The page shows its own fingerprint as the terminal client does: comparable by eye.
        own = phone.expect_message("From the browser ✓")
        assert FINGERPRINT.fullmatch(heard["fingerprint"])
        assert heard["fingerprint"] in own.fingerprint, (heard["fingerprint"], own.fingerprint)

        # The invite link through stdin; each send is a new device, so a new key for "term".
        for text in ("From the terminal", "term again, with another key"):
            out = instantroom(
                "send",
                "--server",
                relay.url,
                "--key",
                "-",
                "--name",
                "term",
                text,
                stdin=room.invite + "\n",
            )
            assert out == ""
        first = phone.expect_message("From the terminal")
        second = phone.expect_message("term again, with another key")
        assert first.sender == second.sender == "term"
        assert not first.key_changed
        assert second.key_changed  # same name, new key: the warning shows
        assert first.fingerprint != second.fingerprint
        assert own.fingerprint not in (first.fingerprint, second.fingerprint)

        heard_after = [json.loads(lines.next_line()) for _ in range(2)]
        assert [(h["name"], h["text"], h["key_changed"]) for h in heard_after] == [
            ("term", "From the terminal", False),
            ("term", "term again, with another key", True),
        ]
        assert heard_after[0]["fingerprint"] in first.fingerprint
        assert heard_after[1]["fingerprint"] in second.fingerprint


# What a screen reader reads for the flag of "\u0430lice" (PROTOCOL.md 4.4).
MIXES_LATIN_AND_CYRILLIC = (
    "The name mixes Latin and Cyrillic letters: it may imitate another name. "
    "Check the fingerprint with them."
)


def test_a_name_that_mixes_scripts_is_flagged(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """With a Cyrillic \u0430, "\u0430lice" looks like "alice" but is another name, so no
    key-change warning catches it: a flag beside it does, seen and read out. "alice" has none."""
    alice, other = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Look-alikes", "alice")
    alice.open_room()
    other.open(relay.url)
    other.set_password("the other's long password")
    other.join(room.key, "\u0430lice")
    alice.expect_members(2)

    alice.send("the real one")
    other.send("it is me, on a new phone")
    for phone in (alice, other):
        real = phone.expect_message("the real one")
        look_alike = phone.expect_message("it is me, on a new phone")
        assert (real.sender, look_alike.sender) == ("alice", "\u0430lice")  # shown as sent
        # Two names, not one name with a new key: no key-change warning tells them apart.
        assert (real.key_changed, look_alike.key_changed) == (False, False)
        assert real.fingerprint != look_alike.fingerprint
        assert not real.mixed_scripts
        assert look_alike.mixed_scripts  # on every phone, the sender's own included

        # Beside the name, before the fingerprint: a ⚠ and the scripts, for the eye; the
        # whole warning, for a screen reader, which does not read the short form.
        found = phone.message_locator("it is me, on a new phone")
        flag = found.get_by_test_id("mixed-scripts-flag")
        expect(flag).to_be_visible()
        expect(flag.get_by_text("⚠ Latin + Cyrillic", exact=True)).to_be_visible()
        read = found.aria_snapshot()
        assert f"\u0430lice {MIXES_LATIN_AND_CYRILLIC} {look_alike.fingerprint}" in read, read
        assert "Latin + Cyrillic" not in read, read
        assert MIXES_LATIN_AND_CYRILLIC not in phone.message_locator("the real one").aria_snapshot()


def test_joining_by_a_typed_key_and_a_typo(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Typed", "Alice")
    alice.open_room()

    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.by("nav-join").click()
    bob.by("join-key").fill(typo_of(room.key))
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    expect(bob.page.get_by_role("alert").filter(has_text="typo").first).to_be_visible()
    expect(bob.by("room-title")).to_have_count(0)
    alice.expect_members(1)

    # The key as read aloud, in groups with spaces.
    bob.by("join-key").fill(room.grouped)
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)
    bob.send("typed it by hand")
    assert alice.expect_message("typed it by hand").sender == "Bob"
    assert re.search(r"\S", alice.expect_message("typed it by hand").fingerprint)


# Two Enter presses, or two taps on Send, in one go: the events come before the page has
# drawn the emptied box, so each handler still sees the draft.
PRESS_ENTER_TWICE = """(input) => {
  for (let i = 0; i < 2; i++) {
    const enter = {key: "Enter", bubbles: true, cancelable: true};
    input.dispatchEvent(new KeyboardEvent("keydown", enter));
  }
}"""
TAP_SEND_TWICE = "(button) => { button.click(); button.click(); }"


def test_a_double_enter_or_tap_sends_once(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Twice", "Alice")
    alice.open_room()
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.join(room.key, "Bob")
    alice.expect_members(2)

    alice.by("message-input").fill("pressed Enter twice")
    alice.by("message-input").evaluate(PRESS_ENTER_TWICE)
    expect(alice.by("message-input")).to_have_value("")
    alice.by("message-input").fill("tapped Send twice")
    alice.by("send").evaluate(TAP_SEND_TWICE)
    expect(alice.by("message-input")).to_have_value("")
    # One sender's messages arrive in order: once this one shows, any double came before it.
    alice.send("and then once")
    bob.expect_message("and then once")
    expected = ["pressed Enter twice", "tapped Send twice", "and then once"]
    assert texts_in_order(bob) == texts_in_order(alice) == expected


def test_messages_that_come_are_read_out_short_and_counted_while_unseen(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The conversation read each new message whole (fingerprint, the Delete button's name,
    then "sending…" and "sent"); a room's list showed nothing of messages not seen yet,
    and a tab in the background said nothing either."""
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Weekend trip", "Alice")
    alice.open_room()
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.join(room.key, "Bob")
    alice.expect_members(2)

    announcer = alice.by("message-announcer")
    expect(alice.by("messages")).to_have_attribute("aria-live", "off")
    bob.send("first from bob")
    alice.expect_message("first from bob")
    expect(announcer).to_have_text("Bob: first from bob")
    alice.send("mine is not read out to me")
    expect(announcer).to_have_text("Bob: first from bob")
    # Each Delete button says whose message it deletes, and of when.
    deletes = {
        text: alice.message_locator(text).get_by_test_id("delete-message")
        for text in ("first from bob", "mine is not read out to me")
    }
    when = r"\d\d:\d\d( [AP]M)?"
    expect(deletes["first from bob"]).to_have_accessible_name(
        re.compile(rf"^Delete Bob's message of {when}, “first from bob”, from this device$")
    )
    expect(deletes["mine is not read out to me"]).to_have_accessible_name(
        re.compile(
            rf"^Delete your message of {when}, “mine is not read out to me”, from this device$"
        )
    )
    # Two of one sender in one minute differ by their first words, cut at 40 characters.
    long = "a second one from bob, long enough to be cut short here"
    bob.send(long)
    alice.expect_message(long)
    expect(alice.message_locator(long).get_by_test_id("delete-message")).to_have_accessible_name(
        re.compile(
            rf"^Delete Bob's message of {when}, “a second one from bob, long enough to be…”, from"
        )
    )

    # On the rooms list: counted on the room and in the tab's title.
    alice.by("nav-rooms").click()
    expect(alice.by("room-list")).to_be_visible()
    expect(alice.by("room-unread")).to_have_count(0)
    bob.send("second")
    bob.send("third")
    bob.expect_message("third")
    expect(alice.by("room-unread")).to_have_text("2 new")
    expect(alice.page).to_have_title("(2) InstantRoom")
    expect(alice.by("room-item")).to_contain_text("2 new")  # in the button's name
    alice.by("room-item").click()
    alice.expect_message("third")
    expect(alice.page).to_have_title("InstantRoom")
    # What was there when the room opened is not read out again.
    expect(announcer).to_have_text("")
    bob.send("fourth")
    expect(announcer).to_have_text("Bob: fourth")
    alice.by("nav-rooms").click()
    expect(alice.by("room-list")).to_be_visible()
    expect(alice.by("room-unread")).to_have_count(0)

"""The outbox in the key store: a message written while the relay was away survives a
lock and a reload, and goes out once, byte for byte, when the page is unlocked with the
relay back."""

from __future__ import annotations

import json
from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.testing import assert_exited_cleanly, running_relay
from tests.web.conftest import Phone, wait_for_stored
from tests.web.test_reconnect import ONLINE, alice_and_bob

BOB = "bob's long password"  # as alice_and_bob chose it


def test_a_message_written_offline_survives_a_lock_and_a_reload_and_arrives_once(
    phones: Callable[..., Phone],
) -> None:
    with running_relay("--shutdown-grace", "0.2") as first:
        alice, bob = alice_and_bob(first.url, phones, "Outbox")
    assert_exited_cleanly(first)
    for phone in (alice, bob):
        expect(phone.by("connection-state")).not_to_have_text(ONLINE)

    bob.send("written while the relay was away")
    sending = bob.message_locator("written while the relay was away").locator(".status")
    expect(sending).to_have_text("sending…")
    # The sealed message is in the key store: ciphertext, and no plaintext in a room that
    # keeps no history.
    contents = wait_for_stored(bob.page, BOB, lambda c: len(c["rooms"][0]["outbox"]) == 1)
    assert "written while the relay was away" not in json.dumps(contents)
    assert contents["rooms"][0]["messages"] == []

    # Locked while offline: the connection, its session and their outbox are gone.
    bob.by("nav-settings").click()
    bob.by("lock-now").click()
    expect(bob.by("password")).to_be_visible()

    with running_relay("--shutdown-grace", "0.2", port=first.port) as second:
        alice.expect_online()  # by herself, at the end of her backoff
        alice.expect_members(1)

        bob.page.reload()  # and the page's memory with them: only the key store is left
        bob.unlock(BOB)
        bob.by("room-item").first.click()  # his only room
        bob.expect_online()
        alice.expect_members(2)
        assert alice.expect_message("written while the relay was away").sender == "Bob"
        expect(
            bob.message_locator("written while the relay was away").locator(".status")
        ).to_have_text("sent")

        # Exactly once: a later message arrives after it, and it is still shown once.
        wait_for_stored(bob.page, BOB, lambda c: c["rooms"][0]["outbox"] == [])
        bob.send("and this one after")
        alice.expect_message("and this one after")
        expect(alice.message_locator("written while the relay was away")).to_have_count(1)
        expect(alice.by("message")).to_have_count(2)

        # Taken by the relay: after another reload nothing is sent again.
        bob.page.reload()
        bob.unlock(BOB)
        bob.by("room-item").first.click()
        bob.expect_online()
        bob.send("a third")
        alice.expect_message("a third")
        expect(alice.by("message")).to_have_count(3)
    assert_exited_cleanly(second)


def test_a_full_room_waits_with_what_was_written_and_lets_it_out_once_there_is_a_place(
    phones: Callable[..., Phone],
) -> None:
    """ROOM_FULL is for now: a newcomer's room and what they write wait, the room screen
    says so in the app's words (not the bare refusal), and once a member leaves the page
    gets in by itself (its JOIN goes again), sends what waited and drops the notice."""
    with running_relay("--members-per-room", "2") as relay:
        alice, carol, bob = phones(), phones(), phones()
        alice.open(relay.url)
        alice.set_password("alice's long password")
        room = alice.create_room("Full", "Alice")
        alice.open_room()
        for phone, name in ((carol, "Carol"), (bob, "Bob")):
            phone.open(room.invite)
            phone.set_password(f"{name}'s long password", then="join-key")
            phone.by("nickname").fill(name)
            phone.by("join").click()
        carol.expect_online()
        alice.expect_members(2)
        refused = bob.page.get_by_role("alert")
        expect(refused).to_have_text(
            "The relay has no place for you now. It says: “This room is full.” "
            "Trying again every 15 seconds."
        )
        bob.send("written while the room was full")
        status = bob.message_locator("written while the room was full").locator(".status")
        expect(status).to_have_text("sending…")

        carol.page.get_by_role("button", name="Room options").click()
        carol.by("leave-room").click()
        carol.answer(yes=True)  # "Leave … ?"
        # In at its next JOIN: the 15-second retry, on the same connection (the relay keeps
        # a connection waiting for a place open past its handshake timeout).
        message = alice.message_locator("written while the room was full")
        expect(message).to_have_count(1, timeout=30_000)
        assert alice.expect_message("written while the room was full").sender == "Bob"
        expect(status).to_have_text("sent")
        expect(refused).to_have_count(0)
        bob.expect_members(2)
    assert_exited_cleanly(relay)

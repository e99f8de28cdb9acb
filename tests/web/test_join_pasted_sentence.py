"""Joining with what a friend sent, pasted whole: an invite link among other words is
joined on the link's own relay (web/src/app/invite.js, findInvite)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from playwright.sync_api import expect

from instantroom.testing import RelayProcess
from tests.client.test_cli import typo_of
from tests.web.conftest import Phone


def test_a_link_pasted_in_its_sentence_joins_on_the_links_relay(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Pasted", "Alice")
    alice.open_room()

    # Bob's relay for bare keys is another one, with nothing there: only the link's counts.
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.by("nav-settings").click()
    bob.by("server-url").fill("http://127.0.0.1:9")
    bob.by("save-settings").click()
    expect(bob.page.get_by_role("status")).to_contain_text("Settings saved")
    bob.by("nav-rooms").click()
    bob.by("nav-join").click()

    # Mistyped inside the sentence: said to be a typo, not a length or an address.
    link, key = room.invite.split("#")
    bob.by("join-key").fill(f"Join me: {link}#{typo_of(key)} see you")
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    said = bob.page.get_by_role("alert").filter(has_text="most likely a typo")
    expect(said.first).to_be_visible()
    expect(bob.by("room-title")).to_have_count(0)

    bob.by("join-key").fill(f"Join me: {room.invite} see you")
    expect(bob.by("join-relay")).to_contain_text(f"relay at {urlsplit(relay.url).netloc}.")
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)
    bob.send("pasted the whole message")
    assert alice.expect_message("pasted the whole message").sender == "Bob"

"""Settings: the relay for new rooms (the page's own by default) can be another one."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from playwright.sync_api import expect

from instantroom.protocol.minikey import format_minikey, make_minikey
from instantroom.testing import RelayProcess, assert_exited_cleanly, running_relay
from tests.web.conftest import Phone, listening


def exactly(url: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(url)}/?$")


def test_new_rooms_use_the_relay_saved_in_settings(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    # Another relay, which lets pages from the first one in.
    with running_relay("--origins", relay.url) as other:
        phone = phones()
        phone.open(relay.url)
        phone.set_password("a long password")
        phone.by("nav-settings").click()
        expect(phone.by("server-url")).to_have_value(exactly(relay.url))
        phone.by("server-url").fill(other.url)
        phone.by("save-settings").click()
        phone.by("nav-rooms").click()

        room = phone.create_room("Elsewhere", "Eli")
        assert room.invite == f"{other.url}/#{room.key}"
        phone.open_room()
        with listening(other.url, room.key) as lines:
            phone.expect_members(2)  # the listener, on the other relay, is in
            phone.send("through the other relay")
            heard = json.loads(lines.next_line())
            assert (heard["name"], heard["text"]) == ("Eli", "through the other relay")

        # Saved: still there after a reload.
        phone.page.reload()
        phone.unlock("a long password")
        phone.by("nav-settings").click()
        expect(phone.by("server-url")).to_have_value(exactly(other.url))
    assert_exited_cleanly(other)


def test_an_invite_link_joins_on_its_own_relay_whatever_settings_say(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Here", "Alice")
    alice.open_room()

    # Bob's relay for new rooms and bare keys is another one (there is none there).
    elsewhere = "http://127.0.0.1:9"
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.by("nav-settings").click()
    bob.by("server-url").fill(elsewhere)
    bob.by("save-settings").click()
    expect(bob.page.get_by_role("status")).to_contain_text("Settings saved")

    bob.open("about:blank")
    bob.open(room.invite)  # a page load, not a hash change in the open page
    bob.unlock("bob's long password", then="join-key")
    host = urlsplit(relay.url).netloc
    expect(bob.by("join-relay")).to_contain_text(f"relay at {host}.")
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)

    # Another key typed in the Join screen names the relay it would use: the one in Settings.
    bob.by("nav-rooms").click()
    bob.by("nav-join").click()
    bob.by("join-key").fill(format_minikey(make_minikey(secrets.randbelow)))
    expect(bob.by("join-relay")).to_contain_text("relay at 127.0.0.1:9.")


def test_a_second_invite_link_opened_on_the_join_screen_fills_it_anew(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    bob = phones()
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.by("nav-settings").click()
    bob.by("server-url").fill("http://127.0.0.1:9")
    bob.by("save-settings").click()
    expect(bob.page.get_by_role("status")).to_contain_text("Settings saved")
    first, second = make_minikey(secrets.randbelow), make_minikey(secrets.randbelow)
    page = relay.url.rstrip("/") + "/"
    bob.open("about:blank")
    bob.open(f"{page}#{first}")
    bob.unlock("bob's long password", then="join-key")
    host = urlsplit(relay.url).netloc
    # The second link, opened in the same page while its Join screen shows.
    bob.page.evaluate(f"location.hash = {'#' + second!r}")
    expect(bob.by("join-key")).to_have_value(second)
    expect(bob.by("join-relay")).to_contain_text(f"relay at {host}.")


def test_an_invite_link_to_index_html_joins_on_the_relay_itself(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The relay serves the app at /index.html too: a link there joins on the relay (not on
    ".../index.html", which has no WebSocket), and its own invite link opens the app."""
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Room", "Alice")
    alice.open_room()
    bob.open(f"{relay.url}/index.html#{room.key}")
    bob.set_password("bob's long password", then="join-key")
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)
    bob.by("share-room").click()
    assert bob.shared_room().invite == f"{relay.url}/#{room.key}"

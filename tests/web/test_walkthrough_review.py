"""The web client as a first-time user meets it on a small phone: the clock warning on
every screen and after the clock is set right, or only measurable once a relay answers;
unread messages of other rooms in sight from inside a room; a message dropped as dated
ahead read out to a screen reader."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from instantroom.protocol.kdf import RoomKeys
from instantroom.testing import RelayProcess, running_relay
from tests.web.conftest import Phone, offline
from tests.web.test_replay import raw_member
from tests.web.test_sw_review import CACHE, KEPT_WHEN, PAGE_FILES, evict_http_cache

PASSWORD = "a long unique password"
SMALL_PHONE = {"viewport": {"width": 320, "height": 568}}
TEN_MINUTES_FAST = 10 * 60


def test_the_clock_warning_shows_on_the_share_screen_too(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """users.md: "every screen says so". The Share screen, the first one a new room shows
    and the one whose key the others must be able to use, said nothing."""
    fast = phones(**SMALL_PHONE)
    fast.page.clock.install(time=time.time() + TEN_MINUTES_FAST)
    fast.open(relay.url)
    fast.set_password(PASSWORD)
    expect(fast.by("clock-warning")).to_contain_text("clock is 10 minutes fast")
    fast.create_room("Trip", "Alice")
    expect(fast.by("clock-warning")).to_contain_text("clock is 10 minutes fast")
    # Nothing wider than the small screen with it.
    widths = fast.page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert widths[0] <= widths[1]


def test_a_clock_set_right_while_the_page_shows_clears_the_warning(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The clocks were compared again only when the page came back from the background: a
    computer whose clock its time service set right (after a wake-up), or a person who
    set it in another window, kept being told the clock was wrong."""
    phone = phones()
    phone.page.clock.install(time=time.time() + TEN_MINUTES_FAST)
    phone.open(relay.url)
    phone.set_password(PASSWORD)
    expect(phone.by("clock-warning")).to_be_visible()
    phone.page.clock.set_system_time(time.time())  # set right; the page stays in sight
    phone.page.clock.fast_forward(6_000)  # the watch's next look
    expect(phone.by("clock-warning")).to_have_count(0)


def test_an_app_started_offline_compares_the_clocks_once_a_relay_answers(
    phones: Callable[..., Phone],
) -> None:
    """An installed app started offline could not ask the relay for its time, and never
    asked again while it stayed open: a fast phone went unheard without a word."""
    with running_relay() as relay:
        phone = phones()
        phone.page.clock.install(time=time.time() + TEN_MINUTES_FAST)
        phone.open(relay.url)
        phone.set_password(PASSWORD)
        expect(phone.by("clock-warning")).to_be_visible()
        phone.create_room("Trip", "Alice")
        phone.open_room()
        phone.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        files = phone.page.evaluate(PAGE_FILES)
        assert set(files) <= set(phone.page.evaluate(KEPT_WHEN, [CACHE, files]))
        evict_http_cache(phone)
        with offline(phone):
            phone.page.reload()
            phone.unlock(PASSWORD)
            phone.by("room-item").click()
            expect(phone.by("reconnect-now")).to_be_visible()
            expect(phone.by("clock-warning")).to_have_count(0)  # nothing known yet
        # Back online, the page may reconnect by itself before the button is clicked (the
        # browser's "online" event): the button then goes, which is as good.
        with contextlib.suppress(PlaywrightTimeoutError):
            phone.by("reconnect-now").click(timeout=3_000)
        phone.expect_online()
        expect(phone.by("clock-warning")).to_contain_text("clock is 10 minutes fast")


def test_messages_of_another_room_are_counted_in_sight_of_the_room_on_screen(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """Only the tab's title counted them, and a phone's browser or an installed app shows
    no title: someone in one room never knew another had messages."""
    alice, bob = phones(**SMALL_PHONE), phones()
    alice.open(relay.url)
    alice.set_password(PASSWORD)
    one = alice.create_room("One", "Alice")
    alice.by("nav-rooms").click()
    two = alice.create_room("Two", "Alice")
    bob.open(relay.url)
    bob.set_password(PASSWORD)
    bob.join(one.key, "Bob")
    bob.by("nav-rooms").click()
    bob.join(two.key, "Bob")
    alice.by("nav-rooms").click()
    alice.by("room-item").filter(has_text="One").click()
    alice.expect_online()
    expect(alice.by("nav-unread")).to_have_count(0)

    bob.send("in two")
    expect(alice.by("nav-unread")).to_have_text(re.compile(r"^\W*1 new$"))
    expect(alice.by("nav-rooms")).to_have_accessible_name(re.compile(r"^Rooms\W+1 new$"))
    expect(alice.page).to_have_title("(1) InstantRoom")
    assert alice.page.evaluate("() => document.documentElement.scrollWidth") <= 320
    alice.by("nav-rooms").click()
    alice.by("room-item").filter(has_text="Two").click()
    alice.expect_message("in two")
    expect(alice.by("nav-unread")).to_have_count(0)
    expect(alice.page).to_have_title("InstantRoom")


def test_a_message_dropped_as_dated_ahead_is_read_out(
    phones: Callable[..., Phone], relay: RelayProcess
) -> None:
    """The room said it on screen only: a screen reader, which the conversation's arrivals
    reach through their own live region, heard nothing of it."""
    bob = phones()
    bob.open(relay.url)
    bob.set_password(PASSWORD)
    room = bob.create_room("Clocks", "Bob")
    bob.open_room()
    # There before its text, as a live region must be to be read.
    regions = bob.page.locator(".room-head [role=status]").count()
    with raw_member(relay, RoomKeys.from_minikey(room.key)) as alice:
        bob.expect_members(2)
        alice.publish(alice.sealed(1, "from a fast clock", ahead_ms=12 * 60_000))
        expect(bob.by("dropped-ahead")).to_be_visible()
        assert bob.page.locator(".room-head [role=status]").count() == regions
        live = bob.page.locator("[role=status]").filter(has=bob.by("dropped-ahead"))
        expect(live).to_have_count(1)
        expect(live).to_contain_text("A message dated 12 minutes ahead")


def test_a_tap_on_send_leaves_the_keyboard_up(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The Send button took the focus from the message box as it was tapped: on a phone
    the keyboard closed after every message, to be opened again for the next."""
    alice = phones(**SMALL_PHONE)
    alice.open(relay.url)
    alice.set_password(PASSWORD)
    alice.create_room("Trip", "Alice")
    alice.open_room()
    box = alice.by("message-input")
    box.tap()
    box.fill("one")
    alice.by("send").tap()
    alice.expect_message("one")
    expect(box).to_be_focused()
    box.fill("two")
    alice.by("send").tap()
    alice.expect_message("two")
    expect(box).to_be_focused()
    expect(box).to_have_value("")

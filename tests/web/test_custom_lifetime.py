"""A room made with a custom lifetime (New room, "Custom…"), as the terminal's ``new
--expires 3h`` makes one (PROTOCOL.md 9): its maker, the relay and those who join by the
key alone all hold the lifetime chosen; one out of bounds is said and makes no room."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.testing import RelayProcess
from tests.web.conftest import Phone, open_vault

PASSWORD = "a long enough password"
HOUR_MS = 3_600_000


def test_a_custom_lifetime_of_3_hours_makes_a_room_that_expires_in_3_hours(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice = phones()
    alice.open(relay.url)
    alice.set_password(PASSWORD)
    alice.by("nav-new").click()
    alice.by("room-label").fill("Short")
    alice.by("nickname").fill("Alice")
    # The custom fields show only once Custom… is chosen, each named by its label.
    expect(alice.by("expiry-amount")).to_have_count(0)
    alice.by("expiry").select_option("custom")
    expect(alice.page.get_by_label("Custom lifetime")).to_have_accessible_description(
        "From 5 minutes to 30 days."
    )
    expect(alice.page.get_by_label("Unit")).to_have_value("hours")

    # Out of bounds: said, and no room made.
    for amount, unit, error in [
        ("0", "hours", "A room's lifetime is a whole number greater than zero, like 3 or 90."),
        (
            "40",
            "days",
            "A room lives for 30 days at most: a relay keeps a room 31 days at most by default.",
        ),
    ]:
        alice.page.get_by_label("Custom lifetime").fill(amount)
        alice.page.get_by_label("Unit").select_option(unit)
        alice.by("create-room").click()
        expect(alice.page.get_by_role("alert")).to_have_text(error)
        expect(alice.by("room-key")).to_have_count(0)
        expect(alice.by("expiry")).to_have_value("custom")
        # The field is marked, and tied to what is wrong with it as well as to its range.
        field = alice.page.get_by_label("Custom lifetime")
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_have_accessible_description(f"{error} From 5 minutes to 30 days.")

    # Another choice: what was wrong with the custom one goes.
    alice.by("expiry").select_option("day")
    expect(alice.page.get_by_role("alert")).to_have_count(0)
    alice.by("expiry").select_option("custom")

    alice.page.get_by_label("Custom lifetime").fill("3")
    alice.page.get_by_label("Unit").select_option("hours")
    made = time.time() * 1000
    alice.by("create-room").click()
    shared = alice.shared_room()

    stored = open_vault(alice.page, PASSWORD)
    assert [room["label"] for room in stored["rooms"]] == ["Short"]
    expires = stored["rooms"][0]["expiresAtMs"]
    assert made + 3 * HOUR_MS - 60_000 <= expires <= time.time() * 1000 + 3 * HOUR_MS

    alice.open_room()
    expect(alice.page.get_by_text("expires in 3 h")).to_be_visible()
    alice.by("nav-rooms").click()
    expect(alice.by("room-item")).to_have_count(1)
    expect(alice.by("room-item")).to_contain_text("expires in 3 h")

    # The relay recorded it: one who joins by the key alone knows no lifetime and takes the
    # relay's (PROTOCOL.md 9).
    bob = phones()
    bob.open(relay.url)
    bob.set_password(PASSWORD)
    bob.join(shared.key, "Bob")
    expect(bob.page.get_by_text("expires in 3 h")).to_be_visible()

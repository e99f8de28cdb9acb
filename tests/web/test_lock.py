"""The password lock: a wrong password unlocks nothing and changes nothing stored, a
reload keeps the rooms behind the lock, settings lock at once."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.testing import RelayProcess
from tests.web.conftest import Phone, read_vault


def expect_locked(phone: Phone) -> None:
    expect(phone.by("password")).to_be_visible()
    expect(phone.by("unlock")).to_be_visible()
    expect(phone.by("room-list")).to_have_count(0)
    expect(phone.by("nav-new")).to_have_count(0)


def test_a_wrong_password_unlocks_nothing_and_changes_nothing(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    phone.set_password("the right password, long")
    room = phone.create_room("Kept behind the lock", "Kim")
    phone.open_room()

    phone.page.reload()
    expect_locked(phone)
    expect(phone.by("password-confirm")).to_have_count(0)
    stored = read_vault(phone.page)
    assert json.loads(stored) not in (None, {}, [], {"undefined": True}), stored
    # Encrypted at rest: the key is nowhere in the record, as text or as bytes.
    assert room.key not in stored
    assert room.key.encode().hex() not in stored

    phone.by("password").fill("the wrong password, long")
    phone.by("unlock").click()
    expect(phone.page.get_by_role("alert").filter(has_text="Wrong password").first).to_be_visible()
    expect_locked(phone)
    assert read_vault(phone.page) == stored

    phone.by("password").fill("the right password, long")
    phone.by("unlock").click()
    expect(phone.by("room-list")).to_be_visible()
    expect(phone.by("room-item").filter(has_text="Kept behind the lock")).to_have_count(1)
    expect(phone.page.get_by_role("alert").filter(has_text="Wrong password")).to_have_count(0)


def test_a_reload_keeps_the_rooms_after_unlocking(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    made = alice.create_room("Made here", "Alice")
    alice.open_room()

    bob.open(relay.url)
    bob.set_password("bob's long password")
    other = bob.create_room("Made by Bob", "Bob")
    alice.by("nav-rooms").click()
    alice.join(other.key, "Alice")

    alice.page.reload()
    expect_locked(alice)
    expect(alice.by("password-confirm")).to_have_count(0)
    alice.unlock("alice's long password")
    items = alice.by("room-list").get_by_test_id("room-item")
    expect(items).to_have_count(2)
    expect(items.filter(has_text="Made here")).to_have_count(1)

    # Back in the room made here, under its key: the relay counts it online again.
    items.filter(has_text="Made here").click()
    alice.expect_online()
    expect(alice.by("room-title")).to_contain_text("Made here")
    alice.by("share-room").click()
    assert alice.shared_room() == made


def test_settings_show_the_relay_and_lock_at_once(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    phone.set_password("a long password")
    phone.create_room("Settled", "Sam")
    phone.by("nav-settings").click()
    expect(phone.by("server-url")).to_have_value(re.compile(rf"^{re.escape(relay.url)}/?$"))
    phone.by("lock-now").click()
    expect_locked(phone)
    expect(phone.by("password-confirm")).to_have_count(0)
    phone.unlock("a long password")
    expect(phone.by("room-item").filter(has_text="Settled")).to_have_count(1)


def test_a_browser_without_indexeddb_says_so_instead_of_loading_for_ever(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    # Some private windows give a page no IndexedDB, or one whose open() fails.
    phone = phones()
    phone.context.add_init_script(
        "Object.defineProperty(window, 'indexedDB', {value: undefined, configurable: true});"
    )
    phone.open(relay.url)
    alert = phone.page.get_by_role("alert")
    expect(alert).to_contain_text("cannot keep its key store")
    expect(alert).to_contain_text("IndexedDB is not available here.")
    expect(phone.page.get_by_text("Loading…")).to_have_count(0)
    expect(phone.by("password")).to_have_count(0)

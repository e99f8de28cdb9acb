"""What the web client keeps on the device, and for how long: history kept or not and
deleted one message or all at once, the idle lock, expired rooms deleted, one unlocked tab,
a warning when a name changes device, the installable app shell, and a clear refusal
where the page is not a secure context."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Playwright, expect

from instantroom.protocol.kdf import RoomKeys
from instantroom.testing import RelayProcess
from tests.web.conftest import (
    Phone,
    close_phones,
    launch,
    new_phone,
    offline,
    read_vault,
    wait_for_stored,
)
from tests.web.test_replay import raw_member

PASSWORD = "a long enough password"


def start(phone: Phone, relay: RelayProcess, label: str = "Room", nickname: str = "Ann") -> str:
    """A first visit that makes a room and opens it; the room's key."""
    phone.open(relay.url)
    phone.set_password(PASSWORD)
    room = phone.create_room(label, nickname)
    phone.open_room()
    return room.key


def test_kept_history_survives_a_reload_and_deletes_one_message_or_all(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    start(phone, relay)
    phone.send("said before history was on")
    # Taken by the relay, and out of the stored outbox, before the reload: one it had not
    # taken would be sent, and shown, again after it (test_outbox.py).
    expect(phone.message_locator("said before history was on").locator(".status")).to_have_text(
        "sent"
    )
    wait_for_stored(phone.page, PASSWORD, lambda c: c["rooms"][0]["outbox"] == [])
    # History is off by default: a reload forgets what was said.
    phone.page.reload()
    phone.unlock(PASSWORD)
    phone.by("room-item").click()
    phone.expect_online()
    expect(phone.by("message")).to_have_count(0)

    phone.page.get_by_role("button", name="Room options").click()
    phone.by("keep-history").check()
    for text in ("first", "second", "third"):
        phone.send(text)
        phone.expect_message(text)
    phone.message_locator("second").get_by_test_id("delete-message").click()
    expect(phone.message_locator("second")).to_have_count(0)

    phone.page.reload()
    phone.unlock(PASSWORD)
    phone.by("room-item").click()
    phone.expect_message("first")
    phone.expect_message("third")
    expect(phone.message_locator("second")).to_have_count(0)
    expect(phone.by("message")).to_have_count(2)

    phone.page.get_by_role("button", name="Room options").click()
    phone.by("clear-history").click()
    assert phone.answer(yes=True).startswith("Delete every message")
    expect(phone.by("message")).to_have_count(0)
    phone.page.reload()
    phone.unlock(PASSWORD)
    phone.by("room-item").click()
    phone.expect_online()
    expect(phone.by("message")).to_have_count(0)


def test_the_store_locks_itself_after_idle_time(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.page.clock.install()
    start(phone, relay)
    phone.page.clock.fast_forward("04:00")
    expect(phone.by("room-title")).to_be_visible()  # 4 minutes: the default 5 are not up
    phone.page.clock.fast_forward("02:00")
    expect(phone.by("password")).to_be_visible()
    expect(phone.by("room-title")).to_have_count(0)
    expect(phone.page.get_by_role("status")).to_contain_text("Locked after a while")


def test_the_store_locks_itself_while_a_question_waits_for_its_answer(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The browser's own confirm() stopped the page's scripts, the idle lock's with them:
    the room stayed on screen behind the question for as long as nobody answered it."""
    phone = phones()
    phone.page.clock.install()
    start(phone, relay)
    phone.page.get_by_role("button", name="Room options").click()
    phone.by("leave-room").click()
    expect(phone.by("ask")).to_be_visible()
    phone.page.clock.fast_forward("06:00")
    expect(phone.by("password")).to_be_visible()
    expect(phone.by("ask")).to_have_count(0)
    expect(phone.by("room-title")).to_have_count(0)
    expect(phone.page.get_by_role("status")).to_contain_text("Locked after a while")
    # The room was not left: the question went unanswered.
    phone.unlock(PASSWORD)
    expect(phone.by("room-item")).to_have_count(1)


def test_an_expired_room_is_deleted_from_the_device(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.page.clock.install()
    phone.open(relay.url)
    phone.set_password(PASSWORD)
    phone.create_room("Short-lived", "Ann", expiry="hour")
    phone.open_room()
    phone.by("nav-rooms").click()
    phone.create_room("Long-lived", "Ann", expiry="week")
    phone.by("nav-rooms").click()
    expect(phone.by("room-item")).to_have_count(2)
    # Keep the idle lock away while the hour passes.
    phone.by("nav-settings").click()
    phone.by("idle-lock").select_option("60")
    phone.by("save-settings").click()
    phone.by("nav-rooms").click()
    for _ in range(4):
        phone.page.clock.fast_forward("15:30")
        phone.page.mouse.move(10, 10)
        phone.page.mouse.down()
        phone.page.mouse.up()
    expect(phone.by("room-item")).to_have_count(1)
    expect(phone.by("room-item")).to_contain_text("Long-lived")
    expect(phone.page.get_by_role("status")).to_contain_text("expired")
    phone.page.reload()
    phone.unlock(PASSWORD)
    expect(phone.by("room-item")).to_have_count(1)


def test_unlocking_in_a_second_tab_locks_the_first(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    first = phones()
    start(first, relay)
    second_page = first.context.new_page()
    second = Phone(first.context, second_page, first.watch)
    second.open(relay.url)
    second.unlock(PASSWORD)
    expect(first.by("password")).to_be_visible()
    expect(first.page.get_by_role("status")).to_contain_text("another tab")
    expect(second.by("room-item")).to_have_count(1)


def test_the_tab_unlocked_last_keeps_what_the_first_saved_as_it_locked(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    first = phones()
    key = start(first, relay)
    first.page.get_by_role("button", name="Room options").click()
    first.by("keep-history").check()
    second = Phone(first.context, first.context.new_page(), first.watch)
    second.open(relay.url)
    second.by("password").fill(PASSWORD)

    with raw_member(relay, RoomKeys.from_minikey(key)) as alice:
        first.expect_members(2)
        alice.publish(alice.sealed(1, "one"))
        alice.publish(alice.sealed(2, "two"))  # the first tab's save of it waits (throttled)
        first.expect_message("two")
        # The second tab reads the store now, before that save lands (as the first locks).
        second.by("unlock").click()
        expect(second.by("nav-new")).to_be_visible()
        expect(first.by("password")).to_be_visible()
        expect(first.page.get_by_role("status")).to_contain_text("another tab")

        second.by("room-item").click()
        second.expect_online()
        second.expect_message("one")
        second.expect_message("two")
        # Its own saves land: it does not lock as if another tab had written after it.
        second.send("three")
        wait_for_stored(
            second.page,
            PASSWORD,
            lambda c: [m["text"] for m in c["rooms"][0]["messages"]] == ["one", "two", "three"],
        )
        second.by("nav-rooms").click()
        expect(second.by("room-item")).to_have_count(1)
        expect(second.by("password")).to_have_count(0)


def test_forgetting_the_password_in_one_tab_wipes_the_store_for_every_tab(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    first = phones()
    start(first, relay)
    second = Phone(first.context, first.context.new_page(), first.watch)
    second.open(relay.url)
    expect(second.by("password")).to_be_visible()
    second.page.get_by_text("Forgot the password?").click()
    second.by("wipe-locked").click()
    second.answer(yes=True)
    expect(second.by("password-confirm")).to_be_visible()
    # The tab that was unlocked locks, and nothing it does brings the store back.
    expect(first.by("password-confirm")).to_be_visible()
    expect(first.page.get_by_role("status")).to_contain_text("deleted")
    assert read_vault(first.page) == json.dumps(
        {"undefined": True}, separators=(",", ":")
    )  # no record


def test_a_malformed_invite_link_leaves_a_working_page(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url + "#%E0%A4%A")
    assert phone.page.evaluate("location.hash") == ""
    phone.set_password(PASSWORD, then="join")
    expect(phone.by("join-key")).to_have_value("%E0%A4%A")
    phone.by("nickname").fill("Ann")
    phone.by("join").click()
    expect(phone.page.get_by_role("alert")).to_be_visible()


def test_a_name_from_another_device_is_flagged(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    ann, bob, impostor = phones(), phones(), phones()
    key = start(ann, relay, nickname="Ann")
    for phone in (bob, impostor):
        phone.open(relay.url)
        phone.set_password(PASSWORD)
        phone.join(key, "Bob")
    bob.send("it is me")
    assert ann.expect_message("it is me").key_changed is False
    impostor.send("it is me too")
    flagged = ann.expect_message("it is me too")
    assert flagged.key_changed is True
    assert flagged.sender == "Bob"
    assert flagged.fingerprint != ann.expect_message("it is me").fingerprint


def test_a_name_that_differs_only_by_a_blank_braille_pattern_shows_it(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """U+2800 draws nothing, and is no space, so "Bob" + U+2800 is another name than "Bob"
    (no key-change warning): it must not look like "Bob"."""
    ann, bob, impostor = phones(), phones(), phones()
    key = start(ann, relay, nickname="Ann")
    for phone, name in ((bob, "Bob"), (impostor, "Bob\u2800")):
        phone.open(relay.url)
        phone.set_password(PASSWORD)
        phone.join(key, name)
    bob.send("it is me")
    impostor.send("it is me too")
    assert ann.expect_message("it is me").sender == "Bob"
    flagged = ann.expect_message("it is me too")
    assert flagged.key_changed is False  # another name, as PROTOCOL.md 4.4 compares them
    assert flagged.sender == "Bob<U+2800>"


def test_the_app_is_installable_and_its_shell_starts_offline(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    expect(phone.by("password-confirm")).to_be_visible()
    manifest = phone.page.evaluate(
        """async () => {
            const link = document.querySelector('link[rel="manifest"]');
            const manifest = await (await fetch(link.href)).json();
            const icons = [];
            for (const icon of manifest.icons) {
                const response = await fetch(icon.src);
                let size = null;
                if (icon.type === "image/png") {
                    const bitmap = await createImageBitmap(await response.blob());
                    size = `${bitmap.width}x${bitmap.height}`;
                }
                icons.push({ ...icon, status: response.status, size });
            }
            return { ...manifest, icons };
        }"""
    )
    assert manifest["name"] == "InstantRoom"
    assert manifest["start_url"] == "/"
    assert manifest["display"] == "standalone"
    pngs = [i for i in manifest["icons"] if i["type"] == "image/png"]
    assert {i["sizes"] for i in pngs} >= {"192x192", "512x512"}
    for icon in manifest["icons"]:
        assert icon["status"] == 200, icon
        if icon["type"] == "image/png":
            assert icon["size"] == icon["sizes"], icon
    assert any(i["purpose"] == "maskable" for i in manifest["icons"])

    scope = phone.page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == relay.url.rstrip("/") + "/"
    # Once the service worker controls the page, the app shell starts with no network.
    phone.page.reload()
    expect(phone.by("password-confirm")).to_be_visible()
    assert phone.page.evaluate("navigator.serviceWorker.controller !== null")
    with offline(phone):
        phone.page.reload()
        expect(phone.by("password-confirm")).to_be_visible()


def test_a_new_build_of_the_app_takes_the_old_builds_files_out_of_the_cache(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The shell cache kept every build's hashed files for good, a megabyte and more each:
    a page unlike the one kept (a new build) takes out the assets it does not name."""
    phone = phones()
    phone.open(relay.url)
    expect(phone.by("password-confirm")).to_be_visible()
    phone.page.evaluate("navigator.serviceWorker.ready")
    phone.page.reload()  # now under the worker: the page and its files are kept
    expect(phone.by("password-confirm")).to_be_visible()
    # The worker keeps what it fetched when it gets to it: wait (at most 5 s) for it.
    kept_when = """async (wanted) => {
        const done = {
            "some assets": (paths) => paths.some((p) => p.startsWith("/assets/")),
            "old build gone": (paths) => !paths.includes("/assets/index-oldbuild.js"),
        }[wanted];
        const deadline = Date.now() + 5000;
        for (;;) {
            const cache = await caches.open("instantroom-shell-v1");
            const paths = (await cache.keys()).map((request) => new URL(request.url).pathname);
            if (done(paths) || Date.now() > deadline) return paths;
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
    }"""
    paths = phone.page.evaluate(kept_when, "some assets")
    assert any(p.startswith("/assets/") for p in paths)
    # What an earlier build left: its page and one of its files.
    phone.page.evaluate(
        """async () => {
            const cache = await caches.open("instantroom-shell-v1");
            await cache.put("/assets/index-oldbuild.js", new Response("old"));
            await cache.put("/", new Response("<html>an older build</html>",
                                              { headers: { "Content-Type": "text/html" } }));
        }"""
    )
    phone.page.reload()
    expect(phone.by("password-confirm")).to_be_visible()
    paths = phone.page.evaluate(kept_when, "old build gone")
    assert "/assets/index-oldbuild.js" not in paths
    script = phone.page.evaluate(
        "new URL(document.querySelector('script[type=module]').src).pathname"
    )
    assert script in paths  # this build's own files stay
    # It keeps the app shell only: never the relay's WebSocket, health or metrics.
    cached = phone.page.evaluate(
        """async () => {
            const out = [];
            for (const name of await caches.keys()) {
                const cache = await caches.open(name);
                for (const request of await cache.keys()) out.push(new URL(request.url).pathname);
            }
            return out;
        }"""
    )
    assert "/" in cached
    # Opening another file of the relay's does not take the app's place offline.
    phone.page.goto(relay.url.rstrip("/") + "/icon.svg")
    with offline(phone):
        phone.page.goto(relay.url)
        expect(phone.by("password-confirm")).to_be_visible()
    assert not [path for path in cached if path.startswith(("/ws", "/healthz", "/metrics"))]
    assert json.dumps(cached).count("/assets/") >= 2  # the script and the stylesheet


@pytest.fixture
def named_host_browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """A browser that reaches the loopback relay under a name: a page that is not a secure
    context, as a relay on a LAN address over plain HTTP would be."""
    browser = launch(playwright_driver, "--host-resolver-rules=MAP relay.test 127.0.0.1")
    yield browser
    browser.close()


def test_plain_http_off_loopback_says_https_is_needed(
    relay: RelayProcess, named_host_browser: Browser, web_client: None
) -> None:
    phone = new_phone(named_host_browser)
    try:
        phone.open(f"http://relay.test:{relay.port}/")
        expect(phone.page.get_by_role("heading")).to_have_text("This page needs HTTPS")
        expect(phone.page.get_by_role("alert")).to_contain_text("HTTPS")
        expect(phone.by("password")).to_have_count(0)
    finally:
        phone.watch.errors.clear()  # the test's own non-loopback name is expected here
        close_phones([phone])


def test_a_nickname_too_long_for_the_protocol_is_refused_before_any_room_is_made(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    phone.set_password(PASSWORD)
    phone.by("nav-new").click()
    phone.by("nickname").fill("🦊" * 20)  # 20 characters, 80 bytes of UTF-8: over 64
    phone.by("create-room").click()
    expect(phone.page.get_by_role("alert")).to_contain_text("too long")
    phone.by("nickname").fill("🦊" * 16)  # 64 bytes: fits
    phone.by("create-room").click()
    phone.shared_room()
    phone.by("nav-rooms").click()
    expect(phone.by("room-item")).to_have_count(1)


def test_a_device_clock_far_from_the_relays_is_said(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """A phone 10 minutes fast sent messages every other member dropped as dated in the
    future (PROTOCOL.md 7), and was told nothing: the relay took them. Its clock is now
    compared with the relay's, and said to be off; a phone on time is told nothing."""
    fast, on_time = phones(), phones()
    fast.page.clock.install(time=time.time() + 10 * 60)
    for phone in (fast, on_time):
        phone.open(relay.url)
        phone.set_password("a long unique password")
    expect(fast.by("clock-warning")).to_contain_text("clock is 10 minutes fast")
    fast.by("nav-new").click()  # on every screen while it holds
    expect(fast.by("clock-warning")).to_be_visible()
    expect(on_time.by("nav-new")).to_be_visible()
    expect(on_time.by("clock-warning")).to_have_count(0)

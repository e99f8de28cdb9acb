"""Moving about the web client as people do: the browser's Back (Android's back gesture)
goes to the previous screen and leaves only from the rooms list, a lock leaves no entry
that opens a room, no entry keeps an invite key; leaving a room asks first; the Join
screen says why a scanned QR code is refused, and drops an old error as the key changes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from instantroom.protocol.errors import ChecksumMismatch
from instantroom.protocol.minikey import BASE58_ALPHABET, MINIKEY_LENGTH, parse_minikey
from instantroom.testing import RelayProcess
from tests.web.conftest import Phone, close_phones, launch, new_phone
from tests.web.test_lock import expect_locked
from tests.web.test_privacy import navigation_history

# The page the person was on before opening the app: Back from the app's first screen
# goes there.
BEFORE = "data:text/html,<title>before</title>"
PASSWORD = "a long password"


def opened_after_another_page(phone: Phone, url: str) -> None:
    phone.page.goto(BEFORE)
    phone.open(url)


def back(page: Page) -> None:
    page.go_back()


def expect_left(page: Page) -> None:
    expect(page).to_have_url(re.compile(r"^data:"))


def expect_share(phone: Phone) -> None:
    expect(phone.by("room-key")).to_be_visible()


def expect_room(phone: Phone) -> None:
    expect(phone.by("room-title")).to_be_visible()
    expect(phone.by("room-key")).to_have_count(0)


def expect_rooms(phone: Phone) -> None:
    expect(phone.by("room-list")).to_be_visible()


def history_is_clean(page: Page, key: str) -> None:
    """No entry's URL has the key or a fragment, and the entry's state is an opaque
    position only (no screen name, room id or key)."""
    assert page.evaluate("window.location.hash") == ""
    assert [url for url in navigation_history(page) if key in url or "#" in url] == []
    state = json.loads(page.evaluate("JSON.stringify(history.state)"))
    assert set(state) == {"instantroom", "at"}, state
    assert key not in json.dumps(state)


def test_back_goes_to_the_previous_screen_and_leaves_from_the_rooms_list(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    opened_after_another_page(phone, relay.url)
    phone.set_password(PASSWORD)
    room = phone.create_room("Walked", "Kim")  # New room gives its place to Share
    phone.open_room()
    phone.by("share-room").click()
    expect_share(phone)
    phone.by("nav-settings").click()
    expect(phone.by("lock-now")).to_be_visible()

    back(phone.page)
    expect_share(phone)
    back(phone.page)
    expect_room(phone)
    back(phone.page)
    expect_share(phone)
    back(phone.page)
    expect_rooms(phone)
    history_is_clean(phone.page, room.key)
    back(phone.page)
    expect_left(phone.page)


def test_the_apps_own_rooms_button_makes_the_list_the_first_screen_again(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    opened_after_another_page(phone, relay.url)
    phone.set_password(PASSWORD)
    phone.create_room("Up", "Kim")
    phone.open_room()
    phone.by("nav-settings").click()
    phone.by("nav-rooms").click()
    expect_rooms(phone)
    phone.by("nav-join").click()  # at once: it gets its entry once the browser is back
    expect(phone.by("join-key")).to_be_visible()
    back(phone.page)
    expect_rooms(phone)
    back(phone.page)
    expect_left(phone.page)


def test_a_lock_leaves_no_entry_that_opens_a_room_without_the_password(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    opened_after_another_page(phone, relay.url)
    phone.set_password(PASSWORD)
    phone.create_room("Behind the lock", "Kim")
    phone.open_room()
    phone.by("nav-settings").click()
    phone.by("lock-now").click()
    expect_locked(phone)
    expect(phone.by("room-title")).to_have_count(0)

    back(phone.page)  # the Unlock screen is the first screen: Back leaves
    expect_left(phone.page)
    for _ in range(3):  # forward through every entry the app made: locked each time
        phone.page.go_forward()
        expect_locked(phone)
        expect(phone.by("room-title")).to_have_count(0)
    phone.unlock(PASSWORD)
    expect_rooms(phone)


def test_an_invite_link_leaves_its_key_in_no_entry(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Invited", "Alice")

    opened_after_another_page(bob, room.invite)
    history_is_clean(bob.page, room.key)
    bob.set_password(PASSWORD, then="join-key")
    history_is_clean(bob.page, room.key)
    bob.by("nickname").fill("Bob")
    bob.by("join").click()  # the Join screen's entry becomes the room's
    bob.expect_online()
    history_is_clean(bob.page, room.key)
    bob.by("share-room").click()
    expect_share(bob)
    back(bob.page)
    expect_room(bob)
    back(bob.page)
    expect_rooms(bob)
    history_is_clean(bob.page, room.key)
    back(bob.page)
    expect_left(bob.page)


def test_after_a_reload_back_from_the_first_screen_leaves(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """A reload keeps the entries the page made before; what they stood for is gone, and
    each showed the Unlock screen or the list once more before Back left."""
    phone = phones()
    opened_after_another_page(phone, relay.url)
    phone.set_password(PASSWORD)
    phone.create_room("Reloaded", "Kim")
    phone.open_room()
    phone.by("share-room").click()
    expect_share(phone)
    phone.page.reload()
    expect_locked(phone)
    phone.unlock(PASSWORD)
    expect_rooms(phone)
    back(phone.page)
    expect_left(phone.page)


def test_an_invite_link_opened_while_locked_adds_no_screen_to_go_back_through(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Opened while locked", "Alice")

    opened_after_another_page(bob, relay.url)
    bob.set_password(PASSWORD)
    bob.by("nav-settings").click()
    bob.by("lock-now").click()
    expect_locked(bob)
    bob.page.goto(room.invite)  # in the open page: the browser makes an entry for it
    expect(bob.page.get_by_text("You opened an invite link")).to_be_visible()
    bob.unlock(PASSWORD, then="join-key")
    history_is_clean(bob.page, room.key)
    back(bob.page)
    expect(bob.by("nav-new")).to_be_visible()  # the list, of no rooms yet
    back(bob.page)
    expect_left(bob.page)


def test_leaving_a_room_asks_first(relay: RelayProcess, phones: Callable[..., Phone]) -> None:
    phone = phones()
    phone.open(relay.url)
    phone.set_password(PASSWORD)
    phone.create_room("Precious", "Kim")
    phone.open_room()
    asked: list[str] = []
    phone.page.get_by_role("button", name="Room options").click()
    phone.by("leave-room").click()
    asked.append(phone.answer(yes=False))
    expect(phone.by("room-title")).to_have_text("Precious")
    assert len(asked) == 1
    assert "Precious" in asked[0]
    assert "key" in asked[0]
    phone.by("nav-rooms").click()
    expect(phone.by("room-item").filter(has_text="Precious")).to_have_count(1)

    phone.by("room-item").first.click()
    phone.page.get_by_role("button", name="Room options").click()
    phone.by("leave-room").click()
    phone.answer(yes=True)
    expect(phone.page.get_by_role("status").filter(has_text="Left and forgot")).to_be_visible()
    expect(phone.by("room-item")).to_have_count(0)


def test_an_old_error_goes_as_the_key_is_corrected(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    phone.set_password(PASSWORD)
    phone.by("nav-join").click()
    phone.by("join-key").fill("S1234")
    phone.by("nickname").fill("Kim")
    phone.by("join").click()
    expect(phone.by("error")).to_contain_text("30 characters")
    phone.by("join-key").press("End")
    phone.by("join-key").press_sequentially("5")
    expect(phone.by("error")).to_have_count(0)


# The browser's QR reader, played by the test: it reads whatever window.qrText holds (in
# every picture of the fake camera), and counts what it was asked to read.
QR_READER = """
window.qrText = null;
globalThis.BarcodeDetector = class {
  static async getSupportedFormats() { return ["qr_code"]; }
  async detect(source) {
    if (source instanceof ImageData || window.qrText === null) return [];
    return [{ rawValue: window.qrText, format: "qr_code" }];
  }
};
"""


def typos_of(key: str) -> Iterator[str]:
    """``key`` with its last character replaced by each other one."""
    return (key[:-1] + char for char in BASE58_ALPHABET if char != key[-1])


def fails_its_check(key: str) -> bool:
    try:
        parse_minikey(key)
    except ChecksumMismatch:
        return True
    return False


@pytest.fixture
def camera_browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """A browser whose camera is Chromium's fake one, allowed without asking."""
    camera = launch(
        playwright_driver, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"
    )
    yield camera
    camera.close()


def test_a_scanned_qr_code_that_is_not_an_invite_says_why_and_scanning_goes_on(
    relay: RelayProcess, phones: Callable[..., Phone], camera_browser: Browser
) -> None:
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Scanned", "Alice")
    mistyped = next(key for key in typos_of(room.key) if fails_its_check(key))

    made: list[Phone] = []
    try:
        bob = new_phone(camera_browser, permissions=["camera"])
        made.append(bob)
        bob.context.add_init_script(QR_READER)
        bob.open(relay.url)
        bob.set_password(PASSWORD)
        bob.by("nav-join").click()
        bob.by("scan-qr").click()
        expect(bob.by("scan-video")).to_be_visible()
        alert = bob.page.get_by_role("alert")
        refused = "That QR code is not an InstantRoom invite: "
        for shown, why in [
            ("WIFI:S:home;T:WPA;P:wifi-secret;;", "Wi-Fi"),
            ("https://example.org/menu", "web address"),
            (mistyped, "does not pass its check"),
            (f"ftp://files.example.org/#{room.key}", "relay address"),
            ("BEGIN:VCARD\nFN:Someone\nEND:VCARD", "something else"),
        ]:
            bob.page.evaluate("(text) => { window.qrText = text; }", shown)
            expect(alert).to_contain_text(refused)
            expect(alert).to_contain_text(why)
            expect(bob.by("scan-video")).to_be_visible()  # still looking
            expect(bob.by("join-key")).to_have_value("")
        # What a code holds is not repeated: a Wi-Fi code holds its password.
        bob.page.evaluate("() => { window.qrText = 'WIFI:S:home;T:WPA;P:wifi-secret;;'; }")
        expect(alert).to_contain_text("Wi-Fi")
        assert "wifi-secret" not in alert.inner_text()

        bob.page.evaluate("(text) => { window.qrText = text; }", room.invite)
        expect(bob.by("join-key")).to_have_value(re.compile(r"\S"))
        assert len("".join(bob.by("join-key").input_value().split())) == MINIKEY_LENGTH
        expect(bob.by("scan-video")).to_be_hidden()
        expect(alert).to_have_count(0)
    finally:
        close_phones(made)


# A reader that fails on every other picture (a frame the camera dropped, a reader short of
# memory once), with the name the barcode-detector ponyfill gives any failure of its reader.
FLAKY_QR_READER = """
window.qrText = null;
window.qrPictures = 0;
globalThis.BarcodeDetector = class {
  static async getSupportedFormats() { return ["qr_code"]; }
  async detect(source) {
    if (source instanceof ImageData) return [];
    window.qrPictures += 1;
    if (window.qrPictures % 2 === 1) throw new DOMException("one picture", "NotSupportedError");
    return window.qrText === null ? [] : [{ rawValue: window.qrText, format: "qr_code" }];
  }
};
"""


def test_a_picture_the_reader_fails_on_now_and_then_does_not_end_scanning(
    relay: RelayProcess, phones: Callable[..., Phone], camera_browser: Browser
) -> None:
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Scanned at last", "Alice")

    made: list[Phone] = []
    try:
        bob = new_phone(camera_browser, permissions=["camera"])
        made.append(bob)
        bob.context.add_init_script(FLAKY_QR_READER)
        bob.open(relay.url)
        bob.set_password(PASSWORD)
        bob.by("nav-join").click()
        bob.page.evaluate("(text) => { window.qrText = text; }", room.invite)
        bob.by("scan-qr").click()
        expect(bob.by("join-key")).to_have_value(room.grouped)
        expect(bob.page.get_by_role("alert")).to_have_count(0)
        assert bob.page.evaluate("window.qrPictures") >= 2
    finally:
        close_phones(made)


def test_a_qr_reader_that_cannot_run_is_not_called_a_camera_problem(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    # Neither reader can run: the browser's own fails, and the one the app carries needs
    # WebAssembly, which this browser lacks.
    phone.context.add_init_script(
        """globalThis.BarcodeDetector = class {
  static async getSupportedFormats() { return ["qr_code"]; }
  async detect() { throw new DOMException("no reader here", "NotSupportedError"); }
};
delete globalThis.WebAssembly;"""
    )
    phone.open(relay.url)
    phone.set_password(PASSWORD)
    phone.by("nav-join").click()
    phone.by("scan-qr").click()
    alert = phone.page.get_by_role("alert")
    expect(alert).to_have_text(re.compile(r"^\s*This browser cannot read QR codes here"))
    assert "camera could not be used" not in alert.inner_text()

"""The web client as a screen reader, a keyboard alone, a small or zoomed screen and weak
eyes meet it: what changes is read out, the focus stays somewhere useful, errors belong to
their fields and show where they were made, and fields and placeholders can be seen.

A screen reader reads a live region's new text only if the region was there before the
text came: a region drawn together with its text (as a new screen's are) is read by none.
So "read out" here is: the text came inside a live region that was on the page before."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

from playwright.sync_api import JSHandle, Page, expect

from instantroom.testing import LOOPBACK, RelayProcess
from tests.web.conftest import Phone
from tests.web.test_accessibility import FOCUSED

LIVE = "[role=status], [role=log], [role=alert], [aria-live]"


def live_regions(page: Page) -> JSHandle:
    """The live regions on the page now, to be asked later whether one of them reads a text."""
    return page.evaluate_handle(f"() => [...document.querySelectorAll({LIVE!r})]")


def read_out(regions: JSHandle, text: str) -> bool:
    """Whether ``text`` is now inside one of ``regions``, still on the page."""
    found = regions.evaluate(
        "(regions, text) => regions.some((r) => r.isConnected && r.textContent.includes(text))",
        text,
    )
    assert isinstance(found, bool)
    return found


def wait_read_out(page: Page, regions: JSHandle, text: str) -> None:
    """``text`` shows on the page, then it must be inside one of ``regions``."""
    expect(page.get_by_text(text).first).to_be_attached()
    assert read_out(regions, text), f"{text!r} came in no live region that was there before it"


def focused(page: Page) -> str:
    name = page.evaluate(FOCUSED)
    assert isinstance(name, str)
    return name


def in_a_room(relay_url: str, phones: Callable[..., Phone], **options: Any) -> Phone:
    phone = phones(**options)
    phone.open(relay_url)
    phone.set_password("a long password")
    phone.create_room("Room", "Alice")
    phone.open_room()
    return phone


# Read out


def test_a_notice_is_read_out_on_the_same_screen_and_with_a_new_one(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """Notices were role=status paragraphs drawn with their text: "Settings saved",
    "Left and forgot…", "Locked after a while…" reached no screen reader."""
    phone = in_a_room(relay.url, phones)
    phone.by("nav-settings").click()
    expect(phone.by("server-url")).to_be_visible()
    regions = live_regions(phone.page)
    phone.by("save-settings").click()
    wait_read_out(phone.page, regions, "Settings saved")

    # Leaving the room: a new screen, and its notice.
    phone.by("nav-rooms").click()
    phone.by("room-item").click()
    phone.page.get_by_role("button", name="Room options").click()
    regions = live_regions(phone.page)
    phone.by("leave-room").click()
    phone.answer(yes=True)
    expect(phone.by("nav-new")).to_be_visible()
    wait_read_out(phone.page, regions, "Left and forgot")

    # A lock after a while without use: the Unlock screen, and why it shows.
    idle = phones()
    idle.page.clock.install()
    idle.open(relay.url)
    idle.set_password("a long password")
    regions = live_regions(idle.page)
    idle.page.clock.fast_forward("06:00")
    expect(idle.by("password")).to_be_visible()
    wait_read_out(idle.page, regions, "Locked after a while")


def test_presence_is_read_out(relay: RelayProcess, phones: Callable[..., Phone]) -> None:
    """The count ("2 online") changed in no live region: nobody heard that someone came."""
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Room", "Alice")
    alice.open_room()
    alice.expect_members(1)
    regions = live_regions(alice.page)
    bob = phones()
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.join(room.key, "Bob")
    alice.expect_members(2)
    assert read_out(regions, "2 online"), "presence changed in no live region"


def test_why_a_relay_cannot_be_reached_is_read_out(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The reason came in a status region drawn with it. The "relay" here takes the
    connection and answers nothing until the test closes it: the first try fails then,
    while the room's screen shows."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        alice = phones()
        alice.open(relay.url)
        alice.set_password("alice's long password")
        room = alice.create_room("Here", "Alice")
        phone = phones()
        phone.open(relay.url)
        phone.set_password("bob's long password")
        phone.by("nav-join").click()
        phone.by("join-key").fill(f"http://{LOOPBACK}:{port}/#{room.key}")
        phone.by("nickname").fill("Bob")
        phone.by("join").click()
        expect(phone.by("connection-state")).to_have_text("connecting…")
        regions = live_regions(phone.page)
        listener.settimeout(10)
        connection, _ = listener.accept()
        connection.close()
        reason = phone.by("connection-reason")
        expect(reason).to_contain_text("could not be reached")
        assert read_out(regions, reason.inner_text().strip()), "the reason came in no live region"


def test_the_conversation_is_a_list_in_a_log(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The log was the list itself (role=log on the <ol>): a reader found no list to walk
    or count, only items outside any list."""
    phone = in_a_room(relay.url, phones)
    regions = live_regions(phone.page)
    for text in ("one", "two"):
        phone.send(text)
        phone.expect_message(text)
    log = phone.page.get_by_role("log", name="Messages")
    expect(log).to_have_count(1)
    expect(log.get_by_role("list")).to_have_count(1)
    items = log.get_by_role("list").get_by_role("listitem")
    expect(items).to_have_count(2)
    # Each says who wrote it and when.
    for index in range(2):
        expect(items.nth(index)).to_contain_text("Alice")
        expect(items.nth(index).locator("time")).to_have_attribute("datetime", re.compile(".+"))
    assert read_out(regions, "two")


# The focus


def test_deleting_a_message_leaves_the_focus_in_the_conversation(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The focused Delete button went with its message, and the focus with it to the page:
    the next Tab started again from the top."""
    phone = in_a_room(relay.url, phones)
    for text in ("first", "second", "third"):
        phone.send(text)
        phone.expect_message(text)
    deletes = phone.by("delete-message")

    def delete_by_keyboard(text: str) -> None:
        phone.message_locator(text).get_by_test_id("delete-message").focus()
        phone.page.keyboard.press("Enter")
        expect(phone.message_locator(text)).to_have_count(0)

    delete_by_keyboard("second")  # the next one's Delete
    expect(phone.message_locator("third").get_by_test_id("delete-message")).to_be_focused()
    delete_by_keyboard("third")  # the last: the one before
    expect(phone.message_locator("first").get_by_test_id("delete-message")).to_be_focused()
    delete_by_keyboard("first")  # none left: the message box
    expect(deletes).to_have_count(0)
    expect(phone.by("message-input")).to_be_focused()


def test_the_keyboard_skips_past_the_conversation_to_the_message_box(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """Every message has a Delete button: from the room's heading, the message box was one
    Tab per message away."""
    phone = in_a_room(relay.url, phones)
    for number in range(12):
        phone.send(f"number {number}")
    phone.expect_message("number 11")
    phone.by("nav-rooms").click()
    phone.by("room-item").click()
    expect(phone.page.get_by_role("heading", level=1)).to_be_focused()
    visited = []
    for _ in range(5):
        phone.page.keyboard.press("Tab")
        visited.append(focused(phone.page))
        if visited[-1] == "skip-to-composer":
            break
    assert visited[-1] == "skip-to-composer", f"5 Tabs from the heading visit {visited}"
    # Seen while it has the focus (a keyboard user sees where it is).
    box = phone.by("skip-to-composer").bounding_box()
    assert box is not None
    assert box["width"] > 20, box
    assert box["height"] > 10, box
    phone.page.keyboard.press("Enter")
    expect(phone.by("message-input")).to_be_focused()
    phone.page.keyboard.type("typed after the skip")
    phone.page.keyboard.press("Enter")
    phone.expect_message("typed after the skip")


# Errors


def test_a_wrong_password_leaves_the_focus_in_its_field_which_tells_why(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """Unlock by keyboard with a wrong password: the disabled button lost the focus to the
    page, and the field said nothing of the error."""
    phone = phones()
    phone.open(relay.url)
    phone.set_password("the right password")
    phone.page.reload()
    field = phone.by("password")
    expect(field).to_be_visible()
    expect(field).not_to_have_attribute("aria-invalid", "true")
    field.fill("not the password")
    field.focus()
    phone.page.keyboard.press("Tab")
    expect(phone.by("unlock")).to_be_focused()
    phone.page.keyboard.press("Enter")
    expect(phone.page.get_by_role("alert")).to_contain_text("Wrong password")
    expect(field).to_be_focused()
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_accessible_description(re.compile("Wrong password"))
    phone.page.keyboard.type("the right password")
    phone.page.keyboard.press("Enter")
    expect(phone.by("nav-new")).to_be_visible()


def test_a_mistyped_key_is_the_key_fields_error(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    phone.set_password("a long password")
    phone.by("nav-join").click()
    key = phone.by("join-key")
    key.fill("not a key at all")
    phone.by("nickname").fill("Bea")
    phone.by("join").click()
    expect(phone.page.get_by_role("alert")).to_be_visible()
    expect(key).to_have_attribute("aria-invalid", "true")
    alert = phone.page.get_by_role("alert").inner_text().strip()
    expect(key).to_have_accessible_description(alert)
    expect(phone.by("nickname")).not_to_have_attribute("aria-invalid", "true")
    key.fill("not a key at all, still")  # the error goes as the key changes
    expect(phone.page.get_by_role("alert")).to_have_count(0)
    expect(key).not_to_have_attribute("aria-invalid", "true")


def test_a_password_change_says_how_it_went_beside_its_form(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """On a small screen (or zoomed in), the password form is far below the top of the
    Settings screen, where its error and notice showed: out of view. And the disabled
    button lost the focus to the page."""
    phone = phones(viewport={"width": 320, "height": 568})
    phone.open(relay.url)
    phone.set_password("the first password")
    phone.by("nav-settings").click()
    phone.by("old-password").fill("not the password")
    phone.by("new-password").fill("the second password")
    phone.by("new-password-confirm").fill("the second password")
    phone.page.get_by_role("button", name="Change password").click()
    alert = phone.page.get_by_role("alert")
    expect(alert).to_contain_text("Wrong password")
    expect(alert).to_be_in_viewport(ratio=1)
    expect(phone.by("old-password")).to_be_focused()

    regions = live_regions(phone.page)
    phone.by("old-password").fill("the first password")
    phone.by("new-password").fill("the second password")
    phone.by("new-password-confirm").fill("the second password")
    phone.page.get_by_role("button", name="Change password").click()
    notice = phone.by("notice")
    expect(notice).to_contain_text("Password changed")
    expect(notice).to_be_in_viewport(ratio=1)
    assert read_out(regions, "Password changed")
    assert focused(phone.page) != "BODY"


# Seeing it


def test_the_back_button_is_read_as_rooms(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """Its arrow was read out: "single left-pointing angle quotation mark Rooms"."""
    phone = phones()
    phone.open(relay.url)
    phone.set_password("a long password")
    phone.by("nav-settings").click()
    expect(phone.by("nav-rooms")).to_have_accessible_name("Rooms")
    expect(phone.by("nav-rooms")).to_contain_text("\u2039")  # still drawn


COLOURS = """() => {
  const opaque = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const colour = getComputedStyle(e).backgroundColor;
      if (!/^rgba\\(.*, 0\\)$/.test(colour) && colour !== "transparent") return colour;
    }
    return "rgb(255, 255, 255)";
  };
  return [...document.querySelectorAll("input:not([type=checkbox]), select, textarea")]
    .filter((e) => e.checkVisibility())
    .map((e) => ({
      field: e.dataset.testid || e.id,
      edge: getComputedStyle(e).borderTopColor,
      inside: opaque(e),
      around: opaque(e.parentElement),
      placeholder: e.placeholder ? getComputedStyle(e, "::placeholder").color : null,
      placeholderOpacity: e.placeholder ? getComputedStyle(e, "::placeholder").opacity : null,
    }));
}"""


def rgb(text: str) -> tuple[float, float, float]:
    parts = text[text.index("(") + 1 : text.index(")")].replace("/", " ").replace(",", " ")
    red, green, blue = (float(part) for part in parts.split()[:3])
    return red, green, blue


def luminance(colour: tuple[float, float, float]) -> float:
    def linear(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(value) for value in colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(one: str, other: str) -> float:
    a, b = luminance(rgb(one)), luminance(rgb(other))
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def check_fields(page: Page, screen: str) -> int:
    """Each visible field's edge is 3:1 against the page around it (WCAG 1.4.11: the edge
    is what shows where to type), its placeholder 4.5:1 against the field; how many."""
    fields = page.evaluate(COLOURS)
    for field in fields:
        edge = min(
            contrast(field["edge"], field["inside"]), contrast(field["edge"], field["around"])
        )
        assert edge >= 3, f"{screen}: the edge of {field['field']} is {edge:.2f}:1"
        if field["placeholder"] is not None:
            assert float(field["placeholderOpacity"]) == 1, field
            ratio = contrast(field["placeholder"], field["inside"])
            assert ratio >= 4.5, f"{screen}: the placeholder of {field['field']} is {ratio:.2f}:1"
    return len(fields)


def no_sideways_scroll(page: Page, screen: str) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
    assert width <= 0, f"{screen}: {width} px to scroll sideways at 320 px"


def test_fields_and_placeholders_can_be_seen_in_light_and_dark(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """Fields were edged in #d8dee6 on white (1.3:1; dark: 1.5:1), and the browser's grey
    placeholder (the message box's only visible label) was 3.5:1 on the dark card. At
    320 px wide (400% zoom) nothing scrolls sideways."""
    phone = phones(viewport={"width": 320, "height": 568})
    phone.open(relay.url)
    expect(phone.by("password-confirm")).to_be_visible()
    seen: dict[str, int] = {}

    def check(screen: str) -> None:
        for scheme in ("light", "dark"):
            phone.page.emulate_media(color_scheme=scheme)
            seen[f"{screen} {scheme}"] = check_fields(phone.page, f"{screen} ({scheme})")
        no_sideways_scroll(phone.page, screen)

    check("unlock")
    phone.set_password("a long password")
    phone.by("nav-new").click()
    check("new room")
    phone.by("room-label").fill("A room")
    phone.by("nickname").fill("Alice")
    phone.by("create-room").click()
    phone.shared_room()
    no_sideways_scroll(phone.page, "share")
    phone.open_room()
    phone.page.get_by_role("button", name="Room options").click()
    check("room")
    phone.by("nav-rooms").click()
    phone.by("nav-join").click()
    check("join")
    phone.by("nav-settings").click()
    check("settings")
    assert all(count >= 1 for count in seen.values()), seen

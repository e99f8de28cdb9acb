"""Accessibility smoke test: every control has an accessible name, every picture a text
alternative, and the keyboard reaches each input before its button."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from instantroom.testing import RelayProcess
from tests.web.conftest import Phone

NAMED = re.compile(r"\S")
CONTROLS = "input:not([type=hidden]), select, textarea, button, [role=button]"
FOCUSED = """() => {
  const element = document.activeElement;
  if (!element || element === document.body || element === document.documentElement) return "BODY";
  return element.dataset.testid || element.tagName + (element.id ? "#" + element.id : "");
}"""


def check_names(phone: Phone, screen: str) -> int:
    """Every visible control of the screen has an accessible name, every visible picture
    an alt text; how many controls there were."""
    controls = phone.page.locator(CONTROLS).filter(visible=True)
    count = controls.count()
    for index in range(count):
        control = controls.nth(index)
        testid = control.get_attribute("data-testid") or control.evaluate("e => e.outerHTML")
        try:
            expect(control).to_have_accessible_name(NAMED, timeout=2000)
        except AssertionError:
            raise AssertionError(f"{screen}: {testid} has no accessible name") from None
    pictures = phone.page.locator("img").filter(visible=True)
    for index in range(pictures.count()):
        picture = pictures.nth(index)
        testid = picture.get_attribute("data-testid") or picture.evaluate("e => e.outerHTML")
        assert picture.get_attribute("alt") is not None, f"{screen}: {testid} has no alt"
    return count


def tab_pass(page: Page, limit: int = 60) -> list[str]:
    """The elements Tab visits in one pass through the page, from its start to its end."""
    for _ in range(limit):  # first, to the end of the page (focus on the body)
        if page.evaluate(FOCUSED) == "BODY":
            break
        page.keyboard.press("Tab")
    visited: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused == "BODY":
            return visited
        visited.append(focused)
    raise AssertionError(f"Tab never left the page: {visited}")


def tab_to(page: Page, testid: str, limit: int = 4) -> None:
    """Press Tab until ``testid`` has the focus, at most ``limit`` times."""
    visited = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        visited.append(page.evaluate(FOCUSED))
        if visited[-1] == testid:
            return
    raise AssertionError(f"{limit} Tabs visit {visited}, not {testid}")


def assert_in_order(visited: list[str], *testids: str) -> None:
    missing = [testid for testid in testids if testid not in visited]
    assert missing == [], f"Tab never reaches {missing}; it visits {visited}"
    positions = [visited.index(testid) for testid in testids]
    assert positions == sorted(positions), f"Tab visits {visited}, not {testids} in order"


def test_every_control_has_an_accessible_name(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    expect(phone.by("password-confirm")).to_be_visible()
    counts = {"unlock": check_names(phone, "unlock, first visit")}
    phone.set_password("a long password")
    counts["rooms"] = check_names(phone, "rooms")
    phone.by("nav-new").click()
    expect(phone.by("room-label")).to_be_visible()
    counts["new room"] = check_names(phone, "new room")
    phone.by("room-label").fill("Named")
    phone.by("nickname").fill("Nia")
    phone.by("create-room").click()
    phone.shared_room()
    counts["share"] = check_names(phone, "share")
    phone.open_room()
    phone.send("hello")
    phone.expect_message("hello")
    counts["room"] = check_names(phone, "room")
    expect(phone.page.get_by_role("log")).to_have_count(1)
    expect(phone.by("messages")).to_have_attribute("role", "log")
    phone.by("nav-rooms").click()
    phone.by("nav-join").click()
    expect(phone.by("join-key")).to_be_visible()
    counts["join"] = check_names(phone, "join")
    phone.by("nav-settings").click()
    expect(phone.by("server-url")).to_be_visible()
    counts["settings"] = check_names(phone, "settings")
    phone.page.reload()
    expect(phone.by("password")).to_be_visible()
    counts["unlock again"] = check_names(phone, "unlock")
    # Not vacuous: each screen had controls to check (an input and its button at least).
    assert all(count >= 2 for count in counts.values()), counts


def test_tab_reaches_each_input_then_its_button(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    phone = phones()
    phone.open(relay.url)
    expect(phone.by("password-confirm")).to_be_visible()
    assert_in_order(tab_pass(phone.page), "password", "password-confirm", "unlock")

    # Unlock by keyboard alone: type, Tab to the button, Enter.
    phone.by("password").fill("a long password")
    phone.by("password-confirm").fill("a long password")
    phone.by("password-confirm").focus()
    tab_to(phone.page, "unlock")
    phone.page.keyboard.press("Enter")
    expect(phone.by("nav-new")).to_be_visible()

    phone.create_room("Keyboard", "Kai")
    phone.open_room()
    assert_in_order(tab_pass(phone.page), "message-input", "send")
    phone.by("message-input").fill("sent from the keyboard")
    phone.by("message-input").focus()
    tab_to(phone.page, "send")
    phone.page.keyboard.press("Enter")
    phone.expect_message("sent from the keyboard")

    phone.page.reload()
    expect(phone.by("password")).to_be_visible()
    assert_in_order(tab_pass(phone.page), "password", "unlock")

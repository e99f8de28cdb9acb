"""Screenshots of the main screens at phone size (390 x 844 CSS pixels, scale 2).

They go to the folder named by INSTANTROOM_SCREENSHOTS (scripts/screenshots sets
docs/screenshots), else to the test's temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect

from instantroom.testing import RelayProcess
from tests.web.conftest import PHONE, Phone

SCREENS = [
    "01-unlock-first-visit",
    "02-new-room",
    "03-share",
    "04-join",
    "05-room",
    "06-rooms",
    "07-settings",
]


def test_screenshots_of_the_main_screens(
    relay: RelayProcess, phones: Callable[..., Phone], tmp_path: Path
) -> None:
    folder = Path(os.environ.get("INSTANTROOM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []

    def shot(phone: Phone, name: str) -> None:
        path = folder / f"{name}.png"
        phone.page.screenshot(path=path, animations="disabled", caret="hide")
        taken.append(path)

    alice, bob = phones(), phones()
    alice.open(relay.url)
    expect(alice.by("password-confirm")).to_be_visible()
    shot(alice, "01-unlock-first-visit")
    alice.set_password("alice's long password")

    alice.by("nav-new").click()
    alice.by("room-label").fill("Weekend trip")
    alice.by("nickname").fill("Alice")
    alice.by("expiry").select_option("day")
    shot(alice, "02-new-room")
    alice.by("create-room").click()
    room = alice.shared_room()
    expect(alice.by("qr")).to_be_visible()
    shot(alice, "03-share")
    alice.open_room()

    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.by("nav-join").click()
    bob.by("join-key").fill(room.grouped)
    bob.by("nickname").fill("Bob")
    shot(bob, "04-join")
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)
    alice.send("Train at 9:12, platform 4. Who brings the map?")
    bob.expect_message("Train at 9:12, platform 4. Who brings the map?")
    bob.send("I will. And snacks!")
    alice.expect_message("I will. And snacks!")
    alice.send("Perfect, see you there!")
    bob.expect_message("Perfect, see you there!")
    expect(alice.by("members-summary")).to_contain_text("Bob")  # who is here, by name
    shot(alice, "05-room")

    alice.by("nav-rooms").click()
    expect(alice.by("room-item").filter(has_text="Weekend trip")).to_have_count(1)
    shot(alice, "06-rooms")
    alice.by("nav-settings").click()
    expect(alice.by("server-url")).to_be_visible()
    shot(alice, "07-settings")

    assert [path.stem for path in taken] == SCREENS
    viewport = PHONE["viewport"]
    scale = PHONE["device_scale_factor"]
    for path in taken:
        with Image.open(path) as picture:
            assert picture.format == "PNG", path
            assert picture.size == (viewport["width"] * scale, viewport["height"] * scale), path
            # Something is drawn: not one flat colour.
            colours = picture.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 10, path

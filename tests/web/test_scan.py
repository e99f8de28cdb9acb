"""Joining by scanning the QR code of another phone's Share screen, through Chromium's
fake camera playing a video of that very QR code (tests/web/video.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import zxingcpp
from playwright.sync_api import Playwright, expect

from instantroom.testing import RelayProcess
from tests.web.conftest import Phone, phone_with_camera
from tests.web.video import read_frame, write_y4m_from_png


def spaced(key: str) -> re.Pattern[str]:
    """The key, with any spaces between its characters."""
    return re.compile(r"^\s*" + r"\s*".join(re.escape(char) for char in key) + r"\s*$")


def test_join_by_scanning_the_qr_code(
    relay: RelayProcess,
    phones: Callable[..., Phone],
    playwright_driver: Playwright,
    tmp_path: Path,
) -> None:
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Scanned", "Alice", expiry="hour")
    expect(alice.by("qr")).to_be_visible()
    assert alice.by("qr").evaluate("element => element.tagName") == "IMG"
    png = alice.by("qr").screenshot()
    (tmp_path / "qr.png").write_bytes(png)
    video = write_y4m_from_png(png, tmp_path / "qr.y4m")
    # What the screen shows is the invite link (read from the video's first frame, where
    # the picture has a white margin around it), before any camera is involved.
    first_frame, _, _ = read_frame(video.read_bytes())
    assert [found.text for found in zxingcpp.read_barcodes(first_frame)] == [room.invite]
    alice.open_room()

    with phone_with_camera(playwright_driver, video) as bob:
        bob.open(relay.url)
        bob.set_password("bob's long password")
        bob.by("nav-join").click()
        expect(bob.by("join-key")).to_have_value("")
        bob.by("scan-qr").click()
        expect(bob.by("scan-video")).to_be_visible()
        expect(bob.by("join-key")).to_have_value(spaced(room.key))

        bob.by("nickname").fill("Bob")
        bob.by("join").click()
        bob.expect_online()
        alice.expect_members(2)
        bob.expect_members(2)
        bob.send("scanned and in")
        assert alice.expect_message("scanned and in").sender == "Bob"
        alice.send("welcome, Bob")
        assert bob.expect_message("welcome, Bob").sender == "Alice"


def test_a_qr_reader_gone_with_an_update_says_to_reload(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The reader is loaded when first used: a page of a build the relay replaced since
    finds it gone, and showed "Failed to fetch dynamically imported module"."""
    phone = phones(service_workers="block")  # no kept copy of it either
    phone.page.route(
        re.compile(r"/assets/scan-[^/]*\.js$"), lambda route: route.fulfill(status=404)
    )
    phone.open(relay.url)
    phone.set_password("a long unique password")
    phone.by("nav-join").click()
    phone.by("scan-qr").click()
    expect(phone.page.get_by_role("alert")).to_contain_text(
        "The QR reader could not be loaded: the app was updated on the relay"
    )
    expect(phone.by("scan-qr")).to_be_enabled()  # and it can be tried again
    expect(phone.by("scan-video")).to_be_hidden()

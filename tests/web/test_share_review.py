"""Sharing a room's key phone to phone, as people do it: the Share screen's QR image saved
and shown again elsewhere, a relay given by its WebSocket address, and a browser whose QR
reader cannot run."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import BrowserContext, Playwright, expect

from instantroom.testing import RelayProcess
from tests.web.conftest import Phone, phone_with_camera
from tests.web.test_scan import spaced
from tests.web.video import FRAME, NEUTRAL_CHROMA, y4m_header

DARK_BACKGROUND = (24, 24, 24)  # a photo gallery or a chat in dark mode


def saved_qr_image(phone: Phone) -> Image.Image:
    """The picture a long press on the Share screen's QR code saves: the <img>'s own PNG."""
    source = phone.by("qr").get_attribute("src") or ""
    header, _, data = source.partition(",")
    assert header == "data:image/png;base64", header
    with Image.open(io.BytesIO(base64.b64decode(data))) as picture:
        return picture.convert("RGBA")


def shown_on(picture: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """``picture`` as a viewer shows it on ``background``."""
    under = Image.new("RGBA", picture.size, (*background, 255))
    return Image.alpha_composite(under, picture).convert("L")


def camera_video(frame: Image.Image, path: Path, background: int) -> Path:
    """A Y4M video for Chromium's fake camera: ``frame`` centred on a 640 x 480 picture of
    the grey ``background``, as a phone held up to another's screen would see it."""
    canvas = Image.new("L", (640, 480), background)
    side = 360
    canvas.paste(frame.resize((side, side), Image.Resampling.BILINEAR), (140, 60))
    chroma = bytes([NEUTRAL_CHROMA]) * (320 * 240)
    path.write_bytes(y4m_header(640, 480, 10) + (FRAME + canvas.tobytes() + chroma + chroma) * 5)
    return path


def test_the_saved_qr_image_reads_on_a_dark_background(
    relay: RelayProcess, phones: Callable[..., Phone], playwright_driver: Playwright, tmp_path: Path
) -> None:
    """The image is black on opaque white: saved, shared, then shown by a gallery or a chat
    in dark mode, another phone's scanner still reads it (its light modules were
    transparent, and showed dark on dark)."""
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Saved", "Alice", expiry="hour")
    saved = saved_qr_image(alice)
    for background in [(255, 255, 255), DARK_BACKGROUND, (0, 0, 0)]:
        found = zxingcpp.read_barcodes(shown_on(saved, background))
        assert [code.text for code in found] == [room.invite], background

    video = camera_video(shown_on(saved, DARK_BACKGROUND), tmp_path / "qr.y4m", DARK_BACKGROUND[0])
    with phone_with_camera(playwright_driver, video) as bob:
        bob.open(relay.url)
        bob.set_password("bob's long password")
        bob.by("nav-join").click()
        bob.by("scan-qr").click()
        expect(bob.by("join-key")).to_have_value(room.grouped)


def test_a_relay_set_by_its_websocket_address_makes_invite_links_that_open_the_app(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """ws://host/ws is the relay at http://host/ for connecting (connection.js): its invite
    links are for that page too, not for .../ws/, where the relay serves nothing (404)."""
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    alice.by("nav-settings").click()
    alice.by("server-url").fill(relay.ws_url)
    alice.by("save-settings").click()
    expect(alice.page.get_by_role("status")).to_contain_text("Settings saved")
    alice.by("nav-rooms").click()
    room = alice.create_room("By its socket", "Alice")
    assert room.invite == f"{relay.url}/#{room.key}"
    alice.open_room()

    bob.open(room.invite)
    bob.set_password("bob's long password", then="join-key")
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)


# The ways a browser ends up with no QR reader: no WebAssembly at all (iOS's Lockdown Mode,
# a hardened browser), or the reader's .wasm not served (a proxy that drops it).
def no_webassembly(context: BrowserContext) -> None:
    context.add_init_script("delete globalThis.WebAssembly;")


def no_wasm_file(context: BrowserContext) -> None:
    context.route("**/*.wasm", lambda route: route.fulfill(status=404, body="Not found.\n"))


# Counts the times the page turns a camera on.
COUNT_CAMERA_STARTS = """
window.cameraStarts = 0;
const start = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (wanted) => {
  window.cameraStarts += 1;
  return start(wanted);
};
"""


@pytest.mark.parametrize("break_reader", [no_webassembly, no_wasm_file])
def test_a_browser_that_cannot_read_qr_codes_says_so_and_leaves_the_camera_off(
    break_reader: Callable[[BrowserContext], None],
    relay: RelayProcess,
    phones: Callable[..., Phone],
    playwright_driver: Playwright,
    tmp_path: Path,
) -> None:
    """It said nothing: the camera's picture showed for as long as the person held a QR
    code (a readable one) up to it, and nothing was ever read."""
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    alice.create_room("Unread", "Alice", expiry="hour")
    video = camera_video(shown_on(saved_qr_image(alice), (255, 255, 255)), tmp_path / "qr.y4m", 255)
    with phone_with_camera(playwright_driver, video) as bob:
        break_reader(bob.context)
        bob.context.add_init_script(COUNT_CAMERA_STARTS)
        bob.open(relay.url)
        bob.set_password("bob's long password")
        bob.by("nav-join").click()
        bob.by("scan-qr").click()
        expect(bob.page.get_by_role("alert")).to_contain_text("cannot read QR codes")
        expect(bob.page.get_by_role("alert")).to_contain_text("type the key")
        expect(bob.by("scan-qr")).to_be_visible()  # scanning is over
        expect(bob.by("scan-video")).to_be_hidden()
        assert bob.page.evaluate("window.cameraStarts") == 0
        expect(bob.by("join-key")).to_have_value("")


# A reader that starts, then fails on every picture of the camera (the browser's own
# BarcodeDetector, where a phone has one: its service may go away while in use).
FAILING_DETECTOR = """
globalThis.BarcodeDetector = class {
  static async getSupportedFormats() { return ["qr_code"]; }
  async detect(source) {
    if (source instanceof ImageData) return [];
    throw new DOMException("the reader went away", ERROR_NAME);
  }
};
const opened = [];
const start = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (wanted) => {
  const stream = await start(wanted);
  opened.push(stream);
  return stream;
};
window.cameraReleased = () =>
  opened.length > 0 && opened.every((s) => s.getTracks().every((t) => t.readyState === "ended"));
"""


@pytest.mark.parametrize("error_name", ["NotSupportedError", "OperationError"])
def test_a_reader_that_stops_working_while_scanning_says_so_and_releases_the_camera(
    error_name: str,
    relay: RelayProcess,
    phones: Callable[..., Phone],
    playwright_driver: Playwright,
    tmp_path: Path,
) -> None:
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    alice.create_room("Unread", "Alice", expiry="hour")
    video = camera_video(shown_on(saved_qr_image(alice), (255, 255, 255)), tmp_path / "qr.y4m", 255)
    with phone_with_camera(playwright_driver, video) as bob:
        bob.context.add_init_script(FAILING_DETECTOR.replace("ERROR_NAME", repr(error_name)))
        bob.open(relay.url)
        bob.set_password("bob's long password")
        bob.by("nav-join").click()
        bob.by("scan-qr").click()
        expect(bob.page.get_by_role("alert")).to_contain_text("cannot read QR codes")
        expect(bob.by("scan-qr")).to_be_visible()
        assert bob.page.evaluate("window.cameraReleased()")


# The browser's own reader, which fails from the start (its service is not there).
BROKEN_NATIVE_DETECTOR = """
globalThis.BarcodeDetector = class {
  static async getSupportedFormats() { return ["qr_code"]; }
  async detect() { throw new DOMException("no reader service", "NotSupportedError"); }
};
"""


def test_a_browser_whose_own_reader_cannot_start_reads_with_the_built_in_one(
    relay: RelayProcess,
    phones: Callable[..., Phone],
    playwright_driver: Playwright,
    tmp_path: Path,
) -> None:
    """It said the browser cannot read QR codes, while the reader the app carries could."""
    alice = phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Fallback", "Alice", expiry="hour")
    video = camera_video(shown_on(saved_qr_image(alice), (255, 255, 255)), tmp_path / "qr.y4m", 255)
    with phone_with_camera(playwright_driver, video) as bob:
        bob.context.add_init_script(BROKEN_NATIVE_DETECTOR)
        bob.open(relay.url)
        bob.set_password("bob's long password")
        bob.by("nav-join").click()
        bob.by("scan-qr").click()
        expect(bob.by("join-key")).to_have_value(spaced(room.key), timeout=20_000)

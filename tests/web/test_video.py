"""tests/web/video.py: a QR code as a Y4M video carries the QR code, for a reader and for
Chromium's fake camera."""

from __future__ import annotations

import base64
import io
import secrets
from pathlib import Path

import pytest
import segno
import zxingcpp
from PIL import Image
from playwright.sync_api import Playwright, Route

from instantroom.protocol.minikey import make_minikey
from tests.web.conftest import launch
from tests.web.video import (
    NEUTRAL_CHROMA,
    frame_size,
    parse_header,
    read_frame,
    write_y4m_from_png,
    y4m_from_picture,
)


def qr_png(text: str, scale: int = 6, border: int = 0) -> bytes:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=scale, border=border)
    return out.getvalue()


def decoded(picture: Image.Image) -> list[str]:
    return [found.text for found in zxingcpp.read_barcodes(picture)]


def invite_link() -> str:
    return f"http://127.0.0.1:8080/#{make_minikey(secrets.randbelow)}"


def test_the_first_frame_decodes_to_the_qr_codes_text(tmp_path: Path) -> None:
    link = invite_link()
    # No quiet zone in the picture: the video's white margin must make one.
    path = write_y4m_from_png(qr_png(link, border=0), tmp_path / "qr.y4m", frames=3)
    data = path.read_bytes()

    tags, start = parse_header(data)
    assert (tags["W"], tags["H"], tags["C"]) == ("640", "480", "420jpeg")
    assert len(data) == start + 3 * frame_size(640, 480)
    first, u_plane, v_plane = read_frame(data, 0)
    assert first.size == (640, 480)
    assert decoded(first) == [link]
    # Grey: no colour, and the border is white (the quiet zone).
    assert set(u_plane) == set(v_plane) == {NEUTRAL_CHROMA}
    assert first.getpixel((0, 0)) == first.getpixel((639, 479)) == 255
    # Every frame is the same picture.
    assert read_frame(data, 2) == read_frame(data, 0)
    with pytest.raises(ValueError, match="no frame 3"):
        read_frame(data, 3)


def test_a_screenshot_sized_picture_fits_and_stays_square() -> None:
    link = invite_link()
    # Like a screenshot of the QR image at device scale 2: larger than the frame.
    big = Image.open(io.BytesIO(qr_png(link, scale=20, border=4)))
    assert big.width > 480
    data = y4m_from_picture(big, width=320, height=240, margin=16, frames=1)
    frame, _, _ = read_frame(data)
    assert frame.size == (320, 240)
    assert decoded(frame) == [link]
    dark = frame.point(lambda v: 255 if v < 128 else 0).getbbox()
    assert dark is not None
    left, top, right, bottom = dark
    assert abs((right - left) - (bottom - top)) <= 2  # modules stay square
    assert min(left, top) >= 16  # the margin
    assert right <= 320 - 16
    assert bottom <= 240 - 16


def test_odd_sizes_are_refused() -> None:
    picture = Image.new("L", (10, 10), 0)
    with pytest.raises(ValueError, match="even"):
        y4m_from_picture(picture, width=641)
    with pytest.raises(ValueError, match="frame"):
        y4m_from_picture(picture, frames=0)


GRAB_FRAME = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  try {
    const video = document.createElement("video");
    video.muted = true;
    video.srcObject = stream;
    await video.play();
    await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    return canvas.toDataURL("image/png");
  } finally {
    stream.getTracks().forEach((track) => track.stop());
  }
}
"""


def test_chromiums_fake_camera_shows_the_qr_code(
    playwright_driver: Playwright, tmp_path: Path
) -> None:
    """The video as Chromium's camera: a frame grabbed in a page decodes to the link.

    This checks the harness (the file and the flags) apart from the web client, so a
    failing scan in the web client's test is the web client's."""
    link = invite_link()
    video = write_y4m_from_png(qr_png(link, scale=8), tmp_path / "camera.y4m")
    camera = launch(
        playwright_driver,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    try:
        context = camera.new_context(permissions=["camera"])
        page = context.new_page()

        # A page of a loopback origin (a secure context, where the camera is allowed),
        # answered by the test itself: nothing listens there.
        def blank(route: Route) -> None:
            route.fulfill(body="<!doctype html><title>camera</title>", content_type="text/html")

        page.route("http://127.0.0.1:9/**", blank)
        page.goto("http://127.0.0.1:9/camera")
        data_url = page.evaluate(GRAB_FRAME)
        assert isinstance(data_url, str)
        assert data_url.startswith("data:image/png;base64,")
        frame = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
        assert frame.size == (640, 480)
        assert decoded(frame) == [link]
    finally:
        camera.close()

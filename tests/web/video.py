"""A still picture as a Y4M video, for Chromium's fake camera.

``--use-file-for-fake-video-capture=FILE`` makes Chromium's camera play FILE, over and
over, when it ends in ``.y4m``: YUV4MPEG2 with 4:2:0 chroma, each frame a ``FRAME`` line
followed by the Y plane (full size) and the U and V planes (half size each way). A QR
code becomes a grey picture (U and V all 128) on a white background with a margin, so
the quiet zone a reader needs is there whatever the picture itself has.

``read_frame`` reads a frame's Y plane back as a picture, for the tests of this module.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

MAGIC = b"YUV4MPEG2"
FRAME = b"FRAME\n"
NEUTRAL_CHROMA = 128  # U and V of a grey pixel


def y4m_header(width: int, height: int, fps: int) -> bytes:
    # C420jpeg: 4:2:0 with chroma sited between the luma samples (the usual JPEG siting).
    return f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii")


def frame_picture(
    picture: Image.Image, width: int = 640, height: int = 480, margin: int = 40
) -> Image.Image:
    """``picture`` in black and white, as large as fits in ``width`` x ``height`` less a
    white ``margin`` on every side, centred on white."""
    if width % 2 or height % 2:
        raise ValueError("4:2:0 needs an even width and height")
    room = min(width, height) - 2 * margin
    if room <= 0:
        raise ValueError("the margin leaves no room for the picture")
    grey = picture.convert("L")
    scale = room / max(grey.size)
    size = (max(1, round(grey.size[0] * scale)), max(1, round(grey.size[1] * scale)))
    # BOX averages each source area; the threshold then makes every module crisp again.
    resized = grey.resize(size, Image.Resampling.BOX).point(lambda v: 255 if v >= 128 else 0)
    canvas = Image.new("L", (width, height), 255)
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def y4m_from_picture(
    picture: Image.Image,
    *,
    width: int = 640,
    height: int = 480,
    margin: int = 40,
    frames: int = 5,
    fps: int = 10,
) -> bytes:
    """A Y4M video of ``frames`` identical frames showing ``picture`` (see ``frame_picture``)."""
    if frames < 1:
        raise ValueError("a video needs a frame")
    luma = frame_picture(picture, width, height, margin).tobytes()
    chroma = bytes([NEUTRAL_CHROMA]) * ((width // 2) * (height // 2))
    frame = FRAME + luma + chroma + chroma
    return y4m_header(width, height, fps) + frame * frames


def write_y4m_from_png(png: bytes, path: Path, **options: int) -> Path:
    """Write the Y4M video of the PNG picture ``png`` to ``path``; return ``path``."""
    with Image.open(io.BytesIO(png)) as picture:
        path.write_bytes(y4m_from_picture(picture, **options))
    return path


def parse_header(data: bytes) -> tuple[dict[str, str], int]:
    """The header's tags (first letter to the rest) and where the first frame starts."""
    end = data.index(b"\n")
    magic, *tags = data[:end].decode("ascii").split(" ")
    if magic.encode("ascii") != MAGIC:
        raise ValueError("not a YUV4MPEG2 file")
    return {tag[0]: tag[1:] for tag in tags}, end + 1


def frame_size(width: int, height: int) -> int:
    return len(FRAME) + width * height + 2 * ((width // 2) * (height // 2))


def read_frame(data: bytes, index: int = 0) -> tuple[Image.Image, bytes, bytes]:
    """Frame ``index`` of a 4:2:0 Y4M video: its Y plane as a picture, and its U and V planes."""
    tags, start = parse_header(data)
    width, height = int(tags["W"]), int(tags["H"])
    if not tags.get("C", "420").startswith("420"):
        raise ValueError(f"not 4:2:0: C{tags['C']}")
    offset = start + index * frame_size(width, height)
    if data[offset : offset + len(FRAME)] != FRAME:
        raise ValueError(f"no frame {index} at byte {offset}")
    offset += len(FRAME)
    luma = data[offset : offset + width * height]
    quarter = (width // 2) * (height // 2)
    u_plane = data[offset + width * height : offset + width * height + quarter]
    v_plane = data[offset + width * height + quarter : offset + width * height + 2 * quarter]
    if len(v_plane) != quarter:
        raise ValueError(f"frame {index} is cut short")
    return Image.frombytes("L", (width, height), luma), u_plane, v_plane

"""The sdist and the wheel carry the built web client (src/instantroom/relay/static, which
git ignores), and so does a wheel built from the sdist, as pip builds one when it installs
from an sdist. Built with hatchling's own builders, in-process: no network, no npm."""

from __future__ import annotations

import tarfile
import zipfile
from importlib import resources
from pathlib import Path

from hatchling.builders.sdist import SdistBuilder
from hatchling.builders.wheel import WheelBuilder

ROOT = Path(__file__).resolve().parents[2]


def built_static() -> dict[str, bytes]:
    """The built web client, path below static/ -> bytes."""
    root = resources.files("instantroom.relay") / "static"
    files: dict[str, bytes] = {}

    def walk(node: object, prefix: str) -> None:
        for child in node.iterdir():  # type: ignore[attr-defined]
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            else:
                files[name] = child.read_bytes()

    walk(root, "")
    return files


def wheel_static(wheel: Path) -> dict[str, bytes]:
    prefix = "instantroom/relay/static/"
    with zipfile.ZipFile(wheel) as archive:
        return {
            n.removeprefix(prefix): archive.read(n)
            for n in archive.namelist()
            if n.startswith(prefix)
        }


def test_the_sdist_and_both_wheels_carry_the_built_web_client(tmp_path: Path) -> None:
    static = built_static()
    assert b'<script type="module"' in static["index.html"], "the web client is not built"
    assert any(name.endswith(".wasm") for name in static)

    (sdist,) = SdistBuilder(str(ROOT)).build(
        directory=str(tmp_path / "sdist"), versions=["standard"]
    )
    (wheel,) = WheelBuilder(str(ROOT)).build(
        directory=str(tmp_path / "wheel"), versions=["standard"]
    )
    assert wheel_static(Path(wheel)) == static

    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert (unpacked / "src/instantroom/relay/static/index.html").read_bytes() == static[
        "index.html"
    ]
    (from_sdist,) = WheelBuilder(str(unpacked)).build(
        directory=str(tmp_path / "from-sdist"), versions=["standard"]
    )
    assert wheel_static(Path(from_sdist)) == static

"""Build the single-file ``instantroom`` executable with PyInstaller.

    python scripts/build_executable.py [--dist DIR] [--work DIR]

writes DIR/instantroom (default: dist/instantroom; PyInstaller's working files go to
build/). It carries its own Python interpreter, the package, the web client (the relay's
static files) and the TUI's stylesheet, so it runs where InstantRoom is not installed.
The interpreter running this script must have ``.[build]`` installed; the executable is
for the platform it is built on (build it on Linux x86-64 for Linux x86-64).

``scripts/build-executable`` does this in the project's .venv; the test in
tests/executable/ runs this script too, so both build with the same options.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "instantroom"

# PyInstaller runs a script, not a module: ``instantroom/__main__.py`` uses a relative
# import, so the executable starts from this one. freeze_support() lets the spawned
# processes of ``serve --workers N`` run as workers instead of as the command again.
ENTRY = '''\
"""The entry point of the instantroom executable."""

import multiprocessing
import sys

from instantroom.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
'''

# PyInstaller's options, apart from the paths. The --collect-* and --copy-metadata ones
# bring what its import analysis misses.
OPTIONS = [
    "--onefile",
    "--name",
    NAME,
    "--noconfirm",
    "--log-level",
    "WARN",
    # The web client (instantroom/relay/static) and the TUI's app.tcss, read with
    # importlib.resources; and every module, as some are imported inside functions.
    "--collect-data",
    NAME,
    "--collect-submodules",
    NAME,
    # uvloop imports its own helpers (uvloop._noop, ...) from compiled code.
    "--collect-submodules",
    "uvloop",
    # The TUI: textual's stylesheets and its version, which it reads from its metadata.
    "--collect-data",
    "textual",
    "--copy-metadata",
    "textual",
    # Pygments' image formatter would bring Pillow along where it is installed (the test
    # extras): nothing here draws images.
    "--exclude-module",
    "PIL",
]


def pyinstaller_command(dist: Path, work: Path, python: str = sys.executable) -> list[str]:
    """The PyInstaller command line that builds ``dist/instantroom`` using ``work``."""
    entry = work / f"{NAME}_entry.py"
    return [
        python,
        "-m",
        "PyInstaller",
        *OPTIONS,
        "--distpath",
        str(dist),
        "--workpath",
        str(work),
        "--specpath",
        str(work),
        str(entry),
    ]


def build(dist: Path, work: Path, python: str = sys.executable) -> Path:
    """Build the executable into ``dist``; return its path."""
    dist = dist.resolve()
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{NAME}_entry.py").write_text(ENTRY, encoding="utf-8")
    subprocess.run(pyinstaller_command(dist, work, python), check=True, cwd=work)
    executable = dist / NAME
    if not executable.is_file():
        raise RuntimeError(f"PyInstaller made no {executable}")
    return executable


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dist", type=Path, default=ROOT / "dist", help="where the executable goes [dist/]"
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build", help="PyInstaller's working files [build/]"
    )
    args = parser.parse_args(argv)
    print(build(args.dist, args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())

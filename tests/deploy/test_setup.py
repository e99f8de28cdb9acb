"""The setup scripts' own decisions, checked without installing anything."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("version", "fits"),
    [
        ("v18.19.1", False),  # Debian 12's
        ("v20.18.3", False),
        ("v20.19.0", True),
        ("v21.7.3", False),
        ("v22.11.0", False),
        ("v22.12.0", True),
        ("v24.1.0", True),
        ("not a version", False),
    ],
)
def test_node_fits_takes_only_a_node_that_vite_runs_on(
    tmp_path: Path, version: str, fits: bool
) -> None:
    """scripts/setup installs a Node.js 22 into .venv when this says no."""
    node = tmp_path / "node"
    node.write_text(f"#!/bin/sh\necho '{version}'\n")
    node.chmod(node.stat().st_mode | stat.S_IXUSR)
    env = os.environ | {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(ROOT / "scripts" / "node-fits")], env=env, capture_output=True, timeout=30
    )
    assert (done.returncode == 0) is fits, done


def test_node_fits_says_no_without_a_node(tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.write_text("#!/bin/sh\nexit 127\n")
    node.chmod(node.stat().st_mode | stat.S_IXUSR)
    env = os.environ | {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(ROOT / "scripts" / "node-fits")], env=env, timeout=30)
    assert done.returncode != 0

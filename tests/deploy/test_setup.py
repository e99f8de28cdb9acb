"""The setup scripts' own decisions, checked without installing anything."""

from __future__ import annotations

import os
import shutil
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


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# A python3 that only makes virtual environments, whose python logs each command it is given
# and succeeds: scripts/setup runs as it would, with nothing installed or downloaded.
FAKE_PYTHON = """#!/bin/sh
[ "$1 $2" = "-m venv" ] || exit 3
mkdir -p "$3/bin"
printf '#!/bin/sh\\necho "python $*" >> "$SETUP_LOG"\\n' > "$3/bin/python"
chmod +x "$3/bin/python"
echo "venv $3" >> "$SETUP_LOG"
"""


def fake_checkout(tmp_path: Path, *, apt_works: bool) -> tuple[Path, dict[str, str]]:
    """A checkout holding the real scripts/setup; the scripts it calls are stand-ins."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup", checkout / "scripts" / "setup")
    for name, status in (("system-packages", 0 if apt_works else 1), ("build-web", 0)):
        executable(
            checkout / "scripts" / name,
            f'#!/bin/sh\necho "{name} $*" >> "$SETUP_LOG"\nexit {status}\n',
        )
    # node-fits: a Node.js on PATH fits once one is in .venv (as the `node` extra puts it).
    executable(checkout / "scripts" / "node-fits", '#!/bin/sh\n[ -n "$NODE_FITS" ]\n')
    executable(tmp_path / "python3", FAKE_PYTHON)
    env = os.environ | {
        "PYTHON": str(tmp_path / "python3"),
        "SETUP_LOG": str(tmp_path / "log"),
        "NODE_FITS": "yes",
    }
    return checkout, env


def test_setup_mends_a_venv_left_without_pip(tmp_path: Path) -> None:
    """Without Debian's python3-venv, `python3 -m venv .venv` fails after making
    .venv/bin/python: once it is installed, scripts/setup makes the venv again."""
    checkout, env = fake_checkout(tmp_path, apt_works=True)
    (checkout / ".venv" / "bin").mkdir(parents=True)
    executable(
        checkout / ".venv" / "bin" / "python",
        "#!/bin/sh\necho 'No module named pip' >&2\nexit 1\n",
    )
    done = subprocess.run(
        [str(checkout / "scripts" / "setup")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "log").read_text().splitlines()
    assert log[0] == "venv .venv"
    assert any("-m pip install" in line and line.endswith("--editable .") for line in log)
    assert log[-1] == "build-web "


def test_setup_takes_node_from_the_package_index_without_apt(tmp_path: Path) -> None:
    """Not root and no sudo: scripts/system-packages cannot install Node.js and npm, so
    scripts/setup takes them from the `node` extra instead of stopping there."""
    checkout, env = fake_checkout(tmp_path, apt_works=False)
    done = subprocess.run(
        [str(checkout / "scripts" / "setup"), "test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "log").read_text().splitlines()
    assert any(line.endswith("--editable .[node]") for line in log), log
    assert log[-1] == "build-web "


def test_system_packages_says_what_to_install_without_sudo(tmp_path: Path) -> None:
    """Not root, no sudo on PATH, Node.js missing: a plain message, and apt never run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    executable(bin_dir / "id", "#!/bin/sh\necho 1000\n")
    executable(bin_dir / "apt-get", f"#!/bin/sh\necho apt-get >> {tmp_path / 'apt'}\n")
    done = subprocess.run(
        [str(ROOT / "scripts" / "system-packages"), "node"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "no sudo" in done.stderr, done.stderr
    assert "apt-get install nodejs npm" in done.stderr, done.stderr
    assert "command not found" not in done.stderr, done.stderr
    assert not (tmp_path / "apt").exists()

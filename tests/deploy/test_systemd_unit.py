"""packaging/instantroom.service: a hardened unit that systemd itself accepts.

The unit is read line by line (systemd units repeat keys, which configparser cannot
hold) and checked for its hardening; where ``systemd-analyze`` exists, it verifies the
unit (every key known, every value parsed) and rates its exposure offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "instantroom.service"
EXEC_START = "/usr/local/bin/instantroom serve"
# systemd-analyze security's overall exposure, on its 0-100 scale (shown divided by 10).
MAX_EXPOSURE = 20


def read_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value given, in order (an empty value resets a list)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: keep each setting on one line"
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        assert equals, f"line {number} is not KEY=VALUE: {raw!r}"
        assert section, f"line {number} is outside a section: {raw!r}"
        sections[section][key.strip()].append(value.strip())
    return sections


def test_unit_is_hardened() -> None:
    unit = read_unit(UNIT.read_text())
    service = unit["Service"]

    def one(key: str) -> str:
        values = service.get(key, [])
        assert len(values) == 1, f"{key}= must be set once, found {values}"
        return values[0]

    yes = [
        "DynamicUser", "NoNewPrivileges", "PrivateTmp", "PrivateDevices",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "ProtectControlGroups", "ProtectClock", "ProtectHostname", "LockPersonality",
        "RestrictRealtime", "RestrictNamespaces", "RestrictSUIDSGID",
        "MemoryDenyWriteExecute", "RemoveIPC",
    ]  # fmt: skip
    for key in yes:
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("UMask") == "0077"
    # Capabilities dropped: both sets given, and empty.
    assert one("CapabilityBoundingSet") == ""
    assert one("AmbientCapabilities") == ""
    assert sorted(one("RestrictAddressFamilies").split()) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["SystemCallFilter"][0] == "@system-service"
    # No writable path, no state kept.
    for key in (
        "ReadWritePaths", "StateDirectory", "CacheDirectory", "LogsDirectory",
        "RuntimeDirectory", "ConfigurationDirectory", "User", "Group",
    ):  # fmt: skip
        assert key not in service, f"{key}= gives the relay something to keep"
    assert one("ExecStart") == EXEC_START
    assert one("KillSignal") == "SIGTERM"
    assert one("Restart") == "on-failure"
    environment = dict(v.split("=", 1) for v in service["Environment"])
    assert environment["INSTANTROOM_HOST"] == "127.0.0.1"
    assert int(environment["INSTANTROOM_PORT"]) > 1023  # no capability needed to bind it
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_read_unit_sees_a_missing_key() -> None:
    """The checks above can fail: a unit without its hardening does not pass them."""
    text = UNIT.read_text().replace("ProtectSystem=strict\n", "ProtectSystem=full\n")
    assert read_unit(text)["Service"]["ProtectSystem"] == ["full"]
    stripped = "\n".join(
        line for line in UNIT.read_text().splitlines() if not line.startswith("Capability")
    )
    assert "CapabilityBoundingSet" not in read_unit(stripped)["Service"]


ANALYZE = shutil.which("systemd-analyze")


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this environment's
    # instantroom, the rest of the unit as shipped.
    program = Path(sys.executable).parent / "instantroom"
    assert program.exists(), program
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC_START}\n") == 1
    unit = tmp_path / "instantroom.service"
    unit.write_text(text.replace(f"ExecStart={EXEC_START}", f"ExecStart={program} serve"))

    verified = _analyze("verify", str(unit))
    # verify exits 0 on unknown keys and bad values, only saying so: any output fails.
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout + verified.stderr == ""

    security = _analyze(
        "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", "--no-pager", str(unit)
    )
    assert security.returncode == 0, security.stdout + security.stderr

    # And the same checks do fail on a unit that is wrong or weak.
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSytem=strict"))
    assert "Unknown key" in _analyze("verify", str(broken)).stderr
    weak = tmp_path / "weak.service"
    weak.write_text(f"[Service]\nExecStart={program} serve\n")
    assert (
        _analyze("security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", str(weak)).returncode
        != 0
    )

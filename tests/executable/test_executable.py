"""The single-file executable: built by PyInstaller, run where InstantRoom is not installed.

The build (scripts/build_executable.py, as scripts/build-executable runs it) happens once
per test session and takes about half a minute. The executable then runs with an empty
HOME, an empty working directory, and an environment that reaches neither this checkout
nor the virtualenv: the relay, and the clients that chat through it, are all the file.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest

from instantroom.testing import LOOPBACK, http_request, run

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build_executable.py"
STARTED = re.compile(r"event=relay\.started\b.*\bport=(\d+)")
ASSET = re.compile(r'(?:src|href)="(/[^"#?]+)"')
ROOMS_OPEN = re.compile(r"^instantroom_rooms_open (\S+)$", re.MULTILINE)
# Each run of a one-file executable unpacks itself first: allow for a slow disk.
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``instantroom`` as one file, built for this test module."""
    where = tmp_path_factory.mktemp("executable")
    built = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--dist", str(where / "dist"), "--work", str(where)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    path = where / "dist" / "instantroom"
    assert path.is_file()
    return path


@dataclass
class Place:
    """Where the executable runs: an empty HOME and cwd, and only the system's PATH."""

    home: Path
    cwd: Path

    @property
    def env(self) -> dict[str, str]:
        # Nothing else: no PYTHONPATH, VIRTUAL_ENV, PYTHONHOME or INSTANTROOM_* variables.
        return {"HOME": str(self.home), "PATH": "/usr/bin:/bin"}


@pytest.fixture
def place(tmp_path: Path) -> Place:
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    return Place(tmp_path / "home", tmp_path / "cwd")


@dataclass
class Relay:
    process: subprocess.Popen[bytes]
    port: int = 0
    output: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace")
            self.output.append(line)
            if not self.port and (match := STARTED.search(line)):
                self.port = int(match.group(1))
                self.ready.set()
        self.ready.set()  # the end of its output: it will never start


@contextlib.contextmanager
def relay_from(executable: Path, place: Place) -> Iterator[Relay]:
    """Run ``EXE serve`` on a free loopback port; on exit, SIGTERM and wait."""
    process = subprocess.Popen(
        [str(executable), "serve", "--host", LOOPBACK, "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=place.env,
        cwd=place.cwd,
    )
    relay = Relay(process)
    reader = threading.Thread(target=relay.read, name="executable-relay-output", daemon=True)
    reader.start()
    try:
        relay.ready.wait(TIMEOUT)
        assert relay.port, f"the relay did not start:\n{''.join(relay.output)}"
        yield relay
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            reader.join(5.0)
            if process.stdout is not None:
                process.stdout.close()


def command(executable: Path, place: Place, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``EXE ARGS...`` to its end."""
    return subprocess.run(
        [str(executable), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=place.env,
        cwd=place.cwd,
        timeout=TIMEOUT,
        check=False,
    )


def rooms_open(port: int) -> float:
    response = run(http_request(port, "/metrics"))
    assert response.status == 200
    match = ROOMS_OPEN.search(response.body.decode())
    assert match, response.body.decode()
    return float(match.group(1))


def read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The next line ``process`` writes to stdout, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no line in time"
    return process.stdout.readline()


def test_the_executable_serves_the_web_client_and_relays(executable: Path, place: Place) -> None:
    version = command(executable, place, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("instantroom ")
    made = command(executable, place, "key", "new")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()

    with relay_from(executable, place) as relay:
        page = run(http_request(relay.port, "/"))
        assert page.status == 200
        assert page.headers["content-type"].startswith("text/html")
        static = resources.files("instantroom.relay") / "static" / "index.html"
        assert page.body == static.read_bytes()
        # The built web client, not the placeholder: its scripts, styles, manifest, service
        # worker and the QR scanner's WebAssembly all come out of the one file.
        assets = ASSET.findall(page.body.decode())
        assert any(a.endswith(".js") for a in assets), "no web client script in the page"
        assets += ["/manifest.webmanifest", "/sw.js", "/icon-192.png"]
        for asset in assets:
            served = run(http_request(relay.port, asset))
            assert served.status == 200, asset
            assert (
                served.body
                == (
                    resources.files("instantroom.relay") / "static" / asset.lstrip("/")
                ).read_bytes()
            )
        wasm = [
            f
            for f in (resources.files("instantroom.relay") / "static" / "assets").iterdir()
            if f.name.endswith(".wasm")
        ]
        assert wasm, "the QR scanner's WebAssembly is missing from the build"
        served = run(http_request(relay.port, f"/assets/{wasm[0].name}"))
        assert served.headers["content-type"] == "application/wasm"

        listener = subprocess.Popen(
            [str(executable), "listen", "--server", relay.url, "--key", key, "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=place.env,
            cwd=place.cwd,
        )
        try:
            # The listener is in when the relay has the room open.
            deadline = time.monotonic() + TIMEOUT
            while rooms_open(relay.port) < 1:
                assert listener.poll() is None, listener.communicate()[1].decode()
                assert time.monotonic() < deadline, "the listener never joined"
                time.sleep(0.1)

            sent = command(
                executable,
                place,
                "send",
                "--server",
                relay.url,
                "--key",
                key,
                "--name",
                "a",
                "hello from a ✓",
            )
            assert (sent.returncode, sent.stdout) == (0, ""), sent.stderr

            line = json.loads(read_line(listener, TIMEOUT))
            assert (line["name"], line["text"]) == ("a", "hello from a ✓")
        finally:
            listener.terminate()
            try:
                listener.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                listener.kill()
                listener.wait()
            assert listener.stdout is not None
            assert listener.stderr is not None
            listener.stdout.close()
            listener.stderr.close()

    assert relay.process.returncode == 0, "".join(relay.output)
    log = "".join(relay.output)
    assert "event=relay.stopped" in log, log
    assert "Traceback" not in log, log

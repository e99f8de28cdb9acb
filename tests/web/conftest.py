"""The web client in a real browser: Debian's Chromium, headless, driven by Playwright.

One browser for all the tests of this folder (``browser``); each user is a phone-sized page in a
browser context of its own (``phones``), so each has its own IndexedDB, as two phones
would. Pages open a real relay process on a loopback port (``relay`` from
tests/conftest.py, or ``running_relay``), which serves the built web client at ``/``.

The tests speak to the web client only through its stable ``data-testid`` values, roles
and labels (``Phone`` below uses them), never through its internals, except for reading
the IndexedDB record that the password locks.

Every page is watched: an uncaught exception in the page, a Content-Security-Policy
violation, or a request or WebSocket to anywhere but this machine's loopback fails the
test that made it.

Needs ``chromium`` (scripts/system-packages installs it) and the built web client
(scripts/setup builds it: scripts/build-web); without either the tests fail, never skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from queue import Empty, Queue
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    Request,
    WebSocket,
    expect,
    sync_playwright,
)

from instantroom.protocol.minikey import MINIKEY_LENGTH, format_minikey, parse_minikey

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",  # as root, and in containers, Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
# Unlocking derives a key with PBKDF2 (600,000 iterations): up to a second or more on a
# slow machine, so every wait is generous. A wait that expires is a failure, never a hang.
TIMEOUT_MS = 10_000
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
FINGERPRINT = re.compile(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}")

expect.set_options(timeout=TIMEOUT_MS)


# The browser


def web_client_problem() -> str | None:
    """Why the relay would not serve the web client (None: it would)."""
    index = resources.files("instantroom.relay") / "static" / "index.html"
    text = index.read_text(encoding="utf-8") if index.is_file() else ""
    if re.search(r"<script\b[^>]*\btype=[\"']?module", text):
        return None
    return "the relay serves no built web client (no <script type=module> in static/index.html)"


@pytest.fixture(scope="session")
def web_client() -> None:
    """The built web client is there for the relay to serve."""
    problem = web_client_problem()
    if problem is not None:
        pytest.fail(f"{problem}; build it: scripts/build-web")


def need_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("chromium is not installed: scripts/system-packages browser")


@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    """Playwright's driver, for the tests of this folder only: while it runs, the thread
    has a running asyncio loop (Playwright's own), so no other test could call
    asyncio.run; package scope ends it when the tests leave this folder."""
    need_chromium()
    with sync_playwright() as driver:
        yield driver


def launch(driver: Playwright, *extra_args: str) -> Browser:
    """Debian's Chromium, headless, with only loopback to talk to."""
    return driver.chromium.launch(
        executable_path=CHROMIUM, args=[*LAUNCH_ARGS, *extra_args], headless=True
    )


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """One browser for every test of this folder (each user gets a context of its own)."""
    shared = launch(playwright_driver)
    yield shared
    shared.close()


# What a page did that it must not


@dataclass
class Watch:
    """What the pages of one context did wrong: uncaught exceptions, CSP violations, and
    traffic to anywhere but loopback."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # every console message, for reports

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._request)
        context.on("page", self._page)
        for page in context.pages:
            self._page(page)

    def _page(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"uncaught in page: {error}"))
        page.on("console", self._console)
        page.on("websocket", self._websocket)

    def _console(self, message: ConsoleMessage) -> None:
        line = f"console.{message.type}: {message.text}"
        self.console.append(line)
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.errors.append(f"CSP violation: {message.text}")

    def _request(self, request: Request) -> None:
        if not is_local(request.url):
            self.errors.append(f"request off this machine: {request.url}")

    def _websocket(self, ws: WebSocket) -> None:
        if not is_local(ws.url):
            self.errors.append(f"WebSocket off this machine: {ws.url}")


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome-extension", "chrome"):
        return True
    return parts.hostname in LOOPBACK_HOSTS


# A user: one phone-sized page in a context of its own


@dataclass(frozen=True)
class SharedRoom:
    """What the Share screen shows."""

    key: str  # 30 characters, no spaces
    grouped: str  # as shown, in groups
    invite: str  # the invite link


@dataclass(frozen=True)
class Message:
    sender: str
    fingerprint: str
    text: str
    key_changed: bool
    mixed_scripts: bool  # the flag of a name that mixes look-alike scripts shows


class Phone:
    """One user of the web client, through its ``data-testid`` contract."""

    def __init__(self, context: BrowserContext, page: Page, watch: Watch) -> None:
        self.context = context
        self.page = page
        self.watch = watch

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    # Locking

    def open(self, url: str) -> None:
        self.page.goto(url)

    def set_password(self, password: str, then: str = "nav-new") -> None:
        """First visit: choose the password; then the screen with ``then`` shows (the
        rooms list; the Join screen after an invite link)."""
        expect(self.by("password-confirm")).to_be_visible()
        self.by("password").fill(password)
        self.by("password-confirm").fill(password)
        self.by("unlock").click()
        expect(self.by(then)).to_be_visible()

    def unlock(self, password: str, then: str = "nav-new") -> None:
        """A later visit: the password chosen before."""
        expect(self.by("password")).to_be_visible()
        expect(self.by("password-confirm")).to_have_count(0)
        self.by("password").fill(password)
        self.by("unlock").click()
        expect(self.by(then)).to_be_visible()

    def answer(self, yes: bool) -> str:
        """Answer the question asked in the page before a loss (leave, delete all, wipe):
        its action, or Cancel. Returns the question."""
        asked = self.by("ask")
        expect(asked).to_be_visible()
        # Modal: the rest of the page takes no input meanwhile.
        assert asked.evaluate("dialog => dialog.matches(':modal')")
        question = asked.locator("p").inner_text().strip()
        self.by("ask-yes" if yes else "ask-no").click()
        expect(asked).to_have_count(0)
        return question

    # Rooms

    def create_room(self, label: str, nickname: str, expiry: str = "day") -> SharedRoom:
        """New room → its Share screen; what the Share screen shows."""
        self.by("nav-new").click()
        self.by("room-label").fill(label)
        self.by("nickname").fill(nickname)
        self.by("expiry").select_option(expiry)
        self.by("create-room").click()
        return self.shared_room()

    def shared_room(self) -> SharedRoom:
        """Read the Share screen (which must be showing, or about to)."""
        expect(self.by("room-key")).to_be_visible()
        grouped = self.by("room-key").inner_text().strip()
        key = "".join(grouped.split())
        assert len(key) == MINIKEY_LENGTH, grouped
        assert parse_minikey(key) == key
        assert grouped == format_minikey(key)
        expect(self.by("invite-link")).to_be_visible()
        invite = self.by("invite-link").inner_text().strip()
        return SharedRoom(key, grouped, invite)

    def open_room(self) -> None:
        """From the Share screen into the room."""
        self.by("open-room").click()
        self.expect_online()

    def join(self, key_text: str, nickname: str) -> None:
        """Join screen: type the key (any form) and a nickname, join; the room is online."""
        self.by("nav-join").click()
        self.by("join-key").fill(key_text)
        self.by("nickname").fill(nickname)
        self.by("join").click()
        self.expect_online()

    def expect_online(self) -> None:
        expect(self.by("room-title")).to_be_visible()
        expect(self.by("connection-state")).to_have_text(re.compile(r"^\s*online\s*$", re.I))

    def expect_members(self, count: int) -> None:
        expect(self.by("members")).to_contain_text(f"{count} online")

    # Messages

    def send(self, text: str, *, enter: bool = False) -> None:
        self.by("message-input").fill(text)
        if enter:
            self.by("message-input").press("Enter")
        else:
            self.by("send").click()
        expect(self.by("message-input")).to_have_value("")

    def message_locator(self, text: str) -> Locator:
        exact = re.compile(rf"^\s*{re.escape(text)}\s*$")
        return (
            self.by("messages")
            .get_by_test_id("message")
            .filter(has=self.page.get_by_test_id("message-text").filter(has_text=exact))
        )

    def expect_message(self, text: str) -> Message:
        """The one message whose text is ``text``, once it shows."""
        found = self.message_locator(text)
        expect(found).to_have_count(1)
        return Message(
            sender=found.get_by_test_id("message-sender").inner_text().strip(),
            fingerprint=found.get_by_test_id("message-fingerprint").inner_text().strip(),
            text=found.get_by_test_id("message-text").inner_text().strip(),
            key_changed=found.get_by_test_id("key-change-warning").count() > 0,
            mixed_scripts=found.get_by_test_id("mixed-scripts-flag").count() > 0,
        )


@contextlib.contextmanager
def offline(phone: Phone) -> Iterator[None]:
    """``phone`` with no network for the block (the relay still runs)."""
    phone.context.set_offline(True)
    try:
        yield
    finally:
        phone.context.set_offline(False)


def new_phone(browser: Browser, **options: Any) -> Phone:
    """A user: a phone-sized page in a new context of ``browser`` (``options`` override)."""
    context = browser.new_context(**{**PHONE, **options})
    context.set_default_timeout(TIMEOUT_MS)
    watch = Watch()
    watch.attach(context)
    return Phone(context, context.new_page(), watch)


def close_phones(made: list[Phone]) -> None:
    """Close each user's context; fail if any page did what it must not (see ``Watch``)."""
    errors = [error for phone in made for error in phone.watch.errors]
    for phone in made:
        phone.context.close()
    assert errors == [], "\n".join(errors)


@contextlib.contextmanager
def phone_with_camera(driver: Playwright, video: os.PathLike[str] | str) -> Iterator[Phone]:
    """A user whose camera, allowed without asking, plays ``video`` (a Y4M file) through
    Chromium's fake camera: a browser of its own, closed with the phone."""
    camera = launch(
        driver,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={os.fspath(video)}",
    )
    made: list[Phone] = []
    try:
        phone = new_phone(camera, permissions=["camera"])
        made.append(phone)
        yield phone
    finally:
        try:
            close_phones(made)
        finally:
            camera.close()


@pytest.fixture
def phones(browser: Browser, web_client: None) -> Iterator[Callable[..., Phone]]:
    """``phones()`` makes a user in the shared browser; context options override the phone's."""
    made: list[Phone] = []

    def make(**options: Any) -> Phone:
        phone = new_phone(browser, **options)
        made.append(phone)
        return phone

    yield make
    close_phones(made)


# IndexedDB: the record the password locks

READ_VAULT = """
async () => {
  const canonical = (value) => {
    if (value instanceof ArrayBuffer) value = new Uint8Array(value);
    if (ArrayBuffer.isView(value)) {
      const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      return {bytes: Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")};
    }
    if (Array.isArray(value)) return value.map(canonical);
    if (value && typeof value === "object") {
      if (value instanceof Date) return {date: value.toISOString()};
      return Object.fromEntries(
        Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
    }
    return value === undefined ? {undefined: true} : value;
  };
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open("instantroom");
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  try {
    const record = await new Promise((resolve, reject) => {
      const request = db.transaction("vault", "readonly").objectStore("vault").get("main");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    return JSON.stringify(canonical(record));
  } finally {
    db.close();
  }
}
"""


COUNT_JOURNAL = """
async () => {
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open("instantroom");
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  try {
    return await new Promise((resolve, reject) => {
      const request = db.transaction("vault", "readonly").objectStore("vault").getAllKeys();
      request.onsuccess = () =>
        resolve(request.result.filter((k) => Array.isArray(k) && k[0] === "journal").length);
      request.onerror = () => reject(request.error);
    });
  } finally {
    db.close();
  }
}
"""


def journal_entries(page: Page) -> int:
    """How many entries the key store's journal holds (web/src/store/db.js)."""
    count = page.evaluate(COUNT_JOURNAL)
    assert isinstance(count, int)
    return count


def read_vault(page: Page) -> str:
    """The IndexedDB record "main" of the store "vault", as canonical JSON (bytes in hex)."""
    text = page.evaluate(READ_VAULT)
    assert isinstance(text, str)
    return text


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def open_vault(page: Page, password: str) -> Any:
    """The key store's contents as stored, decrypted here as web/src/store/vault.js says."""
    record = json.loads(read_vault(page))
    kdf = record["kdf"]
    key = hashlib.pbkdf2_hmac(
        "sha256",
        unicodedata.normalize("NFC", password).encode(),
        _unb64url(kdf["salt"]),
        kdf["iterations"],
    )
    header = {
        "format": record["format"],
        "version": record["version"],
        "kdf": {
            "name": kdf["name"],
            "hash": kdf["hash"],
            "iterations": kdf["iterations"],
            "salt": kdf["salt"],
        },
    }
    aad = json.dumps(header, separators=(",", ":")).encode()
    plain = AESGCM(key).decrypt(_unb64url(record["nonce"]), _unb64url(record["ciphertext"]), aad)
    return json.loads(plain)


def wait_for_stored(page: Page, password: str, check: Callable[[Any], bool]) -> Any:
    """Poll the stored key store until ``check(contents)`` holds (a write the page makes in
    the background, such as the one after an acknowledgement); its contents then."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        contents = open_vault(page, password)
        if check(contents):
            return contents
        assert time.monotonic() < deadline, "the key store never held what was expected"
        page.wait_for_timeout(50)


# The terminal client, as a process


def environment(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ.update(extra)
    return environ


class LineReader:
    """The lines a process writes to a pipe, as they come, with a deadline per line."""

    def __init__(self, stream: Any) -> None:
        self.lines: Queue[str | None] = Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            self.lines.put(raw.decode("utf-8", "replace"))
        self.lines.put(None)

    def next_line(self, timeout: float = TIMEOUT_MS / 1000) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except Empty:
            raise AssertionError(f"no line in {timeout} s") from None
        if line is None:
            raise AssertionError("the process closed its output")
        return line


@contextlib.contextmanager
def listening(server: str, key: str) -> Iterator[LineReader]:
    """``instantroom listen --json`` in the room of ``key`` (given through the environment,
    not the command line, where ps would show it), for the ``with`` block; its lines.

    On exit it gets SIGINT; it must not have printed a traceback."""
    listener = subprocess.Popen(
        [sys.executable, "-m", "instantroom", "listen", "--server", server, "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(INSTANTROOM_KEY=key),
    )
    assert listener.stdout is not None
    assert listener.stderr is not None
    try:
        yield LineReader(listener.stdout)
    finally:
        listener.send_signal(signal.SIGINT)
        try:
            listener.wait(10)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait()
        listener.stdout.close()
        errors = listener.stderr.read().decode()
        listener.stderr.close()
    assert "Traceback" not in errors, errors


def instantroom(*args: str, stdin: str = "", timeout: float = 30, **env: str) -> str:
    """Run ``instantroom ARGS`` to its end; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "instantroom", *args],
        input=stdin.encode(),
        capture_output=True,
        env=environment(**env),
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()

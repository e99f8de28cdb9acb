"""The room key never reaches the relay: not in a request (URL, headers, body), not in a
WebSocket frame, not in the relay's log (with ids logged), in any form; and an invite
link's fragment leaves the address bar and the history at once."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

from playwright.sync_api import Page, Request, WebSocket, expect

from instantroom.protocol.kdf import LABEL_MESSAGE_KEY, LABEL_ROOM_SIGNING_KEY, hkdf_sha256
from instantroom.protocol.minikey import root_secret
from instantroom.testing import RelayProcess, assert_exited_cleanly, running_relay
from tests.web.conftest import Phone


@dataclass
class Recorder:
    """Every request and every WebSocket frame of the pages it watches."""

    requests: list[Request] = field(default_factory=list)
    websocket_urls: list[str] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)  # sent and received, as bytes

    def watch(self, phone: Phone) -> None:
        phone.context.on("request", lambda request: self.requests.append(request))
        phone.page.on("websocket", self._websocket)

    def _websocket(self, ws: WebSocket) -> None:
        self.websocket_urls.append(ws.url)
        ws.on("framesent", self._frame)
        ws.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        self.frames.append(payload.encode() if isinstance(payload, str) else payload)

    def haystack(self) -> list[bytes]:
        """What went over the wire, each piece as bytes."""
        pieces: list[bytes] = [url.encode() for url in self.websocket_urls]
        for request in self.requests:
            pieces.append(request.url.encode())
            for name, value in request.all_headers().items():
                pieces.append(f"{name}: {value}".encode())
            pieces.append(request.post_data_buffer or b"")
        return pieces + self.frames


def forms_of(key: str, grouped: str, invite: str) -> list[bytes]:
    """The key as typed, grouped, without spaces, in the invite link, URL-encoded, and the
    secrets derived from it (raw, hex, base64)."""
    texts = [key, grouped, quote(grouped), quote_plus(grouped), "#" + key, invite]
    root = root_secret(key)
    secrets = [
        root,
        hkdf_sha256(root, LABEL_MESSAGE_KEY),
        hkdf_sha256(root, LABEL_ROOM_SIGNING_KEY),
    ]
    for secret in secrets:
        texts += [
            secret.hex(),
            base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="),
        ]
    return [text.encode() for text in texts] + secrets


def navigation_history(page: Page) -> list[str]:
    session = page.context.new_cdp_session(page)
    try:
        history = session.send("Page.getNavigationHistory")
    finally:
        session.detach()
    return [entry["url"] for entry in history["entries"]]


def test_the_key_never_reaches_the_relay(phones: Callable[..., Phone]) -> None:
    recorder = Recorder()
    with running_relay("--log-ids", "--log-level", "debug") as relay:
        alice, bob, carol = phones(), phones(), phones()
        for phone in (alice, bob, carol):
            recorder.watch(phone)

        alice.open(relay.url)
        alice.set_password("alice's long password")
        room = alice.create_room("Private", "Alice")
        alice.open_room()

        # Bob follows the invite link: the fragment is gone from the address bar and from
        # the history as soon as the page has loaded, before he unlocks anything.
        bob.open(room.invite)
        assert "#" not in bob.page.url
        assert bob.page.evaluate("window.location.hash") == ""
        assert [url for url in navigation_history(bob.page) if room.key in url] == []
        expect(bob.by("password")).to_be_visible()
        bob.set_password("bob's long password", then="join-key")
        assert room.key in "".join(bob.by("join-key").input_value().split())
        bob.by("nickname").fill("Bob")
        bob.by("join").click()
        bob.expect_online()
        assert "#" not in bob.page.url

        # Carol types the key as it is read aloud, in groups.
        carol.open(relay.url)
        carol.set_password("carol's long password")
        carol.join(room.grouped, "Carol")
        alice.expect_members(3)

        alice.send("only the three of us can read this")
        assert bob.expect_message("only the three of us can read this").sender == "Alice"
        assert carol.expect_message("only the three of us can read this").sender == "Alice"
        bob.send("and the relay cannot")
        assert alice.expect_message("and the relay cannot").sender == "Bob"
        haystack = recorder.haystack()

    assert_exited_cleanly(relay)
    log = relay.log_text().encode()
    # Not vacuous: the relay logged, the pages loaded and spoke frames.
    assert b"event=relay.started" in log
    assert any(request.url.startswith(relay.url) for request in recorder.requests)
    assert len(recorder.frames) >= 10
    assert recorder.websocket_urls
    assert all(url.startswith(relay.ws_url.rsplit("/", 1)[0]) for url in recorder.websocket_urls)

    leaks = [
        (form, piece[:200])
        for form in forms_of(room.key, room.grouped, room.invite)
        for piece in [*haystack, log]
        if form in piece
    ]
    assert leaks == []


def assert_no_fragment(page: Page, key: str) -> None:
    """Gone within a second: in a page already open, the app hears of a new fragment only
    from the hashchange event, which the browser fires after the navigation."""
    expect(page).not_to_have_url(re.compile("#"), timeout=1000)
    assert page.evaluate("window.location.hash") == ""
    assert [url for url in navigation_history(page) if key in url] == []


def test_an_invite_link_opened_in_an_open_page(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The app already open, unlocked or locked: the link's fragment goes at once all the
    same, and the Join screen takes the key."""
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    first = alice.create_room("First", "Alice")
    alice.by("nav-rooms").click()
    second = alice.create_room("Second", "Alice")

    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.open(first.invite)  # unlocked: the same page, a new fragment
    assert_no_fragment(bob.page, first.key)
    expect(bob.by("join-key")).to_be_visible()
    assert first.key in "".join(bob.by("join-key").input_value().split())
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    bob.expect_online()

    bob.by("nav-settings").click()
    bob.by("lock-now").click()
    expect(bob.by("password")).to_be_visible()
    bob.open(second.invite)  # locked
    assert_no_fragment(bob.page, second.key)
    expect(bob.by("password")).to_be_visible()
    bob.unlock("bob's long password", then="join-key")
    assert second.key in "".join(bob.by("join-key").input_value().split())
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    bob.expect_online()
    assert_no_fragment(bob.page, second.key)
    bob.by("nav-rooms").click()
    expect(bob.by("room-item")).to_have_count(2)


def test_drafts_and_what_members_write_go_to_no_spellchecker_or_translator(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """A browser's enhanced spellcheck sends what is typed to a server, and page
    translation sends the page's text: neither gets a draft or a member's words."""
    phone = phones()
    phone.open(relay.url)
    phone.set_password("a long enough password")
    phone.by("nav-new").click()
    for field_id in ("room-label", "nickname"):
        assert phone.by(field_id).evaluate("e => e.spellcheck") is False
    phone.by("room-label").fill("Room")
    phone.by("nickname").fill("Ann")
    phone.by("create-room").click()
    phone.shared_room()
    phone.open_room()
    draft = phone.by("message-input")
    expect(draft).to_have_attribute("spellcheck", "false")
    assert draft.evaluate("e => e.spellcheck") is False
    phone.send("hello there")
    message = phone.message_locator("hello there")
    for part in ("message-text", "message-sender"):
        expect(message.get_by_test_id(part)).to_have_attribute("translate", "no")
        assert message.get_by_test_id(part).evaluate("e => e.translate") is False

"""Invite links, as the web client makes and reads them too (web/test/invite.test.js)."""

from __future__ import annotations

import secrets
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from instantroom.client.connection import websocket_url
from instantroom.client.invite import format_invite, parse_invite
from instantroom.client.keystore import KeyStore
from instantroom.protocol.errors import ChecksumMismatch, OneCase, UsageError, WrongLength
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import RelayProcess
from tests.client.test_rooms_cli import PASSWORD, cli, decode

# The published key and its one-character typo (../shared/vectors/minikey.json).
KEY = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
TYPO = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRz"


def test_an_invite_link_puts_the_key_in_the_fragment_after_the_relays_path() -> None:
    assert format_invite("https://chat.example.org", KEY) == f"https://chat.example.org/#{KEY}"
    assert format_invite("http://127.0.0.1:8080/", KEY) == f"http://127.0.0.1:8080/#{KEY}"
    assert format_invite("https://example.org/chat", KEY) == f"https://example.org/chat/#{KEY}"


@pytest.mark.parametrize("server", ["ftp://chat.example.org", "not a url", "https://"])
def test_only_a_relays_address_makes_an_invite_link(server: str) -> None:
    with pytest.raises(UsageError, match="http"):
        format_invite(server, KEY)


@pytest.mark.parametrize(
    ("server", "page"),
    [
        ("wss://chat.example.org", "https://chat.example.org/"),
        ("ws://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("wss://chat.example.org/ws", "https://chat.example.org/"),
        ("http://127.0.0.1:8080/ws/", "http://127.0.0.1:8080/"),
        ("https://example.org/chat/ws", "https://example.org/chat/"),
        ("https://example.org/news", "https://example.org/news/"),  # "ws" ends it, not "/ws"
        ("https://example.org/ws/chat", "https://example.org/ws/chat/"),
    ],
)
def test_a_relay_given_by_its_websocket_address_makes_the_link_of_its_page(
    server: str, page: str
) -> None:
    """What a client connects with (websocket_url) is what a room stores: a ws(s):// link
    joined, or --server; the link is the page that relay serves, never /ws, which has none."""
    assert format_invite(server, KEY) == f"{page}#{KEY}"
    linked, key = parse_invite(format_invite(server, KEY))
    assert key == KEY
    assert linked is not None
    assert websocket_url(linked) == websocket_url(server)


def test_a_user_name_or_password_in_the_relays_address_never_reaches_the_link() -> None:
    """Everyone invited would read it (and refuse the link: see below)."""
    link = format_invite("https://someone:secret@chat.example.org/", KEY)
    assert link == f"https://chat.example.org/#{KEY}"
    with pytest.raises(UsageError) as refused:
        format_invite("ftp://someone:secret@chat.example.org/", KEY)
    assert "secret" not in str(refused.value)


def test_a_link_gives_back_its_relay_and_key_and_a_bare_key_has_no_relay() -> None:
    assert parse_invite(f"https://chat.example.org/#{KEY}") == ("https://chat.example.org/", KEY)
    assert parse_invite(f"  {KEY}  ") == (None, KEY)
    assert parse_invite(f"#{KEY}") == (None, KEY)
    grouped = " ".join(KEY[i : i + 5] for i in range(0, len(KEY), 5))
    assert parse_invite(f"https://chat.example.org/#{grouped}")[1] == KEY


def test_a_link_carries_a_stored_key_in_one_case_which_a_typed_key_may_not_be() -> None:
    """A room stored before keys in one case were refused can still be shared: a link is
    copied or scanned, not typed (PROTOCOL.md 3.5)."""
    one_case = "S6c56bnxqibjk9mqsye7ykvq7n113c"
    assert parse_invite(f"https://chat.example.org/#{one_case}")[1] == one_case
    with pytest.raises(OneCase):
        parse_invite(one_case)


def test_a_link_to_the_web_clients_index_html_gives_the_relays_folder() -> None:
    assert parse_invite(f"https://chat.example.org/index.html#{KEY}")[0] == (
        "https://chat.example.org/"
    )
    assert parse_invite(f"https://example.org/chat/index.html#{KEY}")[0] == (
        "https://example.org/chat/"
    )


def test_a_mistyped_key_in_a_link_says_it_is_a_typo() -> None:
    with pytest.raises(ChecksumMismatch, match="typo"):
        parse_invite(f"https://chat.example.org/#{TYPO}")
    with pytest.raises(WrongLength):
        parse_invite(KEY[:20])


@pytest.mark.parametrize(
    ("link", "server"),
    [
        (f"chat.example.org/#{KEY}", "https://chat.example.org/"),
        (f"127.0.0.1:8080/#{KEY}", "https://127.0.0.1:8080/"),
        (f"wss://chat.example.org/#{KEY}", "wss://chat.example.org/"),
        (f"HTTPS://chat.example.org/#{KEY}", "https://chat.example.org/"),
    ],
)
def test_a_link_copied_without_its_scheme_is_taken_as_https(link: str, server: str) -> None:
    assert parse_invite(link) == (server, KEY)


@pytest.mark.parametrize("address", ["ftp://chat.example.org/", "https://", "https://[abc"])
def test_a_relay_address_that_is_not_one_is_refused_clearly(address: str) -> None:
    with pytest.raises(UsageError, match="https://"):
        parse_invite(f"{address}#{KEY}")


def test_a_relay_address_with_credentials_is_refused() -> None:
    with pytest.raises(UsageError, match="no user name or password"):
        parse_invite(f"https://someone:secret@chat.example.org/#{KEY}")


@pytest.mark.parametrize(
    "address",
    [
        "https://chat.example.org\x1b[2J\x1b]0;owned\x07/",  # escape sequences
        "https://chat.example.org/\r\nrelay: elsewhere/",  # a line break, to fake a line
        "https://chat.exa\u202eelpmaxe.org/",  # a direction override
        "https://chat\u200b.example.org/",  # a zero-width space
        "chat.example.org\x00/",
    ],
)
def test_a_relay_address_with_control_or_formatting_characters_is_refused(address: str) -> None:
    """What is refused is said without quoting it: it would reach the terminal."""
    with pytest.raises(UsageError, match="control or invisible formatting") as refused:
        parse_invite(f"{address}#{KEY}")
    assert str(refused.value).isprintable()
    with pytest.raises(UsageError, match="control or invisible formatting") as refused:
        websocket_url(address if "://" in address else f"https://{address}")
    assert str(refused.value).isprintable()


@pytest.mark.parametrize(
    "server",
    [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:80a",
        "https://relay.example:0/",
        "http://:8080",
        "https://relay..example/",
        f"http://{'a' * 64}.example/",
    ],
)
def test_a_server_whose_port_or_host_is_no_such_thing_is_refused_at_once(server: str) -> None:
    """Refused before connecting: the client would otherwise stop at its first connection
    saying only "ValueError", or retry port 0 until its timeout."""
    with pytest.raises(UsageError, match=r"port is a number|A server is an|host name is not"):
        websocket_url(server)
    assert websocket_url("http://127.0.0.1:65535") == "ws://127.0.0.1:65535/ws"


def test_a_relay_name_in_another_script_must_be_given_in_its_ascii_form() -> None:
    """An internationalised domain name could pass for a look-alike of a known relay; its
    ASCII form (punycode) cannot, and is accepted."""
    for given in (f"https://\u0441hat.example.org/#{KEY}", f"bücher.example/#{KEY}"):
        with pytest.raises(UsageError, match=r"xn--\.\.\. \(punycode\)") as refused:
            parse_invite(given)
        assert "not plain ASCII" in str(refused.value)
    with pytest.raises(UsageError, match="punycode"):
        websocket_url("https://bücher.example/")
    ascii_form = "https://xn--bcher-kva.example/"
    assert parse_invite(f"{ascii_form}#{KEY}") == (ascii_form, KEY)
    assert websocket_url(ascii_form) == "wss://xn--bcher-kva.example/ws"


def test_a_room_joined_by_its_websocket_address_has_a_qr_code_that_opens_the_app(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """`join ws://relay/ws#KEY` stored the room, then `qr` refused it ("needs an http://
    server"), and `new --server http://relay/ws` made links to /ws/, where the relay serves
    nothing (404): now both give the link of the relay's page."""
    store = tmp_path / "store.json"
    cli(store, "join", f"{relay.ws_url}#{KEY}", "--label", "by-socket")
    cli(store, "new", "--server", f"{relay.url}/ws", "--label", "made-on-socket")
    made = next(room for room in KeyStore.open(store, PASSWORD).rooms if room.label != "by-socket")
    for label, key in [("by-socket", KEY), ("made-on-socket", made.key)]:
        png = tmp_path / f"{label}.png"
        cli(store, "qr", label, "--png", str(png))
        (link,) = decode(Image.open(png))
        assert link == f"{relay.url}/#{key}"
        page, _, _ = link.partition("#")
        # No proxy a runner's environment may name: the relay is on loopback.
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(page, timeout=10) as response:
            assert response.status == 200
            assert b"<script" in response.read()


@pytest.mark.parametrize("page", ["index.html", "chat/index.html"])
def test_the_web_clients_page_is_a_server_address_too(page: str, relay: RelayProcess) -> None:
    """The address in the browser, copied: the relay serves the web client there, and an
    invite link may name it (PROTOCOL.md 3.7). Its endpoint is beside it, not below it."""
    assert websocket_url(f"https://relay.example/{page}") == (
        f"wss://relay.example/{page.removesuffix('index.html')}ws"
    )
    sent = cli(Path("unused"), "send", "--server", f"{relay.url}/index.html", "--key", KEY, "hi")
    assert sent.returncode == 0, sent.stderr


@pytest.mark.parametrize(
    "path",
    [
        KEY,
        "chat/S6c56-bnXQi-Bjk9m-qSYE7-ykVQ7-NzrRy",
        "S6c56%20bnXQi%20Bjk9m%20qSYE7%20ykVQ7%20NzrRy",
        "S6c56+bnXQi+Bjk9m+qSYE7+ykVQ7+NzrRy",
        "S6c56%2DbnXQi%2DBjk9m%2DqSYE7%2DykVQ7%2DNzrRy",
        f"%23{KEY}",  # the # of an invite link, percent-encoded by a form
        "S6c56bnXQiBjk9m/qSYE7ykVQ7NzrRy",
        "100%/S6c56%20bnXQi%20Bjk9m%20qSYE7%20ykVQ7%20NzrRy",  # a stray % before it
    ],
)
def test_a_key_in_the_servers_path_is_refused_unsent_and_unquoted(
    path: str, relay: RelayProcess
) -> None:
    """An invite link that lost its #: the key went to the server in the request line, and
    was quoted with the address in the error on standard error."""
    with pytest.raises(UsageError, match="in an invite link the key comes after a #") as refused:
        websocket_url(f"https://relay.example/{path}")
    assert "S6c56" not in str(refused.value)
    # A path that only is long is no key.
    for long in (
        "instantroom-relay-for-friends",
        "GroupChatServerForFriends",
        # One in 256 passes the check read in any case: keys are read as typed, mixed case.
        "Services/instantroom/staging/home",
        "Secure/private/websocket/instantroom",
    ):
        assert websocket_url(f"https://relay.example/{long}/") == f"wss://relay.example/{long}/ws"
    # Looked for in a bounded address: every S of a crafted one would cost a hash.
    with pytest.raises(UsageError, match="at most 2048 characters"):
        websocket_url("https://relay.example/" + "S" * 2048)
    other = make_minikey(secrets.randbelow)
    sent = cli(
        Path("unused"), "send", "--server", f"{relay.url}/{path}", "--key", other, "hi", check=False
    )
    assert sent.returncode == 2
    assert "S6c56" not in sent.stderr + sent.stdout
    assert "comes after a #" in sent.stderr

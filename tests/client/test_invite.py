"""Invite links, as the web client makes and reads them too (web/test/invite.test.js)."""

from __future__ import annotations

import pytest

from instantroom.client.connection import websocket_url
from instantroom.client.invite import format_invite, parse_invite
from instantroom.protocol.errors import ChecksumMismatch, UsageError, WrongLength

# The published key and its one-character typo (../shared/vectors/minikey.json).
KEY = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
TYPO = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRz"


def test_an_invite_link_puts_the_key_in_the_fragment_after_the_relays_path() -> None:
    assert format_invite("https://chat.example.org", KEY) == f"https://chat.example.org/#{KEY}"
    assert format_invite("http://127.0.0.1:8080/", KEY) == f"http://127.0.0.1:8080/#{KEY}"
    assert format_invite("https://example.org/chat", KEY) == f"https://example.org/chat/#{KEY}"


@pytest.mark.parametrize("server", ["wss://chat.example.org", "not a url"])
def test_only_http_and_https_relays_make_invite_links(server: str) -> None:
    with pytest.raises(UsageError, match="http"):
        format_invite(server, KEY)


def test_a_link_gives_back_its_relay_and_key_and_a_bare_key_has_no_relay() -> None:
    assert parse_invite(f"https://chat.example.org/#{KEY}") == ("https://chat.example.org/", KEY)
    assert parse_invite(f"  {KEY}  ") == (None, KEY)
    assert parse_invite(f"#{KEY}") == (None, KEY)
    grouped = " ".join(KEY[i : i + 5] for i in range(0, len(KEY), 5))
    assert parse_invite(f"https://chat.example.org/#{grouped}")[1] == KEY


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
    ["http://127.0.0.1:99999", "http://127.0.0.1:80a", "https://relay.example:0/", "http://:8080"],
)
def test_a_server_whose_port_or_host_is_no_such_thing_is_refused_at_once(server: str) -> None:
    """Refused before connecting: the client would otherwise stop at its first connection
    saying only "ValueError", or retry port 0 until its timeout."""
    with pytest.raises(UsageError, match=r"port is a number|A server is an"):
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

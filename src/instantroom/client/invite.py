"""Invite links: ``https://<relay>/#<key>``.

The key sits after ``#``, in the fragment, which browsers never send to a server: the
relay that serves the web client never sees it. A bare key is accepted wherever an invite
link is.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit, urlunsplit

from instantroom.protocol.errors import UsageError
from instantroom.protocol.minikey import parse_minikey

RELAY_SCHEMES = ("http", "https", "ws", "wss")


def address_problem(address: str) -> str | None:
    """Why ``address`` (a relay's URL) cannot be one, for its characters alone, or None.

    A relay's address is printable ASCII: a control character or escape sequence in it
    would reach the terminal that shows it, a direction mark or other invisible character
    would make it look like another, and a host in another script could pass for a
    look-alike of a known one (an internationalised domain name is written in its ASCII
    form, ``xn--...``). What is wrong is said by its code point, never quoted."""
    for position, char in enumerate(address, start=1):
        if "!" <= char <= "~":
            continue
        where = f"character {position}, U+{ord(char):04X}"
        if char.isascii() or unicodedata.category(char)[0] in "CZ":
            return (
                f"holds a space, control or invisible formatting character ({where}), "
                "which no relay address has"
            )
        return (
            f"holds a character that is not plain ASCII ({where}): give a relay whose "
            "name is in another script (an internationalised domain name) in its ASCII "
            "form, xn--... (punycode)"
        )
    return None


def format_invite(server: str, key: str) -> str:
    """The invite link for ``key`` on the relay at ``server``: the page the relay serves
    its web client at, with the key in the fragment.

    ``server`` is any address a client connects with (``websocket_url``): a ws(s)://
    address is the same relay's http(s):// page, and a path ending in ``/ws`` (the
    WebSocket endpoint, which serves no page) is the relay at the folder above it. A user
    name or password in ``server`` is never written into a link that others receive."""
    parts = urlsplit(server.strip())
    scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme)
    host = parts.netloc.rpartition("@")[2]
    if scheme is None or not host:
        # Not quoted: a server's address may carry a password.
        raise UsageError("An invite link needs an http://, https://, ws:// or wss:// server.")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path.removesuffix("ws")
    path = path if path.endswith("/") else path + "/"
    return urlunsplit((scheme, host, path, "", key))


# Around a link or key: Unicode's White_Space, and U+FEFF, which copying adds. Spelled
# out, as in invite.js: Python's str.strip and JavaScript's trim each take another set.
TRIMMED = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# PROTOCOL.md 3.7: scheme "://" authority path, then a query, which is dropped.
_ADDRESS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?[^#]*)?")
_AUTHORITY = re.compile(r"([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?")
_PATH = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")


def _is_ipv6(text: str) -> bool:
    """Whether ``text`` is an IPv6 address as RFC 4291 writes one (as the URL Standard's
    IPv6 parser, which the web client uses, takes it)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_invite(text: str) -> tuple[str | None, str]:
    """``(server or None, key)`` from an invite link or a bare key; raises MiniKeyError for
    the key, UsageError for a relay address that is not one (PROTOCOL.md 3.7).

    The server is written one way: its scheme and host in lower case, its port without
    leading zeros, its path ``/`` if empty and without a last ``index.html``."""
    text = text.strip(TRIMMED)
    if "#" not in text:
        return None, parse_minikey(text)
    address, _, fragment = text.partition("#")
    # A link is copied or scanned, not typed: the key it carries may be a stored room's
    # from before keys in one case were refused (PROTOCOL.md 3.5).
    key = parse_minikey(fragment, as_typed=False)
    if not address:
        return None, key
    if (wrong := address_problem(address)) is not None:
        raise UsageError(f"The link's relay address {wrong}.")
    if "://" not in address:
        address = "https://" + address  # a link copied without its scheme, as chats show them
    problem = (
        f'The link\'s relay address "{address}" is not one: it should be like '
        "https://relay.example/."
    )
    parts = _ADDRESS.fullmatch(address)
    if parts is None or parts[1].lower() not in RELAY_SCHEMES:
        raise UsageError(problem)
    scheme, authority, path = parts[1].lower(), parts[2], parts[3]
    if "@" in authority:
        raise UsageError("An invite link's relay address carries no user name or password.")
    where = _AUTHORITY.fullmatch(authority)
    if where is None or _PATH.fullmatch(path) is None:
        raise UsageError(problem)
    host, port = where[1].lower(), where[2]
    if host.startswith("[") and not _is_ipv6(host[1:-1]):
        raise UsageError(problem)
    if port is not None:
        if not 1 <= int(port) <= 65535:
            raise UsageError(problem)
        host += f":{int(port)}"
    if path.endswith("/index.html"):  # the relay serves the web client there too
        path = path.removesuffix("index.html")
    return f"{scheme}://{host}{path or '/'}", key

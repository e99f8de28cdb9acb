"""Text from other members, made safe to show in a terminal.

A name or message is whatever its sender chose: a line break or a carriage return in it
could fake a line from someone else, an escape sequence could rewrite the screen, and a
direction override could reorder what is shown. ``printable`` replaces them. It also shows
characters that show as nothing as ``<U+....>``, as the web client does: a name with an
invisible character in it would otherwise look like another's (``alice`` and ``alice``
with a combining grapheme joiner, which are different names, with no key-change warning
between them).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from urllib.parse import unquote, urlsplit, urlunsplit

import regex

from instantroom.protocol.minikey import holds_a_key

_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# What shows as nothing: format characters, the other default-ignorable code points (the
# combining grapheme joiner U+034F, Mongolian free variation selectors, unassigned ones
# kept for the purpose...) and the blank Hangul fillers.
_INVISIBLE = r"[\p{Cf}\p{Default_Ignorable_Code_Point}\u115f\u1160\u3164\uffa0]"
_SELECTORS = "\ufe00-\ufe0f\U000e0100-\U000e01ef"
# Names: every invisible character, but a zero-width joiner between two emoji and a
# variation selector after one (as in 👨‍👩‍👧 and ❤️).
_IN_NAMES = regex.compile(
    "|".join(
        [
            r"(?<!\p{Extended_Pictographic}[\ufe0f\U0001f3fb-\U0001f3ff]?)\u200d",
            r"\u200d(?!\p{Extended_Pictographic})",
            r"(?<!\p{Extended_Pictographic})[\ufe00-\ufe0f]",
            # The blank braille pattern: a symbol, not a space, so not one in a name's
            # canonical form, yet nothing shows ("alice" and "alice" + it look alike).
            # Braille art in messages needs it; names do not.
            r"[\U000e0100-\U000e01ef\u2800]",
            rf"(?![\u200d\ufe00-\ufe0f]){_INVISIBLE}",
        ]
    )
)
# Messages: also the zero-width non-joiner and joiner that Persian and Indic text need,
# and variation selectors, but never two of either in a row (a run shows as nothing, and
# could carry a hidden text); and a subdivision flag's tag characters (England's flag).
# Only the three flags there are (England, Scotland, Wales): other tag letters could carry
# a hidden text behind a black flag.
_FLAG_TAGS = (
    "\U0001f3f4\U000e0067\U000e0062"
    "(?:\U000e0065\U000e006e\U000e0067|\U000e0073\U000e0063\U000e0074|\U000e0077\U000e006c\U000e0073)"
    "\U000e007f"
)
_IN_MESSAGES = regex.compile(
    "|".join(
        [
            f"({_FLAG_TAGS})",
            # Never two of the invisible ones kept in a row, in turns either, but an
            # emoji's selector then joiner (as in 🏳️‍🌈).
            f"(?<=[\u200c\u200d{_SELECTORS}])[\u200c{_SELECTORS}]",
            r"(?<=[\u200c\u200d])\u200d",
            rf"(?<=[{_SELECTORS}])\u200d(?!\p{{Extended_Pictographic}})",
            rf"(?![\u200c\u200d{_SELECTORS}]){_INVISIBLE}",
        ]
    )
)


def _escape(found: regex.Match[str]) -> str:
    if found.re.groups and found.group(1):
        return found.group(0)  # a subdivision flag, kept whole
    return "".join(f"<U+{ord(char):04X}>" for char in found.group(0))


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with control and direction-override characters replaced by U+FFFD (line
    breaks kept if ``newlines``, tabs as four spaces), and invisible ones shown as
    ``<U+....>``: as in a name, or with ``newlines`` as in a message, which keeps what
    emoji and other scripts need (see above)."""
    shown = []
    for char in text:
        if char == "\n" and newlines:
            shown.append(char)
        elif char == "\t":
            shown.append("    ")
        elif char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            shown.append("\ufffd")
        else:
            shown.append(char)
    return (_IN_MESSAGES if newlines else _IN_NAMES).sub(_escape, "".join(shown))


def without_credentials(url: str) -> str:
    """``url`` without a user name or password, to be shown or logged."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def shown_server(server: str) -> str:
    """A relay's address as shown: without the user name and password it may hold, nor a
    path that holds a room key (an invite link that lost its #, stored before such an
    address was refused)."""
    try:
        shown = without_credentials(server)
        parts = urlsplit(shown)
    except ValueError:  # no URL (an unclosed [IPv6): it may be anything, a secret too
        return "(an address that is no URL)"
    if holds_a_key(unquote(parts.path + parts.query)):
        return printable(f"{parts.scheme}://{parts.netloc}/… (its path holds a room key)")
    return printable(shown)


def _time_left(seconds: int) -> str:
    """``seconds`` in the largest unit that suits, rounded to the nearest: a room made to
    last 3 days is "in 3 days", not "in 2 days", a few seconds after it was made."""
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600 - 30:
        return f"{(seconds + 30) // 60} min"
    if seconds < 2 * 86400 - 1800:
        return f"{(seconds + 1800) // 3600} h"
    return f"{(seconds + 43200) // 86400} days"


# Past this the date and the time left tell nothing more. An expiry is whatever number a
# store or a relay holds (a room joined by its key alone takes the relay's): one past the
# year 9999 is no date at all, and cannot be shown as one.
FAR_EXPIRY_YEARS = 100
_FAR_EXPIRY_S = FAR_EXPIRY_YEARS * 365 * 86400


def expiry_text(expires_at_ms: int, now_ms: int, *, with_time: bool = True) -> str:
    """When a room expires: with its local date or time, or (``with_time`` False, for a
    narrow place) the time left alone. Any integer gives a text."""
    if not expires_at_ms:
        return "expiry not known yet"
    left = max(0, (expires_at_ms - now_ms) // 1000)
    if left >= _FAR_EXPIRY_S:
        return f"expires in more than {FAR_EXPIRY_YEARS} years"
    if not with_time or left < 60:
        return f"expires in {_time_left(left)}"
    # The date as far as it tells more than the time left does.
    shape = "%H:%M" if left < 3600 else "%a %H:%M" if left < 2 * 86400 else "%Y-%m-%d %H:%M"
    try:
        stamp = datetime.fromtimestamp(expires_at_ms / 1000).astimezone()
        return f"expires {stamp.strftime(shape)} (in {_time_left(left)})"
    except (ValueError, OverflowError, OSError):  # no date this platform can make
        return f"expires in {_time_left(left)}"


def _how_far(ms: int) -> str:
    """ "12 minutes", "about 3 hours", "about 400 days" (a clock back in 1970 is not "about
    492000 hours" slow), as the web client says it."""
    minutes = round(ms / 60_000)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = round(minutes / 60)
    return f"about {hours} hours" if hours < 48 else f"about {round(hours / 24)} days"


def dropped_ahead_warning(ahead_ms: int) -> str:
    """What to tell the user of a message dropped as dated ``ahead_ms`` ahead of this
    clock (``MessageRejected.ahead_ms``)."""
    return (
        f"A message dated {_how_far(ahead_ms)} ahead of this computer's clock was dropped: "
        "its sender's clock is probably fast, or this one slow. Ask them to set it to the "
        "right time."
    )


def clock_warning(offset_ms: int | None, warning_ms: int) -> str | None:
    """What to tell the user of this machine's clock, ``offset_ms`` away from its relay's
    (``RoomClient.clock_offset_ms``), or None while it is less than ``warning_ms`` away."""
    if offset_ms is None or abs(offset_ms) < warning_ms:
        return None
    far = _how_far(abs(offset_ms))
    if offset_ms > 0:
        return (
            f"This computer's clock is {far} fast. Others drop messages dated more than 5 "
            "minutes ahead of their own clocks, so they may not see yours. Set it to the "
            "right time (automatic time, NTP)."
        )
    return (
        f"This computer's clock is {far} slow. Messages from others then look more than 5 "
        "minutes ahead and are dropped, so you may not see theirs. Set it to the right "
        "time (automatic time, NTP)."
    )

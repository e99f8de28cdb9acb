"""Text from other members, made safe to show in a terminal.

A name or message is whatever its sender chose: a line break or a carriage return in it
could fake a line from someone else, an escape sequence could rewrite the screen, and a
direction override could reorder what is shown. ``printable`` replaces them.
"""

from __future__ import annotations

import unicodedata

_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with control and direction-override characters replaced by U+FFFD (line
    breaks kept if ``newlines``, tabs as four spaces)."""
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
    return "".join(shown)

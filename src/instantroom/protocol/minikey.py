"""The room secret as people handle it: Bitcoin's 30-character mini key format.

A key is ``S`` followed by 29 base58 characters. It is well-formed only when the first
byte of SHA-256(key + "?") is 0x00: that byte is the typo check (one mistyped key in 256
slips past it). The room's root secret is SHA-256(key). Making a key tries random
candidates until one passes the check, about 256 tries, and mixes capital and small
letters: a key typed all in one case, which would pass the check one time in 256, is
refused as such.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from .errors import ChecksumMismatch, MiniKeyError, NotBase58, OneCase, WrongLength, WrongPrefix

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
MINIKEY_LENGTH = 30
GROUP_SIZE = 5

_BASE58 = frozenset(BASE58_ALPHABET)
_TAILS = 58**29
# Characters people type that the grouping adds or that separate groups.
_SEPARATORS = str.maketrans(
    "", "", " \t\r\n-_.\u00a0\u00ad\u2009\u200b\u2010\u2011\u202f\u2013\u2014\u2060\ufeff"
)

_NATO = {
    "a": "alfa", "b": "bravo", "c": "charlie", "d": "delta", "e": "echo", "f": "foxtrot",
    "g": "golf", "h": "hotel", "i": "india", "j": "juliett", "k": "kilo", "l": "lima",
    "m": "mike", "n": "november", "o": "oscar", "p": "papa", "q": "quebec", "r": "romeo",
    "s": "sierra", "t": "tango", "u": "uniform", "v": "victor", "w": "whiskey",
    "x": "x-ray", "y": "yankee", "z": "zulu",
}  # fmt: skip
_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _passes_check(key: str) -> bool:
    return hashlib.sha256(key.encode("ascii") + b"?").digest()[0] == 0


def _one_case(key: str) -> bool:
    """True if the letters after the S are all capital or all small (or none)."""
    tail = key[1:]
    return tail == tail.lower() or tail == tail.upper()


def make_minikey(randbelow: Callable[[int], int]) -> str:
    """Make a fresh key. Pass ``secrets.randbelow``: the core takes its randomness.

    Each candidate is one uniform draw below 58**29, written in base58: uniform over
    all 29-character tails, and one call instead of 29.
    """
    while True:
        number = randbelow(_TAILS)
        tail = []
        for _ in range(29):
            number, digit = divmod(number, 58)
            tail.append(BASE58_ALPHABET[digit])
        candidate = "S" + "".join(tail)
        # One in some four million is in one case: skipped, as parse_minikey refuses it.
        if _passes_check(candidate) and not _one_case(candidate):
            return candidate


def parse_minikey(text: str, *, as_typed: bool = True) -> str:
    """Return the key in ``text``, ignoring surrounding and grouping spaces and dashes.

    Separators are dropped anywhere in the text: spaces, tabs, line breaks, ``-``,
    ``_``, ``.``, no-break, thin and zero-width spaces, soft hyphens, hyphens, en or em
    dashes, word joiners and U+FEFF. Raises a ``MiniKeyError`` subclass naming what is
    wrong, checked in this order (PROTOCOL.md 3.5): characters beyond printable ASCII,
    length, the other characters, the leading S, the typo check, then mixed case. A
    message may quote a character that is not base58: such a character cannot be part of
    any key, so it reveals nothing.

    ``as_typed=False`` is for a key checked when it was entered (a key store's): the last
    check, which catches a key typed in one case, is skipped, so that a room joined before
    that check existed stays usable.
    """
    key = text.translate(_SEPARATORS)
    for position, char in enumerate(key, start=1):
        if not " " < char < "\x7f":
            # Named by its code point, and before the length, which would count a character
            # that does not show: a look-alike (Cyrillic U+0430 for a) or an invisible one,
            # quoted, would show as a letter that can be in a key, or as nothing.
            raise NotBase58(
                f"Character {position} (U+{ord(char):04X}) cannot be in a room key: only Latin "
                "letters and digits can, and this one only looks like one, or does not show."
            )
    if len(key) != MINIKEY_LENGTH:
        raise WrongLength(
            f"A room key has {MINIKEY_LENGTH} characters; this one has {len(key)} "
            "(spaces and dashes are not counted)."
        )
    for position, char in enumerate(key, start=1):
        if char not in _BASE58:
            hint = " (0, O, I and l are never used)" if char in "0OIl" else ""
            # Quoted as typed, as PROTOCOL.md 3.5 and the web client word it: repr would
            # show a backslash as two and an apostrophe in double quotes.
            raise NotBase58(f"Character {position} ('{char}') cannot be in a room key{hint}.")
    if key[0] != "S":
        raise WrongPrefix("A room key starts with a capital S.")
    if not _passes_check(key):
        raise ChecksumMismatch(
            "This room key does not pass its check: most likely a typo. "
            "Compare it character by character, minding upper and lower case."
        )
    if as_typed and _one_case(key):
        raise OneCase(
            "This room key does not mix capital and small letters, as room keys do: most "
            "likely it was typed in the wrong case."
        )
    return key


def root_secret(key: str) -> bytes:
    """The room's root secret: SHA-256 of the key's ASCII bytes, as in Bitcoin."""
    return hashlib.sha256(key.encode("ascii")).digest()


def format_minikey(key: str) -> str:
    """The key in groups of five, for reading: ``S6c56 bnXQi Bjk9m ...``."""
    return " ".join(key[i : i + GROUP_SIZE] for i in range(0, len(key), GROUP_SIZE))


def spell_character(char: str) -> str:
    """One character said aloud, telling upper from lower case: ``capital S``."""
    if char.isdigit():
        return _DIGITS[int(char)]
    word = _NATO[char.lower()]
    return f"capital {char} ({word})" if char.isupper() else f"small {char} ({word})"


def spell_minikey(key: str) -> list[str]:
    """The key spelled out, one line per group of five."""
    groups = format_minikey(key).split(" ")
    return [", ".join(spell_character(c) for c in group) for group in groups]


def holds_a_key(text: str) -> bool:
    """Whether ``text`` (a URL's path, decoded) holds a room key, however it is written
    there: grouped by any character, across segments. A key is 30 letters and digits,
    mixed in case, that pass its check: an ordinary path passes for one once in 256 such
    runs."""
    letters = re.sub(r"[\W_]", "", text)
    runs = {found[1] for found in re.finditer(_KEY_LIKE, letters)}
    return any(_is_a_key(run) for run in runs)


# A run that could be a key, at each S (overlapping): checked by its hash only then.
_KEY_LIKE = r"(?=(S[1-9A-HJ-NP-Za-km-z]{29}))"


def _is_a_key(text: str) -> bool:
    try:
        parse_minikey(text)  # as typed: made keys mix capital and small letters
    except MiniKeyError:
        return False
    return True

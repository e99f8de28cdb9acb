"""Display names compared as people read them (PROTOCOL.md 4.4).

A client warns when a name it knows shows up with another device key. Names that look
the same on screen must count as the same name there, or a newcomer could write as
``"alice "``, ``"Alice"`` or ``"a\\u200blice"`` and get no warning. ``canonical_name`` is
the form two names are compared in; it is never shown (a name is shown as it was sent):

1. NFKC (fullwidth ``\\uff41`` is ``a``, the ligature ``\\ufb01`` is ``fi``, a decomposed ``e``
   and U+0308 is the composed ``\\u00eb``);
2. every character of general category Cf (format: zero-width space and joiners, bidi
   controls, soft hyphen, byte order mark) is removed: it has no width of its own;
3. every run of characters of categories Cc, Zs, Zl, Zp (controls, spaces, line and
   paragraph separators) is one separator; separators at either end are dropped, and the
   words are joined by one U+0020;
4. lowercased with the default (locale-independent) full case mapping, Python's
   ``str.lower`` and JavaScript's ``toLowerCase``, final sigma included.

Homoglyphs across scripts (Cyrillic ``\\u0430`` for Latin ``a``) keep their own canonical
form: ``"\\u0430lice"`` is not ``"alice"``. What gives such a name away is that it mixes
scripts: ``mixed_scripts`` names the scripts of a name whose letters come from more than
one of Latin, Greek and Cyrillic (the scripts whose letters look most alike), and a
client shows a warning with it. A name written in one script only is not flagged, even
when it looks like a name in another (an all-Cyrillic ``"\\u0430\\u0440\\u0435"``): the
fingerprint stays the identity.

The JavaScript core (``web/src/protocol/names.js``) does the same; the vectors
``canonical_names`` in ``vectors/protocol.json`` check both.
"""

from __future__ import annotations

import unicodedata

import regex

_REMOVED = "Cf"
_SEPARATORS = frozenset({"Cc", "Zs", "Zl", "Zp"})


def canonical_name(name: str) -> str:
    """The form in which ``name`` is compared with other names (never shown)."""
    words: list[str] = []
    word: list[str] = []
    for char in unicodedata.normalize("NFKC", name):
        category = unicodedata.category(char)
        if category == _REMOVED:
            continue
        if category in _SEPARATORS:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(char)
    if word:
        words.append("".join(word))
    return " ".join(words).lower()


# The scripts whose letters are most often taken for one another, in the order named.
CONFUSABLE_SCRIPTS = ("Latin", "Greek", "Cyrillic")
_IN_SCRIPT = {script: rf"\p{{Script_Extensions={script}}}" for script in CONFUSABLE_SCRIPTS}


def mixed_scripts(name: str) -> list[str]:
    """The scripts of ``CONFUSABLE_SCRIPTS`` that ``name`` (NFKC) mixes, in that order, or
    none when one script could have written all its characters. Each character counts for
    every script of its Script_Extensions (a mark shared by Latin and Cyrillic fits
    either); characters of none of them (digits, spaces, other scripts) do not count."""
    possible = set(CONFUSABLE_SCRIPTS)
    used: set[str] = set()
    for char in unicodedata.normalize("NFKC", name):
        if unicodedata.category(char) == "Cn":
            continue  # unassigned: its script is Unknown (the regex module says otherwise)
        scripts = {script for script, pattern in _IN_SCRIPT.items() if regex.match(pattern, char)}
        if scripts:
            possible &= scripts
            used |= scripts
    return [] if possible else [script for script in CONFUSABLE_SCRIPTS if script in used]


def spoken_list(words: list[str] | tuple[str, ...]) -> str:
    """``Latin and Cyrillic``; ``Latin, Greek and Cyrillic``."""
    return " and ".join(filter(None, (", ".join(words[:-1]), *words[-1:])))

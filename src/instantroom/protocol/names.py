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

The JavaScript core (``web/src/protocol/names.js``) does the same; the vectors
``canonical_names`` in ``vectors/protocol.json`` check both. Homoglyphs across scripts
(Cyrillic ``\\u0430`` for Latin ``a``) are not caught: the fingerprint is the identity.
"""

from __future__ import annotations

import unicodedata

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

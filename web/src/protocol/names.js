// Display names compared as people read them (PROTOCOL.md 4.4), mirroring the Python
// core's names.py.
//
// A client warns when a name it knows shows up with another device key. Names that look
// the same on screen must count as the same name there, or a newcomer could write as
// "alice ", "Alice" or "a\u200blice" and get no warning. canonicalName is the form two
// names are compared in; it is never shown (a name is shown as it was sent):
//
//   1. NFKC (fullwidth "ａ" is "a", "ﬁ" is "fi", a decomposed "ë" is the composed one);
//   2. every character of general category Cf (format: zero-width space and joiners,
//      bidi controls, soft hyphen, byte order mark) is removed: it has no width of its own;
//   3. every run of characters of categories Cc, Zs, Zl, Zp (controls, spaces, line and
//      paragraph separators) is one separator; separators at either end are dropped, and
//      the words are joined by one U+0020;
//   4. lowercased with the default (locale-independent) full case mapping, toLowerCase
//      here and str.lower in Python, final sigma included.
//
// The vectors canonical_names in vectors/protocol.json check both cores. Homoglyphs
// across scripts (Cyrillic "а" for Latin "a") are not caught: the fingerprint is the
// identity.

const REMOVED = /\p{Cf}+/gu;
const SEPARATORS = /[\p{Cc}\p{Z}]+/u; // \p{Z} is Zs, Zl and Zp

/**
 * The form in which `name` is compared with other names (never shown).
 * @param {string} name
 * @returns {string}
 */
export function canonicalName(name) {
  return name
    .normalize("NFKC")
    .replace(REMOVED, "")
    .split(SEPARATORS)
    .filter((word) => word !== "")
    .join(" ")
    .toLowerCase();
}

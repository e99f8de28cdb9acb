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
// Homoglyphs across scripts (Cyrillic "а" for Latin "a") keep their own canonical form:
// "\u0430lice" is not "alice". What gives such a name away is that it mixes scripts:
// mixedScripts names the scripts of a name whose letters come from more than one of
// Latin, Greek and Cyrillic (the scripts whose letters look most alike), and the client
// flags the name with them. A name written in one script only is not flagged, even when
// it looks like a name in another (an all-Cyrillic "аре"): the fingerprint stays the
// identity.
//
// The vectors canonical_names in vectors/protocol.json check both cores.

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

// The scripts whose letters are most often taken for one another, in the order named.
export const CONFUSABLE_SCRIPTS = Object.freeze(["Latin", "Greek", "Cyrillic"]);
// Script_Extensions, not Script: a mark or sign shared by several scripts (U+0485, used
// by Cyrillic and Latin) belongs to each of them, so it mixes none of them.
const IN_SCRIPT = CONFUSABLE_SCRIPTS.map((script) => [script, new RegExp(`\\p{Script_Extensions=${script}}`, "u")]);

/**
 * The scripts of CONFUSABLE_SCRIPTS that `name` (NFKC) mixes, in that order, or none
 * when one script could have written all its characters. Each character counts for every
 * script of its Script_Extensions; characters of none of them (digits, spaces, emoji,
 * other scripts) do not count (PROTOCOL.md 4.4).
 * @param {string} name
 * @returns {string[]} e.g. ["Latin", "Cyrillic"] for "\u0430lice"; [] for "alice"
 */
export function mixedScripts(name) {
  let possible = new Set(CONFUSABLE_SCRIPTS); // the scripts that fit every character so far
  const used = new Set();
  // By code point, as Python iterates a str (an astral letter is one character).
  for (const char of name.normalize("NFKC")) {
    const scripts = IN_SCRIPT.filter(([, pattern]) => pattern.test(char)).map(([script]) => script);
    if (scripts.length === 0) continue;
    possible = new Set(scripts.filter((script) => possible.has(script)));
    for (const script of scripts) used.add(script);
  }
  return possible.size > 0 ? [] : CONFUSABLE_SCRIPTS.filter((script) => used.has(script));
}

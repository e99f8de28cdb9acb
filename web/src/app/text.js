// Text from other members is untrusted. Preact puts it in text nodes, so it cannot be
// markup; what is left is text that lies about its order or hides: bidirectional controls
// (a name that reorders the fingerprint beside it), invisible characters (a name that
// looks like another's and so escapes the key-change warning), and control characters.
// Those are shown as visible escapes, as the terminal client does. Emoji keep their
// joiners and variation selectors.

// A zero-width joiner left alone: between two emoji (after the first one's variation
// selector or skin tone, if any), as in 👨‍👩‍👧 and 🏳️‍🌈.
const ZWJ_OUTSIDE_EMOJI = [
  "(?<!\\p{Extended_Pictographic}[\\ufe0f\\u{1f3fb}-\\u{1f3ff}]?)\\u200d",
  "\\u200d(?!\\p{Extended_Pictographic})",
];
// The blank Hangul fillers: letters, but nothing shows.
const FILLERS = "\\u115f\\u1160\\u3164\\uffa0";
const VARIATION_SELECTORS = "\\ufe00-\\ufe0f\\u{e0100}-\\u{e01ef}";
// What shows as nothing: format characters (Cf: bidi, zero-width, tags...) and the other
// default-ignorable code points (the combining grapheme joiner U+034F, Mongolian free
// variation selectors, unassigned ones kept for the purpose...).
const INVISIBLE = "[\\p{Cf}\\p{Default_Ignorable_Code_Point}]";
// The blank braille pattern: a symbol, not a space, so not one in a name's canonical form
// (PROTOCOL.md 4.4), yet nothing shows: "alice" and "alice\u2800" would look alike. Braille
// art in messages needs it; names do not.
const BRAILLE_BLANK = "\\u2800";
// Names: every control and invisible character, line and paragraph separators, the blank
// Hangul fillers, the blank braille pattern and variation selectors; a zero-width joiner
// only between two emoji and a variation selector only after one are left alone.
const IN_NAMES = new RegExp(
  [
    ...ZWJ_OUTSIDE_EMOJI,
    "(?<!\\p{Extended_Pictographic})[\\ufe00-\\ufe0f]",
    `[\\p{Cc}\\u2028\\u2029${FILLERS}${BRAILLE_BLANK}\\u{e0100}-\\u{e01ef}]`,
    `(?![\\u200d\\ufe00-\\ufe0f])${INVISIBLE}`,
  ].join("|"),
  "gu",
);
// Messages: the same, but line breaks and tabs stay, and so does what emoji and other
// scripts need: the zero-width non-joiner and joiner (Persian and Indic text writes them
// all the time), a variation selector anywhere (though never a second of either in a row:
// a run of them shows as nothing, and could carry a hidden text), and the tag characters of an
// emoji tag sequence (a subdivision flag: 🏴 then a region and subdivision code in tag
// letters and digits, then CANCEL TAG, as in the flag of England). That sequence is
// matched first, to be kept whole; every other tag character is escaped.
// Only the three flags there are (England, Scotland, Wales): any other tag letters could
// carry a hidden text behind a black flag.
const FLAG_TAG_SEQUENCE =
  "\\u{1f3f4}\\u{e0067}\\u{e0062}(?:\\u{e0065}\\u{e006e}\\u{e0067}|\\u{e0073}\\u{e0063}\\u{e0074}|\\u{e0077}\\u{e006c}\\u{e0073})\\u{e007f}";
const IN_MESSAGES = new RegExp(
  [
    `(${FLAG_TAG_SEQUENCE})`,
    // Never two of the invisible ones kept in a row, in turns either, but an emoji's
    // selector then joiner (as in 🏳️‍🌈).
    `(?<=[\\u200c\\u200d${VARIATION_SELECTORS}])[\\u200c${VARIATION_SELECTORS}]`,
    "(?<=[\\u200c\\u200d])\\u200d",
    `(?<=[${VARIATION_SELECTORS}])\\u200d(?!\\p{Extended_Pictographic})`,
    `[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u2028\\u2029${FILLERS}]`,
    `(?![\\u200c\\u200d${VARIATION_SELECTORS}])${INVISIBLE}`,
  ].join("|"),
  "gu",
);

function escape(char) {
  return `<U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}>`;
}

/** `text` as it may be shown: hidden and reordering characters made visible. Names
 * (the default) are held to a stricter rule than message text (`lines: true`). */
export function shown(text, { lines = false } = {}) {
  if (!lines) return String(text).replace(IN_NAMES, escape);
  return String(text).replace(IN_MESSAGES, (found, flag) => flag ?? escape(found));
}

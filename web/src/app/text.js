// Text from other members is untrusted. Preact puts it in text nodes, so it cannot be
// markup; what is left is text that lies about its order or hides: bidirectional controls
// (a name that reorders the fingerprint beside it), invisible characters (a name that
// looks like another's and so escapes the key-change warning), and control characters.
// Those are shown as visible escapes, as the terminal client does. Emoji keep their
// joiners and variation selectors.

const BIDI = "\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069";
const ZERO_WIDTH = "\\u200b\\u2060-\\u2064\\ufeff";
const IN_MESSAGES = new RegExp(
  `[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u2028\\u2029${BIDI}${ZERO_WIDTH}]`,
  "gu",
);
// Names: every control and format character (Cf: bidi, zero-width, tags...), line and
// paragraph separators, the blank Hangul fillers and variation selectors; a zero-width
// joiner only between two emoji and a variation selector only after one are left alone.
const IN_NAMES = new RegExp(
  [
    "(?<!\\p{Extended_Pictographic}[\\ufe0f\\u{1f3fb}-\\u{1f3ff}]?)\\u200d",
    "\\u200d(?!\\p{Extended_Pictographic})",
    "(?<!\\p{Extended_Pictographic})[\\ufe00-\\ufe0f]",
    "[\\p{Cc}\\u2028\\u2029\\u115f\\u1160\\u3164\\uffa0\\u{e0100}-\\u{e01ef}]",
    "(?!\\u200d)\\p{Cf}",
  ].join("|"),
  "gu",
);

function escape(char) {
  return `<U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}>`;
}

/** `text` as it may be shown: hidden and reordering characters made visible. Names
 * (the default) are held to a stricter rule than message text (`lines: true`). */
export function shown(text, { lines = false } = {}) {
  return String(text).replace(lines ? IN_MESSAGES : IN_NAMES, escape);
}

// Text from other members is untrusted. Preact puts it in text nodes, so it cannot be
// markup; what is left is text that lies about its order or hides: bidirectional controls
// (a name that reorders the fingerprint beside it), zero-width characters, and control
// characters. Those are shown as visible escapes, as the terminal client does.

// Bidi embeddings, overrides and isolates, marks, zero-width and BOM, C0 and C1 controls.
const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
const HIDDEN_IN_NAMES = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

function escape(char) {
  return `<U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}>`;
}

/** `text` as it may be shown: hidden and reordering characters made visible. */
export function shown(text, { lines = false } = {}) {
  return String(text).replace(lines ? HIDDEN : HIDDEN_IN_NAMES, escape);
}

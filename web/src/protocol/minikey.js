// The room secret as people handle it: Bitcoin's 30-character mini key (PROTOCOL.md 3).

import { sha256 } from "@noble/hashes/sha2.js";
import { ChecksumMismatch, NotBase58, OneCase, WrongLength, WrongPrefix } from "./errors.js";

export const BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
export const MINIKEY_LENGTH = 30;
const GROUP_SIZE = 5;
const SEPARATORS = /[ \t\r\n\-_.\u00a0\u00ad\u2009\u200b\u2010\u2011\u202f\u2013\u2014\u2060\ufeff]/gu;
const NATO = {
  a: "alfa", b: "bravo", c: "charlie", d: "delta", e: "echo", f: "foxtrot", g: "golf",
  h: "hotel", i: "india", j: "juliett", k: "kilo", l: "lima", m: "mike", n: "november",
  o: "oscar", p: "papa", q: "quebec", r: "romeo", s: "sierra", t: "tango", u: "uniform",
  v: "victor", w: "whiskey", x: "x-ray", y: "yankee", z: "zulu",
};
const DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
const ascii = new TextEncoder();

function passesCheck(key) {
  return sha256(ascii.encode(key + "?"))[0] === 0;
}

/** True if the letters after the S are all capital or all small (or none). */
function oneCase(key) {
  const tail = key.slice(1);
  return tail === tail.toLowerCase() || tail === tail.toUpperCase();
}

/**
 * A fresh key. `randomBytes(n)` must be a CSPRNG: pass
 * `(n) => crypto.getRandomValues(new Uint8Array(n))`. Bytes 232 and above are dropped so
 * that each character is uniform over the 58 (232 = 4 x 58).
 */
export function makeMinikey(randomBytes) {
  for (;;) {
    let tail = "";
    while (tail.length < 29) {
      for (const byte of randomBytes(40)) {
        if (byte < 232 && tail.length < 29) tail += BASE58_ALPHABET[byte % 58];
      }
    }
    const candidate = "S" + tail;
    // One in some four million is in one case: skipped, as parseMinikey refuses it.
    if (passesCheck(candidate) && !oneCase(candidate)) return candidate;
  }
}

/**
 * The key in `text`, ignoring separators; throws a MiniKeyError naming what is wrong,
 * checked in this order (PROTOCOL.md 3.5): characters beyond printable ASCII, length, the
 * other characters, the leading S, the typo check, then mixed case. `asTyped: false` is
 * for a key checked when it was entered (a key store's): the last check, which catches a
 * key typed in one case, is skipped, so that a room joined before it existed stays usable.
 */
export function parseMinikey(text, { asTyped = true } = {}) {
  const key = text.replace(SEPARATORS, "");
  const characters = [...key];
  for (const [index, char] of characters.entries()) {
    if (!(char > " " && char < "\x7f")) {
      // Named by its code point, and before the length, which would count a character that
      // does not show: a look-alike (Cyrillic U+0430 for a) or an invisible one, quoted,
      // would show as a letter that can be in a key, or as nothing.
      const code = char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
      throw new NotBase58(
        `Character ${index + 1} (U+${code}) cannot be in a room key: only Latin ` +
          "letters and digits can, and this one only looks like one, or does not show.",
      );
    }
  }
  if (characters.length !== MINIKEY_LENGTH) {
    throw new WrongLength(
      `A room key has ${MINIKEY_LENGTH} characters; this one has ${characters.length} ` +
        "(spaces and dashes are not counted).",
    );
  }
  for (const [index, char] of characters.entries()) {
    if (!BASE58_ALPHABET.includes(char)) {
      const hint = "0OIl".includes(char) ? " (0, O, I and l are never used)" : "";
      throw new NotBase58(`Character ${index + 1} ('${char}') cannot be in a room key${hint}.`);
    }
  }
  if (key[0] !== "S") throw new WrongPrefix("A room key starts with a capital S.");
  if (!passesCheck(key)) {
    throw new ChecksumMismatch(
      "This room key does not pass its check: most likely a typo. " +
        "Compare it character by character, minding upper and lower case.",
    );
  }
  if (asTyped && oneCase(key)) {
    throw new OneCase(
      "This room key does not mix capital and small letters, as room keys do: most " +
        "likely it was typed in the wrong case.",
    );
  }
  return key;
}

/** The room's root secret: SHA-256 of the key's ASCII bytes. */
export function rootSecret(key) {
  return sha256(ascii.encode(key));
}

export function formatMinikey(key) {
  const groups = [];
  for (let i = 0; i < key.length; i += GROUP_SIZE) groups.push(key.slice(i, i + GROUP_SIZE));
  return groups.join(" ");
}

export function spellCharacter(char) {
  if (/[0-9]/.test(char)) return DIGITS[Number(char)];
  const word = NATO[char.toLowerCase()];
  return char === char.toUpperCase() ? `capital ${char} (${word})` : `small ${char} (${word})`;
}

/** The key spelled out, one line per group of five. */
export function spellMinikey(key) {
  return formatMinikey(key)
    .split(" ")
    .map((group) => [...group].map(spellCharacter).join(", "));
}

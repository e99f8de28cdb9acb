// Invite links: `https://<relay>/#<key>`. The key sits in the fragment, which browsers never
// send to a server. Mirrors src/instantroom/client/invite.py.

import { MINIKEY_LENGTH, parseMinikey } from "../protocol/minikey.js";

/**
 * The invite link for `key` on the relay at `serverUrl` (http or https; the controller
 * turns a ws(s):// relay into its http(s):// page): the page the relay serves the app at.
 * A path ending in /ws, the WebSocket endpoint, which serves no page, is the relay at the
 * folder above it, as connection.js reads a relay's address.
 */
export function formatInvite(serverUrl, key) {
  const url = new URL(serverUrl);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error("An invite link needs an http:// or https:// server.");
  }
  let path = url.pathname.replace(/\/+$/, "");
  if (path.endsWith("/ws")) path = path.slice(0, -"ws".length);
  if (!path.endsWith("/")) path += "/";
  return `${url.protocol}//${url.host}${path}#${key}`;
}

const RELAY_SCHEMES = ["http", "https", "ws", "wss"];
// Around a link or key: Unicode's White_Space, and U+FEFF, which copying adds. Spelled
// out, as in invite.py: Python's str.strip and JavaScript's trim each take another set.
const TRIMMED = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff";
const SPACE = new RegExp(`[${TRIMMED}]`);

/** `text` without TRIMMED characters at its ends. Not by a regular expression, which
 * tries a run of them at its end from each of its characters: a long run inside a pasted
 * text took seconds (40,000 spaces: 3 s), on each render of the Join screen. */
function trimAround(text) {
  let start = 0;
  let end = text.length;
  while (start < end && SPACE.test(text[start])) start += 1;
  while (end > start && SPACE.test(text[end - 1])) end -= 1;
  return text.slice(start, end);
}
// PROTOCOL.md 3.7: scheme "://" authority path, then a query, which is dropped. Read here,
// not by URL(), which takes what the protocol refuses ("https:///path", "//host", a user
// name left empty) and writes a host in another script in punycode without a word.
const ADDRESS = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?[^#]*)?$/;
const AUTHORITY = /^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?$/;
const PATH = /^(?:\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$/;

/**
 * Why `address` (a relay's URL) cannot be one, for its characters alone, or null; as
 * address_problem in invite.py. A relay's address is printable ASCII: an invisible or
 * direction character would make it look like another, and a host in another script
 * could pass for a look-alike of a known one. What is wrong is said by its code point.
 */
export function addressProblem(address) {
  let position = 0;
  for (const char of address) {
    position += 1;
    if (char >= "!" && char <= "~") continue;
    const code = char.codePointAt(0);
    const where = `character ${position}, U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
    if (code < 0x80 || /^[\p{C}\p{Z}]$/u.test(char)) {
      return `holds a space, control or invisible formatting character (${where}), which no relay address has`;
    }
    return (
      `holds a character that is not plain ASCII (${where}): give a relay whose name is in ` +
      "another script (an internationalised domain name) in its ASCII form, xn--... (punycode)"
    );
  }
  return null;
}

/** Whether `text` is an IPv6 address, by the URL Standard's IPv6 parser (only to check
 * it: the address is written as it was given, as invite.py writes it). */
function isIpv6(text) {
  try {
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

/**
 * `{ server, key }` from an invite link or a bare key; `server` is null for a bare key.
 * Throws the MiniKeyError that names what is wrong with the key, or an Error for a relay
 * address that is not one (PROTOCOL.md 3.7). The server is written one way, as
 * invite.py writes it: scheme and host in lower case, the port without leading zeros,
 * the path "/" if empty and without a last "index.html".
 */
export function parseInvite(text) {
  const trimmed = trimAround(text);
  const hash = trimmed.indexOf("#");
  if (hash < 0) return { server: null, key: parseMinikey(trimmed) };
  // A link is copied or scanned, not typed: the key it carries may be a stored room's
  // from before keys in one case were refused (PROTOCOL.md 3.5).
  const key = parseMinikey(trimmed.slice(hash + 1), { asTyped: false });
  let address = trimmed.slice(0, hash);
  if (!address) return { server: null, key };
  const wrong = addressProblem(address);
  if (wrong !== null) throw new Error(`The link's relay address ${wrong}.`);
  // A link copied without its scheme, as chats show them.
  if (!address.includes("://")) address = `https://${address}`;
  const problem = `The link's relay address "${address}" is not one: it should be like https://relay.example/.`;
  const parts = ADDRESS.exec(address);
  if (parts === null || !RELAY_SCHEMES.includes(parts[1].toLowerCase())) throw new Error(problem);
  const [, scheme, authority, given] = parts;
  if (authority.includes("@")) {
    throw new Error("An invite link's relay address carries no user name or password.");
  }
  const where = AUTHORITY.exec(authority);
  if (where === null || !PATH.test(given)) throw new Error(problem);
  let host = where[1].toLowerCase();
  if (host.startsWith("[") && !isIpv6(host.slice(1, -1))) throw new Error(problem);
  if (where[2] !== undefined) {
    const port = Number(where[2]);
    if (port < 1 || port > 65535) throw new Error(problem);
    host += `:${port}`;
  }
  // The relay serves the app at /index.html too: its relay is the folder (as capture.js).
  const path = given.endsWith("/index.html") ? given.slice(0, -"index.html".length) : given;
  return { server: `${scheme.toLowerCase()}://${host}${path || "/"}`, key };
}

// What a friend sent, pasted whole (findInvite): "Join me: https://relay.example/#KEY see
// you", or "Room key: S6c56 bnXQi ...". Looked into only up to this many characters: a
// longer text is read whole, as parseInvite reads it, and so refused unless it is a key.
export const MAX_PASTED_CHARACTERS = 4096;
const WORDS = new RegExp(`[${TRIMMED}]+`, "u");
const LINK_START = /(?:https?|wss?):\/\//i;
// What closes a link or a word in a sentence, and never ends a key ("." is one of a key's
// separators, which parseMinikey drops, and may end a sentence after a ">").
const CLOSING = /[)\]}>,;:!?.'"\u2019\u201d\u00bb]+$/u;
const OPENING = /^[(\[{<'"\u2018\u201c\u00ab]+/u;
// A key's characters and the ASCII separators a key is written with: one word.
const KEY_WORD = /^[1-9A-HJ-NP-Za-km-z._-]+$/;
// A short label, one to four words of letters, then ":" (or a dash between spaces), then
// the key: "Key:", "Room key:", "Mini key -". At the start of the text only.
const LABELED = /^(\p{L}[\p{L}\p{M}'\u2019]*(?: [\p{L}\p{M}'\u2019]+){0,3}) *(?:[:\uff1a]|\s[-\u2013\u2014]\s)(.*)$/su;
const MAX_LABEL_CHARACTERS = 40;
// parseMinikey's separators (PROTOCOL.md 3.5 step 1): what it does not count in a key.
const KEY_SEPARATORS = /[ \t\r\n\-_.\u00a0\u00ad\u2009\u200b\u2010\u2011\u202f\u2013\u2014\u2060\ufeff]/gu;

/** Whether `text` holds as many characters as a key, separators not counted: what is
 * wrong with it is then what is wrong with a key, not that it is something else. */
function keySized(text) {
  return [...text.replace(KEY_SEPARATORS, "")].length === MINIKEY_LENGTH;
}

/** `error` (a key's) knowing the text of the key it is about, for keyCaseHint. */
function about(error, keyText) {
  error.keyText = keyText;
  return error;
}

/**
 * The one invite link or labelled key in `text`, a message pasted whole, that parseInvite
 * refused read as one link or key: `{ server, key }` as parseInvite gives it, or null
 * when nothing is found (what parseInvite said of the whole text is then said). Only two
 * forms are taken: one http(s):// link with its #KEY among other words (its relay is the
 * link's, never one only named in the words around it), or, with no link, a short label
 * and ":" before the key (grouped or not); either only when its key passes its check.
 * Throws an Error when the text holds two different keys (a key alone among the words
 * counts, as does one mistyped), or links to two relays; and, when nothing passes, the
 * error of the one link (or labelled key) that did not: a key mistyped in a sentence is
 * said to be one. Linear in the text's length. The web client's Join field only: the
 * terminal takes a key or a link as one argument.
 */
export function findInvite(text) {
  if (text.length > MAX_PASTED_CHARACTERS) return null;
  const trimmed = trimAround(text);
  // Each key-sized thing, by its characters (separators dropped): what was made of it.
  const keys = new Map();
  const entry = (keyText) => {
    const name = keyText.replace(KEY_SEPARATORS, "");
    if (!keys.has(name)) {
      keys.set(name, { key: null, servers: new Map(), linkError: null, labelled: null, labelError: null, alone: false });
    }
    return keys.get(name);
  };
  const label = LABELED.exec(trimmed);
  if (label !== null && label[1].length <= MAX_LABEL_CHARACTERS) {
    const rest = label[2];
    try {
      const key = parseMinikey(rest);
      Object.assign(entry(rest), { key, labelled: key });
    } catch (error) {
      // Said only of what has a key's length: "SDehB-97fmB-..." is no label and a key.
      if (keySized(rest)) entry(rest).labelError = about(error, rest);
    }
  }
  const otherLinks = new Map(); // each link whose #part is no key's length -> its error
  const words = trimmed.split(WORDS);
  for (const word of words) {
    const start = word.search(LINK_START);
    if (start >= 0) {
      const link = word.slice(start).replace(CLOSING, "");
      const hash = link.indexOf("#");
      if (hash < 0) continue;
      const fragment = link.slice(hash + 1);
      try {
        const { server, key } = parseInvite(link);
        const found = entry(fragment);
        found.key = key;
        found.servers.set(new URL(server).href, server); // https://relay/ is https://relay:443/
      } catch (error) {
        if (keySized(fragment)) entry(fragment).linkError ??= about(error, link);
        else if (!otherLinks.has(link)) otherLinks.set(link, about(error, link));
      }
      continue;
    }
    // A link without its scheme ("relay.example/#KEY"): not taken, but a second key.
    const fragment = word.includes("#") ? word.slice(word.lastIndexOf("#") + 1).replace(CLOSING, "") : "";
    if (fragment.length <= 40 && keySized(fragment)) {
      entry(fragment);
      continue;
    }
    // A key alone among the words: not taken by itself, but a second key if it differs,
    // even one in one case (which a link may carry: PROTOCOL.md 3.5 step 7), or mistyped.
    const bare = word.replace(OPENING, "").replace(CLOSING, "");
    if (bare.length > 40 || !KEY_WORD.test(bare) || !keySized(bare)) continue;
    try {
      const key = parseMinikey(bare, { asTyped: false });
      const found = entry(bare);
      found.key ??= key;
      found.alone = true;
    } catch {
      // A key mistyped, most likely: its letters are random, with a digit or a capital
      // after the S ("Sure-thing-see-you-at-the-park" has neither, and is words).
      if (/^[Ss]/.test(bare) && /[0-9A-Z]/.test(bare.slice(1))) entry(bare);
    }
  }
  if (keys.size > 1) {
    throw new Error(`This text holds ${keys.size === 2 ? "two" : "several"} room keys: paste only one.`);
  }
  if (keys.size === 1) {
    const [{ key, servers, linkError, labelled, labelError, alone }] = keys.values();
    if (servers.size > 1) throw new Error("This text holds links to two relays: paste only one.");
    if (linkError !== null) throw linkError; // what is wrong with a link of it: its relay
    if (servers.size === 1) return { server: [...servers.values()][0], key };
    if (labelled !== null) return { server: null, key: labelled };
    if (labelError !== null) throw labelError;
    // Neither a link nor after a label: said, rather than the whole text's length.
    if (alone && words.length > 1) throw new Error("This text holds a room key among other words: paste the key alone, or the whole invite link.");
    return null;
  }
  if (otherLinks.size === 1) throw [...otherLinks.values()][0];
  return null;
}

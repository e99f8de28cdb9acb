// Invite links: `https://<relay>/#<key>`. The key sits in the fragment, which browsers never
// send to a server. Mirrors src/instantroom/client/invite.py.

import { parseMinikey } from "../protocol/minikey.js";

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
const AROUND = new RegExp(`^[${TRIMMED}]+|[${TRIMMED}]+$`, "g");
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
  const trimmed = text.replace(AROUND, "");
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

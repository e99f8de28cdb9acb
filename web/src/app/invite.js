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

const RELAY_PROTOCOLS = ["http:", "https:", "ws:", "wss:"];

/**
 * `{ server, key }` from an invite link or a bare key; `server` is null for a bare key.
 * Throws the MiniKeyError that names what is wrong with the key, or an Error for a relay
 * address that is not one.
 */
export function parseInvite(text) {
  const trimmed = text.trim();
  const hash = trimmed.indexOf("#");
  if (hash < 0) return { server: null, key: parseMinikey(trimmed) };
  const key = parseMinikey(trimmed.slice(hash + 1));
  let address = trimmed.slice(0, hash);
  if (!address) return { server: null, key };
  // A link copied without its scheme, as chats show them.
  if (!address.includes("://")) address = `https://${address}`;
  let url = null;
  try {
    url = new URL(address);
  } catch {
    url = null;
  }
  if (url === null || !RELAY_PROTOCOLS.includes(url.protocol) || !url.hostname) {
    throw new Error(`The link's relay address "${address}" is not one: it should start with https://.`);
  }
  if (url.username || url.password) {
    throw new Error("An invite link's relay address carries no user name or password.");
  }
  // The relay serves the app at /index.html too: its relay is the folder (as capture.js).
  const path = url.pathname.replace(/\/index\.html$/, "/");
  return { server: `${url.protocol}//${url.host}${path}`, key };
}

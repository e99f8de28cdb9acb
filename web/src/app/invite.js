// Invite links: `https://<relay>/#<key>`. The key sits in the fragment, which browsers never
// send to a server. Mirrors src/instantroom/client/invite.py.

import { parseMinikey } from "../protocol/minikey.js";

/** The invite link for `key` on the relay at `serverUrl` (http or https). */
export function formatInvite(serverUrl, key) {
  const url = new URL(serverUrl);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error("An invite link needs an http:// or https:// server.");
  }
  const path = url.pathname.endsWith("/") ? url.pathname : url.pathname + "/";
  return `${url.protocol}//${url.host}${path}#${key}`;
}

/**
 * `{ server, key }` from an invite link or a bare key; `server` is null for a bare key.
 * Throws the MiniKeyError that names what is wrong with the key.
 */
export function parseInvite(text) {
  const trimmed = text.trim();
  const hash = trimmed.indexOf("#");
  if (hash < 0) return { server: null, key: parseMinikey(trimmed) };
  const address = trimmed.slice(0, hash);
  let server = null;
  if (address) {
    const url = new URL(address);
    server = `${url.protocol}//${url.host}${url.pathname}`;
  }
  return { server, key: parseMinikey(trimmed.slice(hash + 1)) };
}

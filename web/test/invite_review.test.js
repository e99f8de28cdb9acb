// Invite links made from any relay address a client connects with: the link opens the
// relay's page (never its WebSocket endpoint, where the relay serves nothing), and it
// names the same relay again.
import assert from "node:assert/strict";
import { test } from "node:test";
import { websocketUrl } from "../src/client/connection.js";
import { formatInvite, parseInvite } from "../src/app/invite.js";

const key = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy";

test("a relay given by its WebSocket endpoint makes the link of its page", () => {
  for (const [server, link] of [
    ["https://chat.example.org/ws", "https://chat.example.org/"],
    ["http://127.0.0.1:8080/ws/", "http://127.0.0.1:8080/"],
    ["https://example.org/chat/ws", "https://example.org/chat/"],
    ["https://example.org/news", "https://example.org/news/"], // "ws" ends it, not "/ws"
    ["https://example.org/ws/chat", "https://example.org/ws/chat/"],
  ]) {
    assert.equal(formatInvite(server, key), `${link}#${key}`, server);
  }
});

test("the link names the relay it was made for, whatever address it was made from", () => {
  for (const server of [
    "https://chat.example.org",
    "http://127.0.0.1:8080/",
    "https://chat.example.org/ws",
    "http://[::1]:8080/ws",
    "https://example.org/chat/",
    "https://example.org/chat/ws/",
  ]) {
    const parsed = parseInvite(formatInvite(server, key));
    assert.equal(parsed.key, key);
    assert.equal(websocketUrl(parsed.server), websocketUrl(server), server);
  }
});

test("a user name or password in the relay's address never reaches the link", () => {
  assert.equal(formatInvite("https://someone:secret@chat.example.org/", key), `https://chat.example.org/#${key}`);
});

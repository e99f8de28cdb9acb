// Invite links, as src/instantroom/client/invite.py makes and reads them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { formatInvite, parseInvite } from "../src/app/invite.js";
import { ChecksumMismatch, NotBase58, OneCase, WrongLength } from "../src/protocol/errors.js";

// The published key and its one-character typo (../vectors/minikey.json).
const key = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy";
const typo = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRz";

test("an invite link puts the key in the fragment, after the relay's path", () => {
  assert.equal(formatInvite("https://chat.example.org", key), `https://chat.example.org/#${key}`);
  assert.equal(formatInvite("http://127.0.0.1:8080/", key), `http://127.0.0.1:8080/#${key}`);
  assert.equal(formatInvite("https://example.org/chat", key), `https://example.org/chat/#${key}`);
});

test("a link carries a stored key in one case, which a typed key may not be", () => {
  // A room stored before keys in one case were refused can still be shared: a link is
  // copied or scanned, not typed (PROTOCOL.md 3.5).
  const oneCase = "S6c56bnxqibjk9mqsye7ykvq7n113c";
  assert.equal(parseInvite(`https://chat.example.org/#${oneCase}`).key, oneCase);
  assert.throws(() => parseInvite(oneCase), OneCase);
});

test("only http and https relays make invite links", () => {
  assert.throws(() => formatInvite("wss://chat.example.org", key), /http/);
  assert.throws(() => formatInvite("not a url", key));
});

test("a link gives back its relay and key; a bare key has no relay", () => {
  assert.deepEqual(parseInvite(`https://chat.example.org/#${key}`), { server: "https://chat.example.org/", key });
  assert.deepEqual(parseInvite(`  ${key}  `), { server: null, key });
  assert.deepEqual(parseInvite(`#${key}`), { server: null, key });
  const grouped = key.match(/.{1,5}/g).join(" ");
  assert.deepEqual(parseInvite(`https://chat.example.org/#${grouped}`).key, key);
});

test("a link to the app's /index.html gives the relay's folder", () => {
  assert.deepEqual(parseInvite(`https://chat.example.org/index.html#${key}`), { server: "https://chat.example.org/", key });
  assert.deepEqual(parseInvite(`https://example.org/chat/index.html#${key}`), { server: "https://example.org/chat/", key });
});

test("a look-alike or invisible character in a key is named by its code point, never shown", () => {
  for (const [char, named] of [["\u0430", "U+0430"], ["\u200c", "U+200C"], ["\u{1d5ba}", "U+1D5BA"]]) {
    assert.throws(() => parseInvite(key.slice(0, 5) + char + key.slice(6)), (error) => {
      assert.ok(error instanceof NotBase58);
      assert.ok(error.message.startsWith(`Character 6 (${named}) cannot be in a room key`), error.message);
      assert.ok(!error.message.includes(char));
      return true;
    });
  }
});

test("a mistyped key says it is a typo, a short one says its length", () => {
  assert.throws(() => parseInvite(`https://chat.example.org/#${typo}`), (error) => {
    assert.ok(error instanceof ChecksumMismatch);
    assert.match(error.message, /typo/);
    return true;
  });
  assert.throws(() => parseInvite(key.slice(0, 20)), WrongLength);
});

test("a link copied without its scheme is taken as https; other schemes are refused", () => {
  assert.deepEqual(parseInvite(`chat.example.org/#${key}`), { server: "https://chat.example.org/", key });
  assert.deepEqual(parseInvite(`127.0.0.1:8080/#${key}`), { server: "https://127.0.0.1:8080/", key });
  assert.deepEqual(parseInvite(`wss://chat.example.org/#${key}`), { server: "wss://chat.example.org/", key });
  assert.throws(() => parseInvite(`ftp://chat.example.org/#${key}`), /https:\/\//);
  assert.throws(() => parseInvite(`https://#${key}`), /https:\/\//);
});

test("a relay address with a user name or password, or a broken host, is refused", () => {
  assert.throws(() => parseInvite(`https://someone:secret@chat.example.org/#${key}`), /no user name or password/);
  assert.throws(() => parseInvite(`https://[abc/#${key}`), /https:\/\//);
});

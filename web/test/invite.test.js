// Invite links, as src/instantroom/client/invite.py makes and reads them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_PASTED_CHARACTERS, findInvite, formatInvite, parseInvite } from "../src/app/invite.js";
import { ChecksumMismatch, NotBase58, OneCase, WrongLength } from "../src/protocol/errors.js";
import { makeMinikey } from "../src/protocol/minikey.js";

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

// What a friend sent, pasted whole: one link among other words, or a labelled key.
const grouped = key.match(/.{5}/g).join(" ");
const link = `https://relay.example/#${key}`;
const ONE_CASE_KEY = "S6C56BNXQJBJK9MQSYE7YKVQ7N112Q"; // passes the check, in one case

test("a link among other words gives the link's relay and key", () => {
  for (const text of [
    `Join me: ${link} see you`,
    `Join me: ${link}`,
    `Join me here (${link}), see you!`,
    `Join me: <${link}>.`,
    `“${link}”`,
    `Join me:\n${link}\nsee you`,
    `Join me: ${link} see you, or read https://docs.example/#joining first`,
    `Join me: ${link} (the key: ${grouped})`, // the same key again
    `${link} ${link}`, // the same link twice
  ]) {
    assert.deepEqual(findInvite(text), { server: "https://relay.example/", key }, text);
  }
  // A link carries a stored room's key in one case, as parseInvite takes it.
  assert.deepEqual(findInvite(`Join: https://relay.example/#${ONE_CASE_KEY} bye`), {
    server: "https://relay.example/",
    key: ONE_CASE_KEY,
  });
});

test("a short label before a key, grouped or not, gives the key on no relay", () => {
  for (const text of [
    `Key: ${key}`,
    `key: ${grouped}`,
    `Room key: ${grouped}`,
    `  Key:     ${grouped}\n`, // as the terminal client's show prints it
    `Room key:\n${grouped}`,
    `Mini key - ${grouped}`,
    `Mini key – ${key.match(/.{5}/g).join("-")}`,
    `Clé : ${key}`,
  ]) {
    assert.deepEqual(findInvite(text), { server: null, key }, text);
  }
});

test("two keys, or links to two relays, are refused, never one chosen", () => {
  for (const other of [makeMinikey((n) => crypto.getRandomValues(new Uint8Array(n))), ONE_CASE_KEY]) {
    for (const text of [
      `Join me: ${link} or https://relay.example/#${other}`,
      `Join me: ${link}, the key is ${other}`,
      `Key: ${key}\nKey: ${other}`,
    ]) {
      assert.throws(() => findInvite(text), { message: "This text holds two room keys: paste only one." }, text);
    }
  }
  for (const text of [
    `Join me: ${link} or this one https://relay.example/#${typo}`, // one mistyped, or another
    `Join me: ${link}, the key is ${typo}`,
  ]) {
    assert.throws(() => findInvite(text), { message: "This text holds two room keys: paste only one." }, text);
  }
  assert.throws(() => findInvite(`Join me: ${link} or https://b.example/#${key}`), /links to two relays: paste only one/);
});

test("a key mistyped among other words is said to be a typo, or of the wrong length", () => {
  for (const text of [
    `Join me: https://relay.example/#${typo} see you`,
    `Key: ${typo}`,
    `Room key: ${typo.match(/.{5}/g).join(" ")}`,
  ]) {
    assert.throws(() => findInvite(text), (error) => {
      assert.ok(error instanceof ChecksumMismatch, text);
      assert.match(error.message, /most likely a typo/);
      return true;
    });
  }
  assert.throws(() => findInvite(`Join me: https://relay.example/#${key.slice(0, 12)} see you`), (error) => {
    assert.ok(error instanceof WrongLength);
    assert.match(error.message, /this one has 12/);
    return true;
  });
  // Typed in one case after a label: said so (the Join screen adds how to fix it).
  assert.throws(() => findInvite(`Key: ${ONE_CASE_KEY}`), OneCase);
});

test("a key among other words, neither in a link nor after a label, is said to be one", () => {
  for (const text of [
    `the key is ${key}, see you`,
    `Key: ${key} see you`, // more than the key after the label
    `This is a long label before the key: ${key}`,
    `Relay: relay.example, Key: ${key}`,
    `Room key: ${key}\nThe app: https://relay.example/`,
  ]) {
    assert.throws(() => findInvite(text), /^Error: This text holds a room key among other words: paste the key alone/, text);
  }
});

test("a second key in a link without its scheme, or a ws:// link, is a second key", () => {
  const other = makeMinikey((n) => crypto.getRandomValues(new Uint8Array(n)));
  for (const text of [
    `New room: relay.example/#${other} (old one: https://relay.example/#${key})`,
    `https://relay.example/#${key} or wss://relay.example/#${other}`,
  ]) {
    assert.throws(() => findInvite(text), /two room keys/, text);
  }
});

test("words are not mistyped keys, and one relay written two ways is one", () => {
  const link = `https://relay.example/#${key}`;
  assert.deepEqual(findInvite(`${link} -- Sure-thing-see-you-at-the-park-at-nine`), { server: "https://relay.example/", key });
  assert.equal(findInvite(`${link} and https://relay.example:443/#${key}`).key, key);
});

test("nothing else is taken for a key: what parseInvite said stands", () => {
  for (const text of [
    `Join me: relay.example/#${key} see you`, // a link without http(s)://
    `${key.slice(0, 5)} - ${typo.slice(5).match(/.{5}/g).join(" - ")}`, // a key, mistyped, not a label
    `Key: ${key.slice(0, 20)}`,
    "",
    `Key: ${key}`.padEnd(MAX_PASTED_CHARACTERS + 1, " "), // too long to be looked into
  ]) {
    assert.equal(findInvite(text), null, text);
  }
});

test("a long pasted text is read in linear time", () => {
  // A run of white space inside (parseInvite trims the ends), and many words.
  const start = performance.now();
  assert.throws(() => parseInvite(`a${" ".repeat(200_000)}b`), WrongLength);
  assert.equal(findInvite(`x${" ".repeat(MAX_PASTED_CHARACTERS - 2)}y`), null);
  assert.equal(findInvite("Key: a b".repeat(MAX_PASTED_CHARACTERS / 8)), null);
  assert.ok(performance.now() - start < 2000);
});

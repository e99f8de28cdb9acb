// mixedScripts (PROTOCOL.md 4.4) beyond the shared vectors: what the check is for, named
// here rather than read from the code.

import assert from "node:assert/strict";
import { test } from "node:test";

import { CONFUSABLE_SCRIPTS, mixedScripts } from "../src/protocol/names.js";

test("a Latin name with one Cyrillic or Greek look-alike is flagged, with its scripts", () => {
  assert.deepEqual(mixedScripts("\u0430lice"), ["Latin", "Cyrillic"]); // Cyrillic а
  assert.deepEqual(mixedScripts("b\u043eb"), ["Latin", "Cyrillic"]); // Cyrillic о
  assert.deepEqual(mixedScripts("\u03bfscar"), ["Latin", "Greek"]); // Greek ο
  assert.deepEqual(mixedScripts("Ol\u0435g \u041f."), ["Latin", "Cyrillic"]); // Cyrillic е
});

test("the scripts come in the order Latin, Greek, Cyrillic, whatever the name's order", () => {
  assert.deepEqual(mixedScripts("\u0414a"), ["Latin", "Cyrillic"]);
  assert.deepEqual(mixedScripts("\u0434\u03b1"), ["Greek", "Cyrillic"]); // no Latin at all
  assert.deepEqual(mixedScripts("\u0434\u03b1a"), ["Latin", "Greek", "Cyrillic"]);
  assert.deepEqual(CONFUSABLE_SCRIPTS, ["Latin", "Greek", "Cyrillic"]);
});

test("a name in one script is not flagged, even one that looks like another script's", () => {
  for (const name of ["alice", "Zoë", "\u0414\u043c\u0438\u0442\u0440\u0438\u0439", "\u0430\u0440\u0435",
    "\u039d\u03af\u03ba\u03b7", "\u1f08\u03b8\u03b7\u03bd\u1fb6"]) {
    assert.deepEqual(mixedScripts(name), [], name);
  }
});

test("characters of none of the three scripts do not count", () => {
  for (const name of ["", "42", "   ", "😀", "王", "Bob 王", "\u0414\u0438\u043c\u0430 2\u00b2 😀", "Anna ❤️",
    "\u05e9\u05dc\u05d5\u05dd alice", "\u200balice\u200d"]) {
    assert.deepEqual(mixedScripts(name), [], name);
  }
});

test("a character several scripts use fits any of them", () => {
  // U+0485 (a combining mark of Cyrillic and Latin) beside either: one script fits all.
  assert.deepEqual(mixedScripts("\u0430\u0485"), []);
  assert.deepEqual(mixedScripts("a\u0485"), []);
  // Beside the Greek α it does not: no one script fits both, and all the scripts named count.
  assert.deepEqual(mixedScripts("\u03b1\u0485"), ["Latin", "Greek", "Cyrillic"]);
});

test("the name is taken in NFKC first", () => {
  assert.deepEqual(mixedScripts("\uff41\u0430"), ["Latin", "Cyrillic"]); // fullwidth ａ is Latin a
  assert.deepEqual(mixedScripts("\u212a\u0430"), ["Latin", "Cyrillic"]); // the Kelvin sign is K
  assert.deepEqual(mixedScripts("\ufb01\u03bd"), ["Latin", "Greek"]); // the ligature ﬁ is fi
});

test("each call returns a list of its own", () => {
  const first = mixedScripts("\u0430lice");
  first.push("Han");
  assert.deepEqual(mixedScripts("\u0430lice"), ["Latin", "Cyrillic"]);
});

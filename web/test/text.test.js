import assert from "node:assert/strict";
import { test } from "node:test";
import { shown } from "../src/app/text.js";

test("ordinary text, accents and emoji are shown as they are", () => {
  assert.equal(shown("Zoë 👋 مرحبا"), "Zoë 👋 مرحبا");
  assert.equal(shown("two\nlines\ttab", { lines: true }), "two\nlines\ttab");
});

test("bidi overrides, zero-width and control characters are made visible", () => {
  assert.equal(shown("alice\u202egnp.exe"), "alice<U+202E>gnp.exe");
  assert.equal(shown("bo\u200bb"), "bo<U+200B>b");
  assert.equal(shown("\u2066x\u2069"), "<U+2066>x<U+2069>");
  assert.equal(shown("bell\u0007"), "bell<U+0007>");
  assert.equal(shown("\u009b31m"), "<U+009B>31m");
});

test("a name has no line breaks; a message keeps them", () => {
  assert.equal(shown("a\nb"), "a<U+000A>b");
  assert.equal(shown("a\nb", { lines: true }), "a\nb");
});

test("emoji keep their joiners and variation selectors, in names and messages", () => {
  for (const text of ["Anna ❤️", "👨‍👩‍👧", "👍🏽", "🏳️‍🌈"]) {
    assert.equal(shown(text), text);
    assert.equal(shown(text, { lines: true }), text);
  }
});

test("a name cannot hide characters that make it look like another", () => {
  assert.equal(shown("alice\u{e0020}"), "alice<U+E0020>");
  assert.equal(shown("alice\u200d"), "alice<U+200D>");
  assert.equal(shown("a\ufe0flice"), "a<U+FE0F>lice");
  assert.equal(shown("\u3164alice"), "<U+3164>alice");
  assert.equal(shown("ali\u00adce"), "ali<U+00AD>ce");
  assert.equal(shown("alice\u2028"), "alice<U+2028>");
});

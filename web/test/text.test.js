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

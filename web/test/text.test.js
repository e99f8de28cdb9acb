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
  // The blank braille pattern draws nothing, yet is no space: "alice" + it is another name.
  assert.equal(shown("alice\u2800"), "alice<U+2800>");
  // Braille art in a message needs it.
  assert.equal(shown("\u28ff\u2800\u28ff", { lines: true }), "\u28ff\u2800\u28ff");
});

test("a message cannot hide characters either: format characters and fillers are made visible", () => {
  const lines = { lines: true };
  assert.equal(shown("ok\u{e0068}\u{e0069}", lines), "ok<U+E0068><U+E0069>"); // tag characters: a hidden text
  assert.equal(shown("pay\u00adpal.com", lines), "pay<U+00AD>pal.com");
  assert.equal(shown("a\u180eb", lines), "a<U+180E>b");
  assert.equal(shown("x\ufff9y\ufffaz\ufffb", lines), "x<U+FFF9>y<U+FFFA>z<U+FFFB>");
  assert.equal(shown("a\u3164b\u115fc", lines), "a<U+3164>b<U+115F>c");
  // The zero-width non-joiner and joiner stay: Persian and Indic text need them.
  assert.equal(shown("می\u200cخواهم", lines), "می\u200cخواهم");
  assert.equal(shown("क्\u200dष", lines), "क्\u200dष");
  assert.equal(shown("a\u200cb"), "a<U+200C>b"); // not in names
  // Invisible without being format characters: the combining grapheme joiner, Mongolian
  // free variation selectors, unassigned default-ignorables; and runs of joiners.
  for (const options of [{}, lines]) {
    assert.equal(shown("alice\u034f", options), "alice<U+034F>");
    assert.equal(shown("ali\u2065ce", options), "ali<U+2065>ce");
    assert.equal(shown("a\u180bb\u{e01f0}", options), "a<U+180B>b<U+E01F0>");
  }
  assert.equal(shown("a\u200c\u200d\u200cb", lines), "a\u200c<U+200D><U+200C>b");
  // Nor in turns: a joiner and a selector, again and again, hide bytes as well as a run.
  assert.equal(shown("hi\u200c\u{e0173}\u200c\u{e0165}!", lines), "hi\u200c<U+E0173><U+200C><U+E0165>!");
  assert.equal(shown("ok\u200d\ufe0f\u200d\ufe0f", lines), "ok\u200d<U+FE0F><U+200D><U+FE0F>");
  // An emoji's selector then joiner stays (🏳️‍🌈, ❤️‍🔥); so do the three subdivision flags,
  // and tag letters behind a black flag that no flag has are escaped.
  for (const emoji of ["\u{1f3f3}\ufe0f\u200d\u{1f308}", "\u2764\ufe0f\u200d\u{1f525}"]) assert.equal(shown(emoji, lines), emoji);
  assert.equal(shown("\u{1f3f4}\u{e0061}\u{e0062}\u{e0063}\u{e007f}", lines), "\u{1f3f4}<U+E0061><U+E0062><U+E0063><U+E007F>");
  assert.equal(shown("\u{e0001}en", lines), "<U+E0001>en");
  // Names are held to the same rule, as before.
  assert.equal(shown("pay\u00adpal"), "pay<U+00AD>pal");
});

test("a message keeps what emoji need: joiners, variation selectors, subdivision flags", () => {
  const lines = { lines: true };
  const england = "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}";
  const scotland = "\u{1f3f4}\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}";
  for (const text of [england, `go ${scotland}!`, "👩‍💻", "🧑🏽‍🚀", "1️⃣", "葛\u{e0100}"]) {
    assert.equal(shown(text, lines), text);
  }
  // Tag characters anywhere else, or too many for a flag, are escaped; so is a variation
  // selector after another (a run of them hides data).
  assert.equal(shown("\u{e0067}\u{e007f}", lines), "<U+E0067><U+E007F>");
  assert.equal(shown("\u{1f3f4}\u{e0041}\u{e007f}", lines), "\u{1f3f4}<U+E0041><U+E007F>");
  assert.equal(shown(`\u{1f3f4}${"\u{e0061}".repeat(8)}\u{e007f}`, lines), `\u{1f3f4}${"<U+E0061>".repeat(8)}<U+E007F>`);
  assert.equal(shown("❤\ufe0f\ufe0f\u{e0100}", lines), "❤\ufe0f<U+FE0F><U+E0100>");
  // A name keeps its rule: no tag characters at all.
  assert.equal(shown(england), "\u{1f3f4}<U+E0067><U+E0062><U+E0065><U+E006E><U+E0067><U+E007F>");
});

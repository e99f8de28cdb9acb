// Decoding any bytes gives a frame that re-encodes to the same bytes, or a FrameError:
// never anything else. Random bytes and mutations of the corpus's frames.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { it } from "node:test";

import { fromHex, hex } from "../src/protocol/bytes.js";
import { FrameError, UsageError } from "../src/protocol/errors.js";
import { decodeFrame, encodeFrame } from "../src/protocol/frames.js";

const corpus = JSON.parse(readFileSync(new URL("../../vectors/protocol.json", import.meta.url), "utf8"));
const seeds = corpus.frames.map((vector) => fromHex(vector.encoded));

function check(data) {
  let frame;
  try {
    frame = decodeFrame(data);
  } catch (error) {
    assert.ok(error instanceof FrameError, `${error.name}: ${error.message}`);
    return;
  }
  assert.equal(hex(encodeFrame(frame)), hex(data));
}

it("random bytes decode to a frame or a FrameError", () => {
  for (let n = 0; n < 20000; n++) {
    const length = n % 200;
    check(crypto.getRandomValues(new Uint8Array(length)));
  }
});

it("mutated frames decode to a frame or a FrameError", () => {
  const random = (limit) => crypto.getRandomValues(new Uint32Array(1))[0] % limit;
  for (let n = 0; n < 20000; n++) {
    const seed = seeds[n % seeds.length];
    const data = new Uint8Array(seed);
    switch (n % 3) {
      case 0:
        data[random(data.length)] ^= 1 << random(8);
        check(data);
        break;
      case 1:
        check(data.subarray(0, random(data.length + 1)));
        break;
      default: {
        const longer = new Uint8Array(data.length + 1 + random(8));
        longer.set(data);
        check(longer);
      }
    }
  }
});

it("refuses to encode a field that does not fit, as the Python core does, rather than wrap it", () => {
  const room = new Uint8Array(32);
  for (const frame of [
    { type: "Ack", ref: 2 ** 32 },
    { type: "Ack", ref: -1 },
    { type: "Ack", ref: 1.5 },
    { type: "Presence", roomId: room, members: 2 ** 32 + 5 },
    { type: "Ping", token: 2n ** 64n },
    { type: "Error", code: 70000, ref: 0, roomId: room, reason: "x" },
    { type: "Error", code: 1, ref: 0, roomId: room, reason: "lone \ud800 surrogate" },
  ]) {
    assert.throws(() => encodeFrame(frame), UsageError, JSON.stringify(frame, (k, v) => (typeof v === "bigint" ? String(v) : v)));
  }
  // The largest values still encode.
  assert.equal(hex(encodeFrame({ type: "Ack", ref: 2 ** 32 - 1 })), "12ffffffff");
  assert.equal(hex(encodeFrame({ type: "Ping", token: 2n ** 64n - 1n })), "20ffffffffffffffff");
});

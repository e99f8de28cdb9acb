// Sealing refuses what the Python core's seal_envelope refuses (UsageError), rather than
// sealing a message that every receiver would refuse, or one other than the caller's.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Kind, openEnvelope, sealEnvelope } from "../src/protocol/envelope.js";
import { UsageError } from "../src/protocol/errors.js";
import { deviceKeyFromSeed, roomKeysFromMinikey } from "../src/protocol/kdf.js";

const room = roomKeysFromMinikey("S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy");
const device = deviceKeyFromSeed(new Uint8Array(32).fill(1));
const other = deviceKeyFromSeed(new Uint8Array(32).fill(2));
const nonce = new Uint8Array(12);

function message(fields) {
  return {
    messageId: new Uint8Array(16).fill(3),
    timestampMs: 1_790_000_000_000,
    kind: Kind.TEXT,
    senderKey: device.publicKey,
    senderName: "alice",
    body: new TextEncoder().encode("hi"),
    ...fields,
  };
}

describe("sealing", () => {
  it("seals and opens a message as it was given", async () => {
    const sealed = await sealEnvelope(room, device, message({}), nonce);
    assert.deepEqual(await openEnvelope(room, sealed), message({}));
  });

  it("refuses a message that carries another device's key (PROTOCOL.md 5.5)", async () => {
    await assert.rejects(sealEnvelope(room, device, message({ senderKey: other.publicKey }), nonce), UsageError);
  });

  it("refuses a kind that does not fit in one byte, rather than wrapping it", async () => {
    for (const kind of [256, -1, 1.5]) {
      await assert.rejects(sealEnvelope(room, device, message({ kind }), nonce), UsageError, String(kind));
    }
  });

  it("refuses a text body that is not UTF-8, which every receiver would refuse", async () => {
    await assert.rejects(sealEnvelope(room, device, message({ body: Uint8Array.of(0xff) }), nonce), UsageError);
    // Other kinds carry bytes.
    await sealEnvelope(room, device, message({ kind: Kind.JOIN, body: Uint8Array.of(0xff) }), nonce);
  });

  it("refuses a name with a lone surrogate, rather than sealing U+FFFD in its place", async () => {
    await assert.rejects(sealEnvelope(room, device, message({ senderName: "al\ud800" }), nonce), UsageError);
  });
});

// The shared JSON test vectors (../vectors), checked against the JavaScript core: the
// browser must derive, seal, open, sign and frame byte for byte as the Python core does.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { fromHex, hex } from "../src/protocol/bytes.js";
import { FrameError } from "../src/protocol/errors.js";
import * as envelopes from "../src/protocol/envelope.js";
import { decodeFrame, encodeFrame } from "../src/protocol/frames.js";
import { signJoinProof, verifyJoinProof } from "../src/protocol/join.js";
import { deviceKeyFromSeed, fingerprint, roomKeysFromMinikey } from "../src/protocol/kdf.js";
import {
  BASE58_ALPHABET,
  formatMinikey,
  makeMinikey,
  parseMinikey,
  rootSecret,
  spellMinikey,
} from "../src/protocol/minikey.js";
import { ErrorCode } from "../src/protocol/codes.js";
import { canonicalName, mixedScripts } from "../src/protocol/names.js";
import { Roster } from "../src/protocol/roster.js";
import { parseInvite } from "../src/app/invite.js";

const load = (name) => JSON.parse(readFileSync(new URL(`../../vectors/${name}`, import.meta.url), "utf8"));
const corpus = load("protocol.json");
const published = load("minikey.json");
const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const BYTE_FIELDS = new Set(["room_id", "room_public_key", "challenge", "signature", "envelope"]);

function errorName(fn) {
  try {
    fn();
  } catch (error) {
    return error.name;
  }
  return null;
}

async function asyncErrorName(promise) {
  try {
    await promise;
  } catch (error) {
    return error.name;
  }
  return null;
}

describe("the published mini key vectors", () => {
  for (const { minikey, sha256 } of published.valid) {
    it(`${minikey} is valid and its secret is its SHA-256`, () => {
      assert.equal(parseMinikey(minikey), minikey);
      assert.equal(hex(rootSecret(minikey)), sha256);
    });
  }
  for (const { minikey, why } of published.invalid) {
    it(`${minikey} is refused: ${why}`, () => {
      assert.throws(() => parseMinikey(minikey));
    });
  }
});

describe("derivations", () => {
  for (const vector of corpus.derivations) {
    it(vector.minikey, () => {
      const room = roomKeysFromMinikey(vector.minikey);
      assert.equal(formatMinikey(vector.minikey), vector.grouped);
      assert.deepEqual(spellMinikey(vector.minikey), vector.spelled);
      assert.equal(hex(rootSecret(vector.minikey)), vector.root_secret);
      assert.equal(hex(room.messageKey), vector.message_key);
      assert.equal(hex(room.signingSeed), vector.room_signing_seed);
      assert.equal(hex(room.publicKey), vector.room_public_key);
      assert.equal(hex(room.roomId), vector.room_id);
    });
  }
});

describe("devices and fingerprints", () => {
  for (const vector of corpus.devices) {
    it(vector.public_key, () => {
      assert.equal(hex(deviceKeyFromSeed(fromHex(vector.seed)).publicKey), vector.public_key);
    });
  }
  for (const vector of corpus.fingerprints) {
    it(vector.fingerprint, () => {
      assert.equal(fingerprint(fromHex(vector.public_key)), vector.fingerprint);
    });
  }
});

describe("mini key parsing", () => {
  for (const vector of corpus.minikey_parsing) {
    it(vector.id, () => {
      assert.equal(errorName(() => parseMinikey(vector.input)), vector.error);
      if (vector.key !== null) assert.equal(parseMinikey(vector.input), vector.key);
    });
  }
  it("never makes a key in one case: that candidate is skipped", () => {
    // Its first candidate is all small after the S and passes the check (parsing refuses
    // such a key as typed in one case); the next ones come from the CSPRNG.
    const allSmall = "S6c56bnxqibjk9mqsye7ykvq7n113c";
    const rigged = [...allSmall.slice(1)].map((c) => BASE58_ALPHABET.indexOf(c));
    let first = true;
    const random = (n) => {
      if (!first) return crypto.getRandomValues(new Uint8Array(n));
      first = false;
      const bytes = new Uint8Array(n);
      bytes.set(rigged);
      return bytes;
    };
    const made = makeMinikey(random);
    assert.notEqual(made, allSmall);
    assert.equal(parseMinikey(made), made);
    assert.equal(errorName(() => parseMinikey(allSmall)), "OneCase");
  });

  it("makes 2,000 valid, distinct keys from the CSPRNG", () => {
    const random = (n) => crypto.getRandomValues(new Uint8Array(n));
    const keys = new Set(Array.from({ length: 2000 }, () => makeMinikey(random)));
    assert.equal(keys.size, 2000);
    for (const key of keys) assert.equal(parseMinikey(key), key);
  });
});

describe("envelopes", () => {
  for (const vector of corpus.envelopes) {
    it(vector.id, async () => {
      const room = roomKeysFromMinikey(vector.minikey);
      const device = deviceKeyFromSeed(fromHex(vector.device_seed));
      const fields = vector.message;
      const message = {
        messageId: fromHex(fields.message_id),
        timestampMs: fields.timestamp_ms,
        kind: fields.kind,
        senderKey: fromHex(fields.sender_public_key),
        senderName: fields.sender_name,
        body: fromHex(fields.body),
      };
      const sealed = await envelopes.sealEnvelope(room, device, message, fromHex(vector.nonce));
      assert.equal(hex(sealed), vector.envelope);
      assert.equal(sealed.length - 1 - 12 - 16, vector.padded_size);
      const opened = await envelopes.openEnvelope(room, fromHex(vector.envelope));
      assert.deepEqual(opened, message);
    });
  }
  for (const vector of corpus.envelope_failures) {
    it(`refuses ${vector.id} with ${vector.error}`, async () => {
      const room = roomKeysFromMinikey(vector.minikey);
      const name = await asyncErrorName(envelopes.openEnvelope(room, fromHex(vector.envelope)));
      assert.equal(name, vector.error);
    });
  }
});

describe("join proofs", () => {
  for (const vector of corpus.join_proofs) {
    it(vector.id, () => {
      const room = roomKeysFromMinikey(vector.minikey);
      const challenge = fromHex(vector.challenge);
      const signature = signJoinProof(room.signingSeed, room.roomId, challenge);
      assert.equal(hex(signature), vector.signature);
      verifyJoinProof(fromHex(vector.room_public_key), fromHex(vector.room_id), challenge, signature);
      const other = new Uint8Array(challenge);
      other[0] ^= 1;
      assert.equal(
        errorName(() => verifyJoinProof(room.publicKey, room.roomId, other, signature)),
        "JoinProofError",
      );
    });
  }
});

describe("frames", () => {
  for (const vector of corpus.frames) {
    it(vector.id, () => {
      const encoded = fromHex(vector.encoded);
      const decoded = decodeFrame(encoded);
      assert.equal(decoded.type, vector.type);
      for (const [name, value] of Object.entries(vector.fields)) {
        const got = decoded[camel(name)];
        if (BYTE_FIELDS.has(name)) assert.equal(hex(got), value, name);
        else if (name === "token") assert.equal(got, BigInt(value), name);
        else assert.equal(got, value, name);
      }
      // Encoding the vector's fields gives its bytes; so does encoding what was decoded.
      const frame = { type: vector.type };
      for (const [name, value] of Object.entries(vector.fields)) {
        frame[camel(name)] = BYTE_FIELDS.has(name) ? fromHex(value) : name === "token" ? BigInt(value) : value;
      }
      assert.equal(hex(encodeFrame(frame)), vector.encoded);
      assert.equal(hex(encodeFrame(decoded)), vector.encoded);
    });
  }
  for (const vector of corpus.frame_failures) {
    it(`refuses ${vector.id}`, () => {
      const data =
        vector.encoded !== null
          ? fromHex(vector.encoded)
          : (() => {
              const bytes = new Uint8Array(vector.length);
              bytes[0] = parseInt(vector.first_byte, 16);
              return bytes;
            })();
      let error;
      try {
        decodeFrame(data);
      } catch (caught) {
        error = caught;
      }
      assert.ok(error instanceof FrameError, `${vector.id} decoded`);
      assert.equal(error.code, ErrorCode[vector.error_code]);
    });
  }
});

describe("invites", () => {
  for (const vector of corpus.invites) {
    it(vector.id, () => {
      if (vector.error === undefined) {
        assert.deepEqual(parseInvite(vector.text), { server: vector.server, key: vector.key });
        return;
      }
      const name = errorName(() => parseInvite(vector.text));
      // A relay address refused is a plain Error, in words for people.
      assert.equal(name === "Error" ? "BadRelayAddress" : name, vector.error);
    });
  }
});

describe("canonical names", () => {
  for (const vector of corpus.canonical_names) {
    it(vector.id, () => {
      const codePoints = [...vector.name].map((c) => c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0"));
      assert.equal(codePoints.join(" "), vector.code_points);
      assert.equal(canonicalName(vector.name), vector.canonical);
      assert.equal(canonicalName(vector.canonical), vector.canonical); // its own canonical form
      assert.deepEqual(mixedScripts(vector.name), vector.mixed_scripts);
    });
  }
});

describe("the replay filter", () => {
  for (const vector of corpus.replay_filter) {
    it(vector.id, () => {
      const filter = new envelopes.ReplayFilter({
        maxAgeMs: vector.max_age_ms,
        maxFutureMs: vector.max_future_ms,
        capacity: vector.capacity,
      });
      vector.steps.forEach((step, number) => {
        if (step.op === "raise_floor") {
          filter.raiseFloor(step.floor);
        } else if (step.op === "remember") {
          filter.remember(fromHex(step.id), step.t, step.now);
        } else {
          let outcome = "accepted";
          try {
            const message = { messageId: fromHex(step.id), timestampMs: step.t };
            if (step.op === "check") filter.check(message, step.now);
            else filter.accept(message, step.now);
          } catch (error) {
            outcome = error.name;
          }
          assert.equal(outcome, step.result, `step ${number}`);
        }
      });
    });
  }
});

describe("presence: the roster of PROTOCOL.md 5.7", () => {
  // A kind by its name in the file, or by its number for one v1 does not name.
  const kindOf = (kind) => (typeof kind === "number" ? kind : envelopes.Kind[kind]);
  const kindName = (kind) => Object.keys(envelopes.Kind).find((name) => envelopes.Kind[name] === kind) ?? kind;
  for (const vector of corpus.presence) {
    it(vector.id, () => {
      const roster = new Roster(fromHex(vector.own_key), { announce: vector.announce });
      vector.steps.forEach((step, number) => {
        if (step.op === "joined") roster.joined(step.count, step.now);
        else if (step.op === "count") roster.countChanged(step.count, step.now);
        else if (step.op === "heard") {
          assert.notEqual(kindOf(step.kind), undefined, `step ${number}: a kind this core does not name`);
          roster.heard(kindOf(step.kind), fromHex(step.from), step.name, step.key_changed, step.now, step.sent);
        } else if (step.op === "tick") roster.tick(step.now);
        else if (step.op === "leaving") roster.leaving();
        else assert.fail(`step ${number}: no op ${step.op}`);
        assert.deepEqual(roster.takeSends().map(kindName), step.sends, `step ${number} (${step.op}): sends`);
        const members = roster.members.map(({ deviceKey, name, keyChanged }) => ({ key: hex(deviceKey), name, key_changed: keyChanged }));
        assert.deepEqual(members, step.members, `step ${number} (${step.op}): members`);
        for (const member of roster.members) assert.equal(member.fingerprint, fingerprint(member.deviceKey));
      });
    });
  }
});

describe("every section of the corpus is checked here", () => {
  it("has no section this file does not know", () => {
    const known = ["about", "derivations", "fingerprints", "devices", "minikey_parsing", "envelopes",
      "envelope_failures", "join_proofs", "frames", "frame_failures", "canonical_names", "invites", "replay_filter",
      "presence"];
    assert.deepEqual(Object.keys(corpus).sort(), known.sort());
  });
});

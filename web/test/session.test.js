// The sans-I/O client session, driven frame by frame with no socket and no relay: the
// tests play the relay with frames.js, and a tiny in-test relay fans messages out
// between sessions.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { concat, hex } from "../src/protocol/bytes.js";
import { ErrorCode } from "../src/protocol/codes.js";
import { Kind, pad, sealEnvelope, unpad } from "../src/protocol/envelope.js";
import { FrameError, UsageError } from "../src/protocol/errors.js";
import { decodeFrame, encodeFrame, NO_ROOM } from "../src/protocol/frames.js";
import { verifyJoinProof } from "../src/protocol/join.js";
import { deviceKeyFromSeed, fingerprint, roomKeysFromMinikey } from "../src/protocol/kdf.js";
import { ReplayFilter } from "../src/protocol/envelope.js";
import {
  ClientSession,
  MAX_IN_FLIGHT,
  MAX_NAMES_PER_ROOM,
  MAX_OUTBOX,
  NOT_SENT_IN_TIME,
  NOT_SENT_REFUSED,
  OUTBOX_MAX_AGE_MS,
  REJOIN_PAUSE_MS,
  roomHex,
} from "../src/protocol/session.js";

const KEY_A = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy";
const KEY_B = "SDehB97fmBnFwezqLcANLCCQkQyfz1";
const NOW = 1_790_000_000_000;
const HOUR = 3_600_000;
const roomA = roomKeysFromMinikey(KEY_A);
const roomB = roomKeysFromMinikey(KEY_B);

/** Deterministic "random" bytes: a big-endian counter, so nonces and ids never repeat. */
function counterBytes(start) {
  let next = BigInt(start);
  return (n) => {
    const out = new Uint8Array(n);
    let value = next++;
    for (let i = n - 1; i >= 0 && value > 0n; i--, value >>= 8n) out[i] = Number(value & 0xffn);
    return out;
  };
}

/** `envelope` sealed again for `room` with the last byte of its signature flipped. */
async function withBrokenSignature(room, envelope) {
  const key = await crypto.subtle.importKey("raw", room.messageKey, "AES-GCM", false, ["encrypt", "decrypt"]);
  const additionalData = concat(envelope.subarray(0, 1), room.roomId);
  const iv = envelope.subarray(1, 13);
  const inner = unpad(new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData }, key, envelope.subarray(13))));
  inner[inner.length - 1] ^= 1;
  const nonce = new Uint8Array(12).fill(7);
  const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData }, key, pad(inner));
  return concat(envelope.subarray(0, 1), nonce, new Uint8Array(sealed));
}

function makeSession(seed) {
  return new ClientSession({ deviceSeed: new Uint8Array(32).fill(seed), randomBytes: counterBytes(seed * 1_000_000) });
}

const frame = (fields) => encodeFrame(fields);
const errorFrame = (code, roomId, { ref = 0, reason = "" } = {}) => frame({ type: "Error", code, ref, roomId, reason });
const decoded = (session) => session.framesToSend().map(decodeFrame);
const deliverFrom = (publish) => frame({ type: "Deliver", roomId: publish.roomId, envelope: publish.envelope });
/** Alice, connected, with her JOIN for `room` on the wire and not answered yet. */
function joining(room) {
  const session = makeSession(1);
  session.connectionMade();
  session.join(room, {});
  decoded(session);
  return session;
}

/** Play the relay's side of the handshake and check the proof as a relay would. */
async function joinFully(session, room, { members = 1, expiresAtMs = NOW + HOUR, name = "" } = {}) {
  session.join(room, { name });
  const [join, ...rest] = decoded(session);
  assert.equal(rest.length, 0);
  assert.equal(join.type, "Join");
  assert.equal(hex(join.roomId), hex(room.roomId));
  assert.equal(hex(join.roomPublicKey), hex(room.publicKey));
  const challenge = crypto.getRandomValues(new Uint8Array(32));
  await session.receive(frame({ type: "Challenge", roomId: room.roomId, challenge }), NOW);
  const [proof] = decoded(session);
  assert.equal(proof.type, "Proof");
  verifyJoinProof(join.roomPublicKey, room.roomId, challenge, proof.signature);
  await session.receive(frame({ type: "Joined", roomId: room.roomId, expiresAtMs, members }), NOW);
  assert.deepEqual(session.events(), [{ type: "joined", roomId: room.roomId, expiresAtMs, members }]);
}

async function connectedAndJoined(seed, room, options) {
  const session = makeSession(seed);
  session.connectionMade();
  await joinFully(session, room, options);
  return session;
}

/** Reconnect `session` and walk the handshake up to JOINED with `members`. */
async function rejoin(session, room, members) {
  session.connectionMade();
  const [join] = decoded(session);
  assert.equal(join.type, "Join");
  await session.receive(frame({ type: "Challenge", roomId: room.roomId, challenge: new Uint8Array(32) }), NOW);
  assert.equal(decoded(session)[0].type, "Proof");
  await session.receive(frame({ type: "Joined", roomId: room.roomId, expiresAtMs: 0, members }), NOW);
}

describe("joining", () => {
  it("answers the challenge with a proof that verifies and reports JOINED", async () => {
    await connectedAndJoined(1, roomA, { members: 3 });
  });

  it("sends JOIN only once connected, and again after every reconnect", async () => {
    const alice = makeSession(1);
    alice.join(roomA);
    assert.deepEqual(alice.framesToSend(), []);
    alice.connectionMade();
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    alice.connectionLost();
    alice.connectionMade();
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
  });

  it("joins a room it already has only once", () => {
    const alice = makeSession(1);
    alice.connectionMade();
    alice.join(roomA, { name: "alice" });
    alice.join(roomA, { name: "other" });
    assert.equal(alice.framesToSend().length, 1);
    assert.equal(alice.rooms.get(roomHex(roomA.roomId)).name, "alice");
  });

  it("refuses a name over 64 bytes of UTF-8", () => {
    assert.throws(() => makeSession(1).join(roomA, { name: "é".repeat(33) }), UsageError);
  });

  it("ignores a CHALLENGE for a room it does not know", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), NOW);
    assert.deepEqual(alice.framesToSend(), []);
  });
});

describe("publishing", () => {
  it("keeps a message in the outbox until the relay acknowledges its ref", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const sent = await alice.sendText(roomA.roomId, "one", NOW);
    const [publish] = decoded(alice);
    assert.equal(publish.type, "Publish");
    assert.notEqual(publish.ref, 0);
    assert.equal(alice.unacknowledged, 1);
    await alice.receive(frame({ type: "Ack", ref: publish.ref + 1 }), NOW); // not ours
    assert.equal(alice.unacknowledged, 1);
    assert.deepEqual(alice.events(), []);
    await alice.receive(frame({ type: "Ack", ref: publish.ref }), NOW);
    assert.deepEqual(alice.events(), [{ type: "accepted", roomId: roomA.roomId, messageId: sent.messageId }]);
    assert.equal(alice.unacknowledged, 0);
  });

  it("gives every PUBLISH its own ref", async () => {
    const alice = await connectedAndJoined(1, roomA);
    for (const text of ["a", "b", "c"]) await alice.sendText(roomA.roomId, text, NOW);
    const refs = decoded(alice).map((f) => f.ref);
    assert.equal(new Set(refs).size, 3);
    assert.ok(!refs.includes(0));
  });

  it("sends a message written before joining once joined", async () => {
    const alice = makeSession(1);
    alice.join(roomA);
    await alice.sendText(roomA.roomId, "early", NOW);
    assert.deepEqual(alice.framesToSend(), []);
    alice.connectionMade();
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), NOW);
    decoded(alice);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), NOW);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
  });

  it("refuses to send to a room it has not joined, and what cannot be sealed", async () => {
    await assert.rejects(makeSession(1).sendText(roomA.roomId, "hi", NOW), UsageError);
    const alice = await connectedAndJoined(1, roomA);
    await assert.rejects(alice.send(roomA.roomId, 256, new Uint8Array(1), NOW), UsageError);
    await assert.rejects(alice.send(roomA.roomId, Kind.TEXT, new Uint8Array(60001), NOW), UsageError);
    // Text that is not UTF-8, which every receiver would refuse, as the Python core refuses it.
    await assert.rejects(alice.send(roomA.roomId, Kind.TEXT, Uint8Array.of(0xff), NOW), UsageError);
    await assert.rejects(alice.sendText(roomA.roomId, "late", 2 ** 53), UsageError);
    // A lone surrogate (half of an emoji), which TextEncoder would turn into U+FFFD.
    await assert.rejects(alice.sendText(roomA.roomId, "half \ud83d", NOW), /encodable as UTF-8/);
    await assert.rejects(alice.sendText(roomA.roomId, "\ude00 half", NOW), /encodable as UTF-8/);
    assert.equal(alice.unacknowledged, 0);
    assert.deepEqual(alice.framesToSend(), []);
  });

  it("drops a message whose room was left while it was being sealed", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const sending = alice.sendText(roomA.roomId, "too late", NOW);
    alice.leave(roomA.roomId);
    await assert.rejects(sending, UsageError);
    assert.equal(alice.unacknowledged, 0);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Leave"]);
  });

  it("keeps a rate-limited message and resends the same bytes", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.sendText(roomA.roomId, "too fast", NOW);
    const [publish] = decoded(alice);
    await alice.receive(errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId, { ref: publish.ref, reason: "slow down" }), NOW);
    const [refused] = alice.events();
    assert.equal(refused.type, "refused");
    assert.equal(refused.fatal, false);
    assert.equal(alice.unacknowledged, 1);
    alice.resendUnacknowledged();
    const [again] = decoded(alice);
    assert.equal(hex(again.envelope), hex(publish.envelope));
    assert.notEqual(again.ref, publish.ref);
  });

  it("keeps at most MAX_IN_FLIGHT publishes on the wire, in order, more as ACKs come", async () => {
    const alice = await connectedAndJoined(1, roomA);
    alice.connectionLost();
    const total = MAX_IN_FLIGHT * 2 + 50;
    for (let n = 0; n < total; n++) await alice.sendText(roomA.roomId, `queued ${n}`, NOW);
    assert.equal(decoded(alice).length, 0); // offline: nothing leaves
    await rejoin(alice, roomA, 1);
    let wire = decoded(alice).filter((f) => f.type === "Publish");
    assert.equal(wire.length, MAX_IN_FLIGHT);
    await alice.receive(frame({ type: "Ack", ref: wire[0].ref }), NOW);
    const next = decoded(alice).filter((f) => f.type === "Publish");
    assert.equal(next.length, 1);
    // A refusal pauses publishing, ACKs or not, until the caller's pause is over.
    await alice.receive(errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId, { ref: wire[1].ref }), NOW);
    assert.equal(alice.waitingToResend, true);
    await alice.receive(frame({ type: "Ack", ref: wire[2].ref }), NOW);
    assert.equal(decoded(alice).length, 0);
    alice.resendUnacknowledged();
    assert.equal(alice.waitingToResend, false);
    const resent = decoded(alice).filter((f) => f.type === "Publish");
    assert.equal(resent.length, 2); // back to the limit: 98 on the wire, and these two
    assert.equal(hex(resent[0].envelope), hex(wire[1].envelope)); // the refused one goes first
    // Everything arrives once ACKs keep coming, and never more than the limit at once.
    wire = [...wire.slice(3), ...next, ...resent];
    let accepted = 2;
    while (wire.length) {
      assert.ok(wire.length <= MAX_IN_FLIGHT);
      const publish = wire.shift();
      await alice.receive(frame({ type: "Ack", ref: publish.ref }), NOW);
      accepted += 1;
      wire.push(...decoded(alice).filter((f) => f.type === "Publish"));
    }
    assert.equal(accepted, total);
    assert.equal(alice.unacknowledged, 0);
  });

  it("a frame of a lost connection, still waiting behind a seal, is not handled", async () => {
    const alice = joining(roomA);
    const challenge = frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) });
    await alice.receive(challenge, NOW);
    decoded(alice);
    // A JOINED queued behind a send that is still sealing, then the connection drops.
    const sealing = alice.sendText(roomA.roomId, "sealing", NOW);
    const late = alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), NOW);
    alice.connectionLost();
    await sealing;
    await late;
    assert.equal(alice.rooms.get(roomHex(roomA.roomId)).joined, false);
    assert.deepEqual(alice.events().filter((e) => e.type === "joined"), []);
    alice.connectionMade();
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]); // no PUBLISH before JOINED
  });

  it("an ACK with a ref not in flight (or 0) takes nothing out of the outbox", async () => {
    const alice = await connectedAndJoined(1, roomA);
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "waiting", NOW);
    for (const ref of [0, 12345]) await alice.receive(frame({ type: "Ack", ref }), NOW);
    assert.equal(alice.unacknowledged, 1);
    assert.deepEqual(alice.events(), []);
  });

  it("places freed by a room's refusals go to what waits in other rooms", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await joinFully(alice, roomB);
    for (let n = 0; n < MAX_IN_FLIGHT; n++) await alice.sendText(roomA.roomId, `a ${n}`, NOW);
    const inFlight = decoded(alice).filter((f) => f.type === "Publish");
    await alice.sendText(roomB.roomId, "for room B", NOW);
    assert.equal(decoded(alice).length, 0);
    // Room A expires on the relay: its PUBLISHes come back as NOT_JOINED after ROOM_EXPIRED.
    await alice.receive(errorFrame(ErrorCode.ROOM_EXPIRED, roomA.roomId), NOW);
    for (const publish of inFlight) {
      await alice.receive(errorFrame(ErrorCode.NOT_JOINED, roomA.roomId, { ref: publish.ref }), NOW);
    }
    const sent = decoded(alice).filter((f) => f.type === "Publish");
    assert.equal(sent.length, 1);
    assert.equal(hex(sent[0].roomId), hex(roomB.roomId));
  });

  it("a PUBLISH still in flight when its room is left keeps its place until answered", async () => {
    const alice = await connectedAndJoined(1, roomA);
    for (let n = 0; n < MAX_IN_FLIGHT; n++) await alice.sendText(roomA.roomId, `a ${n}`, NOW);
    const sent = decoded(alice).filter((f) => f.type === "Publish");
    assert.equal(sent.length, MAX_IN_FLIGHT);
    alice.leave(roomA.roomId);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Leave"]);
    await joinFully(alice, roomB);
    await alice.sendText(roomB.roomId, "waits for an answer", NOW);
    assert.equal(decoded(alice).filter((f) => f.type === "Publish").length, 0);
    await alice.receive(frame({ type: "Ack", ref: sent[0].ref }), NOW);
    assert.equal(decoded(alice).filter((f) => f.type === "Publish").length, 1);
  });

  it("a JOIN retry does nothing while a JOIN is outstanding (a left and joined-again room)", async () => {
    const alice = joining(roomA);
    await alice.receive(errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId), NOW);
    alice.events();
    // Before the caller's retry fires, the room is left and joined again.
    alice.leave(roomA.roomId);
    alice.join(roomA, {});
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Leave", "Join"]);
    alice.retryJoin(roomA.roomId); // the stale retry
    assert.deepEqual(decoded(alice), []);
    // After a refusal of that JOIN, a retry sends one again.
    await alice.receive(errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId), NOW);
    alice.retryJoin(roomA.roomId);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
  });

  it("leaving and joining again before the answer sends no second JOIN", async () => {
    // A LEAVE and a new JOIN behind an unanswered JOIN would make the relay forget the
    // first challenge: the PROOF for it would fail and the room be given up.
    const alice = makeSession(1);
    alice.connectionMade();
    alice.join(roomA, {});
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    alice.leave(roomA.roomId);
    alice.join(roomA, {});
    assert.deepEqual(decoded(alice), []);
    const challenge = crypto.getRandomValues(new Uint8Array(32));
    await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge }), NOW);
    const [proof, ...rest] = decoded(alice);
    assert.equal(proof.type, "Proof");
    assert.deepEqual(rest, []);
    verifyJoinProof(roomA.publicKey, roomA.roomId, challenge, proof.signature); // throws if it fails
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 }), NOW);
    assert.deepEqual(alice.events().map((e) => e.type), ["joined"]);
  });

  for (const [name, answer, leaves] of [
    ["a CHALLENGE", () => frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), true],
    ["JOINED", () => frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), true],
    ["ALREADY_JOINED", () => errorFrame(ErrorCode.ALREADY_JOINED, roomA.roomId), true],
    ["RATE_LIMITED", () => errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId), false],
    ["PROOF_FAILED", () => errorFrame(ErrorCode.PROOF_FAILED, roomA.roomId), false],
  ]) {
    it(`a room left before its JOIN was answered is left once ${name} answers it`, async () => {
      const alice = joining(roomA);
      alice.leave(roomA.roomId);
      assert.deepEqual(decoded(alice), []);
      await alice.receive(answer(), NOW);
      assert.deepEqual(decoded(alice).map((f) => f.type), leaves ? ["Leave"] : []);
      assert.deepEqual(alice.events(), []);
      alice.join(roomA, {});
      assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    });
  }

  it("a JOIN refused for a held LEAVE's place is sent again behind it, once", async () => {
    const alice = joining(roomA);
    alice.leave(roomA.roomId);
    alice.join(roomB, {});
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), NOW);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Leave"]);
    await alice.receive(errorFrame(ErrorCode.TOO_MANY_ROOMS, roomB.roomId), NOW);
    const [join] = decoded(alice);
    assert.equal(join.type, "Join");
    assert.deepEqual(join.roomId, roomB.roomId);
    assert.deepEqual(alice.events(), []);
    // Refused again: that one is the relay's limit, and the room is given up.
    await alice.receive(errorFrame(ErrorCode.TOO_MANY_ROOMS, roomB.roomId), NOW);
    assert.deepEqual(decoded(alice), []);
    assert.deepEqual(alice.events().map((e) => [e.type, e.fatal]), [["refused", true]]);
    assert.equal(alice.rooms.size, 0);
  });

  it("a JOIN refused before the held LEAVE went out waits for it", async () => {
    const alice = joining(roomA);
    await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), NOW);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Proof"]);
    alice.leave(roomA.roomId);
    alice.join(roomB, {});
    decoded(alice);
    await alice.receive(errorFrame(ErrorCode.TOO_MANY_ROOMS, roomB.roomId), NOW);
    assert.deepEqual(decoded(alice), []);
    alice.retryJoin(roomB.roomId); // a caller's timer changes nothing
    assert.deepEqual(decoded(alice), []);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), NOW);
    assert.deepEqual(
      decoded(alice).map((f) => [f.type, hex(f.roomId)]),
      [
        ["Leave", hex(roomA.roomId)],
        ["Join", hex(roomB.roomId)],
      ],
    );
    assert.deepEqual(alice.events(), []);
  });

  it("leaving a room whose JOIN waits behind a held LEAVE sends nothing", async () => {
    const alice = joining(roomA);
    alice.leave(roomA.roomId);
    alice.join(roomB, {});
    decoded(alice);
    await alice.receive(errorFrame(ErrorCode.TOO_MANY_ROOMS, roomB.roomId), NOW);
    alice.leave(roomB.roomId);
    assert.deepEqual(decoded(alice), []);
    await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), NOW);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Leave"]);
  });

  it("a reconnect forgets a held LEAVE", () => {
    const alice = joining(roomA);
    alice.leave(roomA.roomId);
    alice.connectionLost();
    alice.connectionMade();
    alice.join(roomA, {});
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
  });

  it("a message refused as NOT_JOINED has the session join again once, then resend it", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.sendText(roomA.roomId, "one", NOW);
    await alice.sendText(roomA.roomId, "two", NOW);
    const [first, second] = decoded(alice);
    await alice.receive(errorFrame(ErrorCode.NOT_JOINED, roomA.roomId, { ref: first.ref }), NOW);
    await alice.receive(errorFrame(ErrorCode.NOT_JOINED, roomA.roomId, { ref: second.ref }), NOW);
    const refusals = alice.events();
    assert.deepEqual(refusals.map((e) => [e.type, e.fatal]), [["refused", false], ["refused", false]]);
    // One JOIN for both refusals: a second would replace the challenge under the first PROOF.
    const [join, ...more] = decoded(alice);
    assert.equal(join.type, "Join");
    assert.equal(more.length, 0);
    assert.equal(alice.unacknowledged, 2);
    await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), NOW);
    assert.equal(decoded(alice)[0].type, "Proof");
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 }), NOW);
    const resent = decoded(alice).filter((f) => f.type === "Publish");
    assert.deepEqual(resent.map((f) => hex(f.envelope)), [hex(first.envelope), hex(second.envelope)]);
  });

  it("a relay refusing as NOT_JOINED again and again gets one proof per REJOIN_PAUSE_MS", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.sendText(roomA.roomId, "one", NOW);
    let proofs = 0;
    for (let n = 0; n < 20; n++) {
      const now = NOW + n * 100; // twenty round trips in two seconds
      await alice.tick(now);
      for (const sent of decoded(alice)) {
        if (sent.type === "Publish") {
          await alice.receive(errorFrame(ErrorCode.NOT_JOINED, roomA.roomId, { ref: sent.ref }), now);
        } else if (sent.type === "Join") {
          const challenge = new Uint8Array(32).fill(n);
          await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge }), now);
          proofs += decoded(alice).filter((f) => f.type === "Proof").length;
          await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), now);
        }
      }
    }
    assert.equal(proofs, 1);
    assert.equal(alice.unacknowledged, 1); // the message waits, kept
    const proved = NOW + 100; // the proof for the first JOIN again
    await alice.tick(proved + REJOIN_PAUSE_MS - 1);
    assert.deepEqual(decoded(alice), []);
    await alice.tick(proved + REJOIN_PAUSE_MS);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    // A new connection starts afresh.
    alice.connectionLost();
    alice.connectionMade();
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
  });

  it("a relay refusing each PROOF as RATE_LIMITED gets one per REJOIN_PAUSE_MS, but for the first retry", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    alice.join(roomA, {});
    const proofs = [];
    for (let n = 0; n < 20; n++) {
      const now = NOW + n * 1000; // the client retries a second after each refusal
      await alice.tick(now);
      alice.retryJoin(roomA.roomId);
      for (const sent of decoded(alice)) {
        assert.equal(sent.type, "Join");
        await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), now);
        assert.deepEqual(decoded(alice).map((f) => f.type), ["Proof"]);
        proofs.push(now);
        await alice.receive(errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId), now);
      }
    }
    assert.deepEqual(proofs, [NOW, NOW + 1000, NOW + 11_000]);
  });

  it("a NOT_JOINED naming no PUBLISH of ours in that room sends no JOIN (each costs a proof)", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await joinFully(alice, roomB);
    await alice.sendText(roomB.roomId, "in the other room", NOW);
    const [publish] = decoded(alice);
    for (const ref of [7777, 0, publish.ref]) {
      await alice.receive(errorFrame(ErrorCode.NOT_JOINED, roomA.roomId, { ref }), NOW);
    }
    // The refused PUBLISH goes again (it was not taken); no JOIN goes anywhere.
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
    assert.equal(alice.rooms.get(roomHex(roomA.roomId)).joined, true);
  });

  it("leaving sends LEAVE and forgets the room's outbox", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.sendText(roomA.roomId, "never acknowledged", NOW);
    decoded(alice);
    alice.leave(roomA.roomId);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Leave"]);
    assert.equal(alice.unacknowledged, 0);
    assert.equal(alice.rooms.size, 0);
  });
});

describe("receiving", () => {
  it("opens a DELIVER from another session, with the name used in that room", async () => {
    const alice = await connectedAndJoined(1, roomA, { name: "alice", members: 2 });
    const bob = await connectedAndJoined(2, roomA, { name: "bob", members: 2 });
    const sent = await alice.sendText(roomA.roomId, "hello bob ✓", NOW);
    const [publish] = decoded(alice);
    await bob.receive(deliverFrom(publish), NOW + 5);
    const [event] = bob.events();
    assert.equal(event.type, "message");
    assert.equal(event.text, "hello bob ✓");
    assert.equal(event.kind, Kind.TEXT);
    assert.equal(event.message.senderName, "alice");
    assert.equal(hex(event.message.messageId), hex(sent.messageId));
    assert.equal(event.fingerprint, alice.fingerprint);
    assert.equal(event.fingerprint, fingerprint(alice.device.publicKey));
    assert.equal(event.keyChanged, false);
  });

  it("surfaces other kinds with no text", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomA);
    await alice.send(roomA.roomId, Kind.TYPING, new Uint8Array(0), NOW);
    await bob.receive(deliverFrom(decoded(alice)[0]), NOW);
    const [event] = bob.events();
    assert.equal(event.type, "message");
    assert.equal(event.kind, Kind.TYPING);
    assert.equal(event.text, null);
  });

  it("drops a replayed envelope and a stale one", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomA);
    await alice.sendText(roomA.roomId, "once", NOW);
    await alice.sendText(roomA.roomId, "from two hours ago", NOW - 2 * HOUR);
    const [fresh, old] = decoded(alice);
    await bob.receive(deliverFrom(fresh), NOW);
    await bob.receive(deliverFrom(fresh), NOW + 1000);
    await bob.receive(deliverFrom(old), NOW);
    assert.deepEqual(
      bob.events().map((e) => [e.type, e.reason, e.aheadMs]),
      [["message", undefined, undefined], ["rejected", "ReplayedMessage", 0], ["rejected", "StaleMessage", 0]],
    );
  });

  it("says how far ahead a message dropped as dated in the future was (a clock set wrong)", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomA);
    const carol = await connectedAndJoined(3, roomA);
    await alice.sendText(roomA.roomId, "from a clock 12 minutes fast", NOW);
    const [fast] = decoded(alice);
    await bob.receive(deliverFrom(fast), NOW - 12 * 60_000);
    await carol.receive(deliverFrom(fast), NOW - 5 * 60_000); // just inside the window
    assert.deepEqual(
      bob.events().map((e) => [e.type, e.reason, e.aheadMs]),
      [["rejected", "StaleMessage", 12 * 60_000]],
    );
    assert.deepEqual(carol.events().map((e) => e.type), ["message"]);
  });

  it("drops a replayed or stale envelope before its signature is checked (PROTOCOL.md 5.6)", async () => {
    // A relay can send one recorded envelope again and again: each cost a signature check
    // (3 ms here) before the replay filter dropped it. Its signature is now never reached:
    // a copy whose signature is broken is still a replay, or stale, and not a BadSignature.
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomA);
    await alice.sendText(roomA.roomId, "once", NOW);
    const [publish] = decoded(alice);
    const broken = await withBrokenSignature(roomA, publish.envelope);
    await bob.receive(deliverFrom(publish), NOW);
    await bob.receive(deliverFrom({ ...publish, envelope: broken }), NOW + 1000);
    await bob.receive(deliverFrom({ ...publish, envelope: broken }), NOW + HOUR + 1);
    // Not seen before, and in the window: its signature is checked, and fails.
    const carol = await connectedAndJoined(3, roomA);
    await carol.receive(deliverFrom({ ...publish, envelope: broken }), NOW);
    assert.deepEqual(
      [...bob.events(), ...carol.events()].map((e) => [e.type, e.reason]),
      [["message", undefined], ["rejected", "ReplayedMessage"], ["rejected", "StaleMessage"], ["rejected", "BadSignature"]],
    );
  });

  it("rejects an envelope relabelled with another room's id, and a bit flipped one", async () => {
    const alice = await connectedAndJoined(1, roomB);
    const bob = await connectedAndJoined(2, roomA);
    await alice.sendText(roomB.roomId, "wrong room", NOW);
    const [publish] = decoded(alice);
    await bob.receive(frame({ type: "Deliver", roomId: roomA.roomId, envelope: publish.envelope }), NOW);
    const flipped = new Uint8Array(publish.envelope);
    flipped[40] ^= 0x01;
    bob.join(roomB);
    await bob.receive(frame({ type: "Deliver", roomId: roomB.roomId, envelope: flipped }), NOW);
    await bob.receive(frame({ type: "Deliver", roomId: roomB.roomId, envelope: new Uint8Array(10) }), NOW);
    assert.deepEqual(bob.events(), [
      { type: "rejected", roomId: roomA.roomId, reason: "DecryptionFailed", aheadMs: 0 },
      { type: "rejected", roomId: roomB.roomId, reason: "DecryptionFailed", aheadMs: 0 },
      { type: "rejected", roomId: roomB.roomId, reason: "MalformedEnvelope", aheadMs: 0 },
    ]);
    // The untouched envelope still opens in its own room.
    await bob.receive(deliverFrom(publish), NOW);
    assert.equal(bob.events()[0].text, "wrong room");
  });

  it("ignores a DELIVER for a room it is not in", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomB);
    await alice.sendText(roomA.roomId, "not for bob", NOW);
    await bob.receive(deliverFrom(decoded(alice)[0]), NOW);
    assert.deepEqual(bob.events(), []);
  });

  it("flags a name seen before with another device key", async () => {
    const alice = await connectedAndJoined(1, roomA, { name: "alice" });
    const mallory = await connectedAndJoined(3, roomA, { name: "alice" });
    const bob = await connectedAndJoined(2, roomA);
    const publishes = [];
    for (const [session, text] of [[alice, "it is me"], [mallory, "it is me too"], [alice, "really me"]]) {
      await session.sendText(roomA.roomId, text, NOW);
      publishes.push(...decoded(session));
    }
    for (const publish of publishes) await bob.receive(deliverFrom(publish), NOW + 2);
    const events = bob.events();
    assert.deepEqual(events.map((e) => e.keyChanged), [false, true, true]);
    assert.notEqual(events[0].fingerprint, events[1].fingerprint);
  });

  it("flags every message under our own name from another key (PROTOCOL.md 4.3)", async () => {
    const alice = await connectedAndJoined(1, roomA, { name: "alice" });
    const mallory = await connectedAndJoined(3, roomA, { name: "Alice " });
    const alsoAlice = await connectedAndJoined(1, roomA, { name: "alice" }); // the same device, another tab
    const publishes = [];
    for (const [session, text] of [[mallory, "it is me"], [mallory, "still me"], [alsoAlice, "me, in another tab"]]) {
      await session.sendText(roomA.roomId, text, NOW);
      publishes.push(...decoded(session));
    }
    for (const publish of publishes) await alice.receive(deliverFrom(publish), NOW + 2);
    assert.deepEqual(alice.events().map((e) => e.keyChanged), [true, true, false]);
  });

  it("no name is no name of ours: a stranger without one is not flagged for it", async () => {
    const nameless = await connectedAndJoined(1, roomA);
    const stranger = await connectedAndJoined(2, roomA);
    await stranger.sendText(roomA.roomId, "hello", NOW);
    await nameless.receive(deliverFrom(decoded(stranger)[0]), NOW + 2);
    assert.deepEqual(nameless.events().map((e) => e.keyChanged), [false]);
  });

  it("a frame while disconnected counts for nothing: no PUBLISH before the next JOINED", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    alice.join(roomA);
    decoded(alice);
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "after the outage", NOW);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 }), NOW);
    assert.deepEqual(alice.events(), []);
    alice.connectionMade();
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    assert.equal(alice.unacknowledged, 1);
  });

  it("a frame fed while disconnected stays ignored when a connection is made before its turn", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    alice.join(roomA);
    decoded(alice);
    alice.connectionLost();
    const sending = alice.sendText(roomA.roomId, "sealed meanwhile", NOW); // takes a turn first
    const joined = alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 }), NOW);
    alice.connectionMade();
    await sending;
    await joined;
    assert.deepEqual(alice.events(), []);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]); // no PUBLISH before JOINED
  });

  it("refuses a name with a lone surrogate at join, not at every send", () => {
    const alice = makeSession(1);
    assert.throws(() => alice.join(roomA, { name: "al\ud83dice" }), UsageError);
    assert.equal(alice.rooms.size, 0);
  });

  it("a name is tracked per room", async () => {
    const alice = await connectedAndJoined(1, roomA, { name: "sam" });
    const mallory = await connectedAndJoined(3, roomB, { name: "sam" });
    const bob = await connectedAndJoined(2, roomA);
    await joinFully(bob, roomB);
    await alice.sendText(roomA.roomId, "in A", NOW);
    await mallory.sendText(roomB.roomId, "in B", NOW);
    await bob.receive(deliverFrom(decoded(alice)[0]), NOW);
    await bob.receive(deliverFrom(decoded(mallory)[0]), NOW);
    assert.deepEqual(bob.events().map((e) => e.keyChanged), [false, false]);
  });

  it("keeps one replay filter per room: a flood in one room does not silence another", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomA);
    await joinFully(alice, roomB);
    await joinFully(bob, roomB);
    bob.rooms.get(roomHex(roomB.roomId)).replays.capacity = 3;
    for (let n = 0; n < 5; n++) await alice.sendText(roomB.roomId, `flood ${n}`, NOW + 200_000);
    for (const publish of decoded(alice)) await bob.receive(deliverFrom(publish), NOW);
    bob.events();
    await alice.sendText(roomA.roomId, "still heard", NOW);
    await bob.receive(deliverFrom(decoded(alice)[0]), NOW);
    const [event] = bob.events();
    assert.equal(event.type, "message");
    assert.equal(event.text, "still heard");
  });

  it("handles frames in the order they came even when not awaited one by one", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomA);
    for (let n = 0; n < 4; n++) await alice.sendText(roomA.roomId, `m${n}`, NOW + n);
    const publishes = decoded(alice);
    const pending = publishes.map((publish) => bob.receive(deliverFrom(publish), NOW + 10));
    pending.push(bob.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 2 }), NOW));
    await Promise.all(pending);
    assert.deepEqual(
      bob.events().map((e) => e.text ?? e.type),
      ["m0", "m1", "m2", "m3", "presence"],
    );
  });

  it("answers PONG and refuses what only clients send and what is not a frame", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    alice.ping(42n);
    assert.deepEqual(decoded(alice), [{ type: "Ping", token: 42n }]);
    await alice.receive(frame({ type: "Pong", token: 42n }), NOW);
    assert.deepEqual(alice.events(), [{ type: "pong", token: 42n }]);
    await assert.rejects(alice.receive(frame({ type: "Ping", token: 1n }), NOW), FrameError);
    await assert.rejects(alice.receive(new Uint8Array([0x99, 1, 2]), NOW), FrameError);
    await assert.rejects(alice.receive(new Uint8Array(0), NOW), FrameError);
    // A refused frame does not stop the next one.
    await alice.receive(frame({ type: "Pong", token: 7n }), NOW);
    assert.deepEqual(alice.events(), [{ type: "pong", token: 7n }]);
  });

  it("ignores a DELIVER whose room was left while it was being opened", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const bob = await connectedAndJoined(2, roomA);
    await alice.sendText(roomA.roomId, "hi", NOW);
    const receiving = bob.receive(deliverFrom(decoded(alice)[0]), NOW);
    bob.leave(roomA.roomId);
    await receiving;
    assert.deepEqual(bob.events(), []);
  });
});

describe("reconnecting", () => {
  it("resends unacknowledged messages byte for byte once the room has refilled", async () => {
    const alice = await connectedAndJoined(1, roomA, { members: 2 });
    const bob = await connectedAndJoined(2, roomA, { members: 2 });
    await alice.sendText(roomA.roomId, "lost ack", NOW);
    const [first] = decoded(alice);
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "written while away", NOW + 1);
    assert.deepEqual(alice.framesToSend(), []);
    await rejoin(alice, roomA, 1);
    alice.events();
    // Only alice is back: the outbox waits for the room to refill.
    assert.equal(alice.holding(roomA.roomId), true);
    assert.deepEqual(alice.framesToSend(), []);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 2 }), NOW);
    assert.deepEqual(alice.events(), [{ type: "presence", roomId: roomA.roomId, members: 2 }]);
    assert.equal(alice.holding(roomA.roomId), false);
    const resent = decoded(alice);
    assert.deepEqual(resent.map((f) => f.type), ["Publish", "Publish"]);
    assert.equal(hex(resent[0].envelope), hex(first.envelope));
    assert.notEqual(resent[0].ref, 0);
    // The first copy had been delivered: bob drops the second by its id.
    await bob.receive(deliverFrom(first), NOW + 2);
    await bob.receive(deliverFrom(resent[0]), NOW + 3);
    await bob.receive(deliverFrom(resent[1]), NOW + 4);
    assert.deepEqual(
      bob.events().map((e) => e.text ?? e.reason),
      ["lost ack", "ReplayedMessage", "written while away"],
    );
    // Acknowledged now: after another reconnect nothing is sent again.
    for (const publish of resent) await alice.receive(frame({ type: "Ack", ref: publish.ref }), NOW);
    assert.equal(alice.unacknowledged, 0);
    alice.connectionLost();
    await rejoin(alice, roomA, 2);
    assert.deepEqual(alice.framesToSend(), []);
  });

  it("an ACK from before the reconnect acknowledges nothing after it", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.sendText(roomA.roomId, "one", NOW);
    const [old] = decoded(alice);
    alice.connectionLost();
    await rejoin(alice, roomA, 1);
    const [resent] = decoded(alice);
    assert.notEqual(resent.ref, old.ref);
    await alice.receive(frame({ type: "Ack", ref: old.ref }), NOW);
    assert.equal(alice.unacknowledged, 1);
  });

  it("release ends the wait for members", async () => {
    const alice = await connectedAndJoined(1, roomA, { members: 3 });
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "anyone?", NOW);
    await rejoin(alice, roomA, 1);
    assert.equal(alice.holding(roomA.roomId), true);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 2 }), NOW);
    assert.deepEqual(alice.framesToSend(), []); // 2 of 3: still waiting
    alice.release(roomA.roomId);
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
  });

  it("a drop during the wait keeps waiting for the count before the first", async () => {
    const alice = await connectedAndJoined(1, roomA, { members: 3 });
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "anyone?", NOW);
    await rejoin(alice, roomA, 1);
    alice.connectionLost(); // again, before the others are back
    await rejoin(alice, roomA, 2);
    assert.equal(alice.holding(roomA.roomId), true);
    assert.deepEqual(alice.framesToSend(), []);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 3 }), NOW);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
  });

  it("a room that was never joined before the drop is not held", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    alice.join(roomA);
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "hi", NOW);
    await rejoin(alice, roomA, 1);
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
  });

  for (const joinedBetweenFailedTries of [false, true]) {
    it(`a room first joined after the relay was out of reach waits the whole grace (joined ${joinedBetweenFailedTries ? "between" : "before"} failed tries)`, async () => {
      // No count from before: whoever else is in the room may be reconnecting too.
      const alice = makeSession(1);
      if (!joinedBetweenFailedTries) alice.join(roomA);
      alice.connectFailed();
      if (joinedBetweenFailedTries) alice.join(roomA);
      alice.connectFailed(); // the backoff's next try
      await alice.sendText(roomA.roomId, "the relay is back?", NOW);
      await rejoin(alice, roomA, 5);
      assert.equal(alice.holding(roomA.roomId), true);
      assert.equal(alice.heldSince(roomA.roomId), NOW);
      assert.deepEqual(alice.framesToSend(), []);
      await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 6 }), NOW + 1);
      assert.deepEqual(alice.framesToSend(), []); // no count says when all are back
      alice.release(roomA.roomId);
      assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
    });
  }

  it("a failed try long ago holds no room joined since", async () => {
    // The web client stops trying while it has no room: the next room sends at once.
    const alice = makeSession(1);
    alice.join(roomB);
    alice.connectFailed();
    await alice.leave(roomB.roomId);
    alice.join(roomA);
    await alice.sendText(roomA.roomId, "an hour later", NOW);
    await rejoin(alice, roomA, 2);
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
  });

  it("a release for good outlasts later failed tries and drops", async () => {
    // A caller whose deadline is near wants its message sent, not held past it.
    const alice = makeSession(1);
    alice.join(roomA);
    alice.release(roomA.roomId, { forGood: true });
    alice.connectFailed();
    await alice.sendText(roomA.roomId, "now", NOW);
    await rejoin(alice, roomA, 1);
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
    alice.connectionLost();
    alice.connectFailed();
    await rejoin(alice, roomA, 1);
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]); // resent at once
  });

  it("a room joined before waits for its count after failed tries, not the whole grace", async () => {
    const alice = await connectedAndJoined(1, roomA, { members: 2 });
    alice.connectionLost();
    alice.connectFailed();
    await alice.sendText(roomA.roomId, "after the outage", NOW + 1);
    await rejoin(alice, roomA, 1);
    assert.equal(alice.holding(roomA.roomId), true);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 2 }), NOW + 2);
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Publish"]);
  });

  it("drops what it had to send when the connection is lost", async () => {
    const alice = await connectedAndJoined(1, roomA);
    alice.ping(1n);
    alice.connectionLost();
    assert.deepEqual(alice.framesToSend(), []);
  });
});

describe("restoring the outbox after a restart", () => {
  const publishes = (session) => decoded(session).filter((f) => f.type === "Publish");
  /** Alice after a lock or a reload: the same device key, a new session. */
  const restarted = () =>
    new ClientSession({ deviceSeed: new Uint8Array(32).fill(1), randomBytes: counterBytes(7_000_000) });
  /** What a store kept of alice's outbox: written offline, never acknowledged. */
  async function keptOutbox(texts, at = NOW) {
    const alice = makeSession(1);
    alice.join(roomA, { name: "alice" });
    for (const [n, text] of texts.entries()) await alice.sendText(roomA.roomId, text, at + n);
    assert.deepEqual(alice.framesToSend(), []);
    return alice.outboxOf(roomA.roomId);
  }

  it("outboxOf lists a room's unacknowledged messages, oldest first, until their ACK", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await joinFully(alice, roomB);
    const one = await alice.sendText(roomA.roomId, "one", NOW);
    await alice.sendText(roomB.roomId, "other room", NOW);
    const two = await alice.sendText(roomA.roomId, "two", NOW + 1);
    const [first, , second] = publishes(alice);
    const listed = alice.outboxOf(roomA.roomId);
    assert.deepEqual(
      listed.map((o) => [hex(o.messageId), o.timestampMs, hex(o.envelope)]),
      [
        [hex(one.messageId), NOW, hex(first.envelope)],
        [hex(two.messageId), NOW + 1, hex(second.envelope)],
      ],
    );
    listed[0].envelope.fill(0); // a copy: the outbox keeps its own
    await alice.receive(frame({ type: "Ack", ref: first.ref }), NOW);
    assert.deepEqual(alice.outboxOf(roomA.roomId).map((o) => hex(o.envelope)), [hex(second.envelope)]);
  });

  it("resends a restored message byte for byte, with its id; bob shows it once", async () => {
    const kept = await keptOutbox(["written offline"]);
    const bob = await connectedAndJoined(2, roomA, { members: 2 });
    const alice = restarted();
    alice.join(roomA, { name: "alice" });
    for (const o of kept) assert.equal(alice.restore(roomA.roomId, o.messageId, o.timestampMs, o.envelope, NOW + 10), true);
    assert.equal(alice.unacknowledged, 1);
    assert.deepEqual(alice.framesToSend(), []); // not connected: it waits
    await rejoin(alice, roomA, 2);
    alice.events();
    const [publish, ...rest] = publishes(alice);
    assert.equal(rest.length, 0);
    assert.equal(hex(publish.envelope), hex(kept[0].envelope));
    await alice.receive(frame({ type: "Ack", ref: publish.ref }), NOW + 20);
    assert.deepEqual(alice.events(), [{ type: "accepted", roomId: roomA.roomId, messageId: kept[0].messageId }]);
    assert.equal(alice.unacknowledged, 0);
    // Delivered once to bob, and a copy (the first one went out before the lock, its ACK
    // lost) is dropped by its id.
    await bob.receive(deliverFrom(publish), NOW + 30);
    await bob.receive(deliverFrom(publish), NOW + 40);
    assert.deepEqual(bob.events().map((e) => e.text ?? e.reason), ["written offline", "ReplayedMessage"]);
    // Its id is in alice's replay filter, as for a message she sends.
    await alice.receive(deliverFrom(publish), NOW + 50);
    assert.deepEqual(alice.events().map((e) => [e.type, e.reason]), [["rejected", "ReplayedMessage"]]);
  });

  it("puts restored messages before younger ones waiting, never before one on the wire", async () => {
    const kept = await keptOutbox(["old 1", "old 2", "old 3"]);
    const alice = restarted();
    alice.join(roomA, { name: "alice" });
    const waiting = await alice.sendText(roomA.roomId, "written after the unlock", NOW + 200);
    alice.restore(roomA.roomId, kept[1].messageId, kept[1].timestampMs, kept[1].envelope, NOW + 300);
    alice.restore(roomA.roomId, kept[0].messageId, kept[0].timestampMs, kept[0].envelope, NOW + 300);
    assert.equal(alice.restore(roomA.roomId, kept[0].messageId, kept[0].timestampMs, kept[0].envelope, NOW + 300), true);
    assert.equal(alice.unacknowledged, 3); // restoring twice changes nothing
    const order = [kept[0].messageId, kept[1].messageId, waiting.messageId].map(hex);
    assert.deepEqual(alice.outboxOf(roomA.roomId).map((o) => hex(o.messageId)), order);
    alice.connectionMade();
    await joinFully(alice, roomA, { name: "alice" });
    const wire = publishes(alice);
    assert.deepEqual(
      wire.map((f) => hex(f.envelope)),
      alice.outboxOf(roomA.roomId).map((o) => hex(o.envelope)),
    );
    assert.equal(hex(wire[0].envelope), hex(kept[0].envelope));
    // Older than all three, but they are on the wire: it goes after them.
    alice.restore(roomA.roomId, kept[2].messageId, NOW - 1, kept[2].envelope, NOW + 300);
    assert.deepEqual(alice.outboxOf(roomA.roomId).map((o) => hex(o.messageId)), [...order, hex(kept[2].messageId)]);
    assert.deepEqual(publishes(alice).map((f) => hex(f.envelope)), [hex(kept[2].envelope)]);
  });

  it("keeps the in-flight limit, and gives up at 55 minutes what was written before the lock", async () => {
    const alice = restarted();
    alice.join(roomA);
    const total = MAX_IN_FLIGHT + 5;
    for (let n = 0; n < total; n++) {
      alice.restore(roomA.roomId, counterBytes(9_000_000 + n)(16), NOW + n, new Uint8Array([n % 256, 1, 2]), NOW + total);
    }
    alice.connectionMade();
    await joinFully(alice, roomA);
    const wire = publishes(alice);
    assert.equal(wire.length, MAX_IN_FLIGHT);
    await alice.receive(frame({ type: "Ack", ref: wire[0].ref }), NOW);
    assert.equal(publishes(alice).length, 1); // one place came free
    alice.events();
    // Timed from when each was written, not from when it was restored.
    alice.expire(NOW + OUTBOX_MAX_AGE_MS + 2); // the first three; the first was taken
    const gaveUp = alice.events();
    assert.equal(gaveUp.length, 2);
    assert.ok(gaveUp.every((e) => e.type === "notSent" && e.reason === NOT_SENT_IN_TIME));
    assert.equal(alice.unacknowledged, total - 3);
  });

  it("gives up at once one that is 55 minutes old already, and sends nothing of it", async () => {
    const [kept] = await keptOutbox(["too late"]);
    const alice = restarted();
    alice.connectionMade();
    await joinFully(alice, roomA);
    const waited = alice.restore(roomA.roomId, kept.messageId, kept.timestampMs, kept.envelope, NOW + OUTBOX_MAX_AGE_MS);
    assert.equal(waited, false);
    assert.deepEqual(alice.events(), [
      { type: "notSent", roomId: roomA.roomId, messageId: kept.messageId, reason: NOT_SENT_IN_TIME },
    ]);
    assert.equal(alice.unacknowledged, 0);
    assert.deepEqual(alice.framesToSend(), []);
  });

  it("holds at most MAX_OUTBOX, refuses what is not a restorable message, and needs the room joined", async () => {
    const alice = restarted();
    const id = (n) => counterBytes(9_000_000 + n)(16);
    assert.throws(() => alice.restore(roomA.roomId, id(0), NOW, new Uint8Array(3), NOW), UsageError);
    alice.join(roomA);
    for (let n = 0; n < MAX_OUTBOX; n++) alice.restore(roomA.roomId, id(n), NOW + n, new Uint8Array(3), NOW + n);
    assert.throws(
      () => alice.restore(roomA.roomId, id(MAX_OUTBOX), NOW, new Uint8Array(3), NOW),
      (error) => error instanceof UsageError && /10000 messages are waiting/.test(error.message),
    );
    await assert.rejects(alice.sendText(roomA.roomId, "one too many", NOW), UsageError);
    assert.equal(alice.unacknowledged, MAX_OUTBOX);
    const other = restarted();
    other.join(roomA);
    assert.throws(() => other.restore(roomA.roomId, new Uint8Array(15), NOW, new Uint8Array(3), NOW), UsageError);
    assert.throws(() => other.restore(roomA.roomId, id(0), NOW, new Uint8Array(0), NOW), UsageError);
    assert.throws(() => other.restore(roomA.roomId, id(0), -1, new Uint8Array(3), NOW), UsageError);
    assert.equal(other.unacknowledged, 0);
    // Leaving the room forgets what it restored, as any outbox.
    other.restore(roomA.roomId, id(0), NOW, new Uint8Array(3), NOW);
    other.leave(roomA.roomId);
    assert.equal(other.unacknowledged, 0);
  });
});

describe("expiry", () => {
  async function joinWithExpiry(session, known, fromRelay) {
    session.join(roomA, { expiresAtMs: known });
    const [join] = decoded(session);
    assert.equal(join.expiresAtMs, known); // JOIN carries what the client knows
    await session.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: fromRelay, members: 1 }), NOW);
    return session.events()[0].expiresAtMs;
  }

  it("keeps the earlier of its own and the relay's expiry, ignoring 0", async () => {
    const fresh = () => {
      const session = makeSession(1);
      session.connectionMade();
      return session;
    };
    assert.equal(await joinWithExpiry(fresh(), NOW + 1000, 0), NOW + 1000);
    assert.equal(await joinWithExpiry(fresh(), NOW + 1000, NOW + 10 ** 9), NOW + 1000);
    assert.equal(await joinWithExpiry(fresh(), NOW + 1000, NOW + 500), NOW + 500);
    assert.equal(await joinWithExpiry(fresh(), 0, NOW + 500), NOW + 500);
    assert.equal(await joinWithExpiry(fresh(), 0, 0), 0);
  });

  it("forgets the room, its outbox and its key at expiry by its own clock, and leaves", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    await joinWithExpiry(alice, NOW + 1000, 0);
    alice.expire(NOW + 999);
    assert.equal(alice.rooms.size, 1);
    await alice.sendText(roomA.roomId, "unacknowledged", NOW);
    decoded(alice);
    alice.expire(NOW + 1000);
    assert.deepEqual(alice.events(), [{ type: "expired", roomId: roomA.roomId }]);
    assert.deepEqual(decoded(alice), [{ type: "Leave", roomId: roomA.roomId }]);
    assert.equal(alice.rooms.size, 0);
    assert.equal(alice.unacknowledged, 0);
  });

  it("never expires a room whose expiry is not known", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    await joinWithExpiry(alice, 0, 0);
    alice.expire(Number.MAX_SAFE_INTEGER);
    assert.equal(alice.rooms.size, 1);
  });

  it("a ROOM_EXPIRED from the relay forgets the room and its outbox", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.sendText(roomA.roomId, "late", NOW);
    decoded(alice);
    await alice.receive(errorFrame(ErrorCode.ROOM_EXPIRED, roomA.roomId, { reason: "expired" }), NOW);
    assert.deepEqual(alice.events(), [
      { type: "refused", code: ErrorCode.ROOM_EXPIRED, roomId: roomA.roomId, ref: 0, reason: "expired", fatal: true },
      { type: "expired", roomId: roomA.roomId },
    ]);
    assert.equal(alice.rooms.size, 0);
    assert.equal(alice.unacknowledged, 0);
  });
});

describe("the outbox's bounds (PROTOCOL.md 10.6)", () => {
  const publishes = (session) => decoded(session).filter((f) => f.type === "Publish");
  const notSent = (message) => ({ type: "notSent", roomId: roomA.roomId, messageId: message.messageId, reason: NOT_SENT_IN_TIME });

  it("gives up a message the relay has not taken at 55 minutes, not before", async () => {
    assert.equal(OUTBOX_MAX_AGE_MS, 55 * 60 * 1000);
    const alice = makeSession(1);
    alice.join(roomA); // not connected: an outage
    const early = await alice.sendText(roomA.roomId, "early", NOW);
    const late = await alice.sendText(roomA.roomId, "late", NOW + 1000);
    alice.expire(NOW + OUTBOX_MAX_AGE_MS - 1);
    assert.deepEqual(alice.events(), []);
    assert.equal(alice.unacknowledged, 2);
    alice.expire(NOW + OUTBOX_MAX_AGE_MS);
    assert.deepEqual(alice.events(), [notSent(early)]);
    assert.equal(alice.unacknowledged, 1);
    assert.equal(alice.rooms.size, 1); // the room stays
    // Back online, only the younger one is sent.
    await rejoin(alice, roomA, 1);
    alice.events();
    const [publish, ...rest] = publishes(alice);
    assert.equal(rest.length, 0);
    await alice.receive(frame({ type: "Ack", ref: publish.ref }), NOW);
    assert.deepEqual(alice.events(), [{ type: "accepted", roomId: roomA.roomId, messageId: late.messageId }]);
  });

  it("a message given up on the wire keeps its place until its late ACK, which reports nothing", async () => {
    const alice = await connectedAndJoined(1, roomA);
    const old = [];
    for (let n = 0; n < MAX_IN_FLIGHT; n++) old.push(await alice.sendText(roomA.roomId, `old ${n}`, NOW));
    const onWire = publishes(alice);
    assert.equal(onWire.length, MAX_IN_FLIGHT);
    const young = await alice.sendText(roomA.roomId, "young", NOW + 60_000);
    assert.deepEqual(alice.framesToSend(), []); // no place on the wire
    alice.expire(NOW + OUTBOX_MAX_AGE_MS);
    assert.deepEqual(alice.events(), old.map(notSent));
    assert.equal(alice.unacknowledged, 1);
    const later = NOW + OUTBOX_MAX_AGE_MS;
    await alice.receive(frame({ type: "Ack", ref: onWire[0].ref }), later);
    assert.deepEqual(alice.events(), []); // a late ACK for a message given up: nothing accepted
    const [publish, ...rest] = publishes(alice); // its place went to the young message
    assert.equal(rest.length, 0);
    await alice.receive(frame({ type: "Ack", ref: publish.ref }), later);
    assert.deepEqual(alice.events(), [{ type: "accepted", roomId: roomA.roomId, messageId: young.messageId }]);
    for (const answered of onWire.slice(1)) await alice.receive(frame({ type: "Ack", ref: answered.ref }), later);
    assert.deepEqual(alice.events(), []);
    assert.equal(alice.unacknowledged, 0);
    // Every place is free again: a whole window goes out at once.
    for (let n = 0; n < MAX_IN_FLIGHT; n++) await alice.sendText(roomA.roomId, `after ${n}`, later);
    assert.equal(publishes(alice).length, MAX_IN_FLIGHT);
  });

  it("holds at most MAX_OUTBOX messages: one more is refused and sends nothing", async () => {
    assert.equal(MAX_OUTBOX, 10_000);
    const alice = await connectedAndJoined(1, roomA);
    const sending = [];
    for (let n = 0; n < MAX_OUTBOX; n++) sending.push(alice.sendText(roomA.roomId, `m${n}`, NOW));
    await Promise.all(sending);
    const first = publishes(alice);
    assert.equal(first.length, MAX_IN_FLIGHT);
    await assert.rejects(
      alice.sendText(roomA.roomId, "one too many", NOW),
      (error) => error instanceof UsageError && /10000 messages are waiting/.test(error.message),
    );
    assert.equal(alice.unacknowledged, MAX_OUTBOX);
    assert.deepEqual(alice.framesToSend(), []);
    await alice.receive(frame({ type: "Ack", ref: first[0].ref }), NOW);
    publishes(alice); // the next waiting one takes the free place on the wire
    await alice.sendText(roomA.roomId, "room again", NOW); // an ACK made room
    assert.equal(alice.unacknowledged, MAX_OUTBOX);
  });
});

describe("refusals", () => {
  for (const name of ["PROOF_FAILED", "TOO_MANY_ROOMS", "EXPIRY_TOO_FAR"]) {
    it(`${name} before JOINED forgets the room for good`, async () => {
      const alice = makeSession(1);
      alice.connectionMade();
      alice.join(roomA);
      const message = await alice.sendText(roomA.roomId, "never sent", NOW);
      decoded(alice);
      await alice.receive(errorFrame(ErrorCode[name], roomA.roomId, { reason: "no" }), NOW);
      const [refused, ...rest] = alice.events();
      assert.equal(refused.fatal, true);
      assert.equal(refused.code, ErrorCode[name]);
      // What waited for the room is given up, and said so (PROTOCOL.md 10.6).
      assert.deepEqual(rest, [
        { type: "notSent", roomId: roomA.roomId, messageId: message.messageId, reason: NOT_SENT_REFUSED },
      ]);
      assert.equal(alice.rooms.size, 0);
      assert.equal(alice.unacknowledged, 0);
      alice.connectionLost();
      alice.connectionMade();
      assert.deepEqual(alice.framesToSend(), []); // not asked again after a reconnect
    });
  }

  for (const name of ["ROOM_FULL", "RELAY_FULL"]) {
    it(`${name} keeps the room and what waits for it until a JOIN gets in (PROTOCOL.md 10.6)`, async () => {
      const alice = makeSession(1);
      alice.connectionMade();
      alice.join(roomA);
      const message = await alice.sendText(roomA.roomId, "sent once there is room", NOW);
      decoded(alice);
      await alice.receive(errorFrame(ErrorCode[name], roomA.roomId, { reason: "full" }), NOW);
      assert.deepEqual(alice.events(), [
        { type: "refused", code: ErrorCode[name], roomId: roomA.roomId, ref: 0, reason: "full", fatal: false },
      ]);
      assert.equal(alice.rooms.size, 1);
      assert.equal(alice.unacknowledged, 1);
      alice.retryJoin(roomA.roomId);
      assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
      alice.retryJoin(roomA.roomId); // its JOIN is unanswered: no second one
      assert.deepEqual(alice.framesToSend(), []);
      await alice.receive(frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), NOW);
      decoded(alice);
      await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 }), NOW);
      const [publish] = decoded(alice);
      assert.equal(publish.type, "Publish");
      assert.deepEqual(publish.envelope, alice.outboxOf(roomA.roomId)[0].envelope);
      assert.equal(hex(alice.outboxOf(roomA.roomId)[0].messageId), hex(message.messageId));
    });
  }

  it("other refusals keep the room: NO_CHALLENGE, RATE_LIMITED and unknown ones, before JOINED or after", async () => {
    const alice = makeSession(1);
    alice.connectionMade();
    alice.join(roomA);
    decoded(alice);
    // Each refuses the JOIN then outstanding (one for each, by retryJoin).
    for (const code of [ErrorCode.NO_CHALLENGE, ErrorCode.RATE_LIMITED, 999]) {
      await alice.receive(errorFrame(code, roomA.roomId), NOW);
      alice.retryJoin(roomA.roomId);
      assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    }
    assert.deepEqual(alice.events().map((e) => e.fatal), [false, false, false]);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), NOW);
    alice.retryJoin(roomA.roomId); // joined: nothing to retry
    assert.deepEqual(alice.framesToSend(), []);
    // Unknown codes, once joined, are reported and change nothing.
    await alice.receive(errorFrame(999, roomA.roomId), NOW);
    assert.deepEqual(alice.events().filter((e) => e.type === "refused").map((e) => e.fatal), [false]);
    assert.equal(alice.rooms.size, 1);
  });

  // Likewise a refusal with ref 0 of a code that answers only a JOIN or PROOF counts only
  // as the answer to an outstanding JOIN (PROTOCOL.md 8.6): a relay sending them at will
  // would make a joined room "full for now", or have the client give a room up.
  const answersAJoin = [
    "RATE_LIMITED",
    "PROOF_FAILED",
    "NO_CHALLENGE",
    "TOO_MANY_ROOMS",
    "ROOM_FULL",
    "ALREADY_JOINED",
    "EXPIRY_TOO_FAR",
    "RELAY_FULL",
  ];
  for (const name of answersAJoin) {
    it(`a joined room ignores ${name} for a JOIN it did not send`, async () => {
      const alice = await connectedAndJoined(1, roomA, { members: 2 });
      await alice.receive(errorFrame(ErrorCode[name], roomA.roomId, { reason: "no" }), NOW);
      assert.deepEqual(alice.events(), []);
      const state = alice.rooms.get(roomHex(roomA.roomId));
      assert.equal(state.joined, true);
      assert.equal(state.joining, false);
      assert.equal(state.fullForNow, false);
      alice.retryJoin(roomA.roomId);
      assert.deepEqual(alice.framesToSend(), []);
      const message = await alice.sendText(roomA.roomId, "still here", NOW);
      const [publish, ...rest] = decoded(alice);
      assert.equal(rest.length, 0);
      assert.equal(publish.type, "Publish");
      await alice.receive(frame({ type: "Ack", ref: publish.ref }), NOW);
      assert.deepEqual(alice.events().map((e) => [e.type, hex(e.messageId)]), [["accepted", hex(message.messageId)]]);
    });
  }

  it("a joined room still expires when the relay says so", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.receive(errorFrame(ErrorCode.ROOM_EXPIRED, roomA.roomId), NOW);
    assert.equal(alice.rooms.size, 0);
    assert.deepEqual(alice.events().map((e) => e.type), ["refused", "expired"]);
  });

  it("only the answer to a JOIN makes a room full for now", async () => {
    const alice = joining(roomA);
    const challenge = frame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32).fill(7) });
    await alice.receive(challenge, NOW);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Proof"]);
    const full = errorFrame(ErrorCode.ROOM_FULL, roomA.roomId, { reason: "full" });
    const refusedFull = { type: "refused", code: ErrorCode.ROOM_FULL, roomId: roomA.roomId, ref: 0, reason: "full", fatal: false };
    await alice.receive(full, NOW); // the answer to that PROOF
    assert.deepEqual(alice.events(), [refusedFull]);
    assert.equal(alice.rooms.get(roomHex(roomA.roomId)).fullForNow, true);
    // While the caller waits to try again, no JOIN is outstanding: nothing answers one.
    await alice.receive(full, NOW);
    await alice.receive(errorFrame(ErrorCode.PROOF_FAILED, roomA.roomId, { reason: "bad" }), NOW);
    assert.deepEqual(alice.events(), []);
    assert.equal(alice.rooms.size, 1); // not given up
    alice.retryJoin(roomA.roomId);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    await alice.receive(full, NOW); // the answer to the retry's JOIN
    assert.deepEqual(alice.events(), [refusedFull]);
    alice.retryJoin(roomA.roomId);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
    await alice.receive(challenge, NOW);
    decoded(alice);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 }), NOW);
    assert.deepEqual(alice.events().map((e) => e.type), ["joined"]);
  });

  it("a refusal about no room is reported and changes nothing", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.receive(errorFrame(ErrorCode.MALFORMED_FRAME, NO_ROOM, { reason: "bad" }), NOW);
    assert.deepEqual(alice.events(), [
      { type: "refused", code: ErrorCode.MALFORMED_FRAME, roomId: NO_ROOM, ref: 0, reason: "bad", fatal: false },
    ]);
    assert.equal(alice.rooms.size, 1);
  });
});

describe("the replay filter", () => {
  const message = (id, timestampMs) => ({ messageId: new Uint8Array(16).fill(id), timestampMs });

  it("at capacity forgets the oldest and refuses anything no newer than it", () => {
    const filter = new ReplayFilter({ capacity: 3 });
    filter.accept(message(1, NOW - 30), NOW);
    filter.accept(message(2, NOW - 10), NOW);
    filter.accept(message(3, NOW - 20), NOW);
    filter.accept(message(4, NOW), NOW); // forgets id 1 (the oldest), floor = NOW - 30
    assert.equal(filter.size, 3);
    assert.throws(() => filter.accept(message(1, NOW - 30), NOW), { name: "StaleMessage" });
    assert.throws(() => filter.accept(message(3, NOW - 20), NOW), { name: "ReplayedMessage" });
    filter.accept(message(5, NOW - 5), NOW); // forgets id 3, floor = NOW - 20
    assert.throws(() => filter.accept(message(3, NOW - 20), NOW), { name: "StaleMessage" });
    // Fresh, but making room forgets id 2 (NOW - 10), and NOW - 15 is below that floor.
    assert.throws(() => filter.accept(message(6, NOW - 15), NOW), { name: "StaleMessage" });
    assert.throws(() => filter.accept(message(2, NOW - 10), NOW), { name: "StaleMessage" });
    filter.accept(message(7, NOW - 9), NOW);
  });

  it("forgets by age, and a clock stepping back cannot bring a forgotten id back", () => {
    const filter = new ReplayFilter();
    filter.accept(message(1, NOW), NOW);
    filter.accept(message(2, NOW + HOUR), NOW + HOUR + 1); // id 1 is now too old: forgotten
    assert.equal(filter.size, 1);
    assert.throws(() => filter.accept(message(1, NOW), NOW), { name: "StaleMessage" });
    assert.throws(() => filter.accept(message(3, NOW + 5 * 60_000 + 1), NOW), { name: "StaleMessage" });
  });

  it("remembers a seeded id as a replay, ignores one older than the window, keeps one ahead", () => {
    const filter = new ReplayFilter({ maxAgeMs: HOUR, maxFutureMs: 5 * 60_000 });
    filter.remember(message(1, 0).messageId, NOW - 1000, NOW);
    assert.throws(() => filter.accept(message(1, NOW - 1000), NOW), { name: "ReplayedMessage" });
    filter.accept(message(2, NOW - 1000), NOW); // never remembered: it gets in
    filter.remember(message(3, 0).messageId, NOW - HOUR - 1, NOW); // older than the window
    filter.remember(message(4, 0).messageId, NOW - HOUR, NOW); // at the edge: kept
    assert.equal(filter.size, 3);
    assert.equal(filter._floorMs, -1); // ignoring one raised no floor
    const ahead = NOW + 10 * 60_000;
    filter.remember(message(5, 0).messageId, ahead, NOW);
    assert.throws(() => filter.accept(message(5, ahead), NOW), { name: "StaleMessage" });
    assert.throws(() => filter.accept(message(5, ahead), ahead), { name: "ReplayedMessage" });
  });

  it("remembering twice or past capacity keeps the floor rule", () => {
    const filter = new ReplayFilter({ capacity: 2 });
    for (const id of [1, 1, 2, 3]) filter.remember(message(id, 0).messageId, NOW + id, NOW);
    assert.equal(filter.size, 2);
    assert.throws(() => filter.accept(message(1, NOW + 1), NOW), { name: "StaleMessage" });
    assert.throws(() => filter.accept(message(3, NOW + 3), NOW), { name: "ReplayedMessage" });
    assert.throws(() => filter.remember(new Uint8Array(5), NOW, NOW), UsageError);
  });

  it("a raised floor refuses anything stamped at or below it, and keeps the ids it has", () => {
    const filter = new ReplayFilter();
    filter.remember(message(1, 0).messageId, NOW - 100, NOW);
    filter.remember(message(2, 0).messageId, NOW - 50, NOW);
    filter.remember(message(3, 0).messageId, NOW - 10, NOW);
    filter.raiseFloor(NOW - 50);
    assert.equal(filter.size, 3); // kept, as in the Python core: see id 2 below
    for (const [id, t] of [[1, NOW - 100], [2, NOW - 50], [4, NOW - 50], [5, NOW - 51]]) {
      assert.throws(() => filter.accept(message(id, t), NOW), { name: "StaleMessage" });
    }
    assert.throws(() => filter.accept(message(3, NOW - 10), NOW), { name: "ReplayedMessage" });
    filter.accept(message(6, NOW - 49), NOW); // just above the floor, never seen: in
    // An id kept comes back as a replay, whatever time it is stamped with now.
    assert.throws(() => filter.accept(message(2, NOW - 49), NOW), { name: "ReplayedMessage" });
    // Remembering at or below it keeps nothing; a lower floor changes nothing.
    filter.remember(message(7, 0).messageId, NOW - 50, NOW);
    assert.equal(filter.size, 4);
    filter.raiseFloor(NOW - 1000);
    filter.raiseFloor(0);
    assert.throws(() => filter.accept(message(8, NOW - 50), NOW), { name: "StaleMessage" });
    filter.accept(message(9, NOW - 48), NOW);
    // The floor raised by capacity and this one are the same floor: the higher holds.
    const small = new ReplayFilter({ capacity: 1 });
    small.accept(message(1, NOW - 20), NOW);
    small.accept(message(2, NOW - 10), NOW); // forgets id 1: floor NOW - 20
    small.raiseFloor(NOW - 30);
    assert.throws(() => small.accept(message(3, NOW - 20), NOW), { name: "StaleMessage" });
    small.raiseFloor(NOW - 10);
    assert.equal(small.size, 1); // id 2 kept
    assert.throws(() => small.accept(message(2, NOW - 10), NOW), { name: "StaleMessage" });
    for (const bad of [0.5, NaN, 2 ** 53, "1", null]) assert.throws(() => filter.raiseFloor(bad), UsageError);
  });

  it("a restarted session told a floor drops what is at or below it as stale", async () => {
    const alice = await connectedAndJoined(1, roomA, { name: "alice" });
    await alice.sendText(roomA.roomId, "its id was not kept", NOW - 2000);
    await alice.sendText(roomA.roomId, "at the floor", NOW - 1000);
    const above = await alice.sendText(roomA.roomId, "above the floor", NOW - 999);
    const publishes = decoded(alice);
    const bob = await connectedAndJoined(2, roomA, { name: "bob" });
    await joinFully(bob, roomB);
    bob.rememberFloor(roomA.roomId, NOW - 1000, NOW);
    for (const publish of publishes) await bob.receive(deliverFrom(publish), NOW);
    const events = bob.events();
    assert.deepEqual(
      events.filter((e) => e.type === "rejected").map((e) => e.reason),
      ["StaleMessage", "StaleMessage"],
    );
    assert.deepEqual(
      events.filter((e) => e.type === "message").map((e) => hex(e.message.messageId)),
      [hex(above.messageId)],
    );
    // Another room's filter is not touched.
    assert.equal(bob.rooms.get(roomHex(roomB.roomId)).replays._floorMs, -1);
  });

  it("a restarted session told what it has drops those as replays and shows the rest", async () => {
    const alice = await connectedAndJoined(1, roomA, { name: "alice" });
    const kept = await alice.sendText(roomA.roomId, "kept", NOW);
    const deleted = await alice.sendText(roomA.roomId, "deleted", NOW + 1);
    const fresh = await alice.sendText(roomA.roomId, "never seen", NOW + 2);
    const old = await alice.sendText(roomA.roomId, "an hour ago", NOW - HOUR);
    const publishes = decoded(alice);
    // Bob restarted: a new session, whose filter starts empty. He tells it what he has.
    const bob = await connectedAndJoined(2, roomA, { name: "bob" });
    const later = NOW + 60_000;
    for (const m of [kept, deleted, old]) bob.remember(roomA.roomId, m.messageId, m.timestampMs, later);
    assert.equal(bob.rooms.get(roomHex(roomA.roomId)).replays.size, 2); // not the old one
    for (const publish of publishes.slice(0, 3)) await bob.receive(deliverFrom(publish), later);
    const events = bob.events();
    assert.deepEqual(
      events.filter((e) => e.type === "rejected").map((e) => e.reason),
      ["ReplayedMessage", "ReplayedMessage"],
    );
    const shown = events.filter((e) => e.type === "message");
    assert.deepEqual(shown.map((e) => hex(e.message.messageId)), [hex(fresh.messageId)]);
  });

  it("a session drops its own message sent back to it", async () => {
    const alice = await connectedAndJoined(1, roomA, { name: "alice" });
    await alice.sendText(roomA.roomId, "mine", NOW);
    const [publish] = decoded(alice);
    await alice.receive(deliverFrom(publish), NOW + 5);
    assert.deepEqual(alice.events().map((e) => [e.type, e.reason]), [["rejected", "ReplayedMessage"]]);
  });

  it("remember needs the room joined", () => {
    const alice = makeSession(1);
    assert.throws(() => alice.remember(roomA.roomId, new Uint8Array(16), NOW, NOW), UsageError);
  });

  it("rememberFloor needs the room joined, and a time", async () => {
    assert.throws(() => makeSession(1).rememberFloor(roomA.roomId, NOW, NOW), UsageError);
    const alice = await connectedAndJoined(1, roomA);
    assert.throws(() => alice.rememberFloor(roomB.roomId, NOW, NOW), UsageError);
    assert.throws(() => alice.rememberFloor(roomA.roomId, 1.5, NOW), UsageError);
    assert.throws(() => alice.rememberFloor(roomA.roomId, NOW), UsageError); // no time now
    alice.rememberFloor(roomA.roomId, NOW, NOW);
  });

  it("a floor ahead of the clock is taken as the present: what comes next gets in", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.sendText(roomA.roomId, "stamped a minute ahead", NOW + 60_000);
    const publishes = decoded(alice);
    const bob = await connectedAndJoined(2, roomA, { name: "bob" });
    bob.rememberFloor(roomA.roomId, NOW + 5 * 60_000, NOW); // ids stamped ahead were dropped
    for (const publish of publishes) await bob.receive(deliverFrom(publish), NOW);
    assert.deepEqual(bob.events().filter((e) => e.type === "message").map((e) => e.text), ["stamped a minute ahead"]);
  });
});

/**
 * A relay in a few lines: challenges, proofs checked with verifyJoinProof, ACK to the
 * sender and DELIVER to the others. `pump()` moves frames until everyone is quiet.
 */
class FanOut {
  constructor() {
    this.peers = new Map(); // session -> { challenges, publicKeys, rooms }
    this.rooms = new Map(); // room hex -> Set of sessions
  }

  connect(session) {
    this.peers.set(session, { challenges: new Map(), publicKeys: new Map(), rooms: new Set() });
    session.connectionMade();
  }

  async pump(nowMs = NOW) {
    for (let busy = true; busy; ) {
      busy = false;
      for (const session of this.peers.keys()) {
        for (const bytes of session.framesToSend()) {
          busy = true;
          for (const [to, answer] of this.handle(session, decodeFrame(bytes))) {
            await to.receive(encodeFrame(answer), nowMs);
          }
        }
      }
    }
  }

  handle(from, f) {
    const peer = this.peers.get(from);
    const key = f.roomId && roomHex(f.roomId);
    const members = this.rooms.get(key) ?? new Set();
    const others = () => [...members].filter((s) => s !== from);
    switch (f.type) {
      case "Join": {
        const challenge = crypto.getRandomValues(new Uint8Array(32));
        peer.challenges.set(key, challenge);
        peer.publicKeys.set(key, f.roomPublicKey);
        return [[from, { type: "Challenge", roomId: f.roomId, challenge }]];
      }
      case "Proof": {
        const challenge = peer.challenges.get(key);
        peer.challenges.delete(key);
        verifyJoinProof(peer.publicKeys.get(key), f.roomId, challenge, f.signature);
        members.add(from);
        this.rooms.set(key, members);
        peer.rooms.add(key);
        return [
          [from, { type: "Joined", roomId: f.roomId, expiresAtMs: 0, members: members.size }],
          ...others().map((s) => [s, { type: "Presence", roomId: f.roomId, members: members.size }]),
        ];
      }
      case "Publish":
        assert.ok(members.has(from), "published to a room it had not joined");
        return [
          [from, { type: "Ack", ref: f.ref }],
          ...others().map((s) => [s, { type: "Deliver", roomId: f.roomId, envelope: f.envelope }]),
        ];
      case "Leave":
        members.delete(from);
        return [...members].map((s) => [s, { type: "Presence", roomId: f.roomId, members: members.size }]);
      default:
        throw new Error(`unexpected ${f.type}`);
    }
  }
}

describe("sessions talking through a relay", () => {
  it("two sessions in two rooms exchange messages under each room's name", async () => {
    const relay = new FanOut();
    const alice = makeSession(1);
    const bob = makeSession(2);
    alice.join(roomA, { name: "alice" });
    alice.join(roomB, { name: "Dr. A" });
    bob.join(roomA, { name: "bob" });
    bob.join(roomB, { name: "B" });
    relay.connect(alice);
    relay.connect(bob);
    await relay.pump();
    await alice.sendText(roomA.roomId, "hi bob", NOW);
    await alice.sendText(roomB.roomId, "hello, B", NOW);
    await bob.sendText(roomA.roomId, "hi alice", NOW);
    await relay.pump();
    assert.equal(alice.unacknowledged + bob.unacknowledged, 0);
    const roomName = (roomId) => (roomHex(roomId) === roomHex(roomA.roomId) ? "A" : "B");
    const seen = (session) =>
      session
        .events()
        .filter((e) => e.type === "message")
        .map((e) => [roomName(e.roomId), e.message.senderName, e.text]);
    assert.deepEqual(seen(bob), [["A", "alice", "hi bob"], ["B", "Dr. A", "hello, B"]]);
    assert.deepEqual(seen(alice), [["A", "bob", "hi alice"]]);
  });

  it("a message written while the connection was down arrives once, after the room refills", async () => {
    const relay = new FanOut();
    const alice = makeSession(1);
    const bob = makeSession(2);
    for (const [session, name] of [[alice, "alice"], [bob, "bob"]]) {
      session.join(roomA, { name });
      relay.connect(session);
    }
    await relay.pump();
    alice.events();
    bob.events();
    // The relay restarts: both drop; alice is back first and writes.
    for (const session of [alice, bob]) session.connectionLost();
    relay.rooms.clear();
    await alice.sendText(roomA.roomId, "did you miss me?", NOW);
    relay.connect(alice);
    await relay.pump();
    assert.equal(alice.holding(roomA.roomId), true);
    assert.equal(alice.unacknowledged, 1);
    relay.connect(bob);
    await relay.pump();
    assert.equal(alice.unacknowledged, 0);
    const texts = bob.events().filter((e) => e.type === "message").map((e) => e.text);
    assert.deepEqual(texts, ["did you miss me?"]);
  });
});

// A CHALLENGE is answered only for an outstanding JOIN, once (PROTOCOL.md 8.6): a relay
// must not get proofs for challenges it brought from elsewhere.
describe("challenges", () => {
  const challengeFrame = (room, fill = 7) =>
    frame({ type: "Challenge", roomId: room.roomId, challenge: new Uint8Array(32).fill(fill) });
  const types = (session) => decoded(session).map((f) => f.type);

  it("a joined session does not answer a CHALLENGE", async () => {
    const alice = await connectedAndJoined(1, roomA);
    await alice.receive(challengeFrame(roomA), NOW);
    assert.deepEqual(alice.framesToSend(), []);
    assert.deepEqual(alice.events(), []);
  });

  it("a second CHALLENGE for one JOIN is not answered", async () => {
    const alice = joining(roomA);
    await alice.receive(challengeFrame(roomA, 1), NOW);
    assert.deepEqual(types(alice), ["Proof"]);
    await alice.receive(challengeFrame(roomA, 2), NOW);
    assert.deepEqual(alice.framesToSend(), []);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), NOW);
    assert.deepEqual(alice.events().map((e) => e.type), ["joined"]);
  });

  it("a CHALLENGE with no JOIN sent is not answered", async () => {
    const alice = makeSession(1);
    alice.join(roomA, {}); // not connected: no JOIN has gone out
    await alice.receive(challengeFrame(roomA), NOW);
    assert.deepEqual(alice.framesToSend(), []);
    alice.connectionMade();
    alice.connectionLost(); // that JOIN is lost with its connection
    await alice.receive(challengeFrame(roomA), NOW);
    assert.deepEqual(alice.framesToSend(), []);
  });

  it("a CHALLENGE after the JOIN was refused is not answered; a new JOIN's is, once", async () => {
    const alice = joining(roomA);
    await alice.receive(errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId), NOW);
    alice.events();
    await alice.receive(challengeFrame(roomA), NOW);
    assert.deepEqual(alice.framesToSend(), []);
    alice.retryJoin(roomA.roomId);
    assert.deepEqual(types(alice), ["Join"]);
    await alice.receive(challengeFrame(roomA, 1), NOW);
    assert.deepEqual(types(alice), ["Proof"]);
    await alice.receive(challengeFrame(roomA, 2), NOW);
    assert.deepEqual(alice.framesToSend(), []);
  });

  it("a CHALLENGE after a JOIN refused behind a held LEAVE is not answered", async () => {
    const alice = joining(roomA);
    await alice.receive(challengeFrame(roomA), NOW);
    alice.framesToSend();
    alice.leave(roomA.roomId); // held: its JOIN is unanswered
    alice.join(roomB, {});
    alice.framesToSend();
    await alice.receive(errorFrame(ErrorCode.TOO_MANY_ROOMS, roomB.roomId), NOW);
    assert.deepEqual(alice.framesToSend(), []);
    await alice.receive(challengeFrame(roomB), NOW);
    assert.deepEqual(alice.framesToSend(), []);
  });

  it("leaving and joining again behind an answered CHALLENGE earns no second PROOF", async () => {
    const alice = joining(roomA);
    await alice.receive(challengeFrame(roomA, 1), NOW);
    assert.deepEqual(types(alice), ["Proof"]);
    alice.leave(roomA.roomId);
    alice.join(roomA, {});
    assert.deepEqual(alice.framesToSend(), []);
    await alice.receive(challengeFrame(roomA, 2), NOW);
    assert.deepEqual(alice.framesToSend(), []);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), NOW);
    assert.deepEqual(alice.events().map((e) => e.type), ["joined"]);
    assert.deepEqual(alice.framesToSend(), []);
  });

  it("each reconnect answers its own JOIN's CHALLENGE, once", async () => {
    const alice = await connectedAndJoined(1, roomA);
    alice.connectionLost();
    alice.connectionMade();
    assert.deepEqual(types(alice), ["Join"]);
    await alice.receive(challengeFrame(roomA), NOW);
    assert.deepEqual(types(alice), ["Proof"]);
    await alice.receive(frame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 1 }), NOW);
    await alice.receive(challengeFrame(roomA), NOW);
    assert.deepEqual(alice.framesToSend(), []);
  });
});

// Names compared in their canonical form (PROTOCOL.md 4.4), and how many are remembered.
describe("names", () => {
  let counter = 0;
  /** A DELIVER of a message by the device of `seed` under `name`. */
  async function deliverAs(seed, name, room, kind = Kind.TEXT) {
    const device = deviceKeyFromSeed(new Uint8Array(32).fill(seed));
    const random = counterBytes(++counter * 1000);
    const message = {
      messageId: random(16),
      timestampMs: NOW,
      kind,
      senderKey: device.publicKey,
      senderName: name,
      body: kind === Kind.TEXT ? new Uint8Array([104, 105]) : new Uint8Array(0),
    };
    const envelope = await sealEnvelope(room, device, message, random(12));
    return frame({ type: "Deliver", roomId: room.roomId, envelope });
  }
  const flags = (session) => session.events().map((e) => (assert.equal(e.type, "message"), e.keyChanged));

  for (const lookAlike of ["alice ", "alice\u00a0", "Alice", "a\u200blice", "\uff41\uff4c\uff49\uff43\uff45", "alice\u202e", " ALICE\t"]) {
    // Test titles spell out what is invisible, as \u escapes.
    const shown = [...lookAlike]
      .map((c) => (/[ -~]/.test(c) ? c : `\\u${c.codePointAt(0).toString(16).padStart(4, "0")}`))
      .join("");
    it(`flags "${shown}" with a new key after "alice", and shows it as sent`, async () => {
      const bob = await connectedAndJoined(2, roomA);
      await bob.receive(await deliverAs(1, "alice", roomA), NOW);
      await bob.receive(await deliverAs(3, lookAlike, roomA), NOW);
      const [first, second] = bob.events();
      assert.equal(first.keyChanged, false);
      assert.equal(second.keyChanged, true);
      assert.equal(second.message.senderName, lookAlike);
    });
  }

  for (const kind of [Kind.JOIN, Kind.TYPING, 9]) {
    it(`a new key in a message not shown (kind ${kind}) does not become the name's`, async () => {
      // Clients show TEXT only: taking the new key from a flagged message no one sees would
      // let the next TEXT with that key pass unflagged.
      const bob = await connectedAndJoined(2, roomA);
      await bob.receive(await deliverAs(1, "alice", roomA), NOW);
      await bob.receive(await deliverAs(3, "alice", roomA, kind), NOW);
      await bob.receive(await deliverAs(3, "Alice", roomA), NOW);
      await bob.receive(await deliverAs(3, "alice", roomA), NOW); // once flagged, it is the name's
      assert.deepEqual(flags(bob), [false, true, true, false]);
      // A name not known yet is known from any kind: its first key is no key change.
      await bob.receive(await deliverAs(1, "carol", roomA, kind), NOW);
      await bob.receive(await deliverAs(3, "carol", roomA), NOW);
      assert.deepEqual(flags(bob), [false, true]);
    });
  }

  it("one device under spellings of one name is not flagged", async () => {
    const bob = await connectedAndJoined(2, roomA);
    for (const name of ["alice", "Alice ", "ALICE"]) await bob.receive(await deliverAs(1, name, roomA), NOW);
    assert.deepEqual(flags(bob), [false, false, false]);
  });

  it("a homoglyph from another script is another name: the fingerprint is the identity", async () => {
    const bob = await connectedAndJoined(2, roomA);
    await bob.receive(await deliverAs(1, "alice", roomA), NOW);
    await bob.receive(await deliverAs(3, "\u0430lice", roomA), NOW);
    assert.deepEqual(flags(bob), [false, false]);
  });

  it("remembers at most MAX_NAMES_PER_ROOM names a room, the least recently seen going first", async () => {
    const bob = await connectedAndJoined(2, roomA);
    for (let n = 0; n < MAX_NAMES_PER_ROOM; n++) await bob.receive(await deliverAs(1, `n${n}`, roomA), NOW);
    await bob.receive(await deliverAs(1, "n0", roomA), NOW); // n0 seen again
    await bob.receive(await deliverAs(1, "newcomer", roomA), NOW);
    bob.events();
    const names = bob.rooms.get(roomHex(roomA.roomId)).names;
    assert.equal(names.size, MAX_NAMES_PER_ROOM);
    assert.ok(names.has("n0"));
    assert.ok(!names.has("n1")); // the least recently seen
    // Another device under n0 is flagged; under n1, forgotten, it is not.
    await bob.receive(await deliverAs(3, "n0", roomA), NOW);
    await bob.receive(await deliverAs(3, "n1", roomA), NOW);
    assert.deepEqual(flags(bob), [true, false]);
    assert.equal(names.size, MAX_NAMES_PER_ROOM);
  });
});

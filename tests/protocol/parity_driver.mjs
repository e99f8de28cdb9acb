// The JavaScript core behind tests/protocol/test_parity.py: one request a line on stdin,
// one answer a line on stdout, in order, so that one Node process answers a whole test
// run. Requests are {"op": ..., ...arguments}; bytes travel as lowercase hex, 64-bit
// integers as decimal strings (a JSON number holds 2^53 at most). An answer is
// {"ok": value} or {"error": name, "code": code or null}, where name is the class of what
// was thrown; "crash" marks a throw that is not a ProtocolError, nor an Error thrown on
// purpose by the app's invite code.

import { createHash } from "node:crypto";
import { createInterface } from "node:readline";

import { parseInvite, formatInvite } from "../../web/src/app/invite.js";
import { fromHex, hex } from "../../web/src/protocol/bytes.js";
import * as envelopes from "../../web/src/protocol/envelope.js";
import { ProtocolError } from "../../web/src/protocol/errors.js";
import { decodeFrame, encodeFrame } from "../../web/src/protocol/frames.js";
import { signatureIsGood, signJoinProof, verifyJoinProof } from "../../web/src/protocol/join.js";
import { deviceKeyFromSeed, fingerprint, roomKeysFromMinikey } from "../../web/src/protocol/kdf.js";
import { formatMinikey, parseMinikey, rootSecret, spellMinikey } from "../../web/src/protocol/minikey.js";
import { canonicalName, mixedScripts } from "../../web/src/protocol/names.js";
import { Roster } from "../../web/src/protocol/roster.js";
import { ClientSession } from "../../web/src/protocol/session.js";

const BYTE_FIELDS = new Set(["room_id", "room_public_key", "challenge", "signature", "envelope"]);
const BIG_FIELDS = new Set(["token"]);
const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const snake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** A value as JSON carries it: bytes as hex, BigInts as decimal strings. */
function plain(value) {
  if (value instanceof Uint8Array) return hex(value);
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [snake(k), plain(v)]));
  }
  return value;
}

function frameOf({ type, fields }) {
  const frame = { type };
  for (const [name, value] of Object.entries(fields)) {
    if (BYTE_FIELDS.has(name)) frame[camel(name)] = fromHex(value);
    else if (BIG_FIELDS.has(name)) frame[camel(name)] = BigInt(value);
    else frame[camel(name)] = value;
  }
  return frame;
}

function messageOf(m) {
  return {
    messageId: fromHex(m.message_id),
    // A time that a Number holds exactly goes as one, as callers pass it; beyond, a BigInt.
    timestampMs: Number.isSafeInteger(Number(m.timestamp_ms)) ? Number(m.timestamp_ms) : BigInt(m.timestamp_ms),
    kind: m.kind,
    senderKey: fromHex(m.sender_key),
    senderName: m.sender_name,
    body: fromHex(m.body),
  };
}

function replay({ capacity, max_age_ms, max_future_ms, steps }) {
  const filter = new envelopes.ReplayFilter({ capacity, maxAgeMs: max_age_ms, maxFutureMs: max_future_ms });
  return steps.map((step) => {
    try {
      if (step.op === "accept") {
        filter.accept({ messageId: fromHex(step.id), timestampMs: step.t }, step.now);
        return "accepted";
      }
      if (step.op === "remember") filter.remember(fromHex(step.id), step.t, step.now);
      else filter.raiseFloor(step.floor);
      return null;
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      return error.name;
    }
  });
}

/** The same stream of "random" bytes as the Python side's: SHA-256 of a counter. */
function randomStream() {
  let counter = 0;
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 32) {
      const block = createHash("sha256").update(`parity-${counter++}`).digest();
      out.set(block.subarray(0, Math.min(32, n - i)), i);
    }
    return out;
  };
}

/** A kind as the presence vectors write it: its name, or its number if v1 names none. */
const kindName = (kind) => Object.keys(envelopes.Kind).find((name) => envelopes.Kind[name] === kind) ?? kind;

/** Roster members as both sides write them. */
const membersOf = (members) =>
  members.map((m) => ({ key: hex(m.deviceKey), name: m.name, fingerprint: m.fingerprint, key_changed: m.keyChanged }));

/** A roster driven step by step (the ops of the presence vectors, kinds as numbers); after
 * each, what it sends and holds. */
function roster({ own_key, announce, steps }) {
  const r = new Roster(fromHex(own_key), { announce });
  return steps.map((step) => {
    if (step.op === "joined") r.joined(step.count, step.now);
    else if (step.op === "count") r.countChanged(step.count, step.now);
    else if (step.op === "heard") r.heard(step.kind, fromHex(step.from), step.name, step.key_changed, step.now, step.sent ?? null);
    else if (step.op === "tick") r.tick(step.now);
    else if (step.op === "leaving") r.leaving();
    else throw new Error(`no op ${step.op}`);
    return { sends: r.takeSends().map(kindName), members: membersOf(r.members), version: r.version };
  });
}

/** An event as the Python side writes its own: type, then the fields both have. */
function eventOf(event) {
  const room = hex(event.roomId ?? new Uint8Array());
  switch (event.type) {
    case "message": {
      const m = event.message;
      return {
        type: "message", room_id: room, message_id: hex(m.messageId), timestamp_ms: String(m.timestampMs),
        kind: m.kind, sender_name: m.senderName, fingerprint: event.fingerprint, key_changed: event.keyChanged,
      };
    }
    case "joined":
      return { type: "joined", room_id: room, expires_at_ms: event.expiresAtMs, members: event.members };
    case "presence":
      return { type: "presence", room_id: room, members: event.members };
    case "rejected":
      return { type: "rejected", room_id: room, reason: event.reason, ahead_ms: event.aheadMs };
    case "accepted":
      return { type: "accepted", room_id: room, message_id: hex(event.messageId) };
    case "notSent":
      return { type: "notSent", room_id: room, message_id: hex(event.messageId), reason: event.reason };
    case "refused":
      return { type: "refused", room_id: room, code: event.code, ref: event.ref, reason: event.reason };
    case "expired":
      return { type: "expired", room_id: room };
    case "pong":
      return { type: "pong", token: String(event.token) };
    case "members":
      return { type: "members", room_id: room, members: membersOf(event.members) };
    default:
      return { type: event.type };
  }
}

/** A client session driven step by step; after each, the frames it sends, its events and
 * the room's members. */
async function session({ seed, name, key, expires_at_ms, announce = false, steps }) {
  const client = new ClientSession({ deviceSeed: fromHex(seed), randomBytes: randomStream(), announce });
  const room = roomKeysFromMinikey(key);
  const results = [];
  for (const step of steps) {
    let error = null;
    try {
      if (step.do === "join") client.join(room, { expiresAtMs: expires_at_ms, name });
      else if (step.do === "connect") client.connectionMade();
      else if (step.do === "lost") client.connectionLost();
      else if (step.do === "receive") await client.receive(fromHex(step.frame), step.now);
      else if (step.do === "expire") client.expire(step.now);
      else if (step.do === "send_text") await client.sendText(room.roomId, step.text, step.now);
      else if (step.do === "remember") client.remember(room.roomId, fromHex(step.id), step.t, step.now);
      else if (step.do === "remember_floor") client.rememberFloor(room.roomId, step.floor, step.now);
      else if (step.do === "leave") await client.leave(room.roomId, step.now ?? undefined);
      else if (step.do === "tick") await client.tick(step.now);
      else if (step.do === "announce_leaving") await client.announceLeaving(step.now ?? undefined);
      else throw new Error(`no step ${step.do}`);
    } catch (caught) {
      if (!(caught instanceof ProtocolError)) throw caught;
      error = caught.name;
    }
    results.push({
      frames: client.framesToSend().map(hex),
      events: client.events().map(eventOf),
      error,
      members: membersOf(client.members(room.roomId)), // as members() answers after the step
    });
  }
  return results;
}

const ops = {
  parse_minikey: ({ text }) => parseMinikey(text),
  derive: ({ key }) => {
    const room = roomKeysFromMinikey(key);
    return {
      grouped: formatMinikey(key),
      spelled: spellMinikey(key),
      root_secret: rootSecret(key),
      message_key: room.messageKey,
      room_signing_seed: room.signingSeed,
      room_public_key: room.publicKey,
      room_id: room.roomId,
    };
  },
  device: ({ seed }) => {
    const publicKey = deviceKeyFromSeed(fromHex(seed)).publicKey;
    return { public_key: publicKey, fingerprint: fingerprint(publicKey) };
  },
  fingerprint: ({ public_key }) => fingerprint(fromHex(public_key)),
  names: ({ name }) => ({ canonical: canonicalName(name), mixed_scripts: mixedScripts(name) }),
  sign_proof: ({ key, challenge }) => {
    const room = roomKeysFromMinikey(key);
    return signJoinProof(room.signingSeed, room.roomId, fromHex(challenge));
  },
  verify_proof: ({ public_key, room_id, challenge, signature }) =>
    verifyJoinProof(fromHex(public_key), fromHex(room_id), fromHex(challenge), fromHex(signature)) ?? true,
  signature_is_good: ({ public_key, signature, data }) =>
    signatureIsGood(fromHex(public_key), fromHex(signature), fromHex(data)),
  encode_frame: (request) => encodeFrame(frameOf(request)),
  decode_frame: ({ data }) => {
    const { type, ...fields } = decodeFrame(fromHex(data));
    return { type, fields: plain(fields) };
  },
  seal: ({ key, seed, message, nonce }) =>
    envelopes.sealEnvelope(roomKeysFromMinikey(key), deviceKeyFromSeed(fromHex(seed)), messageOf(message), fromHex(nonce)),
  open: async ({ key, envelope }) => {
    const message = await envelopes.openEnvelope(roomKeysFromMinikey(key), fromHex(envelope));
    return { ...plain(message), timestamp_ms: String(message.timestampMs) };
  },
  unpad: ({ padded }) => envelopes.unpad(fromHex(padded)),
  replay,
  roster,
  parse_invite: ({ text }) => parseInvite(text),
  format_invite: ({ server, key }) => formatInvite(server, key),
  session,
};

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let answer;
  try {
    const request = JSON.parse(line);
    answer = { ok: plain(await ops[request.op](request)) };
  } catch (error) {
    const known = error instanceof ProtocolError || error?.constructor === Error;
    answer = known
      ? { error: error.name, code: error.code ?? null }
      : { error: "crash", code: null, message: String(error?.stack ?? error) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}

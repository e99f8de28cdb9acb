// The relay wire format (PROTOCOL.md 10.2): a type byte, fixed fields, then at most one
// variable field. Frames are plain objects: { type: "Join", roomId, roomPublicKey, expiresAtMs }.
// PING/PONG tokens are BigInts (they use all 64 bits); times in ms are Numbers.

import { concat, u16, u32, u64, utf8, utf8Strict, view } from "./bytes.js";
import {
  CHALLENGE_SIZE,
  ErrorCode,
  FrameType,
  MAX_ENVELOPE_SIZE,
  PUBLIC_KEY_SIZE,
  ROOM_ID_SIZE,
  SIGNATURE_SIZE,
} from "./codes.js";
import { FrameError, UsageError } from "./errors.js";

export const MAX_REASON_BYTES = 200;
// Times in ms stay below 2^53, so that a JavaScript number holds them exactly.
export const MAX_TIME_MS = 2 ** 53;

function time(value) {
  if (value >= BigInt(MAX_TIME_MS)) throw new FrameError("A time in ms is below 2^53.", ErrorCode.MALFORMED_FRAME);
  return Number(value);
}

function timeField(value) {
  if (!Number.isSafeInteger(value) || value < 0) throw new UsageError("A time in ms is below 2^53.");
  return u64(value);
}
export const NO_ROOM = new Uint8Array(ROOM_ID_SIZE);
export const PUBLISH_HEADER_SIZE = 1 + 4 + ROOM_ID_SIZE;
export const MAX_FRAME_SIZE = PUBLISH_HEADER_SIZE + MAX_ENVELOPE_SIZE;

function exact(bytes, size) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== size) {
    throw new UsageError(`Expected ${size} bytes.`);
  }
  return bytes;
}

function envelopeOf(bytes) {
  if (!(bytes.length > 0 && bytes.length <= MAX_ENVELOPE_SIZE)) {
    throw new UsageError(`An envelope is 1 to ${MAX_ENVELOPE_SIZE} bytes.`);
  }
  return bytes;
}

/** The bytes of a frame object. */
export function encodeFrame(frame) {
  const t = (type) => Uint8Array.of(type);
  switch (frame.type) {
    case "Join":
      return concat(t(FrameType.JOIN), exact(frame.roomId, ROOM_ID_SIZE),
        exact(frame.roomPublicKey, PUBLIC_KEY_SIZE), timeField(frame.expiresAtMs));
    case "Challenge":
      return concat(t(FrameType.CHALLENGE), exact(frame.roomId, ROOM_ID_SIZE),
        exact(frame.challenge, CHALLENGE_SIZE));
    case "Proof":
      return concat(t(FrameType.PROOF), exact(frame.roomId, ROOM_ID_SIZE),
        exact(frame.signature, SIGNATURE_SIZE));
    case "Joined":
      return concat(t(FrameType.JOINED), exact(frame.roomId, ROOM_ID_SIZE),
        timeField(frame.expiresAtMs), u32(frame.members));
    case "Leave":
      return concat(t(FrameType.LEAVE), exact(frame.roomId, ROOM_ID_SIZE));
    case "Publish":
      return concat(t(FrameType.PUBLISH), u32(frame.ref), exact(frame.roomId, ROOM_ID_SIZE),
        envelopeOf(frame.envelope));
    case "Deliver":
      return concat(t(FrameType.DELIVER), exact(frame.roomId, ROOM_ID_SIZE), envelopeOf(frame.envelope));
    case "Ack":
      return concat(t(FrameType.ACK), u32(frame.ref));
    case "Presence":
      return concat(t(FrameType.PRESENCE), exact(frame.roomId, ROOM_ID_SIZE), u32(frame.members));
    case "Ping":
      return concat(t(FrameType.PING), u64(frame.token));
    case "Pong":
      return concat(t(FrameType.PONG), u64(frame.token));
    case "Error": {
      // A lone surrogate is no text: TextEncoder would write U+FFFD in its place.
      if (/\p{Cs}/u.test(frame.reason)) throw new UsageError("An error reason is text (no lone surrogate).");
      const reason = utf8.encode(frame.reason);
      if (reason.length > MAX_REASON_BYTES) throw new UsageError("An error reason is at most 200 bytes.");
      return concat(t(FrameType.ERROR), u16(frame.code), u32(frame.ref),
        exact(frame.roomId, ROOM_ID_SIZE), reason);
    }
    default:
      throw new UsageError(`Not a frame: ${frame.type}`);
  }
}

function fixed(data, size, name) {
  if (data.length !== 1 + size) {
    throw new FrameError(`A ${name} frame is ${1 + size} bytes, not ${data.length}.`, ErrorCode.MALFORMED_FRAME);
  }
  return view(data);
}

/** Parse one frame; any bytes that are not a frame throw FrameError, nothing else. */
export function decodeFrame(data) {
  if (!(data instanceof Uint8Array) || data.length === 0) {
    throw new FrameError("An empty frame.", ErrorCode.MALFORMED_FRAME);
  }
  if (data.length > MAX_FRAME_SIZE) {
    throw new FrameError("The frame is larger than any frame can be.", ErrorCode.FRAME_TOO_LARGE);
  }
  const kind = data[0];
  const room = (offset) => data.slice(offset, offset + ROOM_ID_SIZE);
  if (kind === FrameType.PUBLISH || kind === FrameType.DELIVER) {
    const head = kind === FrameType.PUBLISH ? PUBLISH_HEADER_SIZE : 1 + ROOM_ID_SIZE;
    if (data.length <= head) throw new FrameError("A message frame without a message.", ErrorCode.MALFORMED_FRAME);
    if (data.length - head > MAX_ENVELOPE_SIZE) {
      throw new FrameError("The envelope is larger than any can be.", ErrorCode.FRAME_TOO_LARGE);
    }
    if (kind === FrameType.PUBLISH) {
      return { type: "Publish", ref: view(data).getUint32(1), roomId: room(5), envelope: data.slice(head) };
    }
    return { type: "Deliver", roomId: room(1), envelope: data.slice(head) };
  }
  switch (kind) {
    case FrameType.ERROR: {
      if (data.length < 1 + 2 + 4 + ROOM_ID_SIZE) throw new FrameError("An ERROR frame is cut short.", ErrorCode.MALFORMED_FRAME);
      if (data.length - 39 > MAX_REASON_BYTES) throw new FrameError("An ERROR reason is too long.", ErrorCode.MALFORMED_FRAME);
      let reason;
      try {
        reason = utf8Strict.decode(data.subarray(39));
      } catch {
        throw new FrameError("An ERROR reason is not UTF-8.", ErrorCode.MALFORMED_FRAME);
      }
      const v = view(data);
      return { type: "Error", code: v.getUint16(1), ref: v.getUint32(3), roomId: room(7), reason };
    }
    case FrameType.JOIN: {
      const v = fixed(data, 72, "JOIN");
      return { type: "Join", roomId: room(1), roomPublicKey: data.slice(33, 65), expiresAtMs: time(v.getBigUint64(65)) };
    }
    case FrameType.CHALLENGE:
      fixed(data, 64, "CHALLENGE");
      return { type: "Challenge", roomId: room(1), challenge: data.slice(33, 65) };
    case FrameType.PROOF:
      fixed(data, 96, "PROOF");
      return { type: "Proof", roomId: room(1), signature: data.slice(33, 97) };
    case FrameType.JOINED: {
      const v = fixed(data, 44, "JOINED");
      return { type: "Joined", roomId: room(1), expiresAtMs: time(v.getBigUint64(33)), members: v.getUint32(41) };
    }
    case FrameType.LEAVE:
      fixed(data, 32, "LEAVE");
      return { type: "Leave", roomId: room(1) };
    case FrameType.ACK:
      return { type: "Ack", ref: fixed(data, 4, "ACK").getUint32(1) };
    case FrameType.PRESENCE:
      return { type: "Presence", roomId: room(1), members: fixed(data, 36, "PRESENCE").getUint32(33) };
    case FrameType.PING:
      return { type: "Ping", token: fixed(data, 8, "PING").getBigUint64(1) };
    case FrameType.PONG:
      return { type: "Pong", token: fixed(data, 8, "PONG").getBigUint64(1) };
    default:
      throw new FrameError(`Unknown frame type 0x${kind.toString(16).padStart(2, "0")}.`, ErrorCode.UNKNOWN_FRAME_TYPE);
  }
}

// Message envelopes (PROTOCOL.md 5), sealed and opened with WebCrypto's AES-GCM and
// signed with Ed25519 (@noble/curves).
//
//   envelope = 0x01 || nonce (12) || AES-256-GCM(padded, aad = 0x01 || room id)
//   padded   = inner || 0x80 || 0x00...   (to 256, 1024, 4096, 16384 or 65536 bytes)
//   inner    = signed || Ed25519 signature by the sender's device key

import { ed25519 } from "@noble/curves/ed25519.js";
import { concat, equal, hex, u32, u64, utf8, utf8Strict, view } from "./bytes.js";
import { ENVELOPE_VERSION, NONCE_SIZE, PADDING_BUCKETS, SIGNATURE_SIZE, TAG_SIZE } from "./codes.js";
import { BadSignature, DecryptionFailed, MalformedEnvelope, ReplayedMessage, StaleMessage, UsageError } from "./errors.js";
import { signatureIsGood } from "./join.js";

export const Kind = Object.freeze({ TEXT: 1, JOIN: 2, LEAVE: 3, TYPING: 4, HERE: 5 });
export const MESSAGE_ID_SIZE = 16;
export const MAX_NAME_BYTES = 64;
export const MAX_BODY_BYTES = 60000;
const LABEL_MESSAGE_SIGNATURE = utf8.encode("instantroom/v1/message-signature");
const HEAD_SIZE = 16 + 8 + 1 + 32 + 1;

/**
 * @typedef {object} Message
 * @property {Uint8Array} messageId
 * @property {number} timestampMs
 * @property {number} kind
 * @property {Uint8Array} senderKey
 * @property {string} senderName
 * @property {Uint8Array} body
 */

function signedPart(message) {
  // As the Python core refuses them: TextEncoder would seal U+FFFD for a lone surrogate,
  // and Uint8Array.of would wrap a kind of 256 to 0.
  if (/\p{Cs}/u.test(message.senderName)) throw new UsageError("A name must be encodable as UTF-8.");
  const name = utf8.encode(message.senderName);
  if (name.length > MAX_NAME_BYTES) throw new UsageError("A name is at most 64 bytes of UTF-8.");
  if (message.body.length > MAX_BODY_BYTES) throw new UsageError("A body is at most 60000 bytes.");
  if (message.messageId.length !== MESSAGE_ID_SIZE) throw new UsageError("A message id is 16 bytes.");
  if (!Number.isInteger(message.kind) || message.kind < 0 || message.kind > 255) {
    throw new UsageError("A kind fits in one byte.");
  }
  if (message.kind === Kind.TEXT) {
    try {
      utf8Strict.decode(message.body);
    } catch {
      // Every receiver would refuse it (MalformedEnvelope, PROTOCOL.md 5.4).
      throw new UsageError("A text message's body must be UTF-8.");
    }
  }
  return concat(
    message.messageId,
    u64(message.timestampMs),
    Uint8Array.of(message.kind),
    message.senderKey,
    Uint8Array.of(name.length),
    name,
    u32(message.body.length),
    message.body,
  );
}

export function pad(inner) {
  for (const bucket of PADDING_BUCKETS) {
    if (inner.length < bucket) {
      const out = new Uint8Array(bucket);
      out.set(inner);
      out[inner.length] = 0x80;
      return out;
    }
  }
  throw new UsageError("The message is too large for the largest padding bucket.");
}

export function unpad(padded) {
  if (!PADDING_BUCKETS.includes(padded.length)) {
    throw new MalformedEnvelope("The padded message is not one of the size buckets.");
  }
  let end = padded.length;
  while (end > 0 && padded[end - 1] === 0) end--;
  if (end === 0 || padded[end - 1] !== 0x80) {
    throw new MalformedEnvelope("The message padding is not well-formed.");
  }
  return padded.subarray(0, end - 1);
}

async function aesKey(messageKey, usage) {
  return crypto.subtle.importKey("raw", messageKey, "AES-GCM", false, [usage]);
}

/** Sign, pad and encrypt `message` for `room` with a fresh 12-byte `nonce`. */
export async function sealEnvelope(room, device, message, nonce) {
  // PROTOCOL.md 5.5, step 1: signed by another key, every receiver would refuse it.
  if (!(message.senderKey instanceof Uint8Array) || !equal(message.senderKey, device.publicKey)) {
    throw new UsageError("A device seals only messages that carry its own public key.");
  }
  if (nonce.length !== NONCE_SIZE) throw new UsageError("The nonce is 12 bytes.");
  const signed = signedPart(message);
  const signature = ed25519.sign(concat(LABEL_MESSAGE_SIGNATURE, room.roomId, signed), device.seed);
  const header = Uint8Array.of(ENVELOPE_VERSION);
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: concat(header, room.roomId) },
    await aesKey(room.messageKey, "encrypt"),
    pad(concat(signed, signature)),
  );
  return concat(header, nonce, new Uint8Array(ciphertext));
}

/** Decrypt and check an envelope; throws an EnvelopeError subclass. */
export async function openEnvelope(room, envelope, beforeSignature = null) {
  if (envelope.length < 1 + NONCE_SIZE + PADDING_BUCKETS[0] + TAG_SIZE) {
    throw new MalformedEnvelope("The envelope is too short.");
  }
  if (envelope[0] !== ENVELOPE_VERSION) {
    throw new DecryptionFailed("The envelope's version is not one this client reads.");
  }
  let padded;
  try {
    padded = new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: envelope.subarray(1, 1 + NONCE_SIZE),
          additionalData: concat(envelope.subarray(0, 1), room.roomId),
        },
        await aesKey(room.messageKey, "decrypt"),
        envelope.subarray(1 + NONCE_SIZE),
      ),
    );
  } catch {
    throw new DecryptionFailed("The message was not sealed for this room, or was altered.");
  }
  const inner = unpad(padded);
  const { message, signed, signature } = parseInner(inner);
  // A receiver's ReplayFilter.check (PROTOCOL.md 5.6): a relay can send one recorded
  // envelope again and again, and each would cost a signature check to be dropped after it.
  if (beforeSignature !== null) beforeSignature(message);
  // Every client must agree on which messages are authentic: the one rule of both cores.
  if (!signatureIsGood(message.senderKey, signature, concat(LABEL_MESSAGE_SIGNATURE, room.roomId, signed))) {
    throw new BadSignature("The message's signature does not match its sender.");
  }
  return message;
}

/** The order in which the filter forgets: oldest first, and among ids of one time the
 * smallest (hex strings of equal length compare as their bytes), as Python's heap of
 * (time, id) does, so that both cores forget the same ids. */
function earlier(a, b) {
  return a.t < b.t || (a.t === b.t && a.id < b.id);
}

function parseInner(inner) {
  if (inner.length < HEAD_SIZE + 4 + SIGNATURE_SIZE) throw new MalformedEnvelope("The message is too short.");
  const data = view(inner);
  const nameLength = inner[HEAD_SIZE - 1];
  if (nameLength > MAX_NAME_BYTES) throw new MalformedEnvelope("The sender's name is longer than allowed.");
  let offset = HEAD_SIZE + nameLength;
  if (inner.length < offset + 4) throw new MalformedEnvelope("The message's name field is cut short.");
  const bodyLength = data.getUint32(offset);
  offset += 4;
  if (bodyLength > MAX_BODY_BYTES) throw new MalformedEnvelope("The message body is longer than allowed.");
  if (inner.length !== offset + bodyLength + SIGNATURE_SIZE) {
    throw new MalformedEnvelope("The message's body length does not match.");
  }
  const kind = inner[24];
  const body = inner.slice(offset, offset + bodyLength);
  let senderName;
  try {
    senderName = utf8Strict.decode(inner.subarray(HEAD_SIZE, HEAD_SIZE + nameLength));
    if (kind === Kind.TEXT) utf8Strict.decode(body);
  } catch {
    throw new MalformedEnvelope("The message's text is not valid UTF-8.");
  }
  return {
    message: {
      messageId: inner.slice(0, 16),
      timestampMs: Number(data.getBigUint64(16)),
      kind,
      senderKey: inner.slice(25, 57),
      senderName,
      body,
    },
    signed: inner.subarray(0, offset + bodyLength),
    signature: inner.subarray(offset + bodyLength),
  };
}

/**
 * Drops duplicates and messages whose time is far from the present (PROTOCOL.md 7).
 *
 * Memory is bounded: ids are kept only while their timestamp is inside the window, and
 * when `capacity` is reached the oldest id is forgotten and the window's floor rises to
 * its timestamp, so a forgotten message still cannot come back. A restarted client that
 * forgot some ids itself raises the floor with `raiseFloor`.
 */
export class ReplayFilter {
  constructor({ maxAgeMs = 60 * 60 * 1000, maxFutureMs = 5 * 60 * 1000, capacity = 100_000 } = {}) {
    this.maxAgeMs = maxAgeMs;
    this.maxFutureMs = maxFutureMs;
    this.capacity = capacity;
    this._seen = new Set();
    /** A binary min-heap of { t, id } ordered by timestamp. */
    this._byTime = [];
    this._floorMs = -1;
  }

  get size() {
    return this._byTime.length;
  }

  /**
   * Throw StaleMessage or ReplayedMessage as `accept` would for a message out of the window
   * or already received, remembering nothing of it: run before its signature is verified
   * (PROTOCOL.md 5.6), then `accept` once it is.
   */
  check(message, nowMs) {
    const t = message.timestampMs;
    const oldest = Math.max(nowMs - this.maxAgeMs, this._floorMs + 1);
    if (t < oldest || t > nowMs + this.maxFutureMs) {
      throw new StaleMessage("The message's time is too far from the present.");
    }
    this._forgetOld(nowMs); // what time alone forgets: no sender's doing
    if (this._seen.has(hex(message.messageId))) throw new ReplayedMessage("This message was already received.");
  }

  /** Remember `message` or throw ReplayedMessage / StaleMessage. */
  accept(message, nowMs) {
    this.check(message, nowMs);
    const t = message.timestampMs;
    const id = hex(message.messageId);
    if (!this._makeRoom(t)) throw new StaleMessage("The message's time is too far from the present.");
    this._seen.add(id);
    this._push({ t, id });
  }

  /**
   * Remember a message this receiver already has (kept history, a deleted message, one it
   * sent), so that the same id is later dropped as ReplayedMessage: a filter starts
   * empty, and a restarted client would otherwise take the last hour again.
   *
   * An id whose time is before the window (older than `maxAgeMs`, or at or below the
   * floor) is not kept: the freshness check refuses it anyway. An id stamped ahead of the
   * window is kept: it enters the window as the clock moves on. Memory stays bounded by
   * `capacity` as in `accept`. Remembering never throws for a message already remembered.
   * @param {Uint8Array} messageId 16 bytes
   * @param {number} timestampMs
   * @param {number} nowMs
   */
  remember(messageId, timestampMs, nowMs) {
    if (!(messageId instanceof Uint8Array) || messageId.length !== MESSAGE_ID_SIZE) {
      throw new UsageError(`A message id is ${MESSAGE_ID_SIZE} bytes.`);
    }
    if (!Number.isSafeInteger(timestampMs) || !Number.isSafeInteger(nowMs)) {
      throw new UsageError("A time in ms is a whole number below 2^53.");
    }
    if (timestampMs < Math.max(nowMs - this.maxAgeMs, this._floorMs + 1)) return;
    this._forgetOld(nowMs);
    const id = hex(messageId);
    if (this._seen.has(id) || !this._makeRoom(timestampMs)) return;
    this._seen.add(id);
    this._push({ t: timestampMs, id });
  }

  /**
   * Raise the floor to `floorMs` (it never goes down): nothing stamped at or below it is
   * accepted afterwards (StaleMessage), as when the filter forgets an id at capacity. The
   * ids remembered stay, as in the Python core: an id comes back as ReplayedMessage
   * whatever time it is stamped with now. A restarted client seeds it with the newest
   * time among the messages it had but no longer keeps the ids of, so that none of them
   * can come back (PROTOCOL.md 7).
   * @param {number} floorMs
   */
  raiseFloor(floorMs) {
    if (!Number.isSafeInteger(floorMs)) throw new UsageError("A time in ms is a whole number below 2^53.");
    if (floorMs <= this._floorMs) return;
    this._floorMs = floorMs;
  }

  _forgetOld(nowMs) {
    while (this._byTime.length > 0 && this._byTime[0].t < nowMs - this.maxAgeMs) {
      // The floor rises with what is forgotten: a clock that steps back cannot bring a
      // forgotten message back inside the window.
      this._forgetOldest();
    }
  }

  /** Forget the oldest id if `capacity` are remembered; false if an id stamped `t` is
   * then at or below the floor (and must not be remembered). */
  _makeRoom(t) {
    if (this._byTime.length >= this.capacity) {
      this._forgetOldest();
      if (t <= this._floorMs) return false;
    }
    return true;
  }

  _forgetOldest() {
    const { t, id } = this._pop();
    this._seen.delete(id);
    this._floorMs = Math.max(this._floorMs, t);
  }

  _push(entry) {
    const heap = this._byTime;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!earlier(heap[i], heap[parent])) break;
      [heap[parent], heap[i]] = [heap[i], heap[parent]];
      i = parent;
    }
  }

  _pop() {
    const heap = this._byTime;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && earlier(heap[left], heap[smallest])) smallest = left;
        if (right < heap.length && earlier(heap[right], heap[smallest])) smallest = right;
        if (smallest === i) break;
        [heap[smallest], heap[i]] = [heap[i], heap[smallest]];
        i = smallest;
      }
    }
    return top;
  }
}

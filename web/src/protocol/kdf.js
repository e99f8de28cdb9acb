// Everything a room needs, derived from its root secret (PROTOCOL.md 4).

import { ed25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { base32 } from "@scure/base";
import { concat, utf8 } from "./bytes.js";
import { rootSecret } from "./minikey.js";

export const LABEL_MESSAGE_KEY = utf8.encode("instantroom/v1/message-key");
export const LABEL_ROOM_SIGNING_KEY = utf8.encode("instantroom/v1/room-signing-key");
export const LABEL_ROOM_ID = utf8.encode("instantroom/v1/room-id");
export const LABEL_FINGERPRINT = utf8.encode("instantroom/v1/fingerprint");

/** HKDF-SHA256 with an empty salt. */
export function hkdfSha256(secret, info, length = 32) {
  return hkdf(sha256, secret, new Uint8Array(0), info, length);
}

export function roomIdFor(roomPublicKey) {
  return sha256(concat(LABEL_ROOM_ID, roomPublicKey));
}

/** A room's keys: { messageKey, signingSeed, publicKey, roomId }. */
export function roomKeysFromRoot(root) {
  const signingSeed = hkdfSha256(root, LABEL_ROOM_SIGNING_KEY);
  const publicKey = ed25519.getPublicKey(signingSeed);
  return {
    messageKey: hkdfSha256(root, LABEL_MESSAGE_KEY),
    signingSeed,
    publicKey,
    roomId: roomIdFor(publicKey),
  };
}

export function roomKeysFromMinikey(key) {
  return roomKeysFromRoot(rootSecret(key));
}

/** This install's device key from its 32-byte seed: { seed, publicKey }. */
export function deviceKeyFromSeed(seed) {
  return { seed, publicKey: ed25519.getPublicKey(seed) };
}

/** 16 base32 characters in groups of four: 80 bits of SHA-256 of the device key. */
export function fingerprint(devicePublicKey) {
  const text = base32.encode(sha256(concat(LABEL_FINGERPRINT, devicePublicKey)).slice(0, 10));
  return text.match(/.{4}/g).join("-");
}

// The join proof (PROTOCOL.md 8).

import { ed25519 } from "@noble/curves/ed25519.js";
import { concat, equal, utf8 } from "./bytes.js";
import { CHALLENGE_SIZE, ROOM_ID_SIZE } from "./codes.js";
import { JoinProofError, UsageError } from "./errors.js";
import { roomIdFor } from "./kdf.js";

export const LABEL_JOIN_PROOF = utf8.encode("instantroom/v1/join-proof");

function proofInput(roomId, challenge) {
  if (roomId.length !== ROOM_ID_SIZE || challenge.length !== CHALLENGE_SIZE) {
    throw new UsageError("A room id and a challenge are 32 bytes each.");
  }
  return concat(LABEL_JOIN_PROOF, roomId, challenge);
}

export function signJoinProof(signingSeed, roomId, challenge) {
  return ed25519.sign(proofInput(roomId, challenge), signingSeed);
}

/** Whether `bytes` encodes a point of the prime-order subgroup: canonical, neither of
 * small order nor with a torsion part. */
function inPrimeOrderGroup(bytes) {
  const point = ed25519.Point.fromBytes(bytes, false);
  return !point.isSmallOrder() && point.isTorsionFree();
}

/**
 * Whether `signature` by `publicKey` over `data` is good by the rule of PROTOCOL.md 5.6:
 * RFC 8032's strict checks (canonical encodings, S below the group order; noble's default
 * is ZIP-215, which accepts more), and the public key and R points of the prime-order
 * subgroup. noble multiplies by the cofactor, OpenSSL (the Python core's) does not: on
 * such points they agree on every signature, so every client shows the same messages.
 */
export function signatureIsGood(publicKey, signature, data) {
  try {
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    if (!inPrimeOrderGroup(publicKey) || !inPrimeOrderGroup(signature.subarray(0, 32))) return false;
    return ed25519.verify(signature, data, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

export function verifyJoinProof(roomPublicKey, roomId, challenge, signature) {
  if (!equal(roomIdFor(roomPublicKey), roomId)) {
    throw new JoinProofError("The room id does not belong to this public key.");
  }
  if (!signatureIsGood(roomPublicKey, signature, proofInput(roomId, challenge))) {
    throw new JoinProofError("The join proof does not verify.");
  }
}

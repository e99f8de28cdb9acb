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

export function verifyJoinProof(roomPublicKey, roomId, challenge, signature) {
  if (!equal(roomIdFor(roomPublicKey), roomId)) {
    throw new JoinProofError("The room id does not belong to this public key.");
  }
  let good = false;
  try {
    good = ed25519.verify(signature, proofInput(roomId, challenge), roomPublicKey, { zip215: false });
  } catch {
    good = false;
  }
  if (!good) throw new JoinProofError("The join proof does not verify.");
}

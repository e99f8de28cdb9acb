// Numbers both sides agree on (PROTOCOL.md sections 5, 10 and 11).

export const SUBPROTOCOL = "instantroom.v1";
// A relay in its first minute says how many seconds ago it started (PROTOCOL.md 10.1).
export const UPTIME_HEADER = "InstantRoom-Uptime";
export const ENVELOPE_VERSION = 1;
export const NONCE_SIZE = 12;
export const TAG_SIZE = 16;
export const PADDING_BUCKETS = [256, 1024, 4096, 16384, 65536];
export const MAX_ENVELOPE_SIZE = 1 + NONCE_SIZE + PADDING_BUCKETS.at(-1) + TAG_SIZE;
export const ROOM_ID_SIZE = 32;
export const PUBLIC_KEY_SIZE = 32;
export const SIGNATURE_SIZE = 64;
export const CHALLENGE_SIZE = 32;

export const FrameType = Object.freeze({
  JOIN: 0x01,
  CHALLENGE: 0x02,
  PROOF: 0x03,
  JOINED: 0x04,
  LEAVE: 0x05,
  PUBLISH: 0x10,
  DELIVER: 0x11,
  ACK: 0x12,
  PRESENCE: 0x13,
  PING: 0x20,
  PONG: 0x21,
  ERROR: 0x7f,
});

export const ErrorCode = Object.freeze({
  MALFORMED_FRAME: 1,
  UNKNOWN_FRAME_TYPE: 2,
  FRAME_TOO_LARGE: 3,
  RATE_LIMITED: 4,
  NOT_JOINED: 5,
  PROOF_FAILED: 6,
  NO_CHALLENGE: 7,
  TOO_MANY_ROOMS: 8,
  ROOM_FULL: 9,
  ROOM_EXPIRED: 10,
  ALREADY_JOINED: 11,
  EXPIRY_TOO_FAR: 12,
  RELAY_FULL: 13,
});

/** The relay's WebSocket close codes (PROTOCOL.md 11.2). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006, // never sent: the browser's name for a connection that just dropped
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  HANDSHAKE_TIMEOUT: 4001,
  TOO_SLOW: 4002,
  IDLE_TIMEOUT: 4003,
});

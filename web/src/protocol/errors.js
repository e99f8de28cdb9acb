// The protocol core's errors: the same names as the Python core's, which the shared test
// vectors use. Messages are for people and never carry a key or a plaintext.

export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

export class UsageError extends ProtocolError {}
export class PeerError extends ProtocolError {}

export class MiniKeyError extends PeerError {}
export class WrongLength extends MiniKeyError {}
export class NotBase58 extends MiniKeyError {}
export class WrongPrefix extends MiniKeyError {}
export class ChecksumMismatch extends MiniKeyError {}
export class OneCase extends MiniKeyError {}

export class EnvelopeError extends PeerError {}
export class MalformedEnvelope extends EnvelopeError {}
export class DecryptionFailed extends EnvelopeError {}
export class BadSignature extends EnvelopeError {}
export class ReplayedMessage extends EnvelopeError {}
export class StaleMessage extends EnvelopeError {}

export class JoinProofError extends PeerError {}

export class FrameError extends PeerError {
  /** @param {string} message @param {number} code the ErrorCode to answer with */
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

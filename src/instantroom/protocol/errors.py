"""The protocol core's exceptions.

One tree, split by blame, like h11: ``UsageError`` means the caller misused the API;
``PeerError`` means bytes from elsewhere (a user, a relay, another member) are bad.
The messages are written for people; the CLI prints them as they are. None of them
ever carries a key, a plaintext or a room id.

    ProtocolError
    ├── UsageError                 you called the core wrongly
    └── PeerError                  the input is bad
        ├── MiniKeyError           a mini key is not well-formed
        │   ├── WrongLength
        │   ├── NotBase58
        │   ├── WrongPrefix
        │   ├── ChecksumMismatch   (most likely a typo)
        │   └── OneCase            (typed in one case, passing the check by chance)
        ├── EnvelopeError          a message cannot be opened or trusted
        │   ├── DecryptionFailed
        │   ├── BadSignature
        │   ├── MalformedEnvelope
        │   ├── ReplayedMessage
        │   └── StaleMessage
        ├── JoinProofError         a join proof does not verify
        └── FrameError             a relay frame cannot be decoded
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the protocol core raises."""


class UsageError(ProtocolError):
    """The core was called with arguments it cannot accept."""


class PeerError(ProtocolError):
    """Input from outside (a person, a relay, a member) is not acceptable."""


class MiniKeyError(PeerError):
    """A mini key is not well-formed."""


class WrongLength(MiniKeyError):
    """The key has the wrong number of characters."""


class NotBase58(MiniKeyError):
    """The key holds a character that is not in the base58 alphabet."""


class WrongPrefix(MiniKeyError):
    """The key does not start with a capital S."""


class ChecksumMismatch(MiniKeyError):
    """The key's check fails: most likely a typo."""


class OneCase(MiniKeyError):
    """The key's letters are all capital or all small: typed in one case (it passed the
    check by chance; no key made has its letters in one case)."""


class EnvelopeError(PeerError):
    """A message envelope cannot be opened or trusted."""


class MalformedEnvelope(EnvelopeError):
    """The envelope's bytes do not follow the layout."""


class DecryptionFailed(EnvelopeError):
    """Authenticated decryption failed: wrong room, wrong key, or altered bytes."""


class BadSignature(EnvelopeError):
    """The sender's signature does not verify."""


class ReplayedMessage(EnvelopeError):
    """A message with this id was already accepted."""


class StaleMessage(EnvelopeError):
    """The message's timestamp is too far from the present."""


class JoinProofError(PeerError):
    """A join proof does not verify for this room and challenge."""


class FrameError(PeerError):
    """A relay frame cannot be decoded. ``code`` is the error code to answer with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

// Who is in a room (PROTOCOL.md 5.7): one member's roster of a room, the device keys heard
// there and believed present, and the JOIN, HERE and LEAVE it announces itself.
//
// Pure, as the Python core's Roster is: no clock, no randomness, no I/O. The session tells
// it what happened, with this device's time (`joined`, `countChanged`, `heard`, `tick`,
// `leaving`), and takes the kinds to send with `takeSends()`. What is due (a HERE, a roll
// call's JOIN, a removal) happens at the next `tick`. An answer's delay comes from the two
// device keys, not from a random draw: a big room's answers still spread over two seconds,
// and two cores fed the same steps send the same kinds at the same ticks.
//
//   another's JOIN heard at t  -> a roll call at t; a HERE at t + d, one for all the JOINs
//                                 heard before it goes
//   joined() (each JOINED)     -> our JOIN now, which is a roll call and says we are here
//   roll call at t, tick at t + ROLL_CALL_WINDOW_MS -> every entry last heard before t goes
//   the count goes down        -> our own roll call's JOIN at now + d, unless a LEAVE
//                                 explains it or another JOIN comes first
//   leaving()                  -> our LEAVE now, and nothing more until the next joined()
//
// A roster that does not announce sends nothing, but still keeps what it hears and judges
// the roll calls that others' JOINs start.

import { hex } from "./bytes.js";
import { Kind } from "./envelope.js";
import { UsageError } from "./errors.js";
import { fingerprint } from "./kdf.js";

/** Answers to a JOIN are spread over this long: the delay is below it. */
export const ANSWER_SPREAD_MS = 2000;
/**
 * A roll call is judged this long after its JOIN: the longest answer delay, a second for
 * the answering client's timer, and the way there and back.
 */
export const ROLL_CALL_WINDOW_MS = 5000;
/**
 * Entries kept, at most: anyone holding the room key can announce device keys without
 * end. Far more than a room's members (a relay admits 256 by default).
 */
export const MAX_ROSTER = 1000;

/** `their` for the delay of a roll call we call ourselves: no one's JOIN to answer. */
const NO_ONE = new Uint8Array(32);

function checkKey(key) {
  if (!(key instanceof Uint8Array) || key.length !== 32) throw new UsageError("A device key is 32 bytes.");
}

/**
 * How long after hearing `their` JOIN a member with key `own` answers (PROTOCOL.md 5.7):
 * the XOR of the keys' first two bytes, mod ANSWER_SPREAD_MS. Members' keys differ, so
 * their answers do not all come at once.
 * @param {Uint8Array} own
 * @param {Uint8Array} their
 * @returns {number}
 */
export function answerDelay(own, their) {
  return ((own[0] ^ their[0]) * 256 + (own[1] ^ their[1])) % ANSWER_SPREAD_MS;
}

/**
 * One member of a room, as the roster shows it.
 * @typedef {object} Member
 * @property {Uint8Array} deviceKey
 * @property {string} name the name last heard with the key
 * @property {string} fingerprint kdf.js fingerprint(deviceKey)
 * @property {boolean} keyChanged the name was known in the room with another key (PROTOCOL.md 4.4)
 */

/** One room's roster, and what this member announces in it. */
export class Roster {
  /**
   * @param {Uint8Array} ownKey this device's public key: never in the roster
   * @param {{announce?: boolean}} [options] announce: send JOIN, HERE and LEAVE (scripts do not)
   */
  constructor(ownKey, { announce = false } = {}) {
    checkKey(ownKey);
    this._own = ownKey.slice();
    this._ownHex = hex(ownKey);
    this._announce = Boolean(announce);
    /** hex of a device key -> {member, heardMs}, in the order they were added: the order shown.
     * @type {Map<string, {member: Member, heardMs: number}>} */
    this._entries = new Map();
    /** The same keys, least recently heard first: who goes first past MAX_ROSTER. By call
     * order, not by time: no ties, and a clock set back changes nothing.
     * @type {Set<string>} */
    this._recency = new Set();
    this._version = 0;
    this._sends = [];
    /** The relay's last count (JOINED or PRESENCE); null before the first. */
    this._count = null;
    /** When a LEAVE was last heard: it may explain the count going down. */
    this._leaveHeardMs = null;
    /** When our HERE is due; null: none waits. */
    this._hereAtMs = null;
    /** When our own roll call's JOIN is due; null: none planned. */
    this._callAtMs = null;
    /** The roll call being judged (the time of its JOIN), and the latest one after it. */
    this._rollCallMs = null;
    this._nextRollCallMs = null;
    /** leaving() was called: nothing more goes until the next joined(). */
    this._left = false;
  }

  /** @returns {Member[]} the members heard and believed present, oldest entry first */
  get members() {
    return [...this._entries.values()].map((entry) => entry.member);
  }

  /** Goes up whenever `members` would differ (an entry added or removed, a name or flag
   * changed); not when a member is merely heard again. */
  get version() {
    return this._version;
  }

  /** @returns {number[]} the kinds to send now, in order; each call empties the list */
  takeSends() {
    const out = this._sends;
    this._sends = [];
    return out;
  }

  /**
   * The relay let us into the room (JOINED, after every reconnect too): our JOIN goes now.
   * It is a roll call, which makes a planned one needless, and tells the others we are
   * here, as a HERE waiting would.
   * @param {number} count the relay's count of the room
   * @param {number} nowMs
   */
  joined(count, nowMs) {
    this._count = count;
    this._left = false;
    this._callAtMs = null;
    // Not announcing: no JOIN of ours, so nobody was asked to answer, and no roll call.
    if (this._announce) this._sendJoin(nowMs);
  }

  /**
   * The relay's count of the room (PRESENCE). A count going down with members in the
   * roster may be one of them gone without a LEAVE: an announcing member plans a roll
   * call, unless a LEAVE heard within ROLL_CALL_WINDOW_MS explains it (the count still
   * covers the roster and this member).
   * @param {number} count
   * @param {number} nowMs
   */
  countChanged(count, nowMs) {
    const before = this._count;
    this._count = count;
    if (!this._maySend() || before === null || count >= before || this._entries.size === 0) return;
    const explained =
      this._leaveHeardMs !== null &&
      nowMs - this._leaveHeardMs <= ROLL_CALL_WINDOW_MS &&
      count - 1 >= this._entries.size;
    if (explained || this._callAtMs !== null) return; // one planned is as early
    this._callAtMs = nowMs + answerDelay(this._own, NO_ONE);
  }

  /**
   * A message from `deviceKey` passed every check (PROTOCOL.md 5.6). A LEAVE takes its
   * sender out of the roster; any other kind puts it in (at the end, if new) or refreshes
   * it. Another's JOIN is a roll call, and asks for our HERE. Our own key is ignored.
   * @param {number} kind
   * @param {Uint8Array} deviceKey
   * @param {string} name
   * @param {boolean} keyChanged
   * @param {number} nowMs
   */
  heard(kind, deviceKey, name, keyChanged, nowMs) {
    checkKey(deviceKey);
    const key = hex(deviceKey);
    // Our own JOIN sent back is no roll call, and we are never a member of our roster.
    if (key === this._ownHex) return;
    if (kind === Kind.LEAVE) {
      this._leaveHeardMs = nowMs;
      if (this._entries.delete(key)) {
        this._recency.delete(key);
        this._version += 1;
      }
      return;
    }
    this._hear(deviceKey, key, name, Boolean(keyChanged), nowMs);
    if (kind !== Kind.JOIN) return;
    this._callAtMs = null; // that JOIN is a roll call for us too
    this._startRollCall(nowMs);
    if (this._maySend() && this._hereAtMs === null) this._hereAtMs = nowMs + answerDelay(this._own, deviceKey);
  }

  /**
   * Do what is due by `nowMs`: judge the roll calls whose window is over (one at a time,
   * in turn), then send our planned roll call's JOIN (which says we are here, as a HERE
   * would) or else a HERE.
   * @param {number} nowMs
   */
  tick(nowMs) {
    while (this._rollCallMs !== null && nowMs >= this._rollCallMs + ROLL_CALL_WINDOW_MS) {
      this._judge(this._rollCallMs);
      this._rollCallMs = this._nextRollCallMs;
      this._nextRollCallMs = null;
    }
    if (this._callAtMs !== null && nowMs >= this._callAtMs) {
      this._callAtMs = null;
      this._sendJoin(nowMs);
    } else if (this._hereAtMs !== null && nowMs >= this._hereAtMs) {
      this._hereAtMs = null;
      this._sends.push(Kind.HERE);
    }
  }

  /**
   * We are about to leave the room on purpose: our LEAVE goes now (best effort), and
   * nothing more until the next joined(): a HERE after it would bring us back into the
   * others' rosters.
   */
  leaving() {
    if (this._maySend()) this._sends.push(Kind.LEAVE);
    this._left = true;
    this._hereAtMs = null;
    this._callAtMs = null;
  }

  // inside

  _maySend() {
    return this._announce && !this._left;
  }

  _sendJoin(nowMs) {
    this._sends.push(Kind.JOIN);
    this._hereAtMs = null; // the JOIN says we are here too
    this._startRollCall(nowMs);
  }

  /** A roll call of `callMs` is over: whoever was not heard since did not answer. */
  _judge(callMs) {
    let removed = false;
    for (const [key, entry] of this._entries) {
      if (entry.heardMs < callMs) {
        this._entries.delete(key);
        this._recency.delete(key);
        removed = true;
      }
    }
    if (removed) this._version += 1;
  }

  _hear(deviceKey, key, name, keyChanged, nowMs) {
    const entry = this._entries.get(key);
    this._recency.delete(key);
    this._recency.add(key); // now the most recently heard
    if (entry !== undefined) {
      entry.heardMs = nowMs;
      if (entry.member.name !== name || entry.member.keyChanged !== keyChanged) {
        entry.member = Object.freeze({ ...entry.member, name, keyChanged });
        this._version += 1;
      }
      return;
    }
    const member = Object.freeze({ deviceKey: deviceKey.slice(), name, fingerprint: fingerprint(deviceKey), keyChanged });
    this._entries.set(key, { member, heardMs: nowMs });
    this._version += 1;
    if (this._entries.size > MAX_ROSTER) {
      const leastRecent = this._recency.values().next().value;
      this._recency.delete(leastRecent);
      this._entries.delete(leastRecent);
    }
  }

  /** A JOIN heard or sent at `atMs` starts a roll call: judged next if none is being
   * judged, else after the one that is. Only the latest waits, so a stream of JOINs costs
   * no memory and cannot put the judging off for ever. */
  _startRollCall(atMs) {
    if (this._rollCallMs === null) this._rollCallMs = atMs;
    else this._nextRollCallMs = atMs;
  }
}

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
//   the count goes down        -> our own roll call's JOIN at now + d, unless LEAVEs
//                                 explain it or another JOIN comes first
//   leaving()                  -> our LEAVE now, and nothing more until the next joined()
//
// A roster that does not announce sends nothing, but still keeps what it hears and judges
// the roll calls that others' JOINs start.

import { hex } from "./bytes.js";
import { Kind } from "./envelope.js";
import { UsageError } from "./errors.js";
import { fingerprint } from "./kdf.js";
import { canonicalName } from "./names.js";

/** Answers to a JOIN are spread over this long: the delay is below it. */
export const ANSWER_SPREAD_MS = 2000;
/**
 * A member announces itself (JOIN or HERE) at most once in this long but for its own JOIN
 * on each JOINED: a member sending JOINs without end, or a relay's count going up and
 * down, must not make the whole room answer each.
 */
export const ANSWER_GAP_MS = 5000;
/**
 * A roll call is judged this long after its JOIN: the longest wait for an answer (the
 * gap, which is longer than the spread), a second for the answering client's timer, and
 * the way there and back.
 */
export const ROLL_CALL_WINDOW_MS = 8000;
/**
 * Entries kept, at most: anyone holding the room key can announce device keys without
 * end. Far more than a room's members (a relay admits 256 by default).
 */
export const MAX_ROSTER = 1000;
/**
 * A message sent longer ago than this (its timestamp, by this clock) says nothing of who is
 * here now: the session does not pass it to `heard` (a relay could keep and replay the old
 * HERE of a member long gone). Twice the 5 minutes a sender's clock may be ahead or behind
 * ours (the replay filter's), so that a member whose clock is off is still heard.
 */
export const MAX_HEARD_AGE_MS = 600_000;
/**
 * Roll calls a member calls for a roster it doubts (more entries than the relay counts
 * others; LEAVEs that explained the count going down): at most this often, counted from the
 * last roll call heard or sent. A hostile member may keep answering for keys that are not
 * connected, and each roll call costs every member a HERE.
 */
export const DOUBT_CALL_EVERY_MS = 30_000;
/**
 * A roll call at least this often while the roster is not empty (anyone's counts): a relay
 * that holds back a member's LEAVE, and keeps the count as it was, would keep a member long
 * gone listed for ever.
 */
export const ROLL_CALL_EVERY_MS = 300_000;

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
    /** hex of a device key -> its entry, in the order they were added: the order shown.
     * `member` as heard (shown flagged too while another entry claims its name), `canonical`
     * its canonical name, `addedMs` and `heardMs` roster time (`_time`) it was added and
     * last heard, `sentMs` the newest timestamp (the sender's clock) heard from it (-1:
     * none known), `confirmed`: it was there when a roll call started, and answered it (a
     * key that is connected, not only announced), `announces`: it announced itself (a JOIN
     * or a HERE), as scripts do not: back from an outage, it says so at once (ClientSession
     * waits for that, PROTOCOL.md 10.6).
     * @type {Map<string, {member: Member, canonical: string, addedMs: number, heardMs: number, sentMs: number, confirmed: boolean, announces: boolean}>} */
    this._entries = new Map();
    /** The same keys, least recently heard first: who goes first past MAX_ROSTER. By call
     * order, not by time: no ties.
     * @type {Set<string>} */
    this._recency = new Set();
    /** Each key's newest LEAVE: its timestamp (the sender's clock) and when it was heard
     * (roster time), least recently heard first, at most MAX_ROSTER, each for
     * MAX_HEARD_AGE_MS: a message the key sent before is not heard (a relay bringing back an
     * old HERE; another window's HERE overtaken by its LEAVE).
     * @type {Map<string, {sentMs: number, heardMs: number}>} */
    this._leftAt = new Map();
    this._version = 0;
    /** `members` as last worked out, and the version it was worked out at. */
    this._members = [];
    this._membersVersion = 0;
    this._sends = [];
    /** The relay's last count (JOINED or PRESENCE); null before the first. */
    this._count = null;
    /** When each LEAVE that took an entry out was heard, oldest first: each may explain one
     * step down of the count, once. */
    this._leaves = [];
    /** When a roll call was last heard or sent (DOUBT_CALL_EVERY_MS), and when we last
     * sent a JOIN or a HERE (ANSWER_GAP_MS). */
    this._calledMs = null;
    this._announcedMs = null;
    /** When to make sure a roll call came after LEAVEs explained the count going down. */
    this._doubtMs = null;
    /** Roster time: the caller's clock with every step back taken out (`_time`). */
    this._offsetMs = 0;
    this._lastMs = null;
    /** When our HERE is due; null: none waits. */
    this._hereAtMs = null;
    /** When our own roll call's JOIN is due; null: none planned. For a roster that outgrew
     * the count, only if it still has when it is due (a count that lagged a JOIN). */
    this._callAtMs = null;
    this._callIfOutgrown = false;
    /** The roll call being judged (the time of its JOIN), and the latest one after it. */
    this._rollCallMs = null;
    this._nextRollCallMs = null;
    /** leaving() was called: nothing more goes until the next joined(). */
    this._left = false;
  }

  /**
   * The members heard and believed present, oldest entry first. A name claimed by two
   * entries is flagged in both: either may be the impostor, whoever spoke first.
   * @returns {Member[]}
   */
  get members() {
    if (this._membersVersion !== this._version) {
      const claims = new Map();
      for (const { canonical } of this._entries.values()) claims.set(canonical, (claims.get(canonical) ?? 0) + 1);
      this._members = [...this._entries.values()].map(({ member, canonical }) =>
        claims.get(canonical) > 1 && !member.keyChanged ? Object.freeze({ ...member, keyChanged: true }) : member,
      );
      this._membersVersion = this._version;
    }
    return [...this._members];
  }

  /** The hex device keys of the entries that announced themselves (a JOIN or a HERE).
   * @returns {Set<string>} */
  announcers() {
    return new Set([...this._entries].filter(([, entry]) => entry.announces).map(([key]) => key));
  }

  /** Goes up whenever `members` would differ (an entry added or removed, a name or flag
   * changed); not when a member is merely heard again with the same name and flag. */
  get version() {
    return this._version;
  }

  /** When a HERE or a roll call's JOIN of ours is next due, by the caller's clock (as
   * `tick` is given it), or null when none is planned. A page runs `tick` from a timer
   * that a browser may slow to once a minute in a background tab; a timer set for this
   * time from the frame that planned the answer keeps it within the roll call's window. */
  nextSendMs() {
    const due = [this._hereAtMs, this._callAtMs].filter((ms) => ms !== null);
    return due.length === 0 ? null : Math.min(...due) - this._offsetMs;
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
    nowMs = this._time(nowMs);
    this._count = count;
    this._left = false;
    this._callAtMs = null;
    // Not announcing: no JOIN of ours, so nobody was asked to answer, and no roll call.
    if (this._announce) this._sendJoin(nowMs);
  }

  /**
   * The relay's count of the room (PRESENCE). A count going down with members in the
   * roster may be one of them gone without a LEAVE: an announcing member plans a roll
   * call, unless LEAVEs heard within ROLL_CALL_WINDOW_MS explain it, one step down each
   * (and the count still covers the roster and this member); then it makes sure of it
   * later.
   * @param {number} count
   * @param {number} nowMs
   */
  countChanged(count, nowMs) {
    nowMs = this._time(nowMs);
    const before = this._count;
    this._count = count;
    if (before === null || count >= before) return;
    const steps = before - count;
    const recent = this._leaves.filter((at) => nowMs - at <= ROLL_CALL_WINDOW_MS);
    const explained = recent.length >= steps && count - 1 >= this._entries.size;
    this._leaves = recent.slice(steps); // each LEAVE explains one step, once
    if (this._entries.size === 0 || !this._maySend()) return;
    if (!explained) this._planRollCall(nowMs);
    // LEAVEs of keys a hostile member announced could explain a member gone without a
    // word: a roll call comes, later.
    else if (this._doubtMs === null) this._doubtMs = nowMs + DOUBT_CALL_EVERY_MS;
  }

  /**
   * A message from `deviceKey` passed every check (PROTOCOL.md 5.6), sent at `sentMs`
   * (its timestamp; null: not known), at most MAX_HEARD_AGE_MS ago. A LEAVE takes its
   * sender out of the roster; any other kind puts it in (at the end, if new) or refreshes
   * it. Another's JOIN is a roll call, and asks for our HERE. Our own key is never an
   * entry; but a LEAVE under it is another window of ours leaving, not us, and we say at
   * once that we are still here. A message sent before the last LEAVE heard from its key,
   * or a LEAVE sent before the newest message heard from it, comes too late to count.
   * @param {number} kind
   * @param {Uint8Array} deviceKey
   * @param {string} name
   * @param {boolean} keyChanged
   * @param {number} nowMs
   * @param {number | null} [sentMs]
   */
  heard(kind, deviceKey, name, keyChanged, nowMs, sentMs = null) {
    checkKey(deviceKey);
    nowMs = this._time(nowMs);
    const key = hex(deviceKey);
    // Our own JOIN sent back is no roll call, and we are never a member of our roster.
    if (key === this._ownHex) {
      if (kind === Kind.LEAVE && this._maySend()) this._hereAtMs = nowMs;
      return;
    }
    const entry = this._entries.get(key);
    let leftAt = this._leftAt.get(key) ?? null;
    this._leftAt.delete(key);
    if (leftAt !== null && nowMs - leftAt.heardMs > MAX_HEARD_AGE_MS) leftAt = null; // a clock set right since may stamp earlier
    const keepLeftAt = () => {
      if (leftAt === null) return;
      this._leftAt.set(key, leftAt);
      if (this._leftAt.size > MAX_ROSTER) this._leftAt.delete(this._leftAt.keys().next().value);
    };
    if (kind === Kind.LEAVE) {
      if (sentMs !== null) {
        if (entry !== undefined && sentMs < entry.sentMs) {
          keepLeftAt();
          return;
        }
        if (leftAt === null || sentMs >= leftAt.sentMs) leftAt = { sentMs, heardMs: nowMs };
      }
      keepLeftAt();
      if (this._entries.delete(key)) {
        this._recency.delete(key);
        this._version += 1;
        this._leaves.push(nowMs);
        if (this._leaves.length > MAX_ROSTER) this._leaves.shift();
      }
      return;
    }
    keepLeftAt();
    if (sentMs !== null && leftAt !== null && sentMs < leftAt.sentMs) return;
    this._hear(deviceKey, key, name, Boolean(keyChanged), nowMs, sentMs);
    const heard = this._entries.get(key);
    if (heard !== undefined && (kind === Kind.JOIN || kind === Kind.HERE)) heard.announces = true;
    if (kind !== Kind.JOIN) return;
    this._callAtMs = null; // that JOIN is a roll call for us too
    this._startRollCall(nowMs);
    if (this._maySend() && this._hereAtMs === null) this._hereAtMs = this._answerAt(nowMs, deviceKey);
  }

  /**
   * Do what is due by `nowMs`: judge the roll calls whose window is over (one at a time,
   * in turn), then send our planned roll call's JOIN (which says we are here, as a HERE
   * would) or else a HERE.
   * @param {number} nowMs
   */
  tick(nowMs) {
    nowMs = this._time(nowMs);
    while (this._rollCallMs !== null && nowMs >= this._rollCallMs + ROLL_CALL_WINDOW_MS) {
      this._judge(this._rollCallMs);
      this._rollCallMs = this._nextRollCallMs;
      this._nextRollCallMs = null;
    }
    if (this._doubtMs !== null && nowMs >= this._doubtMs) {
      this._doubtMs = null;
      if (this._entries.size > 0 && this._maySend() && !this._calledSince(nowMs)) this._planRollCall(nowMs);
    }
    if (this._outgrown() && !this._calledSince(nowMs)) this._planRollCall(nowMs, true);
    else if (
      this._entries.size > 0 &&
      this._maySend() &&
      this._count !== null && // let in: our own JOIN was the first roll call
      !this._calledSince(nowMs, ROLL_CALL_EVERY_MS)
    ) {
      this._planRollCall(nowMs);
    }
    if (this._callAtMs !== null && nowMs >= this._callAtMs) {
      this._callAtMs = null;
      if (!this._callIfOutgrown || this._outgrown()) this._sendJoin(nowMs);
    }
    if (this._hereAtMs !== null && nowMs >= this._hereAtMs) {
      this._hereAtMs = null;
      this._sends.push(Kind.HERE);
      this._announcedMs = nowMs;
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

  /** Roster time: `nowMs` with every step back of the caller's clock taken out, so that a
   * clock set back never makes members look long unheard. */
  _time(nowMs) {
    nowMs += this._offsetMs;
    if (this._lastMs !== null && nowMs < this._lastMs) {
      this._offsetMs += this._lastMs - nowMs;
      nowMs = this._lastMs;
    }
    this._lastMs = nowMs;
    return nowMs;
  }

  _sendJoin(nowMs) {
    this._sends.push(Kind.JOIN);
    this._hereAtMs = null; // the JOIN says we are here too
    this._announcedMs = nowMs;
    this._startRollCall(nowMs);
  }

  /** When our answer to `their` is due: d ms from now, and ANSWER_GAP_MS at least since our
   * last JOIN or HERE. */
  _answerAt(nowMs, their) {
    const due = nowMs + answerDelay(this._own, their);
    return this._announcedMs === null ? due : Math.max(due, this._announcedMs + ANSWER_GAP_MS);
  }

  /** A JOIN of ours, answering no one's in particular (`their`: no one's key); one planned
   * earlier goes as planned (and goes whatever the count then, if either plan was not only
   * for a roster that outgrew it). */
  _planRollCall(nowMs, ifOutgrown = false) {
    if (this._callAtMs === null) {
      this._callAtMs = this._answerAt(nowMs, NO_ONE);
      this._callIfOutgrown = ifOutgrown;
    } else if (!ifOutgrown) this._callIfOutgrown = false;
  }

  /** More entries than the relay counts others: some are not connected (announced by a
   * hostile member, or gone unseen), or the count lags. */
  _outgrown() {
    return this._maySend() && this._count !== null && this._entries.size > this._count - 1;
  }

  /** A roll call was heard or sent within `withinMs`. */
  _calledSince(nowMs, withinMs = DOUBT_CALL_EVERY_MS) {
    return this._calledMs !== null && nowMs - this._calledMs < withinMs;
  }

  /** A roll call of `callMs` is over: whoever was not heard since did not answer. Who was
   * there when it started and answered (or was confirmed before) is confirmed, oldest
   * entry first, as many as the relay counts others: a hostile member answering for keys
   * by the hundred confirms no more than the room holds, and those there first keep their
   * places. */
  _judge(callMs) {
    let removed = false;
    for (const [key, entry] of this._entries) {
      if (entry.heardMs < callMs) {
        this._entries.delete(key);
        this._recency.delete(key);
        removed = true;
      }
    }
    let places = this._count === null ? this._entries.size : this._count - 1;
    for (const entry of this._entries.values()) {
      entry.confirmed = places > 0 && (entry.confirmed || entry.addedMs <= callMs);
      if (entry.confirmed) places -= 1;
    }
    if (removed) this._version += 1;
  }

  _hear(deviceKey, key, name, keyChanged, nowMs, sentMs) {
    const entry = this._entries.get(key);
    this._recency.delete(key);
    this._recency.add(key); // now the most recently heard
    const sent = sentMs ?? -1;
    if (entry !== undefined) {
      entry.heardMs = nowMs;
      entry.sentMs = Math.max(entry.sentMs, sent);
      if (entry.member.name !== name || entry.member.keyChanged !== keyChanged) {
        entry.member = Object.freeze({ ...entry.member, name, keyChanged });
        entry.canonical = canonicalName(name);
        this._version += 1;
      }
      return;
    }
    const member = Object.freeze({ deviceKey: deviceKey.slice(), name, fingerprint: fingerprint(deviceKey), keyChanged });
    const canonical = canonicalName(name);
    this._entries.set(key, { member, canonical, addedMs: nowMs, heardMs: nowMs, sentMs: sent, confirmed: false, announces: false });
    this._version += 1;
    if (this._entries.size > MAX_ROSTER) this._dropOne();
  }

  /** Past MAX_ROSTER: the least recently heard entry that no roll call confirmed goes, the
   * one just added if no other. Keys a hostile member announces by the thousand never push
   * out members who answered roll calls. */
  _dropOne() {
    for (const key of this._recency) {
      if (!this._entries.get(key).confirmed) {
        this._recency.delete(key);
        this._entries.delete(key);
        return;
      }
    }
  }

  /** A JOIN heard or sent at `atMs` starts a roll call: judged next if none is being
   * judged, else after the one that is. Only the latest waits, so a stream of JOINs costs
   * no memory and cannot put the judging off for ever. */
  _startRollCall(atMs) {
    this._calledMs = atMs;
    if (this._rollCallMs === null) this._rollCallMs = atMs;
    else this._nextRollCallMs = atMs;
  }
}

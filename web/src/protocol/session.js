// The client endpoint (PROTOCOL.md 8 and 10): one sans-I/O object that every browser
// client drives, mirroring the Python core's ClientSession.
//
// Feed it what the relay sent (`receive`) and tell it what the user wants (`join`,
// `sendText`); take the frames to send from `framesToSend()` and what happened from
// `events()`. It never touches a socket or a clock: the caller passes `nowMs`.
//
//   join(room) ----JOIN-----> relay
//              <--CHALLENGE--
//              ----PROOF----> (signed with the room key, for this challenge only)
//              <--JOINED----- => "joined" event; the outbox for the room is sent
//   sendText() --PUBLISH(ref)->                    <--ACK(ref)-- => "accepted" event
//              <--DELIVER---- => "message" (opened, signature checked, not a replay)
//
// Each room has a replay filter (PROTOCOL.md 7). It starts empty: a client that restarts
// (a reload, an unlock) tells the session, with `remember` right after `join`, the
// messages it already has (kept history, messages the user deleted), or a relay could
// send them again within the hour; and, with `rememberFloor`, the newest time among those
// whose ids it no longer keeps, below which nothing is accepted. The session remembers the
// messages it sends itself.
//
// The outbox keeps every message until the relay acknowledges it. After a reconnect
// (`connectionLost()` then `connectionMade()`) the session joins its rooms again and
// resends what was not acknowledged, byte for byte; receivers drop duplicates by id.
//
// A client that keeps its outbox beyond the session (the web client's key store, across a
// lock or a reload) reads what waits with `outboxOf`, and hands each one back with
// `restore`, right after `join`: the very same envelope, resent byte for byte with the same
// message id, so receivers that had it already drop it (PROTOCOL.md 10.6).
//
// The outbox is bounded in age and in size (PROTOCOL.md 10.6). `expire` gives up every
// message whose timestamp is OUTBOX_MAX_AGE_MS old, sent or not, with a "notSent" event:
// receivers would refuse it as stale (PROTOCOL.md 7), so an ACK for it would only hide its
// loss; an ACK that still comes for it is ignored. `send` rejects (UsageError) while
// MAX_OUTBOX messages wait.
//
// A CHALLENGE is answered only for a room whose JOIN is outstanding, and once per JOIN;
// any other is ignored (PROTOCOL.md 8.6): a proof is not bound to the relay, so a relay
// that got one for a challenge it relayed from another relay could join the room there.
// A JOINED, likewise, counts only as the answer to an outstanding JOIN: another is
// ignored, so that a relay cannot make news (an expiry, a count, an event) of every frame.
//
// Who is in each room (PROTOCOL.md 5.7): every room has a Roster (roster.js), fed with the
// relay's counts and every message that passes the checks; `members(roomId)` reads it.
// A session made with `announce: true` says who it is too: a JOIN at each JOINED, a HERE
// to answer others' JOINs, a LEAVE before `leave` (and for all rooms with
// `announceLeaving`, before the client closes); a "members" event follows each change of
// a roster. One that announces nothing (scripts) keeps its events as they were before
// rosters: no "members". `tick(nowMs)`, about once a second, sends what is due and judges
// roll calls. Announcements are sealed and published at once or never: they wait in no
// outbox (no "accepted" or "notSent", not in `outboxOf`, not resent after a reconnect),
// are dropped while the room is not joined, publishing is paused or MAX_IN_FLIGHT are on
// the wire, and take a ref in flight like any PUBLISH (an ERROR for one is handled as for
// any).
//
// Sealing and opening use WebCrypto, so `sendText`, `send`, `receive`, `tick`, `leave` and
// `announceLeaving` are async. The session runs them one at a time, in call order, on an
// internal promise chain: a caller may fire them without awaiting and frames are still
// handled in the order they came. Everything else is synchronous and may be called at any
// time, also while one of those is in flight; the async methods look at the room again
// after each await. `leave` takes the room out of the session at once; an announcing
// session's frames for it (the LEAVE message, then the LEAVE frame) are queued when its
// promise resolves, any other's at once, as before rosters.
//
// Events are plain objects with a `type`:
//   joined   {roomId, expiresAtMs, members}
//   presence {roomId, members}
//   message  {roomId, kind, message, text, fingerprint, keyChanged}  text: null unless TEXT;
//            keyChanged: the name (compared in its canonical form, PROTOCOL.md 4.4) was
//            seen in the room before with another device key
//   rejected {roomId, reason}          a DELIVER that could not be trusted: the error's name
//   accepted {roomId, messageId}       the relay acknowledged one of ours
//   notSent  {roomId, messageId, reason}  one of ours was given up before the relay took
//            it (reason: for people); no "accepted" follows for it
//   refused  {code, roomId, ref, reason, fatal}  fatal: the session gave the room up
//   expired  {roomId}
//   pong     {token}
//   members  {roomId, members}          the room's roster changed: members, oldest first, each
//            {deviceKey, name, fingerprint, keyChanged} (roster.js); announcing sessions only

import { equal, hex, utf8, utf8Strict } from "./bytes.js";
import { ErrorCode, FrameType } from "./codes.js";
import { Kind, MESSAGE_ID_SIZE, MAX_NAME_BYTES, ReplayFilter, openEnvelope, sealEnvelope } from "./envelope.js";
import { EnvelopeError, FrameError, StaleMessage, UsageError } from "./errors.js";
import { decodeFrame, encodeFrame } from "./frames.js";
import { signJoinProof } from "./join.js";
import { deviceKeyFromSeed, fingerprint } from "./kdf.js";
import { canonicalName } from "./names.js";
import { MAX_HEARD_AGE_MS, Roster } from "./roster.js";

export const MAX_REF = 2 ** 32 - 1;
/**
 * PUBLISHes on the wire at once, awaiting their ACK (PROTOCOL.md 10.6): a full outbox
 * resent after a reconnect must not empty the relay's token bucket and earn a close for
 * too many refusals. More leave as ACKs come back.
 */
export const MAX_IN_FLIGHT = 100;
/**
 * After a NOT_JOINED made us join a room again, another joins again only this much later
 * (PROTOCOL.md 10.6): each JOIN costs a proof the relay keeps, as a reconnect does, whose
 * pause grows to as much.
 */
export const REJOIN_PAUSE_MS = 10_000;

/** `dueMs` has come by `nowMs`, or the clock was set back past the pause before it: a room
 * must not wait an hour for a clock set back an hour. */
function past(dueMs, nowMs) {
  return !(dueMs - nowMs > 0 && dueMs - nowMs <= REJOIN_PAUSE_MS);
}
/**
 * How old a message in the outbox may get before the session gives it up ("notSent"):
 * receivers refuse a message whose timestamp is over an hour old (PROTOCOL.md 7), and one
 * sent later than this might reach them after that, with 5 minutes left for clock skew
 * between devices and for the trip. Sent or not, it is dropped: an ACK for it now would
 * report as taken a message that no one would show.
 */
export const OUTBOX_MAX_AGE_MS = 55 * 60 * 1000;
/**
 * Messages waiting for their ACK, at most, per session: a program that sends without
 * waiting, to a relay that never answers, must not grow the outbox without end. Far more
 * than a person writes in the 55 minutes a message may wait.
 */
export const MAX_OUTBOX = 10_000;
/** The reason of a "notSent" for a message too old to send. */
export const NOT_SENT_IN_TIME =
  "The relay did not take the message within 55 minutes, and the others would now refuse " +
  "it as too old: it was not sent. Send it again.";
/** The reason of a "notSent" for a message waiting in a room the relay refused for good. */
export const NOT_SENT_REFUSED = "The relay refused the room: the message was not sent.";
/**
 * Names remembered per room for the key-change warning (PROTOCOL.md 4.4), the most
 * recently seen; the least recently seen goes first. Every accepted message under a new
 * name would otherwise add one entry for the room's whole life, and a member can make up
 * names without end. A thousand is far more than a room's members (a relay admits 256 by
 * default), and at most 64 + 32 bytes of name and key each, some 100 KB per room.
 */
export const MAX_NAMES_PER_ROOM = 1000;

/**
 * Refusals of a JOIN after which the session stops trying the room. Not ROOM_FULL or
 * RELAY_FULL: a place comes free when a member leaves or a room expires, so the room and
 * what waits for it stay, and the caller tries again later (PROTOCOL.md 10.6).
 */
export const FATAL_FOR_ROOM = new Set([
  ErrorCode.PROOF_FAILED,
  ErrorCode.ROOM_EXPIRED,
  ErrorCode.TOO_MANY_ROOMS,
  ErrorCode.EXPIRY_TOO_FAR,
]);

/**
 * Refusals that answer only a JOIN or its PROOF (PROTOCOL.md 8.4, 11.1). With ref 0, for a
 * room with no JOIN of ours outstanding, one answers nothing and is ignored, as an unasked
 * JOINED is (8.6). Not ROOM_EXPIRED: the relay sends it unasked when the room expires.
 */
const ANSWERS_A_JOIN = new Set([
  ErrorCode.RATE_LIMITED,
  ErrorCode.PROOF_FAILED,
  ErrorCode.NO_CHALLENGE,
  ErrorCode.TOO_MANY_ROOMS,
  ErrorCode.ROOM_FULL,
  ErrorCode.ALREADY_JOINED,
  ErrorCode.EXPIRY_TOO_FAR,
  ErrorCode.RELAY_FULL,
]);

/** The key of a room id in the session's maps: its lowercase hex. */
export function roomHex(roomId) {
  return hex(roomId);
}

const defaultRandomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));

/**
 * One room as the session knows it.
 * @typedef {object} RoomState
 * @property {{messageKey: Uint8Array, signingSeed: Uint8Array, publicKey: Uint8Array, roomId: Uint8Array}} keys
 * @property {string} name the sender name this device uses in the room
 * @property {number} expiresAtMs 0: not known
 * @property {boolean} joined
 * @property {boolean} joining a JOIN is on its way, unanswered (PROTOCOL.md 8.5)
 * @property {number} members
 * @property {number} awaitedMembers after a reconnect, the count the outbox waits for
 * @property {Set<string>} awaitedKeys after a reconnect to a room that had emptied, the hex
 *   device keys of the roster's announcing members at the drop, each of which the outbox
 *   waits to hear again
 * @property {boolean} keysAwaitedAtAnyCount tries to connect failed since the drop: the
 *   announcers are awaited whatever the count (a newcomer may fill a returning member's place)
 * @property {boolean} awaitsWholeGrace first joined after the relay was out of reach, with
 *   no count from before to await: the outbox waits the caller's whole grace (`release`)
 * @property {boolean} mayHold false once the caller said it can wait no more
 * @property {number | null} holdSinceMs while the outbox waits and the room is joined, when
 *   this connection's JOINED came (the caller's grace counts the time joined during the
 *   wait: `heldSince`)
 * @property {number} holdSpentMs the time joined during the wait before the last drop
 * @property {Map<string, string>} names canonical sender name -> hex of the device key last
 *   seen with it, least recently seen first; at most MAX_NAMES_PER_ROOM
 * @property {ReplayFilter} replays
 * @property {Roster} roster who is in the room (PROTOCOL.md 5.7)
 * @property {number} rosterShown the roster's version of the last "members" event
 */

/** A client's protocol state across any number of rooms and reconnects. */
export class ClientSession {
  /**
   * @param {object} options
   * @param {Uint8Array} options.deviceSeed this install's 32-byte device key seed
   * @param {(n: number) => Uint8Array} [options.randomBytes] a CSPRNG, for message ids and nonces
   * @param {boolean} [options.announce] say who this member is: JOIN, HERE and LEAVE
   *   (PROTOCOL.md 5.7); scripts do not
   */
  constructor({ deviceSeed, randomBytes = defaultRandomBytes, announce = false } = {}) {
    if (!(deviceSeed instanceof Uint8Array) || deviceSeed.length !== 32) {
      throw new UsageError("The device seed is 32 bytes.");
    }
    this.device = deviceKeyFromSeed(deviceSeed);
    this.fingerprint = fingerprint(this.device.publicKey);
    this.announce = Boolean(announce);
    /** @type {Map<string, RoomState>} keyed by roomHex(roomId) */
    this.rooms = new Map();
    this.connected = false;
    this._randomBytes = randomBytes;
    /** Oldest first; kept until an ACK, or given up at OUTBOX_MAX_AGE_MS. A ref of 0: waiting to be published.
     * @type {{roomId: Uint8Array, key: string, messageId: Uint8Array, timestampMs: number, envelope: Uint8Array, ref: number}[]} */
    this._outbox = [];
    /** The refs of PUBLISHes on the wire, not answered yet: at most MAX_IN_FLIGHT. A ref
     * stays until its ACK or ERROR, even when its room is left meanwhile. */
    // ref -> the PUBLISH it names: its room (hex), and whether it is an announcement
    this._inFlight = new Map();
    /** A PUBLISH was refused: none goes until the caller's pause is over (resendUnacknowledged). */
    this._paused = false;
    /** Keys of rooms left while their JOIN was unanswered: the LEAVE waits for the answer,
     * so that joining again never puts a second JOIN behind the first (PROTOCOL.md 8.5). */
    this._leaveOnAnswer = new Set();
    /** Keys of rooms refused as TOO_MANY_ROOMS behind held LEAVEs: they JOIN again once
     * every held LEAVE has gone out. */
    this._joinAfterLeaves = [];
    /** Keys of rooms whose outstanding JOIN has had its CHALLENGE answered: one PROOF per
     * JOIN. Kept across leave() and join() while that JOIN is unanswered (its answer serves
     * the new join too), dropped when it is answered or a new JOIN goes out. */
    this._proved = new Set();
    /** Keys of rooms left whose LEAVE message is being sealed: their LEAVE frame follows it,
     * and a JOIN for the room (joined again meanwhile) follows that. */
    this._sealingLeave = new Set();
    /** The latest time a caller gave: the timestamp of a LEAVE message sent without one. */
    this._lastNowMs = 0;
    /** Counts connections lost: what a lost connection sent is not handled after it. */
    this._connections = 0;
    this._nextRef = 1;
    this._frames = [];
    this._events = [];
    this._tail = Promise.resolve();
  }

  // what the caller takes

  /** @returns {Uint8Array[]} the frames to send, in order; each call empties the list */
  framesToSend() {
    const out = this._frames;
    this._frames = [];
    return out;
  }

  /** @returns {object[]} what happened since the last call, each with a `type` */
  events() {
    const out = this._events;
    this._events = [];
    return out;
  }

  /** Messages in the outbox that the relay has not acknowledged. */
  get unacknowledged() {
    return this._outbox.length;
  }

  // what the user does

  /**
   * Join a room now if connected, and again after every reconnect. Joining a room the
   * session already has changes nothing.
   * @param {{messageKey: Uint8Array, signingSeed: Uint8Array, publicKey: Uint8Array, roomId: Uint8Array}} roomKeys
   *   what kdf.js roomKeysFromMinikey returns
   * @param {{expiresAtMs?: number, name?: string}} [options] the expiry this device
   *   knows (0: not known) and the sender name its messages in this room carry
   */
  join(roomKeys, { expiresAtMs = 0, name = "" } = {}) {
    if (typeof name !== "string" || utf8.encode(name).length > MAX_NAME_BYTES) {
      throw new UsageError("A name is at most 64 bytes of UTF-8.");
    }
    // Refused now, not at every send: sealEnvelope refuses such a name (PROTOCOL.md 5.3).
    if (/\p{Cs}/u.test(name)) throw new UsageError("A name must be encodable as UTF-8.");
    if (!Number.isSafeInteger(expiresAtMs) || expiresAtMs < 0) {
      throw new UsageError("An expiry is a time in ms since 1970, or 0.");
    }
    const key = roomHex(roomKeys.roomId);
    if (this.rooms.has(key)) return;
    this.rooms.set(key, {
      keys: roomKeys,
      name,
      expiresAtMs,
      joined: false,
      joining: false,
      // That JOIN went out while a held LEAVE still kept a place on the relay: a
      // TOO_MANY_ROOMS for it may be that place's doing, and earns one more JOIN.
      behindHeldLeave: false,
      members: 0,
      // After a reconnect the outbox waits until the room has as many members as
      // before, so that what was written during the outage reaches those who come back,
      awaitedMembers: 0,
      // and, if the room had emptied, until each member of the roster then that announces
      // itself has been heard again: the count alone cannot tell a member back from one
      // who was not there (a one-shot `send`).
      awaitedKeys: new Set(),
      // Tries to connect failed since the drop: the relay may have restarted, and a
      // newcomer may fill a returning member's place in the count. The announcers are
      // then awaited at any count (those still connected answer our JOIN within seconds).
      keysAwaitedAtAnyCount: false,
      // First joined after the relay was out of reach, with no count from before to
      // await: if the relay restarted, the others are reconnecting too, one by one, and
      // nothing says when all are back. The outbox waits the whole grace (`release`).
      awaitsWholeGrace: false,
      // False once the caller said it can wait no more (`release(roomId, {forGood: true})`).
      mayHold: true,
      holdSinceMs: null,
      holdSpentMs: 0,
      names: new Map(),
      // One filter per room: a member of one room cannot make us drop another's messages.
      replays: new ReplayFilter(),
      roster: new Roster(this.device.publicKey, { announce: this.announce }),
      rosterShown: 0,
      // Announcements that found publishing paused or MAX_IN_FLIGHT on the wire: tried
      // again at the next tick, while the room stays joined (PROTOCOL.md 5.7). Each kind once.
      unsent: [],
      // When we last signed a join proof for the room on this connection, whether we
      // joined it again on this connection, and when a JOIN asked for again sooner goes
      // (PROTOCOL.md 10.6): null, none yet / none waits.
      provedMs: null,
      joinedAgain: false,
      // The relay's last refusal of our JOIN said the room or the relay is full for now:
      // the caller tries again after its own pause (RETRY_AFTER_FULL), not ours.
      fullForNow: false,
      rejoinDueMs: null,
    });
    if (this._leaveOnAnswer.delete(key)) {
      // Left and joined again before the relay answered the first JOIN: its answer serves
      // this join too.
      this.rooms.get(key).joining = true;
    } else if (this.connected && !this._sealingLeave.has(key)) {
      // (Else the JOIN goes once the LEAVE before it has: see leave.)
      this._sendJoin(key);
    }
  }

  /**
   * Tell the replay filter of a room (joined first) about a message this client already
   * has: one it keeps in its history, or one the user deleted. A DELIVER of it is then
   * dropped as a replay (a "rejected" event), also after a restart, which starts every
   * filter empty (PROTOCOL.md 7). A message older than the filter's window is ignored: it
   * is refused as stale anyway.
   * @param {Uint8Array} roomId
   * @param {Uint8Array} messageId
   * @param {number} timestampMs the message's own timestamp
   * @param {number} nowMs
   */
  remember(roomId, messageId, timestampMs, nowMs) {
    const state = this.rooms.get(roomHex(roomId));
    if (state === undefined) throw new UsageError("Join the room before telling it the messages it has.");
    state.replays.remember(messageId, timestampMs, nowMs);
  }

  /**
   * Raise the floor of a room's replay filter (joined first) to `floorMs`: a DELIVER of a
   * message stamped at or below it is then dropped as stale (a "rejected" event), as after
   * the filter forgot ids at capacity (PROTOCOL.md 7). A client that restarts and no longer
   * keeps the ids of some messages it had (its store keeps only the newest) tells it the
   * newest time among those, so that none of them can be sent again. The floor never goes
   * down, and never past `nowMs`: a floor ahead of the clock (ids stamped ahead, or a clock
   * since set back) would refuse every message until then.
   * @param {Uint8Array} roomId
   * @param {number} floorMs
   * @param {number} nowMs
   */
  rememberFloor(roomId, floorMs, nowMs) {
    const state = this.rooms.get(roomHex(roomId));
    if (state === undefined) throw new UsageError("Join the room before telling it the messages it has.");
    if (!Number.isSafeInteger(nowMs)) throw new UsageError("The time now is a whole number of ms.");
    state.replays.raiseFloor(Number.isSafeInteger(floorMs) ? Math.min(floorMs, nowMs) : floorMs);
  }

  /**
   * Put back into the outbox a message this client sealed before it restarted (a lock, a
   * reload) and the relay had not acknowledged: `envelope` is sent again as it is, once the
   * room (joined first) is, in timestamp order among the messages waiting, within the same
   * limits as `send` (MAX_IN_FLIGHT on the wire, OUTBOX_MAX_AGE_MS, MAX_OUTBOX). Its id is
   * remembered in the replay filter, as `send` does. Returns true once it waits (or waited
   * already: restoring twice changes nothing); false when it is OUTBOX_MAX_AGE_MS old
   * already, given up with a "notSent" event. Throws UsageError, restoring nothing, while
   * MAX_OUTBOX messages wait.
   * @param {Uint8Array} roomId
   * @param {Uint8Array} messageId the id sealed in the envelope
   * @param {number} timestampMs the timestamp sealed in the envelope
   * @param {Uint8Array} envelope the sealed envelope, as it was first published
   * @param {number} nowMs
   * @returns {boolean}
   */
  restore(roomId, messageId, timestampMs, envelope, nowMs) {
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (state === undefined) throw new UsageError("Join the room before restoring its outbox.");
    if (!(messageId instanceof Uint8Array) || messageId.length !== MESSAGE_ID_SIZE) {
      throw new UsageError(`A message id is ${MESSAGE_ID_SIZE} bytes.`);
    }
    if (!(envelope instanceof Uint8Array) || envelope.length === 0) throw new UsageError("An envelope is a Uint8Array.");
    if (!Number.isSafeInteger(timestampMs) || timestampMs < 0 || !Number.isSafeInteger(nowMs) || nowMs < 0) {
      throw new UsageError("A time in ms is below 2^53.");
    }
    const restored = (outgoing) =>
      outgoing.timestampMs === timestampMs && outgoing.key === key && equal(outgoing.messageId, messageId);
    if (this._outbox.some(restored)) return true;
    if (nowMs - timestampMs >= OUTBOX_MAX_AGE_MS) {
      this._events.push({ type: "notSent", roomId: state.keys.roomId, messageId, reason: NOT_SENT_IN_TIME });
      return false;
    }
    if (this._outbox.length >= MAX_OUTBOX) {
      throw new UsageError(
        `${MAX_OUTBOX} messages are waiting for the relay to take them: this one was not put back.`,
      );
    }
    state.replays.remember(messageId, timestampMs, nowMs);
    const outgoing = {
      roomId: state.keys.roomId,
      key,
      messageId: messageId.slice(),
      timestampMs,
      envelope: envelope.slice(),
      ref: 0,
    };
    // Before the first younger one waiting; never before one on the wire.
    let at = this._outbox.length;
    while (at > 0 && this._outbox[at - 1].ref === 0 && this._outbox[at - 1].timestampMs > timestampMs) at--;
    this._outbox.splice(at, 0, outgoing);
    this._pump();
    return true;
  }

  /**
   * The messages of `roomId` the relay has not acknowledged, oldest first, to keep them
   * beyond this session (then `restore`): copies of their id, timestamp and envelope.
   * @param {Uint8Array} roomId
   * @returns {{messageId: Uint8Array, timestampMs: number, envelope: Uint8Array}[]}
   */
  outboxOf(roomId) {
    const key = roomHex(roomId);
    return this._outbox
      .filter((outgoing) => outgoing.key === key)
      .map(({ messageId, timestampMs, envelope }) => ({
        messageId: messageId.slice(),
        timestampMs,
        envelope: envelope.slice(),
      }));
  }

  /**
   * Leave a room: it is out of the session at once (its outbox and roster too). On the
   * wire, the LEAVE frame; announcing and joined, a LEAVE message first (PROTOCOL.md 5.7),
   * which must reach the relay before the LEAVE frame that ends our membership: both are
   * queued once it is sealed, when the promise resolves. Otherwise the LEAVE frame is
   * queued before leave() returns. Joined again meanwhile, the room's JOIN follows them.
   * @param {Uint8Array} roomId
   * @param {number} [nowMs] the LEAVE message's timestamp; by default the latest time the
   *   session was given
   * @returns {Promise<void>}
   */
  leave(roomId, nowMs = undefined) {
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (state !== undefined) nowMs = this._clock(nowMs);
    if (state === undefined || !this.announce || !this._mayAnnounce(key, state)) {
      this._leaveOnWire(key);
      this._forget(key);
      return Promise.resolve();
    }
    state.roster.leaving();
    this._forget(key);
    this._sealingLeave.add(key);
    const connection = this._connections;
    return this._serialized(async () => {
      try {
        await this._announce(key, state, nowMs, connection);
      } finally {
        // A connection lost meanwhile took our place in the room, and the JOINs it makes
        // go on the next, with nothing to wait for.
        if (connection === this._connections) {
          this._sealingLeave.delete(key);
          this._frames.push(encodeFrame({ type: "Leave", roomId: state.keys.roomId }));
          const again = this.rooms.get(key);
          if (again !== undefined && !again.joined && !again.joining) this._sendJoin(key);
        }
      }
    });
  }

  /**
   * Say goodbye in every joined room (a LEAVE message each), announcing: the client is
   * about to close. The rooms stay; best effort, as any announcement.
   * @param {number} [nowMs] the messages' timestamp; by default the latest time the
   *   session was given
   * @returns {Promise<void>}
   */
  announceLeaving(nowMs = undefined) {
    nowMs = this._clock(nowMs);
    return this._serialized(async () => {
      for (const [key, state] of [...this.rooms]) {
        if (this.rooms.get(key) !== state || !state.joined) continue;
        state.roster.leaving(); // and no HERE after it
        await this._announce(key, state, nowMs);
      }
    });
  }

  /**
   * Do what the rooms' rosters have due (PROTOCOL.md 5.7): send a HERE or a roll call's
   * JOIN, take out who did not answer a roll call ("members" events). Call it about once a
   * second.
   * @param {number} nowMs
   * @returns {Promise<void>}
   */
  tick(nowMs) {
    if (!Number.isSafeInteger(nowMs)) return Promise.reject(new UsageError("The time now is a whole number of ms."));
    this._lastNowMs = nowMs;
    return this._serialized(async () => {
      for (const [key, state] of [...this.rooms]) {
        if (this.rooms.get(key) !== state) continue; // left meanwhile
        if (state.rejoinDueMs !== null && past(state.rejoinDueMs, nowMs)) {
          state.rejoinDueMs = null;
          if (this.connected && !state.joined && !state.joining) this._sendJoin(key);
        }
        state.roster.tick(nowMs);
        await this._announce(key, state, nowMs);
        this._membersNews(key, state);
      }
    });
  }

  /**
   * When the earliest announcement of any room is due (a HERE, a roll call's JOIN), by the
   * clock `tick` is given; null when none is planned. `tick` at that time sends it. One
   * that found the relay busy is due at once when it may go now (not while it may not:
   * `tick` would only keep it waiting).
   * @returns {number | null}
   */
  nextSendMs() {
    let earliest = null;
    for (const [key, state] of this.rooms) {
      const waiting = state.unsent.length > 0 && this._mayAnnounce(key, state);
      const due = waiting ? this._lastNowMs : state.roster.nextSendMs();
      if (due !== null && (earliest === null || due < earliest)) earliest = due;
    }
    return earliest;
  }

  /**
   * Who is in a room: the members heard and believed present (PROTOCOL.md 5.7), oldest
   * entry first, never this device; empty for a room the session does not have.
   * @param {Uint8Array} roomId
   * @returns {import("./roster.js").Member[]}
   */
  members(roomId) {
    return this.rooms.get(roomHex(roomId))?.roster.members ?? [];
  }

  /**
   * Seal a message into the outbox; it leaves as soon as the room is joined. Rejects with
   * UsageError, and sends nothing, while MAX_OUTBOX messages wait for the relay.
   * @param {Uint8Array} roomId
   * @param {number} kind a Kind
   * @param {Uint8Array} body
   * @param {number} nowMs the message's timestamp
   * @returns {Promise<import("./envelope.js").Message>}
   */
  send(roomId, kind, body, nowMs) {
    if (!Number.isInteger(kind) || kind < 0 || kind > 255) return Promise.reject(new UsageError("A kind is one byte."));
    if (!(body instanceof Uint8Array)) return Promise.reject(new UsageError("A body is a Uint8Array."));
    if (!Number.isSafeInteger(nowMs) || nowMs < 0) return Promise.reject(new UsageError("A time in ms is below 2^53."));
    if (this.rooms.has(roomHex(roomId))) this._lastNowMs = nowMs;
    return this._serialized(() => this._send(roomId, kind, body, nowMs));
  }

  /** @returns {Promise<import("./envelope.js").Message>} */
  sendText(roomId, text, nowMs) {
    if (typeof text !== "string") return Promise.reject(new UsageError("A text message is a string."));
    // As the Python core refuses it: TextEncoder would send U+FFFD for a lone surrogate.
    if (/\p{Cs}/u.test(text)) return Promise.reject(new UsageError("A message must be encodable as UTF-8."));
    return this.send(roomId, Kind.TEXT, utf8.encode(text), nowMs);
  }

  /** @param {bigint} token echoed by the relay's PONG once it handled all sent before */
  ping(token) {
    this._frames.push(encodeFrame({ type: "Ping", token: BigInt(token) }));
  }

  // what the connection does

  /** A try to connect failed: the relay, or the way to it, was out of reach. Each room
   * not joined on this session before (so with no count to await) then holds its outbox
   * from its next JOINED for the caller's whole grace (`heldSince`, `release`): if the
   * relay restarted, its members are reconnecting too. A room joined before awaits its
   * announcing members whatever the count. */
  connectFailed() {
    for (const state of this.rooms.values()) {
      if (state.joined) continue;
      if (state.awaitedMembers) state.keysAwaitedAtAnyCount = true;
      else state.awaitsWholeGrace = true;
    }
  }

  connectionMade() {
    this.connected = true;
    for (const key of this.rooms.keys()) this._sendJoin(key);
  }

  /** The connection closed, at `nowMs` (null: not known; a wait for members then counts
   * its grace afresh from the next JOINED). */
  connectionLost(nowMs = null) {
    this.connected = false;
    this._connections += 1;
    this._frames = [];
    for (const state of this.rooms.values()) {
      if (state.holdSinceMs !== null) {
        // A relay down again during the wait does not use up its grace.
        if (nowMs !== null) state.holdSpentMs += Math.max(0, nowMs - state.holdSinceMs);
        state.holdSinceMs = null;
      }
      if (state.joined) {
        // The count awaited from an earlier drop stays awaited.
        state.awaitedMembers = Math.max(state.members, state.awaitedMembers);
        // Only an announcing session hears them again: the others answer its JOIN. Those
        // awaited from an earlier drop stay awaited: a roll call since may have taken one
        // still reconnecting off the roster.
        if (this.announce) for (const key of state.roster.announcers()) state.awaitedKeys.add(key);
      }
      state.joined = false;
      state.joining = false;
      state.provedMs = null; // a new connection joins anyway
      state.joinedAgain = false;
      state.rejoinDueMs = null;
    }
    this._leaveOnAnswer.clear(); // the relay forgot this connection's rooms
    this._sealingLeave.clear();
    this._joinAfterLeaves = [];
    this._proved.clear();
    for (const outgoing of this._outbox) outgoing.ref = 0;
    this._inFlight.clear();
    this._paused = false;
  }

  /** True while the outbox of `roomId` waits for members to come back. */
  holding(roomId) {
    return this._holding(roomHex(roomId));
  }

  /** While the outbox of `roomId` waits for members, when it would have begun to wait had
   * it been joined all along: the JOINED of this connection, less the time joined during
   * the wait before the last drop; null otherwise. The caller's grace time counts from it:
   * time joined, not time out of reach. */
  heldSince(roomId) {
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (state === undefined || state.holdSinceMs === null || !this._holding(key)) return null;
    return state.holdSinceMs - state.holdSpentMs;
  }

  /** Stop waiting for members of `roomId` (the caller's grace time is over); with
   * `forGood`, after any later drop or failed try too (the caller's own deadline is near). */
  release(roomId, { forGood = false } = {}) {
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (state !== undefined) {
      state.mayHold = state.mayHold && !forGood;
      state.awaitedMembers = 0;
      state.awaitedKeys.clear();
      state.keysAwaitedAtAnyCount = state.awaitsWholeGrace = false;
      state.holdSinceMs = null;
      state.holdSpentMs = 0;
      this._flushRoom(key);
    }
  }

  /**
   * Forget every room whose time is over, and its outbox ("expired" events). A room is
   * also left on the relay (PROTOCOL.md 9: a client leaves at expiry by its own clock).
   * Then give up every message in the outbox whose timestamp is OUTBOX_MAX_AGE_MS old, on
   * the wire or not ("notSent" events, PROTOCOL.md 10.6). Call it about once a second.
   */
  expire(nowMs) {
    for (const [key, state] of [...this.rooms]) {
      if (state.expiresAtMs > 0 && state.expiresAtMs <= nowMs) {
        this._leaveOnWire(key);
        this._forget(key);
        this._events.push({ type: "expired", roomId: state.keys.roomId });
      }
    }
    const kept = [];
    for (const outgoing of this._outbox) {
      if (nowMs - outgoing.timestampMs >= OUTBOX_MAX_AGE_MS) {
        // One on the wire keeps its place in flight until answered; its ACK then finds it
        // gone from the outbox and reports nothing.
        this._events.push({
          type: "notSent",
          roomId: outgoing.roomId,
          messageId: outgoing.messageId,
          reason: NOT_SENT_IN_TIME,
        });
      } else {
        kept.push(outgoing);
      }
    }
    this._outbox = kept;
  }

  /**
   * Send JOIN again for a room not joined yet (the relay said: rate limited, relay full or
   * room full; the caller's timer calls it a little or much later).
   */
  retryJoin(roomId) {
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (!this.connected || state === undefined || state.joined || state.joining) return;
    if (this._joinAfterLeaves.includes(key)) return; // it goes once the held LEAVEs have
    if (this._sealingLeave.has(key)) return; // it goes once the LEAVE before it has
    this._joinAgain(key, !state.fullForNow);
  }

  /**
   * JOIN a room again on this connection (a NOT_JOINED, a retry): at once the first time,
   * and whenever we signed no proof for it in the last REJOIN_PAUSE_MS; else once the
   * pause is over (tick), the room's messages waiting meanwhile as after a reconnect. A
   * relay that lets us in, or challenges us, and then refuses, again and again, gets a
   * proof per pause, not one per round trip (PROTOCOL.md 10.6). Not `paused`: a retry the
   * caller paces itself (a room or relay full for now).
   */
  _joinAgain(key, paused = true) {
    const state = this.rooms.get(key);
    const first = !state.joinedAgain;
    state.joinedAgain = true;
    if (first || !paused || state.provedMs === null || past(state.provedMs + REJOIN_PAUSE_MS, this._lastNowMs)) {
      this._sendJoin(key);
    } else state.rejoinDueMs = state.provedMs + REJOIN_PAUSE_MS;
  }

  /** The pause after a refusal is over: send again what the relay refused (PROTOCOL.md 10.6). */
  resendUnacknowledged() {
    this._paused = false;
    for (const key of this.rooms.keys()) this._flushRoom(key);
  }

  /** True while a refused PUBLISH waits for the caller's pause to end. */
  get waitingToResend() {
    return this._paused;
  }

  /**
   * Handle one frame from the relay. A frame that makes no sense rejects with FrameError
   * (and changes nothing).
   * @param {Uint8Array} data
   * @param {number} nowMs
   * @returns {Promise<void>}
   */
  receive(data, nowMs) {
    // A frame waits in line behind any seal still running; if its connection dropped
    // meanwhile, it belongs to that connection and is dropped too.
    // While disconnected there is no relay to hear from: a JOINED taken then would count
    // us in a room the next connection has not let us into. Judged now, not when its turn
    // comes: a connection made meanwhile must not take a frame fed before it.
    const live = this.connected;
    const connection = this._connections;
    // Except a message fed while connected, which stands on its own (sealed for its room,
    // signed, checked for replays): the relay keeps none, so one dropped here is lost.
    const message = live && data[0] === FrameType.DELIVER;
    const current = () => message || (live && connection === this._connections);
    if (live) this._lastNowMs = nowMs;
    return this._serialized(() => (current() ? this._receive(data, nowMs, connection) : undefined));
  }

  // inside

  _serialized(task) {
    const result = this._tail.then(task);
    this._tail = result.catch(() => {});
    return result;
  }

  async _send(roomId, kind, body, nowMs) {
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (state === undefined) throw new UsageError("Join the room before sending to it.");
    if (this._outbox.length >= MAX_OUTBOX) {
      throw new UsageError(
        `${MAX_OUTBOX} messages are waiting for the relay to take them: wait for some to be ` +
          "taken (or given up) before sending more. Nothing was sent.",
      );
    }
    const { message, envelope } = await this._seal(state, kind, body, nowMs);
    // The room may have expired or been left while WebCrypto worked.
    if (this.rooms.get(key) !== state) throw new UsageError("The room is gone: the message was not sent.");
    // Our own message, sent back to us by a relay, is a replay too.
    state.replays.remember(message.messageId, message.timestampMs, nowMs);
    const outgoing = {
      roomId: state.keys.roomId,
      key,
      messageId: message.messageId,
      timestampMs: message.timestampMs,
      envelope,
      ref: 0,
    };
    this._outbox.push(outgoing);
    this._pump();
    return message;
  }

  /** `connection`: the one the frame came on (this._connections when it was fed). */
  async _receive(data, nowMs, connection) {
    const frame = decodeFrame(data);
    switch (frame.type) {
      case "Deliver":
        await this._deliver(frame.roomId, frame.envelope, nowMs, connection);
        return;
      case "Ack":
        this._acknowledged(frame.ref);
        return;
      case "Challenge":
        this._challenged(frame.roomId, frame.challenge);
        return;
      case "Joined": {
        const key = roomHex(frame.roomId);
        this._proved.delete(key);
        const state = this.rooms.get(key);
        if (this._answeredAfterLeave(frame.roomId, true)) return;
        // Only the answer to our JOIN, once: a JOINED the relay adds would count as news
        // (a new expiry, a new count) at each, as often as it likes to send them.
        if (state !== undefined && state.joining) {
          state.joined = true;
          state.joining = false;
          // The earlier of what we knew and what the relay says; 0 says nothing.
          const known = [state.expiresAtMs, frame.expiresAtMs].filter((t) => t > 0);
          state.expiresAtMs = known.length > 0 ? Math.min(...known) : 0;
          state.members = frame.members;
          // The room never emptied: nobody left it.
          if (frame.members >= state.awaitedMembers && !state.keysAwaitedAtAnyCount) state.awaitedKeys.clear();
          if (this._holding(key) && state.holdSinceMs === null) state.holdSinceMs = nowMs;
          this._events.push({
            type: "joined",
            roomId: state.keys.roomId,
            expiresAtMs: state.expiresAtMs,
            members: frame.members,
          });
          // Our JOIN before the outbox: a full one would leave it no place in flight.
          state.unsent = []; // our JOIN says it all
          state.roster.joined(frame.members, nowMs);
          const announcing = this._announce(key, state, nowMs);
          if (announcing !== undefined) await announcing;
          this._flushRoom(key);
        }
        return;
      }
      case "Presence": {
        const key = roomHex(frame.roomId);
        const state = this.rooms.get(key);
        if (state !== undefined) {
          state.members = frame.members;
          this._events.push({ type: "presence", roomId: state.keys.roomId, members: frame.members });
          state.roster.countChanged(frame.members, nowMs);
          this._flushRoom(key);
        }
        return;
      }
      case "Pong":
        this._events.push({ type: "pong", token: frame.token });
        return;
      case "Error":
        this._refused(frame.code, frame.ref, frame.roomId, frame.reason);
        return;
      default:
        throw new FrameError("The relay sent a frame only clients send.", ErrorCode.UNKNOWN_FRAME_TYPE);
    }
  }

  _holding(key) {
    const state = this.rooms.get(key);
    return (
      state !== undefined &&
      state.joined &&
      state.mayHold &&
      (state.awaitsWholeGrace || state.members < state.awaitedMembers || state.awaitedKeys.size > 0)
    );
  }

  /** Tell the relay we leave a room: now, or once its unanswered JOIN is answered (a LEAVE
   * now and a JOIN later would be two JOINs in flight). */
  _leaveOnWire(key) {
    const state = this.rooms.get(key);
    if (state === undefined || !this.connected) return;
    if (this._sealingLeave.has(key)) return; // joined again, its JOIN not sent: nothing to leave
    const waiting = this._joinAfterLeaves.indexOf(key);
    if (waiting >= 0) this._joinAfterLeaves.splice(waiting, 1); // its JOIN was refused: nothing to leave
    else if (state.joining) this._leaveOnAnswer.add(key);
    else this._frames.push(encodeFrame({ type: "Leave", roomId: state.keys.roomId }));
  }

  /** The answer to the JOIN of a room left meanwhile: send its LEAVE now if the answer
   * leaves us in the room (or challenged), and tell the caller to drop it. */
  _answeredAfterLeave(roomId, member) {
    if (!this._leaveOnAnswer.delete(roomHex(roomId))) return false;
    if (member) this._frames.push(encodeFrame({ type: "Leave", roomId }));
    if (this._leaveOnAnswer.size === 0) {
      const waiting = this._joinAfterLeaves;
      this._joinAfterLeaves = [];
      for (const key of waiting) if (this.rooms.has(key)) this._sendJoin(key);
    }
    return true;
  }

  /** Sign the CHALLENGE of our outstanding JOIN for a room, once; ignore any other
   * (PROTOCOL.md 8.6). A proof is not bound to the relay that asked for it: one for a
   * challenge a hostile relay brought from another relay would let it join the room there. */
  _challenged(roomId, challenge) {
    const key = roomHex(roomId);
    if (this._proved.has(key)) return; // one CHALLENGE per JOIN: this one we did not ask for
    if (this._answeredAfterLeave(roomId, true)) return;
    const state = this.rooms.get(key);
    if (state === undefined || !state.joining) return; // no JOIN of ours waits for it
    this._proved.add(key);
    state.provedMs = this._lastNowMs;
    const signature = signJoinProof(state.keys.signingSeed, roomId, challenge);
    this._frames.push(encodeFrame({ type: "Proof", roomId, signature }));
  }

  _sendJoin(key) {
    const state = this.rooms.get(key);
    this._proved.delete(key); // a new JOIN: its CHALLENGE is still to come
    // Outstanding until JOINED or a refusal: a second JOIN meanwhile would replace the
    // relay's challenge under the first PROOF (PROOF_FAILED).
    state.joining = true;
    state.behindHeldLeave = this._leaveOnAnswer.size > 0;
    this._frames.push(
      encodeFrame({
        type: "Join",
        roomId: state.keys.roomId,
        roomPublicKey: state.keys.publicKey,
        expiresAtMs: state.expiresAtMs,
      }),
    );
  }

  _flushRoom(key) {
    const state = this.rooms.get(key);
    if (state === undefined || !state.joined || !this.connected || this._holding(key)) return;
    state.awaitedMembers = 0;
    state.keysAwaitedAtAnyCount = false;
    state.holdSinceMs = null;
    state.holdSpentMs = 0;
    this._pump();
  }

  /** Publish what waits, in outbox order, while fewer than MAX_IN_FLIGHT are on the wire. */
  _pump() {
    if (!this.connected || this._paused) return;
    for (const outgoing of this._outbox) {
      if (this._inFlight.size >= MAX_IN_FLIGHT) return;
      if (outgoing.ref !== 0) continue;
      const state = this.rooms.get(outgoing.key);
      if (state !== undefined && state.joined && !this._holding(outgoing.key)) this._publish(outgoing);
    }
  }

  _publish(outgoing) {
    outgoing.ref = this._takeRef(outgoing.key, null);
    this._frames.push(
      encodeFrame({ type: "Publish", ref: outgoing.ref, roomId: outgoing.roomId, envelope: outgoing.envelope }),
    );
  }

  /** A ref for a PUBLISH in `key`'s room (an `announcement`, or from the outbox), now in
   * flight until its ACK or ERROR. */
  /** A ref for a PUBLISH in room `key`: of the outbox (`kind` null) or an announcement
   * of that kind. */
  _takeRef(key, kind) {
    // Unique among the refs in flight, even after the counter wraps; never 0.
    while (this._inFlight.has(this._nextRef)) this._nextRef = (this._nextRef % MAX_REF) + 1;
    const ref = this._nextRef;
    this._nextRef = (this._nextRef % MAX_REF) + 1;
    this._inFlight.set(ref, { key, announcement: kind !== null, kind });
    return ref;
  }

  /** `nowMs` if given (and now the latest time), else the latest time a caller gave. */
  _clock(nowMs) {
    if (nowMs !== undefined) this._lastNowMs = nowMs;
    return this._lastNowMs;
  }

  /** An announcement may go now (else it waits for the next tick, or, the room not joined,
   * is dropped: presence is news). */
  _mayAnnounce(key, state) {
    return (
      this.rooms.get(key) === state &&
      state.joined &&
      this.connected &&
      !this._paused &&
      this._inFlight.size < MAX_IN_FLIGHT
    );
  }

  /**
   * Seal and publish what a room's roster has to send (PROTOCOL.md 5.7): now or never,
   * outside the outbox. `leftOn`: the connection (its count) of a room just taken out of
   * the session by leave(), whose LEAVE message goes on that connection only. Returns a
   * promise while there is something to seal, else undefined: with nothing to announce,
   * nothing waits.
   */
  _announce(key, state, nowMs, leftOn = null) {
    const kinds = state.unsent;
    state.unsent = [];
    for (const kind of state.roster.takeSends()) if (!kinds.includes(kind)) kinds.push(kind);
    return kinds.length > 0 ? this._sealAnnouncements(key, state, kinds, nowMs, leftOn) : undefined;
  }

  async _sealAnnouncements(key, state, kinds, nowMs, leftOn) {
    const connection = leftOn ?? this._connections;
    const mayGo = () =>
      leftOn !== null
        ? connection === this._connections && !this._paused && this._inFlight.size < MAX_IN_FLIGHT
        : this._mayAnnounce(key, state);
    // The relay busy, not gone (publishing paused, or MAX_IN_FLIGHT on the wire): the kind
    // waits for the next tick. A room left, or not joined: news no more, dropped.
    const keep = (kind) => {
      const busy = this.rooms.get(key) === state && state.joined && this.connected && leftOn === null;
      if (busy && !state.unsent.includes(kind)) state.unsent.push(kind);
    };
    for (const kind of kinds) {
      if (!mayGo()) {
        keep(kind);
        continue;
      }
      const { message, envelope } = await this._seal(state, kind, new Uint8Array(0), nowMs);
      // The room may have been left, or the connection lost, while WebCrypto worked.
      if (connection !== this._connections || !mayGo()) {
        keep(kind);
        continue;
      }
      // Our own, sent back to us by a relay, is a replay too.
      state.replays.remember(message.messageId, message.timestampMs, nowMs);
      this._frames.push(
        encodeFrame({ type: "Publish", ref: this._takeRef(key, kind), roomId: state.keys.roomId, envelope }),
      );
    }
  }

  /** A new message of ours in a room, and its envelope, sealed with a fresh nonce. */
  async _seal(state, kind, body, nowMs) {
    const message = {
      messageId: this._randomBytes(MESSAGE_ID_SIZE),
      timestampMs: nowMs,
      kind,
      senderKey: this.device.publicKey,
      senderName: state.name,
      body,
    };
    return { message, envelope: await sealEnvelope(state.keys, this.device, message, this._randomBytes(12)) };
  }

  /** A "members" event if the room's roster changed since the last one; none from a
   * session that announces nothing (scripts show no roster; `members` still answers). */
  _membersNews(key, state) {
    if (!this.announce || this.rooms.get(key) !== state || state.roster.version === state.rosterShown) return;
    state.rosterShown = state.roster.version;
    this._events.push({ type: "members", roomId: state.keys.roomId, members: state.roster.members });
  }

  _acknowledged(ref) {
    // Only a ref in flight is an answer: an unknown one (or 0) must not take a waiting
    // envelope, whose ref is 0, out of the outbox.
    if (!this._inFlight.delete(ref)) return;
    const index = this._outbox.findIndex((outgoing) => outgoing.ref === ref);
    if (index >= 0) {
      const [outgoing] = this._outbox.splice(index, 1);
      this._events.push({ type: "accepted", roomId: outgoing.roomId, messageId: outgoing.messageId });
    }
    this._pump();
  }

  async _deliver(roomId, envelope, nowMs, connection) {
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (state === undefined) return;
    let message;
    let dated = null; // the timestamp, once decrypted (not yet authenticated)
    try {
      // Stale or already received: dropped before its signature costs anything;
      // remembered only once it is verified.
      message = await openEnvelope(state.keys, envelope, (opened) => {
        dated = opened.timestampMs;
        state.replays.check(opened, nowMs);
      });
      // Left or expired while WebCrypto worked: nothing of the room is kept or shown.
      if (this.rooms.get(key) !== state) return;
      state.replays.accept(message, nowMs);
    } catch (error) {
      if (!(error instanceof EnvelopeError)) throw error;
      // Dated ahead of this clock past the window: a clock set wrong, the sender's or this
      // one's, far more often than an attack, and worth telling the user (aheadMs).
      let aheadMs = dated !== null && error instanceof StaleMessage ? dated - nowMs : 0;
      if (aheadMs <= state.replays.maxFutureMs) aheadMs = 0;
      else if (dated >= 2 ** 53) aheadMs = Number.MAX_SAFE_INTEGER; // as Python's, exactly
      this._events.push({ type: "rejected", roomId: state.keys.roomId, reason: error.name, aheadMs });
      return;
    }
    const senderKey = hex(message.senderKey);
    // Names that look alike are one name here (PROTOCOL.md 4.4); shown as sent.
    const name = canonicalName(message.senderName);
    const ownName = canonicalName(state.name);
    let keyChanged;
    if (ownName && name === ownName) {
      // Our own name is known with our own key, always (PROTOCOL.md 4.3): each message
      // under it from another device is flagged, not just the first.
      keyChanged = senderKey !== hex(this.device.publicKey);
    } else {
      const known = state.names.get(name);
      keyChanged = known !== undefined && known !== senderKey;
      state.names.delete(name);
      // Only a TEXT message, which clients show with the warning, makes another key the
      // name's: another kind (a TYPING, a kind we ignore) is not shown, and a new key taken
      // from it would let the next TEXT under the name pass unflagged.
      state.names.set(name, keyChanged && message.kind !== Kind.TEXT ? known : senderKey); // now the most recently seen
      if (state.names.size > MAX_NAMES_PER_ROOM) state.names.delete(state.names.keys().next().value);
    }
    this._events.push({
      type: "message",
      roomId: state.keys.roomId,
      kind: message.kind,
      message,
      // openEnvelope already refused a TEXT body that is not UTF-8.
      text: message.kind === Kind.TEXT ? utf8Strict.decode(message.body) : null,
      fingerprint: fingerprint(message.senderKey),
      keyChanged,
    });
    // Sent long ago: it says nothing of who is here now (PROTOCOL.md 5.7).
    if (nowMs - message.timestampMs > MAX_HEARD_AGE_MS) return;
    // Back (or gone, for a LEAVE): the outbox waits for this member no more. Unless the
    // message came before a drop that happened while it was being opened.
    if (connection === this._connections && state.awaitedKeys.delete(hex(message.senderKey))) this._flushRoom(key);
    state.roster.heard(message.kind, message.senderKey, message.senderName, keyChanged, nowMs, message.timestampMs);
    this._membersNews(key, state);
  }

  _refused(code, ref, roomId, reason) {
    const known = this.rooms.get(roomHex(roomId));
    // No JOIN of ours waits for it: a relay sending them at will would make a joined room
    // "full for now", or give it up (PROTOCOL.md 8.6). A room left with its JOIN unanswered
    // is not in rooms (its answer is awaited below).
    if (!ref && ANSWERS_A_JOIN.has(code) && known !== undefined && !known.joining) return;
    if (!ref) this._proved.delete(roomHex(roomId)); // a refusal of its JOIN or PROOF answers the JOIN
    if (!ref && this._answeredAfterLeave(roomId, code === ErrorCode.ALREADY_JOINED)) return;
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (code === ErrorCode.TOO_MANY_ROOMS && !ref && state?.behindHeldLeave && !state.joined) {
      // Perhaps a held LEAVE's place: JOIN once more, behind every held LEAVE.
      state.behindHeldLeave = false;
      if (this._leaveOnAnswer.size > 0) {
        state.joining = false; // answered: a CHALLENGE now is none of ours
        this._joinAfterLeaves.push(key);
      } else this._sendJoin(key);
      return;
    }
    this._refusedFor(code, ref, roomId, reason);
    // A place in flight may have come free, and a room may have gone: what waits for
    // other rooms goes now (unless this refusal paused publishing).
    this._pump();
  }

  _refusedFor(code, ref, roomId, reason) {
    // A PUBLISH of ours in that room (given up since, or not), from the outbox: not an
    // announcement, which the session publishes on its own (at each tick, after each
    // JOINED), so that a hostile relay refusing those would get a proof per JOIN message.
    const inFlight = ref ? this._inFlight.get(ref) : undefined;
    const answersOurs = inFlight !== undefined && inFlight.key === roomHex(roomId) && !inFlight.announcement;
    if (ref && this._inFlight.delete(ref)) {
      for (const outgoing of this._outbox) {
        if (outgoing.ref === ref) outgoing.ref = 0; // not taken: stays in the outbox
      }
      // Any refusal but NOT_JOINED (whose room waits for its JOINED) pauses publishing.
      if (code !== ErrorCode.NOT_JOINED) this._paused = true;
    }
    const key = roomHex(roomId);
    const state = this.rooms.get(key);
    if (inFlight?.announcement && code !== ErrorCode.NOT_JOINED && inFlight.key === key) {
      // A refused announcement (rate limited) goes again at the next tick after the
      // pause: others wait for a member coming back to say so (PROTOCOL.md 10.6).
      if (state?.joined && this.connected && !state.unsent.includes(inFlight.kind)) state.unsent.push(inFlight.kind);
    }
    if (state !== undefined && !ref) {
      state.joining = false; // the JOIN (or PROOF) was refused
      state.fullForNow = code === ErrorCode.ROOM_FULL || code === ErrorCode.RELAY_FULL;
    }
    const expired = state !== undefined && code === ErrorCode.ROOM_EXPIRED;
    // The relay will not let us in: do not ask again.
    const fatal = expired || (state !== undefined && FATAL_FOR_ROOM.has(code) && !state.joined);
    this._events.push({ type: "refused", code, roomId, ref, reason, fatal });
    if (code === ErrorCode.NOT_JOINED && state !== undefined && state.joined && this.connected && answersOurs) {
      // The relay does not count us in a room we thought we were in: join again; the
      // outbox (the refused message too, its ref now 0) follows the JOINED. Only once: the
      // PUBLISHes sent before it are refused too, and a second JOIN would replace the
      // challenge under the first PROOF (PROTOCOL.md 10.6). Only as the answer to a
      // PUBLISH of ours in that room: each JOIN costs a proof the relay keeps (8.6).
      state.joined = false;
      this._joinAgain(key);
      return;
    }
    if (!fatal) return;
    if (!expired) {
      // Say what will not go: the room is given up with its outbox.
      for (const outgoing of this._outbox) {
        if (outgoing.key === key) {
          this._events.push({ type: "notSent", roomId: state.keys.roomId, messageId: outgoing.messageId, reason: NOT_SENT_REFUSED });
        }
      }
    }
    this._forget(key);
    if (expired) this._events.push({ type: "expired", roomId: state.keys.roomId });
  }

  _forget(key) {
    this.rooms.delete(key);
    this._outbox = this._outbox.filter((outgoing) => outgoing.key !== key);
  }
}

// One WebSocket to one relay, for all of this browser's rooms there, driving the sans-I/O
// ClientSession (mirroring the Python RoomClient):
//
//   const connection = new RoomConnection({ serverUrl: location.origin, deviceSeed });
//   connection.addEventListener("message", (event) => show(event.detail));
//   connection.start();
//   const { roomId } = await connection.join(minikey, { name: "alice" });
//   await connection.sendText(roomId, "hello");  // sealed and queued; "accepted" follows
//
// It reconnects by itself with backoff, joins its rooms again, and resends what the relay
// had not acknowledged; receivers drop duplicates by message id.
//
// With `announce: true` the session tells each room's members who this device is
// (PROTOCOL.md 5.7): a JOIN message after each JOINED, a HERE to answer others' JOINs (the
// once-a-second timer sends what is due), and a LEAVE message before leaving a room or
// closing. "members" events say who the others are.

import { CloseCode, ErrorCode, SUBPROTOCOL } from "../protocol/codes.js";
import { UsageError } from "../protocol/errors.js";
import { roomKeysFromMinikey } from "../protocol/kdf.js";
import { parseMinikey } from "../protocol/minikey.js";
import { ClientSession, roomHex } from "../protocol/session.js";

/** How long the outbox waits, after a reconnect, for the room's members to come back:
 * longer than the longest reconnect delay of either reference client (10 s) and a
 * handshake, so that a member still backing off when the relay came back is back in time. */
export const REJOIN_GRACE_MS = 12_000;
/** Bytes of frames received and not yet read (each message waits for WebCrypto) past which
 * the connection is dropped and made again: a relay sending faster than this device can
 * read would otherwise fill the page's memory. 16 times what a relay queues for a reader
 * before it cuts it off as too slow (--send-buffer): a well-behaved relay never gets there. */
export const MAX_BACKLOG_BYTES = 16 * 1_048_576;
export const RETRY_AFTER_RATE_LIMIT_MS = 1000;
/** RELAY_FULL and ROOM_FULL say "try later"; a place does not come free in a second. */
export const RETRY_AFTER_FULL_MS = 15_000;
export const EXPIRY_CHECK_MS = 1000;
/**
 * How long close() keeps the socket open for the LEAVE messages to be sealed and written
 * (PROTOCOL.md 5.7, best effort): sealing takes milliseconds; a member who misses them is
 * found gone by the next roll call anyway. The caller never waits for it.
 */
export const LEAVING_WAIT_MS = 500;
/**
 * A connection that stays up this long after a JOINED restarts the backoff. Not at once:
 * a relay that lets us in and then closes (say, on a message it cannot take) would
 * otherwise be reconnected to as fast as the handshake goes.
 */
export const STABLE_AFTER_MS = 10_000;
/**
 * How long a try to connect may take to open (TCP, TLS and the WebSocket handshake), as
 * the Python client's OPEN_TIMEOUT. A relay or a balancer that takes the TCP connection
 * and never answers the upgrade would otherwise hold each try for the browser's own limit
 * (Chromium's: 240 s); given up, the try counts as one that closed before it opened.
 */
export const OPEN_TIMEOUT_MS = 10_000;
/** Below the relay's default idle timeout (60 s); a PING unanswered for as long again means the line is dead. */
export const DEFAULT_PING_INTERVAL_MS = 25_000;

/**
 * Close codes after which trying again would fail the same way: this client sent
 * something the relay (or the WebSocket layer) will never take. PROTOCOL.md 11.2 says
 * "fix the bug; do not reconnect in a loop" for 1008 and 1009; 1002, 1003 and 1007 are
 * the WebSocket layer's own "your data was wrong".
 */
export const FATAL_CLOSE_CODES = new Set([1002, 1003, 1007, CloseCode.POLICY_VIOLATION, CloseCode.MESSAGE_TOO_BIG]);

const OPEN = 1;

/** The relay would not let us into a room. */
export class JoinRefused extends Error {
  constructor(code, reason) {
    super(reason);
    this.name = "JoinRefused";
    this.code = code;
  }
}

/** The room went away (it expired, we left it, or the connection was closed) before it was joined. */
export class RoomGone extends Error {
  constructor(reason) {
    super(reason);
    this.name = "RoomGone";
  }
}

/** The relay refused this client for good (a close code that says so, or not a relay). */
export class RelayRefused extends Error {
  constructor(reason) {
    super(reason);
    this.name = "RelayRefused";
  }
}

/**
 * The relay's WebSocket endpoint for a server URL: http(s):// or ws(s)://, with `/ws`
 * appended to the path unless it is there already; query and fragment are dropped.
 * @param {string} serverUrl
 * @returns {string}
 */
export function websocketUrl(serverUrl) {
  // Not echoed in the error: what was typed there might be a key pasted in the wrong place.
  const refusal = () => new UsageError("A server is an http://, https://, ws:// or wss:// URL.");
  if (typeof serverUrl !== "string") throw refusal();
  let url;
  try {
    url = new URL(serverUrl.trim());
  } catch {
    throw refusal();
  }
  const scheme = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" }[url.protocol];
  if (scheme === undefined || !url.host) throw refusal();
  if (serverUrl.length > MAX_SERVER_LENGTH) {
    throw new UsageError(`A server's address is at most ${MAX_SERVER_LENGTH} characters.`);
  }
  if (holdsAKey(url.pathname)) {
    // An invite link that lost its #: the key would go to the server in the request.
    throw new UsageError(
      "The server's address has what looks like a room key in its path: in an invite link the key comes after a #.",
    );
  }
  // The web client's page, as an invite link may name it.
  let path = url.pathname.replace(/\/index\.html$/, "/").replace(/\/+$/, "");
  if (!path.endsWith("/ws")) path += "/ws";
  url.protocol = scheme;
  url.pathname = path;
  url.search = "";
  url.hash = "";
  return url.href;
}

/**
 * Whether a URL's path holds a room key, however it is written there: grouped by any
 * character, percent-encoded, across segments. A key is 30 letters and digits, mixed in
 * case, that pass its check: an ordinary path passes for one once in 256 such runs.
 */
function holdsAKey(path) {
  // Each %XX on its own: a stray % elsewhere leaves the rest decoded (a key is ASCII).
  const decoded = path.replace(/%([0-9A-Fa-f]{2})/g, (_, code) => String.fromCharCode(parseInt(code, 16)));
  const text = decoded.replace(/[^\p{L}\p{N}]/gu, "");
  // A run that could be a key, at each S (overlapping): checked by its hash only then.
  const runs = new Set([...text.matchAll(/(?=(S[1-9A-HJ-NP-Za-km-z]{29}))/g)].map((found) => found[1]));
  for (const run of runs) {
    try {
      parseMinikey(run); // as typed: made keys mix capital and small letters
      return true;
    } catch {
      // not a key here
    }
  }
  return false;
}

/** No relay's address is longer, and a key is looked for in it. */
export const MAX_SERVER_LENGTH = 2048;

/**
 * Reconnect delays in ms: a random first one (a crowd coming back after a relay restart
 * spreads out), then growing by `factor` up to `maxMs`, each with ±20 % jitter.
 */
export function* backoffDelays({ initialMs = 250, factor = 1.8, maxMs = 10_000, random = Math.random } = {}) {
  yield random() * initialMs;
  for (let delay = initialMs; ; delay = Math.min(delay * factor, maxMs)) {
    yield Math.min(maxMs, delay * (0.8 + 0.4 * random()));
  }
}

function binaryOf(data) {
  // Compared by tag, not instanceof: an ArrayBuffer from another realm is one too.
  if (Object.prototype.toString.call(data) === "[object ArrayBuffer]") return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

function randomToken(randomBytes) {
  const bytes = randomBytes(8);
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0);
}

/**
 * A connection to one relay, in any number of rooms, surviving reconnects.
 *
 * Events (CustomEvent, data in `detail`):
 * - "state" {state, reason}: state is "connecting" | "online" | "reconnecting" | "closed";
 *   reason is a sentence for people, or null
 * - "joined" {roomId, expiresAtMs, members}
 * - "presence" {roomId, members}: the relay's count of the room's connections, ours too
 * - "members" {roomId, members}: the others who said who they are (PROTOCOL.md 5.7), an
 *   array of {deviceKey, name, fingerprint, keyChanged}, oldest first; names are the
 *   members' own claims, untrusted text
 * - "message" {roomId, kind, message, text, fingerprint, keyChanged}
 * - "accepted" {roomId, messageId}
 * - "notSent" {roomId, messageId, reason}: given up 55 minutes after it was written, or
 *   with its room when the relay refused the room for good
 * - "refused" {code, roomId, ref, reason, fatal}
 * - "rejected" {roomId, reason, aheadMs}: aheadMs, how far ahead of this clock a message
 *   dropped as stale was dated (0 unless past the 5 minutes allowed)
 * - "expired" {roomId}
 * - "pong" {token}
 * - "error" {message}: something went wrong that the connection survived
 */
export class RoomConnection extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.serverUrl the relay's http(s):// or ws(s):// URL
   * @param {Uint8Array} options.deviceSeed this install's 32-byte device key seed
   * @param {typeof WebSocket} [options.WebSocketImpl]
   * @param {() => number} [options.now] ms since 1970
   * @param {Iterable<number> | (() => Iterable<number>)} [options.delays] reconnect
   *   delays in ms. A function is called afresh, an array iterated afresh, each time the
   *   backoff resets (after a JOINED); a generator object cannot restart and goes on.
   *   When it runs out, its last delay repeats.
   * @param {(action: () => void, ms: number) => unknown} [options.setTimer]
   * @param {(timer: unknown) => void} [options.clearTimer]
   * @param {number} [options.pingIntervalMs] PING a connection this often; 0: never
   * @param {(n: number) => Uint8Array} [options.randomBytes] a CSPRNG
   * @param {() => number} [options.expiryNow] the time rooms expire by: `now`, unless the
   *   device's clock is known to be fast (a room's key is not deleted early for it)
   * @param {boolean} [options.announce] say who this device is in its rooms, by the name
   *   each was joined with (PROTOCOL.md 5.7); scripts and tests may stay silent
   * @param {() => number | null} [options.relayStartedAt] when the relay started, in
   *   `now`'s ms, if it said so (a page cannot read the handshake's InstantRoom-Uptime;
   *   its own relay says it on /healthz too, PROTOCOL.md 10.1): a connection made within
   *   the rejoin grace of it holds what it sends, as after a failed try (10.6)
   */
  constructor({
    serverUrl,
    deviceSeed,
    WebSocketImpl = globalThis.WebSocket,
    now = () => Date.now(),
    delays = () => backoffDelays(),
    setTimer = (action, ms) => setTimeout(action, ms),
    clearTimer = (timer) => clearTimeout(timer),
    pingIntervalMs = DEFAULT_PING_INTERVAL_MS,
    randomBytes,
    expiryNow = now,
    announce = false,
    relayStartedAt = () => null,
  }) {
    super();
    this.url = websocketUrl(serverUrl);
    this.session = new ClientSession(randomBytes ? { deviceSeed, randomBytes, announce } : { deviceSeed, announce });
    this._announce = announce;
    this._randomBytes = randomBytes ?? ((n) => crypto.getRandomValues(new Uint8Array(n)));
    this._WebSocket = WebSocketImpl;
    this._now = now;
    this._expiryNow = expiryNow;
    this._relayStartedAt = relayStartedAt;
    this._delaySource = delays;
    this._delays = null;
    this._lastDelay = 0;
    this._setTimer = setTimer;
    this._clearTimer = clearTimer;
    this._pingIntervalMs = pingIntervalMs;
    this._state = "closed";
    this._reason = null;
    this._started = false;
    this._ws = null;
    this._wsOpened = false; // this._ws has opened
    this._everOpened = false;
    this._reconnectTimer = null;
    /** Gives up on a socket that has not opened within OPEN_TIMEOUT_MS. */
    this._openTimer = null;
    this._pingTimer = null;
    this._expiryTimer = null;
    /** A one-off tick for the earliest announcement due (_tickWhenDue), and its time. */
    this._dueTimer = null;
    this._dueAtMs = null;
    /** A PING was sent and nothing came back since. */
    this._unanswered = false;
    /** Timers that die with the connection: hold releases and retries. */
    this._timers = new Set();
    /** Room key -> the room's state a JOIN retry is timed for: one at a time per room,
     * however many refusals the relay sends. */
    this._joinRetries = new Map();
    /** Frames are handled one at a time, in order, on this chain. */
    this._chain = Promise.resolve();
    this._backlogBytes = 0; // of frames fed to the session and not yet read (MAX_BACKLOG_BYTES)
    /** @type {Map<string, {promise: Promise<object>, resolve: Function, reject: Function}>} */
    this._joining = new Map();
    this._failure = null;
    this._stable = false;
    /** After close(), the socket kept open until the LEAVE messages are written: hangs it up. */
    this._hangUp = null;
  }

  /** "connecting" | "online" | "reconnecting" | "closed" */
  get state() {
    return this._state;
  }

  /** Why the state is what it is, for people; null when there is nothing to say. */
  get reason() {
    return this._reason;
  }

  /** The session's rooms: roomHex(roomId) -> its state (joined, members, expiresAtMs, name). */
  get rooms() {
    return this.session.rooms;
  }

  /** Connect, and keep connecting until close(). */
  start() {
    if (this._started) return;
    this._hangUp?.(); // the last close()'s socket goes first: the session has one at a time
    this._started = true;
    this._failure = null;
    this._everOpened = false;
    this._delays = null;
    this._scheduleExpiry();
    this._connect();
  }

  /**
   * Hang up and stop reconnecting. Waiting joins are rejected. An announcing connection
   * that is online first tells its rooms it leaves (LEAVE messages): the socket stays
   * open until they are written, at most LEAVING_WAIT_MS, while everything else stops now.
   */
  close() {
    const ws = this._ws;
    const online = ws !== null && ws.readyState === OPEN && this.session.connected;
    const leaving = this._announce && online ? this._settled(() => this.session.announceLeaving()) : null;
    this._stop("closed", null, new RoomGone("The connection was closed."), leaving);
  }

  /** Resolves once every frame received so far has been handled (and its answers sent). */
  async idle() {
    let seen;
    do {
      seen = this._chain;
      await seen;
    } while (seen !== this._chain);
  }

  // rooms and messages

  /**
   * Join a room and resolve once the relay let us in, with {roomId, expiresAtMs, members}.
   * Rejects with JoinRefused when the relay will not let us in, RoomGone when the room
   * expires or is left first, RelayRefused when the relay refused this client for good.
   * For a full room or relay (JoinRefused's code ROOM_FULL or RELAY_FULL) the room and
   * what waits for it stay, its JOIN goes again every RETRY_AFTER_FULL_MS, and join()
   * again waits for the next answer.
   * @param {string | object} minikeyOrRoomKeys a room key (as stored: checked as typed when
   *   it was entered, PROTOCOL.md 3.5), or kdf.js room keys
   * @param {{expiresAtMs?: number, name?: string}} [options]
   */
  join(minikeyOrRoomKeys, { expiresAtMs = 0, name = "" } = {}) {
    try {
      if (this._failure !== null) throw this._failure;
      const room =
        typeof minikeyOrRoomKeys === "string"
          ? roomKeysFromMinikey(parseMinikey(minikeyOrRoomKeys, { asTyped: false }))
          : minikeyOrRoomKeys;
      // A client must not join a room it knows has expired (PROTOCOL.md 9).
      if (expiresAtMs > 0 && expiresAtMs <= this._expiryNow()) throw new RoomGone("The room has expired.");
      const key = roomHex(room.roomId);
      const state = this.session.rooms.get(key);
      if (state !== undefined && state.joined) {
        return Promise.resolve({ roomId: state.keys.roomId, expiresAtMs: state.expiresAtMs, members: state.members });
      }
      let waiting = this._joining.get(key);
      if (waiting === undefined) {
        waiting = {};
        waiting.promise = new Promise((resolve, reject) => Object.assign(waiting, { resolve, reject }));
        this._joining.set(key, waiting);
      }
      if (state === undefined) {
        this.session.join(room, { expiresAtMs, name });
        if (this._ws !== null && this._wsOpened && this._relayJustStarted()) this.session.connectFailed();
      }
      this._flush();
      // A connection that went quiet for want of rooms comes back for this one.
      if (this._started && this._ws === null && this._reconnectTimer === null) this._connect();
      return waiting.promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Leave a room; an announcing session says so to its members first (a LEAVE message,
   * sealed before the relay's LEAVE frame goes). */
  leave(roomId) {
    const done = this._settled(() => this.session.leave(roomId));
    this._roomGone(roomHex(roomId), new RoomGone("You left the room."));
    this._flush();
    this._afterSettling(done);
  }

  /**
   * The others in a room who said who they are (see the "members" event); empty for a
   * room the session does not know.
   * @returns {{deviceKey: Uint8Array, name: string, fingerprint: string, keyChanged: boolean}[]}
   */
  members(roomId) {
    return this.session.members(roomId);
  }

  /**
   * Seal `text` for the room and queue it; resolves with the Message once queued. The
   * relay's acknowledgement comes later as an "accepted" event with its messageId.
   * @returns {Promise<import("../protocol/envelope.js").Message>}
   */
  async sendText(roomId, text) {
    if (this._failure !== null) throw this._failure;
    const message = await this.session.sendText(roomId, text, this._now());
    this._flush();
    return message;
  }

  /**
   * Put back a message sealed before a restart that the relay had not acknowledged (see
   * ClientSession.restore): it is resent byte for byte once the room is joined; "accepted"
   * or "notSent" follows as for any other. Returns whether it waits (false: too old, and
   * its "notSent" has been dispatched); throws UsageError when the outbox is full.
   * @param {Uint8Array} roomId a room joined with join() first
   * @param {Uint8Array} messageId
   * @param {number} timestampMs
   * @param {Uint8Array} envelope
   * @returns {boolean}
   */
  restore(roomId, messageId, timestampMs, envelope) {
    const waiting = this.session.restore(roomId, messageId, timestampMs, envelope, this._now());
    this._afterSession();
    return waiting;
  }

  /**
   * The messages of `roomId` the relay has not acknowledged yet, oldest first (see
   * ClientSession.outboxOf).
   * @returns {{messageId: Uint8Array, timestampMs: number, envelope: Uint8Array}[]}
   */
  outboxOf(roomId) {
    return this.session.outboxOf(roomId);
  }

  /**
   * Try now instead of at the end of the current backoff delay: the network came back, or
   * the person is looking. The backoff itself goes on where it was.
   */
  reconnectNow() {
    if (!this._started || this._reconnectTimer === null) return;
    this._clearTimer(this._reconnectTimer);
    this._connect();
  }

  /** Send a PING; its PONG ("pong" event) comes after the relay handled all sent before. */
  ping() {
    const token = randomToken(this._randomBytes);
    this.session.ping(token);
    this._flush();
    return token;
  }

  // the connection

  _setState(state, reason = null) {
    if (state === this._state && reason === this._reason) return;
    this._state = state;
    this._reason = reason;
    this._emit("state", { state, reason });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _error(message) {
    this._emit("error", { message });
  }

  _connect() {
    this._reconnectTimer = null;
    this._stable = false;
    this._resendScheduled = false; // its timer died with the last connection
    this._setState(this._everOpened ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new this._WebSocket(this.url, [SUBPROTOCOL]);
      ws.binaryType = "arraybuffer";
    } catch (error) {
      this._error(`Could not open a connection to ${this.url}: ${error.message}`);
      this.session.connectFailed();
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._wsOpened = false;
    ws.addEventListener("open", () => this._guard(() => this._opened(ws)));
    ws.addEventListener("message", (event) => this._guard(() => this._received(ws, event)));
    ws.addEventListener("close", (event) => this._guard(() => this._lost(ws, event.code, event.reason)));
    // An error is always followed by a close, which is where we act.
    this._openTimer = this._setTimer(() => {
      this._openTimer = null;
      if (ws !== this._ws || this._wsOpened) return;
      try {
        ws.close(CloseCode.NORMAL); // while connecting: the browser drops the try
      } catch {
        // already closing
      }
      // Its close event comes later, or not at all, and is not heard: lost here, before it
      // opened, as a relay out of reach (connectFailed), and tried again after a delay.
      this._guard(() => this._lost(ws, CloseCode.ABNORMAL, "no answer to the handshake"));
    }, OPEN_TIMEOUT_MS);
  }

  _clearOpenTimer() {
    if (this._openTimer !== null) this._clearTimer(this._openTimer);
    this._openTimer = null;
  }

  /** Never let an exception out of a socket handler: the connection must go on. */
  _guard(action) {
    try {
      action();
    } catch (error) {
      this._error(`The client failed: ${error?.message ?? error}`);
    }
  }

  _opened(ws) {
    if (ws !== this._ws) return;
    this._clearOpenTimer();
    if (ws.protocol !== SUBPROTOCOL) {
      // Not a relay, or one speaking another version: trying again would not help.
      this._stop("closed", `The server at ${this.url} is not an InstantRoom relay (${SUBPROTOCOL}).`);
      return;
    }
    this._everOpened = true;
    this._wsOpened = true;
    // As after a try that failed: the members it had may be reconnecting still.
    if (this._relayJustStarted()) this.session.connectFailed();
    this.session.connectionMade();
    this._setState("online");
    this._flush();
    this._schedulePing();
  }

  /** Whether the relay started less than the rejoin grace ago, as far as it said. */
  _relayJustStarted() {
    const started = this._relayStartedAt();
    return started !== null && this._now() - started < REJOIN_GRACE_MS;
  }

  _received(ws, event) {
    if (ws !== this._ws) return;
    const data = binaryOf(event.data);
    this._unanswered = false; // the relay is there: whatever it sent, it answers the PING
    if (data === null) {
      // A protocol violation (PROTOCOL.md 10.1): closed, and, as after the relay's own
      // 1008, not connected to again in a loop (11.2). With 1000: a page may close a
      // WebSocket only with 1000 or 3000 to 4999 (1008 throws InvalidAccessError).
      this._stop(
        "closed",
        "The relay sent a text message, which an InstantRoom relay never sends: the " +
          "connection was closed, and trying again would fail the same way.",
      );
      return;
    }
    if (this._backlogBytes + data.byteLength > MAX_BACKLOG_BYTES) {
      // Not read: dropped with its connection, whose next one starts afresh (what was fed
      // before is still read). As a relay cuts off a reader too slow for it.
      try {
        ws.close(CloseCode.NORMAL);
      } catch {
        // already closing
      }
      this._lost(ws, CloseCode.ABNORMAL, "too much to read");
      if (this._state === "reconnecting") {
        this._setState("reconnecting", "The relay sent more than this device could read: connecting again. Messages sent meanwhile may be missing.");
      }
      return;
    }
    this._backlogBytes += data.byteLength;
    // Fed now, while its connection is the session's: the session takes frames in order,
    // and judges which connection one belongs to when it is fed. A burst is still queued
    // (each message waits for WebCrypto) when a close comes: a message in it is read, for
    // the relay keeps none; any other frame of it speaks for the old connection, and is
    // dropped.
    const handled = this.session.receive(data, this._now());
    handled.catch(() => {}); // said in its turn, below
    this._chain = this._chain
      .then(async () => {
        try {
          await handled;
        } catch (error) {
          this._error(`The relay sent a frame that makes no sense: ${error.message}`);
        } finally {
          this._backlogBytes -= data.byteLength;
        }
        // Once stopped (closed, locked), nothing more is heard: what the session read
        // meanwhile goes, rather than out at the next start().
        if (this._started) this._afterSession();
        else this.session.events();
      })
      .catch((error) => this._error(`The client failed: ${error?.message ?? error}`));
  }

  _lost(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._clearOpenTimer();
    this._clearPing();
    this._clearLater();
    this.session.connectionLost(this._now());
    // Closed before it opened: the relay was out of reach (its rooms' members may be
    // reconnecting too, PROTOCOL.md 10.6).
    if (!this._wsOpened) this.session.connectFailed();
    if (FATAL_CLOSE_CODES.has(code)) {
      const why = reason ? `: ${reason}` : "";
      this._stop("closed", `The relay closed the connection for good (${code}${why}).`);
      return;
    }
    if (this.session.rooms.size === 0) {
      // Nothing to be connected for (the relay closes a room-less connection anyway);
      // join() connects again.
      this._setState("reconnecting", "Waiting for a room to join.");
      return;
    }
    this._scheduleReconnect();
  }

  /**
   * Stop for good: by close(), or because the relay refused us. `leaving`: the LEAVE
   * messages being sealed (a promise), which the socket is kept open for.
   */
  _stop(state, reason, rejection = new RelayRefused(reason), leaving = null) {
    this._started = false;
    this._clearLater();
    if (this._reconnectTimer !== null) this._clearTimer(this._reconnectTimer);
    if (this._expiryTimer !== null) this._clearTimer(this._expiryTimer);
    if (this._dueTimer !== null) this._clearTimer(this._dueTimer);
    this._reconnectTimer = this._expiryTimer = this._dueTimer = this._dueAtMs = null;
    this._clearOpenTimer();
    this._clearPing();
    const ws = this._ws;
    this._ws = null; // what it still says is not heard: _received and _lost ignore it
    if (ws !== null && leaving !== null) this._hangUpAfter(ws, leaving);
    else if (ws !== null) this._hangUpNow(ws);
    if (reason !== null) this._failure = rejection;
    for (const waiting of this._joining.values()) waiting.reject(rejection);
    this._joining.clear();
    this._setState(state, reason);
  }

  _hangUpNow(ws) {
    this.session.connectionLost(this._now());
    try {
      ws.close(CloseCode.NORMAL);
    } catch {
      // already closing
    }
  }

  /**
   * Write what the session has to send on `ws` once `leaving` settles (the frames the
   * LEAVE messages went into), then hang up; or hang up after LEAVING_WAIT_MS without
   * them. Whichever comes first; start() hangs up at once.
   */
  _hangUpAfter(ws, leaving) {
    let timer = null;
    const hangUp = (write) => {
      if (this._hangUp !== hangUp) return;
      this._hangUp = null;
      if (timer !== null) this._clearTimer(timer);
      if (write && ws.readyState === OPEN) {
        try {
          for (const frame of this.session.framesToSend()) ws.send(frame);
        } catch {
          // closing already: the others find us gone at their next roll call
        }
      }
      this._hangUpNow(ws);
    };
    this._hangUp = hangUp;
    timer = this._setTimer(() => hangUp(false), LEAVING_WAIT_MS);
    leaving.then(() => hangUp(true));
  }

  _nextDelay() {
    if (this._delays === null) {
      const source = typeof this._delaySource === "function" ? this._delaySource() : this._delaySource;
      this._delays = source[Symbol.iterator]();
    }
    const next = this._delays.next();
    if (!next.done) this._lastDelay = next.value;
    return this._lastDelay;
  }

  _scheduleReconnect() {
    this._setState("reconnecting");
    this._reconnectTimer = this._setTimer(() => this._guard(() => this._connect()), this._nextDelay());
  }

  _scheduleExpiry() {
    this._expiryTimer = this._setTimer(() => {
      this._expiryTimer = null;
      this._guard(() => {
        // Once a second: rooms whose time is over are forgotten, here and now; what the
        // rosters have due (PROTOCOL.md 5.7) goes, by this device's own clock.
        this.session.expire(this._expiryNow());
        const ticked = this._settled(() => this.session.tick(this._now()));
        this._afterSession();
        this._afterSettling(ticked);
      });
      if (this._started) this._scheduleExpiry();
    }, EXPIRY_CHECK_MS);
  }

  _schedulePing() {
    if (!(this._pingIntervalMs > 0)) return;
    this._pingTimer = this._setTimer(() => {
      this._pingTimer = null;
      const ws = this._ws;
      if (ws === null) return;
      if (this._unanswered) {
        // Nothing, not even a PONG, for a whole interval: the line is dead even if the
        // socket has not noticed (a phone changing networks, a NAT forgetting us).
        try {
          ws.close(CloseCode.NORMAL);
        } catch {
          // already closing
        }
        this._guard(() => this._lost(ws, CloseCode.ABNORMAL, "no answer to PING"));
        return;
      }
      this._unanswered = true;
      this.ping();
      this._schedulePing();
    }, this._pingIntervalMs);
  }

  _clearPing() {
    if (this._pingTimer !== null) this._clearTimer(this._pingTimer);
    this._pingTimer = null;
    this._unanswered = false;
  }

  _later(ms, action) {
    const timer = this._setTimer(() => {
      this._timers.delete(timer);
      this._guard(() => {
        action();
        this._flush();
        this._tickWhenDue(); // announcements the pause held back may go now
      });
    }, ms);
    this._timers.add(timer);
  }

  /**
   * Retries and hold releases belong to one connection. A JOIN retried on the next one,
   * on top of the JOIN it sends anyway, would replace the relay's challenge under our
   * PROOF and have the room refused (PROOF_FAILED).
   */
  _clearLater() {
    for (const timer of this._timers) this._clearTimer(timer);
    this._timers.clear();
    this._joinRetries.clear();
  }

  /**
   * Send the room's JOIN again after `ms`: only for this very room, as one left and joined
   * again meanwhile has a JOIN, and a retry, of its own (two would double its JOINs for as
   * long as it waits). One retry at a time per room, and none for a room we are not in:
   * each refusal is the relay's to send, by the thousand, and one timer each would pile up
   * for as long as the delay.
   */
  _retryJoinLater(ms, key, roomId) {
    const state = this.session.rooms.get(key);
    if (state === undefined || this._joinRetries.get(key) === state) return;
    this._joinRetries.set(key, state);
    this._later(ms, () => {
      if (this._joinRetries.get(key) === state) this._joinRetries.delete(key);
      if (this.session.rooms.get(key) === state) this.session.retryJoin(roomId);
    });
  }

  /**
   * Send what the session has to send. With no open socket it is dropped: the session
   * sends it again after reconnecting.
   */
  _flush() {
    const ws = this._ws;
    // A socket closing after close() takes what comes meanwhile: its LEAVE messages.
    if (ws === null && this._hangUp !== null) return;
    const frames = this.session.framesToSend();
    if (ws === null || ws.readyState !== OPEN) return;
    try {
      for (const frame of frames) ws.send(frame);
    } catch (error) {
      this._error(`Could not send to the relay: ${error.message}`);
    }
  }

  _afterSession() {
    this._dispatch(this.session.events());
    this._flush();
    this._tickWhenDue();
  }

  /**
   * A tick of its own at the time the session's earliest announcement is due. The
   * once-a-second tick is a chain of timers, which a browser slows to one a minute in a
   * tab hidden for a while (Chrome's intensive throttling): an answer to a roll call would
   * then come after its window, and others would take us off their lists. A timer set
   * from the frame that planned the answer is no such chain, and runs on time.
   */
  _tickWhenDue() {
    if (!this._started) return;
    const due = this.session.nextSendMs();
    if (due === null || (this._dueTimer !== null && this._dueAtMs <= due)) return;
    if (this._dueTimer !== null) this._clearTimer(this._dueTimer);
    this._dueAtMs = due;
    this._dueTimer = this._setTimer(() => {
      this._dueTimer = this._dueAtMs = null;
      this._guard(() => this._afterSettling(this._settled(() => this.session.tick(this._now()))));
    }, Math.max(0, due - this._now()));
  }

  /**
   * Make a session call that may seal (announcements, PROTOCOL.md 5.7: WebCrypto, so it
   * may answer with a promise), now: a promise that settles when it is done, and never
   * rejects (a failure is said as an "error" event).
   */
  _settled(call) {
    const failed = (error) => this._error(`The client failed: ${error?.message ?? error}`);
    try {
      return Promise.resolve(call()).catch(failed);
    } catch (error) {
      failed(error);
      return Promise.resolve();
    }
  }

  /** Once `done` settles: dispatch the session's events and send its frames. */
  _afterSettling(done) {
    done.then(() => this._guard(() => this._afterSession()));
  }

  _dispatch(events) {
    for (const event of events) {
      const { type, ...detail } = event;
      const key = detail.roomId ? roomHex(detail.roomId) : null;
      switch (type) {
        case "joined": {
          if (!this._stable) {
            // Dies with this connection: only one that stays up restarts the backoff.
            this._stable = true;
            this._later(STABLE_AFTER_MS, () => (this._delays = null));
          }
          const waiting = this._joining.get(key);
          this._joining.delete(key);
          waiting?.resolve(detail);
          const since = this.session.heldSince(detail.roomId);
          if (since !== null) {
            // The grace counts the time joined during the wait, not time out of reach.
            const left = REJOIN_GRACE_MS - Math.max(0, this._now() - since);
            this._later(left, () => this.session.release(detail.roomId));
          }
          break;
        }
        case "refused":
          // A refused PUBLISH (detail.ref set) pauses the session: see after the loop.
          if (!detail.ref && detail.code === ErrorCode.RATE_LIMITED) {
            this._retryJoinLater(RETRY_AFTER_RATE_LIMIT_MS, key, detail.roomId);
          } else if (detail.fatal) {
            // The session gave the room up.
            this._roomGone(key, new JoinRefused(detail.code, detail.reason));
          } else if (!detail.ref && (detail.code === ErrorCode.RELAY_FULL || detail.code === ErrorCode.ROOM_FULL)) {
            // Whoever waits on join() hears of it now; the room and its outbox wait for a place.
            const waiting = this._joining.get(key);
            this._joining.delete(key);
            waiting?.reject(new JoinRefused(detail.code, detail.reason));
            this._retryJoinLater(RETRY_AFTER_FULL_MS, key, detail.roomId);
          }
          break;
        case "expired":
          this._roomGone(key, new RoomGone("The room has expired."));
          break;
        default:
          break;
      }
      this._emit(type, detail);
    }
    // One pause for a whole run of refused PUBLISHes, whatever their code (PROTOCOL.md
    // 10.6): its end resends them. Its timer dies with the connection, as does the pause.
    if (this.session.waitingToResend && !this._resendScheduled) {
      this._resendScheduled = true;
      this._later(RETRY_AFTER_RATE_LIMIT_MS, () => {
        this._resendScheduled = false;
        this.session.resendUnacknowledged();
      });
    }
  }

  /** Nothing more will happen in the room: whoever waits for it is told why. */
  _roomGone(key, error) {
    const waiting = this._joining.get(key);
    this._joining.delete(key);
    waiting?.reject(error);
  }
}

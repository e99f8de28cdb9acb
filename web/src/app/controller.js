// The app's state and everything it does, apart from drawing: the key store, one relay
// connection per server, rooms, messages, the idle lock. Screens read `app.state` and call
// its methods; every change calls the listeners, which redraw.

import { JoinRefused, RelayRefused, RETRY_AFTER_FULL_MS, RoomConnection, websocketUrl } from "../client/connection.js";
import { fromHex, hex, utf8, utf8Strict } from "../protocol/bytes.js";
import { ErrorCode, UPTIME_HEADER } from "../protocol/codes.js";
import { Kind, MAX_NAME_BYTES, openEnvelope } from "../protocol/envelope.js";
import { fingerprint, roomKeysFromMinikey } from "../protocol/kdf.js";
import { ChecksumMismatch, MiniKeyError, OneCase, UsageError } from "../protocol/errors.js";
import { BASE58_ALPHABET, makeMinikey, parseMinikey } from "../protocol/minikey.js";
import { KeyStore, NoStore, StoreChanged, StoreExists, WrongPassword } from "../store/keystore.js";
import { inviteFromLocation, takeCapturedInvite } from "./capture.js";
import { findInvite, formatInvite, parseInvite } from "./invite.js";

export const LIFETIMES = Object.freeze({
  hour: { label: "1 hour", ms: 3_600_000 },
  day: { label: "1 day", ms: 86_400_000 },
  week: { label: "1 week", ms: 604_800_000 },
});
/** The units a custom lifetime is typed in (the New room screen's "Custom…"). */
export const LIFETIME_UNITS = Object.freeze({
  minutes: { one: "minute", ms: 60_000 },
  hours: { one: "hour", ms: 3_600_000 },
  days: { one: "day", ms: 86_400_000 },
  weeks: { one: "week", ms: 604_800_000 },
});
/** The shortest custom lifetime: clients expire rooms by the minute, and a room must live
 * long enough for its key to be shared. */
export const MIN_CUSTOM_LIFETIME_MS = 5 * 60_000;
/** The longest custom lifetime: a day short of the longest a relay gives a room by default
 * (its --max-room-lifetime, 31 days), which it counts to the second by its own clock: a
 * room of 31 days made on a device a second fast would be refused. */
export const MAX_CUSTOM_LIFETIME_MS = 30 * 86_400_000;

/** A custom lifetime as typed: `amount` (a whole number, as the field gives it) of `unit`
 * (a key of LIFETIME_UNITS), as {label, ms} like LIFETIMES'; or throws an Error a person
 * can read. */
export function customLifetime(amount, unit) {
  const typed = String(amount ?? "").trim();
  if (!typed) throw new Error("Say how long the room lives: a whole number of minutes, hours, days or weeks.");
  if (!/^\d+$/.test(typed) || Number(typed) === 0) {
    throw new Error("A room's lifetime is a whole number greater than zero, like 3 or 90.");
  }
  if (!Object.hasOwn(LIFETIME_UNITS, unit)) throw new Error("Choose minutes, hours, days or weeks.");
  const count = Number(typed);
  const { one, ms } = LIFETIME_UNITS[unit];
  const total = count * ms;
  if (total < MIN_CUSTOM_LIFETIME_MS) throw new Error("A room lives for 5 minutes at least.");
  if (total > MAX_CUSTOM_LIFETIME_MS) {
    throw new Error("A room lives for 30 days at most: a relay keeps a room 31 days at most by default.");
  }
  return { label: `${count} ${count === 1 ? one : `${one}s`}`, ms: total };
}

const IDLE_CHECK_MS = 5_000;
/** How long a new room waits for its relay's answer to its first JOIN before its key shows,
 * as the terminal client's `new` (LOOK_TIMEOUT): a relay silent for longer is out of reach. */
export const NEW_ROOM_WAIT_MS = 5_000;
const EXPIRY_CHECK_MS = 1_000;
/** How long a room says a message was dropped as dated ahead, after the last one. */
export const DROPPED_AHEAD_SHOWN_MS = 10 * 60_000;
/** How long an arrival waits to show for its journal entry, at most (_onMessage). */
const JOURNAL_WAIT_MS = 1_000;
const MIN_PASSWORD_LENGTH = 8;
// Saves that arriving messages and acknowledgements cause happen at most this often (the
// last change is written at the end of the wait): every save re-encrypts the whole store,
// and a member flooding a room that keeps history must not make this device do so back
// to back. Saves the person's own actions cause are never delayed.
export const SAVE_THROTTLE_MS = 1_000;
// What a room keeps in memory: a member who floods the room cannot exhaust this device.
const MAX_LIVE_MESSAGES = 1000;
// The Web Lock an unlocked tab holds until it has locked and its last save has landed: a
// tab that unlocks waits for it, so that it reads the store as the other tab left it.
export const TAB_LOCK = "instantroom-unlocked";
// How long a tab that unlocks waits for that lock: a tab that does not let go (frozen by
// the browser) cannot keep it locked; it then goes on without, as where there are no
// Web Locks.
export const TAB_LOCK_WAIT_MS = 5_000;

const randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));

// Message times ("14:05"): one formatter, made once. toLocaleTimeString with options builds
// a new one on each call (~90 us), twice per message per redraw of a room; this is the
// same text (the default locale, hour and minute) for ~1 us.
const TIME_FORMAT = { hour: "2-digit", minute: "2-digit" };
let timeFormatter = null;

/** A message's time of day, as the page shows it: `new Date(ms).toLocaleTimeString([],
 * {hour: "2-digit", minute: "2-digit"})`, from a formatter made once. */
export function formatTime(ms) {
  timeFormatter ??= new Intl.DateTimeFormat([], TIME_FORMAT);
  return timeFormatter.format(new Date(ms));
}

/** Put `entry` among a room's shown `messages` in time order (PROTOCOL.md 10.4), the oldest
 * dropped past MAX_LIVE_MESSAGES. */
function placeByTime(messages, entry) {
  let at = messages.length; // mostly at the end: search from there
  while (at > 0 && messages[at - 1].timestampMs > entry.timestampMs) at--;
  messages.splice(at, 0, entry);
  if (messages.length > MAX_LIVE_MESSAGES) messages.splice(0, messages.length - MAX_LIVE_MESSAGES);
}

/** Past this, an expiry is said as "more than 100 years" away: a relay may name any time. */
export const FAR_EXPIRY_YEARS = 100;

/** What is left of a room's lifetime, as the page says it; any number gives a text. */
export function formatRemaining(expiresAtMs, now = Date.now()) {
  if (!expiresAtMs) return "lifetime not known yet";
  const left = expiresAtMs - now;
  if (left <= 0) return "expired";
  if (left >= FAR_EXPIRY_YEARS * 365 * 86_400_000) return `expires in more than ${FAR_EXPIRY_YEARS} years`;
  const minutes = Math.round(left / 60_000);
  if (minutes < 60) return `expires in ${Math.max(minutes, 1)} min`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `expires in ${hours} h`;
  return `expires in ${Math.round(hours / 24)} days`;
}

/** What parseInvite drops at the start of a bare key and not after a "#" (white space). */
const LEADING_SPACE = /^[\s\u0085]+/u;

/** Quotation marks of any script, and the plain ones: none is left in a relay's text that
 * the page shows in its own. */
const QUOTATION_MARKS = /[\p{Pi}\p{Pf}"\u201e\u201f\u301d-\u301f\uff02]/gu;

/** How long a redraw asked for by the relay (changedSoon) waits at most for an animation
 * frame: a tab hidden meanwhile gets none. */
const DRAW_FALLBACK_MS = 100;

/** The origin-relative default relay: the one that served this page. */
export function defaultServerUrl() {
  return window.location.origin;
}

/** Whether `serverUrl` is the relay that served this page. */
function isPageRelay(serverUrl) {
  try {
    return websocketUrl(serverUrl) === websocketUrl(defaultServerUrl());
  } catch {
    return false; // no address (RoomConnection says why), or a page from no relay (file:)
  }
}

/** `text` as a relay URL (http, https, ws or wss), or throws an Error a person can read. */
export function normalizeServerUrl(text) {
  let url;
  try {
    url = new URL(text.trim());
  } catch {
    throw new Error("That is not a URL. A relay URL looks like https://chat.example.org");
  }
  if (!["http:", "https:", "ws:", "wss:"].includes(url.protocol)) {
    throw new Error("A relay URL starts with https://, http://, wss:// or ws://.");
  }
  // What the connection will refuse is refused here, before a room is stored with it: a
  // room key in the path (an invite link that lost its #) above all.
  websocketUrl(url.href);
  const path = url.pathname.replace(/\/+$/, "");
  return `${url.protocol}//${url.host}${path}`;
}

/**
 * What to add when the key in `text` (a bare key or an invite link) is all in small or all
 * in capital letters and would be a key if only its case were right: keys mix both, and
 * parseMinikey's own message (a character never used, "starts with a capital S") would
 * not say so. Null otherwise.
 */
export function keyCaseHint(text) {
  const hash = text.indexOf("#");
  const typed = hash < 0 ? text : text.slice(hash + 1);
  const letters = (typed.match(/[A-Za-z0-9]/g) ?? []).slice(1).filter((c) => /[A-Za-z]/.test(c));
  const lower = letters.every((c) => c === c.toLowerCase());
  const upper = letters.every((c) => c === c.toUpperCase());
  if (letters.length < 2 || (!lower && !upper)) return null;
  // The same key with each letter in a case the alphabet has, and a capital S first.
  let first = true;
  const recased = typed.replace(/[A-Za-z0-9]/g, (c) => {
    const was = first;
    first = false;
    if (was && c.toUpperCase() === "S") return "S";
    if (BASE58_ALPHABET.includes(c)) return c;
    return c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase();
  });
  try {
    parseMinikey(recased);
  } catch (error) {
    // Wrong for another reason too, unless that it is in one case (it passed the check).
    if (!(error instanceof ChecksumMismatch || error instanceof OneCase)) return null;
  }
  const which = lower ? "small" : "capital";
  const afterS = lower && /^[^A-Za-z0-9]*S/.test(typed) ? " after the S" : "";
  return (
    `Room keys are case-sensitive, with capital and small letters mixed, and the letters of this one are all ` +
    `${which}${afterS}: type each letter in its case, as the key shows it or as it is spelled out (“capital S”, “small c”).`
  );
}

/** What is said of rooms deleted as expired: alike whether they expired while the app was
 * unlocked (_checkExpiry) or while it was locked (unlock). */
function expiredNotice(removed) {
  return `${removed.map((r) => `“${r.label}”`).join(", ")} expired and ${removed.length > 1 ? "were" : "was"} deleted.`;
}

/** The relay's own words (an ERROR's reason), to show after the page's: escaped like any
 * untrusted text, and with no quotation mark of its own, which could close ours and make
 * the rest read as the page's words ("” Your key leaked: make a new room. “"). */
function relaySays(reason) {
  return reason ? ` It says: “${reason.replace(QUOTATION_MARKS, "'")}”` : "";
}

const TAB_NOTICES = {
  unlocked: "Locked: InstantRoom was unlocked in another tab.",
  wiped: "Everything was deleted from this device in another tab.",
  "password-changed": "Locked: the password was changed in another tab.",
};
const CREATED_ELSEWHERE = "A key store was made in another tab meanwhile: unlock it with its password.";
const WIPED_ELSEWHERE = "The key store was deleted in another tab meanwhile: set a new password.";

// History entries (App._syncHistory): the screens the page shows while locked, which are
// the first entry; those that show one room; forms whose result replaces their entry.
const LOCKED_SCREENS = new Set(["loading", "insecure", "unlock"]);
const ROOM_SCREENS = new Set(["room", "share"]);
const REPLACED_BY = { new: "share", join: "room" };

const navToken = () => hex(randomBytes(8));

function sameEntry(a, b) {
  return Boolean(a) && a.screen === b.screen && a.current === b.current;
}

/** Whether `state` is one of this app's entries, of any token ({instantroom, at}). */
function isEntry(state) {
  return typeof state?.instantroom === "string" && Number.isInteger(state.at) && state.at >= 0;
}

/** Whether a tab's "unlocked" stamp `a` is later than `b` ([time, random tie-break]). */
function laterThan(a, b) {
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
}

/** A device clock this far from its relay's is said: receivers drop messages dated more
 * than 5 minutes ahead of their clocks (PROTOCOL.md 7), so at 5 minutes either way one
 * side's messages go unseen; 2 leaves room for the others' clocks and the relay's. */
export const CLOCK_WARNING_MS = 120_000;
/** Rooms expire by this device's clock read back by no more than this (the longest lifetime
 * a relay gives a room by default): a relay saying more would keep keys for as long as it
 * liked. */
export const MAX_CLOCK_READ_BACK_MS = 31 * 86_400_000;

/** An HTTP date as a relay sends it (IMF-fixdate, RFC 9110 5.6.7). Date.parse alone takes
 * nearly anything: "0" is the year 2000, and two headers joined by a proxy read as one. */
const HTTP_DATE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** A relay's clock in ms from its Date header (whole seconds, so the middle of the second
 * is taken); null for none, several, or one that is not an HTTP date. */
export function relayTimeFromDate(header) {
  if (header === null || !HTTP_DATE.test(header)) return null;
  const stated = Date.parse(header);
  return Number.isNaN(stated) ? null : stated + 500;
}

/** How many seconds ago a relay started, from its InstantRoom-Uptime header (said in its
 * first minute, PROTOCOL.md 10.1); null for none, or one that is not 1 to 6 digits. */
export function uptimeFromHeader(header) {
  return header !== null && /^[0-9]{1,6}$/.test(header) ? Number(header) : null;
}

/** What the relay that served the page says on /healthz: its clock (its answer's Date
 * header), and how long ago it started, in its first minute (a page cannot read the
 * WebSocket handshake's headers, where the terminal client learns it). */
async function askPageRelay() {
  const response = await fetch("/healthz", { cache: "no-store" });
  return {
    timeMs: relayTimeFromDate(response.headers.get("Date")),
    uptimeS: uptimeFromHeader(response.headers.get(UPTIME_HEADER)),
  };
}

/** How often the device's clock is watched for a jump (CLOCK_JUMP_MS): set right, or wrong,
 * while the page shows, it is compared with the relay's again. */
const CLOCK_JUMP_CHECK_MS = 5_000;
const CLOCK_JUMP_MS = 30_000;

/** "12 minutes", "about 3 hours", "about 400 days": how far off a clock is, in words (a
 * phone whose clock went back to 1970 is not "about 492000 hours" slow). */
export function howFar(ms) {
  const minutes = Math.round(ms / 60_000);
  if (minutes < 120) return `${minutes} minutes`;
  const hours = Math.round(minutes / 60);
  return hours < 48 ? `about ${hours} hours` : `about ${Math.round(hours / 24)} days`;
}

export class App {
  /**
   * @param {object} [options]
   * @param {object} [options.storeOptions] passed to KeyStore (tests: a fake IndexedDB)
   * @param {object} [options.connectionOptions] passed to each RoomConnection (tests: a fake WebSocket)
   * @param {{now?: () => number, setTimer?: Function, clearTimer?: Function}} [options.clock]
   *   the time and the timer of the throttled saves (tests: a fake clock)
   * @param {{manager?: LockManager | null, waitMs?: number}} [options.locks] the Web Locks
   *   shared with the other tabs (navigator.locks; tests: a fake) and TAB_LOCK_WAIT_MS
   * @param {() => Promise<{timeMs: number | null, uptimeS: number | null}>} [options.pageRelay]
   *   the page's relay's clock, to compare the device's with, and how long ago it started
   *   if it says (askPageRelay; tests: a stand-in)
   * @param {number} [options.newRoomWaitMs] NEW_ROOM_WAIT_MS (tests: less)
   */
  constructor({
    storeOptions = {},
    connectionOptions = {},
    clock = {},
    locks = {},
    pageRelay = askPageRelay,
    newRoomWaitMs = NEW_ROOM_WAIT_MS,
  } = {}) {
    this.storeOptions = storeOptions;
    this._newRoomWaitMs = newRoomWaitMs;
    this._pageRelay = pageRelay;
    // When the page's relay started, if it said so (in its first minute), on
    // performance.now()'s clock, which a device clock set back or forward does not move: a
    // connection to it made within the rejoin grace holds what it sends, its members maybe
    // reconnecting.
    this._pageRelayStartedAt = null;
    this.clockOffsetMs = 0; // the device's clock less the relay's, as last measured
    this._clockKnown = false; // whether it was ever measured (not on an offline start)
    this.connectionOptions = connectionOptions;
    this.listeners = new Set();
    this.store = null;
    this.connections = new Map(); // server URL -> RoomConnection
    this._reached = new WeakSet(); // the connections that were online at least once
    this._failed = new WeakSet(); // those that lost a try (or a connection) at least once
    // room id hex -> { members, roster, messages, error, draft, unread }: members, the
    // relay's count; roster, the others who said who they are (_onMembers). The draft (what
    // is typed and not sent yet) lives here, in memory only, and so goes with a lock or the room
    this.live = new Map();
    this.unread = 0; // the messages not seen yet, in every room (_countUnread)
    // The page's own title, without a count one shown before (a page restored from cache).
    this._title = (globalThis.document?.title || "InstantRoom").replace(/^\(\d+\) /, "");
    this.lastActivity = Date.now();
    this.installPrompt = null;
    this.state = {
      screen: "loading",
      firstVisit: false,
      busy: false,
      creating: false, // a new room is being made (createRoom): its form waits
      error: null, // shown as role=alert on the current screen
      notice: null,
      current: null, // room id hex of the room or share screen
      joinText: "",
      joinServer: null, // the relay of the invite link that filled joinText
      invites: 0, // invite links opened while the app was open: each fills the Join screen anew
    };
    this._saving = Promise.resolve();
    this._timers = [];
    this._clock = {
      now: () => Date.now(),
      setTimer: (action, ms) => setTimeout(action, ms),
      clearTimer: (timer) => clearTimeout(timer),
      ...clock,
    };
    this._lastSaveAt = -Infinity; // when the last save was asked for, by the clock above
    this._saveTimer = null; // a throttled save waiting for its time (saveSoon)
    this._shown = Promise.resolve(); // the arrivals shown so far, in order (_onMessage)
    this._drawSoon = null; // the redraw changedSoon asked for: {frame, timer}
    this._onBeforeUnload = () => this.flushSave();
    this._locks = { manager: globalThis.navigator?.locks ?? null, waitMs: TAB_LOCK_WAIT_MS, ...locks };
    this._releaseTabLock = null; // lets go of TAB_LOCK, held while unlocked
    this._unlocking = null; // { superseded } from this tab's "unlocked" until it is unlocked
    this._unlockedAt = null; // when this tab said it unlocked: [time, random tie-break]
    this._latestUnlock = null; // the latest such stamp, this tab's or one heard
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Compare the device's clock with the relay's; a failure leaves it as it was. The
   * relay's clock is trusted for this warning only: a relay that lies can make it show,
   * and nothing else. */
  async _checkClock() {
    try {
      const asked = Date.now();
      const { timeMs: relayMs, uptimeS } = await this._pageRelay();
      const answered = Date.now();
      // The latest it may have started: a wait too long rather than none.
      if (uptimeS !== null) this._pageRelayStartedAt = performance.now() - uptimeS * 1000;
      if (relayMs === null || answered - asked > 10_000) return; // too slow to tell
      this.clockOffsetMs = Math.round((asked + answered) / 2 - relayMs);
      this._clockKnown = true;
      this.changed();
    } catch {
      // No answer (offline, no relay behind the page): nothing to say.
    }
  }

  /** The time rooms expire by here. A room's key is deleted at its expiry, for good: by a
   * clock days fast, every room would go at the next unlock. So a device's clock that the
   * relay's says is fast is read back by that much, up to MAX_CLOCK_READ_BACK_MS; one said
   * slow is not read forward (a relay's word never deletes a key early, and the relay
   * refuses an expired room itself). */
  expiryNow(now = Date.now()) {
    const offset = this.clockOffsetMs;
    return this._clockKnown && offset >= CLOCK_WARNING_MS && offset <= MAX_CLOCK_READ_BACK_MS ? now - offset : now;
  }

  /** What to tell the user of this device's clock, or null when it is near the relay's. */
  get clockWarning() {
    const offset = this.clockOffsetMs;
    if (Math.abs(offset) < CLOCK_WARNING_MS) return null;
    return offset > 0
      ? `This device's clock is ${howFar(offset)} fast. Others drop messages dated more than 5 minutes ahead of their own clocks, so they may not see yours. Set it to the right time (automatic time).`
      : `This device's clock is ${howFar(-offset)} slow. Messages from others then look more than 5 minutes ahead and are dropped, so you may not see theirs. Set it to the right time (automatic time).`;
  }

  /** Draw now: what the person did shows at once (code after an action may rely on it). */
  changed() {
    this._cancelDrawSoon();
    this._countUnread();
    for (const listener of this.listeners) listener();
  }

  /**
   * Draw what the relay brought (a count, a roster, an arrival, an acknowledgement) at the
   * next animation frame, once however many come before it: every frame of a flood is a
   * task of its own, and a room of a thousand messages redrawn for each would keep the page
   * busy for minutes. The count of unread messages (the tab's title) follows at once.
   */
  changedSoon() {
    this._countUnread();
    if (this._drawSoon) return;
    const draw = () => {
      try {
        this.changed(); // cancels the other of the two
      } catch (error) {
        this.set({ error: `Could not show what the relay sent: ${error?.message ?? error}` });
      }
    };
    const frame = globalThis.requestAnimationFrame;
    const inSight = typeof frame === "function" && globalThis.document?.visibilityState === "visible";
    this._drawSoon = {
      frame: inSight ? frame(draw) : null,
      timer: setTimeout(draw, inSight ? DRAW_FALLBACK_MS : 0),
    };
  }

  _cancelDrawSoon() {
    const soon = this._drawSoon;
    if (!soon) return;
    this._drawSoon = null;
    if (soon.frame !== null) globalThis.cancelAnimationFrame?.(soon.frame);
    clearTimeout(soon.timer);
  }

  /** The room on screen, in a tab in sight, is read; the tab's title counts the messages
   * that came in any other, or while the tab was hidden: "(3) InstantRoom". A count, never
   * a room's name or a sender's: a title shows in the task switcher and the history. */
  _countUnread() {
    const doc = globalThis.document;
    if (this.state.screen === "room" && doc?.visibilityState === "visible") {
      const reading = this.live.get(this.state.current);
      if (reading) reading.unread = 0;
    }
    let unread = 0;
    for (const live of this.live.values()) unread += live.unread;
    this.unread = unread;
    const title = unread ? `(${unread}) ${this._title}` : this._title;
    if (doc && doc.title !== title) doc.title = title;
  }

  set(patch) {
    const before = { screen: this.state.screen, current: this.state.current };
    Object.assign(this.state, patch);
    if ("screen" in patch || "current" in patch) this._syncHistory(before);
    this.changed();
  }

  // Screens as history entries, so that the browser's Back (Android's back gesture) goes to
  // the previous screen, and leaves the page only from the top one: the rooms list, or the
  // Unlock screen. Each entry's history.state is an opaque position in this tab's memory
  // ({instantroom: token, at}); the screen and room it stands for stay here, never in the
  // history. Every URL given is the address bar's without its fragment: no entry keeps an
  // invite key (capture.js). A lock goes back to the first entry and draws a new token:
  // the entries ahead of it then stand for nothing, and reopen no room without the password.

  _startHistory() {
    // A reload, or a tab the browser brings back, keeps the entries this page made before:
    // what they stood for went with the page's memory, and each would show the first
    // screen once more before Back left. The page goes back to the first of them.
    const before = this._page.history.state;
    this._nav = { token: navToken(), stack: [null], at: 0, traversing: false };
    this._navWrite("replaceState");
    this._page.addEventListener("popstate", (event) => this._onPopState(event.state));
    if (isEntry(before) && before.at > 0) this._traverseToFirst(before.at);
  }

  /** The address bar's URL without its fragment, for every entry written. */
  _navWrite(method) {
    const { location, history } = this._page;
    const { token, at } = this._nav;
    history[method]({ instantroom: token, at }, "", location.pathname + location.search);
  }

  /** Make the history follow a change of screen from `before` (set()). */
  _syncHistory(before) {
    const nav = this._nav;
    if (!nav || this._fromHistory) return;
    const { screen, current } = this.state;
    const locked = LOCKED_SCREENS.has(screen);
    if (locked && !LOCKED_SCREENS.has(before.screen)) {
      // Locked: what the entries stood for is forgotten. The first entry is written anew
      // (with the new token) once there, or now if the page is there already.
      nav.token = navToken();
      nav.stack = [null];
      if (nav.at === 0 && !nav.traversing) this._navWrite("replaceState");
    }
    if (locked || screen === "rooms") return this._unwind();
    // On the way back to the first entry: the screen gets its entry once there.
    if (nav.traversing) return;
    const entry = { screen, current: ROOM_SCREENS.has(screen) ? current : null };
    if (sameEntry(nav.stack[nav.at], entry)) return;
    if (nav.at > 0 && REPLACED_BY[before.screen] === screen) {
      // A form done with (New room, Join): its result takes its place.
      nav.stack[nav.at] = entry;
      nav.stack.length = nav.at + 1;
      this._navWrite("replaceState");
      return;
    }
    nav.stack.length = nav.at + 1;
    nav.stack.push(entry);
    nav.at += 1;
    this._navWrite("pushState");
  }

  /** Back to the first entry (the rooms list, or the Unlock screen). */
  _unwind() {
    const nav = this._nav;
    if (nav.at === 0 || nav.traversing) return;
    this._traverseToFirst(nav.at);
  }

  /** Go `steps` entries back, to the first entry; _onPopState hears when it is there. */
  _traverseToFirst(steps) {
    const nav = this._nav;
    nav.at = 0;
    nav.traversing = true;
    this._page.history.go(-steps);
  }

  _onPopState(state) {
    const nav = this._nav;
    if (nav.traversing) {
      // Back at the first entry (_unwind): written anew (a lock drew a new token), and a
      // screen opened meanwhile gets its entry now.
      nav.traversing = false;
      this._navWrite("replaceState");
      this._syncHistory({ screen: this.store ? "rooms" : "unlock", current: null });
      return;
    }
    // An invite link opened in this page: the hashchange event that follows takes it.
    if (state === null && this._page.location.hash.length > 1) return;
    if (state?.instantroom === nav.token && Number.isInteger(state.at) && state.at < nav.stack.length) {
      nav.at = state.at;
    } else {
      // An entry from before a lock or a reload: it stands for the first screen now. The
      // page goes on to the first entry of its kind, `at` entries back, so that Back from
      // there leaves (rather than show the first screen once for each such entry).
      nav.stack = [null];
      if (isEntry(state) && state.at > 0) {
        this._traverseToFirst(state.at);
      } else {
        nav.at = 0;
        this._navWrite("replaceState");
      }
    }
    if (!this.store) return; // locked: the Unlock screen stays
    const entry = nav.stack[nav.at] ?? { screen: "rooms", current: null };
    if (ROOM_SCREENS.has(entry.screen) && !this.room(entry.current)) {
      // Forgotten or expired since: the list, which goes back to the first entry.
      return this.set({ screen: "rooms", current: null, error: null, notice: null });
    }
    this._fromHistory = true;
    try {
      // Settings, New room and Join keep the room they were opened from, as go() does.
      const current = ROOM_SCREENS.has(entry.screen) ? entry.current : entry.screen === "rooms" ? null : this.state.current;
      this.set({ screen: entry.screen, current, error: null, notice: null });
    } finally {
      this._fromHistory = false;
    }
  }

  async start() {
    const invite = takeCapturedInvite();
    if (!window.isSecureContext || !globalThis.crypto?.subtle) {
      // WebCrypto (and the camera) exist only on HTTPS pages and on this machine's loopback.
      this.set({ screen: "insecure" });
      return;
    }
    if (invite) Object.assign(this.state, { joinText: invite.text, joinServer: invite.server });
    this._page = window;
    this._checkClock();
    this._watchClock();
    this._startHistory();
    window.addEventListener("hashchange", () => this._onHashChange());
    // A page coming back from the background checks at once, before showing anything.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        this._checkIdle();
        this.reconnectNow();
        this._checkClock(); // set right meanwhile, or wrong (a device back from a trip)
        this.changed(); // the room on screen is read now
      } else {
        this.flushSave(); // the browser may freeze or end a hidden page before the wait is over
      }
    });
    window.addEventListener("pagehide", (event) => this._onPageHide(event));
    // Back on the network: try the relays now rather than at the end of their backoff, and
    // compare the clocks if that could not be done (an installed app started offline).
    window.addEventListener("online", () => {
      this.reconnectNow();
      if (!this._clockKnown) this._checkClock();
    });
    for (const type of ["pointerdown", "keydown", "touchstart"]) {
      window.addEventListener(type, () => (this.lastActivity = Date.now()), { passive: true });
    }
    window.addEventListener("beforeinstallprompt", (event) => {
      event.preventDefault();
      this.installPrompt = event;
      this.changed();
    });
    // Two unlocked tabs would overwrite each other's saves: the tab unlocked last wins,
    // and the others lock; so does every tab when one wipes the store or changes its
    // password. (Saves check the record they replace too: see KeyStore's StoreChanged.)
    this.tabs = "BroadcastChannel" in window ? new BroadcastChannel("instantroom") : null;
    this.tabs?.addEventListener("message", (event) => this._onTabMessage(event.data));
    const exists = await KeyStore.exists(this.storeOptions);
    this.set({ screen: "unlock", firstVisit: !exists });
  }

  /**
   * The page is going (closed, reloaded, left): the throttled save is written, and a page
   * that will not come back says to its rooms that it leaves (PROTOCOL.md 5.7, best
   * effort: the browser may end it first; the others then find it gone at their next roll
   * call). One kept in the back-forward cache stays as it is, to be shown again.
   */
  _onPageHide(event) {
    this.flushSave();
    if (event?.persisted) return;
    for (const connection of this.connections.values()) connection.close();
  }

  /** Compare the clocks again when the device's clock jumps against the page's monotonic
   * one: set right (or wrong) while the page shows, as a computer's clock is by its time
   * service after a wake-up, a warning would otherwise hold until the page was hidden. */
  _watchClock() {
    const wallLessMonotonic = () => Date.now() - performance.now();
    let last = wallLessMonotonic();
    const watch = setInterval(() => {
      const now = wallLessMonotonic();
      if (Math.abs(now - last) > CLOCK_JUMP_MS) this._checkClock();
      last = now;
    }, CLOCK_JUMP_CHECK_MS);
    // For as long as the page lives; in Node (the tests), it keeps no process alive.
    watch?.unref?.();
  }

  /** Forgot the password: delete the locked store, and start again. */
  async wipeLocked() {
    await KeyStore.wipe(this.storeOptions);
    this.tabs?.postMessage("wiped");
    this.set({ firstVisit: true, error: null, notice: "Everything was deleted from this device. Set a new password." });
  }

  _onTabMessage(message) {
    const kind = typeof message === "string" ? message : message?.kind;
    // The Unlock screen asks for what is there now: a new password, or the one set elsewhere.
    if (kind === "wiped") this.set({ firstVisit: true });
    if (kind === "created" && !this.store && this.state.firstVisit) {
      this.set({ firstVisit: false, notice: CREATED_ELSEWHERE });
    }
    if (kind === "unlocked") {
      // Messages between tabs may come late: only a tab that unlocked after this one
      // (by when each said so) wins over it, whether this one is still unlocking or not.
      if (message?.at && (!this._latestUnlock || laterThan(message.at, this._latestUnlock))) {
        this._latestUnlock = message.at;
      }
      const later = !this._unlockedAt || !(message?.at) || laterThan(message.at, this._unlockedAt);
      if (!later) return;
      if (this._unlocking) {
        this._unlocking.superseded = true;
        this._unlocking.giveUp?.(); // no need to wait for the tab lock any more
      }
    }
    if (this.store && TAB_NOTICES[kind]) this.lock(TAB_NOTICES[kind]);
  }

  _onHashChange() {
    // An invite link opened while the app is open: same rule, out of the address bar at once.
    const invite = inviteFromLocation();
    if (!invite) return;
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    // The browser made a new entry for the link, key-free now: the Join screen's. Locked,
    // the page goes back to the first entry, the Unlock screen's (a second one would show
    // the rooms list twice on the way back); the Join screen gets its entry once unlocked.
    const nav = this._nav;
    if (nav && !nav.traversing) {
      nav.stack.length = nav.at + 1;
      nav.stack.push(this.store ? { screen: "join", current: null } : null);
      nav.at += 1;
      this._navWrite("replaceState");
      if (!this.store) this._unwind();
    }
    Object.assign(this.state, {
      joinText: invite.text,
      joinServer: invite.server,
      invites: this.state.invites + 1,
    });
    if (this.store) this.set({ screen: "join", error: null, notice: "An invite link was opened: check it before joining." });
    else this.changed();
  }

  // Locking

  async unlock(password, confirmation) {
    if (this.state.busy) return;
    if (this.state.firstVisit) {
      if (password.length < MIN_PASSWORD_LENGTH) {
        this.set({ error: `Choose a password of at least ${MIN_PASSWORD_LENGTH} characters.` });
        return;
      }
      if (password !== confirmation) {
        this.set({ error: "The two passwords differ. Type the same password twice." });
        return;
      }
    }
    this.set({ busy: true, error: null });
    const creating = this.state.firstVisit;
    const unlocking = { superseded: false };
    let store = null;
    let release = null;
    try {
      store = creating
        ? await KeyStore.create(password, this.storeOptions)
        : await KeyStore.unlock(password, this.storeOptions);
      // The other tabs lock, and the one unlocked before writes its last save as it does;
      // this tab waits for that (the tab lock), then reads the store again as that save
      // left it, with the key it derived: the tab unlocked last wins, and loses nothing.
      this._unlocking = unlocking;
      // The wall clock, which every tab reads alike (a page's performance.now() stops
      // while the computer sleeps), and after every "unlocked" heard so far: a tab that
      // unlocks after another's message came is the later one, even within a millisecond.
      const after = this._latestUnlock ? this._latestUnlock[0] + 1 : 0;
      this._unlockedAt = [Math.max(Date.now(), after), Math.random()];
      this._latestUnlock = this._unlockedAt;
      if (creating) this.tabs?.postMessage("created");
      this.tabs?.postMessage({ kind: "unlocked", at: this._unlockedAt });
      release = await this._holdTabLock(unlocking);
      await store.reload();
    } catch (error) {
      this._unlocking = null;
      store?.lock();
      release?.();
      await this._unlockFailed(error);
      return;
    }
    this._unlocking = null;
    if (unlocking.superseded) {
      store.lock(); // nothing was written: the tab that waits can go on at once
      release?.();
      this.set({ busy: false, error: null, notice: TAB_NOTICES.unlocked });
      return;
    }
    this.store = store;
    this._releaseTabLock = release;
    if (!store.data.serverUrl) store.data.serverUrl = defaultServerUrl();
    this.lastActivity = Date.now();
    const removed = store.purgeExpired(this.expiryNow());
    // What the journal held (arrivals that a reload or a closed tab kept from their save)
    // goes into the record now, and out of the journal.
    if (removed.length || store.journalWaiting) {
      await this.save();
      // Locked meanwhile (another tab wrote the store first): lock() said why.
      if (this.store !== store) return;
    }
    for (const room of store.data.rooms) this._connectRoom(room);
    this._timers = [
      setInterval(() => this._checkIdle(), IDLE_CHECK_MS),
      setInterval(() => this._checkExpiry(), EXPIRY_CHECK_MS),
    ];
    const screen = this.state.joinText ? "join" : "rooms";
    // Rooms that expired while locked are said as those that expire while unlocked are.
    const expired = removed.length ? { notice: expiredNotice(removed) } : {};
    this.set({ busy: false, firstVisit: false, screen, error: null, ...expired });
  }

  async _unlockFailed(error) {
    if (error instanceof StoreExists || error instanceof NoStore) {
      // Another tab made or deleted the store since this screen showed: ask for what is
      // there now, rather than fail the same way for ever.
      let exists = error instanceof StoreExists;
      try {
        exists = await KeyStore.exists(this.storeOptions);
      } catch {
        // IndexedDB failed: the error says which way it was.
      }
      this.set({ busy: false, firstVisit: !exists, error: exists ? CREATED_ELSEWHERE : WIPED_ELSEWHERE });
      return;
    }
    let message = `The key store could not be opened: ${error.message}`;
    if (error instanceof WrongPassword) message = "Wrong password. Nothing was changed; try again.";
    if (error instanceof StoreChanged) message = error.message; // the password changed in another tab
    this.set({ busy: false, error: message });
  }

  /**
   * Take the tab lock (TAB_LOCK), to hold while unlocked: granted once the tab unlocked
   * before has locked and its last save has landed. Resolves to the function that lets go
   * of it; to null where there are no Web Locks or no BroadcastChannel (the other tab would
   * never hear to lock: as before, no wait), or when the other tab did not let go within
   * TAB_LOCK_WAIT_MS (then this tab goes on without; a save that fails as the other tab
   * wrote first locks it, as before).
   */
  _holdTabLock(unlocking) {
    const { manager, waitMs } = this._locks;
    if (!manager || !this.tabs) return Promise.resolve(null);
    return new Promise((resolve) => {
      let release;
      const held = new Promise((done) => (release = done));
      const stop = new AbortController();
      const timer = setTimeout(() => stop.abort(), waitMs);
      unlocking.giveUp = () => stop.abort(); // superseded meanwhile: nothing to wait for
      try {
        manager
          .request(TAB_LOCK, { signal: stop.signal }, () => {
            clearTimeout(timer);
            resolve(release);
            return held;
          })
          .catch(() => {
            clearTimeout(timer);
            resolve(null);
          });
      } catch {
        clearTimeout(timer);
        resolve(null);
      }
    });
  }

  /** Let go of the tab lock once `written` (the store's last writes) has settled. */
  _letGoOfTabLock(written = Promise.resolve()) {
    const release = this._releaseTabLock;
    this._releaseTabLock = null;
    if (release) written.then(release, release);
  }

  _stopTimers() {
    for (const timer of this._timers) clearInterval(timer);
    this._timers = [];
  }

  lock(reason = null) {
    this.flushSave(); // the store writes what was asked for before it locks
    this._stopTimers();
    for (const connection of this.connections.values()) connection.close();
    this.connections.clear();
    this.live.clear();
    const written = this.store?.lock();
    this.store = null;
    this._letGoOfTabLock(written); // the next tab to unlock reads what this one wrote last
    this.set({ screen: "unlock", current: null, error: null, notice: reason, busy: false, joinText: "", joinServer: null });
  }

  _checkIdle() {
    if (!this.store) return;
    const minutes = this.store.data.idleLockMinutes ?? 5;
    if (minutes > 0 && Date.now() - this.lastActivity > minutes * 60_000) {
      this.lock("Locked after a while without use.");
    }
  }

  /** Save the store; resolves to whether it was written (failures are shown, never thrown). */
  save() {
    // The store writes in order and merges the saves asked for while one is waiting (a
    // fresh nonce each time), so a lock right after still lands this save.
    // This save writes the contents as they are when it starts: a throttled one waiting
    // has nothing more to write.
    this._cancelSaveSoon();
    const store = this.store;
    if (!store) return Promise.resolve(false);
    this._lastSaveAt = this._clock.now();
    this._saving = store.save().then(
      () => true,
      (error) => {
        // Merged saves fail together: lock once, and never a store unlocked since.
        if (error instanceof StoreChanged) {
          if (this.store === store) this.lock(error.message);
        } else this.set({ error: `Could not save: ${error.message}` });
        return false;
      },
    );
    return this._saving;
  }

  /**
   * Save because of something that arrived (a message, an acknowledgement): at once if
   * the last save was SAVE_THROTTLE_MS ago or more, else once that time is up, one save
   * for everything that arrived meanwhile. lock(), a hidden page and any save() write it
   * sooner.
   */
  saveSoon() {
    if (!this.store || this._saveTimer !== null) return;
    const wait = this._lastSaveAt + SAVE_THROTTLE_MS - this._clock.now();
    if (wait <= 0) {
      this.save();
      return;
    }
    this._saveTimer = this._clock.setTimer(() => {
      this._saveTimer = null;
      this._page?.removeEventListener("beforeunload", this._onBeforeUnload);
      this.save();
    }, wait);
    // A reload or a closed tab says "beforeunload" first, and a reload then fetches the new
    // page: time for the waiting save to land, which "pagehide", at the very end, is not.
    // Listened to only while a save waits: some browsers keep a page that listens out of
    // their back-forward cache.
    this._page?.addEventListener("beforeunload", this._onBeforeUnload);
  }

  /** Write now a throttled save that waits (saveSoon), if there is one. */
  flushSave() {
    if (this._saveTimer !== null) this.save();
  }

  _cancelSaveSoon() {
    if (this._saveTimer === null) return;
    this._clock.clearTimer(this._saveTimer);
    this._saveTimer = null;
    this._page?.removeEventListener("beforeunload", this._onBeforeUnload);
  }

  // Rooms

  get rooms() {
    return this.store ? this.store.data.rooms : [];
  }

  room(id) {
    // Locked but not let go of yet (a wipe under way): no room, rather than StoreLocked.
    return this.store && !this.store.locked ? this.store.room(id) : null;
  }

  liveRoom(id) {
    let live = this.live.get(id);
    if (!live) {
      live = {
        members: 0,
        roster: [],
        messages: [],
        error: null,
        draft: "",
        unread: 0,
        refused: false, // refused for good by the relay (_roomRefused)
        droppedAhead: null,
        droppedAheadAt: 0, // when the last message dated ahead was dropped (Date.now())
      };
      const stored = this.room(id);
      // What the relay had not taken when the tab locked or closed waits in the stored
      // outbox, and is sent again (_restoreOutbox); anything else it never took was given up.
      const waiting = new Set((stored?.outbox ?? []).map((o) => o.id));
      const status = (m) => (m.sent ? "sent" : waiting.has(m.id) ? "sending" : "unsent");
      if (stored?.messages) live.messages = stored.messages.map((m) => ({ ...m, status: status(m) }));
      this.live.set(id, live);
    }
    return live;
  }

  myFingerprint() {
    return this.store ? fingerprint(this.store.deviceKey().publicKey) : "";
  }

  connectionFor(serverUrl) {
    let connection = this.connections.get(serverUrl);
    if (connection) return connection;
    const now = this.connectionOptions.now ?? (() => Date.now());
    const ofPage = isPageRelay(serverUrl);
    connection = new RoomConnection({
      expiryNow: () => this.expiryNow(now()),
      announce: true, // the others see who is here, by name and fingerprint
      // Said by the page's relay only (on /healthz): another's is another origin's.
      relayStartedAt: () => {
        const started = ofPage ? this._pageRelayStartedAt : null;
        return started === null ? null : now() - (performance.now() - started); // on `now`'s clock
      },
      ...this.connectionOptions,
      serverUrl,
      deviceSeed: this.store.deviceKey().seed,
    });
    const on = (type, handler) => connection.addEventListener(type, (event) => handler(event.detail));
    on("state", ({ state }) => {
      if (state === "online") {
        this._reached.add(connection);
        // A relay answers now: the clocks could not be compared at the start (offline).
        if (!this._clockKnown) this._checkClock();
      }
      if (state === "reconnecting") this._failed.add(connection);
      this.changed();
    });
    on("joined", (d) => this._onJoined(d));
    on("presence", (d) => this._onPresence(d));
    on("members", (d) => this._onMembers(d));
    on("message", (d) => this._onMessage(d));
    on("accepted", (d) => this._onAccepted(d));
    on("notSent", (d) => this._onNotSent(d));
    on("expired", (d) => this._onExpired(hex(d.roomId)));
    on("refused", (d) => this._onRefused(d));
    on("rejected", (d) => this._onRejected(d));
    // "error" ({message}): something the connection survived. Nothing shows it (a state
    // or reason that changes comes as a "state" event): no redraw, which a relay sending
    // frames that make no sense would otherwise cause for each.
    this.connections.set(serverUrl, connection);
    connection.start();
    return connection;
  }

  reconnectNow() {
    for (const connection of this.connections.values()) connection.reconnectNow();
  }

  connectionState(id) {
    const room = this.room(id);
    if (!room) return "offline";
    // Not in the room, however the connection to its relay is (online, for other rooms).
    if (this.live.get(id)?.refused) return "refused";
    const connection = this.connections.get(room.serverUrl);
    return connection ? connection.state : "offline";
  }

  /** Why the room's relay connection is not online, for people; null when all is well. */
  connectionReason(id) {
    const room = this.room(id);
    const connection = room && this.connections.get(room.serverUrl);
    if (!connection) return null;
    if (connection.reason) return connection.reason;
    // Never reached (down, a wrong address, or a relay that refuses this page's origin,
    // which a page cannot tell apart): "reconnecting…" alone would say nothing of it. Said
    // from the first failed try on, and while each next one is made ("connecting…") too:
    // it would otherwise come and go with every try, and be read out again each time.
    if (this._reached.has(connection) || !this._failed.has(connection)) return null;
    if (connection.state !== "reconnecting" && connection.state !== "connecting") return null;
    const host = new URL(room.serverUrl).host;
    const elsewhere = host !== new URL(defaultServerUrl()).host;
    return (
      `The relay at ${host} could not be reached: it may be down, or the address wrong.` +
      (elsewhere ? " A relay other than the one that served this page must also list this page's address in its --origins option." : "") +
      " Trying again."
    );
  }

  /** Join `room` on its relay; the join (RoomConnection.join), whose failure is said in
   * the room. */
  _connectRoom(room) {
    let connection;
    try {
      connection = this.connectionFor(room.serverUrl);
    } catch (error) {
      // A relay address the connection refuses (stored before it was checked): said in
      // the room, and the other rooms go on.
      this._roomRefused(room.roomId, error, { forGood: true });
      const failed = Promise.reject(error);
      failed.catch(() => {}); // said in the room already
      return failed;
    }
    this.liveRoom(room.roomId);
    const joining = connection.join(room.key, { expiresAtMs: room.expiresAtMs, name: room.nickname });
    joining.catch((error) => {
      // A refusal is said by its "refused" event (_onRefused), in the relay's words.
      if (!(error instanceof JoinRefused)) this._roomRefused(room.roomId, error);
    });
    this._seedReplayFilter(connection, room);
    this._restoreOutbox(connection, room).catch((error) => this.set({ error: `Could not send again: ${error.message}` }));
    return joining;
  }

  /**
   * Hand the room's stored outbox (what the relay had not taken when the tab locked or
   * closed) back to its session, which resends each envelope byte for byte once the room
   * is joined (PROTOCOL.md 10.6), and show each as sending again. Each is opened first, to
   * show it in a room that keeps no history, and to check it is what the store says; one
   * that is not is dropped. "accepted" or "notSent" follows for each, as for any message.
   */
  async _restoreOutbox(connection, room) {
    const store = this.store;
    const id = room.roomId;
    const stored = store.outgoing(id);
    if (stored.length === 0 || !connection.session.rooms.has(id)) return;
    const keys = roomKeysFromMinikey(room.key);
    const opened = [];
    for (const outgoing of stored) {
      let message = null;
      try {
        message = await openEnvelope(keys, outgoing.envelope);
      } catch {
        // Not an envelope of this room: nothing to send.
      }
      opened.push({ ...outgoing, message });
    }
    // Locked, forgotten or expired meanwhile: there is nothing to put back into.
    const current = this.store === store && this.room(id) === room && this.connections.get(room.serverUrl) === connection;
    if (!current || !connection.session.rooms.has(id)) return;
    const roomId = fromHex(id);
    let changed = false;
    for (const { id: messageId, timestampMs, envelope, message } of opened) {
      if (message === null || hex(message.messageId) !== messageId || message.timestampMs !== timestampMs) {
        changed = store.removeOutgoing(id, messageId) || changed;
        continue;
      }
      this._showRestored(id, room, message);
      try {
        connection.restore(roomId, message.messageId, timestampMs, envelope); // false: "notSent" came
      } catch (error) {
        // The session's outbox is full: this one cannot wait, and shows as not sent.
        changed = store.removeOutgoing(id, messageId) || changed;
        const entry = this.live.get(id)?.messages.find((m) => m.id === messageId);
        if (entry) entry.status = "unsent";
        this.set({ error: error.message });
      }
    }
    if (changed) this.save();
    this.changed();
  }

  /** Show one of ours put back into the outbox as sending, unless the person deleted it. */
  _showRestored(id, room, message) {
    const messageId = hex(message.messageId);
    if (message.kind !== Kind.TEXT || (room.deleted ?? []).some((d) => d.id === messageId)) return;
    const live = this.liveRoom(id);
    const shown = live.messages.find((m) => m.id === messageId);
    if (shown) {
      if (shown.status !== "sent") shown.status = "sending";
      return;
    }
    let text;
    try {
      text = utf8Strict.decode(message.body);
    } catch {
      return;
    }
    const entry = {
      id: messageId,
      senderName: message.senderName,
      fingerprint: fingerprint(message.senderKey),
      text,
      timestampMs: message.timestampMs,
      mine: true,
      keyChanged: false,
      status: "sending",
    };
    placeByTime(live.messages, entry);
  }

  /**
   * Tell the session's replay filter of `room` (joined in it just now, synchronously, so
   * before any DELIVER) the messages this device already has: its kept history, the
   * messages deleted within the last hour, the text messages it received or sent within
   * the last hour (kept history or not) and its own still waiting in the outbox; then the
   * newest time among the recent ones the store dropped for its bound (`recentFloorMs`), as
   * the filter's floor, so that those cannot come back either. A session starts with an
   * empty filter, and a relay could otherwise send them again after a reload or an unlock
   * (PROTOCOL.md 7).
   */
  _seedReplayFilter(connection, room) {
    const session = connection.session;
    if (!session.rooms.has(room.roomId)) return; // not joined (expired): nothing to seed
    const roomId = fromHex(room.roomId);
    const now = Date.now();
    const known = [...(room.messages ?? []), ...(room.deleted ?? []), ...(room.recent ?? []), ...(room.outbox ?? [])];
    for (const message of known) {
      session.remember(roomId, fromHex(message.id), message.timestampMs, now);
    }
    if (room.recentFloorMs > 0) session.rememberFloor(roomId, room.recentFloorMs, now);
  }

  /** Say why the relay does not let us into room `id`; `forGood`: the session gave the
   * room up (PROTOCOL.md 11.1), and it is not in, however the connection is. */
  _roomRefused(id, error, { forGood = false } = {}) {
    const room = this.room(id);
    if (!room) return;
    const live = this.liveRoom(id);
    live.error = error?.message ?? String(error);
    if (forGood) live.refused = true;
    this.changed();
  }

  /** Why `name` cannot be a nickname, or null. */
  _nicknameProblem(name) {
    if (!name) return "Choose a nickname: the others see it next to your messages.";
    if (utf8.encode(name).length > MAX_NAME_BYTES) {
      return `That nickname is too long: at most ${MAX_NAME_BYTES} bytes, and a letter with an accent takes 2, an emoji 4.`;
    }
    // A broken character (half of an emoji, cut by the field's length limit): it could never be sent.
    if (/\p{Cs}/u.test(name)) return "That nickname has a broken character in it: type it again.";
    return null;
  }

  /** A new room. `lifetime` is a key of LIFETIMES, or "custom": `customAmount` (a whole
   * number, as typed) of `customUnit` (a key of LIFETIME_UNITS). */
  async createRoom({ label, nickname, lifetime, customAmount, customUnit }) {
    // One room per tap: a second tap (or Enter) while one is being made does nothing.
    if (this.state.creating) return;
    const name = nickname.trim();
    const problem = this._nicknameProblem(name);
    if (problem) return this.set({ error: problem });
    let chosen = Object.hasOwn(LIFETIMES, lifetime) ? LIFETIMES[lifetime] : null;
    if (lifetime === "custom") {
      try {
        chosen = customLifetime(customAmount, customUnit);
      } catch (error) {
        return this.set({ error: error.message });
      }
    }
    if (!chosen) return this.set({ error: "Choose how long the room lives." });
    const screen = this.state.screen; // where the key shows, unless one goes elsewhere
    this.set({ creating: true, error: null });
    try {
      await this._createRoom(label, name, chosen, screen);
    } finally {
      this.set({ creating: false });
    }
  }

  async _createRoom(label, name, chosen, screen) {
    const store = this.store;
    try {
      websocketUrl(store.data.serverUrl); // refused before the room is stored
    } catch (error) {
      return this.set({ error: `${error.message} Change the relay in Settings.` });
    }
    const key = makeMinikey(randomBytes);
    const now = this.expiryNow(); // a clock known to be fast would stretch the lifetime
    const room = store.addRoom({
      key,
      label: label.trim() || "Room",
      nickname: name,
      expiresAtMs: now + chosen.ms,
      nowMs: now,
      keepHistory: false,
    });
    room.serverUrl = store.data.serverUrl;
    store.data.nickname = name;
    const saved = await this.save();
    if (this.store !== store) return this._lockedWhileAdding(room, saved, "make it again");
    if (!saved) return this._notSavedWhileAdding(room, "made");
    // The relay is asked before the key shows, as by the terminal's `new`: the first JOIN
    // fixes the room's lifetime there, and a room it refuses (a lifetime beyond its
    // --max-room-lifetime) would let in those the key was given to, and never its maker.
    const connection = this.connectionFor(room.serverUrl);
    const answer = await this._firstAnswer(connection, this._connectRoom(room));
    if (this.store !== store) return this._lockedWhileAdding(room, true, "make it again");
    if (answer.refused) return this._refusedWhileAdding(room, answer.refused, chosen);
    // A relay out of reach (or silent) keeps the room, as the terminal's `new` does: its
    // JOIN goes once the relay answers, and a refusal then is said in the room.
    const host = new URL(room.serverUrl).host;
    const notice = answer.reached ? null : `The relay at ${host} could not be reached yet: the room joins it once it answers.`;
    // Gone elsewhere while the relay was asked: the room is in the list, not thrust up.
    if (this.state.screen !== screen) return notice && this.set({ notice });
    this.set({ screen: "share", current: room.roomId, error: null, notice });
  }

  /**
   * The relay's answer to a new room's first JOIN (`joining`, on `connection`): {reached:
   * true} once joined; {refused: error} when the relay refused the room (JoinRefused) or
   * this client (RelayRefused); {reached: false} when a try to connect failed, the
   * connection was lost, or nothing came within NEW_ROOM_WAIT_MS.
   */
  _firstAnswer(connection, joining) {
    return new Promise((resolve) => {
      let before = connection.state;
      const onState = (event) => {
        // "reconnecting" again is the next try starting, not one failing.
        if (event.detail.state === "reconnecting" && before !== "reconnecting") done({ reached: false });
        before = event.detail.state;
      };
      const done = (answer) => {
        clearTimeout(timer);
        connection.removeEventListener("state", onState);
        resolve(answer);
      };
      const timer = setTimeout(() => done({ reached: false }), this._newRoomWaitMs);
      connection.addEventListener("state", onState);
      joining.then(
        () => done({ reached: true }),
        (error) => done(error instanceof JoinRefused || error instanceof RelayRefused ? { refused: error } : { reached: false }),
      );
    });
  }

  /**
   * The relay refused a new room before its key showed: the room is deleted, and the New
   * room screen stays, with what was typed and why, to make it again.
   */
  async _refusedWhileAdding(room, error, chosen) {
    const store = this.store;
    this.connections.get(room.serverUrl)?.leave(fromHex(room.roomId)); // a full relay's JOIN would go again
    store.removeRoom(room.roomId);
    this.live.delete(room.roomId);
    await this.save();
    if (this.store !== store) return; // locked meanwhile: lock() said why
    let why;
    if (error.code === ErrorCode.EXPIRY_TOO_FAR) {
      // A custom lifetime can be as short as MIN_CUSTOM_LIFETIME_MS.
      const shorter = Object.values(LIFETIMES).some((other) => other.ms < chosen.ms);
      why =
        `This relay keeps rooms for less time than ${chosen.label}, so the room was not made. ` +
        (shorter
          ? "Choose a shorter lifetime, and create it again."
          : chosen.ms > MIN_CUSTOM_LIFETIME_MS
            ? "Choose a shorter custom lifetime, and create it again."
            : "No lifetime offered here is short enough: choose another relay in Settings.");
    } else if (error.code === ErrorCode.RELAY_FULL) {
      why = `The relay has no place for a new room now, so it was not made.${relaySays(error.message)} Try again later, or choose another relay in Settings.`;
    } else if (error instanceof JoinRefused) {
      why = `The relay refused the new room, so it was not made.${relaySays(error.message)}`;
    } else {
      why = `${error.message} The room was not made.`;
    }
    this.set({ error: why });
  }

  async joinRoom({ text, nickname }) {
    const name = nickname.trim();
    let parsed;
    try {
      parsed = this.parseJoinText(text);
    } catch (error) {
      // Of the key itself when it was found among other words (findInvite).
      const hint = error instanceof MiniKeyError ? keyCaseHint(error.keyText ?? text) : null;
      return this.set({ error: hint ? `${error.message} ${hint}` : error.message });
    }
    const problem = this._nicknameProblem(name);
    if (problem) return this.set({ error: problem });
    const existing = this.rooms.find((room) => room.key === parsed.key);
    if (existing) {
      // The link names another relay: the room stays on its own, and the user is told so
      // rather than left to think it moved (the Join screen said "joins on" the link's).
      let elsewhere = null;
      const { joinText, joinServer } = this.state;
      const linked = parsed.server || (joinServer && this._inviteKey(joinText) === parsed.key);
      try {
        elsewhere = linked ? this.joinServerFor(parsed) : null; // a bare key names no relay
      } catch {
        // an address that is no relay's: the room stays where it is all the same
      }
      const notice =
        elsewhere && elsewhere !== existing.serverUrl
          ? `You have this room already, on the relay at ${new URL(existing.serverUrl).host}: it stays there. ` +
            "To move it, leave it and join it again with the link."
          : null;
      return this.set({ screen: "room", current: existing.roomId, joinText: "", joinServer: null, error: null, notice });
    }
    let serverUrl;
    try {
      serverUrl = this.joinServerFor(parsed);
    } catch (error) {
      return this.set({ error: error.message });
    }
    const store = this.store;
    let room;
    try {
      room = store.addRoom({
        key: parsed.key,
        asTyped: false, // checked as it was entered (parseJoinText): a link's may be in one case
        label: "",
        nickname: name,
        expiresAtMs: 0,
        nowMs: Date.now(),
        keepHistory: false,
      });
    } catch (error) {
      return this.set({ error: error.message });
    }
    room.serverUrl = serverUrl;
    // The label is this device's own name for the room; the key does not carry one.
    room.label = `Room ${room.roomId.slice(0, 4)}`;
    store.data.nickname = name;
    const saved = await this.save();
    if (this.store !== store) {
      // Kept, so that the Join screen shows it again after unlocking.
      if (!saved) Object.assign(this.state, { joinText: text, joinServer: serverUrl });
      return this._lockedWhileAdding(room, saved, "join it again");
    }
    if (!saved) return this._notSavedWhileAdding(room, "joined");
    this._connectRoom(room);
    this.set({ screen: "room", current: room.roomId, joinText: "", joinServer: null, error: null });
  }

  /**
   * The relay a parsed invite (parseInvite) is joined on: the link's own; for a bare key,
   * the relay of the invite link that brought it, else the one in Settings. Throws an
   * Error a person can read for a relay address that is not one.
   */
  joinServerFor({ server, key }) {
    if (server) return normalizeServerUrl(server);
    const { joinText, joinServer } = this.state;
    if (joinServer && this._inviteKey(joinText) === key) return normalizeServerUrl(joinServer);
    return this.store.data.serverUrl;
  }

  /**
   * `text` from the Join screen as parseInvite reads it. The key an invite link (or its QR
   * code) put there, unchanged (joinText, of joinServer's link), is read by a link's rules
   * (PROTOCOL.md 3.5 step 7, 3.7): copied or scanned, not typed, it may be the key of a
   * room made before keys in one case were refused. A key typed is checked as typed.
   */
  parseJoinText(text) {
    const { joinText, joinServer } = this.state;
    const fromLink = joinServer !== null && text === joinText && !text.includes("#");
    if (!fromLink && !text.includes("#") && text.includes("/")) {
      // A link that lost its #KEY (an app that cuts it off): read as a key, it was "a room
      // key has 30 characters; this one has 50", a puzzle. As the terminal client says it.
      // Unless a key is there among other words ("Key: S… The app: https://relay/").
      const found = findInvite(text);
      if (found !== null) return found;
      throw new UsageError(
        "This link holds no room key: an invite link ends with # and the key, and that part was cut off " +
          "on the way. Ask for the whole link, or the key itself.",
      );
    }
    // An empty address: a link's key on no relay (the relay is joinServerFor's to choose).
    if (fromLink) return parseInvite(`#${text.replace(LEADING_SPACE, "")}`);
    try {
      return parseInvite(text);
    } catch (error) {
      // What a friend sent, pasted whole ("Join me: https://…/#KEY see you", "Key: S…"):
      // its one link, or labelled key, that passes the key's check; else what is wrong.
      const found = findInvite(text);
      if (found === null) throw error;
      return found;
    }
  }

  /** A scanned QR code's invite link, of `server`, put `text` (its key) on the Join screen:
   * read as the key of the link it came in (parseJoinText). */
  scannedInvite(text, server) {
    Object.assign(this.state, { joinText: text, joinServer: server });
  }

  _inviteKey(text) {
    try {
      return this.parseJoinText(text).key;
    } catch {
      return null;
    }
  }

  /** The tab locked while a new room was being saved (another tab wrote the store first). */
  _lockedWhileAdding(room, saved, retry) {
    const error = saved
      ? `“${room.label}” was saved, but this tab locked: unlock to open it.`
      : `“${room.label}” was not saved: this tab locked, as another tab changed the key store. Unlock, then ${retry}.`;
    this.set({ error });
  }

  /**
   * A new room's save failed for another reason than another tab (a full disk: a
   * QuotaExceededError). Nothing is half done: the room is taken out again, and the
   * screen stays, with its form and the error, so that the person can try again.
   */
  _notSavedWhileAdding(room, done) {
    this.store.removeRoom(room.roomId);
    const why = this.state.error ?? "Could not save.";
    this.set({ error: `${why} “${room.label}” was not ${done}: nothing was kept. Try again.` });
  }

  async renameRoom(id, label) {
    const room = this.room(id);
    if (!room || !label.trim()) return;
    room.label = label.trim();
    await this.save();
    this.changed();
  }

  async forgetRoom(id) {
    const room = this.room(id);
    if (!room) return;
    this.connections.get(room.serverUrl)?.leave(fromHex(id));
    const store = this.store;
    store.removeRoom(id);
    this.live.delete(id);
    await this.save();
    if (this.store !== store) return; // locked meanwhile: the Unlock screen stays
    this.set({ screen: "rooms", current: null, notice: `Left and forgot “${room.label}”.` });
  }

  async setKeepHistory(id, keep) {
    this.store.setKeepHistory(id, keep);
    const live = this.liveRoom(id);
    if (keep) for (const message of live.messages) this.store.addMessage(id, this._storable(message));
    await this.save();
    this.changed();
  }

  async deleteMessage(id, messageId) {
    const live = this.liveRoom(id);
    // Remembered for the replay window, kept or not: a relay cannot bring it back.
    for (const message of live.messages) {
      if (message.id === messageId) this.store.recordDeleted(id, message.id, message.timestampMs);
    }
    live.messages = live.messages.filter((m) => m.id !== messageId);
    this.store.deleteMessage(id, messageId);
    await this.save();
    this.changed();
  }

  async clearHistory(id) {
    const live = this.liveRoom(id);
    for (const message of live.messages) this.store.recordDeleted(id, message.id, message.timestampMs);
    live.messages = [];
    this.store.clearHistory(id);
    await this.save();
    this.changed();
  }

  async sendText(id, text) {
    const body = text.trim();
    const room = this.room(id);
    if (!body || !room) return false;
    const store = this.store;
    let connection;
    let message;
    try {
      // In the try: a relay address the connection refuses is said, as any failure.
      connection = this.connectionFor(room.serverUrl);
      message = await connection.sendText(fromHex(id), body);
    } catch (error) {
      this.set({ error: error.message });
      return false;
    }
    if (this.state.error !== null) this.set({ error: null }); // a send's error, said before
    if (this.store !== store) return false; // locked meanwhile: the closed connection drops it
    // Its id, kept history or not, for the replay filter after a reload or an unlock (see
    // _seedReplayFilter); saved below, with the rest. (Unless the room was forgotten meanwhile.)
    if (store.room(id)) store.recordRecent(id, hex(message.messageId), message.timestampMs);
    // Kept until the relay takes it, kept history or not, so that a lock or a reload before
    // then does not lose it: the sealed envelope only, ciphertext under the room key.
    const waiting = connection.outboxOf(fromHex(id)).find((o) => hex(o.messageId) === hex(message.messageId));
    if (waiting) store.addOutgoing(id, { id: hex(waiting.messageId), timestampMs: waiting.timestampMs, envelope: waiting.envelope });
    const entry = {
      id: hex(message.messageId),
      senderName: message.senderName,
      fingerprint: this.myFingerprint(),
      text: body,
      timestampMs: message.timestampMs,
      mine: true,
      keyChanged: false,
      status: "sending",
    };
    this._append(id, entry, { saving: () => {} });
    this.save(); // the person's own action: now
    return true;
  }

  _storable(message) {
    const { status, ...stored } = message;
    return { ...stored, sent: status === "sent" };
  }

  /** Show `entry` in room `id`, and keep it if the room keeps history; `saving` writes
   * the store (an arrival: throttled, saveSoon). */
  _append(id, entry, { saving = () => this.saveSoon() } = {}) {
    if (this.liveRoom(id).messages.some((m) => m.id === entry.id)) return;
    if (this.room(id)?.keepHistory) {
      this.store.addMessage(id, this._storable(entry));
      saving();
    }
    this._show(id, entry);
  }

  /** Show `entry` in room `id` (once: false if it shows already), in time order (PROTOCOL.md
   * 10.4: a backlog whose sender was refused for the rate comes partly out of order), and
   * draw. */
  _show(id, entry, { soon = false } = {}) {
    const live = this.liveRoom(id);
    if (live.messages.some((m) => m.id === entry.id)) return false;
    placeByTime(live.messages, entry);
    if (soon) this.changedSoon();
    else this.changed();
    return true;
  }

  // Connection events

  _onJoined({ roomId, members, expiresAtMs }) {
    const id = hex(roomId);
    const room = this.room(id);
    if (!room) return;
    const live = this.liveRoom(id);
    live.members = members;
    live.error = null;
    live.refused = false;
    if (expiresAtMs && expiresAtMs !== room.expiresAtMs) {
      room.expiresAtMs = expiresAtMs;
      this.save();
    }
    this.changedSoon();
  }

  /** A message dropped as dated ahead of this clock (PROTOCOL.md 7): said in its room, as
   * a clock set wrong, the sender's or this one's, is its likely cause. Others: dropped
   * without a word, as the protocol asks. */
  _onRejected({ roomId, aheadMs }) {
    const id = hex(roomId);
    if (!aheadMs || !this.room(id)) return;
    const said =
      `A message dated ${howFar(aheadMs)} ahead of this device's clock was dropped: its sender's clock ` +
      "is probably fast, or this one slow. Ask them to set it to the right time.";
    const live = this.liveRoom(id);
    live.droppedAheadAt = Date.now();
    if (live.droppedAhead === said) return; // a flood of them draws nothing more
    live.droppedAhead = said;
    this.changed();
  }

  /** A room's word of messages dropped as dated ahead goes DROPPED_AHEAD_SHOWN_MS after the
   * last one: a clock set right since has nothing more to say. */
  _forgetDroppedAhead() {
    const before = Date.now() - DROPPED_AHEAD_SHOWN_MS;
    let forgotten = false;
    for (const live of this.live.values()) {
      if (live.droppedAhead !== null && live.droppedAheadAt <= before) {
        live.droppedAhead = null;
        forgotten = true;
      }
    }
    if (forgotten) this.changed();
  }

  _onPresence({ roomId, members }) {
    const id = hex(roomId);
    if (!this.room(id)) return;
    const live = this.liveRoom(id);
    if (live.members === members) return; // the same count: nothing to draw
    live.members = members;
    this.changedSoon();
  }

  /** Who else is in the room, by their own word (PROTOCOL.md 5.7): shown beside the count.
   * Names are untrusted text, shown as the senders' of messages are. */
  _onMembers({ roomId, members }) {
    const id = hex(roomId);
    if (!this.room(id)) return;
    this.liveRoom(id).roster = members.map((member) => ({
      id: hex(member.deviceKey),
      name: member.name,
      fingerprint: member.fingerprint,
      keyChanged: Boolean(member.keyChanged),
    }));
    this.changedSoon();
  }

  _onMessage({ roomId, message, text, fingerprint: senderFingerprint, keyChanged }) {
    const id = hex(roomId);
    if (!this.room(id) || message.kind !== 1) return;
    const entry = {
      id: hex(message.messageId),
      senderName: message.senderName,
      fingerprint: senderFingerprint,
      text,
      timestampMs: message.timestampMs,
      mine: false,
      keyChanged: Boolean(keyChanged),
      status: "sent",
    };
    // Its id, kept history or not, for the replay filter after a reload or an unlock (see
    // _seedReplayFilter), and the message if the room keeps history; one throttled save
    // for both, never one each.
    const store = this.store;
    const recorded = store.recordRecent(id, entry.id, entry.timestampMs);
    const kept = this.room(id).keepHistory ? store.addMessage(id, this._storable(entry)) !== null : false;
    // Shown once written beside the record (the journal), a few ms on, in the order they
    // came: the save waits its turn (saveSoon), and the page may be reloaded or closed a
    // moment after it shows. What shows is kept.
    const recent = { id: entry.id, timestampMs: entry.timestampMs };
    const written = recorded || kept ? store.journal(id, { recent, message: kept ? this._storable(entry) : null }) : null;
    // A database that never answers holds nothing back for long.
    const waited = written && Promise.race([written, new Promise((resolve) => setTimeout(resolve, JOURNAL_WAIT_MS))]);
    this._shown = Promise.all([this._shown, waited])
      .then(() => {
        // Locked, wiped or forgotten meanwhile, or deleted ("Delete all messages") before
        // it showed: nothing to show.
        if (this.store !== store || store.locked || !this.room(id)) return;
        if (this.room(id).deleted?.some((d) => d.id === entry.id)) return;
        // Unread until seen: _show's changed() clears it for the room on screen.
        const live = this.liveRoom(id);
        if (!live.messages.some((m) => m.id === entry.id)) live.unread += 1;
        this._show(id, entry, { soon: true }); // an arrival: drawn with the others of this frame
      })
      .catch((error) => this.set({ error: `Could not show a message: ${error?.message ?? error}` }));
    if (recorded || kept) this.saveSoon();
  }

  _onAccepted({ roomId, messageId }) {
    const id = hex(roomId);
    if (!this.store) return;
    let save = this.store.removeOutgoing(id, hex(messageId));
    const live = this.live.get(id);
    const entry = live?.messages.find((m) => m.id === hex(messageId));
    if (entry) {
      entry.status = "sent";
      if (this.room(id)?.keepHistory && this.store.markSent(id, entry.id)) save = true;
      this.changedSoon();
    }
    if (save) this.saveSoon();
  }

  /**
   * The session gave one of ours up: the relay had not taken it within 55 minutes, and
   * the others would refuse it as too old, or the relay refused its room for good
   * (PROTOCOL.md 10.6). It shows as not sent. Kept
   * history already says so: a message is kept as not sent until its ACK (markSent), and
   * none comes now. It leaves the stored outbox.
   */
  _onNotSent({ roomId, messageId }) {
    const id = hex(roomId);
    if (this.store?.removeOutgoing(id, hex(messageId))) this.saveSoon();
    const entry = this.live.get(id)?.messages.find((m) => m.id === hex(messageId));
    if (entry && entry.status !== "unsent") {
      entry.status = "unsent";
      this.changed();
    }
  }

  _onRefused({ roomId, code, ref, reason, fatal }) {
    if (!roomId) return;
    const says = relaySays(reason);
    if (fatal) {
      this._roomRefused(hex(roomId), new Error(`The relay refused this room.${says}`), { forGood: true });
    } else if (!ref && (code === ErrorCode.ROOM_FULL || code === ErrorCode.RELAY_FULL)) {
      // The room and what waits for it stay; the JOIN goes again, and JOINED clears this.
      const every = Math.round(RETRY_AFTER_FULL_MS / 1000);
      this._roomRefused(hex(roomId), new Error(`The relay has no place for you now.${says} Trying again every ${every} seconds.`));
    }
  }

  async _onExpired(id) {
    const room = this.room(id);
    if (!room) return;
    const store = this.store;
    store.removeRoom(id);
    this.live.delete(id);
    await this.save();
    if (this.store !== store) return; // locked meanwhile: the Unlock screen stays
    const leaving = this.state.current === id;
    this.set({
      notice: `“${room.label}” expired and was deleted from this device.`,
      ...(leaving ? { screen: "rooms", current: null } : {}),
    });
  }

  _checkExpiry() {
    if (!this.store) return;
    this._forgetDroppedAhead();
    const removed = this.store.purgeExpired(this.expiryNow());
    if (!removed.length) return;
    for (const room of removed) {
      this.connections.get(room.serverUrl)?.leave(fromHex(room.roomId));
      this.live.delete(room.roomId);
    }
    this.save();
    const leaving = removed.some((room) => room.roomId === this.state.current);
    this.set({ notice: expiredNotice(removed), ...(leaving ? { screen: "rooms", current: null } : {}) });
  }

  // Settings

  async saveSettings({ serverUrl, idleLockMinutes }) {
    let url;
    try {
      url = normalizeServerUrl(serverUrl);
    } catch (error) {
      return this.set({ error: error.message });
    }
    this.store.data.serverUrl = url;
    this.store.data.idleLockMinutes = idleLockMinutes;
    await this.save();
    this.set({ error: null, notice: "Settings saved. New rooms and bare keys use this relay." });
  }

  async changePassword(oldPassword, newPassword, confirmation) {
    if (newPassword.length < MIN_PASSWORD_LENGTH) {
      return this.set({ error: `Choose a password of at least ${MIN_PASSWORD_LENGTH} characters.` });
    }
    if (newPassword !== confirmation) return this.set({ error: "The two new passwords differ." });
    this.set({ busy: true, error: null });
    const store = this.store;
    try {
      await this._saving;
      if (this.store !== store) return; // locked meanwhile: lock() said why
      await store.changePassword(oldPassword, newPassword);
    } catch (error) {
      if (error instanceof StoreChanged) return this.lock(error.message);
      const message = error instanceof WrongPassword ? "Wrong password. Nothing was changed." : error.message;
      return this.set({ busy: false, error: message });
    }
    this.tabs?.postMessage("password-changed");
    this.set({ busy: false, notice: "Password changed." });
  }

  async wipe() {
    this._cancelSaveSoon(); // nothing is written after the wipe
    this._stopTimers();
    for (const connection of this.connections.values()) connection.close();
    this.connections.clear();
    try {
      await this.store.wipe();
    } catch (error) {
      // The store locked all the same: say so, and let the other tabs have it.
      this.lock(`The key store could not be deleted: ${error.message}`);
      return;
    }
    this.tabs?.postMessage("wiped");
    this.store = null;
    this._letGoOfTabLock();
    this.live.clear();
    this.set({
      screen: "unlock",
      firstVisit: true,
      current: null,
      joinText: "",
      notice: "Everything was deleted from this device.",
    });
  }

  inviteLink(id) {
    const room = this.room(id);
    const server = room.serverUrl.replace(/^ws(s?):/, "http$1:");
    return formatInvite(server, room.key);
  }

  go(screen, current = this.state.current) {
    this.set({ screen, current, error: null, notice: null });
  }
}

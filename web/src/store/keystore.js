// The web client's key store: this install's device key, its rooms (keys, labels, expiry)
// and the history kept for them, as one vault (vault.js) in IndexedDB (db.js).
//
//   { version: 1, deviceSeed: hex (32 bytes), journalKey: hex (32 bytes),
//     oldJournalKeys: [ hex (32 bytes) ], nickname: "", serverUrl: null,
//     idleLockMinutes: 5,
//     rooms: [ { key, roomId: hex, label, nickname, createdAtMs, expiresAtMs,
//                keepHistory, messages: [ { id: hex, senderName, fingerprint, text,
//                                           timestampMs, mine, keyChanged, sent } ],
//                deleted: [ { id: hex, timestampMs } ],
//                recent: [ { id: hex, timestampMs } ], recentFloorMs,
//                outbox: [ { id: hex, timestampMs, envelope: base64 } ] } ] }
//
// `outbox` holds the room's messages the relay has not acknowledged yet, as the sealed
// envelopes that went out (ciphertext under the room key, which the store holds anyway),
// oldest first, at most MAX_OUTBOX (the session's own bound): written when a message is
// sent, kept history or not, removed when the relay takes it or the session gives it up.
// After an unlock or a reload the app hands them back to the session (ClientSession
// restore), which resends them byte for byte; receivers drop any they had by id.
//
// `deleted` holds the messages deleted within the replay window (PROTOCOL.md 7: one hour,
// plus five minutes of clock skew), ids and times only, pruned on every save: the app
// seeds the session's replay filter with them, so that a relay cannot bring a deleted
// message back after a reload or an unlock.
//
// `recent` holds the text messages this device received or sent in the room within the
// same window, ids and times only (never text, name or sender), kept history or not,
// pruned and bounded like `deleted`: the app seeds the replay filter with them too, so that
// a relay cannot show again, after a reload or an unlock, a message of a room that keeps
// no history (or one its kept history dropped past MAX_MESSAGES_PER_ROOM).
//
// `recentFloorMs` is the newest timestamp among the `recent` entries dropped because more
// than MAX_RECENT_PER_ROOM were within the window (0: none ever was; never lowered; those
// dropped only for their age need none, the freshness check refuses them): the app seeds
// it as the replay filter's floor (PROTOCOL.md 7), so that nothing stamped at or before it,
// a message whose id was dropped included, is accepted after a reload or an unlock.
//
// `journalKey` seals the journal (KeyStore.journal): entries written beside the record as
// messages come, until the save that holds them. A password change makes a new one, so that
// whoever knew the old password and gets hold of an old record (left on the disk, or in a
// backup) reads none of the entries sealed after the change. The old one goes to
// `oldJournalKeys` (the last OLD_JOURNAL_KEYS_KEPT), sealed under the new password only:
// it opens the entries written under it (during the change, or by a tab still unlocked
// from before it, which may go on sealing under it for as long as it stays open), never
// seals one. Keeping it costs nothing: whoever could read it knows the new password, and
// an old record holds it anyway. Every write takes both fields from #journalKeyHex and
// #oldJournalKeysHex as they are when it runs, not from the contents it was given.
//
// Change `data` or use the helpers, then `save()`. A wrong password or a damaged record
// throws and writes nothing; the password itself is not kept, only the derived,
// non-extractable key.

import { base64 } from "@scure/base";

import { fromHex, hex } from "../protocol/bytes.js";
import { UsageError } from "../protocol/errors.js";
import { deviceKeyFromSeed, fingerprint as fingerprintOf, roomKeysFromMinikey } from "../protocol/kdf.js";
import { parseMinikey } from "../protocol/minikey.js";
import { MAX_OUTBOX } from "../protocol/session.js";
import { addJournalEntry, addRecord, deleteRecord, readRecord, readRecordAndJournal, replaceRecord } from "./db.js";
import {
  DamagedStore,
  KeyStoreError,
  WrongPassword,
  checkPassword,
  createVault,
  importJournalKey,
  openJournalEntry,
  openVault,
  reopenVault,
  sealJournalEntry,
  sealVault,
} from "./vault.js";

export { DamagedStore, KeyStoreError, WrongPassword };

export const CONTENTS_VERSION = 1;
export const DEVICE_SEED_SIZE = 32;
export const MAX_MESSAGES_PER_ROOM = 1000;
export const DEFAULT_IDLE_LOCK_MINUTES = 5;
// Journal keys of past password changes the record keeps (oldJournalKeys): a tab unlocked
// before a change may seal under its key for as long as it stays open.
export const OLD_JOURNAL_KEYS_KEPT = 8;
/** How long a deleted message's id is kept: the replay window and its clock skew. */
export const DELETED_KEPT_MS = 60 * 60 * 1000 + 5 * 60 * 1000;
export const MAX_DELETED_PER_ROOM = 10_000;
/** How long a received or sent message's id is kept (`recent`): the same window. */
export const RECENT_KEPT_MS = DELETED_KEPT_MS;
export const MAX_RECENT_PER_ROOM = 10_000;
/** How far ahead a message may be stamped (PROTOCOL.md 7): a floor further ahead is a clock's mistake. */
export const RECENT_FUTURE_MS = 5 * 60 * 1000;

/** There is a key store here already (create refuses to replace one, even a damaged one). */
export class StoreExists extends KeyStoreError {}

/** There is no key store here to unlock. */
export class NoStore extends KeyStoreError {}

/** The store was locked (or wiped): unlock it again. */
export class StoreLocked extends KeyStoreError {}

/** No stored room has this room id. */
export class NoSuchRoom extends KeyStoreError {}

/** The stored record is no longer the one this store last read or wrote: another tab
 * saved, changed the password or wiped it. Nothing was written; unlock again. */
export class StoreChanged extends KeyStoreError {}

/** The room is stored already. */
export class RoomExists extends KeyStoreError {}

/**
 * @typedef {object} StoredMessage
 * @property {string} id the message id, hex
 * @property {string} senderName
 * @property {string} fingerprint the sender's device key fingerprint
 * @property {string} text
 * @property {number} timestampMs
 * @property {boolean} mine
 * @property {boolean} keyChanged the sender's name came with a new device key
 * @property {boolean} sent the relay took it (false: one of ours it had not acknowledged)
 */

/**
 * @typedef {object} StoredRoom
 * @property {string} key the 30-character minikey, normalized
 * @property {string} roomId hex
 * @property {string} label
 * @property {string} nickname the name used in this room ("": the store's nickname)
 * @property {number} createdAtMs
 * @property {number} expiresAtMs 0 while unknown
 * @property {boolean} keepHistory
 * @property {StoredMessage[]} messages oldest first
 * @property {{id: string, timestampMs: number}[]} deleted messages deleted within
 *   DELETED_KEPT_MS, at most MAX_DELETED_PER_ROOM
 * @property {{id: string, timestampMs: number}[]} recent text messages received or sent
 *   within RECENT_KEPT_MS (ids and times only), at most MAX_RECENT_PER_ROOM
 * @property {number} recentFloorMs the newest timestamp among the `recent` entries dropped
 *   for MAX_RECENT_PER_ROOM (not for their age), 0 if none: the replay filter's floor
 * @property {{id: string, timestampMs: number, envelope: string}[]} outbox sealed messages
 *   the relay has not acknowledged (envelope: base64), oldest first, at most MAX_OUTBOX
 */

/**
 * @typedef {object} StoreOptions
 * @property {IDBFactory} [indexedDB] see db.js
 * @property {number} [insecureTestIterations] FOR TESTS ONLY: see vault.js
 */

const HEX_SEED = /^[0-9a-f]{64}$/;
const HEX_MESSAGE_ID = /^[0-9a-f]{32}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const constructing = Symbol("KeyStore.construct");

function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isTime(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

function damagedInside(detail) {
  return new DamagedStore(`The key store is damaged inside: ${detail}. It was left as it is.`);
}

function text(value, fallback = "") {
  return typeof value === "string" ? value : fallback;
}

// Loading: the contents were authenticated, so a problem here is a bug or a newer format.
// Missing optional fields take their defaults; unknown fields are kept, so that saving
// from an older build does not drop what a newer one wrote.

function loadMessage(raw) {
  if (!isPlainObject(raw) || typeof raw.id !== "string" || !HEX_MESSAGE_ID.test(raw.id)) {
    throw damagedInside("a stored message has no valid id");
  }
  return {
    ...raw,
    senderName: text(raw.senderName),
    fingerprint: text(raw.fingerprint),
    text: text(raw.text),
    timestampMs: isTime(raw.timestampMs) ? raw.timestampMs : 0,
    mine: raw.mine === true,
    keyChanged: raw.keyChanged === true,
    sent: raw.sent !== false, // stored before this field: shown as they were, sent
  };
}

function loadDeleted(raw) {
  if (!isPlainObject(raw) || typeof raw.id !== "string" || !HEX_MESSAGE_ID.test(raw.id) || !isTime(raw.timestampMs)) {
    throw damagedInside("a deleted message's record is not valid");
  }
  return { ...raw, id: raw.id, timestampMs: raw.timestampMs };
}

function loadRecent(raw) {
  if (!isPlainObject(raw) || typeof raw.id !== "string" || !HEX_MESSAGE_ID.test(raw.id) || !isTime(raw.timestampMs)) {
    throw damagedInside("a recent message's record is not valid");
  }
  return { ...raw, id: raw.id, timestampMs: raw.timestampMs };
}

function loadOutgoing(raw) {
  if (
    !isPlainObject(raw) ||
    typeof raw.id !== "string" ||
    !HEX_MESSAGE_ID.test(raw.id) ||
    !isTime(raw.timestampMs) ||
    typeof raw.envelope !== "string" ||
    !BASE64.test(raw.envelope)
  ) {
    throw damagedInside("a message waiting to be sent is not valid");
  }
  return { ...raw, id: raw.id, timestampMs: raw.timestampMs, envelope: raw.envelope };
}

function loadRoom(raw) {
  if (!isPlainObject(raw) || typeof raw.key !== "string") {
    throw damagedInside("a stored room has no key");
  }
  let key;
  try {
    key = parseMinikey(raw.key, { asTyped: false });
  } catch {
    throw damagedInside("a stored room key is not valid");
  }
  if (raw.messages !== undefined && !Array.isArray(raw.messages)) {
    throw damagedInside("a room's history is not a list");
  }
  if (raw.deleted !== undefined && !Array.isArray(raw.deleted)) {
    throw damagedInside("a room's deleted messages are not a list");
  }
  if (raw.recent !== undefined && !Array.isArray(raw.recent)) {
    throw damagedInside("a room's recent messages are not a list");
  }
  if (raw.outbox !== undefined && !Array.isArray(raw.outbox)) {
    throw damagedInside("a room's messages waiting to be sent are not a list");
  }
  if (raw.recentFloorMs !== undefined && !isTime(raw.recentFloorMs)) {
    throw damagedInside("a room's recent messages' floor is not a valid time");
  }
  return {
    ...raw,
    key,
    roomId: hex(roomKeysFromMinikey(key).roomId), // derived, never trusted from the store
    label: text(raw.label),
    nickname: text(raw.nickname),
    createdAtMs: isTime(raw.createdAtMs) ? raw.createdAtMs : 0,
    expiresAtMs: isTime(raw.expiresAtMs) ? raw.expiresAtMs : 0,
    keepHistory: raw.keepHistory !== false,
    messages: (raw.messages ?? []).map(loadMessage),
    deleted: (raw.deleted ?? []).map(loadDeleted), // stored before this field: none
    recent: (raw.recent ?? []).map(loadRecent), // stored before this field: none
    recentFloorMs: raw.recentFloorMs ?? 0, // stored before this field: none dropped
    outbox: (raw.outbox ?? []).map(loadOutgoing), // stored before this field: none
  };
}

function loadContents(raw) {
  if (!isPlainObject(raw)) throw damagedInside("it is not a key store's contents");
  if (raw.version !== CONTENTS_VERSION) {
    throw new DamagedStore(
      "The key store's contents are of a version this client cannot read (a newer one, " +
        "perhaps). It was left as it is.",
    );
  }
  if (typeof raw.deviceSeed !== "string" || !HEX_SEED.test(raw.deviceSeed)) {
    throw damagedInside("the device key is missing");
  }
  if (!Array.isArray(raw.rooms)) throw damagedInside("the room list is missing");
  return {
    ...raw,
    // A store from before the journal gets its key here; it is saved at unlock.
    journalKey: typeof raw.journalKey === "string" && HEX_SEED.test(raw.journalKey) ? raw.journalKey : newJournalKey(),
    // Only ever opens entries: one not well formed would open none, and is left out.
    oldJournalKeys: Array.isArray(raw.oldJournalKeys)
      ? raw.oldJournalKeys.filter((key) => typeof key === "string" && HEX_SEED.test(key))
      : [],
    nickname: text(raw.nickname),
    serverUrl: typeof raw.serverUrl === "string" ? raw.serverUrl : null,
    idleLockMinutes:
      typeof raw.idleLockMinutes === "number" && raw.idleLockMinutes > 0
        ? raw.idleLockMinutes
        : DEFAULT_IDLE_LOCK_MINUTES,
    rooms: raw.rooms.map(loadRoom),
  };
}

/** The entries of `list` stamped at `sinceMs` or later, oldest first, at most the newest `max`. */
function newestWithin(list, sinceMs, max) {
  const kept = list.filter((entry) => entry.timestampMs >= sinceMs);
  kept.sort((a, b) => a.timestampMs - b.timestampMs);
  return kept.slice(-max);
}

/**
 * Prune the room's `recent` as `newestWithin` does (RECENT_KEPT_MS before `nowMs`,
 * MAX_RECENT_PER_ROOM), raising its `recentFloorMs` to the newest timestamp among the
 * entries dropped for the cap; those dropped for their age raise nothing.
 */
function pruneRecent(room, nowMs) {
  const within = room.recent.filter((entry) => entry.timestampMs >= nowMs - RECENT_KEPT_MS);
  within.sort((a, b) => a.timestampMs - b.timestampMs);
  const over = within.length - MAX_RECENT_PER_ROOM;
  if (over > 0) {
    room.recentFloorMs = Math.max(room.recentFloorMs ?? 0, within[over - 1].timestampMs);
    within.splice(0, over);
  }
  room.recent = within;
  pruneFloor(room, nowMs);
}

/**
 * Forget a floor that no longer matters (older than the window: the freshness check refuses
 * all it covers) or that a clock set back left ahead of the present (past what a message
 * may be stamped ahead, RECENT_FUTURE_MS).
 */
function pruneFloor(room, nowMs) {
  const floor = room.recentFloorMs;
  if (!Number.isSafeInteger(floor) || floor <= 0) return; // none (or damage, refused on load)
  if (floor < nowMs - RECENT_KEPT_MS || floor > nowMs + RECENT_FUTURE_MS) room.recentFloorMs = 0;
}

/** 32 random bytes, in hex: the key of a store's journal (KeyStore.journal). */
function newJournalKey() {
  return hex(crypto.getRandomValues(new Uint8Array(32)));
}

function freshContents() {
  const seed = crypto.getRandomValues(new Uint8Array(DEVICE_SEED_SIZE));
  return {
    version: CONTENTS_VERSION,
    deviceSeed: hex(seed),
    journalKey: newJournalKey(),
    oldJournalKeys: [],
    nickname: "",
    serverUrl: null,
    idleLockMinutes: DEFAULT_IDLE_LOCK_MINUTES,
    rooms: [],
  };
}

function roomIdFrom(roomIdHex) {
  if (typeof roomIdHex !== "string") throw new UsageError("A room id is a hex string.");
  return roomIdHex.toLowerCase();
}

function checkTime(value, what) {
  if (!isTime(value)) throw new UsageError(`${what} must be a whole number of milliseconds.`);
  return value;
}

function messageFrom(message) {
  if (!isPlainObject(message)) throw new UsageError("A message is an object.");
  const id = typeof message.id === "string" ? message.id.toLowerCase() : "";
  if (!HEX_MESSAGE_ID.test(id)) throw new UsageError("A message id is 16 bytes, in hex.");
  for (const field of ["senderName", "fingerprint", "text"]) {
    if (typeof message[field] !== "string") throw new UsageError(`A message's ${field} is a string.`);
  }
  // Only the model's fields are stored: nothing else the caller had on the object.
  return {
    id,
    senderName: message.senderName,
    fingerprint: message.fingerprint,
    text: message.text,
    timestampMs: checkTime(message.timestampMs, "A message's timestampMs"),
    mine: message.mine === true,
    keyChanged: message.keyChanged === true,
    sent: message.sent !== false,
  };
}

export class KeyStore {
  /** @type {any} the unlocked contents; null once locked */
  #data;
  /** @type {CryptoKey | null} */
  #key;
  /** @type {object | null} the record last written, whose salt and parameters save() keeps */
  #record;
  /** @type {StoreOptions} */
  #options;
  /** @type {Uint8Array | null} */
  #publicKey = null;
  // Saves, password changes and the wipe run one after another, in the order asked for,
  // so an older save can never land after a newer one.
  #writes = Promise.resolve();
  // The save asked for but not started yet, which later saves join: a burst of saves (a
  // room flooding a kept history) costs one write in flight and one more, never one each.
  /** @type {{snapshot: any, journal: Array<any> | null, writing: Array<Promise<any>> | null, done: Promise<void>} | null} */
  #pendingSave = null;
  // The journal's entries this store holds in its contents (taken in at unlock, or written
  // by journal()), by their keys as JSON: the next save that holds them deletes them.
  /** @type {Map<string, Array<number | string>>} */
  #journaled = new Map();
  // journal() writes under way: a save waits for them, and deletes the entries it holds.
  /** @type {Set<Promise<Array<number | string> | null>>} */
  #journaling = new Set();
  #journalCount = 0;
  /** @type {CryptoKey | null} the journal's key, from the contents (journalKey) */
  #journalKey = null;
  // The keys the journal was sealed under before a password change (oldJournalKeys), kept
  // until the store locks: they open the entries written under them, never seal one.
  /** @type {CryptoKey[]} */
  #oldJournalKeys = [];
  // The journal keys every write puts in the contents it seals (journalKey, oldJournalKeys),
  // hex, as they are when the write runs: never a copy of the contents taken before (a
  // save frozen by lock() or queued before a password change lands after it, and must not
  // bring back the key it retired, nor drop the one it made).
  /** @type {string | null} */
  #journalKeyHex = null;
  /** @type {string[]} */
  #oldJournalKeysHex = [];
  // The contents got their journal key at this unlock (a store from before the journal)
  // and no save holds it yet.
  #journalKeyUnsaved = false;

  /** Use KeyStore.create or KeyStore.unlock. */
  constructor(token, record, key, data, options) {
    if (token !== constructing) throw new UsageError("Use KeyStore.create or KeyStore.unlock.");
    this.#record = record;
    this.#key = key;
    this.#data = data;
    this.#options = options;
  }

  /**
   * Whether a key store (readable or not) is stored.
   * @param {StoreOptions} [options]
   */
  static async exists(options = {}) {
    return (await readRecord(options)) !== null;
  }

  /**
   * A new store with a fresh device key, written at once. Refuses to replace any stored
   * record (StoreExists): wipe it first.
   * @param {string} password
   * @param {StoreOptions} [options]
   * @returns {Promise<KeyStore>}
   */
  static async create(password, options = {}) {
    checkPassword(password);
    if (await KeyStore.exists(options)) {
      throw new StoreExists("There is a key store in this browser already.");
    }
    const data = freshContents();
    const { record, key } = await createVault(password, data, options);
    // Checked again in the writing transaction: another tab may have created one meanwhile.
    if (!(await addRecord(record, options))) {
      throw new StoreExists("There is a key store in this browser already.");
    }
    const store = new KeyStore(constructing, record, key, data, options);
    await store.#openJournal(data, []);
    return store;
  }

  /**
   * The stored key store, unlocked. NoStore if there is none, WrongPassword or
   * DamagedStore if it does not open; the stored record is never written here.
   * @param {string} password
   * @param {StoreOptions} [options]
   * @returns {Promise<KeyStore>}
   */
  static async unlock(password, options = {}) {
    checkPassword(password);
    const { record, journal } = await readRecordAndJournal(options);
    if (record === null) throw new NoStore("There is no key store in this browser.");
    const { contents, key } = await openVault(record, password, options);
    const store = new KeyStore(constructing, record, key, loadContents(contents), options);
    await store.#openJournal(contents, journal);
    return store;
  }

  /**
   * Read the stored record again and open it with this store's key, in place of the
   * contents read at unlock: for a tab that unlocked while the tab unlocked before it
   * still wrote its last save. Call it before changing anything. Nothing is written.
   * Resolves to whether the contents changed; NoStore if the record was deleted meanwhile,
   * StoreChanged if the password was changed (a new salt: ask for the password again).
   */
  async reload() {
    if (this.locked) throw new StoreLocked("The key store is locked.");
    if (this.#pendingSave) throw new UsageError("reload() comes before any change and save().");
    await this.#writes;
    const { record, journal } = await readRecordAndJournal(this.#options);
    if (record === null) throw new NoStore("There is no key store in this browser any more.");
    if (this.locked) return false;
    if (record.nonce === this.#record?.nonce) {
      await this.#takeInJournal(journal); // what another tab wrote since the unlock read
      return false;
    }
    const contents = await reopenVault(record, this.#key);
    if (contents === null) {
      throw new StoreChanged("The password was changed in another tab: unlock with the new one.");
    }
    const data = loadContents(contents);
    if (this.locked) return false; // locked meanwhile: nothing comes back
    this.#record = record;
    this.#data = data;
    this.#publicKey = null;
    this.#journaled.clear();
    await this.#openJournal(contents, journal);
    return true;
  }

  /** Whether the contents hold journal entries, or a change of their journal keys, that no
   * save holds yet: save() soon. */
  get journalWaiting() {
    return this.#journaled.size > 0 || this.#journalKeyUnsaved;
  }

  /** Take up the journal's keys from the contents (`raw`: as read, before loadContents),
   * and take in `journal`. The old keys (oldJournalKeys) open what it holds, and what
   * reload() reads: a tab unlocked before a password change may still seal under them. */
  async #openJournal(raw, journal) {
    const data = this.#data;
    const old = data.oldJournalKeys;
    const journalKey = await importJournalKey(fromHex(data.journalKey));
    const oldKeys = await Promise.all(old.map((key) => importJournalKey(fromHex(key))));
    if (this.locked) return; // locked meanwhile (reload()): nothing to keep
    this.#journalKey = journalKey;
    this.#journalKeyHex = data.journalKey;
    this.#oldJournalKeysHex = [...old];
    this.#oldJournalKeys.push(...oldKeys);
    this.#journalKeyUnsaved = raw.journalKey !== data.journalKey;
    await this.#takeInJournal(journal);
  }

  /** What `sealed` holds, opened with the journal's key or an old one; null if none opens it. */
  async #openEntry(sealed) {
    for (const key of [this.#journalKey, ...this.#oldJournalKeys]) {
      const entry = await openJournalEntry(key, sealed);
      if (entry !== null) return entry;
    }
    return null;
  }

  /**
   * Write at once, beside the record, what just came into a room: a message's id and
   * time (`recent`), and the message itself when the room keeps history (`message`, as
   * addMessage takes it), both already in the contents. The saves that hold arrivals wait
   * (the app throttles them), and a reload or a closed tab a moment after one came would
   * lose it; the next unlock takes the journal in, and the first save that holds an entry
   * deletes it. Never rejects: an entry not written leaves the save to keep it.
   * @param {string} roomIdHex
   * @param {{recent: {id: string, timestampMs: number}, message?: StoredMessage | null}} entry
   * @returns {Promise<void>}
   */
  journal(roomIdHex, entry) {
    const writing = this.#writeJournal(roomIdHex, entry);
    this.#journaling.add(writing);
    return writing.then(() => {
      this.#journaling.delete(writing);
    });
  }

  /** Seal and add one entry; its key once written, else null. */
  async #writeJournal(roomIdHex, { recent, message = null }) {
    if (this.locked) return null;
    // In the order they came, so taken in: messages of the same ms keep their order. Taken
    // before sealing, as seals may finish out of order.
    const order = [Date.now(), this.#journalCount++, hex(crypto.getRandomValues(new Uint8Array(8)))];
    try {
      const sealed = await sealJournalEntry(this.#journalKey, { roomId: roomIdHex, recent, message });
      const key = await addJournalEntry(order, sealed, this.#options);
      // Locked meanwhile: the lock's save holds it, and the next unlock deletes it.
      if (!this.locked) this.#journaled.set(JSON.stringify(key), key);
      return key;
    } catch {
      // Locked meanwhile (no key), or the database refused: the throttled save keeps it.
      return null;
    }
  }

  /** Take in the journal's entries (see journal()) not held yet: those that open with its
   * key and belong to a stored room; every entry read goes with the next save, opened or
   * not (another store's, after a wipe). */
  async #takeInJournal(journal) {
    for (const [key, sealed] of journal) {
      if (this.locked) return;
      if (this.#journaled.has(JSON.stringify(key))) continue;
      this.#journaled.set(JSON.stringify(key), key);
      const entry = await this.#openEntry(sealed);
      if (entry === null || this.locked) continue;
      const room = typeof entry.roomId === "string" ? this.room(entry.roomId) : null;
      if (room === null) continue; // forgotten since, or not one of ours
      const id = typeof entry.recent?.id === "string" ? entry.recent.id.toLowerCase() : "";
      try {
        this.recordRecent(entry.roomId, id, entry.recent?.timestampMs);
        // Not into a history turned off since, nor a message deleted since.
        if (entry.message && room.keepHistory && !room.deleted?.some((d) => d.id === id)) {
          if (entry.message.id?.toLowerCase() === id) this.addMessage(entry.roomId, entry.message);
        }
      } catch {
        // Malformed: an entry of ours always is well formed; take nothing from it.
      }
    }
  }

  /**
   * Delete the stored record without unlocking it (a forgotten password).
   * @param {StoreOptions} [options]
   */
  static async wipe(options = {}) {
    await deleteRecord(options);
  }

  /** The contents, to read and change (then save()). Throws StoreLocked once locked. */
  get data() {
    if (this.#data === null) throw new StoreLocked("The key store is locked.");
    return this.#data;
  }

  get locked() {
    return this.#data === null;
  }

  /**
   * Forget deletions older than DELETED_KEPT_MS, and all but the newest
   * MAX_DELETED_PER_ROOM; the same for the recent messages (RECENT_KEPT_MS,
   * MAX_RECENT_PER_ROOM), whose floor rises to the newest of those dropped for the cap.
   */
  #pruneWindows(nowMs = Date.now()) {
    for (const room of this.#data?.rooms ?? []) {
      if (room.deleted?.length) room.deleted = newestWithin(room.deleted, nowMs - DELETED_KEPT_MS, MAX_DELETED_PER_ROOM);
      if (room.recent?.length) pruneRecent(room, nowMs);
      else pruneFloor(room, nowMs);
    }
  }

  #enqueue(write) {
    const done = this.#writes.then(write);
    this.#writes = done.catch(() => {}); // one failed write does not stop the next
    return done;
  }

  async #replace(record, journal = []) {
    if (!(await replaceRecord(this.#record, record, this.#options, journal))) {
      throw new StoreChanged("The key store was changed in another tab: unlock it again.");
    }
    this.#record = record;
    for (const key of journal) this.#journaled.delete(JSON.stringify(key));
    this.#journalKeyUnsaved = false;
  }

  /** `snapshot` of the contents, with the journal keys as they are now (see #journalKeyHex). */
  #withJournalKeys(snapshot) {
    return { ...snapshot, journalKey: this.#journalKeyHex, oldJournalKeys: [...this.#oldJournalKeysHex] };
  }

  /** The journal's entries the contents hold now: those a save of them may delete. */
  #journalHeld() {
    return [...this.#journaled.values()];
  }

  /** `snapshot` of the contents with the journal's entries it holds: those written, and
   * those being written (for what came before it), for #heldBy once they are. */
  #frozen(snapshot) {
    return { snapshot, journal: this.#journalHeld(), writing: [...this.#journaling] };
  }

  /** The keys of the entries `frozen` holds, once those being written are. */
  async #heldBy({ journal, writing }) {
    return [...journal, ...(await Promise.all(writing)).filter(Boolean)];
  }

  /**
   * Seal the contents under a fresh nonce and store them, atomically. Resolves once a
   * write that holds every change made before this call has landed: the contents are read
   * when the write starts, and a save asked for while another waits to start joins it.
   */
  async save() {
    if (this.locked) throw new StoreLocked("The key store is locked.");
    if (this.#pendingSave) return this.#pendingSave.done;
    const pending = { snapshot: null, journal: null, writing: null, done: null };
    pending.done = this.#enqueue(async () => {
      if (this.#pendingSave === pending) this.#pendingSave = null;
      // Locked with no snapshot taken: there is nothing to write (never null contents).
      if (!pending.snapshot && this.#data === null) return;
      if (!pending.snapshot) this.#pruneWindows();
      const snapshot = pending.snapshot ?? structuredClone(this.#data);
      // The journal's entries for what the snapshot holds go with it: those written, and
      // those being written now (for what came before it), once they are.
      const journal = await this.#heldBy({
        journal: pending.journal ?? this.#journalHeld(),
        writing: pending.writing ?? [...this.#journaling],
      });
      const record = await sealVault(this.#record, this.#key, this.#withJournalKeys(snapshot));
      await this.#replace(record, journal);
    });
    this.#pendingSave = pending;
    return pending.done;
  }

  /**
   * Check `oldPassword`, then store the contents as they are now under `newPassword`
   * with a fresh salt, and a new journal key: the old password's records (one left on the
   * disk, or in a backup) open none of the entries sealed after the change. The old key
   * goes to oldJournalKeys (the last OLD_JOURNAL_KEYS_KEPT), for the entries written under
   * it (here meanwhile, or by a tab unlocked before it, for as long as that stays open). A
   * wrong old password throws WrongPassword and writes nothing.
   * @param {string} oldPassword
   * @param {string} newPassword
   */
  async changePassword(oldPassword, newPassword) {
    checkPassword(oldPassword);
    checkPassword(newPassword);
    this.#pruneWindows();
    const snapshot = structuredClone(this.data);
    const frozen = this.#frozen(snapshot);
    // A save asked for after this must land after it, not join one queued before it; the
    // one queued before it writes the contents as they are now, as a lock would have it.
    if (this.#pendingSave) Object.assign(this.#pendingSave, frozen);
    this.#pendingSave = null;
    return this.#enqueue(async () => {
      await openVault(this.#record, oldPassword, this.#options);
      // The keys as they are now, not as at the call: a change queued behind another keeps
      // the key that one made.
      const journalKey = newJournalKey();
      const oldJournalKeys = [...this.#oldJournalKeysHex, this.#journalKeyHex].slice(
        -OLD_JOURNAL_KEYS_KEPT,
      );
      const newKey = await importJournalKey(fromHex(journalKey));
      const contents = { ...snapshot, journalKey, oldJournalKeys };
      const { record, key } = await createVault(newPassword, contents, this.#options);
      await this.#replace(record, await this.#heldBy(frozen));
      this.#key = key;
      // Entries are sealed under the new key from now on, and every write after this one
      // (a save frozen before it too) holds it; those sealed under the old one until now
      // open with it, here and in the record.
      this.#oldJournalKeys.push(this.#journalKey);
      this.#journalKey = newKey;
      this.#journalKeyHex = journalKey;
      this.#oldJournalKeysHex = oldJournalKeys;
      if (this.#data !== null) Object.assign(this.#data, { journalKey, oldJournalKeys: [...oldJournalKeys] });
    });
  }

  /**
   * Drop the contents and, once the writes already asked for are done, the key: every
   * later use throws StoreLocked. (JavaScript cannot zero strings; dropping the last
   * reference is what there is.) The promise returned resolves once those writes, and the
   * journal's under way, are done, landed or failed (never rejects).
   * @returns {Promise<void>}
   */
  lock() {
    // A save asked for but not started yet still writes the contents as they are now.
    if (this.#pendingSave) {
      this.#pruneWindows();
      Object.assign(this.#pendingSave, this.#frozen(structuredClone(this.#data)));
    }
    this.#pendingSave = null;
    this.#data = null;
    this.#publicKey = null;
    // The journal's writes under way land first (they never reject): the tab that unlocks
    // next waits for this (the tab lock) and reads them, with the keys they open with.
    const writing = [...this.#journaling];
    this.#writes = this.#writes
      .then(() => Promise.all(writing))
      .then(() => {
        this.#key = null;
        this.#record = null;
        this.#journalKey = null;
        this.#oldJournalKeys = [];
        this.#journalKeyHex = null;
        this.#oldJournalKeysHex = [];
      });
    return this.#writes;
  }

  /** Delete the stored record (after any pending save) and lock. */
  async wipe() {
    if (this.locked) throw new StoreLocked("The key store is locked: use KeyStore.wipe.");
    const writing = [...this.#journaling]; // entries still being written go too
    const done = this.#enqueue(async () => {
      await Promise.all(writing);
      await deleteRecord(this.#options); // its journal too
    });
    this.lock();
    return done;
  }

  // rooms

  /**
   * Add a room (then save()). RoomExists if its key is stored already. The key is checked
   * as typed (PROTOCOL.md 3.5) unless `asTyped` is false: a key checked already by the
   * rules of where it came from (an invite link's may be in one case, 3.7).
   * @param {{key: string, asTyped?: boolean, label?: string, nickname?: string,
   *   expiresAtMs?: number, nowMs?: number, keepHistory?: boolean}} room
   * @returns {StoredRoom}
   */
  addRoom({ key, asTyped = true, label = "", nickname = "", expiresAtMs = 0, nowMs = Date.now(), keepHistory = true }) {
    const data = this.data;
    if (typeof key !== "string" || typeof label !== "string" || typeof nickname !== "string") {
      throw new UsageError("A room's key, label and nickname are strings.");
    }
    const normalized = parseMinikey(key, { asTyped: asTyped !== false }); // throws a MiniKeyError naming the mistake
    const roomId = hex(roomKeysFromMinikey(normalized).roomId);
    if (data.rooms.some((room) => room.roomId === roomId)) {
      throw new RoomExists("This room is stored already.");
    }
    const room = {
      key: normalized,
      roomId,
      label,
      nickname,
      createdAtMs: checkTime(nowMs, "nowMs"),
      expiresAtMs: checkTime(expiresAtMs, "expiresAtMs"),
      keepHistory: keepHistory !== false,
      messages: [],
      deleted: [],
      recent: [],
      recentFloorMs: 0,
      outbox: [],
    };
    data.rooms.push(room);
    return room;
  }

  /** The stored room with this id (hex), or null. */
  room(roomIdHex) {
    const roomId = roomIdFrom(roomIdHex);
    return this.data.rooms.find((room) => room.roomId === roomId) ?? null;
  }

  #existingRoom(roomIdHex) {
    const room = this.room(roomIdHex);
    if (room === null) throw new NoSuchRoom("No stored room has this room id.");
    return room;
  }

  /** Remove a room, key and messages (then save()); the removed room, or null. */
  removeRoom(roomIdHex) {
    const room = this.room(roomIdHex);
    if (room !== null) this.data.rooms = this.data.rooms.filter((r) => r !== room);
    return room;
  }

  /**
   * Keep `message` in the room's history (then save()), in time order, dropping the
   * oldest beyond MAX_MESSAGES_PER_ROOM. Returns the stored message, or null when nothing
   * was stored: history is off, the id is stored already, or it is older than them all.
   * @param {string} roomIdHex
   * @param {StoredMessage} message
   * @returns {StoredMessage | null}
   */
  addMessage(roomIdHex, message) {
    const room = this.#existingRoom(roomIdHex);
    const stored = messageFrom(message);
    if (!room.keepHistory) return null;
    if (room.messages.some((m) => m.id === stored.id)) return null;
    let at = room.messages.length; // messages mostly arrive in order: search from the end
    while (at > 0 && room.messages[at - 1].timestampMs > stored.timestampMs) at--;
    room.messages.splice(at, 0, stored);
    if (room.messages.length > MAX_MESSAGES_PER_ROOM) {
      room.messages.splice(0, room.messages.length - MAX_MESSAGES_PER_ROOM);
    }
    return room.messages.includes(stored) ? stored : null;
  }

  /** Mark one of the room's kept messages as taken by the relay (then save()); whether it changed. */
  markSent(roomIdHex, id) {
    const room = this.#existingRoom(roomIdHex);
    const messageId = typeof id === "string" ? id.toLowerCase() : "";
    const message = room.messages.find((m) => m.id === messageId);
    if (!message || message.sent) return false;
    message.sent = true;
    return true;
  }

  /**
   * Delete one message from the room's history (then save()); whether it was there. Its
   * id is remembered as deleted (see recordDeleted).
   */
  deleteMessage(roomIdHex, id) {
    const room = this.#existingRoom(roomIdHex);
    const messageId = typeof id === "string" ? id.toLowerCase() : "";
    const gone = room.messages.filter((m) => m.id === messageId);
    room.messages = room.messages.filter((m) => m.id !== messageId);
    for (const message of gone) this.recordDeleted(roomIdHex, message.id, message.timestampMs);
    return gone.length > 0;
  }

  /** Delete the room's whole history (then save()), remembering the ids as deleted; how
   * many messages went. */
  clearHistory(roomIdHex) {
    const room = this.#existingRoom(roomIdHex);
    const gone = room.messages;
    room.messages = [];
    for (const message of gone) this.recordDeleted(roomIdHex, message.id, message.timestampMs);
    return gone.length;
  }

  /**
   * Remember that the person deleted a message (then save()), kept or not: its id and
   * timestamp stay for DELETED_KEPT_MS, so that the app can tell a restarted session to
   * drop it if a relay sends it again. Whether it was recorded (not known already).
   * @param {string} roomIdHex
   * @param {string} id the message id, hex
   * @param {number} timestampMs the message's timestamp
   */
  recordDeleted(roomIdHex, id, timestampMs) {
    return this.#recordId(roomIdHex, "deleted", id, timestampMs) !== null;
  }

  /**
   * Remember that this device received or sent a text message in the room (then save()),
   * kept history or not: its id and timestamp stay for RECENT_KEPT_MS, never its text,
   * name or sender, so that the app can tell a restarted session to drop it if a relay
   * sends it again. Whether it was recorded (not known already).
   * @param {string} roomIdHex
   * @param {string} id the message id, hex
   * @param {number} timestampMs the message's timestamp
   */
  recordRecent(roomIdHex, id, timestampMs) {
    const room = this.#recordId(roomIdHex, "recent", id, timestampMs);
    if (room === null) return false;
    // Saves prune it; while they fail (a full disk), a flood still cannot grow it for ever.
    if (room.recent.length >= 2 * MAX_RECENT_PER_ROOM) pruneRecent(room, Date.now());
    return true;
  }

  /** Add {id, timestampMs} to the room's list `field` (deleted, recent): the room, or null
   * when the id was there already. */
  #recordId(roomIdHex, field, id, timestampMs) {
    const room = this.#existingRoom(roomIdHex);
    const messageId = typeof id === "string" ? id.toLowerCase() : "";
    if (!HEX_MESSAGE_ID.test(messageId)) throw new UsageError("A message id is 16 bytes, in hex.");
    checkTime(timestampMs, "A message's timestampMs");
    room[field] ??= [];
    if (room[field].some((known) => known.id === messageId)) return null;
    room[field].push({ id: messageId, timestampMs });
    return room;
  }

  // the outbox: sealed messages the relay has not acknowledged

  /**
   * Keep a sealed message the relay has not acknowledged yet (then save()), kept history
   * or not: the envelope is ciphertext under the room key. In timestamp order; whether it
   * was stored (false: stored already, or MAX_OUTBOX wait, which the session never lets
   * happen).
   * @param {string} roomIdHex
   * @param {{id: string, timestampMs: number, envelope: Uint8Array}} outgoing id: hex
   * @returns {boolean}
   */
  addOutgoing(roomIdHex, { id, timestampMs, envelope }) {
    const room = this.#existingRoom(roomIdHex);
    const messageId = typeof id === "string" ? id.toLowerCase() : "";
    if (!HEX_MESSAGE_ID.test(messageId)) throw new UsageError("A message id is 16 bytes, in hex.");
    checkTime(timestampMs, "A message's timestampMs");
    if (!(envelope instanceof Uint8Array) || envelope.length === 0) throw new UsageError("An envelope is a Uint8Array.");
    room.outbox ??= [];
    if (room.outbox.some((o) => o.id === messageId) || room.outbox.length >= MAX_OUTBOX) return false;
    let at = room.outbox.length;
    while (at > 0 && room.outbox[at - 1].timestampMs > timestampMs) at--;
    room.outbox.splice(at, 0, { id: messageId, timestampMs, envelope: base64.encode(envelope) });
    return true;
  }

  /** Forget a message of the outbox (then save()): the relay took it, or it was given up.
   * Whether it was there. */
  removeOutgoing(roomIdHex, id) {
    const room = this.room(roomIdHex);
    const messageId = typeof id === "string" ? id.toLowerCase() : "";
    if (room === null || !room.outbox?.some((o) => o.id === messageId)) return false;
    room.outbox = room.outbox.filter((o) => o.id !== messageId);
    return true;
  }

  /**
   * The room's sealed messages the relay has not acknowledged, oldest first, to hand back
   * to the session (ClientSession restore).
   * @param {string} roomIdHex
   * @returns {{id: string, timestampMs: number, envelope: Uint8Array}[]}
   */
  outgoing(roomIdHex) {
    const room = this.#existingRoom(roomIdHex);
    return (room.outbox ?? []).map((o) => ({ id: o.id, timestampMs: o.timestampMs, envelope: base64.decode(o.envelope) }));
  }

  /** Turn history on or off for a room (then save()); off deletes what was kept. */
  setKeepHistory(roomIdHex, keepHistory) {
    if (typeof keepHistory !== "boolean") throw new UsageError("keepHistory is true or false.");
    const room = this.#existingRoom(roomIdHex);
    room.keepHistory = keepHistory;
    if (!keepHistory) room.messages = [];
  }

  /**
   * Remove the rooms whose time is over, keys and messages with them (then save()). A room
   * whose expiry is not known (0) is kept.
   * @param {number} [nowMs]
   * @returns {StoredRoom[]} the rooms removed
   */
  purgeExpired(nowMs = Date.now()) {
    checkTime(nowMs, "nowMs");
    const data = this.data;
    const expired = (room) => room.expiresAtMs > 0 && room.expiresAtMs <= nowMs;
    const removed = data.rooms.filter(expired);
    if (removed.length > 0) data.rooms = data.rooms.filter((room) => !expired(room));
    return removed;
  }

  // this install's device key

  /** @returns {{seed: Uint8Array, publicKey: Uint8Array}} */
  deviceKey() {
    const seed = fromHex(this.data.deviceSeed);
    this.#publicKey ??= deviceKeyFromSeed(seed).publicKey;
    return { seed, publicKey: this.#publicKey.slice() };
  }

  /** The device key's fingerprint, as members see it: "VGAJ-ZAVA-TLKA-YZWD". */
  fingerprint() {
    return fingerprintOf(this.deviceKey().publicKey);
  }
}

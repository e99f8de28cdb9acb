// The key store's record in IndexedDB: database "instantroom", object store "vault",
// key "main"; beside it, its journal: entries under keys ["journal", ...], each written
// as soon as a message comes, and deleted by the save that holds it (keystore.js). A
// thin promise wrapper; every call opens the database, runs one transaction and closes it
// again, so no connection is held open between saves (and none blocks a future version
// upgrade from another tab).

export const DB_NAME = "instantroom";
export const DB_VERSION = 1;
export const STORE_NAME = "vault";
export const RECORD_KEY = "main";

/**
 * @typedef {object} DbOptions
 * @property {IDBFactory} [indexedDB] the factory to use; globalThis.indexedDB by default
 *   (tests pass a fresh fake one per test)
 */

function factoryFrom(options) {
  const factory = options?.indexedDB ?? globalThis.indexedDB;
  if (!factory) throw new Error("IndexedDB is not available here.");
  return factory;
}

function openDatabase(options) {
  return new Promise((resolve, reject) => {
    const request = factoryFrom(options).open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE_NAME)) db.createObjectStore(STORE_NAME);
    };
    request.onsuccess = () => {
      const db = request.result;
      // Another tab wants a newer schema: step aside rather than block it.
      db.onversionchange = () => db.close();
      resolve(db);
    };
    request.onerror = () => reject(request.error);
  });
}

/**
 * Run `work(store)` in one transaction; resolve with the value it returns (a request's
 * result is read once the transaction has completed, so a write is settled by then).
 */
async function transact(mode, options, work, durability = "strict") {
  const db = await openDatabase(options);
  try {
    return await new Promise((resolve, reject) => {
      // "strict": the browser flushes to disk before reporting complete (a key store
      // must not lose a password change to a power cut).
      const tx = db.transaction(STORE_NAME, mode, { durability });
      const outcome = work(tx.objectStore(STORE_NAME));
      tx.oncomplete = () => resolve(typeof outcome === "function" ? outcome() : outcome);
      // A failed request (quota, a disk or read error) says so here, before the abort,
      // while tx.error is still null: the request holds the error.
      tx.onerror = (event) =>
        reject(event?.target?.error ?? tx.error ?? new Error("The key store could not be read or written."));
      tx.onabort = () => reject(tx.error ?? new Error("The key store transaction was aborted."));
    });
  } finally {
    db.close();
  }
}

/**
 * The stored record, or null when there is none.
 * @param {DbOptions} [options]
 * @returns {Promise<object | null>}
 */
export function readRecord(options = {}) {
  return transact("readonly", options, (store) => {
    const request = store.get(RECORD_KEY);
    return () => request.result ?? null;
  });
}

/**
 * Store `record` in place of any previous one, in one readwrite transaction; resolves once
 * it has completed.
 * @param {object} record
 * @param {DbOptions} [options]
 * @returns {Promise<void>}
 */
export function writeRecord(record, options = {}) {
  return transact("readwrite", options, (store) => {
    store.put(record, RECORD_KEY);
  });
}

/**
 * Store `record` in place of `expected`, only if the stored record is still `expected`
 * (same nonce: every save has a fresh one); false, writing nothing, if another tab
 * replaced or deleted it meanwhile. One transaction: nothing can slip in between.
 */
export function replaceRecord(expected, record, options = {}, journalKeys = []) {
  return transact("readwrite", options, (store) => {
    let written = false;
    const current = store.get(RECORD_KEY);
    current.onsuccess = () => {
      if (current.result?.nonce === expected.nonce) {
        store.put(record, RECORD_KEY);
        // The journal entries `record` holds go with it: never one without the other.
        for (const key of journalKeys) store.delete(key);
        written = true;
      }
    };
    return () => written;
  });
}

const isJournalKey = (key) => Array.isArray(key) && key[0] === "journal";

/**
 * Add a journal entry under ["journal", ...`order`]: entries are read in key order, so
 * `order` says which came first (then a random part, so that none is written over).
 * "relaxed": it must outlive the page, which a reload or a closed tab ends a moment later,
 * not a power cut (the saves are "strict").
 * @param {Array<number | string>} order
 * @param {unknown} value
 * @param {DbOptions} [options]
 * @returns {Promise<Array<number | string>>} the entry's key
 */
export function addJournalEntry(order, value, options = {}) {
  const key = ["journal", ...order];
  return transact("readwrite", options, (store) => {
    store.add(value, key);
    return key;
  }, "relaxed");
}

/**
 * The stored record (null when there is none) and its journal's entries, as [key, value]
 * pairs in key order, read in one transaction.
 * @param {DbOptions} [options]
 * @returns {Promise<{record: object | null, journal: Array<[Array<string>, unknown]>}>}
 */
export function readRecordAndJournal(options = {}) {
  return transact("readonly", options, (store) => {
    const journal = [];
    const record = store.get(RECORD_KEY);
    const keys = store.getAllKeys();
    keys.onsuccess = () => {
      for (const key of keys.result.filter(isJournalKey)) {
        const value = store.get(key);
        value.onsuccess = () => journal.push([key, value.result]);
      }
    };
    return () => ({ record: record.result ?? null, journal });
  });
}

/**
 * Store `record` only if there is none yet, checked and written in one transaction (two
 * tabs creating a store at once cannot overwrite each other). Resolves true if written.
 * @param {object} record
 * @param {DbOptions} [options]
 * @returns {Promise<boolean>}
 */
export function addRecord(record, options = {}) {
  return transact("readwrite", options, (store) => {
    let written = false;
    const count = store.count(RECORD_KEY);
    count.onsuccess = () => {
      if (count.result === 0) {
        store.put(record, RECORD_KEY);
        written = true;
      }
    };
    return () => written;
  });
}

/**
 * Delete the stored record, if any, and its journal.
 * @param {DbOptions} [options]
 * @returns {Promise<void>}
 */
export function deleteRecord(options = {}) {
  return transact("readwrite", options, (store) => {
    store.clear(); // the record and its journal: all the object store holds
  });
}

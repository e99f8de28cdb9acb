// A vault: JSON contents encrypted under a password, as one JSON-safe record. Pure
// crypto (WebCrypto), no storage: db.js keeps the record, keystore.js gives it meaning.
//
//   { format: "instantroom-web-vault", version: 1,
//     kdf: { name: "PBKDF2", hash: "SHA-256", iterations: 600000, salt: b64url (16) },
//     nonce: b64url (12), ciphertext: b64url (AES-256-GCM, tag included) }
//
// The plaintext is the contents as JSON, padded with spaces to a size bucket (paddedSize).
//
// The key is PBKDF2-SHA256(NFC(password), salt, iterations), non-extractable. The header
// (everything but nonce and ciphertext, as JSON in the order above, no spaces) is the
// associated data, so a header that was edited, say to fewer iterations, does not open. The parameters are stored so that a
// later version can raise them and still open old records.

import { base64urlnopad } from "@scure/base";
import { utf8, utf8Strict } from "../protocol/bytes.js";
import { UsageError } from "../protocol/errors.js";

export const VAULT_FORMAT = "instantroom-web-vault";
export const VAULT_VERSION = 1;
export const KDF_NAME = "PBKDF2";
export const KDF_HASH = "SHA-256";
// OWASP's figure for PBKDF2-HMAC-SHA256 (2023); about half a second in a browser.
export const PBKDF2_ITERATIONS = 600_000;
// Far above any setting this code writes: a record asking for more is not ours, and would
// hang the page for minutes.
export const MAX_ITERATIONS = 10_000_000;
export const SALT_SIZE = 16;
export const NONCE_SIZE = 12;
const TAG_SIZE = 16;
// The contents are padded to at least this many bytes (a device key and a dozen rooms or
// so), so that the record's size does not tell how many rooms it holds, nor how many
// messages came in the last hour (the ids in `recent`): see paddedSize.
export const PADDED_AT_LEAST = 4096;

/** Base of the key store's errors; messages are for people and hold no secret. */
export class KeyStoreError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** Wrong password (or the record was altered): nothing was changed. */
export class WrongPassword extends KeyStoreError {}

/** The record is not a vault this code can read; it was left as it is. */
export class DamagedStore extends KeyStoreError {}

/**
 * @typedef {object} VaultRecord
 * @property {string} format
 * @property {number} version
 * @property {{name: string, hash: string, iterations: number, salt: string}} kdf
 * @property {string} nonce
 * @property {string} ciphertext
 */

/**
 * @typedef {object} VaultOptions
 * @property {number} [insecureTestIterations] FOR TESTS ONLY, to keep a suite fast.
 *   createVault derives with this many PBKDF2 iterations instead of PBKDF2_ITERATIONS;
 *   openVault accepts records with at least this many instead of refusing anything below
 *   PBKDF2_ITERATIONS. Never set by the app: without it, nothing weaker is made or opened.
 */

// The header each key was derived for (as its associated data), so that sealVault cannot
// seal under a key that does not belong to the record's salt and parameters.
const keyHeaders = new WeakMap();

/** Throws UsageError unless `password` is a non-empty string (after NFC). */
export function checkPassword(password) {
  passwordBytes(password);
}

function passwordBytes(password) {
  if (typeof password !== "string") throw new UsageError("The password must be a string.");
  // NFC, so that "é" typed as one character or as e + accent is the same password.
  const normalized = password.normalize("NFC");
  if (normalized.length === 0) {
    throw new UsageError("Choose a password: the key store is never kept unlocked.");
  }
  return utf8.encode(normalized);
}

function testIterations(options) {
  const value = options?.insecureTestIterations;
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_ITERATIONS) {
    throw new UsageError("insecureTestIterations must be a whole number of at least 1.");
  }
  return value;
}

async function deriveKey(password, kdf) {
  const material = await crypto.subtle.importKey("raw", passwordBytes(password), "PBKDF2", false, [
    "deriveKey",
  ]);
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: kdf.hash, salt: decode(kdf.salt), iterations: kdf.iterations },
    material,
    { name: "AES-GCM", length: 256 },
    false, // non-extractable: script can use the key but never read it out
    ["encrypt", "decrypt"],
  );
}

// The associated data: the header as JSON with a fixed key order, built from checked
// fields only, so that what is authenticated is exactly what was written.
function associatedData(header) {
  const { iterations, salt } = header.kdf;
  return JSON.stringify({
    format: VAULT_FORMAT,
    version: VAULT_VERSION,
    kdf: { name: KDF_NAME, hash: KDF_HASH, iterations, salt },
  });
}

function encode(bytes) {
  return base64urlnopad.encode(bytes);
}

function decode(text) {
  return base64urlnopad.decode(text);
}

function randomBytes(length) {
  return crypto.getRandomValues(new Uint8Array(length));
}

function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function damaged(detail) {
  return new DamagedStore(`The key store is damaged: ${detail}. It was left as it is.`);
}

function bytesField(value, what, check) {
  if (typeof value !== "string") throw damaged(`${what} is missing`);
  let bytes;
  try {
    bytes = decode(value);
  } catch {
    throw damaged(`${what} is not base64url`);
  }
  if (!check(bytes.length)) throw damaged(`${what} has the wrong length`);
  return bytes;
}

/** The record's checked parts, or DamagedStore; `minIterations` is the weakest accepted. */
function parseRecord(record, minIterations) {
  if (!isPlainObject(record) || record.format !== VAULT_FORMAT) {
    throw new DamagedStore("The stored data is not an InstantRoom key store. It was left as it is.");
  }
  if (record.version !== VAULT_VERSION) {
    throw new DamagedStore(
      "The key store is of a version this client cannot read (a newer one, perhaps). " +
        "It was left as it is.",
    );
  }
  const kdf = record.kdf;
  if (!isPlainObject(kdf) || kdf.name !== KDF_NAME || kdf.hash !== KDF_HASH) {
    throw damaged("its key settings are not ones this client knows");
  }
  if (!Number.isSafeInteger(kdf.iterations) || kdf.iterations < 1 || kdf.iterations > MAX_ITERATIONS) {
    throw damaged("its iteration count is not a sensible number");
  }
  if (kdf.iterations < minIterations) {
    throw new DamagedStore(
      `The key store asks for ${kdf.iterations} PBKDF2 iterations, fewer than ` +
        `${minIterations}: refusing weak parameters. It was left as it is.`,
    );
  }
  bytesField(kdf.salt, "the salt", (n) => n === SALT_SIZE);
  const nonce = bytesField(record.nonce, "the nonce", (n) => n === NONCE_SIZE);
  const ciphertext = bytesField(record.ciphertext, "the ciphertext", (n) => n >= TAG_SIZE);
  return { aad: associatedData(record), kdf, nonce, ciphertext };
}

/**
 * `length` rounded up by Padmé (Nikitin et al., PETS 2019), to at least PADDED_AT_LEAST:
 * the size then tells O(log log length) bits, for at most 12% more. As the terminal
 * client's key store (keystore.py, _padded_size).
 */
export function paddedSize(length) {
  const atLeast = Math.max(length, PADDED_AT_LEAST);
  const exponent = 31 - Math.clz32(atLeast); // floor(log2), for any length below 2**32
  const step = 2 ** (exponent - (32 - Math.clz32(exponent)));
  return Math.ceil(atLeast / step) * step;
}

// The JSON followed by spaces up to paddedSize: JSON still, so records written before the
// padding open as they were, and these open in a build from before it.
function padded(bytes) {
  const out = new Uint8Array(paddedSize(bytes.length)).fill(0x20);
  out.set(bytes);
  return out;
}

async function encrypt(key, aad, contents) {
  const json = JSON.stringify(contents);
  if (typeof json !== "string") throw new UsageError("The vault's contents must be JSON.");
  const nonce = randomBytes(NONCE_SIZE); // fresh for every save: never reuse one under a key
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: utf8.encode(aad) },
    key,
    padded(utf8.encode(json)),
  );
  return { nonce: encode(nonce), ciphertext: encode(new Uint8Array(ciphertext)) };
}

function recordFrom(header, sealed) {
  const { iterations, salt } = header.kdf;
  return {
    format: VAULT_FORMAT,
    version: VAULT_VERSION,
    kdf: { name: KDF_NAME, hash: KDF_HASH, iterations, salt },
    ...sealed,
  };
}

/**
 * A new vault holding `contents`, under a fresh salt.
 * @param {string} password
 * @param {unknown} contents anything JSON.stringify accepts
 * @param {VaultOptions} [options]
 * @returns {Promise<{record: VaultRecord, key: CryptoKey}>}
 */
export async function createVault(password, contents, options = {}) {
  passwordBytes(password); // refuse an empty password before the slow part
  const header = {
    kdf: {
      iterations: testIterations(options) ?? PBKDF2_ITERATIONS,
      salt: encode(randomBytes(SALT_SIZE)),
    },
  };
  const key = await deriveKey(password, { hash: KDF_HASH, ...header.kdf });
  const aad = associatedData(header);
  keyHeaders.set(key, aad);
  return { record: recordFrom(header, await encrypt(key, aad, contents)), key };
}

/**
 * The contents of `record`, and its key for sealVault. Throws DamagedStore for a record
 * that is not a well-formed vault (or asks for weak parameters), WrongPassword when the
 * password does not open it. Never changes `record`.
 * @param {VaultRecord} record
 * @param {string} password
 * @param {VaultOptions} [options]
 * @returns {Promise<{contents: any, key: CryptoKey}>}
 */
export async function openVault(record, password, options = {}) {
  passwordBytes(password);
  const parsed = parseRecord(record, testIterations(options) ?? PBKDF2_ITERATIONS);
  const key = await deriveKey(password, parsed.kdf);
  const contents = await decrypt(key, parsed);
  keyHeaders.set(key, parsed.aad);
  return { contents, key };
}

/**
 * The contents of `record`, opened with a key that createVault or openVault returned for
 * an earlier record of the same salt and parameters (another tab saved since: same header,
 * same key, no password needed). Null when the header differs (the password was changed
 * since: ask for it again). Throws as openVault does for a record that does not open.
 * @param {VaultRecord} record
 * @param {CryptoKey} key
 * @returns {Promise<any>}
 */
export async function reopenVault(record, key) {
  // The key proves the parameters were accepted when it was derived.
  const parsed = parseRecord(record, 1);
  if (keyHeaders.get(key) !== parsed.aad) return null;
  return decrypt(key, parsed);
}

async function decrypt(key, parsed) {
  let plain;
  try {
    plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: parsed.nonce, additionalData: utf8.encode(parsed.aad) },
      key,
      parsed.ciphertext,
    );
  } catch {
    // A well-formed record that fails to authenticate: wrong password, or altered.
    throw new WrongPassword("Wrong password (or the key store was altered). Nothing was changed.");
  }
  try {
    return JSON.parse(utf8Strict.decode(new Uint8Array(plain)));
  } catch {
    throw damaged("its contents are not JSON");
  }
}

/**
 * `record` with new contents: the same salt and parameters, a fresh nonce. `key` must be
 * the one createVault or openVault returned for this record (or for an earlier seal of it).
 * @param {VaultRecord} record
 * @param {CryptoKey} key
 * @param {unknown} contents
 * @returns {Promise<VaultRecord>}
 */
export async function sealVault(record, key, contents) {
  // The key already proves the parameters were accepted when it was derived.
  const parsed = parseRecord(record, 1);
  if (keyHeaders.get(key) !== parsed.aad) {
    throw new UsageError("This key was not derived for this vault record.");
  }
  return recordFrom(record, await encrypt(key, parsed.aad, contents));
}

// A journal entry's associated data: an entry never opens as anything else.
const JOURNAL_AAD = "instantroom-web-journal v1";

/**
 * The key journal entries are sealed under, from its 32 random bytes (the key store keeps
 * them in its contents, so that a new store reads none of an old one's; a password change
 * makes new ones, and keeps the old for the entries sealed under them: keystore.js).
 * Non-extractable.
 * @param {Uint8Array} bytes
 * @returns {Promise<CryptoKey>}
 */
export function importJournalKey(bytes) {
  return crypto.subtle.importKey("raw", bytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/**
 * `entry` sealed under the journal key, padded as the contents are: {nonce, ciphertext},
 * for the key store's journal (keystore.js).
 * @param {CryptoKey} key from importJournalKey
 * @param {unknown} entry anything JSON.stringify accepts
 * @returns {Promise<{nonce: string, ciphertext: string}>}
 */
export function sealJournalEntry(key, entry) {
  return encrypt(key, JOURNAL_AAD, entry);
}

/**
 * What sealJournalEntry sealed, or null when it does not open with `key` (another store's,
 * malformed or altered).
 * @param {CryptoKey} key
 * @param {unknown} sealed
 * @returns {Promise<any>}
 */
export async function openJournalEntry(key, sealed) {
  if (!isPlainObject(sealed)) return null;
  try {
    const nonce = bytesField(sealed.nonce, "the nonce", (n) => n === NONCE_SIZE);
    const ciphertext = bytesField(sealed.ciphertext, "the ciphertext", (n) => n >= TAG_SIZE);
    return await decrypt(key, { nonce, ciphertext, aad: JOURNAL_AAD });
  } catch {
    return null;
  }
}

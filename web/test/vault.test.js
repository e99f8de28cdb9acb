// The vault: PBKDF2 + AES-256-GCM with the header authenticated. Most tests lower the
// iteration count through the explicit test option to stay fast; the first ones use the
// real 600,000.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { base64urlnopad } from "@scure/base";
import { UsageError } from "../src/protocol/errors.js";
import {
  DamagedStore,
  PADDED_AT_LEAST,
  PBKDF2_ITERATIONS,
  WrongPassword,
  createVault,
  openVault,
  paddedSize,
  sealVault,
} from "../src/store/vault.js";

const FAST = { insecureTestIterations: 1000 };
const contents = { hello: "world", list: [1, 2, 3], nested: { ok: true } };

const withKdf = (record, change) => ({ ...record, kdf: { ...record.kdf, ...change } });

describe("vault with the real PBKDF2 iteration count", () => {
  it("uses 600,000 iterations by default, opens with the password and refuses fewer", async () => {
    assert.equal(PBKDF2_ITERATIONS, 600_000);
    const { record, key } = await createVault("correct horse", contents);
    assert.equal(record.kdf.iterations, 600_000);
    assert.equal(key.extractable, false);

    const opened = await openVault(record, "correct horse");
    assert.deepEqual(opened.contents, contents);
    assert.equal(opened.key.extractable, false);
    await assert.rejects(crypto.subtle.exportKey("raw", opened.key));

    await assert.rejects(openVault(record, "wrong horse"), WrongPassword);
    // Lowered in the header: refused before any key is derived.
    await assert.rejects(
      openVault(withKdf(record, { iterations: 599_999 }), "correct horse"),
      (error) => error instanceof DamagedStore && /refusing weak parameters/.test(error.message),
    );
  });

  it("refuses a record made with the test option unless the option is given again", async () => {
    const { record } = await createVault("pw", contents, FAST);
    assert.equal(record.kdf.iterations, 1000);
    await assert.rejects(openVault(record, "pw"), /refusing weak parameters/);
    assert.deepEqual((await openVault(record, "pw", FAST)).contents, contents);
  });
});

describe("vault records", () => {
  it("has the documented shape, with fresh salt and nonce each time", async () => {
    const a = await createVault("pw", contents, FAST);
    const b = await createVault("pw", contents, FAST);
    assert.deepEqual(Object.keys(a.record), ["format", "version", "kdf", "nonce", "ciphertext"]);
    assert.equal(a.record.format, "instantroom-web-vault");
    assert.equal(a.record.version, 1);
    assert.deepEqual(Object.keys(a.record.kdf), ["name", "hash", "iterations", "salt"]);
    assert.equal(a.record.kdf.name, "PBKDF2");
    assert.equal(a.record.kdf.hash, "SHA-256");
    assert.equal(base64urlnopad.decode(a.record.kdf.salt).length, 16);
    assert.equal(base64urlnopad.decode(a.record.nonce).length, 12);
    assert.notEqual(a.record.kdf.salt, b.record.kdf.salt);
    assert.notEqual(a.record.nonce, b.record.nonce);
    assert.deepEqual(JSON.parse(JSON.stringify(a.record)), a.record); // JSON-safe
  });

  it("authenticates the header as the associated data, as documented", async () => {
    const { record } = await createVault("pw", contents, FAST);
    // Decrypt by hand, from the documented format alone.
    const material = await crypto.subtle.importKey("raw", new TextEncoder().encode("pw"), "PBKDF2", false, ["deriveKey"]);
    const key = await crypto.subtle.deriveKey(
      { name: "PBKDF2", hash: "SHA-256", salt: base64urlnopad.decode(record.kdf.salt), iterations: 1000 },
      material,
      { name: "AES-GCM", length: 256 },
      false,
      ["decrypt"],
    );
    const { nonce, ciphertext, ...header } = record;
    const decrypt = (aad) =>
      crypto.subtle.decrypt(
        { name: "AES-GCM", iv: base64urlnopad.decode(nonce), additionalData: new TextEncoder().encode(aad) },
        key,
        base64urlnopad.decode(ciphertext),
      );
    const plain = await decrypt(JSON.stringify(header));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(plain)), contents);
    await assert.rejects(decrypt(""));
    await assert.rejects(decrypt(JSON.stringify({ ...header, version: 2 })));
  });

  it("normalizes passwords to NFC", async () => {
    const { record } = await createVault("caf\u00e9", contents, FAST);
    assert.deepEqual((await openVault(record, "cafe\u0301", FAST)).contents, contents);
  });

  it("refuses an empty password with a clear error", async () => {
    await assert.rejects(createVault("", contents, FAST), UsageError);
    await assert.rejects(createVault(undefined, contents, FAST), UsageError);
    const { record } = await createVault("pw", contents, FAST);
    await assert.rejects(openVault(record, "", FAST), /Choose a password/);
  });

  it("accepts the test option only as a whole number", async () => {
    await assert.rejects(createVault("pw", contents, { insecureTestIterations: 0 }), UsageError);
    await assert.rejects(createVault("pw", contents, { insecureTestIterations: 1.5 }), UsageError);
  });

  it("opens without changing the record", async () => {
    const { record } = await createVault("pw", contents, FAST);
    const before = JSON.stringify(record);
    await assert.rejects(openVault(record, "nope", FAST), WrongPassword);
    await openVault(record, "pw", FAST);
    assert.equal(JSON.stringify(record), before);
  });
});

/** The key and associated data of a FAST record, derived by hand from the documented format. */
async function handKey(record, password) {
  const material = await crypto.subtle.importKey("raw", new TextEncoder().encode(password), "PBKDF2", false, ["deriveKey"]);
  const key = await crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt: base64urlnopad.decode(record.kdf.salt), iterations: record.kdf.iterations },
    material,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
  const { nonce, ciphertext, ...header } = record;
  return { key, aad: new TextEncoder().encode(JSON.stringify(header)) };
}

const ciphertextSize = (record) => base64urlnopad.decode(record.ciphertext).length;

describe("vault padding (the record's size tells little of its contents)", () => {
  it("gives small contents of any size the same size", async () => {
    const { record, key } = await createVault("pw", { a: 1 }, FAST);
    const sizes = new Set([ciphertextSize(record)]);
    for (const length of [10, 500, 3000, PADDED_AT_LEAST - 200]) {
      sizes.add(ciphertextSize(await sealVault(record, key, { text: "x".repeat(length) })));
    }
    assert.deepEqual([...sizes], [PADDED_AT_LEAST + 16]);
  });

  it("rounds larger contents up by at most 12%, with spaces that are JSON still", async () => {
    const big = { text: "y".repeat(100_000) };
    const json = new TextEncoder().encode(JSON.stringify(big));
    const { record } = await createVault("pw", big, FAST);
    const plainSize = ciphertextSize(record) - 16;
    assert.equal(plainSize, paddedSize(json.length));
    assert.ok(plainSize >= json.length && plainSize <= json.length * 1.12, `${plainSize} for ${json.length}`);
    const { key, aad } = await handKey(record, "pw");
    const plain = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: base64urlnopad.decode(record.nonce), additionalData: aad },
        key,
        base64urlnopad.decode(record.ciphertext),
      ),
    );
    assert.deepEqual(plain.subarray(0, json.length), json);
    assert.ok(plain.subarray(json.length).every((byte) => byte === 0x20));
    assert.deepEqual((await openVault(record, "pw", FAST)).contents, big);
  });

  it("still opens a record written before the padding (the JSON alone)", async () => {
    const { record } = await createVault("pw", {}, FAST);
    const { key, aad } = await handKey(record, "pw");
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const unpadded = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: aad },
      key,
      new TextEncoder().encode(JSON.stringify(contents)),
    );
    const old = {
      ...record,
      nonce: base64urlnopad.encode(nonce),
      ciphertext: base64urlnopad.encode(new Uint8Array(unpadded)),
    };
    assert.deepEqual((await openVault(old, "pw", FAST)).contents, contents);
  });
});

describe("sealVault", () => {
  it("keeps the salt and parameters and uses a fresh nonce", async () => {
    const { record, key } = await createVault("pw", contents, FAST);
    const first = await sealVault(record, key, { n: 1 });
    const second = await sealVault(first, key, { n: 2 });
    assert.deepEqual(first.kdf, record.kdf);
    assert.deepEqual(second.kdf, record.kdf);
    const nonces = new Set([record.nonce, first.nonce, second.nonce]);
    assert.equal(nonces.size, 3);
    assert.deepEqual((await openVault(second, "pw", FAST)).contents, { n: 2 });
  });

  it("works with the key openVault returns", async () => {
    const { record } = await createVault("pw", contents, FAST);
    const { key } = await openVault(record, "pw", FAST);
    const sealed = await sealVault(record, key, { again: true });
    assert.deepEqual((await openVault(sealed, "pw", FAST)).contents, { again: true });
  });

  it("refuses a key derived for another record", async () => {
    const one = await createVault("pw", contents, FAST);
    const other = await createVault("pw", contents, FAST);
    await assert.rejects(sealVault(one.record, other.key, contents), UsageError);
  });

  it("refuses contents that are not JSON", async () => {
    const { record, key } = await createVault("pw", contents, FAST);
    await assert.rejects(sealVault(record, key, undefined), UsageError);
  });
});

describe("altered records", () => {
  it("fails to open when the header was edited", async () => {
    const { record } = await createVault("pw", contents, FAST);
    const otherSalt = base64urlnopad.encode(new Uint8Array(16));
    // Well-formed but not what was sealed: the tag does not verify.
    for (const edited of [
      withKdf(record, { iterations: 1001 }),
      withKdf(record, { iterations: 2_000 }),
      withKdf(record, { salt: otherSalt }),
    ]) {
      await assert.rejects(openVault(edited, "pw", FAST), WrongPassword);
    }
    // Below what the caller accepts: refused outright.
    await assert.rejects(openVault(withKdf(record, { iterations: 999 }), "pw", FAST), DamagedStore);
    // Unknown algorithms, format or version: not a vault this code reads.
    for (const edited of [
      withKdf(record, { hash: "SHA-1" }),
      withKdf(record, { name: "argon2id" }),
      { ...record, version: 2 },
      { ...record, format: "something-else" },
    ]) {
      await assert.rejects(openVault(edited, "pw", FAST), DamagedStore);
    }
  });

  it("fails to open when the ciphertext or nonce was changed", async () => {
    const { record } = await createVault("pw", contents, FAST);
    const bytes = base64urlnopad.decode(record.ciphertext);
    bytes[0] ^= 1;
    const flipped = { ...record, ciphertext: base64urlnopad.encode(bytes) };
    await assert.rejects(openVault(flipped, "pw", FAST), WrongPassword);
    const nonce = base64urlnopad.decode(record.nonce);
    nonce[11] ^= 0x80;
    const renonced = { ...record, nonce: base64urlnopad.encode(nonce) };
    await assert.rejects(openVault(renonced, "pw", FAST), WrongPassword);
  });

  it("calls truncated or garbage records damaged", async () => {
    const { record } = await createVault("pw", contents, FAST);
    const damaged = [
      null,
      undefined,
      "garbage",
      42,
      [],
      {},
      { ...record, ciphertext: record.ciphertext.slice(0, 10) }, // shorter than the tag
      { ...record, ciphertext: "not base64!" },
      { ...record, nonce: record.nonce.slice(0, 8) },
      { ...record, nonce: undefined },
      withKdf(record, { salt: record.kdf.salt.slice(0, 10) }),
      withKdf(record, { iterations: "1000" }),
      withKdf(record, { iterations: 1e12 }),
      { ...record, kdf: null },
      (({ ciphertext, ...rest }) => rest)(record),
    ];
    for (const [index, value] of damaged.entries()) {
      await assert.rejects(openVault(value, "pw", FAST), DamagedStore, `case ${index}`);
    }
  });
});

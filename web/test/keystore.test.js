// The key store in IndexedDB (fake-indexeddb, a fresh factory per test). All tests but
// one lower the PBKDF2 count through the explicit test option to stay fast.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { IDBFactory, IDBObjectStore } from "fake-indexeddb";
import { fromHex, hex } from "../src/protocol/bytes.js";
import { ChecksumMismatch, OneCase, UsageError } from "../src/protocol/errors.js";
import { deviceKeyFromSeed, fingerprint, roomKeysFromMinikey } from "../src/protocol/kdf.js";
import { formatMinikey, makeMinikey } from "../src/protocol/minikey.js";
import { addJournalEntry, readRecord, readRecordAndJournal, writeRecord } from "../src/store/db.js";
import {
  DamagedStore,
  DELETED_KEPT_MS,
  KeyStore,
  MAX_DELETED_PER_ROOM,
  MAX_MESSAGES_PER_ROOM,
  MAX_RECENT_PER_ROOM,
  NoStore,
  NoSuchRoom,
  OLD_JOURNAL_KEYS_KEPT,
  RECENT_KEPT_MS,
  RoomExists,
  StoreChanged,
  StoreExists,
  StoreLocked,
  WrongPassword,
} from "../src/store/keystore.js";
import { PBKDF2_ITERATIONS, importJournalKey, openJournalEntry, openVault } from "../src/store/vault.js";

const PASSWORD = "a long unique password";
const randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));

/** Options for one test: its own empty database, and a fast PBKDF2 count. */
function fresh() {
  return { indexedDB: new IDBFactory(), insecureTestIterations: 1000 };
}

/**
 * Options for one test whose store's writes are counted (each opens the database once),
 * and options to read the same database without counting.
 */
function counted() {
  const indexedDB = new IDBFactory();
  const writes = { count: 0 };
  const counting = {
    open: (...args) => {
      writes.count += 1;
      return indexedDB.open(...args);
    },
  };
  return {
    options: { indexedDB: counting, insecureTestIterations: 1000 },
    reader: { indexedDB, insecureTestIterations: 1000 },
    writes,
  };
}

/** What is stored, decrypted: the check that a deletion really reached the store. */
async function storedContents(options, password = PASSWORD) {
  return (await openVault(await readRecord(options), password, options)).contents;
}

function message(n, extra = {}) {
  return {
    id: hex(randomBytes(16)),
    senderName: "alice",
    fingerprint: "VGAJ-ZAVA-TLKA-YZWD",
    text: `message ${n}`,
    timestampMs: 1_700_000_000_000 + n,
    mine: false,
    keyChanged: false,
    sent: true,
    ...extra,
  };
}

describe("KeyStore: creating and unlocking", () => {
  it("creates and unlocks with the real 600,000 iterations", async () => {
    const options = { indexedDB: new IDBFactory() };
    const store = await KeyStore.create(PASSWORD, options);
    assert.equal((await readRecord(options)).kdf.iterations, PBKDF2_ITERATIONS);
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data, store.data);
  });

  it("starts with the documented model and a fresh device seed", async () => {
    const options = fresh();
    assert.equal(await KeyStore.exists(options), false);
    const store = await KeyStore.create(PASSWORD, options);
    assert.equal(await KeyStore.exists(options), true);
    const { deviceSeed, journalKey, ...rest } = store.data;
    assert.match(deviceSeed, /^[0-9a-f]{64}$/);
    assert.match(journalKey, /^[0-9a-f]{64}$/);
    assert.deepEqual(rest, {
      version: 1,
      oldJournalKeys: [],
      nickname: "",
      serverUrl: null,
      idleLockMinutes: 5,
      rooms: [],
    });
    const other = await KeyStore.create(PASSWORD, fresh());
    assert.notEqual(other.data.deviceSeed, deviceSeed);
    assert.notEqual(other.data.journalKey, journalKey);
  });

  it("round-trips everything through a save", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "Zoë";
    store.data.serverUrl = "https://relay.test/";
    store.data.idleLockMinutes = 15;
    const room = store.addRoom({ key: makeMinikey(randomBytes), label: "team", nickname: "z", expiresAtMs: 9e12, nowMs: 1000 });
    store.addMessage(room.roomId, message(1, { mine: true }));
    store.addMessage(room.roomId, message(2, { keyChanged: true, text: "ünïcødé ✓" }));
    await store.save();
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data, store.data);
    assert.equal(again.data.rooms[0].messages[1].text, "ünïcødé ✓");
  });

  it("keeps a newer build's fields at every level through an unlock and a save", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const now = Date.now();
    store.addMessage(room.roomId, message(1));
    store.recordDeleted(room.roomId, hex(randomBytes(16)), now);
    store.recordRecent(room.roomId, hex(randomBytes(16)), now);
    store.addOutgoing(room.roomId, { id: hex(randomBytes(16)), timestampMs: now, envelope: randomBytes(3) });
    // A newer build adds a field at each level (and this build's fields stay as they are).
    const newer = structuredClone(store.data);
    const levels = (c) => {
      const r = c.rooms[0];
      return [c, r, r.messages[0], r.deleted[0], r.recent[0], r.outbox[0]];
    };
    levels(newer).forEach((level, n) => (level.fromANewerBuild = { n }));
    store.data.rooms = newer.rooms;
    Object.assign(store.data, { fromANewerBuild: newer.fromANewerBuild });
    await store.save();

    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data, newer);
    again.data.nickname = "saved by this build";
    await again.save();
    const stored = await storedContents(options);
    assert.deepEqual(levels(stored).map((level) => level.fromANewerBuild), [0, 1, 2, 3, 4, 5].map((n) => ({ n })));
    assert.deepEqual((await KeyStore.unlock(PASSWORD, options)).data, { ...newer, nickname: "saved by this build" });
  });

  it("refuses to create over an existing record, even a damaged one", async () => {
    const options = fresh();
    await KeyStore.create(PASSWORD, options);
    await assert.rejects(KeyStore.create("other", options), StoreExists);

    const damaged = fresh();
    await writeRecord({ format: "nonsense" }, damaged);
    await assert.rejects(KeyStore.create(PASSWORD, damaged), StoreExists);
    assert.deepEqual(await readRecord(damaged), { format: "nonsense" });
  });

  it("says when there is nothing to unlock", async () => {
    await assert.rejects(KeyStore.unlock(PASSWORD, fresh()), NoStore);
  });

  it("refuses an empty password", async () => {
    await assert.rejects(KeyStore.create("", fresh()), UsageError);
    await assert.rejects(KeyStore.unlock("", fresh()), UsageError);
  });

  it("cannot be constructed directly", () => {
    assert.throws(() => new KeyStore(), UsageError);
  });
});

describe("KeyStore: failures write nothing", () => {
  it("a wrong password throws WrongPassword and leaves the record byte for byte", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "someone";
    await store.save();
    const before = JSON.stringify(await readRecord(options));
    await assert.rejects(KeyStore.unlock("not it", options), WrongPassword);
    assert.equal(JSON.stringify(await readRecord(options)), before);
  });

  it("a garbage or truncated record throws DamagedStore and is left as it is", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const good = await readRecord(options);
    for (const bad of [
      "garbage",
      { ...good, ciphertext: good.ciphertext.slice(0, 12) },
      { ...good, version: 99 },
    ]) {
      await writeRecord(bad, options);
      await assert.rejects(KeyStore.unlock(PASSWORD, options), DamagedStore);
      assert.deepEqual(await readRecord(options), bad);
    }
    assert.ok(store);
  });

  it("an edited iteration count fails to open", async () => {
    const options = fresh();
    await KeyStore.create(PASSWORD, options);
    const good = await readRecord(options);
    await writeRecord({ ...good, kdf: { ...good.kdf, iterations: 1001 } }, options);
    await assert.rejects(KeyStore.unlock(PASSWORD, options), WrongPassword);
    // Without the test option, the store's 1,000 iterations are themselves too weak.
    await writeRecord(good, options);
    await assert.rejects(KeyStore.unlock(PASSWORD, { indexedDB: options.indexedDB }), DamagedStore);
  });
});

/**
 * Run `work` while every put fails as a browser's can (quota, a disk error): as a failed
 * request, whose error event comes before the transaction's abort.
 */
async function withFailingPuts(work) {
  const put = IDBObjectStore.prototype.put;
  // add over the stored record: a ConstraintError on the request, not a thrown one.
  IDBObjectStore.prototype.put = function (...args) {
    return this.add(...args);
  };
  try {
    return await work();
  } finally {
    IDBObjectStore.prototype.put = put;
  }
}

describe("KeyStore: a write the browser refuses", () => {
  it("fails with the browser's error (not null), keeps the record, and the next save lands", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const before = JSON.stringify(await readRecord(options));
    store.data.nickname = "not written yet";
    const error = await withFailingPuts(() => store.save().then(() => null, (e) => e));
    // A null reason left the app's error handlers (error.message) throwing in their turn.
    assert.ok(error instanceof Error, `the save failed with ${error}`);
    assert.equal(error.name, "ConstraintError");
    assert.equal(JSON.stringify(await readRecord(options)), before);
    await store.save();
    assert.equal((await storedContents(options)).nickname, "not written yet");
  });
});

describe("KeyStore: saving", () => {
  it("uses a fresh nonce for every save and keeps the salt", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const records = [await readRecord(options)];
    for (let i = 0; i < 3; i++) {
      await store.save();
      records.push(await readRecord(options));
    }
    assert.equal(new Set(records.map((r) => r.nonce)).size, records.length);
    assert.equal(new Set(records.map((r) => r.ciphertext)).size, records.length);
    assert.equal(new Set(records.map((r) => r.kdf.salt)).size, 1);
  });

  it("writes saves in the order they were asked for", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const saves = [];
    for (let i = 1; i <= 5; i++) {
      store.data.nickname = `name ${i}`;
      saves.push(store.save());
    }
    await Promise.all(saves);
    assert.equal((await storedContents(options)).nickname, "name 5");
  });

  it("merges a burst of saves into at most two writes, each resolving once its change landed", async () => {
    const { options, reader, writes } = counted();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const before = writes.count;
    const saves = [];
    for (let i = 0; i < 50; i++) {
      const added = store.addMessage(room.roomId, message(i));
      const landed = store.save().then(async () => {
        const stored = (await storedContents(reader)).rooms[0].messages;
        assert.ok(stored.some((m) => m.id === added.id), `message ${i} was not stored when its save resolved`);
      });
      saves.push(landed);
      await Promise.resolve(); // the first write starts; the others arrive while it runs
    }
    await Promise.all(saves);
    assert.ok(writes.count - before <= 2, `${writes.count - before} writes for 50 saves`);
    assert.equal((await storedContents(reader)).rooms[0].messages.length, 50);
  });

  it("reads the contents when the write starts, not when the save was asked for", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "asked";
    const saving = store.save();
    store.data.nickname = "changed before the write started";
    await saving;
    assert.equal((await storedContents(options)).nickname, "changed before the write started");
  });

  it("a save asked for after a password change lands after it", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "before";
    const first = store.save();
    const changing = store.changePassword(PASSWORD, "a new long password");
    store.data.nickname = "after";
    const second = store.save();
    await Promise.all([first, changing, second]);
    assert.equal((await storedContents(options, "a new long password")).nickname, "after");
  });

  it("writes a record whose size does not tell how many rooms or recent messages it holds", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const size = async () => (await readRecord(options)).ciphertext.length;
    const empty = await size();
    for (let i = 0; i < 3; i++) {
      const room = store.addRoom({ key: makeMinikey(randomBytes), label: `room ${i}`, keepHistory: false });
      for (let j = 0; j < 10; j++) store.recordRecent(room.roomId, hex(randomBytes(16)), Date.now());
    }
    await store.save();
    assert.equal(await size(), empty);
  });

  it("writes nothing readable: no nickname, key, label, message or seed in the record", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "SecretNickname";
    store.data.serverUrl = "https://secret-relay.test/";
    const key = makeMinikey(randomBytes);
    const room = store.addRoom({ key, label: "SecretLabel", nickname: "RoomNick", expiresAtMs: 0, nowMs: 1 });
    store.addMessage(room.roomId, message(1, { text: "SecretMessageText", senderName: "SecretSender" }));
    await store.save();
    const serialized = JSON.stringify(await readRecord(options));
    for (const secret of [
      "SecretNickname",
      "secret-relay",
      key,
      formatMinikey(key),
      "SecretLabel",
      "RoomNick",
      "SecretMessageText",
      "SecretSender",
      "VGAJ-ZAVA",
      store.data.deviceSeed,
      room.roomId,
      room.messages[0].id,
      PASSWORD,
    ]) {
      assert.ok(!serialized.includes(secret), `${secret} appears in the stored record`);
    }
  });
});

describe("KeyStore: changing the password", () => {
  it("needs the old password, then opens only with the new one", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "kept";
    await store.save();
    const before = await readRecord(options);

    await assert.rejects(store.changePassword("wrong", "new password"), WrongPassword);
    assert.deepEqual(await readRecord(options), before);
    await assert.rejects(store.changePassword(PASSWORD, ""), UsageError);

    await store.changePassword(PASSWORD, "new password");
    const after = await readRecord(options);
    assert.notEqual(after.kdf.salt, before.kdf.salt);
    await assert.rejects(KeyStore.unlock(PASSWORD, options), WrongPassword);
    assert.equal((await KeyStore.unlock("new password", options)).data.nickname, "kept");

    // Later saves go under the new password.
    store.data.nickname = "after";
    await store.save();
    assert.equal((await storedContents(options, "new password")).nickname, "after");
  });
});

describe("KeyStore: locking and wiping", () => {
  it("lock makes the contents and key unreachable", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    store.lock();
    assert.equal(store.locked, true);
    assert.throws(() => store.data, StoreLocked);
    assert.throws(() => store.deviceKey(), StoreLocked);
    assert.throws(() => store.fingerprint(), StoreLocked);
    assert.throws(() => store.addRoom({ key: makeMinikey(randomBytes) }), StoreLocked);
    assert.throws(() => store.purgeExpired(0), StoreLocked);
    await assert.rejects(store.save(), StoreLocked);
    await assert.rejects(store.changePassword(PASSWORD, "x"), StoreLocked);
    await assert.rejects(store.wipe(), StoreLocked);
    // The record stays, for the next unlock (the unsaved room is gone with the lock).
    assert.deepEqual((await KeyStore.unlock(PASSWORD, options)).data.rooms, []);
  });

  it("a save asked for before lock still completes", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "saved";
    const saving = store.save();
    store.lock();
    await saving;
    assert.equal((await storedContents(options)).nickname, "saved");
  });

  it("a save waiting behind a write in flight still lands when the store locks", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.data.nickname = "first";
    const first = store.save();
    await Promise.resolve(); // the first write is in flight
    store.data.nickname = "second";
    const second = store.save();
    store.lock();
    await Promise.all([first, second]);
    assert.equal((await storedContents(options)).nickname, "second");
  });

  it("wipe deletes the record, after any pending save", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const saving = store.save();
    await store.wipe();
    await saving;
    assert.equal(await KeyStore.exists(options), false);
    assert.equal(store.locked, true);
    await assert.rejects(KeyStore.unlock(PASSWORD, options), NoStore);
  });

  it("KeyStore.wipe deletes a store that cannot be opened", async () => {
    const options = fresh();
    await writeRecord("garbage", options);
    await KeyStore.wipe(options);
    assert.equal(await KeyStore.exists(options), false);
  });
});

describe("KeyStore: reading the store again after another tab's last save", () => {
  it("takes what another tab saved since the unlock, with the key it has (no password)", async () => {
    const options = fresh();
    const first = await KeyStore.create(PASSWORD, options);
    const second = await KeyStore.unlock(PASSWORD, options);
    assert.equal(await second.reload(), false); // nothing changed
    first.data.nickname = "saved as the other tab locked";
    await first.save();
    first.lock();
    assert.equal(await second.reload(), true);
    assert.equal(second.data.nickname, "saved as the other tab locked");
    second.data.nickname = "then saved here";
    await second.save(); // replaces the record it read: no StoreChanged
    assert.equal((await storedContents(options)).nickname, "then saved here");
  });

  it("asks for the password again after a password change, and says so after a wipe", async () => {
    const options = fresh();
    await KeyStore.create(PASSWORD, options);
    const changed = await KeyStore.unlock(PASSWORD, options);
    const other = await KeyStore.unlock(PASSWORD, options);
    await other.changePassword(PASSWORD, "another long password");
    await assert.rejects(changed.reload(), StoreChanged);
    const wiped = await KeyStore.unlock("another long password", options);
    await KeyStore.wipe(options);
    await assert.rejects(wiped.reload(), NoStore);
  });

  it("brings nothing back into a store locked meanwhile", async () => {
    const options = fresh();
    const first = await KeyStore.create(PASSWORD, options);
    const second = await KeyStore.unlock(PASSWORD, options);
    await first.save();
    const reading = second.reload();
    second.lock();
    assert.equal(await reading, false);
    assert.equal(second.locked, true);
  });
});

describe("KeyStore: rooms", () => {
  it("still opens a room stored with a key in one case, which typed keys may no longer be", async () => {
    // Passes the check, all small after the S: refused as typed (PROTOCOL.md 3.5), but a
    // room joined before that check existed stays usable, with the rest of the store.
    const oneCase = "S6c56bnxqibjk9mqsye7ykvq7n113c";
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), label: "then", nickname: "z", expiresAtMs: 9e12, nowMs: 1 });
    room.key = oneCase;
    room.roomId = hex(roomKeysFromMinikey(oneCase).roomId);
    await store.save();
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data.rooms.map((r) => r.key), [oneCase]);
    assert.throws(() => store.addRoom({ key: oneCase }), OneCase);
  });

  it("adds a room of a key in one case only when told it was checked by a link's rules", async () => {
    // An invite link's key may be in one case (PROTOCOL.md 3.7); one typed may not.
    const oneCase = "S6C56BNXQJBJK9MQSYE7YKVQ7N112Q";
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    assert.throws(() => store.addRoom({ key: oneCase }), OneCase);
    const room = store.addRoom({ key: formatMinikey(oneCase), asTyped: false, label: "linked" });
    assert.equal(room.key, oneCase);
    assert.equal(room.roomId, hex(roomKeysFromMinikey(oneCase).roomId));
    // The rest of the checks hold all the same.
    assert.throws(() => store.addRoom({ key: `${oneCase.slice(0, 29)}R`, asTyped: false }), ChecksumMismatch);
    await store.save();
    assert.deepEqual((await KeyStore.unlock(PASSWORD, options)).data.rooms.map((r) => r.key), [oneCase]);
  });

  it("adds a room under its derived room id, normalizing the key", async () => {
    const store = await KeyStore.create(PASSWORD, fresh());
    const key = makeMinikey(randomBytes);
    const room = store.addRoom({ key: formatMinikey(key), label: "team", nickname: "bob", expiresAtMs: 5000, nowMs: 1000 });
    assert.deepEqual(room, {
      key,
      roomId: hex(roomKeysFromMinikey(key).roomId),
      label: "team",
      nickname: "bob",
      createdAtMs: 1000,
      expiresAtMs: 5000,
      keepHistory: true,
      messages: [],
      deleted: [],
      recent: [],
      recentFloorMs: 0,
      outbox: [],
    });
    assert.equal(store.room(room.roomId), room);
    assert.equal(store.room(room.roomId.toUpperCase()), room);
    assert.equal(store.room("00".repeat(32)), null);
    assert.throws(() => store.addRoom({ key }), RoomExists);
    // README's example of a typo: one character off a valid key.
    assert.throws(() => store.addRoom({ key: "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRz" }), ChecksumMismatch);
  });

  it("removes a room with its key and messages", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const keep = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const gone = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    store.addMessage(gone.roomId, message(1));
    assert.equal(store.removeRoom(gone.roomId), gone);
    assert.equal(store.removeRoom(gone.roomId), null);
    await store.save();
    const stored = await storedContents(options);
    assert.deepEqual(stored.rooms.map((r) => r.roomId), [keep.roomId]);
    assert.ok(!JSON.stringify(stored).includes(gone.key));
  });

  it("purgeExpired removes rooms whose time is over, never those with unknown expiry", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const now = 1_700_000_000_000;
    const unknown = store.addRoom({ key: makeMinikey(randomBytes), expiresAtMs: 0, nowMs: 1 });
    const past = store.addRoom({ key: makeMinikey(randomBytes), expiresAtMs: now - 1, nowMs: 1 });
    const exactly = store.addRoom({ key: makeMinikey(randomBytes), expiresAtMs: now, nowMs: 1 });
    const future = store.addRoom({ key: makeMinikey(randomBytes), expiresAtMs: now + 1, nowMs: 1 });
    assert.deepEqual(store.purgeExpired(now), [past, exactly]);
    assert.deepEqual(store.purgeExpired(now), []);
    await store.save();
    const stored = await storedContents(options);
    assert.deepEqual(stored.rooms.map((r) => r.roomId), [unknown.roomId, future.roomId]);
  });

  it("unknown room ids are refused by the history helpers", async () => {
    const store = await KeyStore.create(PASSWORD, fresh());
    const nowhere = "ab".repeat(32);
    assert.throws(() => store.addMessage(nowhere, message(1)), NoSuchRoom);
    assert.throws(() => store.deleteMessage(nowhere, "00".repeat(16)), NoSuchRoom);
    assert.throws(() => store.clearHistory(nowhere), NoSuchRoom);
    assert.throws(() => store.recordRecent(nowhere, "00".repeat(16), 1), NoSuchRoom);
    assert.throws(() => store.setKeepHistory(nowhere, false), NoSuchRoom);
  });
});

describe("KeyStore: history", () => {
  it("keeps messages in time order, once each, and only the model's fields", async () => {
    const store = await KeyStore.create(PASSWORD, fresh());
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const late = message(5);
    const early = { ...message(1), extra: "not stored", id: message(1).id.toUpperCase() };
    assert.deepEqual(store.addMessage(room.roomId, late), late);
    const stored = store.addMessage(room.roomId, early);
    assert.equal(stored.id, early.id.toLowerCase());
    assert.equal("extra" in stored, false);
    assert.equal(store.addMessage(room.roomId, late), null); // a duplicate id
    assert.deepEqual(room.messages.map((m) => m.text), ["message 1", "message 5"]);
    assert.throws(() => store.addMessage(room.roomId, { ...late, id: "xyz" }), UsageError);
    assert.throws(() => store.addMessage(room.roomId, { ...message(2), timestampMs: -1 }), UsageError);
  });

  it("keeps whether the relay took a message of ours, until it is marked sent", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const unsent = store.addMessage(room.roomId, message(1, { mine: true, sent: false }));
    await store.save();
    assert.equal((await storedContents(options)).rooms[0].messages[0].sent, false);
    assert.equal(store.markSent(room.roomId, unsent.id), true);
    assert.equal(store.markSent(room.roomId, unsent.id), false); // once
    await store.save();
    assert.equal((await KeyStore.unlock(PASSWORD, options)).data.rooms[0].messages[0].sent, true);
  });

  it("keeps only the newest messages of a room", async () => {
    const store = await KeyStore.create(PASSWORD, fresh());
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    for (let n = 0; n < MAX_MESSAGES_PER_ROOM + 5; n++) store.addMessage(room.roomId, message(n));
    assert.equal(room.messages.length, MAX_MESSAGES_PER_ROOM);
    assert.equal(room.messages[0].text, "message 5");
    assert.equal(room.messages.at(-1).text, `message ${MAX_MESSAGES_PER_ROOM + 4}`);
    assert.equal(store.addMessage(room.roomId, message(0)), null); // older than all kept
    assert.equal(room.messages.length, MAX_MESSAGES_PER_ROOM);
  });

  it("deleteMessage and clearHistory are gone from the stored ciphertext after save", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const a = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const b = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const [one, two, three] = [message(1), message(2), message(3)];
    for (const m of [one, two, three]) store.addMessage(a.roomId, m);
    store.addMessage(b.roomId, message(4, { text: "in b" }));
    await store.save();
    assert.equal((await storedContents(options)).rooms[0].messages.length, 3);

    assert.equal(store.deleteMessage(a.roomId, two.id.toUpperCase()), true);
    assert.equal(store.deleteMessage(a.roomId, two.id), false);
    assert.equal(store.clearHistory(b.roomId), 1);
    await store.save();

    const stored = await storedContents(options);
    assert.deepEqual(stored.rooms[0].messages.map((m) => m.id), [one.id, three.id]);
    assert.deepEqual(stored.rooms[1].messages, []);
    assert.ok(!JSON.stringify(stored).includes("message 2"));
    assert.ok(!JSON.stringify(stored).includes("in b"));
  });

  it("remembers deleted messages' ids for the replay window, pruned and bounded on save", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const now = Date.now();
    const kept = message(1, { timestampMs: now - 1000 });
    store.addMessage(room.roomId, kept);
    const cleared = message(2, { timestampMs: now - 500 });
    store.addMessage(room.roomId, cleared);
    assert.equal(store.deleteMessage(room.roomId, kept.id), true);
    const notKept = hex(randomBytes(16));
    assert.equal(store.recordDeleted(room.roomId, notKept, now - 2000), true);
    assert.equal(store.recordDeleted(room.roomId, notKept.toUpperCase(), now - 2000), false);
    store.recordDeleted(room.roomId, hex(randomBytes(16)), now - DELETED_KEPT_MS - 60_000); // too old
    assert.equal(store.clearHistory(room.roomId), 1);
    assert.throws(() => store.recordDeleted(room.roomId, "nope", now), UsageError);
    await store.save();
    const stored = (await storedContents(options)).rooms[0];
    assert.deepEqual(stored.messages, []);
    assert.deepEqual(
      stored.deleted.map((d) => d.id),
      [notKept, kept.id, cleared.id], // oldest first; the one too old is gone
    );
    assert.ok(!JSON.stringify(stored.deleted).includes("message"));

    room.deleted = Array.from({ length: MAX_DELETED_PER_ROOM + 5 }, (_, n) => ({ id: hex(randomBytes(16)), timestampMs: now - n }));
    await store.save();
    const bounded = (await storedContents(options)).rooms[0].deleted;
    assert.equal(bounded.length, MAX_DELETED_PER_ROOM);
    assert.equal(Math.min(...bounded.map((d) => d.timestampMs)), now - MAX_DELETED_PER_ROOM + 1);
  });

  it("a room stored before deletions were remembered loads with none", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    delete room.deleted; // as an older build wrote it
    await store.save();
    assert.equal("deleted" in (await storedContents(options)).rooms[0], false);
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data.rooms[0].deleted, []);
  });

  it("a damaged deleted message's record does not load", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    store.data.rooms[0].deleted = [{ id: "not hex", timestampMs: Date.now() }];
    await store.save();
    await assert.rejects(
      KeyStore.unlock(PASSWORD, options),
      (error) => error instanceof DamagedStore && /damaged inside: a deleted message's record is not valid/.test(error.message),
    );
  });

  it("turning history off deletes the stored messages and keeps no new ones", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    store.addMessage(room.roomId, message(1));
    await store.save();
    store.setKeepHistory(room.roomId, false);
    assert.equal(store.addMessage(room.roomId, message(2)), null);
    await store.save();
    const stored = (await storedContents(options)).rooms[0];
    assert.equal(stored.keepHistory, false);
    assert.deepEqual(stored.messages, []);

    store.setKeepHistory(room.roomId, true);
    assert.ok(store.addMessage(room.roomId, message(3)));
    assert.throws(() => store.setKeepHistory(room.roomId, "no"), UsageError);
  });
});

describe("KeyStore: the recent messages (ids for the replay filter)", () => {
  it("remembers each id once, ids and times only, kept history or not, through a save", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1, keepHistory: false });
    const now = Date.now();
    const later = hex(randomBytes(16));
    const earlier = hex(randomBytes(16));
    assert.equal(store.recordRecent(room.roomId, later, now - 1000), true);
    assert.equal(store.recordRecent(room.roomId, earlier.toUpperCase(), now - 2000), true);
    assert.equal(store.recordRecent(room.roomId, later, now - 1000), false); // once
    assert.equal(store.recordRecent(room.roomId, earlier, now - 2000), false); // any case
    assert.throws(() => store.recordRecent(room.roomId, "nope", now), UsageError);
    assert.throws(() => store.recordRecent(room.roomId, later, -1), UsageError);
    assert.deepEqual(room.recent, [
      { id: later, timestampMs: now - 1000 },
      { id: earlier, timestampMs: now - 2000 },
    ]);
    assert.deepEqual(room.messages, []); // no history is kept for it
    await store.save();

    // Saved in time order; a seal and open round trip gives them back.
    const expected = [
      { id: earlier, timestampMs: now - 2000 },
      { id: later, timestampMs: now - 1000 },
    ];
    assert.deepEqual((await storedContents(options)).rooms[0].recent, expected);
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data.rooms[0].recent, expected);
    assert.equal(again.recordRecent(room.roomId, later, now - 1000), false); // still known
  });

  it("forgets ids older than the replay window on save, and all but the newest beyond the cap", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const now = Date.now();
    const fresh1 = hex(randomBytes(16));
    const tooOld = hex(randomBytes(16));
    const ahead = hex(randomBytes(16));
    store.recordRecent(room.roomId, fresh1, now - RECENT_KEPT_MS + 60_000);
    store.recordRecent(room.roomId, tooOld, now - RECENT_KEPT_MS - 60_000);
    store.recordRecent(room.roomId, ahead, now + 4 * 60_000); // a sender's clock ahead
    assert.equal(room.recent.length, 3); // pruned when saved, as the deletions are
    await store.save();
    assert.deepEqual(
      (await storedContents(options)).rooms[0].recent.map((r) => r.id),
      [fresh1, ahead],
    );
    assert.equal(RECENT_KEPT_MS, DELETED_KEPT_MS);

    // Out of order, more than the cap: the newest are kept.
    room.recent = Array.from({ length: MAX_RECENT_PER_ROOM + 5 }, (_, n) => ({ id: hex(randomBytes(16)), timestampMs: now - n }));
    await store.save();
    const bounded = (await storedContents(options)).rooms[0].recent;
    assert.equal(bounded.length, MAX_RECENT_PER_ROOM);
    assert.equal(Math.min(...bounded.map((r) => r.timestampMs)), now - MAX_RECENT_PER_ROOM + 1);
    assert.equal(bounded.at(-1).timestampMs, now);
  });

  it("is bounded in memory too, while no save prunes it", async () => {
    const store = await KeyStore.create(PASSWORD, fresh());
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const now = Date.now();
    room.recent = Array.from({ length: 2 * MAX_RECENT_PER_ROOM - 1 }, (_, n) => ({ id: hex(randomBytes(16)), timestampMs: now - 1 - n }));
    const newest = hex(randomBytes(16));
    assert.equal(store.recordRecent(room.roomId, newest, now), true);
    assert.equal(room.recent.length, MAX_RECENT_PER_ROOM);
    assert.deepEqual(room.recent.at(-1), { id: newest, timestampMs: now });
  });

  it("is pruned when the store locks with a save waiting, and when the password changes", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const now = Date.now();
    const kept = hex(randomBytes(16));
    store.recordRecent(room.roomId, kept, now);
    store.recordRecent(room.roomId, hex(randomBytes(16)), now - RECENT_KEPT_MS - 1);
    await store.changePassword(PASSWORD, "a new long password");
    assert.deepEqual((await storedContents(options, "a new long password")).rooms[0].recent.map((r) => r.id), [kept]);

    store.recordRecent(room.roomId, hex(randomBytes(16)), now - RECENT_KEPT_MS - 1);
    const first = store.save(); // in flight
    const waiting = store.save(); // waits for it; the lock takes its snapshot
    store.lock();
    await Promise.all([first, waiting]);
    assert.deepEqual((await storedContents(options, "a new long password")).rooms[0].recent.map((r) => r.id), [kept]);
  });

  it("a room stored before recent messages were remembered loads with none; a damaged entry does not load", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    delete room.recent; // as an older build wrote it
    await store.save();
    assert.equal("recent" in (await storedContents(options)).rooms[0], false);
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data.rooms[0].recent, []);
    assert.equal(again.recordRecent(room.roomId, hex(randomBytes(16)), Date.now()), true);

    // (Entries without a time in the window are pruned on save: these are not.)
    const entry = /damaged inside: a recent message's record is not valid/;
    for (const [damaged, says] of [
      [[{ id: "not hex", timestampMs: Date.now() }], entry],
      [[{ id: hex(randomBytes(16)).slice(2), timestampMs: Date.now() }], entry],
      [[{ id: hex(randomBytes(16)), timestampMs: Date.now() + 0.5 }], entry],
      [{ not: "a list" }, /damaged inside: a room's recent messages are not a list/],
    ]) {
      const good = await readRecord(options);
      const writer = await KeyStore.unlock(PASSWORD, options);
      writer.data.rooms[0].recent = damaged;
      await writer.save();
      await assert.rejects(KeyStore.unlock(PASSWORD, options), (error) => error instanceof DamagedStore && says.test(error.message));
      await writeRecord(good, options); // back to a good record for the next case
    }
    assert.ok(await KeyStore.unlock(PASSWORD, options));
  });

  it("keeps as its floor the newest time among the ids dropped for the cap, never for age", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const now = Date.now();
    const entry = (timestampMs) => ({ id: hex(randomBytes(16)), timestampMs });
    // Dropped for their age only: no floor (the freshness check refuses them anyway).
    room.recent = [entry(now - RECENT_KEPT_MS - 60_000), entry(now - RECENT_KEPT_MS - 1), entry(now)];
    await store.save();
    assert.equal(room.recent.length, 1);
    assert.equal(room.recentFloorMs, 0);
    assert.equal((await storedContents(options)).rooms[0].recentFloorMs, 0);

    // Out of order, 5 over the cap, and old ones besides: the floor is the newest of the 5
    // dropped for the cap, not the newest of those dropped for their age.
    const base = now - 30 * 60_000;
    const full = Array.from({ length: MAX_RECENT_PER_ROOM + 5 }, (_, n) => entry(base + n)).reverse();
    room.recent = [entry(now - RECENT_KEPT_MS - 1), ...full];
    await store.save();
    assert.equal(room.recent.length, MAX_RECENT_PER_ROOM);
    assert.equal(room.recent[0].timestampMs, base + 5);
    assert.equal(room.recentFloorMs, base + 4);
    const stored = (await storedContents(options)).rooms[0];
    assert.equal(stored.recentFloorMs, base + 4);
    assert.equal(stored.recent.length, MAX_RECENT_PER_ROOM);

    // Kept through an unlock; a later save that drops nothing for the cap, or drops older
    // ones, never lowers it.
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.equal(again.data.rooms[0].recentFloorMs, base + 4);
    again.data.rooms[0].recent = [entry(base - 1000), ...again.data.rooms[0].recent];
    await again.save();
    assert.equal(again.data.rooms[0].recentFloorMs, base + 4);
    again.data.rooms[0].recent = again.data.rooms[0].recent.slice(-10);
    await again.save();
    assert.equal((await KeyStore.unlock(PASSWORD, options)).data.rooms[0].recentFloorMs, base + 4);
  });

  it("raises its floor when pruned in memory too, for the cap only", async () => {
    const store = await KeyStore.create(PASSWORD, fresh());
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const now = Date.now();
    room.recent = Array.from({ length: 2 * MAX_RECENT_PER_ROOM - 1 }, (_, n) => ({ id: hex(randomBytes(16)), timestampMs: now - 1 - n }));
    room.recent.push({ id: hex(randomBytes(16)), timestampMs: now - RECENT_KEPT_MS - 1 }); // dropped for its age only
    store.recordRecent(room.roomId, hex(randomBytes(16)), now);
    assert.equal(room.recent.length, MAX_RECENT_PER_ROOM);
    // Kept: now and now - 1 ... now - 9999; the newest dropped for the cap: now - 10000.
    assert.equal(room.recent[0].timestampMs, now - MAX_RECENT_PER_ROOM + 1);
    assert.equal(room.recentFloorMs, now - MAX_RECENT_PER_ROOM);
  });

  it("forgets a floor older than the window, or ahead of the clock past what a message may be", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const now = Date.now();
    const [old, ahead, near] = [1, 2, 3].map(() => store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 }));
    old.recentFloorMs = now - RECENT_KEPT_MS - 1000; // refused for its age anyway
    ahead.recentFloorMs = now + 24 * 3600 * 1000; // a clock since set back
    near.recentFloorMs = now - 1000;
    await store.save();
    const floors = (await KeyStore.unlock(PASSWORD, options)).data.rooms.map((r) => r.recentFloorMs);
    assert.deepEqual(floors, [0, 0, now - 1000]);
  });

  it("a room stored before the floor was kept loads with 0; a damaged floor does not load", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    delete room.recentFloorMs; // as an older build wrote it
    await store.save();
    assert.equal("recentFloorMs" in (await storedContents(options)).rooms[0], false);
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.equal(again.data.rooms[0].recentFloorMs, 0);

    for (const damaged of [-1, 0.5, 2 ** 53, "1000", null, NaN]) {
      const good = await readRecord(options);
      const writer = await KeyStore.unlock(PASSWORD, options);
      writer.data.rooms[0].recentFloorMs = damaged;
      await writer.save();
      await assert.rejects(
        KeyStore.unlock(PASSWORD, options),
        (error) => error instanceof DamagedStore && /damaged inside: a room's recent messages' floor is not a valid time/.test(error.message),
      );
      await writeRecord(good, options);
    }
    assert.equal((await KeyStore.unlock(PASSWORD, options)).data.rooms[0].recentFloorMs, 0);
  });

  it("goes with its room, and its ids never appear in the clear", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const gone = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const id = hex(randomBytes(16));
    store.recordRecent(gone.roomId, id, Date.now());
    await store.save();
    assert.ok(!JSON.stringify(await readRecord(options)).includes(id));
    store.removeRoom(gone.roomId);
    await store.save();
    assert.ok(!JSON.stringify(await storedContents(options)).includes(id));
  });
});

describe("KeyStore: the outbox", () => {
  const envelopeOf = (size) => randomBytes(size);

  it("keeps sealed messages the relay has not taken, kept history or not, through a save", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1, keepHistory: false });
    const later = { id: hex(randomBytes(16)), timestampMs: 2000, envelope: envelopeOf(300) };
    const earlier = { id: hex(randomBytes(16)).toUpperCase(), timestampMs: 1000, envelope: envelopeOf(1) };
    assert.equal(store.addOutgoing(room.roomId, later), true);
    assert.equal(store.addOutgoing(room.roomId, earlier), true);
    assert.equal(store.addOutgoing(room.roomId, later), false); // once each
    assert.throws(() => store.addOutgoing(room.roomId, { ...later, id: "00" }), UsageError);
    assert.throws(() => store.addOutgoing(room.roomId, { ...later, envelope: "AAAA" }), UsageError);
    assert.throws(() => store.addOutgoing("00".repeat(32), later), NoSuchRoom);
    await store.save();

    // Stored as base64 under the vault: no bytes of the envelope in the clear.
    const stored = (await storedContents(options)).rooms[0].outbox;
    assert.deepEqual(
      stored.map((o) => [o.id, o.timestampMs, typeof o.envelope]),
      [
        [earlier.id.toLowerCase(), 1000, "string"],
        [later.id, 2000, "string"],
      ],
    );
    const again = await KeyStore.unlock(PASSWORD, options);
    const back = again.outgoing(room.roomId);
    assert.deepEqual(
      back.map((o) => [o.id, o.timestampMs, hex(o.envelope)]),
      [
        [earlier.id.toLowerCase(), 1000, hex(earlier.envelope)],
        [later.id, 2000, hex(later.envelope)],
      ],
    );
    assert.equal(again.removeOutgoing(room.roomId, earlier.id), true);
    assert.equal(again.removeOutgoing(room.roomId, earlier.id), false);
    assert.equal(again.removeOutgoing("00".repeat(32), later.id), false); // a room gone meanwhile
    await again.save();
    assert.deepEqual((await storedContents(options)).rooms[0].outbox.map((o) => o.id), [later.id]);
  });

  it("goes with its room: forgotten or expired", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const forgotten = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    const expired = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1, expiresAtMs: 5 });
    for (const room of [forgotten, expired]) {
      store.addOutgoing(room.roomId, { id: hex(randomBytes(16)), timestampMs: 1, envelope: envelopeOf(10) });
    }
    store.removeRoom(forgotten.roomId);
    store.purgeExpired(10);
    await store.save();
    assert.deepEqual((await storedContents(options)).rooms, []);
  });

  it("a room stored before the outbox was kept loads with none; a damaged entry does not load", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: 1 });
    delete room.outbox; // as an older build wrote it
    await store.save();
    assert.equal("outbox" in (await storedContents(options)).rooms[0], false);
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(again.data.rooms[0].outbox, []);
    assert.deepEqual(again.outgoing(room.roomId), []);

    again.data.rooms[0].outbox = [{ id: hex(randomBytes(16)), timestampMs: 1, envelope: "not base64!" }];
    await again.save();
    await assert.rejects(KeyStore.unlock(PASSWORD, options), DamagedStore);
  });
});

describe("KeyStore: device key", () => {
  it("derives the device key and fingerprint from the stored seed", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const expected = deviceKeyFromSeed(fromHex(store.data.deviceSeed));
    const device = store.deviceKey();
    assert.deepEqual(device.seed, expected.seed);
    assert.deepEqual(device.publicKey, expected.publicKey);
    assert.equal(store.fingerprint(), fingerprint(expected.publicKey));
    assert.match(store.fingerprint(), /^[A-Z2-7]{4}(-[A-Z2-7]{4}){3}$/);
    const again = await KeyStore.unlock(PASSWORD, options);
    assert.equal(again.fingerprint(), store.fingerprint());
  });
});

describe("KeyStore: two tabs", () => {
  it("a save over a record another tab replaced writes nothing and says so", async () => {
    const options = fresh();
    const first = await KeyStore.create(PASSWORD, options);
    const second = await KeyStore.unlock(PASSWORD, options);
    second.data.nickname = "from the second tab";
    await second.save();
    first.data.nickname = "from the first tab";
    await assert.rejects(first.save(), StoreChanged);
    assert.equal((await storedContents(options)).nickname, "from the second tab");
  });

  it("a wiped store is not brought back by a tab that was still unlocked", async () => {
    const options = fresh();
    const first = await KeyStore.create(PASSWORD, options);
    first.addRoom({ key: makeMinikey(randomBytes), label: "kept secret" });
    await first.save();
    await KeyStore.wipe(options);
    await assert.rejects(first.save(), StoreChanged);
    assert.equal(await readRecord(options), null);
  });

  it("a password changed in one tab is not undone by the other's save", async () => {
    const options = fresh();
    const first = await KeyStore.create(PASSWORD, options);
    const second = await KeyStore.unlock(PASSWORD, options);
    await second.changePassword(PASSWORD, "a new long password");
    await assert.rejects(first.save(), StoreChanged);
    await assert.rejects(KeyStore.unlock(PASSWORD, options), WrongPassword);
    assert.ok(await KeyStore.unlock("a new long password", options));
  });
});

it("a save queued before a failed password change and a lock still writes the contents", async () => {
  const options = fresh();
  const store = await KeyStore.create(PASSWORD, options);
  store.data.nickname = "kept";
  const first = store.save(); // in flight
  const queued = store.save(); // waits for it
  const change = store.changePassword("not the password at all", "a new long password");
  store.lock();
  await first;
  await queued;
  await assert.rejects(change);
  const again = await KeyStore.unlock(PASSWORD, options); // not damaged, not emptied
  assert.equal(again.data.nickname, "kept");
});

describe("KeyStore: the journal (what came since the last save)", () => {
  /** A store with one room keeping history, saved, and a message that came after. */
  async function withAnArrival(options, { keepHistory = true } = {}) {
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory });
    await store.save();
    const came = message(1, { timestampMs: Date.now() - 1000 });
    store.recordRecent(room.roomId, came.id, came.timestampMs);
    if (keepHistory) store.addMessage(room.roomId, came);
    await store.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: keepHistory ? came : null });
    return { store, room, came };
  }
  const journalKeys = async (options) => (await readRecordAndJournal(options)).journal.map(([key]) => key);

  it("keeps a message whose save never came (a reload, a closed tab): the next unlock takes it in", async () => {
    const options = fresh();
    const { room, came } = await withAnArrival(options); // and the tab goes: no save, no lock
    assert.deepEqual((await storedContents(options)).rooms[0].messages, []);
    assert.equal((await journalKeys(options)).length, 1);
    const next = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(next.room(room.roomId).messages.map((m) => m.text), [came.text]);
    assert.deepEqual(next.room(room.roomId).recent.map((r) => r.id), [came.id]);
    assert.equal(next.journalWaiting, true);
    await next.save(); // the record holds it now, and the journal goes
    assert.deepEqual((await storedContents(options)).rooms[0].messages.map((m) => m.text), [came.text]);
    assert.deepEqual(await journalKeys(options), []);
    assert.equal(next.journalWaiting, false);
  });

  it("is deleted by the save that holds its entries, and says nothing readable", async () => {
    const options = fresh();
    const { store, came } = await withAnArrival(options);
    const { journal } = await readRecordAndJournal(options);
    const bytes = JSON.stringify(journal);
    for (const secret of [came.text, came.id, came.senderName]) assert.ok(!bytes.includes(secret));
    await store.save();
    assert.deepEqual(await journalKeys(options), []);
  });

  it("takes only the id into a room that keeps no history, nothing into a room forgotten", async () => {
    const options = fresh();
    const { room, came } = await withAnArrival(options, { keepHistory: false });
    const next = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(next.room(room.roomId).messages, []);
    assert.deepEqual(next.room(room.roomId).recent.map((r) => r.id), [came.id]);
    // Forgotten and saved, the entry still there (its write landed after that save):
    // nothing comes back, and the entry goes with the next save.
    const otherOptions = fresh();
    const other = await withAnArrival(otherOptions);
    const { journal } = await readRecordAndJournal(otherOptions);
    other.store.removeRoom(other.room.roomId);
    await other.store.save();
    await writeJournalBack(otherOptions, journal);
    const reopened = await KeyStore.unlock(PASSWORD, otherOptions);
    assert.deepEqual(reopened.data.rooms, []);
    assert.equal(reopened.journalWaiting, true);
    await reopened.save();
    assert.deepEqual(await journalKeys(otherOptions), []);
  });

  it("does not bring back a message deleted since, even after a password change", async () => {
    const options = fresh();
    const { store, room, came } = await withAnArrival(options);
    // Deleted, and the deletion saved, while the entry's write was taken as not held.
    const { journal } = await readRecordAndJournal(options);
    store.deleteMessage(room.roomId, came.id);
    await store.save();
    await writeJournalBack(options, journal); // as if the save had not deleted it
    const next = await KeyStore.unlock(PASSWORD, options);
    assert.deepEqual(next.room(room.roomId).messages, []);
    // Sealed under the journal key the password change retired: opened with it, not taken
    // in (deleted since), and deleted by a save.
    await next.changePassword(PASSWORD, "another long password");
    await writeJournalBack(options, journal);
    const changed = await KeyStore.unlock("another long password", options);
    assert.equal((await journalKeys(options)).length, 1);
    await changed.save();
    assert.deepEqual(await journalKeys(options), []);
  });

  it("is taken in in the order it was written: messages of the same ms keep their order", async (t) => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    // Seals may finish out of order (WebCrypto runs them off the main thread): the first is slow.
    const encrypt = crypto.subtle.encrypt.bind(crypto.subtle);
    let calls = 0;
    t.mock.method(crypto.subtle, "encrypt", async (...args) => {
      if (calls++ === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      return encrypt(...args);
    });
    const at = Date.now() - 1000;
    const came = Array.from({ length: 12 }, (_, n) => message(n, { timestampMs: at }));
    for (const m of came) {
      store.recordRecent(room.roomId, m.id, m.timestampMs);
      store.addMessage(room.roomId, m);
      store.journal(room.roomId, { recent: { id: m.id, timestampMs: m.timestampMs }, message: m });
    }
    const next = await waitForJournal(options, came.length);
    assert.deepEqual(next.room(room.roomId).messages.map((m) => m.text), came.map((m) => m.text));
  });

  it("keeps a message that came during a password change (its key is the contents', not the password's)", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const changing = store.changePassword(PASSWORD, "another long password"); // its snapshot: now
    const came = message(1, { timestampMs: Date.now() - 1000 });
    store.recordRecent(room.roomId, came.id, came.timestampMs);
    store.addMessage(room.roomId, came);
    await store.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
    await changing; // and the tab goes before its next save
    const next = await KeyStore.unlock("another long password", options);
    assert.deepEqual(next.room(room.roomId).messages.map((m) => m.text), [came.text]);
  });

  it("gets a new key with a password change: the old password's record opens none of what comes after", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const leftOver = await readRecord(options); // on the disk still, or in a backup
    const oldKey = (await openVault(leftOver, PASSWORD, options)).contents.journalKey;
    await store.changePassword(PASSWORD, "another long password");
    const came = message(1, { timestampMs: Date.now() - 1000 });
    store.recordRecent(room.roomId, came.id, came.timestampMs);
    store.addMessage(room.roomId, came);
    await store.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });

    const { journal } = await readRecordAndJournal(options);
    assert.equal(journal.length, 1);
    assert.equal(await openJournalEntry(await importJournalKey(fromHex(oldKey)), journal[0][1]), null);
    const stored = await storedContents(options, "another long password");
    assert.notEqual(stored.journalKey, oldKey);
    assert.deepEqual(stored.oldJournalKeys, [oldKey]); // under the new password only
    const newKey = await importJournalKey(fromHex(stored.journalKey));
    assert.equal((await openJournalEntry(newKey, journal[0][1])).message.text, came.text);
    const next = await KeyStore.unlock("another long password", options); // the tab went before a save
    assert.deepEqual(next.room(room.roomId).messages.map((m) => m.text), [came.text]);
  });

  it("keeps the new key when the store locks during a password change with a save waiting", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const oldKey = (await storedContents(options)).journalKey; // an old record opens it
    const changing = store.changePassword(PASSWORD, "another long password");
    store.data.nickname = "saved after the change";
    store.save(); // a message came: the throttled save, asked for while the change runs
    await store.lock(); // the idle lock, or another tab unlocking: that save lands after the change
    await changing;

    const stored = await storedContents(options, "another long password");
    assert.equal(stored.nickname, "saved after the change");
    assert.notEqual(stored.journalKey, oldKey);
    assert.deepEqual(stored.oldJournalKeys, [oldKey]);
    const next = await KeyStore.unlock("another long password", options);
    const came = message(1, { timestampMs: Date.now() - 1000 });
    next.addMessage(room.roomId, came);
    await next.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
    const { journal } = await readRecordAndJournal(options);
    assert.equal(await openJournalEntry(await importJournalKey(fromHex(oldKey)), journal[0][1]), null);
  });

  it("keeps every key a run of password changes made, each asked for before the last landed", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const first = store.changePassword(PASSWORD, "a second long password");
    const second = store.changePassword("a second long password", "a third long password");
    await first;
    // Between the two landings a message comes, sealed under the key the first one made.
    const came = message(1, { timestampMs: Date.now() - 1000 });
    store.recordRecent(room.roomId, came.id, came.timestampMs);
    store.addMessage(room.roomId, came);
    const writing = store.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
    await second;
    await writing; // and the tab goes before its next save
    const stored = await storedContents(options, "a third long password");
    assert.equal(new Set([stored.journalKey, ...stored.oldJournalKeys]).size, 3);
    const next = await KeyStore.unlock("a third long password", options);
    assert.deepEqual(next.room(room.roomId).messages.map((m) => m.text), [came.text]);
  });

  it("keeps the journal keys of the last OLD_JOURNAL_KEYS_KEPT password changes, through unlocks", async () => {
    const options = fresh();
    let store = await KeyStore.create(PASSWORD, options);
    const made = [(await storedContents(options)).journalKey];
    let password = PASSWORD;
    for (let n = 0; n <= OLD_JOURNAL_KEYS_KEPT; n++) {
      const next = `long password number ${n}`;
      await store.changePassword(password, next);
      password = next;
      made.push((await storedContents(options, password)).journalKey);
      if (n === 2) store = await KeyStore.unlock(password, options); // an unlock keeps them
    }
    const stored = await storedContents(options, password);
    assert.equal(stored.journalKey, made.at(-1));
    assert.deepEqual(stored.oldJournalKeys, made.slice(-1 - OLD_JOURNAL_KEYS_KEPT, -1));
  });

  it("keeps its key through a password change that fails (a wrong old password, a write refused)", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const key = (await storedContents(options)).journalKey;
    await assert.rejects(store.changePassword("not the password at all", "another long password"), WrongPassword);
    await assert.rejects(withFailingPuts(() => store.changePassword(PASSWORD, "another long password")));
    store.data.nickname = "saved";
    await store.save();
    const stored = await storedContents(options);
    assert.equal(stored.journalKey, key);
    assert.deepEqual(stored.oldJournalKeys, []);
    const came = message(1, { timestampMs: Date.now() - 1000 });
    store.addMessage(room.roomId, came);
    await store.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
    const next = await KeyStore.unlock(PASSWORD, options); // the tab went before a save
    assert.deepEqual(next.room(room.roomId).messages.map((m) => m.text), [came.text]);
  });

  it("opens what a tab unlocked before a password change wrote after it, until a save holds what the old key opened", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const stale = await KeyStore.unlock(PASSWORD, options); // a tab still unlocked from before
    await store.changePassword(PASSWORD, "a second long password");
    await store.changePassword("a second long password", "a third long password");
    const arrive = async (tab, n) => {
      const came = message(n, { timestampMs: Date.now() - 1000 });
      tab.recordRecent(room.roomId, came.id, came.timestampMs);
      tab.addMessage(room.roomId, came);
      await tab.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
      return came.text;
    };
    const first = await arrive(stale, 1); // under the first key
    await assert.rejects(stale.save(), StoreChanged);
    assert.equal((await storedContents(options, "a third long password")).oldJournalKeys.length, 2);

    // The next unlock opens it with the old key, and so does a reload, for what was
    // written since.
    const next = await KeyStore.unlock("a third long password", options);
    assert.equal(next.journalWaiting, true);
    const second = await arrive(stale, 2);
    assert.equal(await next.reload(), false);
    assert.deepEqual(next.room(room.roomId).messages.map((m) => m.text), [first, second]);
    await next.save();
    assert.deepEqual(await journalKeys(options), []);
    assert.equal(next.journalWaiting, false);

    // And so does a later unlock, after a save: the record keeps the old key, and the tab
    // unlocked before the change may seal under it for as long as it stays open.
    await next.lock();
    const third = await arrive(stale, 3);
    const later = await KeyStore.unlock("a third long password", options);
    assert.deepEqual(later.room(room.roomId).messages.map((m) => m.text), [first, second, third]);
    await later.save();
    assert.deepEqual(await journalKeys(options), []);
  });

  it("lets lock() settle once the journal's writes under way have landed (the next tab reads them)", async (t) => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const encrypt = crypto.subtle.encrypt.bind(crypto.subtle);
    t.mock.method(crypto.subtle, "encrypt", async (...args) => {
      await new Promise((resolve) => setTimeout(resolve, 20)); // a slow seal
      return encrypt(...args);
    });
    const came = message(1, { timestampMs: Date.now() - 1000 });
    store.addMessage(room.roomId, came);
    store.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
    await store.lock();
    assert.equal((await journalKeys(options)).length, 1);
  });

  it("written while a wipe starts, goes with it", async () => {
    const options = fresh();
    const store = await KeyStore.create(PASSWORD, options);
    const room = store.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
    await store.save();
    const came = message(1);
    store.addMessage(room.roomId, came);
    const writing = store.journal(room.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
    await store.wipe();
    await writing;
    assert.deepEqual(await readRecordAndJournal(options), { record: null, journal: [] });
  });

  it("written by another tab after this one's unlock read, is taken in by reload()", async () => {
    const options = fresh();
    const { room, came } = await withAnArrivalLater(options);
    assert.deepEqual(room.b.room(room.id).messages.map((m) => m.text), [came.text]);
    assert.equal(room.b.journalWaiting, true);
  });

  it("goes with a wipe", async () => {
    const options = fresh();
    const { store } = await withAnArrival(options);
    await store.wipe();
    assert.deepEqual(await readRecordAndJournal(options), { record: null, journal: [] });
  });
});

/** Tab B unlocks; tab A then journals a message and goes without a save; B reads again. */
async function withAnArrivalLater(options) {
  const a = await KeyStore.create(PASSWORD, options);
  const made = a.addRoom({ key: makeMinikey(randomBytes), nowMs: Date.now(), keepHistory: true });
  await a.save();
  const b = await KeyStore.unlock(PASSWORD, options);
  const came = message(1, { timestampMs: Date.now() - 1000 });
  a.recordRecent(made.roomId, came.id, came.timestampMs);
  a.addMessage(made.roomId, came);
  await a.journal(made.roomId, { recent: { id: came.id, timestampMs: came.timestampMs }, message: came });
  assert.equal(await b.reload(), false); // the record is as B read it
  return { room: { b, id: made.roomId }, came };
}

/** Unlock once the journal holds `count` entries. */
async function waitForJournal(options, count) {
  while ((await readRecordAndJournal(options)).journal.length < count) await new Promise((r) => setTimeout(r, 5));
  return KeyStore.unlock(PASSWORD, options);
}

/** Put journal entries back under their keys, as they were read. */
async function writeJournalBack(options, journal) {
  for (const [key, value] of journal) await addJournalEntry(key.slice(1), value, options).catch(() => {});
}

// The app's controller (controller.js) without a browser: a stand-in window whose address
// is an invite link on relay A, key stores on fake-indexeddb, and WebSockets that only
// record where they would connect. Other tabs are played by a second KeyStore, or by
// writes to the same database.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { IDBFactory } from "fake-indexeddb";
import { fromHex } from "../src/protocol/bytes.js";
import { makeMinikey } from "../src/protocol/minikey.js";
import { deleteRecord } from "../src/store/db.js";
import { KeyStore } from "../src/store/keystore.js";

const RELAY_A = "https://a.relay.test";
const RELAY_B = "https://b.relay.test";
const PASSWORD = "a long unique password";
const randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));
const INVITED_KEY = makeMinikey(randomBytes);

/** A page of relay A whose address ends in `hash`: a window of its own for each app. */
function pageOfRelayA(hash) {
  const page = Object.assign(new EventTarget(), {
    location: { origin: RELAY_A, pathname: "/", search: "", hash },
    history: {
      replaceState(_state, _title, url) {
        page.location.hash = new URL(url, RELAY_A).hash;
      },
    },
    isSecureContext: true,
  });
  return page;
}

// The page as opened from an invite link; capture.js takes the key when imported.
const invitedPage = pageOfRelayA(`#${INVITED_KEY}`);
globalThis.window = invitedPage;
globalThis.document = Object.assign(new EventTarget(), { visibilityState: "visible" });
const { App } = await import("../src/app/controller.js");

/** WebSockets that never open: each records the URL it was made for. */
const socketUrls = [];
class RecordedSocket extends EventTarget {
  constructor(url) {
    super();
    socketUrls.push(url);
  }
  send() {}
  close() {}
}

const started = [];
after(() => {
  for (const app of started) app.lock(); // stops its timers
});

/**
 * A started app on a database of its own; `beforeOpen(n, action)` runs `action` (another
 * tab's write) just before the app's n-th next opening of that database.
 */
async function startApp() {
  const indexedDB = new IDBFactory();
  let pending = null;
  const opening = {
    open: (...args) => {
      if (pending && --pending.count === 0) {
        const { action } = pending;
        pending = null;
        action();
      }
      return indexedDB.open(...args);
    },
  };
  const app = new App({
    storeOptions: { indexedDB: opening, insecureTestIterations: 1000 },
    connectionOptions: { WebSocketImpl: RecordedSocket, setTimer: () => null, clearTimer: () => {} },
  });
  started.push(app);
  globalThis.window = pageOfRelayA("");
  await app.start();
  const otherTab = { indexedDB, insecureTestIterations: 1000 };
  const beforeOpen = (count, action) => (pending = { count, action });
  return { app, otherTab, beforeOpen };
}

describe("App: an opened invite link", () => {
  // The first test: the invite link is taken once, by the first app to start.
  it("joins on the link's relay, not the one chosen in Settings", async () => {
    const { app } = await startApp();
    assert.equal(invitedPage.location.hash, "");
    assert.equal(app.state.joinText, INVITED_KEY);
    await app.unlock(PASSWORD, PASSWORD);
    assert.equal(app.state.screen, "join");
    app.store.data.serverUrl = RELAY_B; // changed in Settings, earlier

    assert.equal(app.joinServerFor({ server: null, key: INVITED_KEY }), RELAY_A);
    socketUrls.length = 0;
    await app.joinRoom({ text: app.state.joinText, nickname: "Bob" });
    assert.equal(app.state.screen, "room");
    assert.equal(app.room(app.state.current).serverUrl, RELAY_A);
    assert.deepEqual(socketUrls, ["wss://a.relay.test/ws"]);
  });

  it("an invite link opened in an open page joins on its relay; another key typed instead, on Settings'", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.store.data.serverUrl = RELAY_B;
    const key = makeMinikey(randomBytes);
    window.location.hash = `#${key}`;
    window.dispatchEvent(new Event("hashchange"));
    assert.equal(app.state.screen, "join");
    assert.equal(app.joinServerFor({ server: null, key }), RELAY_A);
    assert.equal(app.joinServerFor({ server: null, key: makeMinikey(randomBytes) }), RELAY_B);

    await app.joinRoom({ text: key, nickname: "Bob" });
    assert.equal(app.room(app.state.current).serverUrl, RELAY_A);
    // Joined: the link's relay applies to nothing typed later.
    assert.equal(app.joinServerFor({ server: null, key }), RELAY_B);
  });
});

describe("App: another tab writes the store meanwhile", () => {
  async function unlockedWithOtherTab() {
    const { app, otherTab } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    const other = await KeyStore.unlock(PASSWORD, otherTab);
    other.data.nickname = "from the other tab";
    await other.save();
    return app;
  }

  it("a room made as the tab locks is said to be lost, never a TypeError", async () => {
    const app = await unlockedWithOtherTab();
    await app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    assert.equal(app.store, null);
    assert.equal(app.state.screen, "unlock");
    assert.match(app.state.error, /“Trip” was not saved/);
  });

  it("a room joined as the tab locks is said to be lost, and offered again after unlocking", async () => {
    const app = await unlockedWithOtherTab();
    const key = makeMinikey(randomBytes);
    await app.joinRoom({ text: key, nickname: "Ann" });
    assert.equal(app.store, null);
    assert.equal(app.state.screen, "unlock");
    assert.match(app.state.error, /was not saved/);
    assert.equal(app.state.joinText, key);
  });

  it("unlocking, when the save of the expired rooms it removed fails, locks and says why", async () => {
    const { app, otherTab, beforeOpen } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.store.addRoom({ key: makeMinikey(randomBytes), expiresAtMs: 2, nowMs: 1 });
    await app.save();
    app.lock();

    beforeOpen(2, () => deleteRecord(otherTab)); // after the read that unlocks, before the save
    await app.unlock(PASSWORD);
    assert.equal(app.store, null);
    assert.equal(app.state.screen, "unlock");
    assert.match(app.state.notice, /changed in another tab/);
  });
});

describe("App: kept history across a lock", () => {
  it("a message the relay had not taken shows as not sent after unlocking, one it took as sent", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Kept", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    await app.setKeepHistory(id, true);
    assert.equal(await app.sendText(id, "taken by the relay"), true);
    assert.equal(await app.sendText(id, "still in the outbox"), true);
    const [taken, waiting] = app.liveRoom(id).messages;
    const connection = app.connections.get(app.room(id).serverUrl);
    connection.dispatchEvent(new CustomEvent("accepted", { detail: { roomId: fromHex(id), messageId: fromHex(taken.id) } }));
    assert.deepEqual([taken.status, waiting.status], ["sent", "sending"]);
    await app.save();

    app.lock("Locked after a while without use."); // the outbox goes with the connection
    await app.unlock(PASSWORD);
    const shown = app.liveRoom(id).messages.map((m) => [m.text, m.status]);
    assert.deepEqual(shown, [
      ["taken by the relay", "sent"],
      ["still in the outbox", "unsent"],
    ]);
  });
});

// The app's controller (controller.js) without a browser: a stand-in window whose address
// is an invite link on relay A, key stores on fake-indexeddb, and WebSockets that only
// record where they would connect. Other tabs are played by a second KeyStore, or by
// writes to the same database.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { IDBFactory } from "fake-indexeddb";
import { fromHex, hex, utf8 } from "../src/protocol/bytes.js";
import { ErrorCode, SUBPROTOCOL } from "../src/protocol/codes.js";
import { Kind, openEnvelope, sealEnvelope } from "../src/protocol/envelope.js";
import { decodeFrame, encodeFrame } from "../src/protocol/frames.js";
import { deviceKeyFromSeed, fingerprint, roomKeysFromMinikey } from "../src/protocol/kdf.js";
import { formatMinikey, makeMinikey, parseMinikey } from "../src/protocol/minikey.js";
import { OUTBOX_MAX_AGE_MS } from "../src/protocol/session.js";
import { deleteRecord } from "../src/store/db.js";
import { KeyStore, MAX_RECENT_PER_ROOM } from "../src/store/keystore.js";

const RELAY_A = "https://a.relay.test";
const RELAY_B = "https://b.relay.test";
const PASSWORD = "a long unique password";
const randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));
const INVITED_KEY = makeMinikey(randomBytes);

/**
 * A page of relay A whose address ends in `hash`: a window of its own for each app. Its
 * history is a browser's: entries of a state and a URL; go() moves a task later, with a
 * popstate; going back past the first entry leaves the page (`left`).
 */
function pageOfRelayA(hash, reloaded = null) {
  const page = Object.assign(new EventTarget(), {
    location: { origin: RELAY_A, pathname: "/", search: "", hash },
    isSecureContext: true,
  });
  // A reload keeps the entries and where the page is among them; a new page, with none
  // of the old one's listeners, shows that entry.
  const entries = reloaded ? structuredClone(reloaded.entries) : [{ state: null, url: `${RELAY_A}/${hash}` }];
  let index = reloaded ? reloaded.index : 0;
  const show = () => {
    const url = new URL(entries[index].url);
    Object.assign(page.location, { pathname: url.pathname, search: url.search, hash: url.hash });
  };
  const entry = (state, url) => ({ state: structuredClone(state), url: new URL(url ?? entries[index].url, entries[index].url).href });
  page.history = {
    entries,
    left: false,
    get index() {
      return index;
    },
    get state() {
      return structuredClone(entries[index].state);
    },
    replaceState(state, _title, url) {
      entries[index] = entry(state, url);
      show();
    },
    pushState(state, _title, url) {
      const next = entry(state, url);
      entries.length = index + 1;
      entries.push(next);
      index += 1;
      show();
    },
    go(delta) {
      setTimeout(() => {
        if (index + delta < 0) {
          page.history.left = true;
          return;
        }
        if (index + delta >= entries.length) return;
        index += delta;
        show();
        page.dispatchEvent(Object.assign(new Event("popstate"), { state: page.history.state }));
      }, 0);
    },
    back() {
      page.history.go(-1);
    },
    forward() {
      page.history.go(1);
    },
  };
  show();
  /** The page reloaded: a new page at the same entry, among the same entries. */
  page.reload = () => pageOfRelayA("", { entries, index });
  /** A link to `fragment` opened in the page: a new entry, a popstate, then a hashchange. */
  page.openFragment = (fragment) => {
    page.history.pushState(null, "", `${page.location.pathname}${page.location.search}${fragment}`);
    page.dispatchEvent(Object.assign(new Event("popstate"), { state: null }));
    page.dispatchEvent(new Event("hashchange"));
  };
  return page;
}

/** Until the page's pending Back, Forward or go() has happened. */
const traversed = () => new Promise((resolve) => setTimeout(resolve, 5));

// The page as opened from an invite link; capture.js takes the key when imported.
const invitedPage = pageOfRelayA(`#${INVITED_KEY}`);
globalThis.window = invitedPage;
globalThis.document = Object.assign(new EventTarget(), { visibilityState: "visible" });
const {
  App,
  CLOCK_WARNING_MS,
  DROPPED_AHEAD_SHOWN_MS,
  SAVE_THROTTLE_MS,
  TAB_LOCK,
  customLifetime,
  formatRemaining,
  formatTime,
  relayTimeFromDate,
  uptimeFromHeader,
} = await import("../src/app/controller.js");

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
 * tab's write) just before the app's n-th next opening of that database. Its connections
 * do not announce who is here (PROTOCOL.md 5.7) unless `announcing`: the tests that count
 * the user's PUBLISHes would otherwise count the announcements among them. A new room
 * waits `newRoomWaitMs` for its relay's answer: by default not at all, as most relays here
 * never answer.
 */
async function startApp({
  WebSocketImpl = RecordedSocket,
  clock,
  announcing = false,
  connectionOptions = {},
  page = pageOfRelayA(""),
  indexedDB = new IDBFactory(),
  relayTime = async () => null, // no relay behind the page: no clock to compare with
  relayUptimeS = null, // nor its uptime
  newRoomWaitMs = 0,
} = {}) {
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
    connectionOptions: {
      WebSocketImpl,
      setTimer: () => null,
      clearTimer: () => {},
      ...(announcing ? {} : { announce: false }),
      ...connectionOptions,
    },
    clock,
    pageRelay: async () => ({ timeMs: await relayTime(), uptimeS: relayUptimeS }),
    newRoomWaitMs,
  });
  started.push(app);
  globalThis.window = page;
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
    window.openFragment(`#${key}`);
    assert.equal(app.state.screen, "join");
    assert.equal(app.joinServerFor({ server: null, key }), RELAY_A);
    assert.equal(app.joinServerFor({ server: null, key: makeMinikey(randomBytes) }), RELAY_B);

    await app.joinRoom({ text: key, nickname: "Bob" });
    assert.equal(app.room(app.state.current).serverUrl, RELAY_A);
    // Joined: the link's relay applies to nothing typed later.
    assert.equal(app.joinServerFor({ server: null, key }), RELAY_B);
  });
});

describe("App: screens are history entries", () => {
  /** An unlocked app with a room, on the rooms list; its page's history. */
  async function withRoom() {
    const { app, otherTab } = await startApp();
    const { history } = window;
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    app.go("rooms", null);
    await traversed();
    assert.equal(app.state.screen, "rooms");
    assert.equal(history.index, 0);
    return { app, history, id, otherTab };
  }

  const back = async (history) => {
    history.back();
    await traversed();
  };
  const shown = (app) => [app.state.screen, app.state.current];

  it("Back goes to the previous screen, and leaves the page from the rooms list", async () => {
    const { app, history, id } = await withRoom();
    app.go("room", id);
    app.go("share", id);
    app.go("settings");
    await back(history);
    assert.deepEqual(shown(app), ["share", id]);
    await back(history);
    assert.deepEqual(shown(app), ["room", id]);
    await back(history);
    assert.deepEqual(shown(app), ["rooms", null]);
    assert.equal(history.left, false);
    await back(history);
    assert.equal(history.left, true);
    // Forward again, as a browser allows.
    history.forward();
    await traversed();
    assert.deepEqual(shown(app), ["room", id]);
    // The entries carry neither the room's id nor its key, and no URL has a fragment.
    const room = app.room(id);
    const written = JSON.stringify(history.entries);
    assert.ok(!written.includes(id) && !written.includes(room.key) && !written.includes(room.roomId.slice(0, 8)));
    assert.ok(history.entries.every((e) => !e.url.includes("#")));
  });

  it("a finished form gives its place to what it made; Rooms goes back to the first entry", async () => {
    const { app, history, id } = await withRoom();
    app.go("new");
    await app.createRoom({ label: "Second", nickname: "Ann", lifetime: "day" });
    assert.equal(app.state.screen, "share");
    await back(history);
    assert.deepEqual(shown(app), ["rooms", null]);

    app.go("room", id);
    app.go("share", id);
    app.go("rooms", null); // the app's own ‹ Rooms
    await traversed();
    assert.equal(history.index, 0);
    await back(history);
    assert.equal(history.left, true);
  });

  it("a screen opened while the browser goes back to the list gets its entry once there", async () => {
    const { app, history, id } = await withRoom();
    app.go("room", id);
    app.go("rooms", null);
    app.go("settings"); // before the browser is back
    await traversed();
    assert.equal(app.state.screen, "settings");
    assert.equal(history.index, 1);
    await back(history);
    assert.deepEqual(shown(app), ["rooms", null]);
  });

  it("a lock goes back to the first entry, and no entry reopens a room without the password", async () => {
    const { app, history, id } = await withRoom();
    app.go("room", id);
    app.go("settings");
    app.lock();
    await traversed();
    assert.equal(history.index, 0);
    assert.equal(app.state.screen, "unlock");
    history.forward(); // the entries of the room and of Settings are still there
    await traversed();
    assert.equal(app.state.screen, "unlock");
    history.forward();
    await traversed();
    assert.equal(app.state.screen, "unlock");

    await app.unlock(PASSWORD);
    assert.equal(app.state.screen, "rooms");
    await back(history); // an entry from before the lock: the list, never the room
    assert.deepEqual(shown(app), ["rooms", null]);
    history.forward();
    await traversed();
    assert.deepEqual(shown(app), ["rooms", null]);
  });

  it("a lock on the rooms list makes its entry the first of the new ones: Back and Forward go on as before", async () => {
    const { app, history, id } = await withRoom(); // on the first entry
    app.lock();
    await traversed();
    await app.unlock(PASSWORD);
    app.go("room", id);
    await back(history);
    assert.deepEqual(shown(app), ["rooms", null]);
    history.forward();
    await traversed();
    assert.deepEqual(shown(app), ["room", id]);
    await back(history);
    await back(history);
    assert.equal(history.left, true);
  });

  it("a reloaded page goes back to the first entry it made before: Back from there leaves, Forward stays", async () => {
    const { app, history, id, otherTab } = await withRoom();
    app.go("room", id);
    app.go("share", id);
    app.go("settings");
    assert.equal(history.index, 3);
    const page = window.reload();
    const { app: again } = await startApp({ page, indexedDB: otherTab.indexedDB });
    await traversed();
    assert.equal(page.history.index, 0);
    assert.equal(again.state.screen, "unlock");
    await again.unlock(PASSWORD);
    assert.deepEqual(shown(again), ["rooms", null]);
    // Forward to an entry of the page before the reload: it stands for nothing now.
    page.history.forward();
    await traversed();
    await traversed();
    assert.equal(page.history.index, 0);
    assert.deepEqual(shown(again), ["rooms", null]);
    await back(page.history);
    assert.equal(page.history.left, true);
  });

  it("an entry of a room forgotten since shows the list, as the first entry", async () => {
    const { app, history } = await withRoom();
    await app.createRoom({ label: "Gone", nickname: "Ann", lifetime: "day" });
    const gone = app.state.current;
    app.go("room", gone);
    app.go("settings");
    await app.store.removeRoom(gone);
    await back(history);
    await traversed();
    assert.deepEqual(shown(app), ["rooms", null]);
    assert.equal(history.index, 0);
  });

  it("an invite link opened in the open page is the Join screen's entry, without its key", async () => {
    const { app, history, id } = await withRoom();
    app.go("room", id);
    const key = makeMinikey(randomBytes);
    window.openFragment(`#${key}`);
    assert.equal(app.state.screen, "join");
    assert.equal(window.location.hash, "");
    assert.ok(!JSON.stringify(history.entries).includes(key));
    await app.joinRoom({ text: key, nickname: "Ann" });
    assert.equal(app.state.screen, "room");
    await back(history);
    assert.deepEqual(shown(app), ["room", id]);
    await back(history);
    assert.deepEqual(shown(app), ["rooms", null]);
    assert.ok(!JSON.stringify(history.entries).includes(key));
  });
});

describe("App: an invite link opened while locked", () => {
  it("leaves the Unlock screen the first entry: Back from the Join screen shows the list, once", async () => {
    const { app } = await startApp();
    const { history } = window;
    await app.unlock(PASSWORD, PASSWORD);
    app.go("settings");
    app.lock();
    await traversed();
    const key = makeMinikey(randomBytes);
    window.openFragment(`#${key}`);
    await traversed();
    assert.equal(history.index, 0);
    assert.ok(!JSON.stringify(history.entries).includes(key));
    await app.unlock(PASSWORD);
    assert.equal(app.state.screen, "join");
    assert.equal(app.state.joinText, key);
    history.back();
    await traversed();
    assert.equal(app.state.screen, "rooms");
    history.back();
    await traversed();
    assert.equal(history.left, true);
  });
});

describe("App: a key typed in one case", () => {
  it("says that keys mix capital and small letters, after what is wrong with it", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    const key = makeMinikey(randomBytes);
    for (const [typed, which] of [
      [key.toLowerCase(), "small"],
      [`https://a.relay.test/#${key.toLowerCase()}`, "small"],
      [key.toUpperCase(), "capital"],
      [`S${key.slice(1).toLowerCase()}`, "small after the S"],
    ]) {
      await app.joinRoom({ text: typed, nickname: "Ann" });
      assert.equal(app.state.screen, "join");
      assert.match(app.state.error, new RegExp(`^(A room key|Character|This room key).*case-sensitive.* are all ${which}:`));
    }
    // Typed in one case and passing the check by chance (one in 256 does): refused too.
    for (const [typed, which] of [
      ["S6c56bnxqibjk9mqsye7ykvq7n113c", "small after the S"],
      ["S6C56BNXQJBJK9MQSYE7YKVQ7N112Q", "capital"],
    ]) {
      await app.joinRoom({ text: typed, nickname: "Ann" });
      assert.equal(app.state.screen, "join");
      assert.match(app.state.error, new RegExp(`^This room key .*case-sensitive.* are all ${which}:`));
    }
    // Wrong for another reason: said as before, without a word on case.
    for (const typed of [key.toLowerCase().slice(1), `${key.slice(0, 29)}0`]) {
      await app.joinRoom({ text: typed, nickname: "Ann" });
      assert.doesNotMatch(app.state.error, /case-sensitive/);
    }
    assert.deepEqual(app.rooms, []);
  });
});

describe("App: a key in one case from an invite link (PROTOCOL.md 3.5 step 7, 3.7)", () => {
  // In one case, and passing the check: a key a room could have been made with before keys
  // in one case were refused. Typed, it is refused (above); from a link, it is a room's.
  const ONE_CASE_KEY = "S6C56BNXQJBJK9MQSYE7YKVQ7N112Q";

  it("an opened link's key joins, as the Join screen shows it", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    window.openFragment(`#${ONE_CASE_KEY}`);
    assert.equal(app.state.joinText, ONE_CASE_KEY);
    await app.joinRoom({ text: app.state.joinText, nickname: "Bob" });
    assert.equal(app.state.error, null);
    assert.equal(app.state.screen, "room");
    assert.equal(app.room(app.state.current).key, ONE_CASE_KEY);
    assert.equal(app.room(app.state.current).serverUrl, RELAY_A);
  });

  it("a pasted link joins; a scanned one, shown as its key, too", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    await app.joinRoom({ text: `${RELAY_B}/#${ONE_CASE_KEY}`, nickname: "Bob" });
    assert.equal(app.state.error, null);
    assert.equal(app.room(app.state.current).key, ONE_CASE_KEY);
    assert.equal(app.room(app.state.current).serverUrl, RELAY_B);

    const { app: scanning } = await startApp();
    await scanning.unlock(PASSWORD, PASSWORD);
    scanning.go("join");
    const shown = formatMinikey(ONE_CASE_KEY);
    scanning.scannedInvite(shown, `${RELAY_A}/`);
    await scanning.joinRoom({ text: shown, nickname: "Bob" });
    assert.equal(scanning.state.error, null);
    assert.equal(scanning.room(scanning.state.current).key, ONE_CASE_KEY);
  });

  it("the key typed over the link's is checked as typed", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    window.openFragment(`#${makeMinikey(randomBytes)}`);
    await app.joinRoom({ text: ONE_CASE_KEY, nickname: "Bob" });
    assert.equal(app.state.screen, "join");
    assert.match(app.state.error, /does not mix capital and small letters/);
    assert.deepEqual(app.rooms, []);
  });

  it("a room the key store will not take is said on the Join screen, not thrown", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    app.store.addRoom = () => {
      throw new Error("The key store would not take it.");
    };
    await app.joinRoom({ text: makeMinikey(randomBytes), nickname: "Bob" });
    assert.equal(app.state.screen, "join");
    assert.equal(app.state.error, "The key store would not take it.");
  });
});

describe("App: a room key in a relay's address (an invite link that lost its #)", () => {
  const key = makeMinikey(randomBytes);

  it("is refused in Settings and in a link, and nothing is stored with it", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    await app.saveSettings({ serverUrl: `${RELAY_B}/${key}`, idleLockMinutes: 5 });
    assert.match(app.state.error, /comes after a #/);
    assert.equal(app.store.data.serverUrl, RELAY_A);
    app.go("join");
    await app.joinRoom({ text: `${RELAY_B}/${key}#${makeMinikey(randomBytes)}`, nickname: "Bob" });
    assert.match(app.state.error, /comes after a #/);
    assert.equal(app.rooms.length, 0);
  });

  it("stored before it was refused, leaves the unlock and the other rooms going", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    await app.joinRoom({ text: makeMinikey(randomBytes), nickname: "Bob" });
    await app.joinRoom({ text: makeMinikey(randomBytes), nickname: "Bob" });
    const [bad, good] = app.rooms;
    bad.serverUrl = `${RELAY_B}/${key}`;
    await app.save();
    app.lock();
    socketUrls.length = 0;
    await app.unlock(PASSWORD);
    assert.equal(app.state.screen, "rooms");
    assert.match(app.liveRoom(bad.roomId).error, /comes after a #/);
    assert.equal(app.liveRoom(good.roomId).error ?? null, null);
    assert.deepEqual(socketUrls, ["wss://a.relay.test/ws"]); // the good room's relay, and only it
    // Writing there is said to fail, not thrown.
    assert.equal(await app.sendText(bad.roomId, "hello?"), false);
    assert.match(app.state.error, /comes after a #/);
  });
});

describe("App: an invite to a room already here, on another relay", () => {
  it("opens the room where it is, and says so", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    const key = makeMinikey(randomBytes);
    app.go("join");
    await app.joinRoom({ text: key, nickname: "Bob" });
    const room = app.room(app.state.current);
    assert.equal(room.serverUrl, RELAY_A);
    app.go("join");
    await app.joinRoom({ text: `${RELAY_B}/#${key}`, nickname: "Bob" });
    assert.equal(app.state.current, room.roomId);
    assert.equal(app.room(room.roomId).serverUrl, RELAY_A);
    assert.match(app.state.notice, /already, on the relay at a\.relay\.test: it stays there/);
    app.go("join");
    await app.joinRoom({ text: `${RELAY_A}/#${key}`, nickname: "Bob" });
    assert.equal(app.state.notice, null);
    // A bare key names no relay: the Settings one is not "another relay" for it.
    app.store.data.serverUrl = RELAY_B;
    app.go("join");
    await app.joinRoom({ text: key, nickname: "Bob" });
    assert.equal(app.state.current, room.roomId);
    assert.equal(app.state.notice, null);
  });
});

describe("App: a message refused as too long", () => {
  it("is said until the next one goes", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    await app.joinRoom({ text: makeMinikey(randomBytes), nickname: "Bob" });
    const id = app.state.current;
    assert.equal(await app.sendText(id, "x".repeat(60_001)), false);
    assert.match(app.state.error, /at most 60000 bytes/);
    assert.notEqual(await app.sendText(id, "shorter"), false);
    assert.equal(app.state.error, null);
  });
});

describe("App: what a person pastes on the Join screen", () => {
  it("a link that lost its #KEY is said to, and a nickname too long names the limit", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    await app.joinRoom({ text: `${RELAY_B}/`, nickname: "Bob" });
    assert.match(app.state.error, /This link holds no room key: an invite link ends with # and the key/);
    await app.joinRoom({ text: makeMinikey(randomBytes), nickname: "😀".repeat(17) });
    assert.match(app.state.error, /at most 64 bytes/);
    assert.equal(app.rooms.length, 0);
  });
});

describe("App: a message pasted whole on the Join screen", () => {
  it("joins the one link in it, on the link's relay only", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    const key = makeMinikey(randomBytes);
    const text = `Join me: ${RELAY_B}/#${key} see you`;
    assert.equal(app.joinServerFor(app.parseJoinText(text)), RELAY_B); // "Joins on the relay at ..."
    socketUrls.length = 0;
    await app.joinRoom({ text, nickname: "Bob" });
    assert.equal(app.state.error, null);
    assert.equal(app.state.screen, "room");
    assert.equal(app.room(app.state.current).key, key);
    assert.equal(app.room(app.state.current).serverUrl, RELAY_B);
    assert.deepEqual(socketUrls, ["wss://b.relay.test/ws"]);
  });

  it("joins a key after a label on the Settings relay; a relay only named around it is not used", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    socketUrls.length = 0;
    for (const text of [`Relay b.relay.test, key: ${makeMinikey(randomBytes)}`, `Key: ${makeMinikey(randomBytes)} on ${RELAY_B}/`]) {
      await app.joinRoom({ text, nickname: "Bob" });
      assert.equal(app.state.screen, "join");
      // Said to be a key among words (not a link that lost its #KEY, nor a length).
      assert.match(app.state.error, /^This text holds a room key among other words/);
    }
    assert.deepEqual(app.rooms, []);
    assert.deepEqual(socketUrls, []);
    const key = makeMinikey(randomBytes);
    await app.joinRoom({ text: `Room key: ${formatMinikey(key)}`, nickname: "Bob" });
    assert.equal(app.state.error, null);
    assert.equal(app.room(app.state.current).key, key);
    assert.equal(app.room(app.state.current).serverUrl, RELAY_A);
    assert.deepEqual(socketUrls, ["wss://a.relay.test/ws"]);
  });

  it("refuses two keys, and says what is wrong with a key mistyped among words", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("join");
    const [key, other] = [makeMinikey(randomBytes), makeMinikey(randomBytes)];
    await app.joinRoom({ text: `Join me: ${RELAY_B}/#${key}, or the other room: ${RELAY_B}/#${other}`, nickname: "Bob" });
    assert.equal(app.state.error, "This text holds two room keys: paste only one.");
    // One character changed: most often a typo the check catches (255 in 256).
    const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    const passes = (k) => {
      try {
        return parseMinikey(k) === k;
      } catch {
        return false;
      }
    };
    const typo = [...alphabet].map((c) => `${key.slice(0, 29)}${c}`).find((k) => !passes(k));
    await app.joinRoom({ text: `Join me: ${RELAY_B}/#${typo} see you`, nickname: "Bob" });
    assert.match(app.state.error, /^This room key does not pass its check: most likely a typo/);
    await app.joinRoom({ text: `Key: ${formatMinikey(typo)}`, nickname: "Bob" });
    assert.match(app.state.error, /^This room key does not pass its check: most likely a typo/);
    // Typed all in small letters after a label: said as for a bare key.
    await app.joinRoom({ text: `Key: S${key.slice(1).toLowerCase()}`, nickname: "Bob" });
    assert.match(app.state.error, /case-sensitive.* are all small after the S:/);
    assert.deepEqual(app.rooms, []);
  });
});

describe("App: rooms that expired while locked", () => {
  it("are said at unlocking, as those that expire while unlocked are", async () => {
    const { app, otherTab } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    for (const label of ["Short", "Long"]) {
      const room = app.store.addRoom({ key: makeMinikey(randomBytes), label, expiresAtMs: Date.now() + 3_600_000 });
      room.serverUrl = RELAY_A;
    }
    await app.save();
    app.lock();
    const locked = await KeyStore.unlock(PASSWORD, otherTab);
    locked.data.rooms[0].expiresAtMs = Date.now() - 1; // over while the app was locked
    await locked.save();
    locked.lock();

    await app.unlock(PASSWORD);
    assert.deepEqual(app.rooms.map((room) => room.label), ["Long"]);
    assert.equal(app.state.notice, "“Short” expired and was deleted.");
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

    // After the read that unlocks and the one that reads the store again once this tab
    // holds the tab lock (App.unlock), before the save.
    beforeOpen(3, () => deleteRecord(otherTab));
    await app.unlock(PASSWORD);
    assert.equal(app.store, null);
    assert.equal(app.state.screen, "unlock");
    assert.match(app.state.notice, /changed in another tab/);
  });
});

describe("App: a save that fails for another reason than another tab", () => {
  const quotaExceeded = () => {
    throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
  };

  it("a new room that could not be saved stays on the New room screen with the error", async () => {
    const { app, otherTab, beforeOpen } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    socketUrls.length = 0;
    beforeOpen(1, quotaExceeded);
    await app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    assert.equal(app.state.screen, "new");
    assert.match(app.state.error, /Could not save: The quota has been exceeded/);
    assert.match(app.state.error, /“Trip” was not made/);
    assert.deepEqual(app.rooms, []); // nothing half done: no room to show, none to save later
    assert.deepEqual(socketUrls, []);
    assert.deepEqual((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms, []);

    await app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" }); // again
    assert.equal(app.state.screen, "share");
    assert.equal(app.state.error, null);
    assert.equal((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms.length, 1);
  });

  it("a joined room that could not be saved stays on the Join screen with the error and the key", async () => {
    const { app, otherTab, beforeOpen } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    const key = makeMinikey(randomBytes);
    app.set({ joinText: key });
    app.go("join");
    beforeOpen(1, quotaExceeded);
    await app.joinRoom({ text: key, nickname: "Ann" });
    assert.equal(app.state.screen, "join");
    assert.match(app.state.error, /Could not save: .* was not joined/);
    assert.equal(app.state.joinText, key);
    assert.deepEqual(app.rooms, []);
    assert.deepEqual((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms, []);

    await app.joinRoom({ text: key, nickname: "Ann" });
    assert.equal(app.state.screen, "room");
    assert.equal(app.state.error, null);
  });
});

describe("App: kept history across a lock", () => {
  it("a message the relay had not taken shows as sending again after unlocking, one it took as sent", async () => {
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

    app.lock("Locked after a while without use."); // the stored outbox stays
    await app.unlock(PASSWORD);
    const shown = app.liveRoom(id).messages.map((m) => [m.text, m.status]);
    assert.deepEqual(shown, [
      ["taken by the relay", "sent"],
      ["still in the outbox", "sending"],
    ]);
  });
});

describe("App: a room the relay refuses", () => {
  const refusal = (id, code, fatal) => ({ roomId: fromHex(id), code, ref: 0, reason: "This room is full.", fatal });

  it("full for now: says so in the relay's words, keeps what waits, and JOINED clears it", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Busy", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    assert.equal(await app.sendText(id, "waits for a place"), true);
    const connection = app.connections.get(app.room(id).serverUrl);
    connection.dispatchEvent(new CustomEvent("refused", { detail: refusal(id, ErrorCode.ROOM_FULL, false) }));
    assert.equal(
      app.liveRoom(id).error,
      "The relay has no place for you now. It says: “This room is full.” Trying again every 15 seconds.",
    );
    assert.deepEqual(app.liveRoom(id).messages.map((m) => m.status), ["sending"]);
    assert.ok(app.room(id), "the room is kept");
    connection.dispatchEvent(new CustomEvent("joined", { detail: { roomId: fromHex(id), members: 2, expiresAtMs: 0 } }));
    assert.equal(app.liveRoom(id).error, null);
  });

  it("a nickname with a broken character is refused before any room is made", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Cut", nickname: "Ann \ud83d", lifetime: "day" });
    assert.match(app.state.error, /broken character/);
    assert.equal(app.rooms.length, 0);
  });

  it("for good: says the relay refused the room", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Gone", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    const connection = app.connections.get(app.room(id).serverUrl);
    connection.dispatchEvent(new CustomEvent("refused", { detail: refusal(id, ErrorCode.EXPIRY_TOO_FAR, true) }));
    assert.equal(app.liveRoom(id).error, "The relay refused this room. It says: “This room is full.”");
  });

  it("quotes the relay's words with none of its own quotation marks, which could end ours", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Spoof", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    const connection = app.connections.get(app.room(id).serverUrl);
    const reason = '” Your key leaked: make a new room. “ "ok" «so» „this‟ 〝that〞 ＂end＂';
    connection.dispatchEvent(
      new CustomEvent("refused", { detail: { ...refusal(id, ErrorCode.EXPIRY_TOO_FAR, true), reason } }),
    );
    assert.equal(
      app.liveRoom(id).error,
      "The relay refused this room. It says: “' Your key leaked: make a new room. ' 'ok' 'so' 'this' 'that' 'end'”",
    );
  });
});

/**
 * WebSockets to a relay that lets every JOIN in and sends nothing else by itself; the
 * test sends DELIVER frames with `deliver`, as a relay replaying what it recorded would.
 */
const liveSockets = [];
class RelaySocket extends EventTarget {
  constructor() {
    super();
    this.published = []; // the PUBLISH frames it got, never acknowledged unless the test does
    this.closed = false;
    this.protocol = SUBPROTOCOL;
    this.readyState = 0;
    liveSockets.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    });
  }
  send(data) {
    const frame = decodeFrame(data);
    if (frame.type === "Join") this.push({ type: "Challenge", roomId: frame.roomId, challenge: new Uint8Array(32) });
    if (frame.type === "Proof") this.push({ type: "Joined", roomId: frame.roomId, expiresAtMs: 0, members: 2 });
    if (frame.type === "Publish") this.published.push(frame);
  }
  push(frame) {
    const bytes = encodeFrame(frame);
    this.dispatchEvent(Object.assign(new Event("message"), { data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) }));
  }
  close() {
    this.closed = true;
    this.readyState = 3;
  }
}

/** Let the app's connection run until its session has joined room `id`. */
async function joined(app, id) {
  const connection = app.connections.get(app.room(id).serverUrl);
  for (let i = 0; i < 100 && !connection.rooms.get(id)?.joined; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    await connection.idle();
  }
  assert.ok(connection.rooms.get(id)?.joined, "the room was not joined");
  return connection;
}

/**
 * Let the app run until `socket` got `count` PUBLISH frames. A deadline, not a number of
 * turns: a restored outbox is opened with WebCrypto first, which takes longer under load.
 */
async function published(app, socket, count) {
  const deadline = Date.now() + 5_000;
  while (socket.published.length < count && Date.now() < deadline) {
    await new Promise((resolve) => setImmediate(resolve));
    for (const connection of app.connections.values()) await connection.idle();
  }
  assert.equal(socket.published.length, count);
  return socket.published;
}

/**
 * Room `id` of `app` as another member (alice) and its relay (the last RelaySocket) see
 * it: `envelopeOf(text, timestampMs)` seals a text message of hers (stamped now unless
 * told otherwise); `deliver` sends envelopes to
 * the app, as a relay replaying what it recorded would; `texts()` is what the room shows.
 */
function aliceIn(app, id) {
  const room = roomKeysFromMinikey(app.room(id).key);
  const alice = deviceKeyFromSeed(randomBytes(32));
  const envelopeOf = async (text, timestampMs = Date.now()) => {
    const message = {
      messageId: randomBytes(16),
      timestampMs,
      kind: Kind.TEXT,
      senderKey: alice.publicKey,
      senderName: "alice",
      body: utf8.encode(text),
    };
    return { id: hex(message.messageId), envelope: await sealEnvelope(room, alice, message, randomBytes(12)) };
  };
  const deliver = async (connection, ...sealed) => {
    for (const { envelope } of sealed) liveSockets.at(-1).push({ type: "Deliver", roomId: room.roomId, envelope });
    await connection.idle();
    await app._shown; // each shows once its journal entry is written
  };
  const texts = () => app.liveRoom(id).messages.map((m) => m.text);
  return { envelopeOf, deliver, texts };
}

describe("App: a device clock far from the relay's", () => {
  const relayOff = (ms) => async () => Date.now() - ms;
  const settled = () => new Promise((resolve) => setTimeout(resolve, 0));

  it("is said, fast or slow, and not when it is near", async () => {
    for (const [offset, said] of [
      [0, null],
      [CLOCK_WARNING_MS - 5_000, null],
      [-(CLOCK_WARNING_MS - 5_000), null],
      [12 * 60_000, /clock is 12 minutes fast\. Others drop messages dated more than 5 minutes ahead/],
      [-7 * 60_000, /clock is 7 minutes slow\. Messages from others then look more than 5 minutes ahead/],
      [3 * 3_600_000, /clock is about 3 hours fast/],
    ]) {
      const { app } = await startApp({ relayTime: relayOff(offset) });
      await settled();
      if (said === null) assert.equal(app.clockWarning, null, `${offset}`);
      else assert.match(app.clockWarning ?? "", said);
      app.lock();
    }
  });

  it("is measured again when the page comes back, and kept when the relay cannot tell", async () => {
    let offset = 20 * 60_000;
    let answers = true;
    const { app } = await startApp({ relayTime: async () => (answers ? Date.now() - offset : null) });
    await settled();
    assert.match(app.clockWarning ?? "", /20 minutes fast/);
    offset = 0; // set right meanwhile
    document.dispatchEvent(new Event("visibilitychange"));
    await settled();
    assert.equal(app.clockWarning, null);
    offset = -30 * 60_000;
    answers = false;
    document.dispatchEvent(new Event("visibilitychange"));
    await settled();
    assert.equal(app.clockWarning, null); // no answer: nothing new to say
    app.lock();
  });
});

describe("uptimeFromHeader: how long ago the relay started, from InstantRoom-Uptime", () => {
  it("reads 1 to 6 decimal digits, and nothing else (as the terminal client, PROTOCOL.md 10.1)", () => {
    assert.equal(uptimeFromHeader("0"), 0);
    assert.equal(uptimeFromHeader("42"), 42);
    assert.equal(uptimeFromHeader("999999"), 999999);
    for (const header of [null, "", "1234567", "-1", "1.5", " 3", "3 ", "0x10", "1e3", "\u0663", "3, 4"]) {
      assert.equal(uptimeFromHeader(header), null, JSON.stringify(header));
    }
  });
});

describe("relayTimeFromDate: the relay's clock from its Date header", () => {
  it("reads an HTTP date, taking the middle of its second", () => {
    assert.equal(relayTimeFromDate("Fri, 27 Nov 2026 18:00:00 GMT"), Date.UTC(2026, 10, 27, 18) + 500);
  });

  it("believes no clock from what is not one HTTP date", () => {
    for (const header of [
      null,
      "",
      "0", // Date.parse: the year 2000
      "1",
      "2026-11-27T18:00:00Z",
      "Fri, 27 Nov 2026 18:00:00 GMT, Fri, 27 Nov 2026 18:00:00 GMT", // two, joined by fetch
      "Fri, 27 Nov 2026 18:00:00 +0100",
      " Fri, 27 Nov 2026 18:00:00 GMT",
    ]) {
      assert.equal(relayTimeFromDate(header), null, JSON.stringify(header));
    }
  });
});

describe("App: a custom lifetime (New room, Custom…)", () => {
  const MINUTE = 60_000;
  const DAY = 24 * 60 * MINUTE;

  it("is a whole number of minutes, hours, days or weeks, named in words", () => {
    assert.deepEqual(customLifetime("3", "hours"), { label: "3 hours", ms: 3 * 60 * MINUTE });
    assert.deepEqual(customLifetime(" 1 ", "days"), { label: "1 day", ms: DAY });
    assert.deepEqual(customLifetime("90", "minutes"), { label: "90 minutes", ms: 90 * MINUTE });
    assert.deepEqual(customLifetime(2, "weeks"), { label: "2 weeks", ms: 14 * DAY });
    assert.deepEqual(customLifetime("007", "days"), { label: "7 days", ms: 7 * DAY });
  });

  it("lasts 5 minutes at least and 30 days at most (a day within a relay's 31, for a clock a little fast)", () => {
    assert.equal(customLifetime("5", "minutes").ms, 5 * MINUTE);
    assert.equal(customLifetime("30", "days").ms, 30 * DAY);
    assert.equal(customLifetime("720", "hours").ms, 30 * DAY);
    assert.throws(() => customLifetime("4", "minutes"), { message: "A room lives for 5 minutes at least." });
    const longest = { message: "A room lives for 30 days at most: a relay keeps a room 31 days at most by default." };
    assert.throws(() => customLifetime("31", "days"), longest);
    assert.throws(() => customLifetime("721", "hours"), longest);
    assert.throws(() => customLifetime("5", "weeks"), longest);
    assert.throws(() => customLifetime("99999999999999999999999", "weeks"), longest);
  });

  it("refuses what is not a whole number greater than zero, and units it does not know", () => {
    const empty = { message: "Say how long the room lives: a whole number of minutes, hours, days or weeks." };
    for (const amount of ["", "  ", undefined, null]) assert.throws(() => customLifetime(amount, "hours"), empty);
    const whole = { message: "A room's lifetime is a whole number greater than zero, like 3 or 90." };
    for (const amount of ["0", "000", "-1", "1.5", "2e3", "0x10", "3h", "three", "١", "+3", "Infinity", "NaN"]) {
      assert.throws(() => customLifetime(amount, "hours"), whole, amount);
    }
    for (const unit of ["years", "hour", "", undefined, "constructor", "__proto__"]) {
      assert.throws(() => customLifetime("3", unit), { message: "Choose minutes, hours, days or weeks." }, String(unit));
    }
  });

  it("makes a room that expires that long from now", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    const before = Date.now();
    await app.createRoom({ label: "Short", nickname: "Ann", lifetime: "custom", customAmount: "3", customUnit: "hours" });
    const room = app.room(app.state.current);
    assert.equal(app.state.error, null);
    assert.equal(room.label, "Short");
    assert.ok(room.expiresAtMs >= before + 3 * 60 * MINUTE && room.expiresAtMs <= Date.now() + 3 * 60 * MINUTE);
    assert.equal(formatRemaining(room.expiresAtMs, Date.now()), "expires in 3 h");
  });

  it("one out of bounds, or not a number, is said and makes no room", async () => {
    const { app, otherTab } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    const custom = (customAmount, customUnit) =>
      app.createRoom({ label: "Bad", nickname: "Ann", lifetime: "custom", customAmount, customUnit });
    await custom("0", "hours");
    assert.equal(app.state.error, "A room's lifetime is a whole number greater than zero, like 3 or 90.");
    await custom("40", "days");
    assert.equal(app.state.error, "A room lives for 30 days at most: a relay keeps a room 31 days at most by default.");
    await custom("2", "minutes");
    assert.equal(app.state.error, "A room lives for 5 minutes at least.");
    await custom("", "hours");
    assert.match(app.state.error, /^Say how long the room lives/);
    assert.equal(app.state.screen, "new");
    assert.equal(app.state.creating, false);
    assert.deepEqual(app.rooms, []);
    assert.deepEqual((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms, []);
    // The lifetimes of the list are as they were, and only they: nothing from Object's prototype.
    await app.createRoom({ label: "Proto", nickname: "Ann", lifetime: "toString" });
    assert.equal(app.state.error, "Choose how long the room lives.");
    assert.deepEqual(app.rooms, []);
    await app.createRoom({ label: "Hour", nickname: "Ann", lifetime: "hour", customAmount: "40", customUnit: "days" });
    assert.equal(app.state.error, null, "the custom fields count only for Custom…");
    assert.equal(app.rooms.length, 1);
  });
});

describe("App: rooms expire by a clock the relay's says is right", () => {
  it("a device clock a day fast deletes no room early; one on time does", async () => {
    const DAY = 24 * 3_600_000;
    for (const [fastBy, kept] of [[DAY, true], [0, false]]) {
      const { app } = await startApp({ relayTime: async () => Date.now() - fastBy });
      await new Promise((resolve) => setTimeout(resolve, 0)); // the clocks compared
      await app.unlock(PASSWORD, PASSWORD);
      await app.createRoom({ label: "Trip", nickname: "Bob", lifetime: "day" });
      const id = app.state.current;
      // Made by the relay's time: a day's lifetime from then, not from a clock a day ahead.
      assert.ok(app.room(id).expiresAtMs <= Date.now() - fastBy + DAY + 1000);
      app.room(id).expiresAtMs = Date.now() - 60_000; // over, by this device's clock
      app._checkExpiry();
      assert.equal(app.room(id) !== null, kept, `fast by ${fastBy}`);
      app.lock();
    }
  });
});

describe("App: a relay that says the clock is more than 31 days fast", () => {
  it("is not believed for expiry: it cannot keep a room's key for as long as it likes", async () => {
    const DAY = 24 * 3_600_000;
    const { app } = await startApp({ relayTime: async () => Date.now() - 40 * DAY });
    await new Promise((resolve) => setTimeout(resolve, 0)); // the clocks compared
    assert.match(app.clockWarning ?? "", /about 40 days fast/); // said all the same
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Trip", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    assert.ok(app.room(id).expiresAtMs >= Date.now() + DAY - 60_000); // by this clock
    app.room(id).expiresAtMs = Date.now() - 60_000;
    app._checkExpiry();
    assert.equal(app.room(id), null);
    app.lock();
  });
});

describe("App: a message dropped as dated ahead", () => {
  it("is said in its room, once however many come", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Clocks", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const { envelopeOf, deliver, texts } = aliceIn(app, id);
    const connection = await joined(app, id);
    await deliver(connection, await envelopeOf("on time"), await envelopeOf("a little ahead", Date.now() + 60_000));
    assert.equal(app.liveRoom(id).droppedAhead, null);
    await new Promise((resolve) => setTimeout(resolve, 0)); // the arrivals' own redraw (changedSoon)
    let draws = 0;
    app.subscribe(() => draws++);
    const fast = [];
    for (let n = 0; n < 5; n++) fast.push(await envelopeOf(`fast ${n}`, Date.now() + 12 * 60_000 + n));
    await deliver(connection, ...fast);
    assert.match(app.liveRoom(id).droppedAhead ?? "", /^A message dated 12 minutes ahead of this device's clock was dropped/);
    assert.equal(draws, 1);
    assert.deepEqual(texts(), ["on time", "a little ahead"]); // the fast ones are not shown
    app.lock();
  });
});

describe("App: redraws for what the relay sends", () => {
  const settled = () => new Promise((resolve) => setTimeout(resolve, 0));

  it("PRESENCE with the count already shown draws nothing; a burst of new counts draws once", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Count", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const connection = await joined(app, id);
    await settled();
    const members = app.liveRoom(id).members;
    let draws = 0;
    app.subscribe(() => draws++);
    for (let n = 0; n < 50; n++) liveSockets.at(-1).push({ type: "Presence", roomId: fromHex(id), members });
    await connection.idle();
    await settled();
    assert.equal(draws, 0);
    // Counts that change, each frame a task of its own: one redraw, of the last count.
    for (let n = 0; n < 50; n++) {
      liveSockets.at(-1).push({ type: "Presence", roomId: fromHex(id), members: 3 + (n % 4) });
      await connection.idle();
    }
    assert.equal(draws, 0); // not yet: at the next frame
    await settled();
    assert.equal(draws, 1);
    assert.equal(app.liveRoom(id).members, 3 + (49 % 4));
    app.lock();
  });

  it("a connection's error event draws nothing", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Errors", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const connection = await joined(app, id);
    await settled();
    let draws = 0;
    let errors = 0;
    app.subscribe(() => draws++);
    connection.addEventListener("error", () => errors++);
    for (let n = 0; n < 20; n++) {
      // A frame that makes no sense: an unknown type.
      const data = new Uint8Array([0x7f, 0, 0, 0, n]).buffer;
      liveSockets.at(-1).dispatchEvent(Object.assign(new Event("message"), { data }));
    }
    await connection.idle();
    await settled();
    assert.equal(errors, 20);
    assert.equal(draws, 0);
    assert.equal(app.connectionState(id), "online");
    app.lock();
  });

  it("a person's own action still draws at once", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    let draws = 0;
    app.subscribe(() => draws++);
    app.go("settings");
    assert.equal(draws, 1);
    app.lock();
  });
});

describe("formatRemaining", () => {
  it("says any expiry a relay may name, however far", () => {
    const now = Date.UTC(2026, 10, 27);
    assert.equal(formatRemaining(0, now), "lifetime not known yet");
    assert.equal(formatRemaining(now - 1, now), "expired");
    assert.equal(formatRemaining(now + 90_000, now), "expires in 2 min");
    assert.equal(formatRemaining(now + 5 * 3_600_000, now), "expires in 5 h");
    assert.equal(formatRemaining(now + 30 * 86_400_000, now), "expires in 30 days");
    for (const far of [2 ** 53 - 1, 8.64e15 + 1, Date.UTC(10000, 0, 1)]) {
      assert.equal(formatRemaining(far, now), "expires in more than 100 years");
    }
  });
});

describe("formatTime", () => {
  it("says a time as toLocaleTimeString with hour and minute did", () => {
    const times = [0, Date.UTC(2024, 0, 1, 0, 5), Date.UTC(2024, 6, 15, 12, 0), Date.UTC(2025, 2, 30, 23, 59, 59), Date.now()];
    for (const ms of times) {
      assert.equal(formatTime(ms), new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), `${ms}`);
    }
    assert.equal(formatTime(Date.UTC(2024, 0, 1, 9, 7)), formatTime(Date.UTC(2024, 0, 1, 9, 7, 59))); // minutes only
  });
});

describe("App: arrivals, shown once their journal entry is written", () => {
  it("show in the order they came, and one that fails to draw stops none after it", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Order", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    app.setKeepHistory(id, true);
    const { envelopeOf, deliver, texts } = aliceIn(app, id);
    const connection = await joined(app, id);
    let throwOnce = true;
    app.subscribe(() => {
      if (throwOnce && texts().includes("one")) {
        throwOnce = false;
        throw new Error("a screen that failed to draw");
      }
    });
    const at = Date.now() - 1000;
    await deliver(connection, ...(await Promise.all(["one", "two", "three"].map((t) => envelopeOf(t, at)))));
    assert.deepEqual(texts(), ["one", "two", "three"]);
    assert.deepEqual(app.room(id).messages.map((m) => m.text), ["one", "two", "three"]);
    // Arrivals are drawn at the next frame (changedSoon): the draw that failed is said.
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(throwOnce, false);
    assert.match(app.state.error ?? "", /a screen that failed to draw/);
    app.lock();
  });
});

describe("App: a message dropped as dated ahead, some time ago", () => {
  it("is no longer said DROPPED_AHEAD_SHOWN_MS after the last one", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Clocks", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const { envelopeOf, deliver } = aliceIn(app, id);
    const connection = await joined(app, id);
    const realNow = Date.now;
    const later = (ms) => {
      Date.now = () => realNow() + ms;
      app._checkExpiry();
      Date.now = realNow;
      return app.liveRoom(id).droppedAhead;
    };
    try {
      await deliver(connection, await envelopeOf("fast", Date.now() + 12 * 60_000));
      assert.match(app.liveRoom(id).droppedAhead ?? "", /12 minutes ahead/);
      assert.match(later(DROPPED_AHEAD_SHOWN_MS - 5_000) ?? "", /12 minutes ahead/);
      // Another one keeps it said for as long again.
      const then = realNow() + DROPPED_AHEAD_SHOWN_MS - 4_000;
      Date.now = () => realNow() + DROPPED_AHEAD_SHOWN_MS - 4_000;
      await deliver(connection, await envelopeOf("fast again", then + 12 * 60_000));
      Date.now = realNow;
      assert.match(later(DROPPED_AHEAD_SHOWN_MS + 5_000) ?? "", /12 minutes ahead/);
      assert.equal(later(2 * DROPPED_AHEAD_SHOWN_MS), null);
    } finally {
      Date.now = realNow;
    }
    app.lock();
  });
});

describe("App: unread messages", () => {
  it("are counted per room and in the tab's title until the room is seen in sight", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Weekend", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const { envelopeOf, deliver } = aliceIn(app, id);
    const connection = await joined(app, id);
    const unread = () => [app.liveRoom(id).unread, document.title];

    // The room's key shows first (the Share screen): what comes meanwhile is not seen.
    assert.equal(app.state.screen, "share");
    await deliver(connection, await envelopeOf("while the key shows"));
    assert.deepEqual(unread(), [1, "(1) InstantRoom"]);
    app.go("room", id);
    assert.deepEqual(unread(), [0, "InstantRoom"]);
    await deliver(connection, await envelopeOf("read as it comes"));
    assert.deepEqual(unread(), [0, "InstantRoom"]);

    app.go("rooms");
    const two = await envelopeOf("two");
    await deliver(connection, two, await envelopeOf("three"));
    assert.deepEqual(unread(), [2, "(2) InstantRoom"]);
    await deliver(connection, two); // the same message again counts once
    assert.deepEqual(unread(), [2, "(2) InstantRoom"]);
    app.go("room", id);
    assert.deepEqual(unread(), [0, "InstantRoom"]);

    // On the room's screen, in a tab out of sight: unread until the tab is seen.
    document.visibilityState = "hidden";
    try {
      await deliver(connection, await envelopeOf("while away"));
      assert.deepEqual(unread(), [1, "(1) InstantRoom"]);
      assert.ok(!document.title.includes("Weekend") && !document.title.includes("away"));
    } finally {
      document.visibilityState = "visible";
    }
    document.dispatchEvent(new Event("visibilitychange"));
    assert.deepEqual(unread(), [0, "InstantRoom"]);

    app.go("rooms");
    await deliver(connection, await envelopeOf("before the lock"));
    assert.equal(document.title, "(1) InstantRoom");
    app.lock();
    assert.equal(document.title, "InstantRoom"); // a lock shows no count
  });
});

describe("App: a relay replaying messages after an unlock", () => {
  it("a deleted message stays deleted and a kept one is not shown twice", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Kept", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    await app.setKeepHistory(id, true);
    const { envelopeOf, deliver, texts } = aliceIn(app, id);
    const toDelete = await envelopeOf("to delete");
    const toKeep = await envelopeOf("to keep");
    const kept = () => app.room(id).messages.map((m) => m.text);

    await deliver(await joined(app, id), toDelete, toKeep);
    assert.deepEqual(texts(), ["to delete", "to keep"]);
    await app.deleteMessage(id, toDelete.id);
    assert.deepEqual(kept(), ["to keep"]);

    app.lock("Locked after a while without use.");
    await app.unlock(PASSWORD);
    const connection = await joined(app, id);
    // The relay sends the very same envelopes again, then a new one.
    await deliver(connection, toDelete, toKeep, await envelopeOf("new"));
    assert.deepEqual(texts(), ["to keep", "new"]);
    assert.deepEqual(kept(), ["to keep", "new"]);
    assert.deepEqual(
      app.room(id).deleted.map((d) => d.id),
      [toDelete.id],
    );
  });

  it("in a room that keeps no history, a message received or sent before is not shown again", async () => {
    const { app, otherTab } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Not kept", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    assert.equal(app.room(id).keepHistory, false);
    const { envelopeOf, deliver, texts } = aliceIn(app, id);
    const received = await envelopeOf("received before the lock");

    let connection = await joined(app, id);
    await deliver(connection, received);
    assert.equal(await app.sendText(id, "sent before the lock"), true);
    const [mine] = await published(app, liveSockets.at(-1), 1);
    liveSockets.at(-1).push({ type: "Ack", ref: mine.ref }); // taken: it leaves the outbox
    await connection.idle();
    assert.deepEqual(texts(), ["received before the lock", "sent before the lock"]);
    const sent = app.liveRoom(id).messages[1];
    app.flushSave();
    await app._saving;

    // Their ids and times are stored, never their text: the room keeps no history.
    const stored = (await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0];
    assert.deepEqual(
      stored.recent.map((r) => [r.id, Object.keys(r).sort()]),
      [
        [received.id, ["id", "timestampMs"]],
        [sent.id, ["id", "timestampMs"]],
      ],
    );
    assert.deepEqual([stored.messages, stored.outbox], [[], []]);
    assert.ok(!JSON.stringify(stored).includes("before the lock"));

    app.lock("Locked after a while without use.");
    await app.unlock(PASSWORD);
    assert.deepEqual(texts(), []); // nothing was kept
    connection = await joined(app, id);
    // The relay sends the very same envelopes again, ours too, then a new one.
    await deliver(connection, received, { envelope: mine.envelope }, await envelopeOf("new"));
    assert.deepEqual(texts(), ["new"]);
    assert.equal(app.room(id).recent.length, 3);
  });

  it("in a room with more recent messages than the store keeps, those whose ids it dropped are not shown again", async () => {
    const { app, otherTab } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Busy", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    assert.equal(app.room(id).keepHistory, false); // nothing but `recent` knows what came
    const { envelopeOf, deliver, texts } = aliceIn(app, id);
    const start = Date.now() - 30 * 60_000;
    const first = await envelopeOf("the first of a busy half hour", start);
    await deliver(await joined(app, id), first);
    assert.deepEqual(texts(), ["the first of a busy half hour"]);
    // MAX_RECENT_PER_ROOM more came after it (their ids only are needed here): the save
    // drops the first one's id for the cap, and keeps its time as the floor.
    const room = app.room(id);
    for (let n = 1; n <= MAX_RECENT_PER_ROOM; n++) room.recent.push({ id: hex(randomBytes(16)), timestampMs: start + n });
    await app.save();
    const stored = (await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0];
    assert.equal(stored.recent.length, MAX_RECENT_PER_ROOM);
    assert.ok(!stored.recent.some((r) => r.id === first.id));
    assert.equal(stored.recentFloorMs, start);

    app.lock("Locked after a while without use.");
    await app.unlock(PASSWORD);
    const connection = await joined(app, id);
    // The relay sends the first one again; one stamped just after it, never seen, is shown.
    await deliver(connection, first, await envelopeOf("late, but after the floor", start + 1), await envelopeOf("new"));
    assert.deepEqual(texts(), ["late, but after the floor", "new"]);
  });

  it("the replay filter is told the recent ids along with the kept, deleted and waiting ones", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Seeded", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const now = Date.now();
    const recent = hex(randomBytes(16));
    const deleted = hex(randomBytes(16));
    app.store.recordRecent(id, recent, now - 1000);
    app.store.recordDeleted(id, deleted, now - 2000);
    await app.save();
    app.lock("Locked after a while without use.");
    await app.unlock(PASSWORD);
    const connection = app.connections.get(app.room(id).serverUrl);
    const told = [];
    const remember = connection.session.remember.bind(connection.session);
    connection.session.remember = (roomId, messageId, timestampMs, nowMs) => {
      told.push([hex(roomId), hex(messageId), timestampMs]);
      return remember(roomId, messageId, timestampMs, nowMs);
    };
    app._seedReplayFilter(connection, app.room(id));
    assert.deepEqual(told, [
      [app.room(id).roomId, deleted, now - 2000],
      [app.room(id).roomId, recent, now - 1000],
    ]);
  });
});

/** The throttled saves' clock: its timers run only when the test moves it. */
class FakeClock {
  constructor() {
    this.time = 1_790_000_000_000;
    this.timers = new Set();
    this.now = () => this.time;
    this.setTimer = (action, ms) => {
      const timer = { at: this.time + ms, action };
      this.timers.add(timer);
      return timer;
    };
    this.clearTimer = (timer) => this.timers.delete(timer);
  }

  advance(ms) {
    this.time += ms;
    for (const timer of [...this.timers].sort((a, b) => a.at - b.at)) {
      if (timer.at > this.time) break;
      this.timers.delete(timer);
      timer.action();
    }
  }
}

describe("App: saves caused by arriving messages are throttled", () => {
  async function flooded({ keepHistory = true, timestampMs = (n) => 1000 + n } = {}) {
    const clock = new FakeClock();
    const { app, otherTab } = await startApp({ clock });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Busy", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    await app.setKeepHistory(id, keepHistory);
    const store = app.store;
    const save = store.save.bind(store);
    const saves = { count: 0 };
    store.save = () => {
      saves.count += 1;
      return save();
    };
    const connection = app.connections.get(app.room(id).serverUrl);
    let n = 0;
    const arrive = (count = 1) => {
      for (let i = 0; i < count; i++, n++) {
        const messageId = randomBytes(16);
        const message = { messageId, timestampMs: timestampMs(n), kind: 1, senderName: "alice", senderKey: new Uint8Array(32) };
        const detail = { roomId: fromHex(id), message, text: `flood ${n}`, fingerprint: "AAAA-BBBB-CCCC-DDDD", keyChanged: false };
        connection.dispatchEvent(new CustomEvent("message", { detail }));
      }
    };
    const stored = async () => (await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0].messages.length;
    const storedRecent = async () => (await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0].recent.length;
    return { app, clock, id, saves, arrive, stored, storedRecent, connection };
  }

  it("in a room that keeps no history, arrivals are saved too (their ids only), as throttled", async () => {
    const { app, clock, saves, arrive, stored, storedRecent } = await flooded({ keepHistory: false, timestampMs: () => Date.now() });
    arrive(50);
    assert.equal(saves.count, 0);
    clock.advance(SAVE_THROTTLE_MS);
    assert.equal(saves.count, 1); // one save for the 50
    await app._saving;
    assert.equal(await storedRecent(), 50);
    assert.equal(await stored(), 0);
    arrive(10);
    clock.advance(SAVE_THROTTLE_MS);
    assert.equal(saves.count, 2);
    await app._saving;
    assert.equal(await storedRecent(), 60);
    clock.advance(5 * SAVE_THROTTLE_MS); // quiet for a while: the next arrival is written at once, once
    arrive();
    assert.equal(saves.count, 3);
    assert.equal(clock.timers.size, 0);
  });

  it("a flood is written at most once a second, the last message too", async () => {
    const { app, clock, saves, arrive, stored } = await flooded();
    arrive(50); // right after the person's own save: the wait is not over
    assert.equal(saves.count, 0);
    clock.advance(SAVE_THROTTLE_MS - 1);
    arrive(50);
    assert.equal(saves.count, 0);
    clock.advance(1);
    assert.equal(saves.count, 1);
    await app._saving;
    assert.equal(await stored(), 100);
    arrive(10);
    clock.advance(SAVE_THROTTLE_MS / 2);
    assert.equal(saves.count, 1);
    clock.advance(SAVE_THROTTLE_MS / 2);
    assert.equal(saves.count, 2);
    await app._saving;
    assert.equal(await stored(), 110);
    clock.advance(5 * SAVE_THROTTLE_MS); // quiet for a while: the next arrival is written at once
    arrive();
    assert.equal(saves.count, 3);
    assert.equal(clock.timers.size, 0);
  });

  it("the person's own action saves at once, and takes the waiting save with it", async () => {
    const { app, clock, id, saves, arrive, stored } = await flooded();
    arrive(3);
    assert.equal(saves.count, 0);
    assert.equal(await app.sendText(id, "mine"), true);
    assert.equal(saves.count, 1);
    assert.equal(clock.timers.size, 0); // nothing more to write
    await app._saving;
    assert.equal(await stored(), 4);
  });

  it("listens for the page's unloading only while a save waits (the back-forward cache)", async () => {
    const clock = new FakeClock();
    const { app } = await startApp({ clock });
    const listening = new Set();
    const { addEventListener, removeEventListener } = window;
    window.addEventListener = function (type, listener, ...rest) {
      if (type === "beforeunload") listening.add(listener);
      return addEventListener.call(this, type, listener, ...rest);
    };
    window.removeEventListener = function (type, listener, ...rest) {
      if (type === "beforeunload") listening.delete(listener);
      return removeEventListener.call(this, type, listener, ...rest);
    };
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Busy", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const arrive = () => {
      const message = { messageId: randomBytes(16), timestampMs: 1000, kind: 1, senderName: "alice", senderKey: new Uint8Array(32) };
      const detail = { roomId: fromHex(id), message, text: "hi", fingerprint: "AAAA-BBBB-CCCC-DDDD", keyChanged: false };
      app.connections.get(app.room(id).serverUrl).dispatchEvent(new CustomEvent("message", { detail }));
    };
    assert.equal(listening.size, 0);
    arrive(); // right after the room's save: it waits
    assert.equal(listening.size, 1);
    clock.advance(SAVE_THROTTLE_MS); // written
    assert.equal(listening.size, 0);
    clock.advance(SAVE_THROTTLE_MS);
    arrive();
    assert.equal(listening.size, 0); // written at once: nothing waits
    arrive();
    assert.equal(listening.size, 1);
    await app.save(); // the person's own save takes it
    assert.equal(listening.size, 0);
  });

  it("an acknowledgement's save is throttled too", async () => {
    const { app, clock, id, saves, connection } = await flooded();
    clock.advance(SAVE_THROTTLE_MS);
    await app.sendText(id, "mine"); // saved at once
    const [mine] = app.liveRoom(id).messages;
    connection.dispatchEvent(new CustomEvent("accepted", { detail: { roomId: fromHex(id), messageId: fromHex(mine.id) } }));
    assert.equal(saves.count, 1);
    clock.advance(SAVE_THROTTLE_MS);
    assert.equal(saves.count, 2);
  });

  for (const [what, hide] of [
    ["locking", (app) => app.lock("Locked after a while without use.")],
    ["the page being hidden", () => {
      document.visibilityState = "hidden";
      document.dispatchEvent(new Event("visibilitychange"));
      document.visibilityState = "visible";
    }],
    ["the page going away", () => window.dispatchEvent(new Event("pagehide"))],
    ["a reload or a closed tab, before the page goes", () => window.dispatchEvent(new Event("beforeunload"))],
  ]) {
    it(`${what} writes a waiting save at once`, async () => {
      const { app, clock, saves, arrive, stored } = await flooded();
      arrive(5);
      assert.equal(saves.count, 0);
      hide(app);
      assert.equal(saves.count, 1);
      assert.equal(clock.timers.size, 0);
      await app._saving;
      assert.equal(await stored(), 5);
    });
  }
});

describe("App: a message the relay never takes", () => {
  it("shows as not sent once the session gives it up, and is kept as not sent", async () => {
    // The connections' clock and timers: the once-a-second expiry runs when the test says.
    const clock = new FakeClock();
    clock.time = Date.now();
    const { now, setTimer, clearTimer } = clock;
    const { app } = await startApp({ WebSocketImpl: RelaySocket, connectionOptions: { now, setTimer, clearTimer } });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Kept", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    await app.setKeepHistory(id, true);
    const connection = await joined(app, id);
    assert.equal(await app.sendText(id, "never taken"), true); // the relay never ACKs it
    await connection.idle();
    const [mine] = app.liveRoom(id).messages;
    assert.equal(mine.status, "sending");

    clock.advance(OUTBOX_MAX_AGE_MS - 1); // the expiry check runs once, at that time
    assert.equal(mine.status, "sending");
    clock.advance(1000); // the next check
    assert.equal(mine.status, "unsent");
    assert.equal(app.room(id).messages[0].sent, false);
    await app.save();
    app.lock("Locked after a while without use.");
    await app.unlock(PASSWORD);
    assert.deepEqual(
      app.liveRoom(id).messages.map((m) => [m.text, m.status]),
      [["never taken", "unsent"]],
    );
  });
});

describe("App: messages the relay had not taken survive a lock", () => {
  for (const keepHistory of [false, true]) {
    it(`are sent again after unlocking, the same envelope, and shown sent once taken (${keepHistory ? "kept history" : "no history kept"})`, async () => {
      const { app, otherTab } = await startApp({ WebSocketImpl: RelaySocket });
      await app.unlock(PASSWORD, PASSWORD);
      await app.createRoom({ label: "Offline", nickname: "Bob", lifetime: "day" });
      const id = app.state.current;
      if (keepHistory) await app.setKeepHistory(id, true);
      await joined(app, id);
      const before = liveSockets.at(-1);
      assert.equal(await app.sendText(id, "written as the relay went away"), true);
      const [first] = await published(app, before, 1); // the relay never acknowledges it
      await app._saving;

      // Kept in the store at once, sealed: no plaintext beyond what the room keeps.
      const stored = (await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0];
      assert.deepEqual(
        stored.outbox.map((o) => [o.id, Buffer.from(o.envelope, "base64").toString("hex")]),
        [[app.liveRoom(id).messages[0].id, hex(first.envelope)]],
      );
      assert.equal(JSON.stringify(stored).includes("written as the relay went away"), keepHistory);

      app.lock("Locked after a while without use.");
      await app.unlock(PASSWORD);
      await joined(app, id);
      const after = liveSockets.at(-1);
      assert.notEqual(after, before);
      const [again] = await published(app, after, 1);
      assert.equal(hex(again.envelope), hex(first.envelope)); // byte for byte: same id
      assert.deepEqual(
        app.liveRoom(id).messages.map((m) => [m.text, m.status, m.mine]),
        [["written as the relay went away", "sending", true]],
      );

      after.push({ type: "Ack", ref: again.ref });
      await app.connections.get(app.room(id).serverUrl).idle();
      assert.deepEqual(
        app.liveRoom(id).messages.map((m) => [m.text, m.status]),
        [["written as the relay went away", "sent"]],
      );
      app.flushSave();
      await app._saving;
      const taken = (await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0];
      assert.deepEqual(taken.outbox, []);
      if (keepHistory) assert.equal(taken.messages[0].sent, true);

      // Taken: the next unlock sends nothing again.
      app.lock("Locked after a while without use.");
      await app.unlock(PASSWORD);
      await joined(app, id);
      await published(app, liveSockets.at(-1), 0);
    });
  }

  it("one given up (55 minutes) leaves the store, and is not sent after unlocking", async () => {
    const clock = new FakeClock();
    clock.time = Date.now();
    const { now, setTimer, clearTimer } = clock;
    const { app, otherTab } = await startApp({ WebSocketImpl: RelaySocket, connectionOptions: { now, setTimer, clearTimer } });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Offline", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    await joined(app, id);
    assert.equal(await app.sendText(id, "never taken"), true);
    await published(app, liveSockets.at(-1), 1);
    clock.advance(OUTBOX_MAX_AGE_MS + 1000);
    assert.equal(app.liveRoom(id).messages[0].status, "unsent");
    app.lock("Locked after a while without use.");
    assert.deepEqual((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0].outbox, []);
  });

  it("forgetting the room takes its waiting messages with it", async () => {
    const { app, otherTab } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Offline", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    await joined(app, id);
    await app.sendText(id, "never taken");
    await app._saving;
    assert.equal((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms[0].outbox.length, 1);
    await app.forgetRoom(id);
    assert.deepEqual((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms, []);
  });
});

/**
 * Web Locks as a browser has them, shared by the tabs of one test: exclusive, granted in
 * the order asked for, held until the callback's promise settles; a signal that aborts
 * before the grant takes the request back.
 */
class FakeLocks {
  tails = new Map();

  request(name, options, callback) {
    const before = this.tails.get(name) ?? Promise.resolve();
    let done;
    const mine = new Promise((resolve) => (done = resolve));
    this.tails.set(name, before.then(() => mine));
    return new Promise((resolve, reject) => {
      let state = "waiting";
      options.signal?.addEventListener("abort", () => {
        if (state !== "waiting") return;
        state = "aborted";
        done();
        reject(options.signal.reason);
      });
      before.then(async () => {
        if (state === "aborted") return;
        state = "granted";
        try {
          resolve(await callback({ name, mode: "exclusive" }));
        } catch (error) {
          reject(error);
        } finally {
          done();
        }
      });
    });
  }

  /** Hold `name` as another tab would, until the function returned is called. */
  async hold(name) {
    let release;
    const held = new Promise((resolve) => (release = resolve));
    await new Promise((granted) => this.request(name, {}, () => (granted(), held)));
    return release;
  }
}

/** Tabs of one browser: apps on one database, with BroadcastChannel and Web Locks. */
function browserTabs(t, { waitMs } = {}) {
  const indexedDB = new IDBFactory();
  const locks = new FakeLocks();
  const storeOptions = { indexedDB, insecureTestIterations: 1000 };
  const channels = [];
  t.after(() => {
    for (const channel of channels) channel.close();
  });
  const open = async ({ clock } = {}) => {
    const page = pageOfRelayA("");
    page.BroadcastChannel = BroadcastChannel;
    globalThis.window = page;
    globalThis.document = Object.assign(new EventTarget(), { visibilityState: "visible" }); // a tab's own
    const app = new App({
      storeOptions,
      connectionOptions: { WebSocketImpl: RecordedSocket, setTimer: () => null, clearTimer: () => {} },
      clock,
      locks: { manager: locks, ...(waitMs ? { waitMs } : {}) },
    });
    started.push(app);
    await app.start();
    channels.push(app.tabs);
    return app;
  };
  /** What the tabs say to each other, as a tab that only listens hears it. */
  const heard = [];
  const listener = new BroadcastChannel("instantroom");
  channels.push(listener);
  listener.addEventListener("message", (event) => heard.push(event.data));
  const said = async (count, what) => {
    while (heard.filter((m) => (m?.kind ?? m) === what).length < count) await new Promise((r) => setTimeout(r, 1));
  };
  return { open, locks, storeOptions, said };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe("App: two tabs, the one unlocked last wins", () => {
  it("the tab unlocked last reads the store as the other left it as it locked, and keeps working", async (t) => {
    const tabs = browserTabs(t);
    const clock = new FakeClock();
    const first = await tabs.open({ clock });
    await first.unlock(PASSWORD, PASSWORD);
    await first.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    const id = first.state.current;
    await first.setKeepHistory(id, true);
    const message = { messageId: randomBytes(16), timestampMs: Date.now(), kind: 1, senderName: "Bob", senderKey: new Uint8Array(32) };
    const detail = { roomId: fromHex(id), message, text: "just arrived", fingerprint: "AAAA-BBBB-CCCC-DDDD", keyChanged: false };
    first.connections.get(first.room(id).serverUrl).dispatchEvent(new CustomEvent("message", { detail }));
    assert.equal(clock.timers.size, 1); // its save waits for the throttle

    const second = await tabs.open();
    await second.unlock(PASSWORD);
    assert.equal(first.store, null);
    assert.match(first.state.notice, /unlocked in another tab/);
    assert.equal(second.state.screen, "rooms");
    assert.equal(second.state.error, null);
    // What the first tab wrote as it locked is there: the message and its id.
    assert.deepEqual(second.room(id).messages.map((m) => m.text), ["just arrived"]);
    assert.deepEqual(second.room(id).recent.map((r) => r.id), [hex(message.messageId)]);

    // And its saves land: it is not locked as if another tab had written after it.
    await second.createRoom({ label: "New", nickname: "Ann", lifetime: "day" });
    assert.equal(second.state.screen, "share");
    assert.equal(second.state.error, null);
    assert.notEqual(second.store, null);
    const stored = await KeyStore.unlock(PASSWORD, tabs.storeOptions);
    assert.deepEqual(stored.data.rooms.map((r) => r.label), ["Trip", "New"]);
    assert.deepEqual(stored.data.rooms[0].messages.map((m) => m.text), ["just arrived"]);
    second.lock();
  });

  it("a tab that unlocks does not wait for ever for a tab that does not let go", async (t) => {
    const tabs = browserTabs(t, { waitMs: 50 });
    const first = await tabs.open();
    await first.unlock(PASSWORD, PASSWORD);
    first.tabs.close(); // frozen by the browser: it hears nothing, and holds the tab lock
    const second = await tabs.open();
    await second.unlock(PASSWORD);
    assert.equal(second.state.screen, "rooms");
    assert.notEqual(second.store, null);
    second.lock();
  });

  it("a tab that unlocks as the password is changed in another tab asks for the new one", async (t) => {
    const tabs = browserTabs(t);
    const first = await tabs.open();
    await first.unlock(PASSWORD, PASSWORD);
    first.lock();
    const release = await tabs.locks.hold(TAB_LOCK); // the other tab, still busy
    const second = await tabs.open();
    const unlocking = second.unlock(PASSWORD);
    await tabs.said(2, "unlocked"); // (after the first tab's) derived its key from the record as it was
    const other = await KeyStore.unlock(PASSWORD, tabs.storeOptions);
    await other.changePassword(PASSWORD, "another long password");
    other.lock();
    release();
    await unlocking;
    assert.equal(second.store, null);
    assert.equal(second.state.firstVisit, false);
    assert.match(second.state.error, /password was changed in another tab/);
    await second.unlock("another long password");
    assert.equal(second.state.screen, "rooms");
    second.lock();
  });

  it("a tab that unlocks as the store is deleted in another tab offers to set a password", async (t) => {
    const tabs = browserTabs(t);
    const first = await tabs.open();
    await first.unlock(PASSWORD, PASSWORD);
    first.lock();
    const release = await tabs.locks.hold(TAB_LOCK);
    const second = await tabs.open();
    const unlocking = second.unlock(PASSWORD);
    await tabs.said(2, "unlocked"); // after the first tab's
    await KeyStore.wipe(tabs.storeOptions);
    release();
    await unlocking;
    assert.equal(second.store, null);
    assert.equal(second.state.firstVisit, true);
    assert.match(second.state.error, /deleted in another tab/);
  });

  it("a tab whose page clock lags (the computer slept since it opened) still wins when it unlocks last", async (t) => {
    const tabs = browserTabs(t);
    const oldTab = await tabs.open();
    const newTab = await tabs.open();
    await newTab.unlock(PASSWORD, PASSWORD);
    await tabs.said(1, "unlocked");
    // A page's performance.now() does not tick while the computer sleeps.
    const realNow = performance.now.bind(performance);
    t.after(() => (performance.now = realNow));
    performance.now = () => realNow() - 8 * 3600e3;
    await oldTab.unlock(PASSWORD);
    for (let turn = 0; turn < 200 && newTab.store !== null; turn++) await tick();
    assert.notEqual(oldTab.store, null);
    assert.equal(newTab.store, null);
    assert.match(newTab.state.notice, /unlocked in another tab/);
    oldTab.lock();
  });

  it("of two tabs that wait to unlock, the one that unlocked later wins", async (t) => {
    const tabs = browserTabs(t);
    const first = await tabs.open();
    await first.unlock(PASSWORD, PASSWORD);
    first.lock();
    const release = await tabs.locks.hold(TAB_LOCK);
    const earlier = await tabs.open();
    const later = await tabs.open();
    const unlockingEarlier = earlier.unlock(PASSWORD);
    await tabs.said(2, "unlocked"); // after the first tab's
    const unlockingLater = later.unlock(PASSWORD);
    await tabs.said(3, "unlocked");
    await tick(); // the earlier tab hears it
    release();
    await Promise.all([unlockingEarlier, unlockingLater]);
    // A BroadcastChannel message may come later than a tick under load: whether it finds
    // the earlier tab still unlocking or unlocked, that tab ends locked.
    for (let turn = 0; turn < 200 && earlier.store !== null; turn++) await tick();
    assert.equal(earlier.store, null);
    assert.match(earlier.state.notice, /unlocked in another tab/);
    assert.equal(later.state.screen, "rooms");
    assert.notEqual(later.store, null);
    later.lock();
  });
});

describe("App: the Unlock screen follows what other tabs did", () => {
  it("Set password, when another tab made a store meanwhile, asks for that store's password", async () => {
    const { app, otherTab } = await startApp();
    assert.equal(app.state.firstVisit, true);
    await KeyStore.create(PASSWORD, otherTab);
    await app.unlock("a new long password", "a new long password");
    assert.equal(app.store, null);
    assert.equal(app.state.firstVisit, false);
    assert.match(app.state.error, /made in another tab/);
    await app.unlock(PASSWORD);
    assert.equal(app.state.screen, "rooms");
  });

  it("Unlock, when another tab deleted the store meanwhile, offers to set a new password", async () => {
    const { app, otherTab } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.lock();
    await KeyStore.wipe(otherTab);
    await app.unlock(PASSWORD);
    assert.equal(app.store, null);
    assert.equal(app.state.firstVisit, true);
    assert.match(app.state.error, /deleted in another tab/);
    await app.unlock("a new long password", "a new long password");
    assert.equal(app.state.screen, "rooms");
  });

  it("a tab showing Set password asks for the password as soon as another tab makes the store", async (t) => {
    const tabs = browserTabs(t);
    const waiting = await tabs.open();
    const maker = await tabs.open();
    assert.equal(waiting.state.firstVisit, true);
    await maker.unlock(PASSWORD, PASSWORD);
    await tabs.said(1, "created");
    await tick();
    assert.equal(waiting.state.firstVisit, false);
    assert.match(waiting.state.notice, /made in another tab/);
    maker.lock();
  });
});

describe("App: a relay that cannot be reached", () => {
  /** WebSockets whose connection fails at once, as to a relay that is down. */
  class RefusedSocket extends EventTarget {
    constructor() {
      super();
      queueMicrotask(() => this.dispatchEvent(Object.assign(new Event("close"), { code: 1006, reason: "" })));
    }
    send() {}
    close() {}
  }

  async function stateOf(app, id, state) {
    for (let i = 0; i < 100 && app.connectionState(id) !== state; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(app.connectionState(id), state);
  }

  it("says so, rather than 'reconnecting…' alone; another relay than the page's may refuse its origin", async () => {
    const { app } = await startApp({ WebSocketImpl: RefusedSocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Here", nickname: "Ann", lifetime: "day" });
    const here = app.state.current;
    await stateOf(app, here, "reconnecting");
    assert.equal(app.connectionReason(here), "The relay at a.relay.test could not be reached: it may be down, or the address wrong. Trying again.");

    app.store.data.serverUrl = RELAY_B;
    await app.createRoom({ label: "There", nickname: "Ann", lifetime: "day" });
    const there = app.state.current;
    await stateOf(app, there, "reconnecting");
    assert.match(app.connectionReason(there), /^The relay at b\.relay\.test could not be reached: .* must also list this page's address in its --origins option\. Trying again\.$/);
  });

  it("still says so while the next try is made, rather than come and go with each", async () => {
    // Reconnect timers that wait for the test (reconnectNow() makes the next try at once).
    const connectionOptions = { setTimer: () => 1, clearTimer: () => {} };
    const { app } = await startApp({ WebSocketImpl: RefusedSocket, connectionOptions });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Down", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    await stateOf(app, id, "reconnecting");
    const said = app.connectionReason(id);
    assert.match(said, /could not be reached/);
    for (let tries = 0; tries < 3; tries++) {
      app.reconnectNow();
      assert.equal(app.connectionState(id), "connecting");
      assert.equal(app.connectionReason(id), said);
      await stateOf(app, id, "reconnecting");
      assert.equal(app.connectionReason(id), said);
    }
  });

  it("a relay reached before and lost now says nothing more than 'reconnecting…'", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Was there", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    await joined(app, id);
    liveSockets.at(-1).dispatchEvent(Object.assign(new Event("close"), { code: 1006, reason: "" }));
    await stateOf(app, id, "reconnecting");
    assert.equal(app.connectionReason(id), null);
  });
});

describe("App: a new room is asked of its relay before its key shows", () => {
  /** A relay that refuses every room after its PROOF with ERROR `code` (PROTOCOL.md 11.1). */
  const refusingWith = (code, reason) =>
    class extends RelaySocket {
      send(data) {
        const frame = decodeFrame(data);
        if (frame.type === "Proof") this.push({ type: "Error", code, ref: 0, roomId: frame.roomId, reason });
        else super.send(data);
      }
    };
  /** WebSockets whose connection fails at once, as to a relay that is down. */
  class DownSocket extends EventTarget {
    constructor() {
      super();
      queueMicrotask(() => this.dispatchEvent(Object.assign(new Event("close"), { code: 1006, reason: "" })));
    }
    send() {}
    close() {}
  }
  const asked = { newRoomWaitMs: 5_000 };

  it("refused as lasting too long: deleted, and the New room screen says to choose a shorter lifetime", async () => {
    const WebSocketImpl = refusingWith(ErrorCode.EXPIRY_TOO_FAR, "This relay keeps rooms for less time.");
    const { app, otherTab } = await startApp({ WebSocketImpl, ...asked });
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    await app.createRoom({ label: "Week", nickname: "Ann", lifetime: "week" });
    assert.equal(app.state.screen, "new");
    assert.equal(
      app.state.error,
      "This relay keeps rooms for less time than 1 week, so the room was not made. Choose a shorter lifetime, and create it again.",
    );
    assert.deepEqual(app.rooms, []);
    assert.equal(app.live.size, 0);
    assert.deepEqual((await KeyStore.unlock(PASSWORD, otherTab)).data.rooms, []);

    // No lifetime in the list is shorter than an hour, but a custom one can be.
    await app.createRoom({ label: "Hour", nickname: "Ann", lifetime: "hour" });
    assert.match(app.state.error, /less time than 1 hour, .* Choose a shorter custom lifetime, and create it again\.$/);
    assert.deepEqual(app.rooms, []);
  });

  it("refused as lasting too long, a custom lifetime: said in words, with what is shorter", async () => {
    const WebSocketImpl = refusingWith(ErrorCode.EXPIRY_TOO_FAR, "This relay keeps rooms for less time.");
    const { app } = await startApp({ WebSocketImpl, ...asked });
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    const custom = (customAmount, customUnit) =>
      app.createRoom({ label: "Custom", nickname: "Ann", lifetime: "custom", customAmount, customUnit });
    await custom("3", "days");
    assert.equal(app.state.screen, "new");
    assert.equal(
      app.state.error,
      "This relay keeps rooms for less time than 3 days, so the room was not made. Choose a shorter lifetime, and create it again.",
    );
    await custom("30", "minutes");
    assert.match(app.state.error, /less time than 30 minutes, .* Choose a shorter custom lifetime, and create it again\.$/);
    await custom("5", "minutes");
    assert.match(app.state.error, /less time than 5 minutes, .* No lifetime offered here is short enough: choose another relay in Settings\.$/);
    assert.deepEqual(app.rooms, []);
  });

  it("refused for now (a full relay): deleted, and not asked for again", async () => {
    const { app } = await startApp({ WebSocketImpl: refusingWith(ErrorCode.RELAY_FULL, "Full “up”."), ...asked });
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    await app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    assert.equal(app.state.screen, "new");
    assert.equal(
      app.state.error,
      "The relay has no place for a new room now, so it was not made. It says: “Full 'up'.” Try again later, or choose another relay in Settings.",
    );
    assert.deepEqual(app.rooms, []);
    assert.equal(app.connections.get(RELAY_A).rooms.size, 0); // no JOIN again in 15 seconds
  });

  it("let in: the Share screen shows once the relay has joined it", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket, ...asked });
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    await app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    assert.equal(app.state.screen, "share");
    assert.equal(app.state.notice, null);
    assert.ok(app.connections.get(RELAY_A).rooms.get(id).joined);
    assert.equal(app.liveRoom(id).members, 2);
  });

  it("a relay out of reach, or silent: the room is kept, as the terminal's new keeps it, and that is said", async () => {
    const { app } = await startApp({ WebSocketImpl: DownSocket, ...asked });
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    const start = Date.now();
    await app.createRoom({ label: "Down", nickname: "Ann", lifetime: "day" });
    assert.ok(Date.now() - start < asked.newRoomWaitMs, "a relay down is not waited for");
    assert.equal(app.state.screen, "share");
    assert.equal(app.state.notice, "The relay at a.relay.test could not be reached yet: the room joins it once it answers.");
    assert.equal(app.rooms.length, 1);

    const { app: silent } = await startApp({ newRoomWaitMs: 20 }); // WebSockets that never open
    await silent.unlock(PASSWORD, PASSWORD);
    silent.go("new");
    await silent.createRoom({ label: "Silent", nickname: "Ann", lifetime: "day" });
    assert.equal(silent.state.screen, "share");
    assert.match(silent.state.notice, /could not be reached yet/);
    assert.equal(silent.rooms.length, 1);
  });

  it("one who went elsewhere while the relay was asked stays there, the room in the list", async () => {
    const { app } = await startApp({ newRoomWaitMs: 20 }); // WebSockets that never open
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    const making = app.createRoom({ label: "Later", nickname: "Ann", lifetime: "day" });
    app.go("settings");
    await making;
    assert.equal(app.state.screen, "settings");
    assert.deepEqual(app.rooms.map((room) => room.label), ["Later"]);
    assert.match(app.state.notice, /could not be reached yet/);
  });

  it("a second tap while the first room is made makes nothing", async () => {
    const { app } = await startApp();
    await app.unlock(PASSWORD, PASSWORD);
    app.go("new");
    const making = app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    assert.equal(app.state.creating, true);
    await Promise.all([making, app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" })]);
    assert.equal(app.rooms.length, 1);
    assert.equal(app.state.creating, false);
  });

  it("a room the relay refused for good shows as refused, not online, though the connection is", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Trip", nickname: "Ann", lifetime: "day" });
    const id = app.state.current;
    const connection = await joined(app, id);
    assert.equal(app.connectionState(id), "online");
    const refused = { roomId: fromHex(id), code: ErrorCode.EXPIRY_TOO_FAR, ref: 0, reason: "", fatal: true };
    connection.dispatchEvent(new CustomEvent("refused", { detail: refused }));
    assert.equal(connection.state, "online");
    assert.equal(app.connectionState(id), "refused");
    connection.dispatchEvent(new CustomEvent("joined", { detail: { roomId: fromHex(id), members: 1, expiresAtMs: 0 } }));
    assert.equal(app.connectionState(id), "online");
  });
});

describe("App: who is here (PROTOCOL.md 5.7)", () => {
  /** A member's announcement (JOIN, HERE, LEAVE: an empty body) in room `id`, sealed now. */
  const announcement = (app, id, device, name, kind) => {
    const room = roomKeysFromMinikey(app.room(id).key);
    const message = { messageId: randomBytes(16), timestampMs: Date.now(), kind, senderKey: device.publicKey, senderName: name, body: new Uint8Array(0) };
    return sealEnvelope(room, device, message, randomBytes(12));
  };
  const deliver = async (app, id, connection, envelope) => {
    liveSockets.at(-1).push({ type: "Deliver", roomId: fromHex(id), envelope });
    await connection.idle();
  };
  /** The kinds and names of what `socket` got published, opened with `room`'s keys. */
  const announced = async (room, socket) => {
    const opened = await Promise.all(socket.published.map((frame) => openEnvelope(room, frame.envelope)));
    return opened.map((message) => [message.kind, message.senderName]);
  };
  const until = async (what) => {
    const deadline = Date.now() + 5_000;
    while (!what() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 1));
    assert.ok(what(), "it never happened");
  };

  it("the room's roster follows its members' announcements, names as they were sent", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket, announcing: true });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Who", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const connection = await joined(app, id);
    assert.deepEqual(app.liveRoom(id).roster, []);
    let draws = 0;
    app.subscribe(() => draws++);

    const alice = deviceKeyFromSeed(randomBytes(32));
    const carol = deviceKeyFromSeed(randomBytes(32));
    await deliver(app, id, connection, await announcement(app, id, alice, "alice\u202e", Kind.JOIN));
    await deliver(app, id, connection, await announcement(app, id, carol, "carol", Kind.HERE));
    assert.deepEqual(app.liveRoom(id).roster, [
      { id: hex(alice.publicKey), name: "alice\u202e", fingerprint: fingerprint(alice.publicKey), keyChanged: false },
      { id: hex(carol.publicKey), name: "carol", fingerprint: fingerprint(carol.publicKey), keyChanged: false },
    ]);
    await until(() => draws >= 2); // the last one drawn at the next frame
    // Another device under a name known with alice's key: flagged, as a message would be.
    const other = deviceKeyFromSeed(randomBytes(32));
    await deliver(app, id, connection, await announcement(app, id, other, "alice\u202e", Kind.JOIN));
    assert.deepEqual(app.liveRoom(id).roster.map((m) => [m.id, m.keyChanged]).at(-1), [hex(other.publicKey), true]);
    // Announcements are not messages: nothing shows, nothing unread.
    assert.deepEqual(app.liveRoom(id).messages, []);
    assert.equal(app.liveRoom(id).unread, 0);

    await deliver(app, id, connection, await announcement(app, id, carol, "carol", Kind.LEAVE));
    assert.deepEqual(app.liveRoom(id).roster.map((m) => m.name), ["alice\u202e", "alice\u202e"]);
    app.lock();
    assert.equal(app.live.size, 0); // the roster goes with the lock
  });

  it("the app says who it is once joined, and that it leaves as it locks, before hanging up", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket, announcing: true });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Who", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const keys = roomKeysFromMinikey(app.room(id).key);
    await joined(app, id);
    const socket = liveSockets.at(-1);
    await published(app, socket, 1);
    assert.deepEqual(await announced(keys, socket), [[Kind.JOIN, "Bob"]]);

    let publishedWhenClosed = null;
    const close = socket.close.bind(socket);
    socket.close = () => {
      publishedWhenClosed = socket.published.length;
      close();
    };
    app.lock();
    assert.equal(app.state.screen, "unlock"); // at once: the LEAVE message does not hold the lock up
    await until(() => socket.closed);
    assert.equal(publishedWhenClosed, 2);
    assert.deepEqual(await announced(keys, socket), [[Kind.JOIN, "Bob"], [Kind.LEAVE, "Bob"]]);
  });

  it("a page that goes for good says it leaves; one kept in the back-forward cache does not", async () => {
    const page = pageOfRelayA("");
    const { app } = await startApp({ WebSocketImpl: RelaySocket, announcing: true, page });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Who", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    const keys = roomKeysFromMinikey(app.room(id).key);
    const connection = await joined(app, id);
    const socket = liveSockets.at(-1);
    await published(app, socket, 1);

    page.dispatchEvent(Object.assign(new Event("pagehide"), { persisted: true }));
    assert.equal(connection.state, "online");
    page.dispatchEvent(Object.assign(new Event("pagehide"), { persisted: false }));
    assert.equal(connection.state, "closed");
    await until(() => socket.closed);
    assert.deepEqual(await announced(keys, socket), [[Kind.JOIN, "Bob"], [Kind.LEAVE, "Bob"]]);
    app.lock();
  });

  it("a room on the page's relay, which said on /healthz that it has just started, holds what is sent the grace; one on another relay does not", async () => {
    // The page cannot read the handshake's InstantRoom-Uptime (PROTOCOL.md 10.1, 10.6).
    const { app } = await startApp({ WebSocketImpl: RelaySocket, relayUptimeS: 2 });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Here", nickname: "Bob", lifetime: "day" });
    const here = app.state.current;
    assert.equal(app.room(here).serverUrl, RELAY_A);
    app.store.data.serverUrl = RELAY_B;
    await app.createRoom({ label: "There", nickname: "Bob", lifetime: "day" });
    const there = app.state.current;
    for (const [id, held] of [
      [here, true],
      [there, false],
    ]) {
      const connection = await joined(app, id);
      assert.ok(await app.sendText(id, "anyone back yet?"));
      await connection.idle();
      assert.equal(connection.session.holding(fromHex(id)), held, app.room(id).label);
    }
    app.lock();
  });

  it("a device clock set back after the page's relay said its uptime holds nothing more", async () => {
    // Its start is kept on performance.now()'s clock: on Date.now()'s, a clock set back an
    // hour had every room joined in the hour after hold what it sent the grace.
    const { app } = await startApp({ WebSocketImpl: RelaySocket, relayUptimeS: 30 });
    await app.unlock(PASSWORD, PASSWORD);
    const dateNow = Date.now;
    Date.now = () => dateNow() - 3_600_000;
    try {
      await app.createRoom({ label: "Here", nickname: "Bob", lifetime: "day" });
      const id = app.state.current;
      const connection = await joined(app, id);
      assert.ok(await app.sendText(id, "hello"));
      await published(app, liveSockets.at(-1), 1);
      assert.equal(connection.session.holding(fromHex(id)), false);
    } finally {
      Date.now = dateNow;
    }
    app.lock();
  });

  it("a relay that did not say its uptime, or said it long ago, holds nothing", async () => {
    for (const relayUptimeS of [null, 12]) {
      const { app } = await startApp({ WebSocketImpl: RelaySocket, relayUptimeS });
      await app.unlock(PASSWORD, PASSWORD);
      await app.createRoom({ label: "Here", nickname: "Bob", lifetime: "day" });
      const id = app.state.current;
      const connection = await joined(app, id);
      assert.ok(await app.sendText(id, "hello"));
      await published(app, liveSockets.at(-1), 1);
      assert.equal(connection.session.holding(fromHex(id)), false);
      app.lock();
    }
  });

  it("forgetting a room says so to its members before leaving it on the relay", async () => {
    const { app } = await startApp({ WebSocketImpl: RelaySocket, announcing: true });
    await app.unlock(PASSWORD, PASSWORD);
    await app.createRoom({ label: "Who", nickname: "Bob", lifetime: "day" });
    const id = app.state.current;
    await joined(app, id);
    const socket = liveSockets.at(-1);
    const sent = [];
    const send = socket.send.bind(socket);
    socket.send = (data) => {
      sent.push(decodeFrame(data).type);
      send(data);
    };
    await published(app, socket, 1);
    const keys = roomKeysFromMinikey(app.room(id).key);
    await app.forgetRoom(id);
    await until(() => sent.includes("Leave"));
    assert.deepEqual(sent.slice(-2), ["Publish", "Leave"]);
    assert.deepEqual((await announced(keys, socket)).map(([kind]) => kind), [Kind.JOIN, Kind.LEAVE]);
    app.lock();
  });
});

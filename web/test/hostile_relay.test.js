// The browser's connection against a hostile relay (SECURITY.md, "A relay operator"): it
// may refuse service, but what it sends must not pile up in the client. A stand-in socket
// and a fake clock: the relay's frames are pushed by hand, and the clock's timers counted,
// as they are what a flood of refusals would pile up.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { MAX_BACKLOG_BYTES, RoomConnection } from "../src/client/connection.js";
import { ErrorCode, SUBPROTOCOL } from "../src/protocol/codes.js";
import { decodeFrame, encodeFrame } from "../src/protocol/frames.js";
import { roomKeysFromMinikey } from "../src/protocol/kdf.js";
import { ClientSession } from "../src/protocol/session.js";

const KEY_A = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy";
const roomA = roomKeysFromMinikey(KEY_A);
const NOW = 1_790_000_000_000;
const FLOOD = 3000;

/** A relay's socket, played by hand: the test pushes what the relay says. */
function stage() {
  const sockets = [];
  const timers = new Set();
  class FakeSocket extends EventTarget {
    constructor(url, protocols) {
      super();
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.protocol = "";
      this.sent = [];
      sockets.push(this);
    }
    send(data) {
      this.sent.push(decodeFrame(data));
    }
    close() {
      this.readyState = 3;
    }
    accept() {
      this.protocol = SUBPROTOCOL;
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    }
    push(frame) {
      const bytes = encodeFrame(frame);
      this.dispatchEvent(Object.assign(new Event("message"), { data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) }));
    }
    drop(code = 1012) {
      this.readyState = 3;
      this.dispatchEvent(Object.assign(new Event("close"), { code, reason: "" }));
    }
  }
  const connection = new RoomConnection({
    serverUrl: "https://relay.example",
    deviceSeed: new Uint8Array(32).fill(1),
    WebSocketImpl: FakeSocket,
    now: () => NOW,
    delays: [0],
    setTimer: (action, ms) => {
      const timer = { action, ms };
      timers.add(timer);
      return timer;
    },
    clearTimer: (timer) => timers.delete(timer),
    pingIntervalMs: 0,
  });
  const seen = [];
  for (const type of ["joined", "refused"]) connection.addEventListener(type, (event) => seen.push({ type, ...event.detail }));
  /** Run the timers due after `ms` (the reconnect's, here). */
  const fire = (ms) => {
    for (const timer of [...timers]) {
      if (timer.ms <= ms) {
        timers.delete(timer);
        timer.action();
      }
    }
  };
  return { sockets, timers, connection, seen, fire };
}

/** Answer the JOIN on `socket` with a CHALLENGE; the client's PROOF follows. */
async function challenged(s, socket) {
  assert.equal(socket.sent.at(-1).type, "Join");
  socket.push({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32).fill(7) });
  await s.connection.idle();
  assert.equal(socket.sent.at(-1).type, "Proof");
}

describe("a hostile relay", () => {
  it("floods ROOM_FULL and RATE_LIMITED: one JOIN retry waits per room, none for other rooms", async () => {
    const s = stage();
    s.connection.start();
    s.sockets[0].accept();
    s.connection.join(KEY_A, { name: "alice" }).catch(() => {});
    await challenged(s, s.sockets[0]);
    const before = s.timers.size; // the expiry check
    for (let n = 0; n < FLOOD; n++) {
      s.sockets[0].push({ type: "Error", code: ErrorCode.ROOM_FULL, ref: 0, roomId: roomA.roomId, reason: "full" });
      const other = crypto.getRandomValues(new Uint8Array(32));
      s.sockets[0].push({ type: "Error", code: ErrorCode.RATE_LIMITED, ref: 0, roomId: other, reason: "slow" });
    }
    await s.connection.idle();
    // Only the first ROOM_FULL answers our JOIN: the others answer none and are ignored.
    assert.equal(s.seen.filter((e) => e.type === "refused").length, FLOOD + 1);
    assert.ok(s.timers.size <= before + 1, `${s.timers.size - before} timers for one room`);
    // The one retry still sends the JOIN again.
    const joins = s.sockets[0].sent.filter((f) => f.type === "Join").length;
    s.fire(Infinity);
    assert.equal(s.sockets[0].sent.filter((f) => f.type === "Join").length, joins + 1);
  });

  it("sends faster than the page can read: what waits is bounded, the connection is made again, and what came before is read", async () => {
    const s = stage();
    s.connection.start();
    s.sockets[0].accept();
    const joined = s.connection.join(KEY_A, { name: "alice" });
    await challenged(s, s.sockets[0]);
    s.sockets[0].push({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 });
    await joined;
    const rejected = [];
    s.connection.addEventListener("rejected", (event) => rejected.push(event.detail));
    const states = [];
    s.connection.addEventListener("state", (event) => states.push(event.detail));
    // Envelopes of 60 KiB that each wait for WebCrypto, pushed all at once (a browser
    // takes in what the socket brings before the page has read any of it).
    const envelope = crypto.getRandomValues(new Uint8Array(60_000));
    const frames = Math.ceil((2 * MAX_BACKLOG_BYTES) / envelope.length);
    for (let n = 0; n < frames; n++) s.sockets[0].push({ type: "Deliver", roomId: roomA.roomId, envelope });
    assert.ok(s.connection._backlogBytes <= MAX_BACKLOG_BYTES);
    assert.equal(s.sockets[0].readyState, 3); // closed by the page
    assert.equal(states.at(-1).state, "reconnecting");
    assert.match(states.at(-1).reason, /^The relay sent more than this device could read: connecting again\./);
    await s.connection.idle();
    assert.equal(s.connection._backlogBytes, 0);
    const read = Math.floor(MAX_BACKLOG_BYTES / (envelope.length + 33));
    assert.ok(rejected.length >= read - 1 && rejected.length < frames / 2 + 1, `${rejected.length} read`);
    s.fire(0);
    assert.equal(s.sockets.length, 2); // and tried again
  });

  it("sends JOINED after JOINED: only the answer to our JOIN counts, and holds pile up no timers", async () => {
    const s = stage();
    s.connection.start();
    s.sockets[0].accept();
    const joined = s.connection.join(KEY_A, { name: "alice" });
    await challenged(s, s.sockets[0]);
    s.sockets[0].push({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 5 });
    await joined;
    // A reconnect: the outbox waits for the five members to come back, one timer long.
    s.sockets[0].drop();
    s.fire(0);
    s.sockets[1].accept();
    await challenged(s, s.sockets[1]);
    const before = s.timers.size;
    for (let n = 0; n < FLOOD; n++) {
      s.sockets[1].push({ type: "Joined", roomId: roomA.roomId, expiresAtMs: NOW + 10 * 3_600_000 - n, members: 1 });
    }
    await s.connection.idle();
    const answers = s.seen.filter((e) => e.type === "joined").map((e) => [e.expiresAtMs, e.members]);
    assert.deepEqual(answers, [
      [0, 5],
      [NOW + 10 * 3_600_000, 1],
    ]);
    assert.equal(s.connection.rooms.values().next().value.expiresAtMs, NOW + 10 * 3_600_000);
    assert.ok(s.timers.size <= before + 2, `${s.timers.size - before} timers`); // the hold's release, the backoff's
  });
});

describe("the session", () => {
  it("takes one JOINED per JOIN: another changes nothing and says nothing", async () => {
    const session = new ClientSession({ deviceSeed: new Uint8Array(32) });
    session.connectionMade();
    session.join(roomA, { expiresAtMs: 2_000_000_000_000 });
    await session.receive(encodeFrame({ type: "Challenge", roomId: roomA.roomId, challenge: new Uint8Array(32) }), 0);
    await session.receive(encodeFrame({ type: "Joined", roomId: roomA.roomId, expiresAtMs: 0, members: 2 }), 0);
    assert.deepEqual(session.events(), [{ type: "joined", roomId: roomA.roomId, expiresAtMs: 2_000_000_000_000, members: 2 }]);
    session.framesToSend();
    for (const expiresAtMs of [1_000_000_000_000, 1]) {
      await session.receive(encodeFrame({ type: "Joined", roomId: roomA.roomId, expiresAtMs, members: 9 }), 0);
    }
    assert.deepEqual(session.events(), []);
    assert.deepEqual(session.framesToSend(), []);
    const state = session.rooms.values().next().value;
    assert.equal(state.expiresAtMs, 2_000_000_000_000);
    assert.equal(state.members, 2);
    await session.receive(encodeFrame({ type: "Presence", roomId: roomA.roomId, members: 3 }), 0);
    assert.deepEqual(session.events(), [{ type: "presence", roomId: roomA.roomId, members: 3 }]);
  });
});

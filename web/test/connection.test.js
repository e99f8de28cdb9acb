// The browser's connection to a relay, with a fake WebSocket, a fake clock and a relay
// played in a few lines: no network, no real timers.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  backoffDelays,
  EXPIRY_CHECK_MS,
  JoinRefused,
  LEAVING_WAIT_MS,
  OPEN_TIMEOUT_MS,
  RelayRefused,
  REJOIN_GRACE_MS,
  RoomConnection,
  RETRY_AFTER_FULL_MS,
  RETRY_AFTER_RATE_LIMIT_MS,
  RoomGone,
  STABLE_AFTER_MS,
  websocketUrl,
} from "../src/client/connection.js";
import { hex } from "../src/protocol/bytes.js";
import { ErrorCode, SUBPROTOCOL } from "../src/protocol/codes.js";
import { UsageError } from "../src/protocol/errors.js";
import { decodeFrame, encodeFrame } from "../src/protocol/frames.js";
import { Kind, openEnvelope } from "../src/protocol/envelope.js";
import { verifyJoinProof } from "../src/protocol/join.js";
import { roomKeysFromMinikey } from "../src/protocol/kdf.js";
import { ANSWER_GAP_MS, ANSWER_SPREAD_MS, ROLL_CALL_WINDOW_MS } from "../src/protocol/roster.js";
import { roomHex } from "../src/protocol/session.js";

const KEY_A = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy";
const roomA = roomKeysFromMinikey(KEY_A);
const NOW = 1_790_000_000_000;

describe("websocketUrl", () => {
  const cases = [
    ["https://relay.example", "wss://relay.example/ws"],
    ["https://relay.example/", "wss://relay.example/ws"],
    ["http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws"],
    ["  http://localhost:8000/  ", "ws://localhost:8000/ws"],
    ["wss://relay.example/ws", "wss://relay.example/ws"],
    ["ws://relay.example:9000/ws/", "ws://relay.example:9000/ws"],
    ["https://relay.example/chat/", "wss://relay.example/chat/ws"],
    ["HTTPS://relay.example/a?b=c#d", "wss://relay.example/a/ws"],
    // The web client's page, as an invite link may name it (PROTOCOL.md 3.7).
    ["https://relay.example/index.html", "wss://relay.example/ws"],
    ["https://relay.example/chat/index.html", "wss://relay.example/chat/ws"],
    ["https://relay.example/instantroom-relay-for-friends/", "wss://relay.example/instantroom-relay-for-friends/ws"],
    ["https://relay.example/GroupChatServerForFriends/", "wss://relay.example/GroupChatServerForFriends/ws"],
    // One in 256 passes the check read in any case: keys are read as typed, mixed case.
    ["https://relay.example/Services/instantroom/staging/home", "wss://relay.example/Services/instantroom/staging/home/ws"],
  ];
  for (const [server, expected] of cases) {
    it(`${server.trim()} -> ${expected}`, () => assert.equal(websocketUrl(server), expected));
  }
  const refused = [
    "",
    "relay.example",
    "ftp://relay.example",
    "file:///etc/passwd",
    "https://",
    KEY_A,
    // An invite link that lost its #: the key would go to the server in the request.
    `https://relay.example/${KEY_A}`,
    "https://relay.example/chat/S6c56-bnXQi-Bjk9m-qSYE7-ykVQ7-NzrRy",
    "https://relay.example/S6c56 bnXQi Bjk9m qSYE7 ykVQ7 NzrRy",
    "https://relay.example/S6c56+bnXQi+Bjk9m+qSYE7+ykVQ7+NzrRy",
    "https://relay.example/S6c56%2DbnXQi%2DBjk9m%2DqSYE7%2DykVQ7%2DNzrRy",
    `https://relay.example/%23${KEY_A}`,
    "https://relay.example/S6c56bnXQiBjk9m/qSYE7ykVQ7NzrRy",
    "https://relay.example/100%/S6c56%20bnXQi%20Bjk9m%20qSYE7%20ykVQ7%20NzrRy", // a stray % before it
    `https://relay.example/${"S".repeat(2048)}`, // bounded: every S of a crafted one would cost a hash
  ];
  for (const bad of refused) {
    it(`refuses ${JSON.stringify(bad)} without echoing it`, () => {
      assert.throws(() => websocketUrl(bad), (error) => {
        assert.ok(error instanceof UsageError);
        assert.ok(!error.message.includes("S6c56"));
        return true;
      });
    });
  }
});

describe("backoffDelays", () => {
  it("starts small and random, grows, and stays capped", () => {
    const delays = backoffDelays({ random: () => 0.5 });
    const first = Array.from({ length: 20 }, () => delays.next().value);
    assert.ok(first[0] < 250);
    assert.ok(first[2] > first[1]);
    // Capped at 10 s, as the Python client: a relay back from a restart is found soon.
    assert.ok(first.every((d) => d <= 10_000));
    assert.ok(first.at(-1) >= 9_000);
  });
});

/** Timers that run only when the test moves the clock. */
class Clock {
  constructor() {
    this.now = NOW;
    this.timers = [];
    this.settle = async () => {};
    this.setTimer = (action, ms) => {
      const timer = { at: this.now + ms, action };
      this.timers.push(timer);
      return timer;
    };
    this.clearTimer = (timer) => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) break;
      this.clearTimer(due);
      this.now = due.at;
      due.action();
      await this.settle();
    }
    this.now = end;
    await this.settle();
  }
}

/**
 * The relay's side of the wire, for any number of fake sockets: challenges, proofs checked
 * with verifyJoinProof, ACK and DELIVER, PRESENCE, PONG. `refuseProof` and `dropAcks`
 * make it misbehave on purpose.
 */
class FakeRelay {
  constructor() {
    this.sockets = [];
    this.members = new Map(); // room hex -> Set of sockets
    this.received = []; // [socket, frame]
    this.dropAcks = 0;
    this.refuseProof = null;
    /** Refuse this many PUBLISHes with `refuseCode`. */
    this.refusePublishes = 0;
    this.refuseCode = ErrorCode.RATE_LIMITED;
    this.answerPings = true;
    this.rateLimitJoins = 0;
    this.paused = false; // while true, what the relay says waits in `held`
    this.held = [];
  }

  /** The WebSocket class a RoomConnection uses, bound to this relay. */
  get WebSocket() {
    const relay = this;
    return class FakeSocket extends EventTarget {
      constructor(url, protocols) {
        super();
        this.url = url;
        this.protocols = protocols;
        this.readyState = 0;
        this.protocol = "";
        this.binaryType = "blob";
        this.challenges = new Map();
        relay.sockets.push(this);
      }

      send(data) {
        if (this.readyState !== 1) throw new Error("not open");
        assert.ok(data instanceof Uint8Array);
        relay.handle(this, decodeFrame(data));
      }

      close(code = 1000, reason = "") {
        // As a browser: a page may close only with 1000 or 3000 to 4999.
        if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
          throw new DOMException(`The close code must be either 1000, or between 3000 and 4999. ${code} is neither.`, "InvalidAccessError");
        }
        this.closedWith = { code, reason };
        relay.gone(this);
      }

      // the test's side

      accept(protocol = SUBPROTOCOL) {
        this.protocol = protocol;
        this.readyState = 1;
        this.dispatchEvent(new Event("open"));
      }

      push(frame) {
        if (relay.paused) {
          relay.held.push(() => this.push(frame));
          return;
        }
        const bytes = encodeFrame(frame);
        this.data(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      }

      data(data) {
        this.dispatchEvent(Object.assign(new Event("message"), { data }));
      }

      drop(code = 1006, reason = "") {
        relay.gone(this);
        this.dispatchEvent(Object.assign(new Event("close"), { code, reason, wasClean: code !== 1006 }));
      }
    };
  }

  get last() {
    return this.sockets.at(-1);
  }

  sent(type) {
    return this.received.filter(([, f]) => f.type === type).map(([, f]) => f);
  }

  gone(socket) {
    if (socket.readyState === 3) return;
    socket.readyState = 3;
    for (const [key, members] of this.members) {
      if (members.delete(socket)) this.presence(key, members);
    }
  }

  presence(key, members, except) {
    for (const other of members) {
      if (other !== except) other.push({ type: "Presence", roomId: members.roomId, members: members.size });
    }
  }

  handle(socket, f) {
    this.received.push([socket, f]);
    const key = f.roomId && roomHex(f.roomId);
    switch (f.type) {
      case "Join": {
        if (this.rateLimitJoins > 0) {
          this.rateLimitJoins--;
          socket.push({ type: "Error", code: ErrorCode.RATE_LIMITED, ref: 0, roomId: f.roomId, reason: "slow" });
          return;
        }
        const challenge = crypto.getRandomValues(new Uint8Array(32));
        socket.challenges.set(key, { challenge, publicKey: f.roomPublicKey, expiresAtMs: f.expiresAtMs });
        socket.push({ type: "Challenge", roomId: f.roomId, challenge });
        return;
      }
      case "Proof": {
        const pending = socket.challenges.get(key);
        socket.challenges.delete(key);
        verifyJoinProof(pending.publicKey, f.roomId, pending.challenge, f.signature);
        if (this.refuseProof !== null) {
          socket.push({ type: "Error", code: this.refuseProof, ref: 0, roomId: f.roomId, reason: "refused" });
          return;
        }
        const members = this.members.get(key) ?? Object.assign(new Set(), { roomId: f.roomId });
        this.members.set(key, members);
        members.add(socket);
        socket.push({ type: "Joined", roomId: f.roomId, expiresAtMs: pending.expiresAtMs, members: members.size });
        this.presence(key, members, socket);
        return;
      }
      case "Publish": {
        if (this.refusePublishes > 0) {
          this.refusePublishes--;
          socket.push({ type: "Error", code: this.refuseCode, ref: f.ref, roomId: f.roomId, reason: "not now" });
          return;
        }
        const members = this.members.get(key);
        if (!members?.has(socket)) {
          socket.push({ type: "Error", code: ErrorCode.NOT_JOINED, ref: f.ref, roomId: f.roomId, reason: "" });
          return;
        }
        if (this.dropAcks > 0) this.dropAcks--;
        else socket.push({ type: "Ack", ref: f.ref });
        for (const other of members) {
          if (other !== socket) other.push({ type: "Deliver", roomId: f.roomId, envelope: f.envelope });
        }
        return;
      }
      case "Leave": {
        const members = this.members.get(key);
        if (members?.delete(socket)) this.presence(key, members);
        return;
      }
      case "Ping":
        if (this.answerPings) socket.push({ type: "Pong", token: f.token });
        return;
      default:
        throw new Error(`a client sent ${f.type}`);
    }
  }
}

/** A relay, a clock, and connections to them that record their events. */
function world() {
  const relay = new FakeRelay();
  const clock = new Clock();
  const connections = [];
  clock.settle = async () => {
    for (let round = 0; round < 3; round++) {
      for (const connection of connections) await connection.idle();
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  const connect = ({ seed = 1, delays = [100, 200, 400], pingIntervalMs = 0, announce = false, expiryNow, relayStartedAt } = {}) => {
    const connection = new RoomConnection({
      serverUrl: "https://relay.example",
      deviceSeed: new Uint8Array(32).fill(seed),
      WebSocketImpl: relay.WebSocket,
      now: () => clock.now,
      delays,
      setTimer: clock.setTimer,
      clearTimer: clock.clearTimer,
      pingIntervalMs,
      announce,
      ...(expiryNow ? { expiryNow } : {}),
      ...(relayStartedAt ? { relayStartedAt } : {}),
    });
    connection.seen = [];
    const types = ["state", "joined", "presence", "members", "message", "accepted", "refused", "rejected", "expired", "pong", "error"];
    for (const type of types) {
      connection.addEventListener(type, (event) => {
        assert.ok(event instanceof CustomEvent);
        connection.seen.push({ type, ...event.detail });
      });
    }
    connection.of = (type) => connection.seen.filter((e) => e.type === type);
    connections.push(connection);
    return connection;
  };
  return { relay, clock, connect, settle: clock.settle };
}

/**
 * Chrome's intensive throttling of a tab hidden for a while, on `clock`: a timer set from a
 * timer's callback is one level deeper in its chain, and from the fifth level on it runs
 * only on a whole minute; one set from anything else (a frame's handling) runs on time.
 * The once-a-second tick is such a chain.
 */
function throttleChains(clock) {
  const setTimer = clock.setTimer;
  let nesting = 0;
  clock.setTimer = (action, ms) => {
    const level = nesting + 1;
    const run = () => {
      const outer = nesting;
      nesting = level;
      try {
        action();
      } finally {
        nesting = outer;
      }
    };
    const minute = Math.ceil((clock.now + ms) / 60_000) * 60_000;
    return setTimer(run, level >= 5 ? minute - clock.now : ms);
  };
}

/** Start `connection`, let the relay accept it, and join room A. */
/** Bob online in room A, and Alice starting to connect and join it (her socket not open). */
async function aliceJoiningWithBobOnline() {
  const w = world();
  const bob = w.connect({ seed: 2 });
  await online(w, bob);
  const alice = w.connect({ seed: 1 });
  alice.start();
  const joined = alice.join(KEY_A, { name: "alice" });
  joined.catch(() => {});
  return { w, bob, alice, joined };
}

async function online(w, connection, options = { name: "alice" }) {
  connection.start();
  w.relay.last.accept();
  const joined = connection.join(KEY_A, options);
  joined.catch(() => {}); // the caller looks at it after settling
  await w.settle();
  return joined;
}

describe("RoomConnection", () => {
  it("connects to the /ws endpoint with the subprotocol, joins, and reports it", async () => {
    const w = world();
    const alice = w.connect();
    assert.equal(alice.state, "closed");
    alice.start();
    assert.equal(alice.state, "connecting");
    const socket = w.relay.last;
    assert.equal(socket.url, "wss://relay.example/ws");
    assert.deepEqual(socket.protocols, [SUBPROTOCOL]);
    assert.equal(socket.binaryType, "arraybuffer");
    socket.accept();
    assert.equal(alice.state, "online");
    const joined = await alice.join(KEY_A, { name: "alice", expiresAtMs: NOW + 60_000 });
    assert.equal(hex(joined.roomId), hex(roomA.roomId));
    assert.equal(joined.members, 1);
    assert.equal(joined.expiresAtMs, NOW + 60_000);
    assert.deepEqual(alice.of("state").map((e) => e.state), ["connecting", "online"]);
    assert.equal(alice.of("joined").length, 1);
    // Joining again once joined answers at once.
    assert.equal((await alice.join(roomA)).members, 1);
    assert.equal(w.relay.sent("Join").length, 1);
  });

  it("carries a message from one connection to another, and reports it accepted", async () => {
    const w = world();
    const alice = w.connect({ seed: 1 });
    const bob = w.connect({ seed: 2 });
    await online(w, alice, { name: "alice" });
    await online(w, bob, { name: "bob" });
    assert.deepEqual(alice.of("presence").map((e) => e.members), [2]);
    const message = await alice.sendText(roomA.roomId, "hello bob");
    await w.settle();
    assert.deepEqual(alice.of("accepted").map((e) => hex(e.messageId)), [hex(message.messageId)]);
    const [received] = bob.of("message");
    assert.equal(received.text, "hello bob");
    assert.equal(received.message.senderName, "alice");
    assert.equal(received.message.timestampMs, NOW);
    assert.equal(received.fingerprint, alice.session.fingerprint);
    assert.equal(received.keyChanged, false);
  });

  it("reconnects with backoff after a drop, joins again, and resets the backoff after JOINED", async () => {
    const w = world();
    const alice = w.connect({ delays: [100, 200, 400] });
    await online(w, alice);
    w.relay.last.drop(1001, "going away");
    assert.equal(alice.state, "reconnecting");
    assert.equal(w.relay.sockets.length, 1);
    await w.clock.advance(99);
    assert.equal(w.relay.sockets.length, 1);
    await w.clock.advance(1);
    assert.equal(w.relay.sockets.length, 2);
    w.relay.last.drop(1006); // the relay is not back yet: the handshake fails
    await w.clock.advance(199);
    assert.equal(w.relay.sockets.length, 2);
    await w.clock.advance(1);
    assert.equal(w.relay.sockets.length, 3);
    w.relay.last.drop(1006);
    await w.clock.advance(400);
    assert.equal(w.relay.sockets.length, 4);
    w.relay.last.drop(1006);
    await w.clock.advance(400); // out of delays: the last one repeats
    assert.equal(w.relay.sockets.length, 5);
    w.relay.last.accept();
    await w.settle();
    assert.equal(alice.state, "online");
    assert.equal(w.relay.sent("Join").length, 2);
    assert.equal(alice.of("joined").length, 2);
    // Up for STABLE_AFTER_MS after JOINED: the backoff starts afresh, the next drop waits
    // the first delay again.
    await w.clock.advance(STABLE_AFTER_MS);
    w.relay.last.drop(1012, "restart");
    await w.clock.advance(100);
    assert.equal(w.relay.sockets.length, 6);
    assert.deepEqual(
      alice.of("state").map((e) => e.state),
      ["connecting", "online", "reconnecting", "online", "reconnecting"],
    );
  });

  it("reconnectNow tries at once, and the backoff goes on where it was", async () => {
    const w = world();
    const alice = w.connect({ delays: [100, 5000, 5000] });
    await online(w, alice);
    w.relay.last.drop(1006);
    await w.clock.advance(100);
    assert.equal(w.relay.sockets.length, 2);
    w.relay.last.drop(1006); // still down: the next try is 5 s away
    await w.clock.advance(1000);
    assert.equal(w.relay.sockets.length, 2);
    alice.reconnectNow();
    assert.equal(w.relay.sockets.length, 3);
    w.relay.last.accept();
    await w.settle();
    assert.equal(alice.state, "online");
    alice.reconnectNow(); // online: nothing to do
    assert.equal(w.relay.sockets.length, 3);
  });

  for (const code of [ErrorCode.RATE_LIMITED, 99]) {
    it(`a PUBLISH refused with code ${code} pauses publishing once, then goes again`, async () => {
      const w = world();
      const alice = w.connect({ seed: 1 });
      await online(w, alice);
      w.relay.refusePublishes = 1;
      w.relay.refuseCode = code;
      await alice.sendText(roomA.roomId, "first");
      await w.settle();
      await alice.sendText(roomA.roomId, "second"); // written during the pause: it waits
      await w.settle();
      assert.equal(w.relay.sent("Publish").length, 1);
      assert.equal(alice.of("accepted").length, 0);
      await w.clock.advance(RETRY_AFTER_RATE_LIMIT_MS - 1);
      assert.equal(w.relay.sent("Publish").length, 1); // still the pause
      await w.clock.advance(1);
      await w.settle();
      assert.equal(w.relay.sent("Publish").length, 3); // the refused one again, and the other
      assert.equal(alice.of("accepted").length, 2);
    });
  }

  it("a relay that lets us in and then closes at once is not hammered: the backoff goes on", async () => {
    const w = world();
    const alice = w.connect({ delays: [100, 200, 400, 800] });
    await online(w, alice);
    await w.clock.advance(STABLE_AFTER_MS);
    for (const [delay, sockets] of [[100, 2], [200, 3], [400, 4], [800, 5]]) {
      w.relay.last.drop(1011, "internal error");
      await w.clock.advance(delay - 1);
      assert.equal(w.relay.sockets.length, sockets - 1);
      await w.clock.advance(1);
      assert.equal(w.relay.sockets.length, sockets);
      w.relay.last.accept();
      await w.settle();
      assert.equal(alice.state, "online"); // JOINED again, and closed again right away
    }
  });

  it("resends an unacknowledged message exactly once after a reconnect, once the room refills", async () => {
    const w = world();
    const alice = w.connect({ seed: 1 });
    const bob = w.connect({ seed: 2 });
    await online(w, alice);
    await online(w, bob);
    w.relay.dropAcks = 1; // the relay takes the message, the ACK is lost
    const message = await alice.sendText(roomA.roomId, "did it arrive?");
    await w.settle();
    assert.equal(alice.session.unacknowledged, 1);
    assert.equal(alice.of("accepted").length, 0);
    // The relay restarts: both drop, alice is back first.
    const [aliceSocket, bobSocket] = w.relay.sockets;
    aliceSocket.drop(1012);
    bobSocket.drop(1012);
    await w.clock.advance(100);
    w.relay.sockets[2].accept();
    await w.settle();
    assert.equal(alice.session.holding(roomA.roomId), true);
    assert.equal(w.relay.sent("Publish").length, 1); // held: bob is not back yet
    w.relay.sockets[3].accept();
    await w.settle();
    const publishes = w.relay.sent("Publish");
    assert.equal(publishes.length, 2);
    assert.equal(hex(publishes[1].envelope), hex(publishes[0].envelope));
    assert.deepEqual(alice.of("accepted").map((e) => hex(e.messageId)), [hex(message.messageId)]);
    assert.equal(alice.session.unacknowledged, 0);
    // bob had the first copy; the second is dropped as a replay.
    assert.deepEqual(bob.of("message").map((e) => e.text), ["did it arrive?"]);
    assert.deepEqual(bob.of("rejected").map((e) => e.reason), ["ReplayedMessage"]);
    // Acknowledged now: another reconnect sends nothing again, and the hold timer left nothing behind.
    w.relay.sockets[2].drop(1006);
    await w.clock.advance(100);
    w.relay.last.accept();
    await w.clock.advance(5000);
    assert.equal(w.relay.sent("Publish").length, 2);
  });

  it("releases a held outbox after the grace time when members do not come back", async () => {
    const w = world();
    const alice = w.connect({ seed: 1 });
    const bob = w.connect({ seed: 2 });
    await online(w, alice);
    await online(w, bob);
    w.relay.sockets[0].drop(1006);
    bob.close();
    await alice.sendText(roomA.roomId, "anyone?");
    await w.clock.advance(100);
    w.relay.last.accept();
    await w.settle();
    assert.equal(w.relay.sent("Publish").length, 0);
    await w.clock.advance(REJOIN_GRACE_MS - 1);
    assert.equal(w.relay.sent("Publish").length, 0);
    await w.clock.advance(1);
    assert.equal(w.relay.sent("Publish").length, 1);
    assert.equal(alice.of("accepted").length, 1);
  });

  it("a connection that found the relay out of reach holds what it wrote the whole grace, then sends it", async () => {
    // The relay restarting: its others may be backing off still, and no count from
    // before says when they are all back (PROTOCOL.md 10.6).
    const { w, bob, alice, joined } = await aliceJoiningWithBobOnline();
    const message = await alice.sendText(roomA.roomId, "the relay is back?");
    w.relay.last.drop(1006); // closed before it opened: out of reach
    await w.clock.advance(100);
    w.relay.last.accept();
    await w.settle();
    assert.equal(alice.state, "online");
    assert.equal(alice.session.holding(roomA.roomId), true); // bob is there, others may not be
    await w.clock.advance(REJOIN_GRACE_MS - 1);
    assert.equal(w.relay.sent("Publish").length, 0);
    await w.clock.advance(1);
    assert.equal(w.relay.sent("Publish").length, 1);
    assert.deepEqual(bob.of("message").map((e) => e.text), ["the relay is back?"]);
    assert.deepEqual(alice.of("accepted").map((e) => hex(e.messageId)), [hex(message.messageId)]);
  });

  for (const joinedWhen of ["before", "after"]) {
    it(`a first try that got into a relay said to have just started holds what it sends the whole grace (room joined ${joinedWhen} it opened)`, async () => {
      // The page's relay says its uptime on /healthz (a page cannot read the 101's): its
      // members from before the restart may be backing off still (PROTOCOL.md 10.6).
      const w = world();
      const bob = w.connect({ seed: 2 });
      await online(w, bob);
      const started = w.clock.now - 3000;
      const alice = w.connect({ seed: 1, relayStartedAt: () => started });
      alice.start();
      let joined;
      if (joinedWhen === "before") joined = alice.join(KEY_A, { name: "alice" });
      w.relay.last.accept();
      await w.settle();
      if (joinedWhen === "after") joined = alice.join(KEY_A, { name: "alice" });
      joined.catch(() => {});
      await w.settle();
      assert.equal(alice.state, "online");
      await alice.sendText(roomA.roomId, "the relay is back?");
      await w.settle();
      assert.equal(alice.session.holding(roomA.roomId), true);
      await w.clock.advance(REJOIN_GRACE_MS - 1);
      assert.equal(w.relay.sent("Publish").length, 0);
      await w.clock.advance(1);
      assert.equal(w.relay.sent("Publish").length, 1);
      assert.deepEqual(bob.of("message").map((e) => e.text), ["the relay is back?"]);
    });
  }

  it("a relay that started longer than the grace ago, or did not say, holds nothing", async () => {
    for (const said of ["a grace ago", "nothing"]) {
      const w = world();
      const started = w.clock.now - REJOIN_GRACE_MS;
      const relayStartedAt = said === "nothing" ? () => null : () => started;
      const bob = w.connect({ seed: 2 });
      await online(w, bob);
      const alice = w.connect({ seed: 1, relayStartedAt });
      await online(w, alice);
      await alice.sendText(roomA.roomId, "hello");
      await w.settle();
      assert.equal(w.relay.sent("Publish").length, 1);
      assert.deepEqual(bob.of("message").map((e) => e.text), ["hello"]);
    }
  });

  it("joins a stored room whose key is in one case (typed keys may no longer be)", async () => {
    const w = world();
    const alice = w.connect({ seed: 1 });
    alice.start();
    w.relay.last.accept();
    const joined = alice.join("S6c56bnxqibjk9mqsye7ykvq7n113c", { name: "alice" });
    await w.settle();
    assert.equal((await joined).members, 1);
  });

  it("a connection that reached the relay at its first try sends at once", async () => {
    const w = world();
    const alice = w.connect({ seed: 1 });
    await online(w, alice);
    await alice.sendText(roomA.roomId, "hello");
    await w.settle();
    assert.equal(w.relay.sent("Publish").length, 1);
  });

  it("holds the outbox longer than any reconnect delay, so members still backing off are back in time", () => {
    const delays = backoffDelays({ random: () => 1 });
    let longest = 0;
    for (let n = 0; n < 50; n += 1) longest = Math.max(longest, delays.next().value);
    assert.ok(longest >= 10_000);
    assert.ok(REJOIN_GRACE_MS >= longest + 2000);
  });

  for (const code of [1008, 1009]) {
    it(`does not reconnect after close code ${code}, and says why`, async () => {
      const w = world();
      const alice = w.connect();
      await online(w, alice);
      w.relay.last.drop(code, "too many refused frames");
      assert.equal(alice.state, "closed");
      assert.match(alice.reason, new RegExp(`${code}`));
      assert.deepEqual(alice.of("state").at(-1), { type: "state", state: "closed", reason: alice.reason });
      await w.clock.advance(120_000);
      assert.equal(w.relay.sockets.length, 1);
      await assert.rejects(alice.sendText(roomA.roomId, "hi"), RelayRefused);
      await assert.rejects(alice.join(KEY_A), RelayRefused);
    });
  }

  it("a join waiting when the relay refuses us for good is rejected", async () => {
    const w = world();
    const alice = w.connect();
    alice.start();
    const joining = alice.join(KEY_A);
    w.relay.last.drop(1008);
    await assert.rejects(joining, RelayRefused);
  });

  it("gives up on a server that does not select the subprotocol", async () => {
    const w = world();
    const alice = w.connect();
    alice.start();
    const joining = alice.join(KEY_A);
    w.relay.last.accept("");
    await assert.rejects(joining, RelayRefused);
    assert.equal(alice.state, "closed");
    assert.deepEqual(w.relay.last.closedWith, { code: 1000, reason: "" });
    await w.clock.advance(60_000);
    assert.equal(w.relay.sockets.length, 1);
  });

  it("closes on a text message and does not connect again (PROTOCOL.md 10.1)", async () => {
    for (const sent of ["hello", { size: 3 }]) {
      // A text message, or a Blob-like thing: not binary data as asked.
      const w = world();
      const alice = w.connect();
      await online(w, alice);
      w.relay.last.data(sent);
      await w.settle();
      // 1000: a page may not close with 1008 (the browser throws InvalidAccessError).
      assert.equal(w.relay.last.closedWith.code, 1000);
      assert.equal(alice.state, "closed");
      await assert.rejects(alice.join(KEY_A), RelayRefused);
      await w.clock.advance(60_000);
      assert.equal(w.relay.sockets.length, 1);
    }
  });

  it("survives garbage and frames only clients send, and reports them as errors", async () => {
    const w = world();
    const alice = w.connect();
    await online(w, alice);
    const socket = w.relay.last;
    socket.data(new Uint8Array([0x99, 1, 2]).buffer);
    socket.data(new ArrayBuffer(0));
    socket.push({ type: "Ping", token: 1n });
    await w.settle();
    assert.equal(alice.of("error").length, 3);
    assert.ok(alice.of("error").every((e) => typeof e.message === "string"));
    assert.equal(alice.state, "online");
    // Still working: a PONG and a message go through.
    socket.push({ type: "Pong", token: 5n });
    await w.settle();
    assert.deepEqual(alice.of("pong").map((e) => e.token), [5n]);
    assert.ok((await alice.sendText(roomA.roomId, "still here")).messageId);
  });

  it("expires a room by its own clock, leaves it, and refuses to join an expired one", async () => {
    const w = world();
    const alice = w.connect();
    alice.start();
    w.relay.last.accept();
    const joined = alice.join(KEY_A, { expiresAtMs: NOW + 2500 });
    await w.settle();
    await joined;
    await w.clock.advance(2000);
    assert.equal(alice.of("expired").length, 0);
    await w.clock.advance(1000);
    assert.deepEqual(alice.of("expired").map((e) => hex(e.roomId)), [hex(roomA.roomId)]);
    assert.equal(w.relay.sent("Leave").length, 1);
    assert.equal(alice.rooms.size, 0);
    await assert.rejects(alice.join(KEY_A, { expiresAtMs: NOW }), RoomGone);
  });

  it("rejects a join the relay refuses after the proof", async () => {
    const w = world();
    const alice = w.connect();
    w.relay.refuseProof = ErrorCode.EXPIRY_TOO_FAR;
    const joining = online(w, alice);
    await assert.rejects(joining, (error) => error instanceof JoinRefused && error.code === ErrorCode.EXPIRY_TOO_FAR);
    assert.equal(alice.of("refused")[0].fatal, true);
    assert.equal(alice.rooms.size, 0);
  });

  it("a room full for now: join rejects, the room and its outbox wait, and its JOIN goes again", async () => {
    const w = world();
    const alice = w.connect();
    w.relay.refuseProof = ErrorCode.ROOM_FULL;
    const joining = online(w, alice);
    await assert.rejects(joining, (error) => error instanceof JoinRefused && error.code === ErrorCode.ROOM_FULL);
    assert.equal(alice.of("refused")[0].fatal, false);
    assert.equal(alice.rooms.size, 1);
    await alice.sendText(roomA.roomId, "sent once there is a place");
    const again = alice.join(KEY_A); // waits for the next answer
    w.relay.refuseProof = null; // someone left
    await w.clock.advance(RETRY_AFTER_FULL_MS - 1);
    assert.equal(w.relay.sent("Join").length, 1);
    await w.clock.advance(1);
    assert.equal(hex((await again).roomId), hex(roomA.roomId));
    assert.equal(w.relay.sent("Join").length, 2);
    await w.settle();
    assert.equal(w.relay.sent("Publish").length, 1);
  });

  it("a full room left and joined again while it waits asks once every 15 seconds, not twice", async () => {
    const w = world();
    const alice = w.connect();
    w.relay.refuseProof = ErrorCode.ROOM_FULL;
    await assert.rejects(online(w, alice), JoinRefused);
    await w.clock.advance(5000);
    alice.leave(roomA.roomId);
    await assert.rejects(alice.join(KEY_A), JoinRefused); // refused again: its own retry
    assert.equal(w.relay.sent("Join").length, 2);
    // The first refusal's retry is for the room that was left: it sends nothing.
    await w.clock.advance(RETRY_AFTER_FULL_MS - 1);
    assert.equal(w.relay.sent("Join").length, 2);
    await w.clock.advance(1);
    assert.equal(w.relay.sent("Join").length, 3);
    await w.clock.advance(4 * RETRY_AFTER_FULL_MS);
    assert.equal(w.relay.sent("Join").length, 7);
  });

  it("sends JOIN again a second after it was rate limited", async () => {
    const w = world();
    const alice = w.connect();
    w.relay.rateLimitJoins = 1;
    const joining = online(w, alice);
    await w.settle();
    assert.equal(w.relay.sent("Join").length, 1);
    await w.clock.advance(999);
    assert.equal(w.relay.sent("Join").length, 1);
    await w.clock.advance(1);
    await joining;
    assert.equal(w.relay.sent("Join").length, 2);
    assert.equal(alice.of("refused")[0].code, ErrorCode.RATE_LIMITED);
  });

  it("a JOIN retry meant for a dropped connection is not sent on the next one", async () => {
    const w = world();
    const alice = w.connect();
    w.relay.rateLimitJoins = 1;
    online(w, alice);
    await w.settle();
    w.relay.last.drop(1006);
    await w.clock.advance(100);
    w.relay.paused = true; // the new connection's CHALLENGE is slow to come
    w.relay.last.accept();
    await w.clock.advance(2000);
    // A second JOIN here would replace the challenge under our PROOF (PROOF_FAILED).
    assert.equal(w.relay.sent("Join").length, 2);
  });

  it("frames of a connection that dropped are not handled as the next one's", async () => {
    const w = world();
    const alice = w.connect();
    await online(w, alice);
    const old = w.relay.last;
    old.push({ type: "Presence", roomId: roomA.roomId, members: 5 });
    old.push({ type: "Pong", token: 3n });
    old.drop(1006);
    await w.settle();
    assert.deepEqual(alice.of("presence"), []);
    assert.deepEqual(alice.of("pong"), []);
  });

  it("messages that came before a drop are read, though their turn comes after it", async () => {
    // Each waits for WebCrypto, so a burst is still queued when the close comes. The relay
    // keeps none: one dropped here would be lost for good, its sender told it went.
    const w = world();
    const bob = w.connect({ seed: 2 });
    await online(w, bob, { name: "bob" });
    const alice = w.connect({ seed: 1 });
    await online(w, alice);
    w.relay.paused = true; // what the relay sends now waits, then comes in one burst
    const texts = ["m0", "m1", "m2", "m3", "m4"];
    for (const text of texts) await bob.sendText(roomA.roomId, text);
    await w.settle();
    const toAlice = w.relay.sockets.find((socket) => socket !== w.relay.sockets[0]);
    w.relay.paused = false;
    for (const release of w.relay.held.splice(0)) release();
    toAlice.drop(1012); // a relay restarting, right after the burst
    await w.settle();
    assert.deepEqual(alice.of("message").map((m) => m.text), texts);
    assert.equal(alice.state, "reconnecting");
  });

  it("messages queued when close() comes are not heard, then or after a later start()", async () => {
    const w = world();
    const bob = w.connect({ seed: 2 });
    await online(w, bob, { name: "bob" });
    const alice = w.connect({ seed: 1 });
    await online(w, alice);
    w.relay.paused = true;
    for (const text of ["m0", "m1", "m2"]) await bob.sendText(roomA.roomId, text);
    await w.settle();
    w.relay.paused = false;
    for (const release of w.relay.held.splice(0)) release();
    alice.close(); // a lock, while the burst waits for WebCrypto
    await w.settle();
    assert.deepEqual(alice.of("message"), []);
    alice.start(); // the same connection, started again
    w.relay.last.accept();
    await w.settle();
    assert.deepEqual(alice.of("message"), []);
  });

  it("a join of a bad room key is rejected with the parser's error", async () => {
    const w = world();
    const alice = w.connect();
    await assert.rejects(alice.join("S6c56bnXQiBjk9mqSYE7ykVQ7NzrRz"), { name: "ChecksumMismatch" });
  });

  it("leaving rejects a join still waiting, and sends LEAVE once the relay answers the JOIN", async () => {
    const w = world();
    const alice = w.connect();
    alice.start();
    w.relay.last.accept();
    w.relay.refuseProof = null;
    w.relay.paused = true; // the CHALLENGE is slow to come
    const joining = alice.join(KEY_A);
    alice.leave(roomA.roomId);
    await assert.rejects(joining, RoomGone);
    await w.settle();
    assert.equal(w.relay.sent("Join").length, 1);
    assert.equal(w.relay.sent("Leave").length, 0); // held until the JOIN is answered
    w.relay.paused = false;
    for (const release of w.relay.held.splice(0)) release();
    await w.settle();
    // The relay's CHALLENGE is answered with LEAVE, not PROOF: one JOIN in flight, ever.
    assert.equal(w.relay.sent("Join").length, 1);
    assert.equal(w.relay.sent("Proof").length, 0);
    assert.equal(w.relay.sent("Leave").length, 1);
  });

  it("pings a quiet connection, and treats one that stops answering as dropped", async () => {
    const w = world();
    const alice = w.connect({ pingIntervalMs: 1000 });
    await online(w, alice);
    await w.clock.advance(3000);
    assert.equal(w.relay.sent("Ping").length, 3);
    assert.equal(alice.state, "online");
    w.relay.answerPings = false;
    await w.clock.advance(1000); // a PING goes unanswered ...
    assert.equal(alice.state, "online");
    await w.clock.advance(1000); // ... for a whole interval: the line is dead
    assert.equal(alice.state, "reconnecting");
    assert.deepEqual(w.relay.sockets[0].closedWith, { code: 1000, reason: "" });
    await w.clock.advance(100);
    assert.equal(w.relay.sockets.length, 2);
  });

  it("with no room to be in, waits for a join before connecting again", async () => {
    const w = world();
    const alice = w.connect();
    alice.start();
    w.relay.last.accept();
    w.relay.last.drop(4001, "join a room sooner");
    await w.clock.advance(60_000);
    assert.equal(w.relay.sockets.length, 1);
    const joining = alice.join(KEY_A);
    assert.equal(w.relay.sockets.length, 2);
    w.relay.last.accept();
    await w.settle();
    assert.equal((await joining).members, 1);
  });

  it("close() hangs up, stops every timer, and rejects waiting joins", async () => {
    const w = world();
    const alice = w.connect({ pingIntervalMs: 1000 });
    alice.start();
    const joining = alice.join(KEY_A);
    alice.close();
    await assert.rejects(joining, RoomGone);
    assert.equal(alice.state, "closed");
    assert.deepEqual(w.relay.last.closedWith, { code: 1000, reason: "" });
    assert.deepEqual(w.clock.timers, []);
    await w.clock.advance(60_000);
    assert.equal(w.relay.sockets.length, 1);
  });

  it("a socket that throws on construction is retried with backoff", async () => {
    const w = world();
    let attempts = 0;
    const Failing = class {
      constructor() {
        attempts++;
        throw new SyntaxError("blocked");
      }
    };
    const alice = new RoomConnection({
      serverUrl: "http://127.0.0.1:1",
      deviceSeed: new Uint8Array(32),
      WebSocketImpl: Failing,
      now: () => w.clock.now,
      delays: [100],
      setTimer: w.clock.setTimer,
      clearTimer: w.clock.clearTimer,
      pingIntervalMs: 0,
    });
    const errors = [];
    alice.addEventListener("error", (event) => errors.push(event.detail.message));
    alice.start();
    await w.clock.advance(250);
    assert.equal(attempts, 3);
    assert.equal(errors.length, 3);
    assert.equal(alice.state, "reconnecting");
    alice.close();
  });

  it("gives up on a socket that never opens after OPEN_TIMEOUT_MS, and tries again as after a relay out of reach", async () => {
    // A relay, or a balancer before it, that takes the TCP connection and never answers
    // the upgrade: without a limit of our own each try lasts the browser's (240 s).
    const { w, alice, joined } = await aliceJoiningWithBobOnline();
    const stalled = w.relay.last;
    await w.clock.advance(OPEN_TIMEOUT_MS - 1);
    assert.equal(alice.state, "connecting");
    assert.equal(stalled.closedWith, undefined);
    await w.clock.advance(1);
    assert.deepEqual(stalled.closedWith, { code: 1000, reason: "" }); // the try is dropped
    assert.equal(alice.state, "reconnecting");
    const sockets = w.relay.sockets.length;
    await w.clock.advance(100); // the first reconnect delay
    assert.equal(w.relay.sockets.length, sockets + 1);
    stalled.dispatchEvent(Object.assign(new Event("close"), { code: 1006, reason: "", wasClean: false }));
    await w.clock.advance(1000); // the old try's late close speaks for nothing
    assert.equal(w.relay.sockets.length, sockets + 1);
    w.relay.last.accept();
    await w.settle();
    assert.equal(alice.state, "online");
    assert.equal((await joined).members, 2);
    // Counted as a try that found the relay out of reach (PROTOCOL.md 10.6): the outbox
    // waits the whole grace from JOINED.
    assert.equal(alice.session.holding(roomA.roomId), true);
    await w.clock.advance(OPEN_TIMEOUT_MS); // an open connection is not given up
    assert.equal(alice.state, "online");
    assert.equal(w.relay.sockets.length, sockets + 1);
    alice.close();
  });
});

describe("RoomConnection: who is here (PROTOCOL.md 5.7)", () => {
  /** The names and fingerprints of the last "members" event of `connection`. */
  const namesOf = (connection) => (connection.of("members").at(-1)?.members ?? []).map((m) => [m.name, m.fingerprint, m.keyChanged]);
  /** The kinds `connection` published in room A, in order, opened with the room's keys. */
  const publishedKinds = async (w, connection) => {
    const kinds = [];
    for (const [socket, frame] of w.relay.received) {
      if (frame.type !== "Publish" || !connection.sockets.includes(socket)) continue;
      if (hex(frame.roomId) !== hex(roomA.roomId)) continue;
      kinds.push((await openEnvelope(roomA, frame.envelope)).kind);
    }
    return kinds;
  };
  /** Settle until `what()` holds: a seal takes WebCrypto a while, and a busy machine longer. */
  const until = async (w, what) => {
    const deadline = Date.now() + 5_000;
    while (!what() && Date.now() < deadline) await w.settle();
    assert.ok(what(), "it never happened");
  };
  /** Alice, announcing, in room A (and `alsoIn`, a key); Bob comes ANSWER_GAP_MS after
   * her JOIN, so that her answer to his, a roll call, then waits only d. */
  async function bobJoinsAfterAlice(w, { alsoIn = null, ...options } = {}) {
    const alice = w.connect({ seed: 1, announce: true, ...options });
    const bob = w.connect({ seed: 2, announce: true, ...options });
    alice.sockets = [];
    bob.sockets = [];
    await online(w, alice, { name: "alice" });
    alice.sockets.push(w.relay.last);
    if (alsoIn !== null) await alice.join(alsoIn, { name: "alice" });
    await w.clock.advance(ANSWER_GAP_MS);
    await online(w, bob, { name: "bob" });
    bob.sockets.push(w.relay.last);
    return { alice, bob };
  }

  /** Alice then Bob, announcing, in room A, until each has heard the other. */
  async function aliceAndBob(w, options = {}) {
    const { alice, bob } = await bobJoinsAfterAlice(w, options);
    // Alice's HERE is due within ANSWER_SPREAD_MS of Bob's JOIN, and goes at a tick.
    await w.clock.advance(ANSWER_SPREAD_MS + EXPIRY_CHECK_MS);
    await until(w, () => alice.members(roomA.roomId).length === 1 && bob.members(roomA.roomId).length === 1);
    return { alice, bob };
  }

  it("announcing connections learn each other's names and fingerprints, the answer at a tick of `now`", async () => {
    const w = world();
    // Rooms expire by a clock a day behind: the rosters go by `now` all the same.
    const { alice, bob } = await aliceAndBob(w, { expiryNow: () => w.clock.now - 86_400_000 });
    assert.deepEqual(namesOf(alice), [["bob", bob.session.fingerprint, false]]);
    assert.deepEqual(namesOf(bob), [["alice", alice.session.fingerprint, false]]);
    assert.deepEqual(alice.members(roomA.roomId).map((m) => m.name), ["bob"]);
    assert.ok(alice.of("members").at(-1).roomId instanceof Uint8Array);
    assert.deepEqual(await publishedKinds(w, alice), [Kind.JOIN, Kind.HERE]);
    assert.deepEqual(await publishedKinds(w, bob), [Kind.JOIN]);
    // Announcements are no messages of the user's: nothing accepted, nothing shown.
    assert.deepEqual([...alice.of("accepted"), ...bob.of("accepted")], []);
    assert.deepEqual(alice.of("error"), []);
  });

  it("a connection that does not announce says nothing, and is counted but not named", async () => {
    const w = world();
    const silent = w.connect({ seed: 3 });
    const alice = w.connect({ seed: 1, announce: true });
    silent.sockets = [];
    alice.sockets = [];
    await online(w, silent, { name: "sam" });
    silent.sockets.push(w.relay.last);
    await online(w, alice, { name: "alice" });
    alice.sockets.push(w.relay.last);
    await w.clock.advance(3 * EXPIRY_CHECK_MS);
    await until(w, () => silent.members(roomA.roomId).length === 1);
    assert.deepEqual(await publishedKinds(w, silent), []);
    assert.deepEqual(alice.of("joined").at(-1).members, 2);
    assert.deepEqual(namesOf(alice), []);
    // It still hears who the others are, when asked; it shows no roster, so no events.
    assert.deepEqual(silent.members(roomA.roomId).map((m) => [m.name, m.fingerprint]), [["alice", alice.session.fingerprint]]);
    assert.deepEqual(silent.of("members"), []);
  });

  it("close() says LEAVE on the socket before hanging up: the others drop the member at once", async () => {
    const w = world();
    const { alice, bob } = await aliceAndBob(w);
    const socket = w.relay.last;
    bob.close();
    // Closed for the caller at once; the socket waits for the LEAVE message's seal.
    assert.equal(bob.state, "closed");
    assert.equal(socket.closedWith, undefined);
    await until(w, () => socket.closedWith !== undefined);
    await w.settle(); // alice may still be opening the LEAVE delivered with the close
    assert.deepEqual(socket.closedWith, { code: 1000, reason: "" });
    assert.deepEqual(await publishedKinds(w, bob), [Kind.JOIN, Kind.LEAVE]);
    // Heard before the count went down, and long before any roll call could judge.
    assert.deepEqual(namesOf(alice), []);
    assert.deepEqual(bob.of("error"), []);
    // No timer of bob's is left (the wait's included); alice's go with her.
    alice.close();
    await until(w, () => w.relay.sockets.every((s) => s.readyState === 3));
    assert.deepEqual(w.clock.timers, []);
  });

  it("close() hangs up after LEAVING_WAIT_MS when the LEAVE messages do not come", async () => {
    const w = world();
    const { bob } = await aliceAndBob(w);
    const socket = w.relay.last;
    bob.session.announceLeaving = () => new Promise(() => {}); // a seal that never ends
    bob.close();
    await w.clock.advance(LEAVING_WAIT_MS - 1);
    assert.equal(socket.closedWith, undefined);
    await w.clock.advance(1);
    assert.deepEqual(socket.closedWith, { code: 1000, reason: "" });
    assert.equal(bob.session.connected, false);
  });

  it("a connection started again after close() hangs up the last socket first", async () => {
    const w = world();
    const { bob } = await aliceAndBob(w);
    const socket = w.relay.last;
    bob.session.announceLeaving = () => new Promise(() => {});
    bob.close();
    bob.start();
    assert.deepEqual(socket.closedWith, { code: 1000, reason: "" });
    assert.notEqual(w.relay.last, socket);
    w.relay.last.accept();
    await w.settle();
    assert.equal(bob.state, "online");
    assert.equal(bob.rooms.get(roomHex(roomA.roomId)).joined, true);
  });

  it("leave() sends the LEAVE message before the relay's LEAVE frame", async () => {
    const w = world();
    const { alice, bob } = await aliceAndBob(w);
    bob.leave(roomA.roomId);
    await until(w, () => w.relay.sent("Leave").length === 1);
    await w.settle(); // alice may still be opening the LEAVE message
    const order = w.relay.received.filter(([socket]) => bob.sockets.includes(socket)).map(([, f]) => f.type);
    assert.deepEqual(order.slice(-2), ["Publish", "Leave"]);
    assert.deepEqual(await publishedKinds(w, bob), [Kind.JOIN, Kind.LEAVE]);
    assert.deepEqual(namesOf(alice), []);
    assert.deepEqual(alice.of("presence").at(-1).members, 1);
  });

  it("a tab whose once-a-second tick the browser slows to once a minute still answers a roll call in its window", async () => {
    const w = world();
    throttleChains(w.clock);
    const { alice, bob } = await bobJoinsAfterAlice(w);
    // Bob's JOIN is a roll call: Alice's HERE is due within ANSWER_SPREAD_MS of it.
    await w.clock.advance(ANSWER_SPREAD_MS);
    await until(w, () => bob.members(roomA.roomId).length === 1);
    assert.deepEqual(await publishedKinds(w, alice), [Kind.JOIN, Kind.HERE]);
    // Judged at Bob's next tick, a minute on: Alice answered, so she stays on his list.
    await w.clock.advance(60_000);
    assert.deepEqual(namesOf(bob), [["alice", alice.session.fingerprint, false]]);
    assert.deepEqual(await publishedKinds(w, alice), [Kind.JOIN, Kind.HERE]);
  });

  it("in such a tab, an answer that found publishing paused goes when the pause ends, not a minute on", async () => {
    const w = world();
    throttleChains(w.clock);
    const KEY_B = "SDehB97fmBnFwezqLcANLCCQkQyfz1";
    const { alice, bob } = await bobJoinsAfterAlice(w, { alsoIn: KEY_B });
    // Just before Alice's answer to Bob's roll call is due, a message of hers in another
    // room is refused: publishing pauses, and the answer finds the relay busy.
    w.relay.refusePublishes = 1;
    await alice.sendText(roomKeysFromMinikey(KEY_B).roomId, "hi");
    await w.settle();
    assert.equal(alice.session.waitingToResend, true);
    await w.clock.advance(ANSWER_SPREAD_MS);
    await until(w, () => bob.members(roomA.roomId).length === 1);
    assert.deepEqual(await publishedKinds(w, alice), [Kind.JOIN, Kind.HERE]);
    await w.clock.advance(60_000);
    assert.deepEqual(namesOf(bob), [["alice", alice.session.fingerprint, false]]);
  });

  it("a member that vanishes without a word is dropped by the roll call its going starts", async () => {
    const w = world();
    const { alice, bob } = await aliceAndBob(w);
    w.relay.last.drop(1006); // bob's line, cut
    bob.close();
    await w.settle();
    assert.deepEqual(alice.of("presence").at(-1).members, 1);
    assert.deepEqual(namesOf(alice), [["bob", bob.session.fingerprint, false]]);
    // Its JOIN within ANSWER_SPREAD_MS, at a tick; judged at the first tick after the window.
    await w.clock.advance(ANSWER_SPREAD_MS + ROLL_CALL_WINDOW_MS + 2 * EXPIRY_CHECK_MS);
    await until(w, () => namesOf(alice).length === 0);
    assert.deepEqual(await publishedKinds(w, alice), [Kind.JOIN, Kind.HERE, Kind.JOIN]);
  });
});

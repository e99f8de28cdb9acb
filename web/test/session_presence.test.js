// Who is in a room (PROTOCOL.md 5.7), through the client session: the JOIN, HERE and LEAVE
// messages an announcing session sends, outside the outbox, and the rosters it keeps.
// The tests play the relay with frames.js.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { hex } from "../src/protocol/bytes.js";
import { ErrorCode } from "../src/protocol/codes.js";
import { Kind, openEnvelope } from "../src/protocol/envelope.js";
import { decodeFrame, encodeFrame } from "../src/protocol/frames.js";
import { fingerprint, roomKeysFromMinikey } from "../src/protocol/kdf.js";
import { ANSWER_GAP_MS, MAX_HEARD_AGE_MS, ROLL_CALL_WINDOW_MS, answerDelay } from "../src/protocol/roster.js";
import { ClientSession, MAX_IN_FLIGHT, roomHex } from "../src/protocol/session.js";

const KEY_A = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy";
const KEY_B = "SDehB97fmBnFwezqLcANLCCQkQyfz1";
const NOW = 1_790_000_000_000;
const roomA = roomKeysFromMinikey(KEY_A);
const roomB = roomKeysFromMinikey(KEY_B);

/** Deterministic "random" bytes: a big-endian counter, so nonces and ids never repeat. */
function counterBytes(start) {
  let next = BigInt(start);
  return (n) => {
    const out = new Uint8Array(n);
    let value = next++;
    for (let i = n - 1; i >= 0 && value > 0n; i--, value >>= 8n) out[i] = Number(value & 0xffn);
    return out;
  };
}

function makeSession(seed, announce = true) {
  return new ClientSession({
    deviceSeed: new Uint8Array(32).fill(seed),
    randomBytes: counterBytes(seed * 1_000_000),
    announce,
  });
}

const frame = (fields) => encodeFrame(fields);
const errorFrame = (code, roomId, ref) => frame({ type: "Error", code, ref, roomId, reason: "" });
const decoded = (session) => session.framesToSend().map(decodeFrame);
const deliverFrom = (publish) => frame({ type: "Deliver", roomId: publish.roomId, envelope: publish.envelope });
const ofType = (events, type) => events.filter((event) => event.type === type);
const namesIn = (session, room = roomA) => session.members(room.roomId).map((member) => member.name);

/** The frames' types, and for a PUBLISH the kind of the message it carries (in `room`). */
async function described(frames, room = roomA) {
  const out = [];
  for (const f of frames) {
    out.push(f.type === "Publish" ? `Publish ${(await openEnvelope(room, f.envelope)).kind}` : f.type);
  }
  return out;
}

/** Connect `session` and walk the handshake of `room` up to JOINED with `members`. */
async function joinRoom(session, room, { members = 1, name = "", at = NOW } = {}) {
  if (!session.rooms.has(roomHex(room.roomId))) session.join(room, { name });
  if (!session.connected) session.connectionMade();
  decoded(session);
  await session.receive(frame({ type: "Challenge", roomId: room.roomId, challenge: new Uint8Array(32) }), at);
  decoded(session);
  await session.receive(frame({ type: "Joined", roomId: room.roomId, expiresAtMs: 0, members }), at);
}

/**
 * A relay in a few lines for sessions already joined: ACK to the sender and DELIVER to
 * the others; a LEAVE frame takes its sender out, with PRESENCE to the rest.
 */
class Relay {
  constructor(...sessions) {
    this.members = new Set(sessions);
    this.kinds = new Map(sessions.map((session) => [session, []])); // what each published
  }

  async pump(nowMs) {
    for (let busy = true; busy; ) {
      busy = false;
      for (const from of [...this.kinds.keys()]) {
        for (const f of decoded(from)) {
          busy = true;
          if (f.type === "Publish") {
            this.kinds.get(from).push((await openEnvelope(roomA, f.envelope)).kind);
            await from.receive(frame({ type: "Ack", ref: f.ref }), nowMs);
            for (const to of this.members) if (to !== from) await to.receive(deliverFrom(f), nowMs);
          } else if (f.type === "Leave") {
            this.members.delete(from);
            const presence = frame({ type: "Presence", roomId: roomA.roomId, members: this.members.size });
            for (const to of this.members) await to.receive(presence, nowMs);
          }
        }
      }
    }
  }
}

/** Alice, Bob and Carol, announcing, joined to room A one after the other, each heard. */
/** A member let in at NOW answers no JOIN before this. */
const AFTER_GAP = NOW + ANSWER_GAP_MS;

async function threeMembers() {
  const [alice, bob, carol] = [makeSession(1), makeSession(2), makeSession(3)];
  const relay = new Relay();
  // Let in ANSWER_GAP_MS before NOW, so that the answers are due by NOW + d.
  const at = NOW - ANSWER_GAP_MS;
  for (const [n, [session, name]] of [[alice, "alice"], [bob, "bob"], [carol, "carol"]].entries()) {
    relay.kinds.set(session, []);
    await joinRoom(session, roomA, { members: n + 1, name, at });
    const presence = frame({ type: "Presence", roomId: roomA.roomId, members: n + 1 });
    for (const other of relay.members) await other.receive(presence, at);
    relay.members.add(session);
    await relay.pump(at);
  }
  // Each answers the JOINs it heard: after a tick past every delay.
  for (const session of [alice, bob, carol]) await session.tick(NOW + 2000);
  await relay.pump(NOW + 2000);
  for (const session of [alice, bob, carol]) session.events();
  return { alice, bob, carol, relay };
}

describe("announcing (PROTOCOL.md 5.7)", () => {
  it("sends a JOIN message at each JOINED, before what waits in the outbox", async () => {
    const alice = makeSession(1);
    alice.join(roomA, { name: "alice" });
    await alice.sendText(roomA.roomId, "written before", NOW);
    await joinRoom(alice, roomA, { at: NOW + 5 });
    const wire = decoded(alice);
    assert.deepEqual(await described(wire), [`Publish ${Kind.JOIN}`, `Publish ${Kind.TEXT}`]);
    const join = await openEnvelope(roomA, wire[0].envelope);
    assert.equal(join.senderName, "alice");
    assert.equal(join.timestampMs, NOW + 5);
    assert.equal(join.body.length, 0);
    assert.equal(hex(join.senderKey), hex(alice.device.publicKey));
    // A reconnect: JOIN again.
    alice.connectionLost();
    await joinRoom(alice, roomA);
    assert.deepEqual((await described(decoded(alice))).filter((d) => d === `Publish ${Kind.JOIN}`).length, 1);
  });

  it("keeps announcements out of the outbox: no accepted, not listed, not resent", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    const [join] = decoded(alice);
    assert.equal(alice.unacknowledged, 0);
    assert.deepEqual(alice.outboxOf(roomA.roomId), []);
    alice.events();
    await alice.receive(frame({ type: "Ack", ref: join.ref }), NOW);
    assert.deepEqual(alice.events(), []);
    // Not answered, then the connection drops: the next connection sends a new JOIN only.
    const bob = makeSession(2);
    await joinRoom(bob, roomA);
    const [bobsJoin] = decoded(bob);
    bob.connectionLost();
    await joinRoom(bob, roomA);
    const again = decoded(bob).filter((f) => f.type === "Publish");
    assert.equal(again.length, 1);
    assert.notEqual(hex(again[0].envelope), hex(bobsJoin.envelope));
    assert.deepEqual(ofType(bob.events(), "notSent"), []);
  });

  it("two members learn who the other is: JOIN, then a HERE at a tick", async () => {
    const alice = makeSession(1);
    const bob = makeSession(2);
    await joinRoom(alice, roomA, { name: "alice", at: NOW - ANSWER_GAP_MS }); // so, no wait but d
    const relay = new Relay(alice);
    await relay.pump(NOW - ANSWER_GAP_MS);
    alice.events();
    await joinRoom(bob, roomA, { members: 2, name: "bob" });
    relay.members.add(bob);
    relay.kinds.set(bob, []);
    await relay.pump(NOW);
    assert.deepEqual(relay.kinds.get(alice), [Kind.JOIN]);
    assert.deepEqual(relay.kinds.get(bob), [Kind.JOIN]);
    assert.deepEqual(namesIn(alice), ["bob"]);
    const [news] = ofType(alice.events(), "members");
    assert.equal(hex(news.roomId), hex(roomA.roomId));
    assert.deepEqual(news.members.map((m) => [m.name, m.fingerprint, m.keyChanged]), [["bob", bob.fingerprint, false]]);
    assert.deepEqual(namesIn(bob), []); // alice's JOIN went before bob was there
    const due = NOW + answerDelay(alice.device.publicKey, bob.device.publicKey);
    await alice.tick(due - 1);
    await relay.pump(due - 1);
    assert.deepEqual(namesIn(bob), []);
    await alice.tick(due);
    await relay.pump(due);
    assert.deepEqual(relay.kinds.get(alice), [Kind.JOIN, Kind.HERE]);
    assert.deepEqual(namesIn(bob), ["alice"]);
    assert.equal(bob.members(roomA.roomId)[0].fingerprint, fingerprint(alice.device.publicKey));
    assert.deepEqual(ofType(bob.events(), "members").length, 1);
    assert.deepEqual(ofType(alice.events(), "accepted"), []);
    assert.deepEqual(alice.members(roomB.roomId), []);
  });

  it("a member that stays silent is taken out after a roll call, with a members event", async () => {
    const { alice, bob, carol, relay } = await threeMembers();
    assert.deepEqual(namesIn(alice), ["bob", "carol"]);
    // Carol's device goes away without a word; the relay counts it out.
    relay.members.delete(carol);
    relay.kinds.delete(carol);
    const at = NOW + 60_000;
    for (const session of [alice, bob]) {
      await session.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 2 }), at);
    }
    // A roll call's JOIN from each (no LEAVE explains it), answered by the other's JOIN.
    for (const session of [alice, bob]) await session.tick(at + 2000);
    await relay.pump(at + 2000);
    for (const session of [alice, bob]) await session.tick(at + 2000 + ROLL_CALL_WINDOW_MS);
    assert.deepEqual(namesIn(alice), ["bob"]);
    assert.deepEqual(namesIn(bob), ["alice"]);
    assert.deepEqual(ofType(alice.events(), "members").at(-1).members.map((m) => m.name), ["bob"]);
  });

  it("drops its own announcement sent back by a relay as a replay", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    const [join] = decoded(alice);
    alice.events();
    await alice.receive(deliverFrom(join), NOW + 1);
    assert.deepEqual(alice.events().map((e) => [e.type, e.reason]), [["rejected", "ReplayedMessage"]]);
  });

  it("answers nothing while the room is not joined: a HERE due then is dropped", async () => {
    const alice = makeSession(1);
    const bob = makeSession(2);
    await joinRoom(alice, roomA);
    await joinRoom(bob, roomA, { members: 2, name: "bob" });
    await alice.receive(deliverFrom(decoded(bob)[0]), NOW);
    decoded(alice);
    alice.connectionLost();
    await alice.tick(NOW + 3000);
    alice.connectionMade();
    await alice.tick(NOW + 3001);
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
  });
});

describe("announcements on a busy wire", () => {
  it("wait for a place in flight, which they take like any PUBLISH", async () => {
    const alice = makeSession(1);
    alice.join(roomA);
    alice.connectionMade();
    for (let n = 0; n < MAX_IN_FLIGHT; n++) await alice.sendText(roomA.roomId, `${n}`, NOW);
    await joinRoom(alice, roomA);
    // The JOIN goes first and takes a place: 99 messages with it.
    const wire = decoded(alice);
    assert.equal(wire.length, MAX_IN_FLIGHT);
    assert.deepEqual((await described(wire.slice(0, 2))), [`Publish ${Kind.JOIN}`, `Publish ${Kind.TEXT}`]);
    assert.equal(new Set(wire.map((f) => f.ref)).size, MAX_IN_FLIGHT);
    // Its ACK frees a place for the last message, and reports nothing.
    alice.events();
    await alice.receive(frame({ type: "Ack", ref: wire[0].ref }), NOW);
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.TEXT}`]);
    assert.deepEqual(alice.events(), []);
    // MAX_IN_FLIGHT on the wire: a HERE due now waits for the next tick with a place.
    const bob = makeSession(2);
    await joinRoom(bob, roomA, { members: 2 });
    await alice.receive(deliverFrom(decoded(bob)[0]), NOW);
    await alice.tick(AFTER_GAP);
    assert.deepEqual(decoded(alice), []);
    await alice.receive(frame({ type: "Ack", ref: wire[1].ref }), AFTER_GAP + 1);
    assert.deepEqual(decoded(alice), []);
    await alice.tick(AFTER_GAP + 2);
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.HERE}`]);
    await alice.tick(AFTER_GAP + 1000);
    assert.deepEqual(decoded(alice), []); // once
  });

  it("a refusal of one pauses publishing (RATE_LIMITED), but NOT_JOINED does not join again", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    const [join] = decoded(alice);
    await alice.receive(errorFrame(ErrorCode.RATE_LIMITED, roomA.roomId, join.ref), NOW);
    assert.equal(alice.waitingToResend, true);
    // Paused: a HERE due meanwhile waits for the next tick after the retry, and so does
    // the refused JOIN (no message of the outbox): others may wait for it (10.6).
    const carol = makeSession(3);
    await joinRoom(carol, roomA, { members: 2 });
    await alice.receive(deliverFrom(decoded(carol)[0]), NOW);
    await alice.tick(AFTER_GAP);
    await alice.tick(AFTER_GAP + 1000);
    assert.deepEqual(decoded(alice), []);
    alice.resendUnacknowledged();
    assert.deepEqual(decoded(alice), []);
    await alice.tick(AFTER_GAP + 2000);
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.JOIN}`, `Publish ${Kind.HERE}`]);
    await alice.tick(AFTER_GAP + 3000);
    assert.deepEqual(decoded(alice), []); // once
    // The session publishes announcements on its own, and each JOIN costs a proof (8.6):
    // a hostile relay refusing them as NOT_JOINED gets no JOIN (PROTOCOL.md 10.6)...
    const bob = makeSession(2);
    await joinRoom(bob, roomA);
    const [bobsJoin] = decoded(bob);
    await bob.receive(errorFrame(ErrorCode.NOT_JOINED, roomA.roomId, bobsJoin.ref), NOW);
    assert.deepEqual(decoded(bob), []);
    // ...as a message of the outbox refused so does.
    await bob.sendText(roomA.roomId, "hi", NOW + 1);
    const [text] = decoded(bob);
    await bob.receive(errorFrame(ErrorCode.NOT_JOINED, roomA.roomId, text.ref), NOW + 2);
    assert.deepEqual(decoded(bob).map((f) => f.type), ["Join"]);
  });

  it("sent long ago say nothing of who is here", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA, { members: 3 });
    decoded(alice);
    const bob = makeSession(2);
    await joinRoom(bob, roomA, { members: 3, name: "bob", at: NOW - MAX_HEARD_AGE_MS - 1 });
    const carol = makeSession(3);
    await joinRoom(carol, roomA, { members: 3, name: "carol", at: NOW - MAX_HEARD_AGE_MS });
    await alice.receive(deliverFrom(decoded(bob)[0]), NOW);
    await alice.receive(deliverFrom(decoded(carol)[0]), NOW);
    assert.deepEqual(namesIn(alice), ["carol"]);
  });
});

describe("leaving", () => {
  it("sends the LEAVE message before the LEAVE frame, and forgets the room at once", async () => {
    const { alice, bob } = await threeMembers();
    const leaving = bob.leave(roomA.roomId, NOW + 3000);
    assert.equal(bob.rooms.has(roomHex(roomA.roomId)), false);
    assert.deepEqual(bob.members(roomA.roomId), []);
    await leaving;
    const wire = decoded(bob);
    assert.deepEqual(await described(wire), [`Publish ${Kind.LEAVE}`, "Leave"]);
    assert.equal((await openEnvelope(roomA, wire[0].envelope)).timestampMs, NOW + 3000);
    await alice.receive(deliverFrom(wire[0]), NOW + 3000);
    assert.deepEqual(namesIn(alice), ["carol"]);
    // The count going down next is explained by that LEAVE: no roll call of alice's.
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 2 }), NOW + 3001);
    await alice.tick(NOW + 6000);
    assert.deepEqual(decoded(alice), []);
  });

  it("stamps the LEAVE message with the latest time the session was given", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    await alice.tick(NOW + 777);
    decoded(alice);
    await alice.leave(roomA.roomId);
    const [publish] = decoded(alice);
    assert.equal((await openEnvelope(roomA, publish.envelope)).timestampMs, NOW + 777);
  });

  it("joining again before the LEAVE went out sends the JOIN after it", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    decoded(alice);
    const leaving = alice.leave(roomA.roomId);
    alice.join(roomA);
    alice.retryJoin(roomA.roomId);
    assert.deepEqual(alice.framesToSend(), []);
    await leaving;
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.LEAVE}`, "Leave", "Join"]);
  });

  it("left, joined and left again before the first LEAVE went out: one LEAVE frame, no JOIN", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    decoded(alice);
    const leaving = alice.leave(roomA.roomId);
    alice.join(roomA);
    await alice.leave(roomA.roomId);
    await leaving;
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.LEAVE}`, "Leave"]);
  });

  it("a connection lost while the LEAVE is sealed sends nothing of it", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    decoded(alice);
    const leaving = alice.leave(roomA.roomId);
    alice.join(roomA); // joined again: the next connection's JOIN
    alice.connectionLost();
    alice.connectionMade();
    await leaving;
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Join"]);
  });

  it("announceLeaving says LEAVE in every joined room, keeps them, and answers nothing after", async () => {
    const alice = makeSession(1);
    await joinRoom(alice, roomA);
    await joinRoom(alice, roomB);
    const bob = makeSession(2);
    await joinRoom(bob, roomA, { members: 2 });
    await alice.receive(deliverFrom(decoded(bob)[0]), NOW); // a HERE of alice's waits
    decoded(alice);
    await alice.announceLeaving(NOW + 10);
    const wire = decoded(alice);
    assert.deepEqual(wire.map((f) => [f.type, hex(f.roomId)]), [["Publish", hex(roomA.roomId)], ["Publish", hex(roomB.roomId)]]);
    assert.equal((await openEnvelope(roomB, wire[1].envelope)).kind, Kind.LEAVE);
    assert.equal(alice.rooms.size, 2);
    await alice.tick(NOW + 5000);
    assert.deepEqual(decoded(alice), []);
  });
});

describe("a session that does not announce", () => {
  it("sends no announcement, leaves at once as before, and tells no members event", async () => {
    const alice = makeSession(1, false);
    const bob = makeSession(2);
    await joinRoom(alice, roomA, { members: 1 });
    assert.deepEqual(decoded(alice), []); // no JOIN message
    await joinRoom(bob, roomA, { members: 2, name: "bob" });
    await alice.receive(deliverFrom(decoded(bob)[0]), NOW);
    assert.deepEqual(alice.events().map((e) => e.type), ["joined", "message"]);
    // It still knows who said so.
    assert.deepEqual(namesIn(alice), ["bob"]);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 1 }), NOW + 1);
    await alice.tick(NOW + 10_000);
    assert.deepEqual(decoded(alice), []);
    alice.leave(roomA.roomId); // not awaited: the LEAVE frame is there at once
    assert.deepEqual(decoded(alice).map((f) => f.type), ["Leave"]);
    assert.deepEqual(ofType(alice.events(), "members"), []);
  });
});

/** `member` drops and is let back in with `members` there; `listener` hears the JOIN
 * message it announces itself with, at `at`. */
async function backAndHeard(member, listener, { members, at }) {
  member.connectionLost();
  await joinRoom(member, roomA, { members, at });
  const [join] = decoded(member);
  assert.equal((await openEnvelope(roomA, join.envelope)).kind, Kind.JOIN);
  await listener.receive(deliverFrom(join), at);
}

describe("the outbox after a reconnect (PROTOCOL.md 10.6)", () => {
  it("waits for each member of the roster to be heard again, not only for the count", async () => {
    const { alice, bob, carol } = await threeMembers();
    const at = NOW + 3000;
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "said while away", at);
    await joinRoom(alice, roomA, { members: 1, at });
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.JOIN}`]); // her text waits
    // One-shot senders bring the count back to 3: bob and carol are not back yet.
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 3 }), at + 1);
    assert.equal(alice.holding(roomA.roomId), true);
    assert.deepEqual(alice.framesToSend(), []);
    for (const [i, member] of [bob, carol].entries()) {
      await backAndHeard(member, alice, { members: 3, at: at + 2 + i });
      assert.equal(alice.holding(roomA.roomId), i === 0); // carol is still awaited after bob
    }
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.TEXT}`]);
  });

  it("release ends the wait for the roster too", async () => {
    const { alice } = await threeMembers();
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "anyone?", NOW + 3000);
    await joinRoom(alice, roomA, { members: 1, at: NOW + 3000 });
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.JOIN}`]);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 3 }), NOW + 3001);
    assert.equal(alice.holding(roomA.roomId), true);
    assert.equal(alice.heldSince(roomA.roomId), NOW + 3000);
    alice.release(roomA.roomId);
    assert.equal(alice.heldSince(roomA.roomId), null);
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.TEXT}`]);
  });

  it("a room that never emptied waits for nobody: only our connection dropped", async () => {
    const { alice } = await threeMembers();
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "back", NOW + 3000);
    await joinRoom(alice, roomA, { members: 3, at: NOW + 3000 });
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.JOIN}`, `Publish ${Kind.TEXT}`]);
  });

  it("after failed tries, a full count still waits for the roster: a newcomer may fill a place", async () => {
    const { alice, bob, carol } = await threeMembers();
    const at = NOW + 3000;
    alice.connectionLost();
    alice.connectFailed(); // the relay was out of reach: restarting, maybe
    await alice.sendText(roomA.roomId, "said while away", at);
    await joinRoom(alice, roomA, { members: 3, at }); // newcomers, not bob and carol
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.JOIN}`]);
    assert.equal(alice.holding(roomA.roomId), true);
    for (const [i, member] of [bob, carol].entries()) {
      await backAndHeard(member, alice, { members: 5, at: at + 2 + i });
      assert.equal(alice.holding(roomA.roomId), i === 0);
    }
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.TEXT}`]);
    // Reached at the first try this time: a full count waits for nobody.
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "again", at + 10);
    await joinRoom(alice, roomA, { members: 5, at: at + 10 });
    assert.equal(alice.holding(roomA.roomId), false);
  });

  it("a member awaited stays awaited across a second drop, though a roll call took it off the roster", async () => {
    const { alice, bob, carol } = await threeMembers();
    const at = NOW + 3000;
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "said while away", at);
    await joinRoom(alice, roomA, { members: 1, at });
    decoded(alice);
    await alice.tick(at + ROLL_CALL_WINDOW_MS); // bob and carol, not back, leave her roster
    assert.deepEqual(alice.members(roomA.roomId), []);
    alice.connectionLost();
    await joinRoom(alice, roomA, { members: 1, at: at + ROLL_CALL_WINDOW_MS + 1 });
    decoded(alice);
    // Newcomers bring the count back to 3: bob and carol are still awaited.
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 3 }), at + ROLL_CALL_WINDOW_MS + 2);
    assert.equal(alice.holding(roomA.roomId), true);
    for (const [i, member] of [bob, carol].entries()) {
      await backAndHeard(member, alice, { members: 5, at: at + ROLL_CALL_WINDOW_MS + 3 + i });
    }
    assert.equal(alice.holding(roomA.roomId), false);
  });

  it("a member that never announced (a script) is only counted", async () => {
    const { alice, bob, carol } = await threeMembers();
    const bot = makeSession(9, false);
    await joinRoom(bot, roomA, { members: 4, name: "bot", at: NOW + 2500 });
    await bot.sendText(roomA.roomId, "build ok", NOW + 2500);
    const [post] = decoded(bot);
    await alice.receive(deliverFrom(post), NOW + 2500);
    assert.equal(namesIn(alice).includes("bot"), true);
    alice.connectionLost();
    await alice.sendText(roomA.roomId, "after the restart", NOW + 3000);
    await joinRoom(alice, roomA, { members: 1, at: NOW + 3000 });
    decoded(alice);
    // bob and carol come back and announce themselves; the bot is back too, silent.
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 4 }), NOW + 3001);
    assert.equal(alice.holding(roomA.roomId), true);
    for (const [n, member] of [bob, carol].entries()) {
      await backAndHeard(member, alice, { members: 4, at: NOW + 3002 + n });
    }
    assert.equal(alice.holding(roomA.roomId), false);
    assert.deepEqual(await described(decoded(alice)), [`Publish ${Kind.TEXT}`]);
  });

  it("counts the time joined during the wait: a relay down again does not use up the grace", async () => {
    const { alice } = await threeMembers();
    alice.connectionLost(NOW + 2900);
    await alice.sendText(roomA.roomId, "patience", NOW + 3000);
    await joinRoom(alice, roomA, { members: 1, at: NOW + 3000 });
    assert.equal(alice.heldSince(roomA.roomId), NOW + 3000);
    alice.connectionLost(NOW + 6000); // 3 s joined, then down for 14 s
    assert.equal(alice.heldSince(roomA.roomId), null);
    await joinRoom(alice, roomA, { members: 1, at: NOW + 20_000 });
    assert.equal(alice.holding(roomA.roomId), true);
    assert.equal(alice.heldSince(roomA.roomId), NOW + 17_000); // 3 s of the grace spent
  });

  it("a message opened across a drop does not end the wait for its sender", async () => {
    const { alice, bob, carol } = await threeMembers();
    await bob.sendText(roomA.roomId, "sent before the drop", NOW + 2500);
    const [before] = decoded(bob);
    const opening = alice.receive(deliverFrom(before), NOW + 2500);
    await new Promise((resolve) => setImmediate(resolve)); // WebCrypto opens it...
    alice.connectionLost(); // ...while the connection drops
    await opening;
    await alice.sendText(roomA.roomId, "for bob", NOW + 3000);
    await joinRoom(alice, roomA, { members: 1, at: NOW + 3000 });
    decoded(alice);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 3 }), NOW + 3001);
    await backAndHeard(carol, alice, { members: 3, at: NOW + 3002 });
    assert.equal(alice.holding(roomA.roomId), true); // bob is still awaited
  });

  it("a message whose turn comes after a drop is read, and does not end the wait for its sender", async () => {
    const { alice, bob, carol } = await threeMembers();
    await bob.sendText(roomA.roomId, "sent before the drop", NOW + 2500);
    const [before] = decoded(bob);
    // Fed while connected, as frames come; its turn comes once the relay restarted.
    const opening = alice.receive(deliverFrom(before), NOW + 2500);
    alice.connectionLost();
    alice.connectFailed();
    await opening;
    // Read: the relay keeps none, so it would be lost for good.
    assert.deepEqual(
      alice.events().filter((e) => e.type === "message").map((e) => e.text),
      ["sent before the drop"],
    );
    await alice.sendText(roomA.roomId, "for bob", NOW + 3000);
    await joinRoom(alice, roomA, { members: 1, at: NOW + 3000 });
    decoded(alice);
    await alice.receive(frame({ type: "Presence", roomId: roomA.roomId, members: 3 }), NOW + 3001);
    await backAndHeard(carol, alice, { members: 3, at: NOW + 3002 });
    assert.equal(alice.holding(roomA.roomId), true); // bob, who sent it before, is still awaited
  });
});

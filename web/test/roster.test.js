// The roster of PROTOCOL.md 5.7 on its own: who is in a room, and the JOIN, HERE and LEAVE
// a member sends. Pure, so each test is a list of steps with this device's times.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { hex } from "../src/protocol/bytes.js";
import { Kind } from "../src/protocol/envelope.js";
import { UsageError } from "../src/protocol/errors.js";
import { fingerprint } from "../src/protocol/kdf.js";
import {
  ANSWER_GAP_MS,
  ANSWER_SPREAD_MS,
  MAX_ROSTER,
  ROLL_CALL_WINDOW_MS,
  Roster,
  answerDelay,
} from "../src/protocol/roster.js";

const T = 1_790_000_000_000;
/** A device key starting with the bytes `first` and `second`, then `fill`. */
const key = (first, second = 0, fill = 7) => Uint8Array.of(first, second, ...new Array(30).fill(fill));
const OWN = key(0x12, 0x34);
const BOB = key(0x56, 0x78, 1);
const CAROL = key(0x12, 0x35, 2);
const DAVE = key(0x99, 0x00, 3);
// d for each, from OWN's first two bytes (PROTOCOL.md 5.7)
const D_BOB = (0x44 * 256 + 0x4c) % 2000; // 1484
const D_CAROL = 1;
const D_ROLL_CALL = (0x12 * 256 + 0x34) % 2000; // their = 32 zero bytes: 660

const names = (roster) => roster.members.map((member) => member.name);
const announcing = () => new Roster(OWN, { announce: true });
/** ANSWER_GAP_MS after T: a roster joined at T answers JOINs with no wait but d's. */
const U = T + ANSWER_GAP_MS;
/** An announcing roster let in, with `others` heard (TEXT) at T + 1, and its JOIN taken. */
function joinedWith(others, count = others.length + 1) {
  const roster = announcing();
  roster.joined(count, T);
  for (const [other, name] of others) roster.heard(Kind.TEXT, other, name, false, T + 1);
  roster.takeSends();
  return roster;
}

describe("the answer's delay", () => {
  it("is the XOR of the two keys' first two bytes, mod ANSWER_SPREAD_MS", () => {
    assert.equal(answerDelay(OWN, BOB), D_BOB);
    assert.equal(answerDelay(OWN, CAROL), D_CAROL);
    assert.equal(answerDelay(OWN, new Uint8Array(32)), D_ROLL_CALL);
    assert.equal(answerDelay(key(0xff, 0xff), key(0, 0)), 65535 % ANSWER_SPREAD_MS);
    assert.equal(answerDelay(BOB, BOB), 0);
  });
});

describe("hearing members", () => {
  it("adds a key heard with any kind but LEAVE, at the end, and refreshes it in place", () => {
    const roster = new Roster(OWN, { announce: false });
    roster.heard(Kind.TEXT, BOB, "bob", false, T);
    roster.heard(Kind.TYPING, CAROL, "carol", false, T + 1);
    roster.heard(77, DAVE, "dave", false, T + 2); // a kind v1 does not name
    roster.heard(Kind.HERE, BOB, "bob", false, T + 3);
    assert.deepEqual(names(roster), ["bob", "carol", "dave"]);
    const [bob] = roster.members;
    assert.equal(hex(bob.deviceKey), hex(BOB));
    assert.equal(bob.fingerprint, fingerprint(BOB));
    assert.equal(bob.keyChanged, false);
  });

  it("takes a LEAVE's sender out", () => {
    const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"]]);
    roster.heard(Kind.LEAVE, BOB, "bob", false, T + 2);
    assert.deepEqual(names(roster), ["carol"]);
    roster.heard(Kind.LEAVE, DAVE, "dave", false, T + 3); // never heard: nothing to take out
    assert.deepEqual(names(roster), ["carol"]);
  });

  it("keeps the name and flag last heard with a key", () => {
    const roster = joinedWith([[BOB, "bob"]]);
    roster.heard(Kind.TEXT, BOB, "Robert", true, T + 2);
    assert.deepEqual(roster.members.map((m) => [m.name, m.keyChanged]), [["Robert", true]]);
  });

  it("never holds its own key, and takes nothing from it: its own JOIN is no roll call", () => {
    const roster = announcing();
    roster.heard(Kind.JOIN, OWN, "me", false, T);
    roster.heard(Kind.TEXT, BOB, "bob", false, T + 1);
    roster.heard(Kind.JOIN, OWN, "me", false, T + 3);
    roster.tick(T + 10 * ROLL_CALL_WINDOW_MS);
    assert.deepEqual(roster.takeSends(), []); // no HERE for it, and no removal of bob
    assert.deepEqual(names(roster), ["bob"]);
  });

  it("takes a LEAVE under its own key for another window of ours leaving, and says it is here", () => {
    const roster = announcing();
    roster.heard(Kind.TEXT, BOB, "bob", false, T + 1);
    roster.heard(Kind.LEAVE, OWN, "me", false, T + 2);
    assert.deepEqual([roster.takeSends(), names(roster)], [[], ["bob"]]);
    roster.tick(T + 2);
    assert.deepEqual(roster.takeSends(), [Kind.HERE]);
    roster.leaving(); // left ourselves: nothing more
    roster.takeSends();
    roster.heard(Kind.LEAVE, OWN, "me", false, T + 3);
    roster.tick(T + 3);
    assert.deepEqual(roster.takeSends(), []);
  });

  it("goes up in version when the members would differ, not when one is heard again", () => {
    const roster = announcing();
    const versions = [roster.version];
    const step = (action) => {
      action();
      versions.push(roster.version);
    };
    step(() => roster.heard(Kind.TEXT, BOB, "bob", false, T)); // added
    step(() => roster.heard(Kind.HERE, BOB, "bob", false, T + 1)); // heard again
    step(() => roster.heard(Kind.TEXT, BOB, "bob", true, T + 2)); // flagged
    step(() => roster.heard(Kind.TEXT, BOB, "Bob", true, T + 3)); // renamed
    step(() => roster.countChanged(5, T + 4));
    step(() => roster.heard(Kind.LEAVE, CAROL, "carol", false, T + 5)); // not there
    step(() => roster.heard(Kind.LEAVE, BOB, "Bob", true, T + 6)); // out
    const rises = versions.slice(1).map((v, i) => v > versions[i]);
    assert.deepEqual(rises, [true, false, true, true, false, false, true]);
  });

  it(`keeps at most MAX_ROSTER (${MAX_ROSTER}), the least recently heard going first`, () => {
    const roster = new Roster(OWN, { announce: false });
    const many = Array.from({ length: MAX_ROSTER }, (_, n) => key(n >> 8, n & 0xff, 9));
    many.forEach((other, n) => roster.heard(Kind.TEXT, other, `m${n}`, false, T + n));
    // The first is heard again (with a clock set back: the order of hearing decides).
    roster.heard(Kind.TYPING, many[0], "m0", false, T - 1);
    roster.heard(Kind.TEXT, BOB, "bob", false, T + MAX_ROSTER);
    assert.equal(roster.members.length, MAX_ROSTER);
    const kept = names(roster);
    assert.equal(kept[0], "m0");
    assert.ok(!kept.includes("m1"));
    assert.equal(kept.at(-1), "bob");
  });

  it("refuses a key that is not 32 bytes", () => {
    assert.throws(() => new Roster(OWN.subarray(1), { announce: true }), UsageError);
    assert.throws(() => announcing().heard(Kind.TEXT, BOB.subarray(1), "bob", false, T), UsageError);
  });
});

describe("announcing", () => {
  it("sends a JOIN on each JOINED, and nothing more without reason", () => {
    const roster = announcing();
    roster.joined(1, T);
    assert.deepEqual(roster.takeSends(), [Kind.JOIN]);
    assert.deepEqual(roster.takeSends(), []);
    roster.tick(T + 60_000);
    assert.deepEqual(roster.takeSends(), []);
    roster.joined(1, T + 70_000); // a reconnect
    assert.deepEqual(roster.takeSends(), [Kind.JOIN]);
  });

  it("answers another's JOIN with a HERE d ms later, at a tick", () => {
    const roster = joinedWith([]);
    roster.heard(Kind.JOIN, BOB, "bob", false, U + 10);
    assert.deepEqual(roster.takeSends(), []); // due later, and only at a tick
    roster.tick(U + 10 + D_BOB - 1);
    assert.deepEqual(roster.takeSends(), []);
    roster.tick(U + 10 + D_BOB);
    assert.deepEqual(roster.takeSends(), [Kind.HERE]);
    roster.tick(U + 10 + D_BOB + 1000);
    assert.deepEqual(roster.takeSends(), []);
  });

  it("says when its next HERE or JOIN is due, by the caller's clock even after it stepped back", () => {
    const roster = joinedWith([]);
    assert.equal(roster.nextSendMs(), null);
    roster.heard(Kind.JOIN, BOB, "bob", false, U + 10);
    assert.equal(roster.nextSendMs(), U + 10 + D_BOB);
    roster.tick(U + 10 + D_BOB);
    assert.deepEqual(roster.takeSends(), [Kind.HERE]);
    assert.equal(roster.nextSendMs(), null);
    // The clock set back 60 s: what is due comes as many ms after the heard JOIN by it.
    roster.heard(Kind.JOIN, CAROL, "carol", false, U - 60_000 + 20);
    roster.tick(U - 60_000 + 20);
    const due = roster.nextSendMs();
    assert.ok(due !== null && due > U - 60_000 + 20 && due <= U - 60_000 + 20 + ANSWER_GAP_MS, String(due));
    roster.tick(due - 1);
    assert.deepEqual(roster.takeSends(), []);
    roster.tick(due);
    assert.deepEqual(roster.takeSends(), [Kind.HERE]);
    assert.equal(roster.nextSendMs(), null);
  });

  it("answers no sooner than ANSWER_GAP_MS after its last JOIN or HERE", () => {
    const roster = joinedWith([]); // its JOIN at T
    roster.heard(Kind.JOIN, BOB, "bob", false, T + 10);
    roster.tick(T + 10 + D_BOB);
    assert.deepEqual(roster.takeSends(), []);
    roster.tick(U - 1);
    assert.deepEqual(roster.takeSends(), []);
    roster.tick(U);
    assert.deepEqual(roster.takeSends(), [Kind.HERE]);
  });

  it("answers all the JOINs heard before its HERE goes with that one HERE", () => {
    const roster = joinedWith([]);
    roster.heard(Kind.JOIN, BOB, "bob", false, U + 10);
    // carol's would be due sooner, but a HERE waits already: bob's delay holds.
    roster.heard(Kind.JOIN, CAROL, "carol", false, U + 20);
    roster.tick(U + 20 + D_CAROL);
    assert.deepEqual(roster.takeSends(), []);
    roster.tick(U + 10 + D_BOB);
    assert.deepEqual(roster.takeSends(), [Kind.HERE]);
    // A JOIN after the HERE went gets a HERE of its own, ANSWER_GAP_MS after the first.
    roster.heard(Kind.JOIN, CAROL, "carol", false, U + 3000);
    roster.tick(U + 3000 + D_CAROL);
    assert.deepEqual(roster.takeSends(), []);
    roster.tick(U + 10 + D_BOB + ANSWER_GAP_MS);
    assert.deepEqual(roster.takeSends(), [Kind.HERE]);
  });

  it("its own JOIN says it is here: a HERE waiting is not sent", () => {
    const roster = joinedWith([]);
    roster.heard(Kind.JOIN, BOB, "bob", false, T + 10);
    roster.joined(2, T + 20); // reconnected before the HERE was due
    assert.deepEqual(roster.takeSends(), [Kind.JOIN]);
    roster.tick(T + 10 + D_BOB);
    assert.deepEqual(roster.takeSends(), []);
  });

  it("says LEAVE when leaving, and then nothing until the next JOINED", () => {
    const roster = joinedWith([[BOB, "bob"]]);
    roster.heard(Kind.JOIN, CAROL, "carol", false, T + 10); // a HERE waits
    roster.leaving();
    assert.deepEqual(roster.takeSends(), [Kind.LEAVE]);
    roster.countChanged(1, T + 20);
    roster.heard(Kind.JOIN, DAVE, "dave", false, T + 30);
    roster.leaving(); // once is enough
    roster.tick(T + 10_000);
    assert.deepEqual(roster.takeSends(), []);
    roster.joined(3, T + 20_000);
    roster.heard(Kind.JOIN, BOB, "bob", false, T + 20_001);
    roster.tick(T + 20_000 + ANSWER_GAP_MS);
    assert.deepEqual(roster.takeSends(), [Kind.JOIN, Kind.HERE]);
  });

  it("a member that does not announce sends nothing, and still keeps who it hears", () => {
    const roster = new Roster(OWN, { announce: false });
    roster.joined(3, T);
    roster.heard(Kind.TEXT, CAROL, "carol", false, T + 5);
    roster.heard(Kind.JOIN, BOB, "bob", false, T + 10);
    roster.countChanged(2, T + 30);
    roster.tick(T + 3000);
    roster.leaving();
    assert.deepEqual(roster.takeSends(), []);
    assert.deepEqual(names(roster), ["carol", "bob"]);
    // Bob's JOIN called a roll call that carol (silent since before it) did not answer.
    roster.tick(T + 10 + ROLL_CALL_WINDOW_MS);
    assert.deepEqual(names(roster), ["bob"]);
  });

  it("a member that does not announce calls no roll call of its own on JOINED", () => {
    const roster = new Roster(OWN, { announce: false });
    roster.heard(Kind.TEXT, BOB, "bob", false, T);
    roster.joined(2, T + 10); // nobody was asked to answer: bob stays
    roster.tick(T + 10 * ROLL_CALL_WINDOW_MS);
    assert.deepEqual(names(roster), ["bob"]);
  });
});

describe("roll calls", () => {
  it("remove at t + ROLL_CALL_WINDOW_MS every entry last heard before t", () => {
    const roster = announcing();
    roster.heard(Kind.TEXT, BOB, "bob", false, T - 1);
    roster.heard(Kind.TEXT, CAROL, "carol", false, T - 1);
    roster.joined(3, T); // our JOIN at T is a roll call
    roster.heard(Kind.HERE, CAROL, "carol", false, T); // at T: not before it
    roster.tick(T + ROLL_CALL_WINDOW_MS - 1);
    assert.deepEqual(names(roster), ["bob", "carol"]);
    roster.tick(T + ROLL_CALL_WINDOW_MS);
    assert.deepEqual(names(roster), ["carol"]);
  });

  it("another's JOIN is a roll call too", () => {
    const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"]]);
    roster.tick(T + ROLL_CALL_WINDOW_MS); // our own, judged: both spoke after it
    roster.heard(Kind.JOIN, DAVE, "dave", false, T + 10_000);
    roster.heard(Kind.HERE, CAROL, "carol", false, T + 11_000);
    roster.tick(T + 10_000 + ROLL_CALL_WINDOW_MS);
    assert.deepEqual(names(roster), ["carol", "dave"]);
  });

  it("are judged one at a time: the latest JOIN during one is judged after it, in turn", () => {
    const roster = announcing();
    const EVE = key(0x44, 0x44, 4);
    roster.heard(Kind.TEXT, EVE, "eve", false, T - 1);
    roster.joined(4, T); // a roll call at T, which eve will not answer
    for (const [other, name] of [[BOB, "bob"], [CAROL, "carol"], [DAVE, "dave"]]) {
      roster.heard(Kind.TEXT, other, name, false, T + 1);
    }
    roster.heard(Kind.JOIN, BOB, "bob", false, T + 1000); // remembered...
    roster.heard(Kind.HERE, DAVE, "dave", false, T + 1500);
    roster.heard(Kind.JOIN, CAROL, "carol", false, T + 2000); // ...replaced by the latest
    roster.tick(T + ROLL_CALL_WINDOW_MS); // T's, not put off by the JOINs since
    assert.deepEqual(names(roster), ["bob", "carol", "dave"]);
    // Bob's (T + 1000) is forgotten: dave, heard at T + 1500, would pass it and stays...
    roster.tick(T + 1000 + ROLL_CALL_WINDOW_MS);
    assert.deepEqual(names(roster), ["bob", "carol", "dave"]);
    // ...until carol's (T + 2000), which bob and dave did not answer.
    roster.tick(T + 2000 + ROLL_CALL_WINDOW_MS);
    assert.deepEqual(names(roster), ["carol"]);
  });

  it("several due at one late tick are all judged", () => {
    const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"]]);
    roster.heard(Kind.JOIN, CAROL, "carol", false, T + 1000);
    roster.tick(T + 60_000);
    assert.deepEqual(names(roster), ["carol"]);
  });
});

describe("the count going down", () => {
  it("has an announcing member call a roll call: its JOIN d ms later (their = zero bytes)", () => {
    const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"]]);
    roster.tick(T + ROLL_CALL_WINDOW_MS);
    roster.countChanged(2, T + 10_000);
    roster.tick(T + 10_000 + D_ROLL_CALL - 1);
    assert.deepEqual(roster.takeSends(), []);
    roster.heard(Kind.HERE, CAROL, "carol", false, T + 10_000 + D_ROLL_CALL + 100);
    roster.tick(T + 10_000 + D_ROLL_CALL);
    assert.deepEqual(roster.takeSends(), [Kind.JOIN]);
    // That JOIN's roll call: bob did not answer, carol did.
    roster.tick(T + 10_000 + D_ROLL_CALL + ROLL_CALL_WINDOW_MS);
    assert.deepEqual(names(roster), ["carol"]);
  });

  it("a JOIN sent (joined) or heard first drops the plan: that one is the roll call", () => {
    for (const first of ["joined", "heard"]) {
      const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"]]);
      roster.countChanged(2, T + 10_000);
      if (first === "joined") roster.joined(3, T + 10_001);
      else roster.heard(Kind.JOIN, DAVE, "dave", false, T + 10_001);
      roster.takeSends();
      roster.tick(T + 10_000 + D_ROLL_CALL);
      assert.deepEqual(roster.takeSends(), [], first);
    }
  });

  it("is explained by a LEAVE within ROLL_CALL_WINDOW_MS when the count still covers the roster", () => {
    const planned = (roster, at) => {
      roster.tick(at + D_ROLL_CALL);
      return roster.takeSends().includes(Kind.JOIN);
    };
    const afterLeave = (count, leaveAgo) => {
      const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"], [DAVE, "dave"]], 4);
      roster.heard(Kind.LEAVE, DAVE, "dave", false, T + 10_000 - leaveAgo);
      roster.countChanged(count, T + 10_000);
      return planned(roster, T + 10_000);
    };
    assert.equal(afterLeave(3, 0), false); // 3 - 1 >= 2 left in the roster
    assert.equal(afterLeave(3, ROLL_CALL_WINDOW_MS), false);
    assert.equal(afterLeave(3, ROLL_CALL_WINDOW_MS + 1), true); // too long ago
    assert.equal(afterLeave(2, 0), true); // 2 - 1 < 2: someone else went too
  });

  it("calls nothing when the count goes up or stays, the roster is empty, or it does not announce", () => {
    const cases = [
      [joinedWith([[BOB, "bob"]], 2), 2],
      [joinedWith([[BOB, "bob"]], 2), 3],
      [joinedWith([], 3), 1],
    ];
    const silent = new Roster(OWN, { announce: false });
    silent.joined(3, T);
    silent.heard(Kind.TEXT, BOB, "bob", false, T);
    cases.push([silent, 1]);
    for (const [roster, count] of cases) {
      roster.countChanged(count, T + 10_000);
      roster.tick(T + 10_000 + ANSWER_SPREAD_MS);
      assert.deepEqual(roster.takeSends(), []);
    }
  });

  it("a second fall does not put the planned JOIN off", () => {
    const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"]], 4);
    roster.countChanged(3, T + 10_000);
    roster.countChanged(2, T + 10_500);
    roster.tick(T + 10_000 + D_ROLL_CALL);
    assert.deepEqual(roster.takeSends(), [Kind.JOIN]);
  });

  it("a planned JOIN due with a HERE goes alone: it says we are here too", () => {
    const roster = joinedWith([[BOB, "bob"], [CAROL, "carol"]], 4);
    roster.heard(Kind.JOIN, DAVE, "dave", false, T + 10_000); // a HERE due in d(dave)
    roster.countChanged(3, T + 10_001); // planned after that JOIN: kept
    roster.tick(T + 20_000);
    assert.deepEqual(roster.takeSends(), [Kind.JOIN]);
    roster.tick(T + 30_000);
    assert.deepEqual(roster.takeSends(), []);
  });
});

// What the web client says of a device clock far from the relay's, in words a person can
// read whatever the distance (a phone whose clock went back to 1970 after a flat battery).

import assert from "node:assert/strict";
import { describe, it } from "node:test";

// A page with no invite in its address: capture.js reads it when imported.
globalThis.window = { location: { origin: "https://a.relay.test", pathname: "/", search: "", hash: "" }, history: { replaceState() {} } };
globalThis.document = { title: "InstantRoom", visibilityState: "visible" };
const { App, howFar } = await import("../src/app/controller.js");

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

describe("howFar: how far off a clock is", () => {
  it("says minutes, then hours, then days", () => {
    assert.equal(howFar(12 * MINUTE), "12 minutes");
    assert.equal(howFar(3 * HOUR), "about 3 hours");
    assert.equal(howFar(30 * HOUR), "about 30 hours");
    assert.equal(howFar(3 * DAY), "about 3 days");
  });

  it("never counts a clock years off in hours", () => {
    const since1970 = Date.UTC(2026, 10, 26) - 0;
    const said = howFar(since1970);
    assert.doesNotMatch(said, /hours/);
    assert.match(said, /^about \d+ days$/);
    assert.ok(Number(said.match(/\d+/)[0]) > 20_000, said);
  });
});

describe("App.clockWarning for a clock days off", () => {
  it("is said in days, fast or slow", () => {
    const app = new App({ pageRelay: async () => ({ timeMs: null, uptimeS: null }) });
    app.clockOffsetMs = -56 * 365 * DAY;
    assert.match(app.clockWarning ?? "", /^This device's clock is about \d+ days slow\./);
    app.clockOffsetMs = 2 * DAY;
    assert.match(app.clockWarning ?? "", /^This device's clock is about 2 days fast\./);
  });
});

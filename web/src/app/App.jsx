// The screens. Each one is a function of the App's state; actions go to the App.
// Every input has a label, errors are role="alert", notices are read from one live region
// that outlasts the screens (Announcer), the conversation is role="log", and each screen
// moves focus to its heading so that a screen reader announces it.

import { Component, Fragment } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { formatMinikey, spellMinikey } from "../protocol/minikey.js";
import { canonicalName, mixedScripts } from "../protocol/names.js";
import { qrDataUrl } from "../qr/draw.js";
import { customLifetime, formatRemaining, formatTime, LIFETIME_UNITS, LIFETIMES } from "./controller.js";
import { parseInvite } from "./invite.js";
import { shown } from "./text.js";

const STATE_LABELS = {
  online: "online",
  connecting: "connecting…",
  reconnecting: "reconnecting…",
  closed: "offline",
  offline: "offline",
  refused: "refused by the relay",
};

function Heading({ children }) {
  const ref = useRef(null);
  useEffect(() => ref.current?.focus(), []);
  return (
    <h1 ref={ref} tabIndex={-1}>
      {children}
    </h1>
  );
}

/** A labelled text input; its data-testid is its id unless given. `invalid`: the screen's
 * error (Alert) is about this field, which then says so and is described by it. */
function Field({ id, label, value, onValue, testid = id, inputRef, invalid = false, ...input }) {
  return (
    <>
      <label for={id}>{label}</label>
      <input
        id={id}
        data-testid={testid}
        ref={inputRef}
        value={value}
        aria-invalid={invalid ? "true" : undefined}
        aria-describedby={invalid ? ERROR_ID : undefined}
        onInput={(e) => onValue(e.currentTarget.value)}
        {...input}
      />
    </>
  );
}

/**
 * A button whose action is asked for first, in the page. Not with the browser's confirm():
 * that stops the page's scripts while it is open, the idle lock's with them, and what is
 * on screen would stay there, unlocked, for as long as nobody answers. A lock takes this
 * dialog away with its screen. `yes` names the action; Escape or Cancel does nothing.
 */
function AskFirst({ question, yes, testid, danger = false, onYes, children }) {
  const [open, setOpen] = useState(false);
  const dialog = useRef(null);
  useEffect(() => {
    if (open && !dialog.current.open) dialog.current.showModal();
  }, [open]);
  const questionId = `${testid}-question`;
  return (
    <>
      <button type="button" class={danger ? "danger" : undefined} data-testid={testid} onClick={() => setOpen(true)}>
        {children}
      </button>
      {open && (
        <dialog ref={dialog} class="ask" data-testid="ask" aria-labelledby={questionId} onClose={() => setOpen(false)}>
          <p id={questionId}>{question}</p>
          <div class="actions">
            {/* The safe answer has the focus: Enter pressed out of habit loses nothing. */}
            <button type="button" data-testid="ask-no" autofocus onClick={() => dialog.current.close()}>
              Cancel
            </button>
            <button
              type="button"
              class={danger ? "danger" : "primary"}
              data-testid="ask-yes"
              onClick={() => {
                dialog.current.close();
                onYes();
              }}
            >
              {yes}
            </button>
          </div>
        </dialog>
      )}
    </>
  );
}

/** The nickname a room's members see beside this device's messages. */
function NicknameField({ value, onValue, inputRef }) {
  return (
    <Field
      id="nickname"
      label="Your nickname in this room"
      value={value}
      onValue={onValue}
      inputRef={inputRef}
      maxLength={40}
      autocomplete="nickname"
      spellcheck={false}
      required
    />
  );
}

const ERROR_ID = "screen-error";

/** The screen's error and notice, where they show. The notice is no live region of its own:
 * one drawn with its text (as a new screen's is, or a notice that comes) is read by no
 * screen reader; the Announcer reads it. */
function Alert({ app }) {
  const { error, notice } = app.state;
  return (
    <>
      {/* On every screen while it holds; no live region, or each screen would say it again. */}
      {app.clockWarning && (
        <p class="warning" data-testid="clock-warning">
          ⚠ {app.clockWarning}
        </p>
      )}
      {error && (
        <p class="alert" role="alert" data-testid="error" id={ERROR_ID}>
          {error}
        </p>
      )}
      {notice && !error && (
        <p class="notice" data-testid="notice">
          {notice}
        </p>
      )}
    </>
  );
}

/** The live region that reads each notice as it comes: drawn once, beside the screens, so
 * that it is there before its text (a notice that comes with a new screen too: "Locked after
 * a while without use."). */
function Announcer({ app }) {
  const { error, notice } = app.state;
  return (
    <div class="visually-hidden" role="status" data-testid="announcer">
      {notice && !error ? notice : ""}
    </div>
  );
}

function Nav({ app, back = true }) {
  return (
    <nav class="topbar" aria-label="Main">
      {back ? (
        <button type="button" class="link" data-testid="nav-rooms" onClick={() => app.go("rooms", null)}>
          {/* The arrow is drawn, not read: "Rooms", not "single left-pointing angle quotation mark Rooms". */}
          <span aria-hidden="true">‹ </span>Rooms
          {/* On a phone the tab's title, which counts them too, is out of sight. */}
          {app.unread > 0 && (
            <strong class="unread" data-testid="nav-unread">
              {" · "}
              {app.unread} new
            </strong>
          )}
        </button>
      ) : (
        <span class="brand">InstantRoom</span>
      )}
      <span class="spacer" />
      <button type="button" class="link" data-testid="nav-settings" onClick={() => app.go("settings")}>
        Settings
      </button>
    </nav>
  );
}

// Unlock, or set the password on a first visit.

function Unlock({ app }) {
  const [password, setPassword] = useState("");
  const [confirmation, setConfirmation] = useState("");
  const passwordRef = useRef(null);
  const first = app.state.firstVisit;
  const submit = (event) => {
    event.preventDefault();
    // Not kept in the field once tried, whatever came of it: a try another tab's unlock
    // superseded stays on this screen (with a notice), and would leave it for anyone to use.
    app.unlock(password, confirmation).then(() => {
      setPassword("");
      setConfirmation("");
      // Still here (a wrong password...): the emptied field has the focus, to type again. The
      // button, disabled while busy, had lost it to the page, and a keyboard started over.
      passwordRef.current?.focus();
    });
  };
  // Every error of this screen is about the password.
  const invalid = Boolean(app.state.error);
  return (
    <main class="screen unlock">
      <div class="logo" aria-hidden="true" />
      <Heading>{first ? "Set a password" : "Unlock InstantRoom"}</Heading>
      <p class="hint">
        {first
          ? "Your room keys are kept on this device only, locked by this password. Nobody can recover it: choose one you will remember."
          : "Your room keys are locked on this device."}
      </p>
      <form onSubmit={submit}>
        <Field
          id="password"
          label="Password"
          type="password"
          autocomplete={first ? "new-password" : "current-password"}
          value={password}
          onValue={setPassword}
          inputRef={passwordRef}
          invalid={invalid}
          required
        />
        {first && (
          <Field
            id="password-confirm"
            label="Password again"
            type="password"
            autocomplete="new-password"
            value={confirmation}
            onValue={setConfirmation}
            invalid={invalid}
            required
          />
        )}
        <Alert app={app} />
        <button type="submit" class="primary" data-testid="unlock" disabled={app.state.busy}>
          {app.state.busy ? "Opening…" : first ? "Set password" : "Unlock"}
        </button>
      </form>
      {app.state.joinText && <p class="hint">You opened an invite link: you can join once unlocked.</p>}
      {!first && (
        <details class="forgot">
          <summary>Forgot the password?</summary>
          <p class="hint">
            Nobody can recover it: the keys are encrypted with it on this device only. You can delete everything
            here and start again, then join your rooms again with their keys.
          </p>
          <AskFirst
            testid="wipe-locked"
            danger
            question="Delete every room and message from this device?"
            yes="Delete everything"
            onYes={() => app.wipeLocked()}
          >
            Delete everything and start again
          </AskFirst>
        </details>
      )}
    </main>
  );
}

// The list of rooms.

function Rooms({ app }) {
  const rooms = app.rooms;
  return (
    <>
      <Nav app={app} back={false} />
      <main class="screen">
        <Heading>Rooms</Heading>
        <Alert app={app} />
        <div class="actions">
          <button type="button" class="primary" data-testid="nav-new" onClick={() => app.go("new")}>
            New room
          </button>
          <button type="button" data-testid="nav-join" onClick={() => app.go("join")}>
            Join a room
          </button>
        </div>
        {rooms.length === 0 ? (
          <p class="empty">No rooms yet. Make one and hand its key to a friend, or join with theirs.</p>
        ) : (
          <ul class="room-list" data-testid="room-list">
            {rooms.map((room) => {
              const live = app.live.get(room.roomId);
              return (
                <li key={room.roomId}>
                  <button
                    type="button"
                    class="room-item"
                    data-testid="room-item"
                    onClick={() => app.go("room", room.roomId)}
                  >
                    <span class="room-label">{room.label}</span>
                    <span class="room-meta">
                      {app.connectionState(room.roomId) === "online" ? `${live?.members ?? 0} online · ` : ""}
                      {formatRemaining(room.expiresAtMs, app.expiryNow())}
                      {live?.unread > 0 && (
                        <>
                          {" · "}
                          <strong class="unread" data-testid="room-unread">
                            {live.unread} new
                          </strong>
                        </>
                      )}
                    </span>
                  </button>
                </li>
              );
            })}
          </ul>
        )}
      </main>
    </>
  );
}

// A new room.

function NewRoom({ app }) {
  const [label, setLabel] = useState("");
  const [nickname, setNickname] = useState(app.store.data.nickname || "");
  const [lifetime, setLifetime] = useState("day");
  const [customAmount, setCustomAmount] = useState("");
  const [customUnit, setCustomUnit] = useState("hours");
  const createButton = useRef(null);
  // The error shown is the custom lifetime's while what is typed there is none.
  let amountInvalid = false;
  if (lifetime === "custom" && app.state.error) {
    try {
      customLifetime(customAmount, customUnit);
    } catch {
      amountInvalid = true;
    }
  }
  const submit = (event) => {
    event.preventDefault();
    app.createRoom({ label, nickname, lifetime, customAmount, customUnit }).then(() => {
      // Still here (refused, or not saved): the button, disabled while the relay was
      // asked, lost the focus to the page, and a keyboard would start over.
      if (document.activeElement === document.body) createButton.current?.focus();
    });
  };
  return (
    <>
      <Nav app={app} />
      <main class="screen">
        <Heading>New room</Heading>
        <form onSubmit={submit}>
          <label for="room-label">Room name (only on this device)</label>
          <input
            id="room-label"
            data-testid="room-label"
            value={label}
            maxLength={60}
            spellcheck={false}
            placeholder="Weekend trip"
            onInput={(e) => setLabel(e.currentTarget.value)}
          />
          <NicknameField value={nickname} onValue={setNickname} />
          <label for="expiry">The room lives for</label>
          <select
            id="expiry"
            data-testid="expiry"
            value={lifetime}
            onChange={(e) => {
              setLifetime(e.currentTarget.value);
              if (app.state.error) app.set({ error: null }); // of the choice left, maybe
            }}
          >
            {Object.entries(LIFETIMES).map(([value, { label: text }]) => (
              <option key={value} value={value}>
                {text}
              </option>
            ))}
            <option value="custom">Custom…</option>
          </select>
          {lifetime === "custom" && (
            <div class="custom-lifetime">
              {/* Checked by the controller, not the browser: its errors say what is wrong. */}
              <Field
                id="expiry-amount"
                label="Custom lifetime"
                value={customAmount}
                onValue={setCustomAmount}
                inputMode="numeric"
                autocomplete="off"
                maxLength={6}
                invalid={amountInvalid}
                aria-describedby={amountInvalid ? `${ERROR_ID} expiry-range` : "expiry-range"}
              />
              <label for="expiry-unit">Unit</label>
              <select id="expiry-unit" data-testid="expiry-unit" value={customUnit} onChange={(e) => setCustomUnit(e.currentTarget.value)}>
                {Object.keys(LIFETIME_UNITS).map((unit) => (
                  <option key={unit} value={unit}>
                    {unit}
                  </option>
                ))}
              </select>
              <p class="hint" id="expiry-range">
                From 5 minutes to 30 days.
              </p>
            </div>
          )}
          <p class="hint">When it ends, the relay refuses the room and every device deletes it.</p>
          <Alert app={app} />
          <button type="submit" class="primary" data-testid="create-room" ref={createButton} disabled={app.state.creating}>
            {app.state.creating ? "Creating…" : "Create room"}
          </button>
        </form>
      </main>
    </>
  );
}

// Share a room's key: grouped, spelled out, as a link and as a QR code.

function Share({ app }) {
  const room = app.room(app.state.current);
  const [spelled, setSpelled] = useState(false);
  const [copied, setCopied] = useState(false);
  if (!room) return <Rooms app={app} />;
  const link = app.inviteLink(room.roomId);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(link);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };
  const share = () => navigator.share?.({ title: "InstantRoom invite", url: link }).catch(() => {});
  return (
    <>
      <Nav app={app} />
      <main class="screen share">
        <Heading>Share “{room.label}”</Heading>
        <Alert app={app} />
        <p class="hint">
          Anyone with this key can read and write in the room. Hand it over in person: show the QR code, or
          read the key aloud.
        </p>
        <img class="qr" data-testid="qr" src={qrDataUrl(link)} alt="QR code of the invite link" width="264" height="264" />
        <h2>Room key</h2>
        {/* Read letter by letter: a name, which a paragraph cannot have (ARIA), an image can. */}
        <p class="key" data-testid="room-key" role="img" aria-label={`Room key: ${[...room.key].join(" ")}`}>
          {formatMinikey(room.key)}
        </p>
        <button type="button" class="link" aria-expanded={spelled} onClick={() => setSpelled(!spelled)}>
          {spelled ? "Hide the spelling" : "Spell it out"}
        </button>
        <ol class="spelled" data-testid="room-key-spelled" hidden={!spelled}>
          {spellMinikey(room.key).map((line, i) => (
            <li key={i}>{line}</li>
          ))}
        </ol>
        <h2>Invite link</h2>
        <p class="link-text" data-testid="invite-link">
          {link}
        </p>
        <p class="hint">
          The key is after the #, which browsers never send to a server. A link sent through another app is
          only as private as that app.
        </p>
        <div class="actions">
          <button type="button" onClick={copy}>
            {copied ? "Copied" : "Copy link"}
          </button>
          {navigator.share && (
            <button type="button" onClick={share}>
              Share…
            </button>
          )}
          <button type="button" class="primary" data-testid="open-room" onClick={() => app.go("room", room.roomId)}>
            Open room
          </button>
        </div>
      </main>
    </>
  );
}

// Join with a typed or pasted key, an invite link, or a scanned QR code.

/** The host of the relay that `text` would be joined on; null while it is not a key or link. */
function joinRelayHost(app, text) {
  try {
    return new URL(app.joinServerFor(app.parseJoinText(text))).host;
  } catch {
    return null;
  }
}

const NOT_AN_INVITE = "That QR code is not an InstantRoom invite: ";

/**
 * Why the scanned `value` is not an invite, `error` being what parseInvite threw. What
 * the code holds is never quoted: a Wi-Fi code holds its password.
 */
function notAnInvite(value, error) {
  const text = value.trim();
  if (/^WIFI:/i.test(text)) return `${NOT_AN_INVITE}it is a Wi-Fi network's code.`;
  const hash = text.indexOf("#");
  const address = hash < 0 ? text : text.slice(0, hash);
  const link = /^[a-z][a-z0-9+.-]*:\/\/\S*$/i.test(address) || /^[A-Za-z0-9.-]+(:\d+)?(\/\S*)?$/.test(address);
  // A link with a key, or what may be a key: what is wrong with it, in parseInvite's words.
  if (hash >= 0 ? address === "" || link : /^[A-Za-z0-9 \t.\-_]+$/.test(text)) {
    return NOT_AN_INVITE + error.message;
  }
  if (/^https?:\/\/\S*$/i.test(text)) return `${NOT_AN_INVITE}it is a web address with no room key in it.`;
  return `${NOT_AN_INVITE}it holds something else (a contact, a payment…).`;
}

/** Why scanning stopped, for people. */
function scanFailure(error) {
  if (error?.name === "NotAllowedError") {
    return "The camera was not allowed. Type the key instead, or allow the camera in the browser's settings.";
  }
  // The camera's own failures (getUserMedia, the video's play()) are DOMExceptions; the
  // others (a QR reader that cannot run here: qr/scan.js) say what they are themselves.
  if (error instanceof DOMException) return `The camera could not be used: ${error.message}`;
  const message = String(error?.message ?? error);
  return message.charAt(0).toUpperCase() + message.slice(1);
}

function Join({ app }) {
  const [text, setText] = useState(app.state.joinText || "");
  const [nickname, setNickname] = useState(app.store.data.nickname || "");
  const [scanning, setScanning] = useState(false);
  const [scanError, setScanError] = useState(null);
  const video = useRef(null);
  const nicknameRef = useRef(null);
  const abort = useRef(null);

  useEffect(() => {
    if (app.state.joinText) nicknameRef.current?.focus();
    return () => abort.current?.abort();
  }, []);

  const startScan = async () => {
    setScanError(null);
    setScanning(true);
    const controller = new AbortController();
    abort.current = controller;
    try {
      // Loaded when first used: a page of a build the relay replaced since (an update) may
      // find it gone, which the browser calls "Failed to fetch dynamically imported module".
      const scanner = await import("../qr/scan.js").catch(() => null);
      if (scanner === null) {
        setScanError(
          "The QR reader could not be loaded: the app was updated on the relay, or the network is down. Reload the page, then scan again (or type the key).",
        );
        return;
      }
      const { scanFromCamera } = scanner;
      await scanFromCamera(
        video.current,
        (value) => {
          // An invite link for this relay is shown as its key alone; a link to another
          // relay stays whole, as the relay matters.
          try {
            const { server, key } = parseInvite(value);
            const here = server === null || server.replace(/\/$/, "") === app.store.data.serverUrl;
            // Read still as a link's key, which may be in one case (parseJoinText).
            if (here && server !== null) app.scannedInvite(formatMinikey(key), server);
            setText(here ? formatMinikey(key) : value.trim());
          } catch (error) {
            // Some other QR code: say why it is refused, and keep looking.
            setScanError(notAnInvite(value, error));
            return false;
          }
          setScanError(null);
          return true;
        },
        controller.signal,
      );
      nicknameRef.current?.focus();
    } catch (error) {
      setScanError(scanFailure(error));
    } finally {
      setScanning(false);
    }
  };
  const stopScan = () => abort.current?.abort();

  const submit = (event) => {
    event.preventDefault();
    app.joinRoom({ text, nickname });
  };
  const relayHost = joinRelayHost(app, text);
  // The error is the key's while what is typed is no key or link (the error goes as it changes).
  const keyInvalid = Boolean(app.state.error) && relayHost === null;
  return (
    <>
      <Nav app={app} />
      <main class="screen">
        <Heading>Join a room</Heading>
        <form onSubmit={submit}>
          <Field
            id="join-key"
            label="Room key or invite link"
            value={text}
            onValue={(value) => {
              setText(value);
              // What was said of the key before no longer applies to the one being typed.
              if (app.state.error) app.set({ error: null });
            }}
            autocomplete="off"
            autocapitalize="off"
            autocorrect="off"
            spellcheck={false}
            placeholder="S1234 abcde …"
            invalid={keyInvalid}
            required
          />
          <div class="scan">
            {scanning ? (
              <button type="button" onClick={stopScan}>
                Stop the camera
              </button>
            ) : (
              <button type="button" data-testid="scan-qr" onClick={startScan}>
                Scan a QR code
              </button>
            )}
            <video
              ref={video}
              data-testid="scan-video"
              class="scan-video"
              hidden={!scanning}
              aria-label="Camera preview"
              muted
              playsInline
            />
            {scanError && (
              <p class="alert" role="alert">
                {scanError}
              </p>
            )}
          </div>
          {relayHost && (
            <p class="hint" data-testid="join-relay">
              Joins on the relay at {relayHost}.
            </p>
          )}
          <NicknameField value={nickname} onValue={setNickname} inputRef={nicknameRef} />
          <Alert app={app} />
          <button type="submit" class="primary" data-testid="join">
            Join
          </button>
        </form>
      </main>
    </>
  );
}

// A room: the conversation, presence and the connection.

// "unsent": the relay never took it: given up 55 minutes after it was written or with a
// room the relay refused (a "notSent" event), or one the outbox could not take back after
// an unlock (full).
const MESSAGE_STATUS_LABELS = { sending: "sending…", sent: "sent", unsent: "not sent" };

/** "Latin and Cyrillic"; "Latin, Greek and Cyrillic". */
function listed(words) {
  return words.length < 2 ? words.join("") : `${words.slice(0, -1).join(", ")} and ${words.at(-1)}`;
}

/**
 * The flag beside a name whose letters mix look-alike scripts (PROTOCOL.md 4.4): "аlice"
 * with a Cyrillic "а" is not "alice", so it gets no key-change warning, yet looks the
 * same. The scripts show beside a ⚠; the whole warning is what a screen reader reads (the
 * short visible form is hidden from it, and a title alone would reach no one on a phone).
 */
function MixedScriptsFlag({ scripts }) {
  const warning = `The name mixes ${listed(scripts)} letters: it may imitate another name. Check the fingerprint with them.`;
  return (
    <span class="flag" data-testid="mixed-scripts-flag">
      <span aria-hidden="true" title={warning}>
        ⚠ {scripts.join(" + ")}
      </span>
      <span class="visually-hidden">{warning}</span>
    </span>
  );
}

/** Words a Delete button names its message by: its first DELETE_NAME_CHARACTERS, on one line. */
const DELETE_NAME_CHARACTERS = 40;
function opening(text) {
  const line = shown(text.replace(/\s+/gu, " ").trim());
  const characters = [...line];
  return characters.length > DELETE_NAME_CHARACTERS
    ? `${characters.slice(0, DELETE_NAME_CHARACTERS).join("").trimEnd()}…`
    : line;
}

function Message({ app, roomId, message }) {
  // Once per message shown, not on every redraw of the room.
  const scripts = useMemo(() => mixedScripts(message.senderName), [message.senderName]);
  return (
    <li class={message.mine ? "message mine" : "message"} data-testid="message">
      <div class="message-head">
        <span class="sender" data-testid="message-sender" translate={false}>
          {shown(message.senderName)}
        </span>
        {scripts.length > 0 && <MixedScriptsFlag scripts={scripts} />}
        <span class="fingerprint" data-testid="message-fingerprint" title="The sender's device fingerprint">
          {message.fingerprint}
        </span>
        <time dateTime={new Date(message.timestampMs).toISOString()}>{formatTime(message.timestampMs)}</time>
      </div>
      {message.keyChanged && (
        <p class="warning" data-testid="key-change-warning" role="note">
          ⚠ <span translate={false}>{shown(message.senderName)}</span> now writes from another device key. It may be a new device, or someone else
          using that name: check the fingerprint with them.
        </p>
      )}
      {/* What members write is never handed to a translation service (translate={false}
          renders translate="no": Preact sets the boolean property). */}
      <p class="text" data-testid="message-text" translate={false}>
        {shown(message.text, { lines: true })}
      </p>
      <div class="message-foot">
        {message.mine && <span class="status">{MESSAGE_STATUS_LABELS[message.status]}</span>}
        <button
          type="button"
          class="link small"
          data-testid="delete-message"
          // Which message: a list of buttons all named alike says nothing, and two of one
          // sender in one minute differ by their words.
          aria-label={`Delete ${message.mine ? "your" : `${shown(message.senderName)}'s`} message of ${formatTime(message.timestampMs)}, “${opening(message.text)}”, from this device`}
          onClick={(event) => {
            // The focus goes to the next message's Delete (else the one before, else the
            // message box), not with this button to the page's start.
            const item = event.currentTarget.closest("li");
            const neighbour = item?.nextElementSibling ?? item?.previousElementSibling;
            const next = neighbour?.querySelector('[data-testid="delete-message"]');
            (next ?? document.getElementById("message-input"))?.focus();
            app.deleteMessage(roomId, message.id);
          }}
        >
          Delete
        </button>
      </div>
    </li>
  );
}

/**
 * A message, drawn again only when it changed: a room of a thousand is redrawn for each
 * count, arrival or keystroke. A message's entry is the same object all its life, its
 * status ("sending", "sent", "not sent") changed in place: passed apart, to be compared.
 */
class ShownMessage extends Component {
  shouldComponentUpdate(next) {
    const now = this.props;
    return next.message !== now.message || next.status !== now.status || next.roomId !== now.roomId || next.app !== now.app;
  }

  render({ app, roomId, message }) {
    return <Message app={app} roomId={roomId} message={message} />;
  }
}

/** How many of the names a closed members line shows; the rest are counted. */
const NAMES_IN_SUMMARY = 3;
/** How many members the open list shows, at most; the rest are counted. A hostile member can
 * announce a thousand throwaway keys (as many as a roster keeps): the list is not drawn
 * whole, and a cut one shows those with a warning first, so that the cut hides none of them
 * (unless there are more than this). */
const MEMBERS_LISTED = 50;

/** What the members line shows of `roster`: worked out once per roster heard (the controller
 * makes a new one each time), not on every redraw of the room. The look-alike scripts of
 * each name (mixedScripts) are taken from `before`, what it was for the roster before, when
 * it has them: a roster heard again, a member more or less, is not worked out again. */
function membersOf(roster, before) {
  const scriptsByName = new Map();
  const canonicalByName = new Map();
  const claims = new Map(); // canonical name -> how many members claim it
  const named = roster.map((member) => {
    const scripts = scriptsByName.get(member.name) ?? before?.scriptsByName.get(member.name) ?? mixedScripts(member.name);
    scriptsByName.set(member.name, scripts);
    const canonical =
      canonicalByName.get(member.name) ?? before?.canonicalByName.get(member.name) ?? canonicalName(member.name);
    canonicalByName.set(member.name, canonical);
    claims.set(canonical, (claims.get(canonical) ?? 0) + 1);
    return { member, scripts, canonical };
  });
  // A name two members claim: either may be the impostor, whoever answered first.
  const members = named.map(({ member, scripts, canonical }) => ({
    ...member,
    scripts,
    shared: claims.get(canonical) > 1,
    warned: member.keyChanged || scripts.length > 0,
  }));
  const warned = members.filter((member) => member.warned);
  // Oldest first; cut, those with a warning first.
  const listed =
    members.length <= MEMBERS_LISTED
      ? members
      : [...warned, ...members.filter((member) => !member.warned)].slice(0, MEMBERS_LISTED);
  return {
    count: members.length,
    inSummary: members.slice(0, NAMES_IN_SUMMARY),
    listed,
    warned: warned.length > 0,
    scriptsByName,
    canonicalByName,
  };
}

/**
 * Who is in the room with this device: the relay's count says how many, the members'
 * own JOIN and HERE messages say who (PROTOCOL.md 5.7). A name is a claim, untrusted text:
 * shown as a message's sender is, flagged alike (another device key, look-alike letters),
 * beside the fingerprint to check it by; those counted who said nothing are counted apart.
 * One line, a phone's width, that opens to the list.
 */
function Members({ live }) {
  const roster = live.roster;
  const last = useRef(null);
  const members = useMemo(() => (last.current = membersOf(roster, last.current)), [roster]);
  const unnamed = Math.max(0, live.members - 1 - roster.length);
  if (roster.length === 0 && unnamed === 0) return null;
  return <MemberDetails members={members} unnamed={unnamed} />;
}

function MemberDetails({ members, unnamed }) {
  // The list is drawn only while it is open, and again only when the roster changed: not
  // on every redraw of the room (a message, a count, a keystroke).
  const [open, setOpen] = useState(false);
  const list = useMemo(() => open && members.count > 0 && <MemberList members={members} />, [open, members]);
  const more = Math.max(0, members.count - NAMES_IN_SUMMARY) + unnamed;
  return (
    <details class="members" data-testid="member-details" onToggle={(event) => setOpen(event.currentTarget.open)}>
      <summary data-testid="members-summary">
        Who is here:{" "}
        {/* Each name in a box of its own, quoted: a name is any text ("Alice, Bob"), and
            must not read as two people, or as the start of the next. */}
        {members.inSummary.map((member, index) => (
          <Fragment key={member.id}>
            {index > 0 && ", "}
            <span class="summary-name">
              “
              <span data-testid="members-summary-name" translate={false}>
                {shown(member.name)}
              </span>
              ”
            </span>
          </Fragment>
        ))}
        {more > 0 && (members.count > 0 ? ` and ${more} more` : `${more} unnamed`)}
        {members.warned && (
          <>
            <span aria-hidden="true"> ⚠</span>
            <span class="visually-hidden">, with a warning: open the list</span>
          </>
        )}
      </summary>
      {list}
      {unnamed > 0 && (
        <p class="hint" data-testid="members-unnamed">
          {unnamed === 1 ? "1 more online has not said who they are." : `${unnamed} more online have not said who they are.`}
        </p>
      )}
    </details>
  );
}

function MemberList({ members }) {
  const notListed = members.count - members.listed.length;
  return (
    <>
      <ul class="member-list" data-testid="member-list" aria-label="Members who said who they are">
        {members.listed.map((member) => (
          <Member key={member.id} member={member} />
        ))}
      </ul>
      {notListed > 0 && (
        <p class="hint" data-testid="members-not-listed">
          {notListed === 1 ? "1 more member is not listed here." : `${notListed} more members are not listed here.`}
        </p>
      )}
    </>
  );
}

function Member({ member }) {
  return (
    <li class="member" data-testid="member">
      <span class="sender" data-testid="member-name" translate={false}>
        {shown(member.name)}
      </span>
      {member.scripts.length > 0 && <MixedScriptsFlag scripts={member.scripts} />}
      <span class="visually-hidden">, fingerprint</span>
      <span class="fingerprint" data-testid="member-fingerprint" title="Their device fingerprint">
        {member.fingerprint}
      </span>
      {member.shared ? (
        <p class="warning" data-testid="member-key-change-warning" role="note">
          ⚠ More than one device here says it is <span translate={false}>{shown(member.name)}</span>. Any of them may be
          someone else using that name: check the fingerprints with them.
        </p>
      ) : (
        member.keyChanged && (
          <p class="warning" data-testid="member-key-change-warning" role="note">
            ⚠ <span translate={false}>{shown(member.name)}</span> is here with another device key than before. It may be a
            new device, or someone else using that name: check the fingerprint with them.
          </p>
        )
      )}
    </li>
  );
}

function RenameRoom({ app, room }) {
  const [label, setLabel] = useState(room.label);
  const submit = (event) => {
    event.preventDefault();
    app.renameRoom(room.roomId, label);
  };
  return (
    <form class="inline" onSubmit={submit}>
      <label for="rename-room">Room name (only on this device)</label>
      <div class="row">
        <input id="rename-room" data-testid="rename-room" value={label} maxLength={60} spellcheck={false} onInput={(e) => setLabel(e.currentTarget.value)} />
        <button type="submit">Rename</button>
      </div>
    </form>
  );
}

function Room({ app }) {
  const id = app.state.current;
  const room = app.room(id);
  const live = room ? app.liveRoom(id) : null;
  // The draft lives with the room's live state, in memory only: it outlasts a visit to
  // the Share screen, the list or another room, and goes with a lock, as the room does.
  const [draft, showDraft] = useState(live?.draft ?? "");
  const setDraft = (text) => {
    if (live) live.draft = text;
    showDraft(text);
  };
  const sending = useRef(false);
  const [details, setDetails] = useState(false);
  const list = useRef(null);
  const input = useRef(null);
  // Whether the conversation shows its end: only then does a new message scroll it into
  // view (or when it is one's own), so that someone reading back is not pulled away.
  const atEnd = useRef(true);
  // Messages there when the room opened are not read out; those that come after are, one
  // by one, as "name: text" (the conversation itself read each whole: fingerprint, the
  // Delete button's name, then "sending…" and "sent" again).
  const [before] = useState(() => new Set(live?.messages.map((m) => m.id) ?? []));
  const arrivals = live ? live.messages.filter((m) => !m.mine && !before.has(m.id)).slice(-5) : [];
  const last = live?.messages.at(-1);
  useEffect(() => {
    const node = list.current;
    if (node && (atEnd.current || last?.mine)) node.scrollTop = node.scrollHeight;
  }, [last?.id]);
  useEffect(() => {
    const node = list.current;
    if (!node || typeof ResizeObserver === "undefined") return undefined;
    // The conversation's box shrinks as the draft grows by a line, the options open or a
    // notice shows (and grows back): its end stays in view if it was, as for a message.
    const observer = new ResizeObserver(() => {
      if (atEnd.current) node.scrollTop = node.scrollHeight;
    });
    observer.observe(node);
    return () => observer.disconnect();
  }, []);
  // Where the conversation was scrolled to when last heard of.
  const lastTop = useRef(0);
  const onScroll = (event) => {
    const node = event.currentTarget;
    // A scroll event comes a frame after the scroll: what arrived meanwhile (a burst of
    // messages) is no reading back, only a move up is; near the end is at the end again.
    if (node.scrollHeight - node.scrollTop - node.clientHeight < 48) atEnd.current = true;
    else if (node.scrollTop < lastTop.current) atEnd.current = false;
    lastTop.current = node.scrollTop;
  };
  if (!room) return <Rooms app={app} />;
  const state = app.connectionState(id);
  const send = async (event) => {
    event.preventDefault();
    // Taken from the draft before it is sealed, so that a second Enter or tap meanwhile
    // sends nothing; put back if it could not be sent (unless something new was typed),
    // even when this screen was left meanwhile (unless the room was forgotten or locked).
    const text = draft;
    if (sending.current || !text.trim()) return;
    sending.current = true;
    setDraft("");
    let sent = false;
    try {
      sent = await app.sendText(id, text);
    } finally {
      sending.current = false;
      const now = app.live.get(id);
      if (!sent && now === live && !live.draft) setDraft(text);
    }
  };
  const onKeyDown = (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) send(event);
  };
  return (
    // The room fills the window: its conversation scrolls between the header and the
    // composer, so that the newest message shows above the composer.
    <div class="fill">
      <Nav app={app} />
      <main class="screen room">
        <header class="room-head">
          <Heading>
            <span data-testid="room-title">{room.label}</span>
          </Heading>
          <p class="room-status">
            <span class={`dot ${state}`} aria-hidden="true" />
            <span data-testid="connection-state" role="status">
              {STATE_LABELS[state] ?? state}
            </span>
            {" · "}
            {/* Read out as it changes: someone came or went. */}
            {/* Counted by the relay: out of its reach, the last count would be stale. */}
            <span data-testid="members" aria-live="polite" aria-atomic="true">
              {state === "online" ? `${live.members} online` : "who is online is not known"}
            </span>
            {" · "}
            <span>{formatRemaining(room.expiresAtMs, app.expiryNow())}</span>
          </p>
          {state === "online" && <Members live={live} />}
          <div class="actions small">
            <button type="button" data-testid="share-room" onClick={() => app.go("share", id)}>
              Share key
            </button>
            <button type="button" aria-expanded={details} onClick={() => setDetails(!details)}>
              Room options
            </button>
          </div>
          {details && (
            <div class="details">
              <label class="check">
                <input
                  type="checkbox"
                  data-testid="keep-history"
                  checked={room.keepHistory}
                  onChange={(e) => app.setKeepHistory(id, e.currentTarget.checked)}
                />
                Keep this room's messages on this device (encrypted)
              </label>
              <RenameRoom app={app} room={room} />
              <p class="hint">
                Your nickname here: {shown(room.nickname)}. Your fingerprint: {app.myFingerprint()}
              </p>
              <div class="actions small">
                {/* As Leave: one tap would lose the kept messages for good. */}
                <AskFirst
                  testid="clear-history"
                  question={`Delete every message of “${room.label}” from this device? They cannot be brought back.`}
                  yes="Delete all messages"
                  onYes={() => app.clearHistory(id)}
                >
                  Delete all messages
                </AskFirst>
                {/* As the wipe: one tap would lose the key and any kept messages for good. */}
                <AskFirst
                  testid="leave-room"
                  danger
                  question={`Leave “${room.label}” and delete its key and messages from this device? To come back you need its key again.`}
                  yes="Leave and forget"
                  onYes={() => app.forgetRoom(id)}
                >
                  Leave and forget room
                </AskFirst>
              </div>
            </div>
          )}
          {state === "reconnecting" && (
            <button type="button" class="link small" data-testid="reconnect-now" onClick={() => app.reconnectNow()}>
              Reconnect now
            </button>
          )}
          {/* A live region there before its text, so that the reason is read as it comes. */}
          <div class="live-slot" role="status">
            {state !== "online" && app.connectionReason(id) && (
              <p class="notice" data-testid="connection-reason">
                {shown(app.connectionReason(id))}
              </p>
            )}
          </div>
          {live.error && (
            <p class="alert" role="alert">
              {shown(live.error)}
            </p>
          )}
          {/* Read out as it comes, as the reason above (a screen reader would not see it). */}
          <div class="live-slot" role="status">
            {live.droppedAhead && (
              <p class="warning" data-testid="dropped-ahead">
                ⚠ {live.droppedAhead}
              </p>
            )}
          </div>
          <Alert app={app} />
          {/* Past every message's Delete button in one Tab: the keyboard's way to the message
              box, which comes after the conversation. Shows when it has the focus. */}
          <button type="button" class="link small skip" data-testid="skip-to-composer" onClick={() => input.current?.focus()}>
            Skip to the message box
          </button>
        </header>
        {/* A log holding a list (that a reader can walk and count): a list given the
            log's role is no list any more. It is not read out itself: the announcer below
            reads each message that comes, shorter. */}
        <div class="messages" data-testid="messages" role="log" aria-live="off" aria-label="Messages" ref={list} onScroll={onScroll}>
          <ol class="message-list">
            {live.messages.length === 0 && <li class="empty">No messages yet. Messages are not stored by the relay.</li>}
            {live.messages.map((message) => (
              <ShownMessage key={message.id} app={app} roomId={id} message={message} status={message.status} />
            ))}
          </ol>
        </div>
        <div class="visually-hidden" aria-live="polite" aria-relevant="additions" data-testid="message-announcer">
          {arrivals.map((message) => (
            <p key={message.id} translate={false}>
              {shown(message.senderName)}
              {message.keyChanged ? ", from another device key" : ""}: {shown(message.text)}
            </p>
          ))}
        </div>
        <form class="composer" onSubmit={send}>
          <label for="message-input" class="visually-hidden">
            Message
          </label>
          {/* No spellcheck: a browser's enhanced spellcheck sends what is typed to a
              server, and a draft is no one's business before it is sealed. */}
          <textarea
            id="message-input"
            data-testid="message-input"
            ref={input}
            spellcheck={false}
            rows={1}
            value={draft}
            placeholder="Message"
            onInput={(e) => setDraft(e.currentTarget.value)}
            onKeyDown={onKeyDown}
          />
          {/* A tap leaves the focus in the message box: on a phone, a button that took it
              would close the keyboard after every message. */}
          <button type="submit" class="primary" data-testid="send" onMouseDown={(event) => event.preventDefault()}>
            Send
          </button>
        </form>
      </main>
    </div>
  );
}

// Settings: the relay, the idle lock, the password, install.

function Settings({ app }) {
  const data = app.store.data;
  const [serverUrl, setServerUrl] = useState(data.serverUrl || "");
  const [idle, setIdle] = useState(String(data.idleLockMinutes ?? 5));
  const [oldPassword, setOldPassword] = useState("");
  const [newPassword, setNewPassword] = useState("");
  const [newConfirmation, setNewConfirmation] = useState("");
  // Which form the error or notice is about: it shows beside that one, in view of whoever
  // just used it (on a small or zoomed screen, the top of the page is far from the password
  // form).
  const [about, setAbout] = useState("relay");
  const oldPasswordRef = useRef(null);
  const changeButton = useRef(null);
  const save = (event) => {
    event.preventDefault();
    setAbout("relay");
    app.saveSettings({ serverUrl, idleLockMinutes: Number(idle) });
  };
  const change = (event) => {
    event.preventDefault();
    setAbout("password");
    app.changePassword(oldPassword, newPassword, newConfirmation).then(() => {
      setOldPassword("");
      setNewPassword("");
      setNewConfirmation("");
      // The button, disabled while busy, lost the focus to the page: to the emptied form
      // after an error, else back to the button.
      if (app.state.error) oldPasswordRef.current?.focus();
      else if (document.activeElement === document.body) changeButton.current?.focus();
    });
  };
  const install = async () => {
    const prompt = app.installPrompt;
    app.installPrompt = null;
    await prompt?.prompt();
    app.changed();
  };
  return (
    <>
      <Nav app={app} />
      <main class="screen">
        <Heading>Settings</Heading>
        <form onSubmit={save}>
          <Field
            id="server-url"
            label="Relay URL"
            type="url"
            value={serverUrl}
            onValue={setServerUrl}
            autocomplete="url"
            required
          />
          <p class="hint">
            Any InstantRoom relay can carry your rooms: it only sees ciphertext. New rooms and bare keys use
            this one; rooms you joined keep their own. A relay other than the one that served this page must
            list this page's address in its --origins option, or it refuses the connection.
          </p>
          <label for="idle-lock">Lock after</label>
          <select id="idle-lock" data-testid="idle-lock" value={idle} onChange={(e) => setIdle(e.currentTarget.value)}>
            <option value="1">1 minute without use</option>
            <option value="5">5 minutes without use</option>
            <option value="15">15 minutes without use</option>
            <option value="60">1 hour without use</option>
          </select>
          {about === "relay" && <Alert app={app} />}
          <button type="submit" class="primary" data-testid="save-settings">
            Save
          </button>
        </form>
        <h2>This device</h2>
        <p>
          Your fingerprint: <span class="fingerprint" data-testid="my-fingerprint">{app.myFingerprint()}</span>
        </p>
        <div class="actions">
          <button type="button" data-testid="lock-now" onClick={() => app.lock()}>
            Lock now
          </button>
          {app.installPrompt && (
            <button type="button" onClick={install}>
              Install the app
            </button>
          )}
        </div>
        <h2>Change password</h2>
        <form onSubmit={change}>
          <Field
            id="old-password"
            label="Current password"
            type="password"
            autocomplete="current-password"
            value={oldPassword}
            onValue={setOldPassword}
            inputRef={oldPasswordRef}
            required
          />
          <Field
            id="new-password"
            label="New password"
            type="password"
            autocomplete="new-password"
            value={newPassword}
            onValue={setNewPassword}
            required
          />
          <Field
            id="new-password-confirm"
            label="New password again"
            type="password"
            autocomplete="new-password"
            value={newConfirmation}
            onValue={setNewConfirmation}
            required
          />
          {about === "password" && <Alert app={app} />}
          <button type="submit" ref={changeButton} disabled={app.state.busy}>
            Change password
          </button>
        </form>
        <h2>Delete everything</h2>
        <p class="hint">Deletes every room key and message from this device. Other members keep theirs.</p>
        <AskFirst
          testid="wipe"
          danger
          question="Delete every room and message from this device?"
          yes="Delete everything"
          onYes={() => app.wipe()}
        >
          Delete everything
        </AskFirst>
      </main>
    </>
  );
}

function Insecure() {
  return (
    <main class="screen unlock">
      <Heading>This page needs HTTPS</Heading>
      <p role="alert" class="alert">
        Browsers only let a page encrypt with WebCrypto, keep keys and use the camera when it comes over
        HTTPS (or from this machine itself). Open this relay's https:// address instead.
      </p>
      <p class="hint">
        Running the relay yourself? Put it behind a reverse proxy with a certificate, or start it with
        --tls-self-signed on a home network.
      </p>
    </main>
  );
}

const SCREENS = { insecure: Insecure, unlock: Unlock, rooms: Rooms, new: NewRoom, share: Share, join: Join, room: Room, settings: Settings };

export function App({ app }) {
  const [, setVersion] = useState(0);
  useEffect(() => {
    const redraw = () => setVersion((v) => v + 1);
    const unsubscribe = app.subscribe(redraw);
    // The state may have changed before this effect ran (effects run after the first
    // paint, and a quick start() can finish first): draw what it is now.
    redraw();
    return unsubscribe;
  }, [app]);
  if (app.state.screen === "loading") {
    return (
      <>
        <main class="screen">
          <p role="status">Loading…</p>
        </main>
        <Announcer app={app} />
      </>
    );
  }
  const needsStore = !["unlock", "insecure"].includes(app.state.screen);
  const Screen = needsStore && !app.store ? Unlock : SCREENS[app.state.screen];
  // A new invite link opened on the Join screen builds it anew, with the link's key.
  const invite = app.state.screen === "join" ? app.state.invites : "";
  return (
    <>
      <Screen key={`${app.state.screen}:${app.state.current ?? ""}:${invite}`} app={app} />
      <Announcer app={app} />
    </>
  );
}

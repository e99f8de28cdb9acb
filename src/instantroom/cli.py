"""The ``instantroom`` command."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, rooms_cli
from .client.keystore import (
    IDS_SAVED_WITHIN,
    KeyStore,
    KeyStoreError,
    StoredRoom,
    may_hold_a_key,
)
from .display import clock_warning, dropped_ahead_warning, printable
from .protocol.codes import ErrorCode
from .protocol.errors import MiniKeyError, ProtocolError, UsageError
from .protocol.kdf import DeviceKey, RoomKeys
from .protocol.minikey import format_minikey, make_minikey, parse_minikey, spell_minikey
from .protocol.session import OUTBOX_MAX_AGE_MS
from .relay.config import add_relay_options

if TYPE_CHECKING:
    from .client.connection import RoomClient
    from .protocol.session import MessageReceived

# The exit statuses of send and listen: each failure a script meets has its own, so that
# it can tell "try again later" (3, 4, 5) from "give up" (1, 2, 6). --help lists them.
EXIT_REFUSED = 1  # the relay refused the room or this client, for good
EXIT_USAGE = 2  # a mistyped key, a bad address, message or option, the key store
EXIT_UNREACHABLE = 3  # nothing sent within --timeout: no connection, no JOINED, or held
EXIT_TIMEOUT = 4  # connected, but the relay did not take the message within --timeout
EXIT_FULL = 5  # the room or the relay has no place now
EXIT_EXPIRED = 6  # the room's lifetime is over
# listen says a message dropped as dated ahead at most this often (seconds), as the chat.
DROPPED_AHEAD_SAID_EVERY = 600.0
# How often listen looks whether its relay has gone out of reach, or come back (seconds).
OUTAGE_CHECK = 0.25
# send says its relay is out of reach if it still is this long after it started (seconds).
SEND_UNREACHABLE_SAID_AFTER = 3.0
# listen says a relay has not let it into the room this long (seconds) after it connected.
# A relay lets a client in within a few round trips (JOIN, CHALLENGE, PROOF, JOINED), a
# JOIN refused as rate limited going again a second later: 10 s, as long as a connection
# may take to open (OPEN_TIMEOUT), is no slow relay but one holding the client back (or
# one that never will), and a room that only looks quiet. Said "yet": a busy relay may
# still let it in.
NOT_LET_IN_SAID_AFTER = 10.0
# Seconds of send's --timeout kept for the relay to take the message: a message waiting
# for the room's members to come back (a relay that was out of reach) goes no later.
SEND_TIME_TO_TAKE = 5.0
# The longest --timeout of send, in seconds: a message older than this is refused by the
# room's members, and given up by the client.
SEND_TIMEOUT_MAX = OUTBOX_MAX_AGE_MS / 1000
_SEND_STATUSES = """exit status:
  0    the relay took the message (not a proof that anyone received it)
  1    the relay refused the room or this client (not a relay, a bad URL, ...)
  2    a mistyped key, a bad server address, message or option, or a key store
       error: nothing was sent
  3    the relay was out of reach, or did not let this client into the room,
       until --timeout: nothing was sent (also when the message waited for
       members coming back after an outage and the relay went away again)
  4    the message went to the relay, which did not say it took it within
       --timeout (it may still reach the room)
  5    the room or the relay is full for now: try later
  6    the room has expired
  130  stopped by SIGINT (^C)"""
_LISTEN_STATUSES = """listen runs until stopped, and keeps reconnecting to a relay out of reach:
standard error says so once an outage, and again when it is back.

exit status:
  1    the relay refused the room or this client (not a relay, a bad URL, ...)
  2    a mistyped key, a bad server address or option, a key store error, or
       standard output closed
  5    the room or the relay is full for now: try later
  6    the room has expired
  129, 130, 143  stopped by SIGHUP, SIGINT (^C) or SIGTERM
  141  what read its output went away (listen | head -1)"""


def _refusal_status(code: int) -> int:
    """The exit status for a room the relay refused with ``code``."""
    if code in (ErrorCode.ROOM_FULL, ErrorCode.RELAY_FULL):
        return EXIT_FULL
    if code == ErrorCode.ROOM_EXPIRED:
        return EXIT_EXPIRED
    return EXIT_REFUSED


def _key_new(args: argparse.Namespace) -> int:
    print(make_minikey(secrets.randbelow))
    return 0


def _key_check(args: argparse.Namespace) -> int:
    try:
        rooms_cli.with_case_hint(parse_minikey, rooms_cli.key_text(" ".join(args.key)))
    except MiniKeyError as exc:
        print(f"instantroom: {exc}", file=sys.stderr)
        return 1
    print("This room key is well-formed.")
    return 0


def _key_show(args: argparse.Namespace) -> int:
    try:
        key = rooms_cli.with_case_hint(parse_minikey, rooms_cli.key_text(" ".join(args.key)))
    except MiniKeyError as exc:
        print(f"instantroom: {exc}", file=sys.stderr)
        return 1
    room_id = RoomKeys.from_minikey(key).room_id.hex()
    if args.json:
        shown = {"key": key, "grouped": format_minikey(key), "spelled": spell_minikey(key)}
        print(json.dumps({**shown, "room_id": room_id}, indent=2))
        return 0
    print(format_minikey(key))
    print()
    for number, line in enumerate(spell_minikey(key), start=1):
        print(f"  {number}. {line}")
    print()
    print(f"room id: {room_id}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .relay.config import ConfigError, config_from_args
    from .relay.logs import setup_logging
    from .relay.workers import serve

    try:
        config = config_from_args(args)
        setup_logging(config.log_level)
        return serve(config)
    except ConfigError as exc:
        print(f"instantroom: {exc}", file=sys.stderr)
        return 2


@dataclass
class _Target:
    """The room, relay, device key and known expiry that send/listen use, and the stored
    room they come from (with ``--room``)."""

    keys: RoomKeys
    server: str
    device: DeviceKey
    expires_at_ms: int
    stored: tuple[KeyStore, StoredRoom] | None = None


def _target(args: argparse.Namespace) -> _Target:
    """``--room`` takes the room from the key store (this install's device key, so members
    see the same fingerprint each time); ``--key`` makes a one-off device."""
    if args.room:
        store = rooms_cli.open_store(args)
        stored = store.find(args.room)
        keys = RoomKeys.from_minikey(stored.key)
        server = args.server or stored.server
        return _Target(keys, server, store.device, stored.expires_at_ms, (store, stored))
    linked_server, key = rooms_cli.invite_or_key(rooms_cli.key_text(args.key, "--room, --key"))
    # INSTANTROOM_SERVER only where neither --server nor the link says: a setting for
    # bare keys must not send a stored room's or a link's messages elsewhere.
    server = args.server or linked_server or rooms_cli.default_server()
    device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    return _Target(RoomKeys.from_minikey(key), server, device, 0)


class _StoredRoomUpdates:
    """What ``listen --room`` and ``send --room`` learn of the stored room, written to the
    store. What was printed or sent is kept as ids and times, so that a relay cannot have
    it shown again after a restart (PROTOCOL.md 7): written within ``IDS_SAVED_WITHIN``
    seconds and at the end. The room's expiry, as the chat keeps it, and the room's end
    are written at once. A store that cannot be written is said once, and the listening
    goes on."""

    def __init__(self, stored: tuple[KeyStore, StoredRoom] | None) -> None:
        self._stored = stored
        if stored is not None:
            # As a write would (PROTOCOL.md 7): the ids and floor read from the store are
            # those of the last write, and the clock may have been set back since; a floor
            # left further ahead than a message may be stamped would refuse them all.
            stored[1].prune_known(rooms_cli.now_ms())
        self._unsaved = False
        self._stopped = False

    def known(self) -> list[tuple[bytes, int]]:
        return self._stored[1].known() if self._stored is not None else []

    def floor(self) -> int:
        return self._stored[1].recent_floor_ms if self._stored is not None else 0

    def record(self, message_id: bytes, timestamp_ms: int) -> None:
        if self._stored is None or self._stopped:
            return
        self._stored[1].record_recent(message_id, timestamp_ms)
        if not self._unsaved:
            self._unsaved = True
            asyncio.get_running_loop().call_later(IDS_SAVED_WITHIN, self.save)

    def adopt_expiry(self, expires_at_ms: int) -> None:
        """Keep the earlier of the stored expiry and the relay's, ignoring 0 (PROTOCOL.md
        9): a room stored with none learns it, and the key goes at it, Redis or no."""
        if self._stored is None:
            return
        stored = self._stored[1]
        known = [t for t in (stored.expires_at_ms, expires_at_ms) if t]
        if min(known, default=0) != stored.expires_at_ms:
            stored.expires_at_ms = min(known)
            self._unsaved = True
            self.save()

    def forget_expired(self) -> None:
        """The room's time is over: its key and messages are deleted (PROTOCOL.md 9), as
        the chat deletes them, not kept until some later command opens the store."""
        if self._stored is None:
            return
        store, stored = self._stored
        store.forget(stored)
        self._unsaved = True
        self.save()

    def save(self) -> None:
        if self._stored is None or self._stopped or not self._unsaved:
            return
        try:
            self._stored[0].save()
        except (KeyStoreError, OSError) as exc:
            self._stopped = True
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(
                f"instantroom: the key store could not be written ({printable(why)}): a "
                "relay could show this room's latest messages again after a restart.",
                file=sys.stderr,
            )
        self._unsaved = False


def _warn_of_clock(client: RoomClient) -> None:
    """Say on standard error when this computer's clock is far from the relay's: what it
    sends, or what others send it, would be dropped unseen (PROTOCOL.md 7)."""
    from .client.connection import CLOCK_WARNING_MS

    if (warning := clock_warning(client.clock_offset_ms, CLOCK_WARNING_MS)) is not None:
        print(f"instantroom: warning: {warning}", file=sys.stderr)


async def _send(args: argparse.Namespace) -> int:
    from .client.connection import (
        JoinRefused,
        RelayRefused,
        RoomClient,
        RoomExpiredError,
        RoomGone,
    )

    target = _target(args)
    text = _message_text(args.text)
    room = target.keys
    sent = _StoredRoomUpdates(target.stored)
    message = None  # once handed to the client, which may have written its PUBLISH since
    name = rooms_cli.chosen_name(args, target.stored[0] if target.stored is not None else None)
    async with RoomClient(target.server, target.device, name) as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout  # for the join and the send together
        last_call = loop.call_at(deadline - SEND_TIME_TO_TAKE, client.stop_waiting, room.room_id)
        # A mistyped port is said soon, not --timeout later; a relay's restart, over in a
        # moment, is not said at all (a script's standard error often goes to a mail).
        outage = asyncio.create_task(
            _say_once_unreachable(client, f"Still trying for up to {args.timeout:g} s (--timeout).")
        )
        try:
            async with asyncio.timeout_at(deadline):
                joined = await client.join(room, target.expires_at_ms)
                sent.adopt_expiry(joined.expires_at_ms)
                _warn_of_clock(client)
                message, _ = client.post_text(room.room_id, text)
                taken = client.taken(room.room_id, message.message_id)
            # Not cancelled at the deadline: an ACK handled in the same pass still counts.
            await asyncio.wait([taken], timeout=max(0.0, deadline - loop.time()))
            if not taken.done():
                raise TimeoutError
            taken.result()
            sent.record(message.message_id, message.timestamp_ms)
            sent.save()
        except JoinRefused as exc:
            print(f"instantroom: the relay refused to join: {printable(str(exc))}", file=sys.stderr)
            if exc.code == ErrorCode.ROOM_EXPIRED:
                sent.forget_expired()
            return _refusal_status(exc.code)
        except RoomExpiredError:
            print("instantroom: the room has expired.", file=sys.stderr)
            sent.forget_expired()
            return EXIT_EXPIRED
        except (RelayRefused, RoomGone) as exc:
            print(f"instantroom: {printable(str(exc))}", file=sys.stderr)
            return EXIT_REFUSED
        except TimeoutError:
            # 4 only once the message may have gone: one sent before the connection broke
            # may have been taken, and a script that sends again must know it. Before
            # that, nothing was sent, reached or not.
            if not client.reached:
                if not _say_unreachable(client, f"Gave up after {args.timeout:g} s (--timeout)."):
                    # its first try was still under way
                    print(f"instantroom: the relay at {printable(client.url)} could not be "
                          f"reached within {args.timeout:g} s (--timeout).",
                          file=sys.stderr)  # fmt: skip
                return EXIT_UNREACHABLE
            if message is None:
                print(f"instantroom: the relay at {printable(client.url)} did not let this "
                      f"client into the room within {args.timeout:g} s (--timeout): nothing "
                      "was sent.", file=sys.stderr)  # fmt: skip
                return EXIT_UNREACHABLE
            if not client.session.went_out(message.message_id):
                # Held for members coming back after an outage, and the relay went away.
                print(f"instantroom: the relay at {printable(client.url)} could not take the "
                      f"message within {args.timeout:g} s (--timeout): nothing was sent.",
                      file=sys.stderr)  # fmt: skip
                return EXIT_UNREACHABLE
            print("instantroom: the relay did not take the message in time.", file=sys.stderr)
            return EXIT_TIMEOUT
        finally:
            last_call.cancel()
            outage.cancel()
    return 0


async def _say_once_unreachable(client: RoomClient, then: str) -> None:
    """Say, once, why the relay is out of reach, if it still is ``SEND_UNREACHABLE_SAID_AFTER``
    seconds on."""
    await asyncio.sleep(SEND_UNREACHABLE_SAID_AFTER)
    while not _say_unreachable(client, then):  # noqa: ASYNC110 - no event says a try failed
        await asyncio.sleep(OUTAGE_CHECK)


def _say_unreachable(client: RoomClient, then: str) -> bool:
    """Say on standard error why the relay is out of reach (``RoomClient.unreachable``:
    why its last try failed, in words, without credentials), and ``then`` what comes of
    it; False, saying nothing, while no try has failed."""
    if client.unreachable is None:
        return False
    print(f"instantroom: {client.unreachable} {then}", file=sys.stderr, flush=True)
    return True


def _message_text(given: str) -> str:
    """The text to send: ``-`` reads it from standard input, to its end (a message on the
    command line shows in ``ps`` and shell history), without the line break it ends on.
    Refused before anything is connected to when it is more than a message body can hold
    (``MAX_BODY_BYTES``): standard input is read no further than that shows."""
    from .protocol.envelope import MAX_BODY_BYTES

    where = "The message" if given != "-" else "Standard input"
    # Bytes that are not text in this locale reach Python as lone surrogates (or fail to
    # decode): refused here, sending nothing, and said without quoting the message.
    refusal = UsageError(f"{where} is not UTF-8 text: nothing was sent.")
    too_big = UsageError(f"A message body is at most {MAX_BODY_BYTES} bytes.")
    if given == "-":
        if sys.stdin is None:  # started with it closed (<&-)
            raise UsageError("Standard input is closed: nothing was sent.")
        # A character is a byte at least: a body that fits, and the line break it may end
        # on ("\r\n"), is MAX_BODY_BYTES + 2 characters at most. One more shows that it
        # does not fit, however much follows (`yes | instantroom send -` ends too).
        most = MAX_BODY_BYTES + 2
        try:
            text = sys.stdin.read(most + 1)
        except UnicodeDecodeError:
            raise refusal from None
        if len(text) > most:
            raise too_big
        text = text.removesuffix("\n").removesuffix("\r")
    else:
        text = given
    # As the chat sends no blank line: `send "$MSG"` with MSG unset is a script's mistake,
    # not a message (it went out as an empty one, and exited 0).
    if not text.strip():
        said = "standard input held no text" if given == "-" else "the message is blank"
        raise UsageError(f"Nothing to send: {said}.")
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        raise refusal from None
    if len(body) > MAX_BODY_BYTES:
        raise too_big
    return text


async def _listen(args: argparse.Namespace) -> int:
    from .client.connection import (
        JoinRefused,
        RelayRefused,
        RoomClient,
        RoomExpiredError,
        RoomGone,
    )
    from .protocol.session import (
        Joined,
        MessageReceived,
        MessageRejected,
        Refused,
        RoomExpired,
    )

    if sys.stdout is None:  # started with it closed (>&-): every message would be lost
        print("instantroom: standard output is closed: listen prints the messages there.",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    target = _target(args)
    room = target.keys
    printed = _StoredRoomUpdates(target.stored)
    # Stopped by a service manager or a closed terminal, it still writes what it printed.
    stopped_by = _stop_on_signals(signal.SIGTERM, signal.SIGHUP)
    # Whatever a member sent, the output stays one line per message in any encoding.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    # listen writes nothing: with a device key made for this run, no name in the room is
    # ours, and the session would flag every member of --name's (default "anonymous") as
    # one writing under ours. A stored room's device key is the member's own.
    name = rooms_cli.chosen_name(args, target.stored[0]) if target.stored is not None else ""
    dropped_ahead_at = -math.inf  # when a message dated ahead was last said dropped
    async with RoomClient(target.server, target.device, name) as client:
        outages = asyncio.create_task(
            _tell_outages(client, room.room_id, says_listening=not args.json)
        )
        try:
            joined = await client.join(
                room, target.expires_at_ms, printed.known(), floor_ms=printed.floor()
            )
            printed.adopt_expiry(joined.expires_at_ms)
            _warn_of_clock(client)
            if not args.json:
                # The stored room's label, never its id: stderr often ends up in a journal.
                label = target.stored[1].label if target.stored is not None else ""
                shown = f" {printable(label)!r}" if label else ""
                print(f"listening in room{shown}...", file=sys.stderr, flush=True)
            # Until the room is gone, or the client stops for good (next_event then raises).
            # What the relay says is shown with printable(): it could carry escapes.
            while True:
                match await client.next_event():
                    case MessageReceived() as received if received.room_id == room.room_id:
                        if _print_received(received, as_json=args.json):
                            message = received.message
                            printed.record(message.message_id, message.timestamp_ms)
                    case MessageRejected(room_id=room.room_id, ahead_ms=ahead_ms) if ahead_ms:
                        # A clock set wrong, the sender's or ours: said as the chat says it,
                        # at most every 10 minutes (a relay could send such by the thousand).
                        if time.monotonic() - dropped_ahead_at > DROPPED_AHEAD_SAID_EVERY:
                            dropped_ahead_at = time.monotonic()
                            warning = dropped_ahead_warning(ahead_ms)
                            print(f"instantroom: warning: {warning}", file=sys.stderr, flush=True)
                    case Joined(room_id=room.room_id, expires_at_ms=expires):  # joined again
                        printed.adopt_expiry(expires)
                    case RoomExpired(room_id=room.room_id):
                        print("instantroom: the room has expired.", file=sys.stderr)
                        printed.forget_expired()
                        return EXIT_EXPIRED
                    case Refused(room_id=room.room_id, code=code, reason=reason) if (
                        room.room_id not in client.session.rooms
                        and code != ErrorCode.ROOM_EXPIRED  # said by RoomExpired, next
                    ):
                        refusal = f"the relay refused the room: {printable(reason)}"
                        print(f"instantroom: {refusal}", file=sys.stderr)
                        return _refusal_status(code)
        except JoinRefused as exc:
            print(f"instantroom: the relay refused to join: {printable(str(exc))}", file=sys.stderr)
            if exc.code == ErrorCode.ROOM_EXPIRED:
                printed.forget_expired()
            return _refusal_status(exc.code)
        except RoomExpiredError:
            print("instantroom: the room has expired.", file=sys.stderr)
            printed.forget_expired()
            return EXIT_EXPIRED
        except (RelayRefused, RoomGone) as exc:
            print(f"instantroom: {printable(str(exc))}", file=sys.stderr)
            return EXIT_REFUSED
        except asyncio.CancelledError:
            if stopped_by:
                return 128 + stopped_by[0]
            raise
        finally:
            outages.cancel()
            printed.save()


async def _tell_outages(client: RoomClient, room_id: bytes, *, says_listening: bool) -> None:
    """Say on standard error, once an outage, that the relay is out of reach (and why),
    and once it answers again that it does: to a listen whose relay is out of reach (a
    mistyped port, a restart), the room does not only look quiet. A connection that
    drops and comes back at its first try is no outage. So too, once, a relay connected
    to that has not let this client into room ``room_id`` ``NOT_LET_IN_SAID_AFTER``
    seconds on (it answers, and never sends JOINED), and when it does let it in: for the
    first time, unless ``says_listening`` (the caller's "listening in room..." says it).
    Runs until cancelled."""
    loop = asyncio.get_running_loop()
    out_of_reach = False
    connected_at: float | None = None  # when this connection was first seen up
    kept_out = False  # said that the relay has not let us in
    been_in = False
    while True:
        await asyncio.sleep(OUTAGE_CHECK)
        if not out_of_reach:
            out_of_reach = _say_unreachable(client, "Still trying.")
        elif client.connected.is_set():
            out_of_reach = False
            print(f"instantroom: reconnected to the relay at {printable(client.url)}.",
                  file=sys.stderr, flush=True)  # fmt: skip
        state = client.session.rooms.get(room_id)
        if state is not None and state.joined:
            if kept_out and (been_in or not says_listening):
                print(f"instantroom: the relay at {printable(client.url)} let this client "
                      "into the room.", file=sys.stderr, flush=True)  # fmt: skip
            kept_out = False
            been_in = True
        if not client.connected.is_set():
            connected_at = None
        elif connected_at is None:
            connected_at = loop.time()
        elif (
            not kept_out
            and state is not None
            and not state.joined
            and loop.time() - connected_at >= NOT_LET_IN_SAID_AFTER
        ):
            kept_out = True
            print(f"instantroom: the relay at {printable(client.url)} has not let this "
                  f"client into the room yet, {NOT_LET_IN_SAID_AFTER:g} s after it "
                  "connected. Still waiting.", file=sys.stderr, flush=True)  # fmt: skip


def _stop_on_signals(*signals: signal.Signals) -> list[int]:
    """Cancel the running task on any of ``signals`` (their default would end the process
    on the spot, skipping every ``finally``), except one the process was told to ignore
    (``nohup`` ignores SIGHUP); the list says which came."""
    task = asyncio.current_task()
    assert task is not None
    came: list[int] = []

    def stop(signum: int) -> None:
        came.append(signum)
        task.cancel()

    for signum in signals:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            asyncio.get_running_loop().add_signal_handler(signum, stop, signum)
    return came


def _print_received(received: MessageReceived, *, as_json: bool) -> bool:
    """Print a text message (and say so); other kinds are not printed."""
    from .protocol.envelope import Kind
    from .protocol.names import mixed_scripts, spoken_list

    message = received.message
    if message.kind != Kind.TEXT:
        return False
    stamp = datetime.fromtimestamp(message.timestamp_ms / 1000, tz=UTC)
    if as_json:
        line = json.dumps(
            {
                "time": stamp.isoformat(timespec="milliseconds"),
                "timestamp_ms": message.timestamp_ms,
                "name": message.sender_name,
                "fingerprint": received.fingerprint,
                "key_changed": received.key_changed,
                "mixed_scripts": mixed_scripts(message.sender_name),
                "message_id": message.message_id.hex(),
                "text": message.text,
            },
            # ASCII: U+2028 and the like split lines for some readers, and an emoji a
            # stdout in another encoding cannot write must not stop the listening.
            ensure_ascii=True,
        )
    else:
        # A line break or escape sequence in a name or text must not fake another line.
        warning = " [NEW KEY for this name]" if received.key_changed else ""
        if scripts := mixed_scripts(message.sender_name):
            warning += f" [name mixes {spoken_list(scripts)} letters]"
        text = printable(message.text, newlines=True).replace("\n", "\n    ")
        line = (
            f"{stamp.astimezone():%H:%M:%S} {printable(message.sender_name)} "
            f"({received.fingerprint}){warning}: {text}"
        )
    print(line, flush=True)
    return True


def _run_async(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except KeyboardInterrupt:
            return 130

    return run


def _seconds(text: str) -> float:
    """A time limit: a number of seconds, more than zero (nan and inf are none)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above zero")
    return seconds


def _send_timeout(text: str) -> float:
    """send's --timeout: at most the age past which the room's members refuse a message
    as too old, and the client gives it up (PROTOCOL.md 10.6)."""
    seconds = _seconds(text)
    if seconds > SEND_TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r} is more than {SEND_TIMEOUT_MAX:g} seconds: the room's members refuse "
            "a message that old"
        )
    return seconds


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        help="the relay's URL, http(s):// or ws(s):// [env INSTANTROOM_SERVER; default: the "
        "invite link's or the stored room's relay, else http://127.0.0.1:8080]",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--key",
        help="the room key or an invite link, with a one-off device key each run; - reads "
        "it from stdin [env INSTANTROOM_KEY]",
    )
    which.add_argument(
        "--room",
        help="a room of your key store (its label or room id start), with your device key: "
        "a bot posting under one name uses this, or members see its key as new each time",
    )
    rooms_cli.add_store_option(parser)
    # With --key there is no store to keep it in, and nothing given last.
    rooms_cli.add_name_option(parser, kept=" with --room")


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NOT_SHOWN = "(not shown: it may hold a room key)"


class _Parser(argparse.ArgumentParser):
    """Says what is wrong with the command line without quoting a room key or a message
    given in the wrong place (`listen KEY`): standard error often goes to a log."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            message = "unrecognized arguments (not shown: they may hold a room key or a message)"
        else:
            message = _QUOTED.sub(
                lambda quoted: _NOT_SHOWN if may_hold_a_key(quoted[0]) else quoted[0], message
            )
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="instantroom",
        description="Private group chat: a room key made here, handed over by hand.",
    )
    parser.add_argument("--version", action="version", version=f"instantroom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    key = commands.add_parser("key", help="make, check and show room keys")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key_commands.add_parser("new", help="print a fresh room key").set_defaults(run=_key_new)
    check = key_commands.add_parser("check", help="exit 0 if KEY is well-formed, else say why")
    check.add_argument("key", metavar="KEY", nargs="+", help="the key; spaces allowed")
    check.set_defaults(run=_key_check)
    show = key_commands.add_parser("show", help="show KEY grouped, spelled out, and its room id")
    show.add_argument("key", metavar="KEY", nargs="+", help="the key; spaces allowed")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=_key_show)
    serve = commands.add_parser(
        "serve",
        help="run a relay: the WebSocket endpoint, /healthz, /metrics and the web client",
        description="Run an InstantRoom relay. It carries ciphertext between the members of "
        "each room, keeps nothing, and cannot read a message. Every option can also be set "
        "by the environment variable named in its help.",
    )
    add_relay_options(serve)
    serve.set_defaults(run=_serve)

    send = commands.add_parser(
        "send",
        help="send one message; exit 0 once the relay took it",
        epilog=_SEND_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_client_options(send)
    send.add_argument(
        "--timeout",
        type=_send_timeout,
        default=30.0,
        help="seconds to wait for the relay, to join and send in all (default 30, at "
        f"most {SEND_TIMEOUT_MAX:g})",
    )
    send.add_argument(
        "text",
        metavar="TEXT",
        help="the message; - reads it from stdin, to its end (after the key's line, with "
        "--key -): other users of this machine can see a command line",
    )
    send.set_defaults(run=_run_async(_send))

    rooms_cli.add_commands(commands)

    listen = commands.add_parser(
        "listen",
        help="print each message of a room as it arrives",
        epilog=_LISTEN_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_client_options(listen)
    listen.add_argument("--json", action="store_true", help="one JSON object per line")
    listen.set_defaults(run=_run_async(_listen))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except (ProtocolError, KeyStoreError) as exc:
        print(f"instantroom: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # What read the output went away (`listen | head -1`): stop quietly, as a writer
        # killed by SIGPIPE would, and let nothing more try the pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # a file or folder that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"instantroom: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return 2
    except EOFError:
        print("instantroom: the input ended before the password was given.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instantroom: stopped; nothing more was changed.", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())

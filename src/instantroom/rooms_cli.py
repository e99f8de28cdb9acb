"""The commands that use the key store: new, join, rooms, qr, forget, passwd, chat.

The password comes from INSTANTROOM_PASSWORD when set (scripts, tests), else from a
prompt. The store is ``--keystore PATH``, INSTANTROOM_KEYSTORE, or a file in the
platform's user data folder.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import getpass
import os
import re
import secrets
import sys
import time
import unicodedata
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import platformdirs
import segno

from instantroom.client.invite import format_invite, parse_invite
from instantroom.client.keystore import KeyStore, KeyStoreError, StoredRoom, StoreExists
from instantroom.display import clock_warning, expiry_text, printable, shown_server
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.envelope import MAX_NAME_BYTES
from instantroom.protocol.errors import ChecksumMismatch, MiniKeyError, OneCase, UsageError
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.protocol.minikey import (
    BASE58_ALPHABET,
    format_minikey,
    make_minikey,
    parse_minikey,
    spell_minikey,
)
from instantroom.protocol.session import Joined

DEFAULT_SERVER = "http://127.0.0.1:8080"
LIFETIMES = {"1h": 3600, "1d": 86400, "1w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
T = TypeVar("T")


def parse_duration(text: str) -> int:
    """Seconds in ``1h``, ``1d``, ``1w`` or any sum like ``2h30m``."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a lifetime: say 1h, 1d, 1w, or for example 2h30m or 3d."
        )
    seconds = sum(int(number) * _UNIT[unit] for number, unit in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("A room lives for some time: more than zero.")
    return seconds


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def keystore_path(option: str | None) -> Path:
    if option:
        return Path(option).expanduser()
    if os.environ.get("INSTANTROOM_KEYSTORE"):
        return Path(os.environ["INSTANTROOM_KEYSTORE"]).expanduser()
    return platformdirs.user_data_path("instantroom") / "keystore.json"


def key_text(given: str | None, options: str = "KEY") -> str:
    """The key as given: ``-`` reads it from standard input, and INSTANTROOM_KEY stands
    in for a missing one (a key on the command line shows in ``ps`` and shell history)."""
    text = given if given is not None else os.environ.get("INSTANTROOM_KEY")
    if text is None:
        raise UsageError(f"Say which room: {options}, or INSTANTROOM_KEY.")
    if not text.strip():
        # Set to nothing (a variable that a script forgot to fill): not a key of 0 characters.
        where = "INSTANTROOM_KEY is" if given is None else "The key given is"
        raise UsageError(f"{where} empty: say which room ({options}).")
    if text == "-":
        if sys.stdin is None:  # started with it closed (<&-)
            raise UsageError("Standard input is closed: nothing to read the key from.")
        try:
            # Its first line: `send --key - -` reads the message from what follows.
            line = sys.stdin.readline(_MOST_READ).strip()
        except UnicodeDecodeError:
            raise UsageError("Standard input is not UTF-8 text: no key was read from it.") from None
        if not line:
            raise UsageError("No key was read: the first line of standard input is empty.")
        return line
    return text


_MOST_READ = 4096  # characters of a key or link from standard input: no end of /dev/zero


def invite_or_key(text: str) -> tuple[str | None, str]:
    """``parse_invite``, which also says so of a link that lost its ``#KEY`` (a chat app
    that cuts it off, an address bar the web client took it out of): read as a key, it
    was "a room key has 30 characters; this one has 20", a puzzle."""
    if "#" not in text and "/" in text:  # no key holds a slash
        raise UsageError(
            "This link holds no room key: an invite link ends with # and the key, and that "
            "part was cut off on the way. Ask for the whole link, or the key itself."
        )
    return with_case_hint(parse_invite, text)


_Parsed = TypeVar("_Parsed")


def with_case_hint(parse: Callable[[str], _Parsed], text: str) -> _Parsed:
    """``parse(text)``, its MiniKeyError saying also, for a key typed all in one case, that
    keys mix capital and small letters (``key_case_hint``)."""
    try:
        return parse(text)
    except MiniKeyError as exc:
        hint = key_case_hint(text)
        if hint is None:
            raise
        raise type(exc)(f"{exc} {hint}") from None


def key_case_hint(text: str) -> str | None:
    """What to add when the key in ``text`` (a bare key or an invite link) is all in small
    or all in capital letters and would be a key if only its case were right: keys mix
    both, and parse_minikey's own message (a character never used, "starts with a capital
    S") would not say so. None otherwise. Worded as the web client's ``keyCaseHint``."""
    typed = text.partition("#")[2] if "#" in text else text
    letters = [c for c in [c for c in typed if c.isascii() and c.isalnum()][1:] if c.isalpha()]
    lower = all(c == c.lower() for c in letters)
    upper = all(c == c.upper() for c in letters)
    if len(letters) < 2 or not (lower or upper):
        return None
    # The same key with each letter in a case the alphabet has, and a capital S first.
    recased, first = [], True
    for char in typed:
        if char.isascii() and char.isalnum():
            if first and char.upper() == "S":
                char = "S"
            elif char not in BASE58_ALPHABET:
                char = char.upper() if char == char.lower() else char.lower()
            first = False
        recased.append(char)
    try:
        parse_minikey("".join(recased))
    except (ChecksumMismatch, OneCase):
        pass  # wrong in its case only, as far as can be told
    except MiniKeyError:
        return None
    which = "small" if lower else "capital"
    after_s = " after the S" if lower and re.match(r"[^A-Za-z0-9]*S", typed) else ""
    return (
        "Room keys are case-sensitive, with capital and small letters mixed, and the letters "
        f"of this one are all {which}{after_s}: type each letter in its case, as the key "
        "shows it or as it is spelled out (\u201ccapital S\u201d, \u201csmall c\u201d)."
    )


def _password(prompt: str, confirm: bool = False) -> str:
    given = os.environ.get("INSTANTROOM_PASSWORD")
    if given == "" and not confirm:
        # No key store opens with an empty password (none can be made with one): an empty
        # variable is a script's mistake, not a wrong password to look for.
        raise UsageError(
            "INSTANTROOM_PASSWORD is empty: set it to the key store's password, or unset it "
            "to be asked for it. Nothing was changed."
        )
    if given is not None:
        return given
    password = getpass.getpass(prompt)
    if confirm and getpass.getpass("Once more: ") != password:
        print("instantroom: the two passwords differ; nothing was changed.", file=sys.stderr)
        raise SystemExit(2)  # a mistyped input, as a mistyped key
    return password


def open_store(args: argparse.Namespace, create: bool = False) -> KeyStore:
    """Open the store, creating it (with a new password) if ``create`` and it is missing.

    Rooms whose lifetime is over are deleted as the store opens.
    """
    path = keystore_path(args.keystore)
    if not path.exists() and create:
        password = _password("New password for your InstantRoom key store: ", confirm=True)
        try:
            store = KeyStore.create(path, password)
        except StoreExists:  # another program made it meanwhile: never write over it
            pass
        else:
            print(f"Made a key store at {path}, locked by your password.", file=sys.stderr)
            return store
    if not path.exists():  # said before a password is asked for one that is not there
        raise KeyStoreError(f"There is no key store at {path.resolve()}.")
    store = KeyStore.open(path, _password("Password for your InstantRoom key store: "))
    purge_expired(store)
    return store


def store_if_any(args: argparse.Namespace) -> KeyStore | None:
    """The store, opened, if there is one: a command the relay may yet refuse makes none
    until it is not refused (else a first refused `join` left an empty store behind)."""
    return open_store(args) if keystore_path(args.keystore).exists() else None


def purge_expired(store: KeyStore) -> list[StoredRoom]:
    """Delete (and save, and say so) the rooms whose lifetime is over; return them.

    A room's key goes for good, and by a clock days fast every room would go at once: so
    when some look over by this clock, their relays are asked theirs (``CLOCK_ASK_TIMEOUT``
    in all), and the rooms of a relay that says this clock is fast by ``CLOCK_WARNING_MS``
    or more are judged by this clock read back by as much, as ``RoomClient.expiry_now``
    does. A relay's word never deletes a room early; one out of reach leaves this clock to
    judge. Nothing looks over: no relay is asked.
    """
    now = now_ms()
    over = [room for room in store.rooms if room.expired(now)]
    if not over:
        return []
    from instantroom.client.connection import (
        CLOCK_WARNING_MS,
        clock_read_back_ms,
        relay_clock_offsets,
    )

    offsets = _run_apart(relay_clock_offsets(room.server for room in over))
    read_back = {server: clock_read_back_ms(offset) for server, offset in offsets.items()}
    expired = [room for room in over if room.expired(now - read_back.get(room.server, 0))]
    if expired:
        for room in expired:
            store.forget(room)
        try:
            store.save()
            gone = "its key and messages are deleted."
        except PermissionError as exc:  # made read-only by its owner: as it is, then
            gone = f"it is left out, but stays in the key store ({exc.strerror or exc})."
        for room in expired:
            print(f"Room {printable(room.label)!r} has expired: {gone}", file=sys.stderr)
    kept_by = {room.server for room in over if all(room is not e for e in expired)}
    for server in sorted(kept_by):
        # Never None: that relay says this clock is fast by CLOCK_WARNING_MS or more.
        warning = clock_warning(read_back[server], CLOCK_WARNING_MS)
        print(f"instantroom: warning: {warning} (So says the relay at {shown_server(server)}; "
              "its rooms are judged by the relay's time.)", file=sys.stderr)  # fmt: skip
    return expired


def _run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from code that is not async: in a loop of its own, on
    another thread if this one runs a loop already (``send`` and ``listen`` open the store
    from theirs)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


def in_a_terminal() -> bool:
    """Whether the chat screen can run: it reads keys from standard input and draws on
    standard error (as Textual does), so both must be a terminal. Without one, Textual
    ran on at full CPU, reading nothing and drawing for no one."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _expiry(room: StoredRoom) -> str:
    """When ``room`` expires, in words, by its relay's reading of this clock if it gave one
    (``relay_expiry_now``): a room its relay kept is not shown as over."""
    from instantroom.client.connection import relay_expiry_now

    return expiry_text(room.expires_at_ms, relay_expiry_now(room.server))


def print_room_card(room: StoredRoom) -> None:
    invite = format_invite(room.server, room.key)
    # A label or relay address stored before either was checked could hold escapes.
    print(f"Room {printable(room.label)!r} on {shown_server(room.server)}, "
          f"{_expiry(room)}")  # fmt: skip
    print()
    print(f"  Key:     {format_minikey(room.key)}")
    for number, line in enumerate(spell_minikey(room.key), start=1):
        print(f"    {number}. {line}")
    print(f"  Invite:  {printable(invite)}")
    print()
    segno.make(invite, error="m").terminal(compact=True, border=2)
    print("Share the key by voice or the QR code in person; anyone who has it is in.")


LOOK_TIMEOUT = 5.0
# How often a look checks whether the relay's first try failed (seconds).
UNREACHABLE_CHECK = 0.05


@dataclass(frozen=True)
class Refusal:
    """The relay would not let us into the room (``code``, an ``ErrorCode``, when it
    refused the room itself), or refused us for good: ``reason`` says why, printable."""

    reason: str
    code: int | None = None

    @property
    def for_now(self) -> bool:
        """The room or the relay is full: a place comes free when someone leaves."""
        return self.code in (ErrorCode.ROOM_FULL, ErrorCode.RELAY_FULL)


async def look_in(room: StoredRoom) -> Joined | Refusal | None:
    """Join the room briefly, sending nothing: the relay's JOINED tells the room's
    expiry and members online, and a first join fixes the lifetime the room was made
    with. A ``Refusal`` if the relay refuses; None if it is out of reach (or the room's
    relay address is no relay's)."""
    from instantroom.client.connection import JoinRefused, RelayRefused, RoomClient, RoomGone

    try:
        client = RoomClient(room.server, _throwaway_device(), "")
    except UsageError:
        return None
    client.start()
    joining = asyncio.ensure_future(
        client.join(RoomKeys.from_minikey(room.key), room.expires_at_ms)
    )
    try:
        async with asyncio.timeout(LOOK_TIMEOUT):
            # A relay that cannot be reached (nothing listens, no such host) is out of
            # reach at its first try: said at once, not after the client's retries.
            while not joining.done() and client.unreachable is None:
                await asyncio.wait({joining}, timeout=UNREACHABLE_CHECK)
            if not joining.done():
                return None
            return joining.result()
    except JoinRefused as exc:
        return Refusal(printable(str(exc)), exc.code)
    except RelayRefused as exc:
        return Refusal(printable(str(exc)))
    except (TimeoutError, OSError, RoomGone):
        return None
    finally:
        joining.cancel()
        await client.close()


def _refused(refusal: Refusal, what: str) -> int:
    """Say that the relay refused, and why; the exit status for it (2, as for other
    commands that could not be done)."""
    print(f"instantroom: the relay refused {what}: {refusal.reason}", file=sys.stderr)
    return 2


def check_server(server: str) -> None:
    """Raise UsageError for what cannot be a relay's address, before it is stored."""
    from instantroom.client.connection import websocket_url

    websocket_url(server)


def _throwaway_device() -> DeviceKey:
    """A device key for a look at the relay that sends no message."""
    return DeviceKey.from_private_bytes(secrets.token_bytes(32))


def refuse_taken_label(store: KeyStore, label: str | None, key: str = "") -> None:
    """UsageError if another stored room has ``label``: two rooms under one label could be
    told apart only by their room ids."""
    if label and any(room.label == label and room.key != key for room in store.rooms):
        raise UsageError(
            f"a stored room is labelled {printable(label)!r} already; give this one another "
            "--label."
        )


# commands


def cmd_new(args: argparse.Namespace) -> int:
    key = make_minikey(secrets.randbelow)
    check_server(args.server)
    format_invite(args.server, key)  # refuses an address no invite link can be made of
    check_label(args.label)
    store = store_if_any(args)
    if store is not None:
        refuse_taken_label(store, args.label)  # before the relay is asked
    room = StoredRoom(
        key=key,
        label=args.label or f"room-{RoomKeys.from_minikey(key).room_id.hex()[:6]}",
        server=args.server,
        expires_at_ms=now_ms() + args.expires * 1000,
        keep_history=args.history,
    )
    # The first join fixes the room's lifetime on the relay; later joins cannot stretch it.
    looked = asyncio.run(look_in(room))
    if isinstance(looked, Refusal):
        # Made a moment ago and shared with no one: a room the relay will not take (a
        # lifetime beyond its maximum, a URL that is no relay) is not kept.
        status = _refused(looked, "the new room, so it was not stored")
        if looked.code == ErrorCode.EXPIRY_TOO_FAR:
            print("instantroom: give it a shorter lifetime (--expires).", file=sys.stderr)
        return status
    if store is None:
        store = open_store(args, create=True)
    store.add_room(room)
    # Looked at again as it is written: another program may have stored one meanwhile.
    store.save(check=lambda written: refuse_taken_label(written, args.label, key))
    if looked is None:
        print(f"(The relay {shown_server(room.server)} is out of reach now; the room's lifetime "
              "reaches it with the first member who joins.)", file=sys.stderr)  # fmt: skip
    print_room_card(room)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    server, key = invite_or_key(key_text(args.invite))
    if server or args.server:
        check_server(server or args.server)  # before a store is made for it
    if args.name is not None:
        check_name(args.name)  # likewise
    check_label(args.label)
    store = store_if_any(args)
    if store is not None:
        refuse_taken_label(store, args.label, key)  # before the relay is asked
    rooms = store.rooms if store is not None else []
    stored = next((room for room in rooms if room.key == key), None)
    if stored is not None:
        # A room stored already keeps its label and relay unless told otherwise.
        label, server = args.label or "", server or args.server or ""
    else:
        label = args.label or f"room-{RoomKeys.from_minikey(key).room_id.hex()[:6]}"
        server = server or args.server or default_server()
    room = StoredRoom(
        key=key, label=label, server=server, expires_at_ms=0, keep_history=args.history
    )
    # The room as it would be stored, looked at before anything is.
    looking = room if stored is None else replace(
        stored, label=label or stored.label, server=server or stored.server
    )  # fmt: skip
    check_server(looking.server)
    looked = asyncio.run(look_in(looking))
    if isinstance(looked, Refusal) and not looked.for_now:
        kept = "it was not stored" if stored is None else "the stored room is left as it was"
        return _refused(looked, f"to let us into the room, so {kept}")
    if store is None:
        store = open_store(args, create=True)
    room = store.add_room(room)
    if isinstance(looked, Joined):
        room.expires_at_ms = looked.expires_at_ms
    if args.name is not None:
        store.name = args.name  # kept for the next chat, send or listen
    # Looked at again as it is written: another program may have stored one meanwhile.
    store.save(check=lambda written: refuse_taken_label(written, args.label, key))
    if isinstance(looked, Refusal):
        # Full for now: the key is the member's all the same, and the chat gets in (it
        # keeps trying) once a place comes free.
        print(f"Stored room {printable(room.label)!r} on {shown_server(room.server)}, but the "
              f"relay has no place for us now: {looked.reason}")  # fmt: skip
        print("`instantroom chat` gets in once someone leaves.")
    elif looked is None:
        # Not "Joined": nothing answered. The key is stored all the same, as for `new`.
        print(f"Stored room {printable(room.label)!r} on {shown_server(room.server)}, but the "
              "relay is out of reach now: the chat gets in once it answers.")  # fmt: skip
    else:
        print(f"Joined room {printable(room.label)!r} on {shown_server(room.server)}, "
              f"{_expiry(room)}.")  # fmt: skip
    if args.chat and sys.stdout.isatty() and in_a_terminal():
        # By its id: another stored room may have the same label.
        return run_chat(store, chosen_name(args, store), room.room_id)
    return 0


def cmd_rooms(args: argparse.Namespace) -> int:
    store = open_store(args)
    if not store.rooms:
        print("No rooms. Make one with `instantroom new`, or join one with `instantroom join`.")
        return 0

    def line(room: StoredRoom) -> str:
        return (f"{printable(room.label):20} {room.room_id.hex()[:8]}  "
                f"{shown_server(room.server):28} {_expiry(room):34}")  # fmt: skip

    if args.offline:
        # No "online: ?" here: that says the relay is out of reach, and none was asked.
        for room in store.rooms:
            print(line(room).rstrip())
        return 0

    async def looks() -> list[Joined | Refusal | None]:
        return list(await asyncio.gather(*(look_in(room) for room in store.rooms)))

    for room, looked in zip(store.rooms, asyncio.run(looks()), strict=True):
        if looked is None:
            shown = "?"
        elif isinstance(looked, Refusal):
            shown = "full" if looked.for_now else "refused"
        else:  # the look itself is one of the members counted
            shown = str(max(0, looked.members - 1))
        print(f"{line(room)} online: {shown}")
    return 0


def cmd_qr(args: argparse.Namespace) -> int:
    store = open_store(args)
    room = store.find(args.room)
    code = segno.make(format_invite(room.server, room.key), error="m")
    if args.png or args.svg:
        _check_image_target(args.png or args.svg)
        # Owner-only from its first byte: the code is the room's key.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(args.png or args.svg, flags, 0o600)
        os.fchmod(descriptor, 0o600)  # a file that was there keeps its mode otherwise
        with os.fdopen(descriptor, "wb") as out:
            code.save(out, kind="png" if args.png else "svg", scale=10, border=4)
    else:
        code.terminal(compact=True, border=2)
    return 0


def _is_an_image(start: bytes) -> bool:
    """Whether a file beginning with ``start`` is a PNG or an SVG image (an XML file that is
    no SVG, a settings file or a password manager's export, is not)."""
    if start.startswith(b"\x89PNG\r\n\x1a\n"):
        return True
    return start.lstrip().startswith((b"<?xml", b"<svg")) and b"<svg" in start


def _check_image_target(path: str) -> None:
    """Refuse to write over a file that is there and is no image: the key store itself, or
    a document named by mistake, would be replaced for good."""
    try:
        with open(path, "rb") as existing:
            start = existing.read(4096)
    except OSError:
        return  # not there (or not readable: os.open says why)
    if start and not _is_an_image(start):
        raise UsageError(
            f"{printable(path)} is there already and is no image: it was left as it is. "
            "Name another file for the QR code."
        )


def cmd_forget(args: argparse.Namespace) -> int:
    store = open_store(args)
    room = store.find(args.room)
    store.forget(room)
    store.save()
    print(f"Forgot room {printable(room.label)!r}: its key and messages are deleted from "
          "this device.")  # fmt: skip
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    store = open_store(args)
    new = os.environ.get("INSTANTROOM_NEW_PASSWORD")
    if new is None:
        new = getpass.getpass("New password: ")
        if getpass.getpass("Once more: ") != new:
            print("instantroom: the two passwords differ; nothing was changed.", file=sys.stderr)
            return 2
    store.change_password(new)
    print("The key store now opens with the new password.")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    if not in_a_terminal():  # said before a password is asked for
        print("instantroom: chat is a full-screen program: it needs a terminal for its "
              "input and screen. Scripts use send and listen.", file=sys.stderr)  # fmt: skip
        return 2
    store = open_store(args)
    return run_chat(store, chosen_name(args, store), args.room)


def run_chat(store: KeyStore, name: str, room: str | bytes | None) -> int:
    """Run the chat screen (``room``, a label, room id start, or room id as bytes, shown
    first); 2 if it could not save what changed in it, else the app's own exit status
    (1 after a crash)."""
    from instantroom.tui.app import ChatApp  # Textual loads only for the chat screen

    app = ChatApp(store, name, room)
    app.run()
    if app.unsaved is not None:
        print(f"instantroom: {app.unsaved} The last changes in the chat are not saved.",
              file=sys.stderr)  # fmt: skip
        return 2
    return app.return_code or 0


DEFAULT_NAME = "anonymous"


def add_name_option(parser: argparse.ArgumentParser, kept: str = "") -> None:
    """``kept``: when the name is kept in the key store, if not always."""
    parser.add_argument(
        "--name",
        help=f"your name in the rooms, kept in the key store for the next time{kept} [env "
        "INSTANTROOM_NAME; default: the name given last, else anonymous]",
    )


MAX_LABEL_CHARACTERS = 60  # as the web client's


def check_label(label: str | None) -> None:
    """Refuse a ``--label`` that could not be stored, shown or typed back (``forget``, ``qr``
    take it): one that is not UTF-8, holds control characters, or is over long."""
    if label is None:
        return
    if any("\ud800" <= char <= "\udfff" for char in label):
        raise UsageError("A label is UTF-8: this one is not (is the terminal set to UTF-8?).")
    if any(unicodedata.category(char) == "Cc" for char in label):
        raise UsageError("A label holds no control characters (line breaks, tabs, escapes).")
    if len(label) > MAX_LABEL_CHARACTERS:
        raise UsageError(f"A label is at most {MAX_LABEL_CHARACTERS} characters.")


def check_name(name: str) -> str:
    """``name``, if it can be one: 1 to MAX_NAME_BYTES bytes of UTF-8, not blank."""
    # A name given by a terminal (or environment) that is not UTF-8 holds surrogates:
    # said, rather than a traceback from encoding it.
    if any("\ud800" <= char <= "\udfff" for char in name):
        raise UsageError("A name is UTF-8: this one is not (is the terminal set to UTF-8?).")
    if not name.strip() or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UsageError(f"A name is 1 to {MAX_NAME_BYTES} bytes of UTF-8.")
    return name


def chosen_name(args: argparse.Namespace, store: KeyStore | None) -> str:
    """The name to go by: ``--name``, else INSTANTROOM_NAME, else the one ``store`` kept,
    else DEFAULT_NAME. A ``--name`` given is kept in ``store`` (saved if it changed), so
    that the next command goes by it too."""
    if args.name is not None:
        name = check_name(args.name)
        if store is not None and store.name != name:
            store.name = name
            try:
                store.save()
            except (KeyStoreError, OSError) as exc:  # it goes by it all the same
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                print(f"instantroom: the name could not be kept in the key store "
                      f"({printable(why)}).", file=sys.stderr)  # fmt: skip
        return name
    if name := os.environ.get("INSTANTROOM_NAME", ""):
        return check_name(name)
    return (store.name if store is not None else "") or DEFAULT_NAME


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keystore",
        metavar="PATH",
        help="the key store file [env INSTANTROOM_KEYSTORE; default: your user data folder]",
    )


def default_server() -> str:
    # Set but empty (a compose file or a script may list it with no value) counts as
    # unset, as the relay's own variables do: "" is no relay's address.
    return os.environ.get("INSTANTROOM_SERVER") or DEFAULT_SERVER


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:

    new = commands.add_parser("new", help="make a room: its key, invite link and QR code")
    new.add_argument("--label", help="a name for the room, for you")
    new.add_argument(
        "--expires",
        type=parse_duration,
        default=LIFETIMES["1d"],
        metavar="1h|1d|1w|DURATION",
        help="the room's lifetime (default 1d)",
    )
    new.add_argument(
        "--server", default=default_server(), help="the relay's URL [env INSTANTROOM_SERVER]"
    )
    new.add_argument("--history", action="store_true", help="keep this room's messages here")
    new.set_defaults(run=cmd_new)

    join = commands.add_parser("join", help="store a room from its key or invite link")
    join.add_argument(
        "invite",
        metavar="KEY|INVITE-LINK",
        nargs="?",
        help="- reads it from stdin [env INSTANTROOM_KEY]",
    )
    join.add_argument("--label", help="a name for the room, for you")
    join.add_argument(
        "--server", help="the relay, for a bare key [env INSTANTROOM_SERVER, for a new room]"
    )
    join.add_argument("--history", action="store_true", help="keep this room's messages here")
    join.add_argument(
        "--no-chat",
        dest="chat",
        action="store_false",
        help="only store the room (in a terminal, join opens the chat screen)",
    )
    add_name_option(join)
    join.set_defaults(run=cmd_join)

    rooms = commands.add_parser("rooms", help="list your rooms, with members online")
    rooms.add_argument(
        "--offline",
        action="store_true",
        help="do not ask the relays who is online (a room that looks expired by this "
        "computer's clock still has its relay asked the time)",
    )
    rooms.set_defaults(run=cmd_rooms)

    qr = commands.add_parser("qr", help="show a room's invite QR code, or save it")
    qr.add_argument("room", metavar="ROOM", help="a label, or the start of a room id")
    where = qr.add_mutually_exclusive_group()
    where.add_argument("--png", metavar="FILE", help="save as PNG")
    where.add_argument("--svg", metavar="FILE", help="save as SVG")
    qr.set_defaults(run=cmd_qr)

    forget = commands.add_parser("forget", help="delete a room's key and messages here")
    forget.add_argument("room", metavar="ROOM", help="a label, or the start of a room id")
    forget.set_defaults(run=cmd_forget)

    passwd = commands.add_parser("passwd", help="change the key store's password")
    passwd.set_defaults(run=cmd_passwd)

    chat = commands.add_parser("chat", help="the full-screen chat over your rooms")
    chat.add_argument("room", metavar="ROOM", nargs="?", help="the room to show first")
    add_name_option(chat)
    chat.set_defaults(run=cmd_chat)

    for parser in (new, join, rooms, qr, forget, passwd, chat):
        add_store_option(parser)

"""The key store: one file, locked by a password, holding a person's rooms.

    {"format": "instantroom-keystore", "version": 1,
     "kdf": {"name": "argon2id", "salt": b64, "iterations": 3, "lanes": 4, "memory_kib": 65536},
     "nonce": b64, "ciphertext": b64}

The ciphertext is AES-256-GCM under Argon2id(password, salt, params) of the contents as
JSON (this install's device key, the name last given with ``--name``, the rooms with
their keys, labels, servers, expiry and
the history a person chose to keep, the ids and times of the messages received, sent or
deleted within the last hour, and our own messages the relay has not taken yet, as sealed
envelopes), padded with spaces to a size bucket (``_padded_size``), with the header
above, minus nonce and ciphertext, as associated data: the parameters cannot be lowered
by editing the file. Parameters are stored, so new stores can use stronger ones and old
stores still open.

Writes are atomic: a new file next to the old one, flushed to disk, then renamed over it;
a crash leaves the old store or the new one, never half of one. The file is created
owner-only (0600). A wrong password raises ``WrongPassword`` and touches nothing; a file
that is not a store raises ``DamagedStore`` and is never replaced or reset.

Several programs may hold the store open at once (a chat screen for hours, a ``join`` in
another terminal). Each write takes a lock (``flock`` on ``<store>.lock``), and if the file
changed since this program read it, merges what the other one did first, room by room,
instead of writing over it: see ``KeyStore.save``. A store deleted while a program has it
open stays deleted: that program's next save is refused (``StoreChanged``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import string
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from instantroom.protocol.envelope import MESSAGE_ID_SIZE
from instantroom.protocol.kdf import DeviceKey, RoomKeys, private_key_bytes
from instantroom.protocol.minikey import parse_minikey
from instantroom.protocol.session import MAX_OUTBOX

FORMAT = "instantroom-keystore"
VERSION = 1
# RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes (~0.1 s here).
DEFAULT_KDF = {"name": "argon2id", "iterations": 3, "lanes": 4, "memory_kib": 65536}
MIN_KDF = {"iterations": 1, "lanes": 1, "memory_kib": 8}
# Beyond these a file is damaged, not strong: they would take minutes or all memory. The
# cost (memory times passes) is bounded too, at 16 times the default's (about 2 s here):
# both settings at their bounds at once would be minutes.
MAX_KDF = {"iterations": 64, "lanes": 64, "memory_kib": 1024 * 1024}
MAX_KDF_COST = 16 * 3 * 65536  # memory_kib times iterations: 16 times DEFAULT_KDF's
# Messages received, sent or deleted are remembered (id and time, never content) while a
# relay could still send them again and have them accepted: the replay window of
# PROTOCOL.md 7, one hour, plus the five minutes a timestamp may be ahead. At most this
# many per room and list, the newest.
IDS_KEPT_MS = 60 * 60 * 1000 + 5 * 60 * 1000
MAX_IDS_PER_ROOM = 10_000
# How long a program may hold those ids before it writes them: each write is a whole new
# file, flushed to disk, and a busy room must not cost one a second.
IDS_SAVED_WITHIN = 10.0
# How far ahead of the clock a message may be stamped (PROTOCOL.md 7).
MAX_FUTURE_MS = 5 * 60 * 1000
# Our own messages waiting for the relay: a session holds at most MAX_OUTBOX, and the store
# keeps no more of them than that, per room. One too old to send stays until a chat gives
# it up (ClientSession.restore) and says so: pruned unseen, it would vanish unsaid.
MAX_OUTBOX_PER_ROOM = MAX_OUTBOX
# Kept history, per room: the newest this many messages, the oldest dropped, as the web
# client keeps them (MAX_MESSAGES_PER_ROOM). Every write is the whole file: a busy room
# kept without end made each one longer, till the chat spent seconds a second on them.
MAX_HISTORY_PER_ROOM = 1000
# The contents are padded to at least this many bytes (a device key and a dozen rooms or
# so), so that the file's size does not tell a thief how many rooms it holds.
PADDED_AT_LEAST = 4096


class KeyStoreError(Exception):
    """Base of the key store's errors; messages are for people, and hold no secret."""


class WrongPassword(KeyStoreError):
    """Wrong password (or the file was altered): nothing was changed."""


class DamagedStore(KeyStoreError):
    """The file is not a readable key store; it was left as it is."""


class StoreExists(KeyStoreError):
    """There is a key store here already."""


class NoSuchRoom(KeyStoreError):
    """No stored room matches."""


class StoreChanged(KeyStoreError):
    """Another program changed the store in a way that cannot be merged: nothing was saved."""


class PasswordChanged(StoreChanged):
    """Another program changed the store's password: nothing was saved; ``take_password``
    with the new one lets this program save again."""


@dataclass
class HistoryEntry:
    message_id: str
    timestamp_ms: int
    name: str
    fingerprint: str
    text: str = field(repr=False)
    # False for one of ours until the relay takes it (an entry without an id, from before
    # ids were kept at once, was not taken either).
    sent: bool = True

    def __post_init__(self) -> None:
        if not self.message_id:
            self.sent = False


@dataclass
class KnownMessage:
    """A message this device has had (received, sent, or deleted since): its id and time,
    so that a relay that sends it again after a restart is not believed (the clients seed
    each room's replay filter with these)."""

    message_id: str
    timestamp_ms: int


@dataclass
class OutboxEntry:
    """One of our messages the relay has not taken yet: sealed, as it goes on the wire, so
    that it is sent again, byte for byte, after a restart (PROTOCOL.md 10.6)."""

    message_id: str  # hex
    timestamp_ms: int
    envelope: str = field(repr=False)  # base64

    def restorable(self) -> tuple[bytes, int, bytes]:
        """(id, time, envelope), as ``ClientSession.restore`` takes them."""
        return bytes.fromhex(self.message_id), self.timestamp_ms, _unb64(self.envelope)


@dataclass
class StoredRoom:
    key: str = field(repr=False)
    label: str
    server: str
    expires_at_ms: int  # 0: not known yet
    keep_history: bool = False
    history: list[HistoryEntry] = field(default_factory=list, repr=False)
    # Messages deleted within the last IDS_KEPT_MS; pruned on every save.
    deleted: list[KnownMessage] = field(default_factory=list, repr=False)
    # Text messages received or sent within the last IDS_KEPT_MS, history kept or not (a
    # room that keeps none has nothing else to tell its replay filter); pruned likewise.
    recent: list[KnownMessage] = field(default_factory=list, repr=False)
    # The newest time among the recent ids dropped to keep MAX_IDS_PER_ROOM: the replay
    # filter refuses everything at or below it, since which of those came is forgotten.
    recent_floor_ms: int = 0
    # Ours the relay has not taken, oldest first; kept whether history is kept or not.
    outbox: list[OutboxEntry] = field(default_factory=list, repr=False)

    @property
    def room_id(self) -> bytes:
        return RoomKeys.from_minikey(self.key).room_id

    def expired(self, now_ms: int) -> bool:
        return 0 < self.expires_at_ms <= now_ms

    def keep(self, entry: HistoryEntry) -> None:
        """Keep ``entry`` in the history (then save()), in time order, dropping the oldest
        beyond ``MAX_HISTORY_PER_ROOM`` (``entry`` itself, if it is older than them all)."""
        at = len(self.history)  # messages mostly come in order: searched from the end
        while at and self.history[at - 1].timestamp_ms > entry.timestamp_ms:
            at -= 1
        self.history.insert(at, entry)
        del self.history[:-MAX_HISTORY_PER_ROOM]

    def record_deleted(self, message_id: str, timestamp_ms: int) -> None:
        """Remember that the message ``message_id`` (hex) was deleted (then save())."""
        if message_id and all(e.message_id != message_id for e in self.deleted):
            self.deleted.append(KnownMessage(message_id, timestamp_ms))

    def record_recent(self, message_id: bytes, timestamp_ms: int) -> None:
        """Remember a message received or sent (then save()). Its id is new: the replay
        filter lets no id through twice (a repeat is dropped when pruned)."""
        self.recent.append(KnownMessage(message_id.hex(), timestamp_ms))
        if len(self.recent) > 2 * MAX_IDS_PER_ROOM:  # saves failing: pruned here instead
            self.prune_known(time.time_ns() // 1_000_000)

    def known(self) -> list[tuple[bytes, int]]:
        """(id, time) of every message this device has had in this room, as
        ``RoomClient.join(known=...)`` takes them: kept, received or sent lately, deleted.
        (One of ours kept from before ids were kept at once has none.)"""
        had = [(e.message_id, e.timestamp_ms) for e in self.history]
        had += [(e.message_id, e.timestamp_ms) for e in (*self.deleted, *self.recent)]
        return [(bytes.fromhex(message_id), time) for message_id, time in had if message_id]

    def prune_known(self, now_ms: int) -> None:
        """Forget the ids older than the replay window, and all but the newest
        ``MAX_IDS_PER_ROOM`` of each list."""
        self.deleted, _ = _recent_ids(self.deleted, now_ms)
        self.recent, dropped_up_to = _recent_ids(self.recent, now_ms)
        floor = max(self.recent_floor_ms, dropped_up_to)
        # Forgotten once it no longer matters (the freshness check refuses all it covers),
        # or when a clock since set back left it further ahead than a message may be.
        near = now_ms - IDS_KEPT_MS <= floor <= now_ms + MAX_FUTURE_MS
        self.recent_floor_ms = floor if near else 0

    def add_outgoing(self, message_id: bytes, timestamp_ms: int, envelope: bytes) -> None:
        """Keep one of ours the relay has not taken yet (then save())."""
        hex_id = message_id.hex()
        if all(e.message_id != hex_id for e in self.outbox):
            self.outbox.append(OutboxEntry(hex_id, timestamp_ms, _b64(envelope)))
            self.outbox.sort(key=lambda entry: entry.timestamp_ms)
            del self.outbox[:-MAX_OUTBOX_PER_ROOM]

    def remove_outgoing(self, message_id: bytes) -> bool:
        """Forget one of ours (then save()): the relay took it, or it was given up. Say
        whether it was kept."""
        hex_id = message_id.hex()
        kept = len(self.outbox)
        self.outbox = [e for e in self.outbox if e.message_id != hex_id]
        return len(self.outbox) != kept


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise DamagedStore("The key store file is damaged: a field is missing.")
    try:
        return base64.b64decode(text, validate=True)
    # ValueError too (binascii.Error is one): a character that is not ASCII.
    except ValueError as exc:
        raise DamagedStore("The key store file is damaged: a field is not base64.") from exc


def _derive(password: str, salt: bytes, kdf: dict[str, Any]) -> bytes:
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:  # bytes a terminal or variable gave that are not UTF-8
        # Said without the exception: its message would quote part of the password.
        raise KeyStoreError(
            "The password is not UTF-8 text (is the terminal set to another encoding?). "
            "Nothing was changed."
        ) from None
    return Argon2id(
        salt=salt,
        length=32,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(secret)


def _header(kdf: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "kdf": kdf}


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


class KeyStore:
    """An open key store. Change it, then ``save()``."""

    def __init__(
        self, path: Path, password: str, device: DeviceKey, rooms: list[StoredRoom],
        kdf: dict[str, Any], revision: bytes | None = None,
        sealing: _Sealing | None = None, name: str = "",
    ) -> None:  # fmt: skip
        self.path = path
        self.device = device
        self.rooms = rooms
        # The name to go by when a command is given none: the last one given (empty: none).
        self.name = name
        self._base_name = name
        self._password = password  # the one that opens the file as it is on disk
        self._new_password: str | None = None
        self._kdf = kdf
        # The key derived from the password: later writes reuse it and its salt, each with
        # a fresh nonce, so that a chat saving as messages come runs Argon2id once, not once
        # per save (each run is 64 MiB and about 0.1 s, during which the screen is stuck).
        self._sealing = sealing
        # What the file held when this program last read or wrote it: the merge's base.
        self._revision = revision
        self._seen_stat: tuple[int, int, int] | None = None  # the file's, when it matched
        self._base = _snapshot(rooms)
        # Rooms a merge found forgotten elsewhere, until a save or take_in returns them: a
        # merge whose write then failed (a full disk) finds them gone from self.rooms on
        # the next try, and would not say so again.
        self._forgotten: list[StoredRoom] = []

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r}, {len(self.rooms)} rooms)"

    # opening

    @classmethod
    def create(cls, path: Path, password: str, *, kdf: dict[str, Any] | None = None) -> KeyStore:
        path = path.resolve()  # through a symlink: saves replace its target, not the link
        if path.exists():
            raise StoreExists(f"There is a key store at {path} already.")
        if not password:
            raise KeyStoreError("Choose a password: the key store is never kept unlocked.")
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        store = cls(path, password, device, [], dict(kdf or DEFAULT_KDF))
        with _locked(path):
            if path.exists():  # made by another program since the check above
                raise StoreExists(f"There is a key store at {path} already.")
            store._write()
        return store

    @classmethod
    def open(cls, path: Path, password: str) -> KeyStore:
        path = path.resolve()  # through a symlink: saves replace its target, not the link
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"There is no key store at {path}.") from None
        device, rooms, name, params, sealing = _decode(path, raw, password)
        with contextlib.suppress(OSError):  # not ours to change (read-only media): as it is
            mode = path.stat().st_mode
            if mode & 0o077:
                # Copied or restored with loose modes: owner-only now, not at the next save
                # (commands that only read, such as rooms or qr, never save). A store made
                # read-only stays so.
                os.chmod(path, mode & 0o700 or 0o600)
        return cls(path, password, device, rooms, params, _digest(raw), sealing, name)

    @classmethod
    def open_or_create(cls, path: Path, password: str) -> KeyStore:
        if path.exists():
            return cls.open(path, password)
        return cls.create(path, password)

    # writing

    def changed_elsewhere(self) -> bool:
        """Whether another program wrote the store since this one read or wrote it (a
        ``save`` then takes in what it did). Cheap enough to ask once a second."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen == self._seen_stat:
            return False
        try:
            changed = _digest(self.path.read_bytes()) != self._revision
        except FileNotFoundError:
            return False
        if not changed:
            self._seen_stat = seen
        return changed

    def save(self, check: Callable[[KeyStore], None] | None = None) -> list[StoredRoom]:
        """Write the store atomically, owner-only; return the rooms forgotten elsewhere.

        If another program wrote the store since this one read it, its changes are merged
        in first, room by room, against what this program last read: a room it added is
        added here, a room it forgot is forgotten here too (and returned), and within a
        room each side keeps what it changed, history entries by message id, the earlier
        known expiry; the name is this program's if it changed it, else the other's. If
        the other program changed the password, or put another store there,
        ``StoreChanged`` is raised and nothing is written.

        ``check``, if given, sees the store as it is about to be written, with what others
        wrote merged in, under the lock: what it raises goes up, and nothing is written.
        """
        return self._save(wipe=False, check=check)

    def wipe(self) -> None:
        """Forget every room, those another program added meanwhile too, and the name;
        save."""
        self._save(wipe=True)

    def take_in(self) -> list[StoredRoom]:
        """Take in what another program saved, as ``save`` does, without writing when this
        one has nothing of its own to add (or else save): two programs that each answered
        the other's write with one of their own would write for ever."""
        if _snapshot(self.rooms) != self._base or self.name != self._base_name:
            return self.save()
        with _locked(self.path):
            raw = self._theirs()
            if raw is None:
                return []
            rooms, self.name = self._decode_theirs(raw)
            self._forgotten += self._merge(rooms)
            self._revision = _digest(raw)
            self._base = _snapshot(self.rooms)
            self._base_name = self.name
        forgotten, self._forgotten = self._forgotten, []
        return forgotten

    def _save(
        self, *, wipe: bool, check: Callable[[KeyStore], None] | None = None
    ) -> list[StoredRoom]:
        with _locked(self.path):
            if wipe and self._revision is not None and not self.path.exists():
                # Deleted since this program read it: nothing is left to wipe, and an empty
                # store written now would bring the device key back.
                self.rooms, self.name, self._forgotten = [], "", []
                return []
            raw = self._theirs()
            if raw is not None:
                rooms, name = self._decode_theirs(raw)
                if not wipe:
                    base = _snapshot(rooms)
                    if self.name == self._base_name:  # not changed here
                        self.name = name
                    self._forgotten += self._merge(rooms)
                    # Taken in now, written or not: if the write fails (a check, a full
                    # disk, a read-only file), the next save must not take it in again
                    # against the older base (a room forgotten there would come back).
                    self._revision, self._base, self._base_name = _digest(raw), base, name
            if wipe:
                self.rooms = []
                self.name = ""
            if check is not None:
                check(self)
            self._write()
        forgotten, self._forgotten = ([] if wipe else self._forgotten), []
        return forgotten

    def _theirs(self) -> bytes | None:
        """The file's bytes, if another program wrote it since this one read or wrote it.

        A file deleted since then is ``StoreChanged``: deleting it is how a person discards
        the store (a forgotten password, rooms to be rid of), and a write would bring every
        room back, under the old password. Only a store never written yet is made."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if self._revision is None:  # being made (create)
                return None
            raise _deleted(self.path) from None
        return raw if _digest(raw) != self._revision else None

    def _decode_theirs(self, raw: bytes) -> tuple[list[StoredRoom], str]:
        try:
            device, rooms, name, _, _ = _decode(self.path, raw, self._password, self._sealing)
        except WrongPassword:
            raise PasswordChanged(
                "Another InstantRoom changed the key store's password since this one "
                "opened it (or the file was altered): nothing was saved here. Open it "
                "again with the new password."
            ) from None
        if device.public_key != self.device.public_key:
            raise _replaced(self.path)
        return rooms, name

    def _merge(self, theirs: list[StoredRoom]) -> list[StoredRoom]:
        """Take in what another program saved; this one's rooms keep their identity."""
        by_key = {room.key: room for room in theirs}
        merged: list[StoredRoom] = []
        forgotten: list[StoredRoom] = []
        for room in self.rooms:
            other = by_key.get(room.key)
            if other is not None:
                _merge_room(self._base.get(room.key), room, other)
                merged.append(room)
            elif room.key in self._base:
                forgotten.append(room)  # forgotten there
            else:
                merged.append(room)  # added here
        mine = {room.key for room in self.rooms}
        merged += [r for r in theirs if r.key not in mine and r.key not in self._base]
        self.rooms = merged
        return forgotten

    def _write(self) -> None:
        """Encrypt and write the store; the caller holds the lock."""
        with contextlib.suppress(FileNotFoundError):
            if not self.path.stat().st_mode & stat.S_IWUSR:
                # Made read-only by its owner, to keep it as it is: the new file that a save
                # puts in its place would not be (the rename asks only the folder).
                why = "Read-only file (chmod u+w lets InstantRoom save it)"
                raise PermissionError(errno.EACCES, why, str(self.path))
        now = time.time_ns() // 1_000_000
        for room in self.rooms:
            room.prune_known(now)
        password = self._new_password if self._new_password is not None else self._password
        sealing = self._sealing
        if sealing is None or self._new_password is not None:
            salt = secrets.token_bytes(16)
            sealing = _Sealing(salt, self._kdf, _derive(password, salt, self._kdf))
        salt, key = sealing.salt, sealing.key
        kdf = {**self._kdf, "salt": _b64(salt)}
        contents = {
            "device_key": private_key_bytes(self.device.private_key).hex(),
            "name": self.name,
            "rooms": [_plain(room) for room in self.rooms],
        }
        nonce = secrets.token_bytes(12)
        plain = json.dumps(contents, ensure_ascii=False).encode("utf-8")
        # Trailing spaces are JSON still: stores written before padding open as they were.
        plain += b" " * (_padded_size(len(plain)) - len(plain))
        ciphertext = AESGCM(key).encrypt(nonce, plain, _aad(_header(kdf)))
        document = {**_header(kdf), "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
        data = json.dumps(document, indent=1).encode("ascii")
        _write_atomically(self.path, data)
        self._password, self._new_password = password, None
        self._sealing = sealing  # once written: a failed write keeps the old password's
        self._revision = _digest(data)
        self._base = _snapshot(self.rooms)
        self._base_name = self.name

    def take_password(self, password: str) -> None:
        """Go on with ``password``, the one another program changed the store's to (a save
        raised PasswordChanged). WrongPassword if it does not open the file as it is now,
        StoreChanged if the file is another store or gone; this program's changes since it
        last wrote are kept either way, and merged in by the next save."""
        with _locked(self.path):
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                raise _deleted(self.path) from None
            device, _, _, kdf, sealing = _decode(self.path, raw, password)
            if device.public_key != self.device.public_key:
                raise _replaced(self.path)
            self._password, self._kdf, self._sealing = password, kdf, sealing

    def change_password(self, new_password: str) -> None:
        if not new_password:
            raise KeyStoreError("The new password is empty.")
        self._new_password = new_password
        try:
            self.save()
        finally:
            self._new_password = None

    # rooms

    def add_room(self, room: StoredRoom) -> StoredRoom:
        """Store ``room``; a room already stored (same key) is updated instead."""
        for existing in self.rooms:
            if existing.key == room.key:
                existing.label = room.label or existing.label
                existing.server = room.server or existing.server
                existing.expires_at_ms = room.expires_at_ms or existing.expires_at_ms
                existing.keep_history = existing.keep_history or room.keep_history
                return existing
        self.rooms.append(room)
        return room

    def find(self, name: str) -> StoredRoom:
        """The room whose label is ``name``, or whose room id starts with ``name`` (hex)."""
        by_label = [room for room in self.rooms if room.label == name]
        if len(by_label) == 1:
            return by_label[0]
        prefix = name.lower()
        by_id = (
            [room for room in self.rooms if room.room_id.hex().startswith(prefix)]
            if len(prefix) >= 4
            else []
        )
        if len(by_label) + len(by_id) == 1:
            return (by_label + by_id)[0]
        if may_hold_a_key(name):
            # Not echoed: a key on a terminal (or in a log of it) is the room.
            raise NoSuchRoom(
                "No stored room matches what was given (not shown here: it may hold a room "
                "key). Give a room's label or the start of its room id; a room key or an "
                "invite link goes with --key (send, listen), or `instantroom join` stores "
                "its room."
            )
        if len(by_label) + len(by_id) > 1:
            raise NoSuchRoom(f"More than one room matches {name!r}: use more of its room id.")
        raise NoSuchRoom(f"No stored room is labelled {name!r} or has a room id starting so.")

    def forget(self, room: StoredRoom) -> None:
        self.rooms = [r for r in self.rooms if r.key != room.key]

    def purge_expired(self, now_ms: int) -> list[StoredRoom]:
        """Delete the rooms whose time is over, keys and messages with them."""
        expired = [room for room in self.rooms if room.expired(now_ms)]
        if expired:
            self.rooms = [room for room in self.rooms if not room.expired(now_ms)]
        return expired


@dataclass(frozen=True)
class _Sealing:
    """A key derived from the password, with the salt and settings it was derived with."""

    salt: bytes
    params: dict[str, Any]
    key: bytes = field(repr=False)


def _deleted(path: Path) -> StoreChanged:
    return StoreChanged(
        f"The key store at {path} was deleted since this program opened it: nothing was saved here."
    )


def _replaced(path: Path) -> StoreChanged:
    return StoreChanged(
        f"The key store at {path} was replaced by another one since this program opened it: "
        "nothing was saved here."
    )


def _decode(
    path: Path, raw: bytes, password: str, known: _Sealing | None = None
) -> tuple[DeviceKey, list[StoredRoom], str, dict[str, Any], _Sealing]:
    """The device key, rooms, name and key settings in the file's bytes ``raw``, and the key
    that opened them (``known``'s, without deriving it again, when its salt and settings
    are the file's)."""
    try:
        document = json.loads(raw)
    # ValueError too: a number of more than 4300 digits; RecursionError: arrays nested
    # thousands deep. Either would be a traceback, or end a chat that read the file.
    except (ValueError, RecursionError) as exc:
        raise DamagedStore(f"The key store at {path} is damaged: it is not JSON.") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise DamagedStore(f"The file at {path} is not an InstantRoom key store.")
    if document.get("version") != VERSION:
        raise DamagedStore(f"The key store at {path} is of a version this one cannot read.")
    kdf = document.get("kdf")
    if (
        not isinstance(kdf, dict)
        or kdf.get("name") != "argon2id"
        or not all(
            type(kdf.get(name)) is int and MIN_KDF[name] <= kdf[name] <= MAX_KDF[name]
            for name in MIN_KDF
        )
        or kdf["memory_kib"] < 8 * kdf["lanes"]  # Argon2's own rule
        or kdf["memory_kib"] * kdf["iterations"] > MAX_KDF_COST
    ):
        raise DamagedStore(f"The key store at {path} is damaged: its key settings are.")
    salt = _unb64(kdf.get("salt"))
    nonce = _unb64(document.get("nonce"))
    ciphertext = _unb64(document.get("ciphertext"))
    if len(nonce) != 12 or len(salt) < 16:
        raise DamagedStore(f"The key store at {path} is damaged.")
    params = {k: v for k, v in kdf.items() if k != "salt"}
    if known is not None and (known.salt, known.params) == (salt, params):
        sealing = known
    else:
        sealing = _Sealing(salt, params, _derive(password, salt, params))
    try:
        plain = AESGCM(sealing.key).decrypt(nonce, ciphertext, _aad(_header(kdf)))
    except InvalidTag:
        raise WrongPassword(
            "Wrong password (or the key store file was altered). Nothing was changed."
        ) from None
    try:
        contents = json.loads(plain)
        device = DeviceKey.from_private_bytes(bytes.fromhex(contents["device_key"]))
        name = contents.get("name", "")  # none in stores written before it was kept
        if not isinstance(name, str):
            raise DamagedStore("not a name")
        rooms = [
            StoredRoom(
                key=parse_minikey(room["key"], as_typed=False),
                label=room["label"],
                server=room["server"],
                expires_at_ms=int(room["expires_at_ms"]),
                keep_history=bool(room.get("keep_history", False)),
                # Written by a version without the bound (or by hand), a store may hold
                # more: the newest, as keep() leaves them, not at the next message kept.
                history=[_kept(entry) for entry in room.get("history", [])][-MAX_HISTORY_PER_ROOM:],
                deleted=[KnownMessage(**entry) for entry in room.get("deleted", [])],
                recent=[KnownMessage(**entry) for entry in room.get("recent", [])],
                recent_floor_ms=_time(room.get("recent_floor_ms", 0)),
                outbox=[_outgoing(entry) for entry in room.get("outbox", [])],
            )
            for room in contents["rooms"]
        ]
    except (KeyError, TypeError, ValueError, DamagedStore) as exc:
        raise DamagedStore(f"The key store at {path} is damaged inside.") from exc
    return device, rooms, name, params, sealing


def _plain(room: StoredRoom) -> dict[str, Any]:
    """``room`` as JSON takes it (``dataclasses.asdict`` would do, at four times the cost:
    a room holds up to tens of thousands of entries, and the chat saves as they come)."""
    fields = dict(vars(room))
    for name in ("history", "deleted", "recent", "outbox"):
        fields[name] = [vars(entry) for entry in fields[name]]
    return fields


def _snapshot(rooms: list[StoredRoom]) -> dict[str, StoredRoom]:
    """The rooms as a merge's base: without the ids kept for the replay filter, which
    merge as a union (and are up to 10,000 a list). Entries hold only strings, numbers and
    booleans: a shallow copy of each is a copy."""
    return {
        room.key: replace(
            room,
            history=[copy.copy(entry) for entry in room.history],
            outbox=[copy.copy(entry) for entry in room.outbox],
            deleted=[],
            recent=[],
        )
        for room in rooms
    }


def may_hold_a_key(text: str) -> bool:
    """Whether ``text`` may hold a room key: whole, grouped by any character, spelled out,
    mistyped or cut short, alone or inside other text (an invite link, ``key=...``). That
    is 20 letters and digits or more in all, of any script, not all hex (a room id, which
    may be given by its start, is hex; a key, ``S`` and 29 base58 characters, never is).
    Some long labels are taken for keys so: they then go unquoted, which costs less than a
    key quoted."""
    alnum = [char for char in text if char.isalnum()]
    return len(alnum) >= _KEY_LIKE_LETTERS and not all(char in string.hexdigits for char in alnum)


_KEY_LIKE_LETTERS = 20


def _recent_ids(known: list[KnownMessage], now_ms: int) -> tuple[list[KnownMessage], int]:
    """The entries of ``known`` inside the window, once each, the newest
    ``MAX_IDS_PER_ROOM``; and the newest time among those dropped for that bound (0)."""
    by_id = {e.message_id: e for e in known if e.timestamp_ms >= now_ms - IDS_KEPT_MS}
    kept = sorted(by_id.values(), key=lambda entry: entry.timestamp_ms)
    dropped = kept[:-MAX_IDS_PER_ROOM] if len(kept) > MAX_IDS_PER_ROOM else []
    return kept[-MAX_IDS_PER_ROOM:], max((e.timestamp_ms for e in dropped), default=0)


def _time(raw: object) -> int:
    if type(raw) is not int or not 0 <= raw < 2**53:  # what JSON numbers hold exactly
        raise ValueError("not a time")
    return raw


def _kept(raw: dict[str, Any]) -> HistoryEntry:
    entry = HistoryEntry(**raw)
    if type(entry.sent) is not bool:
        raise ValueError("not a kept message")
    return entry


def _outgoing(raw: dict[str, Any]) -> OutboxEntry:
    entry = OutboxEntry(**raw)
    if (
        len(bytes.fromhex(entry.message_id)) != MESSAGE_ID_SIZE
        or type(entry.timestamp_ms) is not int
        or not _unb64(entry.envelope)
    ):
        raise ValueError("not an outgoing message")
    return entry


def _merge_room(base: StoredRoom | None, mine: StoredRoom, theirs: StoredRoom) -> None:
    """Fold ``theirs`` into ``mine``: what only the other side changed since ``base``."""
    if base is not None:
        for name in ("label", "server", "keep_history"):
            if getattr(mine, name) == getattr(base, name):
                setattr(mine, name, getattr(theirs, name))
    known = [t for t in (mine.expires_at_ms, theirs.expires_at_ms) if t]
    mine.expires_at_ms = min(known, default=0)
    # Deletions only add up: one deleted on either side stays deleted (and out of history).
    ours_deleted = {entry.message_id for entry in mine.deleted}
    mine.deleted += [e for e in theirs.deleted if e.message_id not in ours_deleted]
    gone = {entry.message_id for entry in mine.deleted}
    ours_recent = {entry.message_id for entry in mine.recent}
    mine.recent += [e for e in theirs.recent if e.message_id not in ours_recent]
    mine.recent_floor_ms = max(mine.recent_floor_ms, theirs.recent_floor_ms)
    # Each side's outbox: what it added stays, what it removed (taken, given up) goes.
    sent_before = {e.message_id for e in base.outbox} if base is not None else set()
    waiting = {e.message_id for e in theirs.outbox}
    outbox = [e for e in mine.outbox if e.message_id in waiting or e.message_id not in sent_before]
    ours_waiting = {e.message_id for e in mine.outbox}
    outbox += [e for e in theirs.outbox if e.message_id not in ours_waiting | sent_before]
    outbox.sort(key=lambda entry: entry.timestamp_ms)
    mine.outbox = outbox
    if not mine.keep_history:
        mine.history = []
        return
    had = {_entry_key(entry) for entry in base.history} if base is not None else set()
    kept = {_entry_key(entry) for entry in theirs.history}
    history = [e for e in mine.history if _entry_key(e) in kept or _entry_key(e) not in had]
    ours = {_entry_key(entry) for entry in mine.history}
    history += [e for e in theirs.history if _entry_key(e) not in ours | had]
    taken = {_entry_key(entry) for entry in theirs.history if entry.sent}
    for entry in history:  # taken by the relay, as either side saw
        entry.sent = entry.sent or _entry_key(entry) in taken
    history = [e for e in history if not e.message_id or e.message_id not in gone]
    history.sort(key=lambda entry: entry.timestamp_ms)  # stable: ties keep their order
    mine.history = history[-MAX_HISTORY_PER_ROOM:]


def _entry_key(entry: HistoryEntry) -> str:
    """What tells kept messages apart: the id, or, for one of ours the relay has not taken
    yet (no id so far), when and what it was."""
    return entry.message_id or f"unsent {entry.timestamp_ms} {entry.name} {entry.text}"


def _padded_size(length: int) -> int:
    """``length`` rounded up by Padmé (Nikitin et al., PETS 2019): the size then tells
    O(log log length) bits, for at most 12% more; at least ``PADDED_AT_LEAST``."""
    length = max(length, PADDED_AT_LEAST)
    exponent = length.bit_length() - 1
    mask = (1 << (exponent - exponent.bit_length())) - 1
    return (length + mask) & ~mask


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the store's write lock (a separate file, never deleted: deleting races)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    lock = path.with_name(path.name + ".lock")
    descriptor = os.open(lock, flags, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as exc:  # "No locks available" (NFS without locking) names no file
            raise OSError(exc.errno, exc.strerror, str(lock)) from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _partial(path: Path) -> tuple[str, str]:
    """The prefix and suffix of the files ``_write_atomically`` writes before renaming."""
    return f".{path.name}.", ".partial"


def _remove_partials(path: Path) -> None:
    """Delete what writes of this store left when killed before their rename: a copy of
    the store as it was, rooms forgotten since too. The caller holds the lock, so no
    write of this store is under way."""
    prefix, suffix = _partial(path)
    for leftover in path.parent.iterdir():
        middle = leftover.name.removeprefix(prefix).removesuffix(suffix)
        # mkstemp's 8 characters exactly: not another store's ("keystore.json.x") file.
        if leftover.name == prefix + middle + suffix and len(middle) == 8 and "." not in middle:
            leftover.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _remove_partials(path)
    prefix, suffix = _partial(path)
    descriptor, temporary = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename is done: the file is the new one, and the caller's state must follow it
    # (a new password is the one that opens it now). Flushing the folder only makes the
    # rename outlast a power cut; where that fails (a file system that cannot flush a
    # folder, an I/O error) the write still happened, and is not reported as failed: at
    # worst a power cut brings the old file back, as one just before the rename would.
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

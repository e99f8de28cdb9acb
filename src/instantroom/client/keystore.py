"""The key store: one file, locked by a password, holding a person's rooms.

    {"format": "instantroom-keystore", "version": 1,
     "kdf": {"name": "argon2id", "salt": b64, "iterations": 3, "lanes": 4, "memory_kib": 65536},
     "nonce": b64, "ciphertext": b64}

The ciphertext is AES-256-GCM under Argon2id(password, salt, params) of the contents as
JSON (this install's device key, the rooms with their keys, labels, servers, expiry and
the history a person chose to keep), with the header above, minus nonce and ciphertext,
as associated data: the parameters cannot be lowered by editing the file. Parameters are
stored, so new stores can use stronger ones and old stores still open.

Writes are atomic: a new file next to the old one, flushed to disk, then renamed over it;
a crash leaves the old store or the new one, never half of one. The file is created
owner-only (0600). A wrong password raises ``WrongPassword`` and touches nothing; a file
that is not a store raises ``DamagedStore`` and is never replaced or reset.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from instantroom.protocol.kdf import DeviceKey, RoomKeys, private_key_bytes
from instantroom.protocol.minikey import parse_minikey

FORMAT = "instantroom-keystore"
VERSION = 1
# RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes (~0.1 s here).
DEFAULT_KDF = {"name": "argon2id", "iterations": 3, "lanes": 4, "memory_kib": 65536}
MIN_KDF = {"iterations": 1, "lanes": 1, "memory_kib": 8}


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


@dataclass
class HistoryEntry:
    message_id: str
    timestamp_ms: int
    name: str
    fingerprint: str
    text: str = field(repr=False)


@dataclass
class StoredRoom:
    key: str = field(repr=False)
    label: str
    server: str
    expires_at_ms: int  # 0: not known yet
    keep_history: bool = False
    history: list[HistoryEntry] = field(default_factory=list, repr=False)

    @property
    def room_id(self) -> bytes:
        return RoomKeys.from_minikey(self.key).room_id

    def expired(self, now_ms: int) -> bool:
        return 0 < self.expires_at_ms <= now_ms


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise DamagedStore("The key store file is damaged: a field is missing.")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise DamagedStore("The key store file is damaged: a field is not base64.") from exc


def _derive(password: str, salt: bytes, kdf: dict[str, Any]) -> bytes:
    return Argon2id(
        salt=salt,
        length=32,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(password.encode("utf-8"))


def _header(kdf: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "kdf": kdf}


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


class KeyStore:
    """An open key store. Change it, then ``save()``."""

    def __init__(
        self, path: Path, password: str, device: DeviceKey, rooms: list[StoredRoom],
        kdf: dict[str, Any],
    ) -> None:  # fmt: skip
        self.path = path
        self.device = device
        self.rooms = rooms
        self._password = password
        self._kdf = kdf

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r}, {len(self.rooms)} rooms)"

    # opening

    @classmethod
    def create(cls, path: Path, password: str, *, kdf: dict[str, Any] | None = None) -> KeyStore:
        if path.exists():
            raise StoreExists(f"There is a key store at {path} already.")
        if not password:
            raise KeyStoreError("Choose a password: the key store is never kept unlocked.")
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        store = cls(path, password, device, [], dict(kdf or DEFAULT_KDF))
        store.save()
        return store

    @classmethod
    def open(cls, path: Path, password: str) -> KeyStore:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"There is no key store at {path}.") from None
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
                isinstance(kdf.get(name), int) and kdf[name] >= least
                for name, least in MIN_KDF.items()
            )
        ):
            raise DamagedStore(f"The key store at {path} is damaged: its key settings are.")
        salt = _unb64(kdf.get("salt"))
        nonce = _unb64(document.get("nonce"))
        ciphertext = _unb64(document.get("ciphertext"))
        if len(nonce) != 12 or len(salt) < 16:
            raise DamagedStore(f"The key store at {path} is damaged.")
        params = {k: v for k, v in kdf.items() if k != "salt"}
        key = _derive(password, salt, params)
        try:
            plain = AESGCM(key).decrypt(nonce, ciphertext, _aad(_header(kdf)))
        except InvalidTag:
            raise WrongPassword(
                "Wrong password (or the key store file was altered). Nothing was changed."
            ) from None
        try:
            contents = json.loads(plain)
            device = DeviceKey.from_private_bytes(bytes.fromhex(contents["device_key"]))
            rooms = [
                StoredRoom(
                    key=parse_minikey(room["key"]),
                    label=room["label"],
                    server=room["server"],
                    expires_at_ms=int(room["expires_at_ms"]),
                    keep_history=bool(room.get("keep_history", False)),
                    history=[HistoryEntry(**entry) for entry in room.get("history", [])],
                )
                for room in contents["rooms"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedStore(f"The key store at {path} is damaged inside.") from exc
        return cls(path, password, device, rooms, params)

    @classmethod
    def open_or_create(cls, path: Path, password: str) -> KeyStore:
        if path.exists():
            return cls.open(path, password)
        return cls.create(path, password)

    # writing

    def save(self) -> None:
        """Write the store atomically, owner-only."""
        salt = secrets.token_bytes(16)
        kdf = {**self._kdf, "salt": _b64(salt)}
        key = _derive(self._password, salt, self._kdf)
        contents = {
            "device_key": private_key_bytes(self.device.private_key).hex(),
            "rooms": [asdict(room) for room in self.rooms],
        }
        nonce = secrets.token_bytes(12)
        plain = json.dumps(contents, ensure_ascii=False).encode("utf-8")
        ciphertext = AESGCM(key).encrypt(nonce, plain, _aad(_header(kdf)))
        document = {**_header(kdf), "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
        _write_atomically(self.path, json.dumps(document, indent=1).encode("ascii"))

    def change_password(self, new_password: str) -> None:
        if not new_password:
            raise KeyStoreError("The new password is empty.")
        self._password = new_password
        self.save()

    # rooms

    def add_room(self, room: StoredRoom) -> StoredRoom:
        """Store ``room``; a room already stored (same key) is updated instead."""
        for existing in self.rooms:
            if existing.key == room.key:
                existing.label = room.label or existing.label
                existing.server = room.server or existing.server
                existing.expires_at_ms = room.expires_at_ms or existing.expires_at_ms
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


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(prefix=".keystore-", dir=path.parent)
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
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

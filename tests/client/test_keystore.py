"""The locked key store: encryption at rest, atomic writes, and refusing to lose data."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from instantroom.client.keystore import (
    DamagedStore,
    HistoryEntry,
    KeyStore,
    StoredRoom,
    WrongPassword,
)
from instantroom.protocol.kdf import private_key_bytes

KEY = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_kib": 1024}


def room(key: str = KEY, label: str = "team", expires_at_ms: int = 0) -> StoredRoom:
    return StoredRoom(
        key=key, label=label, server="https://relay.example/", expires_at_ms=expires_at_ms
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "instantroom" / "keystore.json"


def test_a_store_round_trips_and_is_owner_only(store_path: Path) -> None:
    store = KeyStore.create(store_path, "correct horse", kdf=FAST_KDF)
    stored = store.add_room(room())
    stored.keep_history = True
    stored.history.append(HistoryEntry("00" * 16, 1, "alice", "AAAA-BBBB-CCCC-DDDD", "hi there"))
    store.save()
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    again = KeyStore.open(store_path, "correct horse")
    assert again.device.public_key == store.device.public_key
    assert [r.key for r in again.rooms] == [KEY]
    assert again.rooms[0].history[0].text == "hi there"


def test_the_file_holds_no_key_or_message_in_clear(store_path: Path) -> None:
    password = "a passphrase nobody guesses"
    store = KeyStore.create(store_path, password, kdf=FAST_KDF)
    stored = store.add_room(room())
    secret_text = "meet at the north gate at nine"
    stored.history.append(HistoryEntry("11" * 16, 1, "bob", "AAAA-BBBB-CCCC-DDDD", secret_text))
    store.save()
    data = store_path.read_bytes()
    for secret in (
        KEY.encode(),
        KEY[1:11].encode(),  # not even a part of it
        secret_text.encode(),
        b"north gate",
        private_key_bytes(store.device.private_key).hex().encode(),
        password.encode(),
    ):
        assert secret not in data


def test_a_wrong_password_is_refused_and_the_file_left_byte_for_byte(store_path: Path) -> None:
    KeyStore.create(store_path, "right", kdf=FAST_KDF).save()
    before = store_path.read_bytes()
    stamp = store_path.stat().st_mtime_ns
    with pytest.raises(WrongPassword, match="Wrong password"):
        KeyStore.open(store_path, "wrong")
    assert store_path.read_bytes() == before
    assert store_path.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"\x00" * len(data), id="zeroed"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data.replace(b'"version": 1', b'"version": 9'), id="version"),
        pytest.param(lambda data: data.replace(b'"nonce": "', b'"nonce": "!'), id="not-base64"),
        pytest.param(lambda data: b'{"format": "something else"}', id="not-a-store"),
    ],
)
def test_a_damaged_file_is_said_and_never_reset(store_path: Path, damage: object) -> None:
    KeyStore.create(store_path, "pw", kdf=FAST_KDF).save()
    assert callable(damage)
    damaged = damage(store_path.read_bytes())
    store_path.write_bytes(damaged)
    with pytest.raises(DamagedStore):
        KeyStore.open(store_path, "pw")
    assert store_path.read_bytes() == damaged


def test_weakened_key_settings_do_not_open_the_store(store_path: Path) -> None:
    KeyStore.create(store_path, "pw", kdf={**FAST_KDF, "iterations": 2}).save()
    edited = store_path.read_bytes().replace(b'"iterations": 2', b'"iterations": 1')
    store_path.write_bytes(edited)
    # The header is authenticated: lowering the cost is an alteration, not a shortcut.
    with pytest.raises(WrongPassword):
        KeyStore.open(store_path, "pw")


def test_the_password_can_change(store_path: Path) -> None:
    store = KeyStore.create(store_path, "old", kdf=FAST_KDF)
    store.add_room(room())
    store.change_password("new")
    with pytest.raises(WrongPassword):
        KeyStore.open(store_path, "old")
    assert KeyStore.open(store_path, "new").rooms[0].key == KEY


def test_expired_rooms_are_purged(store_path: Path) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    now = int(time.time() * 1000)
    store.add_room(room(label="old", expires_at_ms=now - 1))
    store.add_room(
        room(key="SDehB97fmBnFwezqLcANLCCQkQyfz1", label="live", expires_at_ms=now + 60_000)
    )
    gone = store.purge_expired(now)
    assert [r.label for r in gone] == ["old"]
    assert [r.label for r in store.rooms] == ["live"]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from instantroom.client.keystore import KeyStore, HistoryEntry
    path = Path(sys.argv[1])
    store = KeyStore.open(path, "pw")
    room = store.rooms[0]
    print("ready", flush=True)
    n = len(room.history)
    while True:
        n += 1
        room.history.append(HistoryEntry("%032x" % n, n, "w", "F", "x" * 2000))
        store.save()
    """
)


def test_a_process_killed_mid_write_leaves_the_old_or_the_new_store(store_path: Path) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room())
    store.save()
    rng = random.Random(1)
    counts = []
    for _ in range(12):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store_path)], stdout=subprocess.PIPE
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        reopened = KeyStore.open(store_path, "pw")  # never damaged, never reset
        history = reopened.rooms[0].history
        assert [int(e.message_id, 16) for e in history] == list(range(1, len(history) + 1))
        counts.append(len(history))
    assert counts == sorted(counts)
    assert counts[-1] > 0

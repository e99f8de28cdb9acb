"""The locked key store: encryption at rest, atomic writes, and refusing to lose data."""

from __future__ import annotations

import dataclasses
import errno
import json
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from instantroom.cli import main
from instantroom.client import keystore
from instantroom.client.keystore import (
    IDS_KEPT_MS,
    MAX_IDS_PER_ROOM,
    DamagedStore,
    HistoryEntry,
    KeyStore,
    KeyStoreError,
    KnownMessage,
    OutboxEntry,
    StoreChanged,
    StoredRoom,
    WrongPassword,
)
from instantroom.protocol.kdf import private_key_bytes
from instantroom.protocol.minikey import spell_minikey
from instantroom.protocol.session import OUTBOX_MAX_AGE_MS

KEY = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_kib": 1024}


def room(key: str = KEY, label: str = "team", expires_at_ms: int = 0) -> StoredRoom:
    return StoredRoom(
        key=key, label=label, server="https://relay.example/", expires_at_ms=expires_at_ms
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "instantroom" / "keystore.json"


def test_a_store_opened_through_a_symlink_is_saved_to_its_target(tmp_path: Path) -> None:
    """A link to the store (dotfiles kept elsewhere) stays a link: the save replaced the
    link with a file, and the target kept the old contents, rooms forgotten since too."""
    target = tmp_path / "real" / "keystore.json"
    KeyStore.create(target, "correct horse", kdf=FAST_KDF).save()
    link = tmp_path / "link.json"
    link.symlink_to(target)
    store = KeyStore.open(link, "correct horse")
    store.add_room(room())
    store.save()
    assert link.is_symlink()
    assert [r.key for r in KeyStore.open(target, "correct horse").rooms] == [KEY]


def test_a_store_copied_with_loose_modes_is_owner_only_once_opened(store_path: Path) -> None:
    """Read-only commands (rooms, qr) never save: opening alone tightens it."""
    KeyStore.create(store_path, "correct horse", kdf=FAST_KDF).save()
    store_path.chmod(0o644)
    KeyStore.open(store_path, "correct horse")
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("made", "tightened"), [(0o444, 0o400), (0o400, 0o400)])
def test_a_store_made_read_only_is_kept_as_it_is_and_says_so(
    store_path: Path, made: int, tightened: int
) -> None:
    """Its owner made it read-only to keep it as it is: a save would have put a new,
    writable file in its place (the rename asks only the folder)."""
    KeyStore.create(store_path, "correct horse", kdf=FAST_KDF).save()
    store_path.chmod(made)
    before = store_path.read_bytes()
    store = KeyStore.open(store_path, "correct horse")
    assert stat.S_IMODE(store_path.stat().st_mode) == tightened  # owner-only, still read-only
    store.add_room(room())
    with pytest.raises(PermissionError, match="Read-only file") as raised:
        store.save()
    assert raised.value.filename == str(store_path.resolve())
    assert store_path.read_bytes() == before
    assert stat.S_IMODE(store_path.stat().st_mode) == tightened
    store_path.chmod(0o600)  # made writable again: the same store saves
    store.save()
    assert [r.key for r in KeyStore.open(store_path, "correct horse").rooms] == [KEY]


OTHER_KEY = "SDehB97fmBnFwezqLcANLCCQkQyfz1"
THIRD_KEY = "SfG6xZjHh6aE7oHUMnmnqoEfyDARe1"


def _refuse(store: KeyStore) -> None:
    raise ValueError("refused")


@pytest.mark.parametrize("failing", ["check", "read-only"])
def test_a_save_that_failed_then_one_that_works_brings_back_no_room_forgotten_elsewhere(
    store_path: Path, failing: str
) -> None:
    """A failed save (its check raised, the file was read-only, the disk full) has taken in
    what the other program wrote: the next save does not take it in again against the
    older base, as if a room it added, then forgot, had been added here."""
    KeyStore.create(store_path, "correct horse", kdf=FAST_KDF)
    mine = KeyStore.open(store_path, "correct horse")
    other = KeyStore.open(store_path, "correct horse")
    other.add_room(room(OTHER_KEY, "theirs"))
    other.save()
    mine.add_room(room(KEY, "mine"))
    if failing == "check":
        with pytest.raises(ValueError, match="refused"):
            mine.save(check=_refuse)
    else:
        store_path.chmod(0o400)
        with pytest.raises(PermissionError):
            mine.save()
        store_path.chmod(0o600)
    other.forget(other.find("theirs"))
    other.add_room(room(THIRD_KEY, "later"))
    other.save()
    assert [r.label for r in mine.save()] == ["theirs"]  # forgotten there, said here
    assert sorted(r.label for r in KeyStore.open(store_path, "correct horse").rooms) == [
        "later",
        "mine",
    ]


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


def test_a_room_stored_with_a_key_in_one_case_still_opens(store_path: Path) -> None:
    """Typed keys in one case are refused now (PROTOCOL.md 3.5); one stored before, which
    passed the check then, still loads, with the rest of the store."""
    one_case = "S6c56bnxqibjk9mqsye7ykvq7n113c"  # passes the check, all small after the S
    store = KeyStore.create(store_path, "correct horse", kdf=FAST_KDF)
    store.add_room(room(one_case, "then"))
    store.add_room(room())
    store.save()
    again = KeyStore.open(store_path, "correct horse")
    assert [r.key for r in again.rooms] == [one_case, KEY]


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
        # What json.loads refuses with other than JSONDecodeError: a traceback, or a chat
        # that read the file ended.
        pytest.param(
            lambda data: data.replace(b'"iterations": 1', b'"iterations": 1' + b"0" * 5000),
            id="number-too-long",
        ),
        pytest.param(lambda data: b"[" * 100_000, id="nested-too-deep"),
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


# Two programs with the store open at once: a chat screen and a ``join`` in another terminal.

OTHER = "SDehB97fmBnFwezqLcANLCCQkQyfz1"
THIRD = "SyuRFb8ybtV7sddb2drCREmTwex9Nv"


def entry(number: int, text: str = "hi") -> HistoryEntry:
    return HistoryEntry(f"{number:032x}", number, "alice", "AAAA-BBBB-CCCC-DDDD", text)


def test_rooms_added_and_forgotten_by_another_program_are_merged(store_path: Path) -> None:
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    first.add_room(room(label="kept"))
    first.add_room(room(key=OTHER, label="forgotten there"))
    first.save()
    second = KeyStore.open(store_path, "pw")
    second.add_room(room(key=THIRD, label="added there"))
    second.forget(second.find("forgotten there"))
    second.save()
    first.rooms[0].label = "renamed here"
    forgotten = first.save()
    assert [r.label for r in forgotten] == ["forgotten there"]
    assert sorted(r.label for r in first.rooms) == ["added there", "renamed here"]
    assert sorted(r.label for r in KeyStore.open(store_path, "pw").rooms) == [
        "added there",
        "renamed here",
    ]
    # And the other way round: what the first one did reaches the second on its next save.
    assert second.save() == []
    assert sorted(r.label for r in second.rooms) == ["added there", "renamed here"]


def test_a_room_forgotten_elsewhere_is_said_by_the_save_after_one_that_failed(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    first.add_room(room(label="kept"))
    first.add_room(room(key=OTHER, label="forgotten there"))
    first.save()
    second = KeyStore.open(store_path, "pw")
    second.forget(second.find("forgotten there"))
    second.save()
    first.rooms[0].label = "renamed here"
    write = keystore._write_atomically

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keystore, "_write_atomically", full_disk)
    with pytest.raises(OSError, match="No space"):
        first.save()  # merged, then not written
    monkeypatch.setattr(keystore, "_write_atomically", write)
    # The chat drops the room's view only when a save says so.
    assert [r.label for r in first.save()] == ["forgotten there"]
    assert first.save() == []
    assert [r.label for r in KeyStore.open(store_path, "pw").rooms] == ["renamed here"]


def test_a_file_system_without_locks_is_said_with_the_lock_file_and_the_store_kept(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On NFS mounted without locking, flock fails with "No locks available" and no file
    name: the user was not told which file, nor that it is the lock."""
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room())
    store.save()
    before = store_path.read_bytes()

    def no_locks(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr("fcntl.flock", no_locks)
    lock = f"{store_path}.lock"
    store.add_room(room(key=OTHER, label="more"))
    with pytest.raises(OSError, match="No locks available") as caught:
        store.save()
    assert (caught.value.errno, caught.value.filename) == (errno.ENOLCK, lock)
    assert store_path.read_bytes() == before
    # As the command line says it.
    monkeypatch.setenv("INSTANTROOM_KEYSTORE", str(store_path))
    monkeypatch.setenv("INSTANTROOM_PASSWORD", "pw")
    assert main(["forget", "team"]) == 2
    assert f"No locks available: {lock}" in capsys.readouterr().err
    assert store_path.read_bytes() == before


def test_the_file_s_size_does_not_tell_how_many_rooms_it_holds(store_path: Path) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    sizes = {store_path.stat().st_size}
    for key in (KEY, OTHER, THIRD):
        store.add_room(room(key=key, label=f"room {key[:5]}"))
        store.save()
        sizes.add(store_path.stat().st_size)
    assert len(sizes) == 1
    # Large contents are rounded up too, by at most an eighth.
    stored = store.rooms[0]
    stored.keep_history = True
    stored.history = [entry(number, "x" * (50 + number % 7)) for number in range(2000)]
    store.save()
    contents = json.dumps(
        {"device_key": "00" * 32, "rooms": [keystore._plain(r) for r in store.rooms]}
    )
    size = store_path.stat().st_size
    # (base64 of the ciphertext: four characters a three bytes)
    assert len(contents) * 4 / 3 < size < len(contents) * 1.125 * 4 / 3 + 1000
    # Read back: the newest messages, as many as a room keeps.
    reopened = KeyStore.open(store_path, "pw").rooms[0].history
    assert reopened == stored.history[-keystore.MAX_HISTORY_PER_ROOM :]


def test_a_room_forgotten_here_stays_forgotten_when_the_file_changed(store_path: Path) -> None:
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    first.add_room(room(label="team"))
    first.save()
    second = KeyStore.open(store_path, "pw")
    second.add_room(room(key=OTHER, label="new"))
    second.save()
    first.forget(first.find("team"))
    first.save()
    assert [r.label for r in KeyStore.open(store_path, "pw").rooms] == ["new"]


def kept_in_two_programs(store_path: Path) -> tuple[KeyStore, StoredRoom, KeyStore, StoredRoom]:
    """A room keeping messages 1, 2 and 3, open in two programs; the second deleted 2."""
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    shared = first.add_room(room())
    shared.keep_history = True
    shared.history += [entry(1), entry(2), entry(3)]
    first.save()
    second = KeyStore.open(store_path, "pw")
    theirs = second.rooms[0]
    theirs.history = [e for e in theirs.history if e.message_id != entry(2).message_id]
    return first, shared, second, theirs


def test_history_is_merged_by_message_and_deletions_hold(store_path: Path) -> None:
    first, shared, second, theirs = kept_in_two_programs(store_path)
    theirs.history.append(entry(5))
    theirs.expires_at_ms = 9_000
    second.save()
    shared.history = [e for e in shared.history if e.message_id != entry(3).message_id]
    shared.history.append(entry(4))
    first.save()
    merged = KeyStore.open(store_path, "pw").rooms[0]
    assert [int(e.message_id, 16) for e in merged.history] == [1, 4, 5]
    assert merged.expires_at_ms == 9_000  # the earlier known end wins


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_deleted_messages_are_kept_for_the_replay_window_and_pruned_on_save(
    store_path: Path,
) -> None:
    now = now_ms()
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    stored = store.add_room(room())
    stored.record_deleted("01" * 16, now - 1000)
    stored.record_deleted("01" * 16, now - 1000)  # once only
    stored.record_deleted("02" * 16, now - IDS_KEPT_MS - 60_000)  # too old to matter
    stored.record_deleted("", now)  # an id not known: nothing to remember
    store.save()
    again = KeyStore.open(store_path, "pw").rooms[0]
    assert again.deleted == [KnownMessage("01" * 16, now - 1000)]


def test_deleted_messages_are_bounded_per_room_keeping_the_newest(store_path: Path) -> None:
    now = now_ms()
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    stored = store.add_room(room())
    stored.deleted = [KnownMessage(f"{n:032x}", now - n) for n in range(MAX_IDS_PER_ROOM + 5)]
    store.save()
    kept = KeyStore.open(store_path, "pw").rooms[0].deleted
    assert len(kept) == MAX_IDS_PER_ROOM
    assert min(e.timestamp_ms for e in kept) == now - MAX_IDS_PER_ROOM + 1


def test_a_store_written_before_deletions_were_kept_still_opens(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room()).history.append(HistoryEntry("", 5, "me", "AAAA", "not taken"))

    def as_before(stored: StoredRoom) -> dict[str, object]:  # no fields added since
        fields = dataclasses.asdict(stored)  # as _plain, with the fields added since removed
        fields["history"] = [{k: v for k, v in e.items() if k != "sent"} for e in fields["history"]]
        return {k: v for k, v in fields.items() if k not in ("deleted", "recent", "outbox")}

    monkeypatch.setattr(keystore, "_plain", as_before)
    store.save()
    monkeypatch.undo()
    (again,) = KeyStore.open(store_path, "pw").rooms
    assert (again.deleted, again.recent, again.outbox) == ([], [], [])
    assert [e.sent for e in again.history] == [False]  # no id: the relay never took it


def test_deletions_from_both_programs_are_merged_and_keep_messages_out(store_path: Path) -> None:
    now = now_ms()
    first, shared, second, theirs = kept_in_two_programs(store_path)
    theirs.record_deleted(entry(2).message_id, now)
    theirs.record_deleted(entry(7).message_id, now)  # deleted there, arriving here later
    second.save()
    shared.history = [e for e in shared.history if e.message_id != entry(3).message_id]
    shared.record_deleted(entry(3).message_id, now)
    shared.history.append(entry(7))
    first.save()
    merged = KeyStore.open(store_path, "pw").rooms[0]
    assert [int(e.message_id, 16) for e in merged.history] == [1]
    assert sorted(int(e.message_id, 16) for e in merged.deleted) == [2, 3, 7]


def test_a_password_changed_elsewhere_stops_the_save_and_keeps_the_file(
    store_path: Path,
) -> None:
    first = KeyStore.create(store_path, "old", kdf=FAST_KDF)
    first.add_room(room())
    first.save()
    second = KeyStore.open(store_path, "old")
    second.add_room(room(key=OTHER, label="theirs"))
    second.change_password("new")
    before = store_path.read_bytes()
    first.add_room(room(key=THIRD, label="mine"))
    with pytest.raises(StoreChanged, match="password"):
        first.save()
    assert store_path.read_bytes() == before
    assert sorted(r.label for r in KeyStore.open(store_path, "new").rooms) == ["team", "theirs"]


def test_a_store_replaced_by_another_is_not_written_over(store_path: Path) -> None:
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    first.save()
    store_path.unlink()
    replacement = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    replacement.add_room(room(label="new store"))
    replacement.save()
    before = store_path.read_bytes()
    first.add_room(room(key=OTHER))
    with pytest.raises(StoreChanged, match="replaced"):
        first.save()
    assert store_path.read_bytes() == before


def test_wipe_forgets_the_rooms_another_program_added_too(store_path: Path) -> None:
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    first.add_room(room())
    first.save()
    second = KeyStore.open(store_path, "pw")
    second.add_room(room(key=OTHER, label="added there"))
    second.save()
    first.wipe()
    assert KeyStore.open(store_path, "pw").rooms == []


def test_a_password_change_merges_first(store_path: Path) -> None:
    first = KeyStore.create(store_path, "old", kdf=FAST_KDF)
    first.save()
    second = KeyStore.open(store_path, "old")
    second.add_room(room(label="added there"))
    second.save()
    first.change_password("new")
    assert [r.label for r in KeyStore.open(store_path, "new").rooms] == ["added there"]


ADDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from instantroom.client.keystore import KeyStore, StoredRoom
    store = KeyStore.open(Path(sys.argv[1]), "pw")
    sys.stdin.readline()  # all open the same revision, then all save at once
    store.add_room(StoredRoom(key=sys.argv[2], label=sys.argv[2], server="s", expires_at_ms=0))
    store.save()
    """
)


def test_programs_saving_at_once_lose_no_room(store_path: Path) -> None:
    KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    keys = [
        "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy",
        "SDehB97fmBnFwezqLcANLCCQkQyfz1",
        "SUDMjLBUNq2kgDxZ4Z6f8nCTa8nGDY",
        "SB8ndT22xNYmA2nuYtARjs9qeD9JAr",
        "SFuCWrFitmjNnarbMorktBKNezqvL2",
        "SstuPvq3aEQgh2cQsrwB4xPBMym4iX",
    ]
    children = [
        subprocess.Popen([sys.executable, "-c", ADDER, str(store_path), key], stdin=subprocess.PIPE)
        for key in keys
    ]
    time.sleep(1.5)  # each has read the store
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
    assert [child.wait(timeout=60) for child in children] == [0] * len(keys)
    assert sorted(r.key for r in KeyStore.open(store_path, "pw").rooms) == sorted(keys)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("memory_kib", 64 * 1024 * 1024), ("iterations", 100_000), ("lanes", 1000)],
)
def test_absurd_key_settings_are_damage_not_a_minute_of_work(
    store_path: Path, setting: str, value: int
) -> None:
    KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    document = json.loads(store_path.read_bytes())
    document["kdf"][setting] = value
    store_path.write_text(json.dumps(document))
    with pytest.raises(DamagedStore, match="key settings"):
        KeyStore.open(store_path, "pw")


def test_every_key_setting_at_its_bound_at_once_is_damage_not_minutes_of_work(
    store_path: Path,
) -> None:
    """Each within its bound, together 4 GiB for 64 passes (minutes): the file was altered."""
    KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    document = json.loads(store_path.read_bytes())
    document["kdf"] |= {"iterations": 64, "memory_kib": 1024 * 1024}
    store_path.write_text(json.dumps(document))
    with pytest.raises(DamagedStore, match="key settings"):
        KeyStore.open(store_path, "pw")
    assert json.loads(store_path.read_bytes()) == document


def test_a_password_that_is_not_utf8_is_refused_without_a_crash_or_a_quote(
    store_path: Path,
) -> None:
    """As a non-UTF-8 terminal or INSTANTROOM_PASSWORD hands it over (surrogate escapes)."""
    password = b"secret\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(KeyStoreError, match="not UTF-8"):
        KeyStore.create(store_path, password, kdf=FAST_KDF)
    assert not store_path.exists()
    KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    before = store_path.read_bytes()
    with pytest.raises(KeyStoreError, match="not UTF-8") as raised:
        KeyStore.open(store_path, password)
    assert "secret" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert store_path.read_bytes() == before


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from instantroom.client.keystore import KeyStore
    store = KeyStore.open(Path(sys.argv[1]), "pw")
    fsync = os.fsync
    def killed(descriptor):  # the new file is written, not yet renamed
        fsync(descriptor)
        os.kill(os.getpid(), signal.SIGKILL)
    os.fsync = killed
    store.save()
    """
)


def test_a_copy_left_by_a_write_killed_before_its_rename_goes_with_the_next_write(
    store_path: Path,
) -> None:
    """Else a room forgotten since stays readable in it, to whoever has the password."""
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room(label="forget me"))
    store.save()
    other_store = store_path.with_name(store_path.name + ".aaaaaaaa")  # not ours to touch
    KeyStore.create(other_store, "pw", kdf=FAST_KDF)
    theirs = other_store.parent / f".{other_store.name}.bbbbbbbb.partial"
    theirs.write_bytes(b"another store's")
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store_path)], check=False)
    assert killed.returncode == -signal.SIGKILL
    (leftover,) = store_path.parent.glob(f".{store_path.name}.????????.partial")
    assert [r.label for r in KeyStore.open(leftover, "pw").rooms] == ["forget me"]
    store = KeyStore.open(store_path, "pw")
    store.forget(store.rooms[0])
    store.save()
    assert sorted(p.name for p in store_path.parent.iterdir()) == sorted(
        [store_path.name, store_path.name + ".lock", other_store.name, theirs.name,
         other_store.name + ".lock"]
    )  # fmt: skip


def test_less_memory_than_argon2_allows_for_its_lanes_is_damage(store_path: Path) -> None:
    KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    document = json.loads(store_path.read_bytes())
    document["kdf"] |= {"lanes": 4, "memory_kib": 16}
    store_path.write_text(json.dumps(document))
    with pytest.raises(DamagedStore, match="key settings"):
        KeyStore.open(store_path, "pw")


def test_messages_of_ours_not_yet_taken_by_the_relay_survive_a_merge(store_path: Path) -> None:
    """They have no id yet: two programs' such messages are not taken for one another."""
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    first.add_room(room()).keep_history = True
    first.save()
    second = KeyStore.open(store_path, "pw")
    pending = HistoryEntry("", 5, "me", "AAAA-BBBB-CCCC-DDDD", "pending in second")
    second.rooms[0].history.append(pending)
    second.save()
    first.rooms[0].history.append(HistoryEntry("", 6, "me", "AAAA-BBBB-CCCC-DDDD", "in first"))
    first.save()
    texts = [e.text for e in KeyStore.open(store_path, "pw").rooms[0].history]
    assert texts == ["pending in second", "in first"]


def outgoing(number: int, timestamp_ms: int) -> tuple[bytes, int, bytes]:
    return number.to_bytes(16), timestamp_ms, bytes([number]) * 40


def waiting(stored: StoredRoom) -> list[int]:
    return [int(entry.message_id, 16) for entry in stored.outbox]


def test_our_messages_not_yet_taken_are_kept_sealed_and_merged_both_ways(
    store_path: Path,
) -> None:
    """Each program's outbox: what it added stays, what it removed (the relay took it, or
    it was given up) goes, whatever the other one did meanwhile."""
    now = now_ms()
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    mine = first.add_room(room())
    mine.add_outgoing(*outgoing(1, now - 3))
    mine.add_outgoing(*outgoing(1, now - 3))  # once only
    mine.add_outgoing(*outgoing(2, now - 2))
    first.save()
    second = KeyStore.open(store_path, "pw")
    theirs = second.rooms[0]
    assert waiting(theirs) == [1, 2]
    assert theirs.outbox[0].restorable() == outgoing(1, now - 3)
    assert theirs.remove_outgoing(outgoing(1, now)[0])  # taken there
    assert not theirs.remove_outgoing(outgoing(9, now)[0])
    theirs.add_outgoing(*outgoing(3, now - 1))
    second.save()
    assert mine.remove_outgoing(outgoing(2, now)[0])  # taken here
    mine.add_outgoing(*outgoing(4, now))
    first.save()
    assert waiting(KeyStore.open(store_path, "pw").rooms[0]) == [3, 4]
    second.save()
    assert waiting(second.rooms[0]) == [3, 4]


def test_our_messages_too_old_to_send_stay_until_a_chat_gives_them_up(store_path: Path) -> None:
    """Pruned by a save, one would vanish unsaid; a chat that restores it says it was not
    sent (ClientSession.restore), and then forgets it."""
    now = now_ms()
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    stored = store.add_room(room())
    stored.add_outgoing(*outgoing(1, now - OUTBOX_MAX_AGE_MS - 1000))
    stored.add_outgoing(*outgoing(2, now - 1000))
    store.save()
    assert waiting(KeyStore.open(store_path, "pw").rooms[0]) == [1, 2]


def test_a_kept_message_taken_by_the_relay_as_either_program_saw_is_sent(
    store_path: Path,
) -> None:
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    shared = first.add_room(room())
    shared.keep_history = True
    shared.history += [dataclasses.replace(entry(1), sent=False), entry(2)]
    first.save()
    second = KeyStore.open(store_path, "pw")
    assert [e.sent for e in second.rooms[0].history] == [False, True]
    second.rooms[0].history[0].sent = True  # its ACK came there
    second.save()
    shared.history.append(entry(3))
    first.save()
    assert [e.sent for e in KeyStore.open(store_path, "pw").rooms[0].history] == [True] * 3
    # One kept with no id (before ids were kept at once) was never taken.
    assert not HistoryEntry("", 1, "me", "AAAA-BBBB-CCCC-DDDD", "old").sent


def test_a_kept_message_with_a_sent_mark_that_is_no_yes_or_no_is_damage(store_path: Path) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room()).history.append(dataclasses.replace(entry(1), sent="yes"))  # type: ignore[arg-type]
    store.save()
    with pytest.raises(DamagedStore, match="damaged inside"):
        KeyStore.open(store_path, "pw")


@pytest.mark.parametrize(
    "bad",
    [
        OutboxEntry("zz" * 16, 1, "AAAA"),
        OutboxEntry("01" * 15, 1, "AAAA"),
        OutboxEntry("01" * 16, 1, "not base64!"),
        OutboxEntry("01" * 16, 1, ""),
    ],
    ids=["id not hex", "short id", "envelope not base64", "no envelope"],
)
def test_a_damaged_outgoing_message_is_a_damaged_store(store_path: Path, bad: OutboxEntry) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room()).outbox.append(dataclasses.replace(bad, timestamp_ms=now_ms()))
    store.save()
    with pytest.raises(DamagedStore, match="damaged inside"):
        KeyStore.open(store_path, "pw")


def test_messages_received_or_sent_lately_are_kept_as_ids_pruned_and_merged(
    store_path: Path,
) -> None:
    now = now_ms()
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    mine = first.add_room(room())
    mine.record_recent(b"\x01" * 16, now - 1000)
    mine.record_recent(b"\x01" * 16, now - 1000)  # a repeat goes when pruned
    mine.record_recent(b"\x02" * 16, now - IDS_KEPT_MS - 60_000)  # too old to matter
    first.save()
    second = KeyStore.open(store_path, "pw")
    assert second.rooms[0].recent == [KnownMessage("01" * 16, now - 1000)]
    second.rooms[0].record_recent(b"\x03" * 16, now - 500)
    second.save()
    mine.record_recent(b"\x04" * 16, now)
    first.save()
    merged = KeyStore.open(store_path, "pw").rooms[0]
    assert [e.message_id for e in merged.recent] == ["01" * 16, "03" * 16, "04" * 16]
    merged.keep_history = True
    merged.history.append(entry(7))
    merged.record_deleted("05" * 16, now)
    assert sorted(merged.known()) == sorted(
        [(bytes.fromhex(message_id), time) for message_id, time in [
            (entry(7).message_id, 7), ("05" * 16, now), ("01" * 16, now - 1000),
            ("03" * 16, now - 500), ("04" * 16, now),
        ]]
    )  # fmt: skip


def test_ids_of_messages_received_lately_are_bounded_keeping_the_newest(store_path: Path) -> None:
    now = now_ms()
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    stored = store.add_room(room())
    for n in range(MAX_IDS_PER_ROOM + 5):
        stored.record_recent(n.to_bytes(16), now - n)
    store.save()
    kept = KeyStore.open(store_path, "pw").rooms[0].recent
    assert len(kept) == MAX_IDS_PER_ROOM
    assert min(e.timestamp_ms for e in kept) == now - MAX_IDS_PER_ROOM + 1


def test_saves_derive_the_key_once_and_a_new_password_once_more(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Argon2id run costs 64 MiB and about 0.1 s (the chat's screen is stuck for it):
    saves reuse the key and salt, each with a fresh nonce, and another program's save of
    the same store is read with them too."""
    KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    derive = keystore._derive
    runs = 0

    def counted(password: str, salt: bytes, kdf: dict[str, object]) -> bytes:
        nonlocal runs
        runs += 1
        return derive(password, salt, kdf)

    monkeypatch.setattr(keystore, "_derive", counted)
    first = KeyStore.open(store_path, "pw")
    second = KeyStore.open(store_path, "pw")
    assert runs == 2  # one each, to open
    nonces = set()
    for label in ("one", "two", "three"):
        first.add_room(room(key=OTHER, label=label))
        first.save()
        nonces.add(json.loads(store_path.read_bytes())["nonce"])
    second.add_room(room(label="from the second"))
    second.save()  # reads the first's writes (same salt) and merges them
    assert runs == 2
    assert len(nonces) == 3
    assert sorted(r.label for r in KeyStore.open(store_path, "pw").rooms) == [
        "from the second",
        "three",
    ]
    salt = json.loads(store_path.read_bytes())["kdf"]["salt"]
    first.change_password("new pw")
    assert json.loads(store_path.read_bytes())["kdf"]["salt"] != salt
    with pytest.raises(WrongPassword):
        KeyStore.open(store_path, "pw")
    first.save()
    assert len(KeyStore.open(store_path, "new pw").rooms) == 2


def test_a_password_change_that_could_not_be_written_keeps_the_old_one(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    write = keystore._write_atomically

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keystore, "_write_atomically", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.change_password("new pw")
    monkeypatch.setattr(keystore, "_write_atomically", write)
    store.add_room(room())
    store.save()  # with the old password, as the file on disk has it
    assert len(KeyStore.open(store_path, "pw").rooms) == 1


def test_taking_in_another_program_s_save_writes_nothing_when_there_is_nothing_to_add(
    store_path: Path,
) -> None:
    """Two programs that each answered the other's write with one of their own would
    rewrite the store for ever."""
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    first.add_room(room(label="team"))
    first.save()
    second = KeyStore.open(store_path, "pw")
    first.add_room(room(key=OTHER, label="added there"))
    first.save()
    written = store_path.read_bytes()
    assert second.changed_elsewhere()
    assert second.take_in() == []
    assert store_path.read_bytes() == written  # nothing written
    assert sorted(r.label for r in second.rooms) == ["added there", "team"]
    assert not second.changed_elsewhere()
    second.rooms[0].record_recent(b"\x07" * 16, now_ms())  # ids alone wait for a save
    assert second.take_in() == []
    assert store_path.read_bytes() == written
    for _ in range(3):  # taking in the same ids again and again adds none
        first.rooms[0].record_recent(b"\x08" * 16, now_ms())
        first.save()
        second.take_in()
    assert sorted(e.message_id for e in second.rooms[0].recent) == ["07" * 16, "08" * 16]
    # A change of its own is written, merged with theirs.
    first.forget(first.find("added there"))
    first.save()
    second.find("team").label = "renamed"
    forgotten = second.take_in()
    assert [r.label for r in forgotten] == ["added there"]
    (stored,) = KeyStore.open(store_path, "pw").rooms
    assert stored.label == "renamed"
    assert sorted(e.message_id for e in stored.recent) == ["07" * 16, "08" * 16]


def test_ids_recorded_while_saves_fail_stay_bounded_in_memory(store_path: Path) -> None:
    stored = room()
    now = now_ms()
    for n in range(2 * MAX_IDS_PER_ROOM + 1):
        stored.record_recent(n.to_bytes(16), now)
    assert len(stored.recent) <= 2 * MAX_IDS_PER_ROOM
    assert stored.recent[-1].message_id == (2 * MAX_IDS_PER_ROOM).to_bytes(16).hex()


def test_a_room_is_written_as_all_of_its_fields() -> None:
    """The writer's own conversion of a room to JSON (faster than asdict) leaves none out."""
    stored = room()
    stored.history.append(dataclasses.replace(entry(1), sent=False))
    stored.record_deleted("02" * 16, 2)
    stored.record_recent(b"\x03" * 16, 3)
    stored.add_outgoing(b"\x04" * 16, 4, b"sealed")
    assert keystore._plain(stored) == dataclasses.asdict(stored)


def test_ids_dropped_for_the_bound_leave_a_floor_and_ids_too_old_do_not(
    store_path: Path,
) -> None:
    """Which of the messages older than the newest 10,000 came is forgotten: the newest
    time among them becomes a floor, below which the replay filter believes nothing."""
    now = now_ms()
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    stored = store.add_room(room())
    stored.record_recent(b"\xff" * 16, now - IDS_KEPT_MS - 1000)  # too old: no floor
    store.save()
    assert KeyStore.open(store_path, "pw").rooms[0].recent_floor_ms == 0
    for n in range(MAX_IDS_PER_ROOM + 3):
        stored.record_recent(n.to_bytes(16), now - 10 * n)  # the 3 oldest go for the bound
    store.save()
    again = KeyStore.open(store_path, "pw")
    (kept,) = again.rooms
    assert len(kept.recent) == MAX_IDS_PER_ROOM
    assert kept.recent_floor_ms == now - 10 * MAX_IDS_PER_ROOM
    assert min(e.timestamp_ms for e in kept.recent) > kept.recent_floor_ms
    # Merged with another program's: the later floor holds, whichever program has it.
    other = KeyStore.open(store_path, "pw")
    other.rooms[0].recent_floor_ms = now - 5
    other.save()
    again.save()
    assert KeyStore.open(store_path, "pw").rooms[0].recent_floor_ms == now - 5
    again.rooms[0].recent_floor_ms = now - 50  # (written as is: the file was its own)
    again.save()
    other.rooms[0].recent_floor_ms = now - 4  # merged with the file's now - 50: the higher
    other.save()
    assert KeyStore.open(store_path, "pw").rooms[0].recent_floor_ms == now - 4


def test_a_floor_too_old_to_matter_or_ahead_of_the_clock_is_forgotten(store_path: Path) -> None:
    now = now_ms()
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    old, ahead, near = (store.add_room(room(key=k)) for k in (KEY, OTHER, THIRD))
    old.recent_floor_ms = now - IDS_KEPT_MS - 1000  # refused for its age anyway
    ahead.recent_floor_ms = now + 24 * 3_600_000  # a clock since set back
    near.recent_floor_ms = now - 1000
    store.save()
    floors = [r.recent_floor_ms for r in KeyStore.open(store_path, "pw").rooms]
    assert floors == [0, 0, now - 1000]


@pytest.mark.parametrize("floor", [-1, "soon", 1.5, True, 2**53])
def test_a_floor_that_is_no_time_is_damage(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, floor: object
) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room())
    plain = keystore._plain
    monkeypatch.setattr(
        keystore, "_plain", lambda stored: plain(stored) | {"recent_floor_ms": floor}
    )
    store.save()
    monkeypatch.undo()
    with pytest.raises(DamagedStore, match="damaged inside"):
        KeyStore.open(store_path, "pw")


def test_the_name_given_last_is_kept_merged_and_wiped(store_path: Path) -> None:
    """The name to go by is kept in the store, sealed like the rest; a program that did not
    change it takes another's; one that did keeps its own; a wipe forgets it."""
    first = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    assert first.name == ""
    first.name = "Alice"
    first.save()
    assert b"Alice" not in store_path.read_bytes()
    second = KeyStore.open(store_path, "pw")
    assert second.name == "Alice"
    second.name = "Alice B."
    second.save()
    first.add_room(room(label="kept"))  # saves with a name it did not change
    first.save()
    assert first.name == "Alice B."
    assert KeyStore.open(store_path, "pw").name == "Alice B."
    # Changed on both sides: the one saved last is the one kept, in both programs.
    first.name = "Ali"
    second.name = "A."
    second.save()
    first.save()
    assert KeyStore.open(store_path, "pw").name == "Ali"
    assert second.take_in() == []
    assert second.name == "Ali"
    # A name changed, and nothing else: take_in writes it rather than drop it.
    second.name = "Al"
    second.take_in()
    assert KeyStore.open(store_path, "pw").name == "Al"
    second.wipe()
    assert KeyStore.open(store_path, "pw").name == ""


def test_a_store_written_before_names_were_kept_opens_with_none(store_path: Path) -> None:
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room())
    store.save()
    # The contents as an older version wrote them: no "name".
    sealing = store._sealing
    assert sealing is not None
    document = json.loads(store_path.read_bytes())
    plain = AESGCM(sealing.key).decrypt(
        keystore._unb64(document["nonce"]),
        keystore._unb64(document["ciphertext"]),
        keystore._aad(keystore._header(document["kdf"])),
    )
    contents = json.loads(plain)
    del contents["name"]
    nonce = os.urandom(12)
    document["nonce"] = keystore._b64(nonce)
    document["ciphertext"] = keystore._b64(
        AESGCM(sealing.key).encrypt(
            nonce,
            json.dumps(contents).encode(),
            keystore._aad(keystore._header(document["kdf"])),
        )
    )
    store_path.write_bytes(json.dumps(document).encode())
    opened = KeyStore.open(store_path, "pw")
    assert (opened.name, [r.label for r in opened.rooms]) == ("", ["team"])


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(f"https://relay.example/#{KEY}", id="link"),
        pytest.param(f"instantroom://x#{KEY}", id="other-scheme"),
        pytest.param(f"{KEY}!", id="key-and-a-character"),
        pytest.param(f"key={KEY}", id="key-equals"),
        pytest.param(" ".join(KEY[i : i + 5] for i in range(0, 30, 5)), id="grouped"),
        pytest.param("\u2009-\u2009".join(KEY[i : i + 5] for i in range(0, 30, 5)), id="dashed"),
        pytest.param(f"relay.example/#{KEY[:12]}0{KEY[13:]}", id="link-with-a-typo"),
        pytest.param(",".join(KEY[i : i + 5] for i in range(0, 30, 5)), id="commas"),
        pytest.param("/".join(KEY[i : i + 5] for i in range(0, 30, 5)), id="slashes"),
        pytest.param("\u00b7".join(KEY[i : i + 5] for i in range(0, 30, 5)), id="middle-dots"),
        pytest.param(f"{KEY[:15]}({KEY[16:]}", id="a-symbol-for-a-character"),
        pytest.param("; ".join(spell_minikey(KEY)), id="spelled-out"),
    ],
)
def test_text_holding_a_key_given_for_a_label_is_not_echoed(
    store_path: Path, given: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A key, or a link or other text holding one, where a label goes (send --room, listen
    --room, forget, qr, chat): the error says so without quoting it. Quoted, the key was on
    the terminal, in its scrollback and in any log of it."""
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room(key=OTHER))
    store.save()
    with pytest.raises(keystore.NoSuchRoom) as raised:
        store.find(given)
    monkeypatch.setenv("INSTANTROOM_KEYSTORE", str(store_path))
    monkeypatch.setenv("INSTANTROOM_PASSWORD", "pw")
    assert main(["forget", given]) == 2
    said = capsys.readouterr().err
    for message in (str(raised.value), said):
        assert "not shown here: it may hold a room key" in message
        assert "--key" in message
        shown = "".join(char for char in message if char.isalnum())
        assert not any(KEY[i : i + 4] in shown for i in range(len(KEY) - 3)), message
    assert len(KeyStore.open(store_path, "pw").rooms) == 1


@pytest.mark.parametrize("given", ["nosuch", "team room", "abcdef0123456789abcdef0123"])
def test_a_label_or_room_id_that_matches_no_room_is_quoted(store_path: Path, given: str) -> None:
    """A label or a room id's start (hex) holds no key: it is named, as it was typed."""
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    store.add_room(room())
    with pytest.raises(keystore.NoSuchRoom, match=f"No stored room is labelled '{given}'"):
        store.find(given)


def test_a_store_deleted_while_open_is_not_written_back(store_path: Path) -> None:
    """Deleting the file is how a person discards the store (a forgotten password, rooms to
    be rid of): a program that had it open wrote it all back, under the old password, at
    its next save (a listen within 10 s, a chat within 1 s)."""
    store = KeyStore.create(store_path, "old pw", kdf=FAST_KDF)
    store.add_room(room())
    store.save()
    store_path.unlink()
    store.rooms[0].record_recent(bytes(16), now_ms())
    for write in (store.save, store.take_in, lambda: store.change_password("new pw")):
        with pytest.raises(StoreChanged, match="deleted since this program opened it"):
            write()
        assert not store_path.exists()
    store.wipe()  # what was asked is done: nothing is left, and nothing is written
    assert not store_path.exists()
    assert store.rooms == []
    # A store made anew, there or after the deletion, is made.
    KeyStore.create(store_path, "new pw", kdf=FAST_KDF).save()
    assert KeyStore.open(store_path, "new pw").rooms == []


@pytest.mark.parametrize("field", ["nonce", "ciphertext", "salt"])
def test_a_header_field_holding_a_character_that_is_not_ascii_is_damage(
    store_path: Path, field: str
) -> None:
    """base64 refuses such a character with a ValueError of its own, not binascii.Error:
    the command line printed a traceback; a chat or listen whose store another program
    damaged so ended on its next save."""
    store = KeyStore.create(store_path, "pw", kdf=FAST_KDF)
    document = json.loads(store_path.read_bytes())
    where = document["kdf"] if field == "salt" else document
    where[field] = "\u00e9" + where[field][1:]
    damaged = json.dumps(document).encode()
    store_path.write_bytes(damaged)  # by another program, while this one has it open
    with pytest.raises(DamagedStore):
        KeyStore.open(store_path, "pw")
    store.add_room(room())
    with pytest.raises(DamagedStore):
        store.save()
    assert store_path.read_bytes() == damaged


def test_a_folder_that_cannot_be_flushed_after_the_rename_does_not_fail_the_write(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once renamed, the file is the new one: passwd said the change failed, and the
    program went on with the old password, which no longer opened the file (its next save
    was refused as a password changed elsewhere)."""
    store = KeyStore.create(store_path, "old pw", kdf=FAST_KDF)
    fsync = os.fsync

    def folders_fail(descriptor: int) -> None:
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", folders_fail)
    store.change_password("new pw")
    store.add_room(room())
    store.save()
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(WrongPassword):
        KeyStore.open(store_path, "old pw")
    assert [r.key for r in KeyStore.open(store_path, "new pw").rooms] == [KEY]

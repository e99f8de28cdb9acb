"""How long one save of the terminal client's key store takes, with the default Argon2id
settings: the key derived once per program (as now) against derived again for every save
(as before), measured in the same run on the same store.

The chat saves as messages arrive (kept history, the ids of the last hour), on its event
loop: while a save runs, its screen does not move.

    .venv/bin/python benchmarks/keystore_save.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from instantroom.client.keystore import (
    MAX_IDS_PER_ROOM,
    HistoryEntry,
    KeyStore,
    StoredRoom,
)

KEY = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"


def median_save_ms(store: KeyStore, rounds: int, *, derive_each_time: bool) -> float:
    times = []
    for _ in range(rounds):
        if derive_each_time:
            store._sealing = None  # what every save did before the key was kept
        started = time.perf_counter()
        store.save()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def store_with(folder: Path, *, history: int, ids: int) -> KeyStore:
    store = KeyStore.create(folder / f"store-{history}-{ids}.json", "a password")
    room = store.add_room(StoredRoom(KEY, "team", "https://relay.example/", 0, True))
    now = time.time_ns() // 1_000_000
    for n in range(history):
        room.history.append(HistoryEntry(f"{n:032x}", now - n, "alice", "AAAA-BBBB", "x" * 80))
    for n in range(ids):
        room.record_recent(n.to_bytes(16), now - n)
    store.save()
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print("| store | derived per save, ms | key kept, ms | kept / per save |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for label, history, ids in (
            ("1 room, nothing kept", 0, 0),
            (f"1 room, 1,000 kept messages, {MAX_IDS_PER_ROOM:,} ids", 1000, MAX_IDS_PER_ROOM),
        ):
            store = store_with(Path(folder), history=history, ids=ids)
            before = median_save_ms(store, args.rounds, derive_each_time=True)
            now = median_save_ms(store, args.rounds, derive_each_time=False)
            print(f"| {label} | {before:.1f} | {now:.1f} | {now / before:.2f}x |")


if __name__ == "__main__":
    main()

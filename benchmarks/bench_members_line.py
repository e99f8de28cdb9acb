"""How long the terminal chat's members line takes with a full roster (1,000 members, as a
hostile member announcing throwaway keys can make it): worked out from nothing on every
event (as before: each member's canonical name and scripts, then the sort), against kept
between events and worked out again only when what it shows changed (as now), measured in
the same run on the same roster.

Each event of the chat redraws the panels, the members line among them; a name mixing
look-alike scripts is found by ``scripts_of``, whose cache holds ``MAX_NAMES_PER_ROOM``
names: a roster of that many and one writer more make it miss every time (``--cold``).

    .venv/bin/python benchmarks/bench_members_line.py
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from instantroom.client.keystore import KeyStore, StoredRoom
from instantroom.protocol.kdf import fingerprint
from instantroom.protocol.minikey import make_minikey
from instantroom.protocol.roster import MAX_ROSTER, Member
from instantroom.tui.app import ChatApp, MembersLine, RoomView, scripts_of

# A fast key derivation: the store is only a place for the room.
FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_kib": 1024}
CYRILLIC_A = "\u0430"
HOUR_MS = 3_600_000


def roster(size: int) -> tuple[Member, ...]:
    """Throwaway members with names of 64 characters; a few mix scripts, a few have a new
    key (marked ⚠, so listed first)."""
    members = []
    for n in range(size):
        key = secrets.token_bytes(32)
        look_alike = CYRILLIC_A if n % 97 == 0 else ""
        name = f"{look_alike}throwaway {secrets.token_hex(24)} {n}"[:64]
        members.append(Member(key, name, fingerprint(key), n % 131 == 0))
    return tuple(members)


def median_ms(app: ChatApp, view: RoomView, rounds: int, *, change: str, cold: bool) -> float:
    """The median time of the line after ``change``: "all" (made from nothing, as every
    event did before), "none", "count" (the relay's count), or "names" (a name in the
    roster seen with another key, or a new roster: the members' marks are kept)."""
    times = []
    app._members_text(view)
    for n in range(rounds):
        if cold:
            scripts_of.cache_clear()
        if change == "all":
            view.members_line = MembersLine()
        elif change == "count":
            view.online = (view.online or 0) + (1 if n % 2 else -1)
        elif change == "names":
            view.members_line.touched(view.members_line.mark(view.roster[0])[0])
        started = time.perf_counter()
        app._members_text(view)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--size", type=int, default=MAX_ROSTER)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = KeyStore.create(Path(folder) / "store.json", "a password", kdf=FAST_KDF)
        expires = time.time_ns() // 1_000_000 + HOUR_MS
        key = make_minikey(secrets.randbelow)
        store.add_room(StoredRoom(key, "team", "http://127.0.0.1:9/", expires))
        app = ChatApp(store, "bob")
        (view,) = app._views.values()
        view.roster = roster(args.size)
        view.online = args.size + 1
        print(
            f"| {args.size:,} members | made each event, ms | kept: nothing changed | "
            "the count changed | a name or the roster changed | made each event / the last |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for label, cold in (("scripts_of cached", False), ("scripts_of missing", True)):
            before, unchanged, count, names = (
                median_ms(app, view, args.rounds, change=change, cold=cold)
                for change in ("all", "none", "count", "names")
            )
            print(
                f"| {label} | {before:.2f} | {unchanged:.4f} | {count:.3f} | {names:.2f} | "
                f"{before / names:,.0f}x |"
            )


if __name__ == "__main__":
    main()

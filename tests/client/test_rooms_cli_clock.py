"""A room's key is deleted for good when its lifetime is over: a command that opens the key
store asks the relays of the rooms that look over by this computer's clock, and one that
says the clock is fast keeps them (as ``RoomClient.expiry_now`` does once connected)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from instantroom.client import connection
from instantroom.client.keystore import KeyStore, StoredRoom
from instantroom.protocol import frames
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import run
from tests.client.test_cli import instantroom
from tests.client.test_room_client import FakeRelay, serving
from tests.client.test_rooms_cli import NOWHERE, PASSWORD

FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_kib": 1024}
DAY_S = 86_400
DAY_MS = DAY_S * 1000


def real_now_ms() -> int:
    return time.time_ns() // 1_000_000


def store_with(path: Path, server: str, expires_at_ms: int) -> None:
    store = KeyStore.create(path, PASSWORD, kdf=FAST_KDF)
    store.add_room(StoredRoom(make_minikey(secrets.randbelow), "team", server, expires_at_ms))
    store.save()


async def rooms(path: Path, *args: str) -> tuple[int, str, str]:
    env = {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(path)}
    return await instantroom("rooms", *args, env=env)


def labels(path: Path) -> list[str]:
    return [room.label for room in KeyStore.open(path, PASSWORD).rooms]


def test_a_clock_the_relay_says_is_days_fast_deletes_no_room_at_store_open(
    tmp_path: Path,
) -> None:
    """By this clock, 3 days fast, the room ended 2 days ago; by its relay's, it has a day
    left. Every room went at once when a command opened the store."""
    path = tmp_path / "store.json"

    async def scenario() -> tuple[int, str, str, str]:
        async with FakeRelay(serving, clock_off_by=-3 * DAY_S) as behind:
            store_with(path, behind.url, real_now_ms() - 2 * DAY_MS)
            status, out, err = await rooms(path)
            return status, out, err, behind.url

    status, out, err, url = run(scenario())
    assert status == 0, err
    assert "team" in out
    assert "has expired" not in err
    assert "This computer's clock is about 3 days fast" in err
    assert f"So says the relay at {url};" in err
    assert "judged by the relay's time" in err
    assert len(err.strip().splitlines()) == 1
    assert labels(path) == ["team"]


def test_a_relay_out_of_reach_leaves_this_clock_to_judge(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    store_with(path, NOWHERE, real_now_ms() - 2 * DAY_MS)
    status, out, err = run(rooms(path))
    assert status == 0, err
    assert "team" not in out
    assert "Room 'team' has expired: its key and messages are deleted." in err
    assert "fast" not in err
    assert labels(path) == []


@pytest.mark.parametrize(
    ("clock_off_by", "ended_ms_ago"),
    [
        (-3 * DAY_S, 4 * DAY_MS),  # 3 days fast, and over a day ago by the relay's clock too
        (3 * DAY_S, 1000),  # slow by the relay's: never read forward, nor back
        (0, 1000),  # on time
    ],
)
def test_a_room_over_by_its_relays_clock_too_is_deleted(
    tmp_path: Path, clock_off_by: int, ended_ms_ago: int
) -> None:
    path = tmp_path / "store.json"

    async def scenario() -> tuple[int, str, str]:
        async with FakeRelay(serving, clock_off_by=clock_off_by) as relay:
            store_with(path, relay.url, real_now_ms() - ended_ms_ago)
            return await rooms(path, "--offline")

    status, out, err = run(scenario())
    assert status == 0, err
    assert "team" not in out
    assert "Room 'team' has expired: its key and messages are deleted." in err
    assert "judged by the relay's time" not in err
    assert labels(path) == []


def test_no_relay_is_asked_when_no_room_looks_over(tmp_path: Path) -> None:
    path = tmp_path / "store.json"

    async def scenario() -> tuple[int, str, str, int]:
        async with FakeRelay(serving, clock_off_by=-3 * DAY_S) as relay:
            store_with(path, relay.url, real_now_ms() + 3_600_000)
            status, out, err = await rooms(path, "--offline")
            return status, out, err, len(relay.peers)

    status, out, err, connections = run(scenario())
    assert status == 0, err
    assert "team" in out
    assert err == ""
    assert connections == 0


def test_relay_clock_offsets_asks_each_relay_once_and_leaves_out_what_does_not_answer() -> None:
    async def scenario() -> tuple[dict[str, int], str, int]:
        async with (
            FakeRelay(serving, clock_off_by=-600) as behind,
            FakeRelay(serving, subprotocol=False) as not_a_relay,
        ):
            offsets = await connection.relay_clock_offsets(
                [behind.url, behind.url, not_a_relay.url, NOWHERE, "no server"]
            )
            return offsets, behind.url, len(behind.peers)

    offsets, url, asked = run(scenario())
    assert list(offsets) == [url]
    assert abs(offsets[url] - 600_000) < 2_000  # ours is 10 minutes fast
    assert asked == 1


def test_send_asks_the_relay_too_before_deleting_and_sends_to_the_room_it_kept(
    tmp_path: Path,
) -> None:
    """``send --room`` opens the store from within its event loop; the room kept is joined
    by the relay's reading of this clock too, not refused as over by this clock alone."""
    path = tmp_path / "store.json"

    async def scenario() -> tuple[int, str, int]:
        async with FakeRelay(serving, clock_off_by=-3 * DAY_S) as behind:
            store_with(path, behind.url, real_now_ms() - 2 * DAY_MS)
            env = {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(path)}
            status, _, err = await instantroom(
                "send", "--room", "team", "--timeout", "5", "hi", env=env
            )
            published = sum(
                isinstance(frame, frames.Publish)
                for peer in behind.peers
                for frame in peer.received
            )
            return status, err, published

    status, err, published = run(scenario())
    assert "Traceback" not in err
    assert "judged by the relay's time" in err
    assert (status, published) == (0, 1), err
    assert labels(path) == ["team"]


def rooms_ended_2_days_ago(path: Path, fast_by_days: int) -> tuple[int, str, str]:
    """``rooms --offline`` on a room over 2 days ago by this clock, its relay saying this
    clock is ``fast_by_days`` fast."""

    async def scenario() -> tuple[int, str, str]:
        async with FakeRelay(serving, clock_off_by=-fast_by_days * DAY_S) as behind:
            store_with(path, behind.url, real_now_ms() - 2 * DAY_MS)
            return await rooms(path, "--offline")

    return run(scenario())


def test_rooms_shows_a_room_its_relay_kept_with_the_time_left_by_the_relay(
    tmp_path: Path,
) -> None:
    status, out, err = rooms_ended_2_days_ago(tmp_path / "store.json", 3)
    assert status == 0, err
    assert "(in 24 h)" in out, out


def test_a_relay_saying_the_clock_is_more_than_31_days_fast_keeps_no_room(
    tmp_path: Path,
) -> None:
    """Read back by at most MAX_CLOCK_READ_BACK_MS: a relay whose Date says 1990 (or that
    lies) cannot keep a room's key on this computer for as long as it likes."""
    path = tmp_path / "store.json"
    status, out, err = rooms_ended_2_days_ago(path, 40)
    assert status == 0, err
    assert "Room 'team' has expired" in err
    assert "team" not in out
    assert labels(path) == []
    connection._clock_offsets["ws://relay.example:1/ws"] = 40 * DAY_MS
    assert abs(connection.relay_expiry_now("http://relay.example:1") - real_now_ms()) < 1000

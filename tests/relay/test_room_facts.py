"""Room facts are bounded: expired rooms are remembered for a while, then forgotten, and a
relay that remembers as many rooms as it may refuses new ones with RELAY_FULL."""

from __future__ import annotations

import asyncio
import time

from instantroom.protocol.codes import ErrorCode
from instantroom.relay.rooms import RoomFacts
from instantroom.relay.server import address_key
from instantroom.testing import (
    RawClient,
    assert_exited_cleanly,
    fresh_room,
    http_request,
    raw_client,
    run,
    running_relay,
)


def test_facts_expire_then_are_forgotten() -> None:
    facts = RoomFacts(keep_ms=1000, limit=10)
    facts.record(b"a", 100)
    facts.record(b"a", 5000)  # the first expiry stands
    assert facts.expiry(b"a") == 100
    assert facts.due(99) == []
    assert facts.due(100) == [b"a"]
    assert facts.expired(b"a")
    assert facts.expiry(b"a") is None
    facts.record(b"a", 9000)  # an expired room cannot be given a new life
    assert facts.expiry(b"a") is None
    assert len(facts) == 1
    assert facts.due(1099) == []
    assert facts.due(1100) == []
    assert not facts.expired(b"a")
    assert len(facts) == 0


def test_facts_are_bounded() -> None:
    facts = RoomFacts(keep_ms=1000, limit=2)
    facts.record(b"a", 100)
    assert not facts.full
    facts.record(b"b", 100)
    assert facts.full
    facts.due(100)
    assert facts.full  # expired ids still count while they are kept
    facts.due(1100)
    assert not facts.full


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")


def gauge(body: bytes, name: str) -> float:
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_the_relay_forgets_expired_rooms_and_refuses_past_its_limit() -> None:
    args = ("--max-room-lifetime", "2", "--max-rooms", "2")
    with running_relay(*args) as relay:

        async def scenario() -> None:
            now = int(time.time() * 1000)
            first, second, third = fresh_room(), fresh_room(), fresh_room()
            async with raw_client(relay.ws_url) as client:
                await client.join(first, now + 1000)
                await client.join(second, now + 1000)
                # Two facts: a third room with an expiry to record is refused, after proof.
                challenge = await client.challenge(third, now + 1000)
                await client.send(RawClient.proof(third, challenge))
                refused = await client.expect_error(ErrorCode.RELAY_FULL)
                assert refused.room_id == third.room_id
            metrics = await http_request(relay.port, "/metrics")
            assert gauge(metrics.body, "instantroom_room_facts") == 2
            # Past expiry + the keeping time (the lifetime cap, 2 s), all is forgotten...
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                metrics = await http_request(relay.port, "/metrics")
                if gauge(metrics.body, "instantroom_room_facts") == 0:
                    break
                await asyncio.sleep(0.25)
            assert gauge(metrics.body, "instantroom_room_facts") == 0
            # ...and there is room again.
            async with raw_client(relay.ws_url) as client:
                later = int(time.time() * 1000) + 1000
                assert (await client.join(third, later)).expires_at_ms == later

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_member_that_leaves_all_its_rooms_is_not_taken_for_a_half_open_handshake() -> None:
    with running_relay("--handshake-timeout", "1") as relay:

        async def scenario() -> None:
            room = fresh_room()
            async with raw_client(relay.ws_url) as client:
                await client.join(room)
                from instantroom.protocol import frames

                await client.send(frames.Leave(room.room_id))
                await asyncio.sleep(2.5)  # past the handshake timeout, and two sweeps
                assert await client.barrier() == []  # still connected

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_rate_limited_join_names_its_room_and_the_client_tries_again() -> None:
    with running_relay("--messages-per-second", "2", "--message-burst", "2") as relay:

        async def scenario() -> None:
            from instantroom.client.connection import RoomClient
            from instantroom.protocol.kdf import DeviceKey

            rooms = [fresh_room() for _ in range(3)]
            async with raw_client(relay.ws_url) as raw:
                from instantroom.protocol import frames

                for room in rooms:
                    await raw.send(frames.Join(room.room_id, room.public_key, 0))
                await raw.expect(frames.Challenge)
                await raw.expect(frames.Challenge)
                refused = await raw.expect_error(ErrorCode.RATE_LIMITED)
                assert refused.room_id == rooms[2].room_id
            device = DeviceKey.from_private_bytes(bytes(32))
            async with RoomClient(relay.url, device, "patient") as client:
                joins = [client.join(room) for room in rooms]
                results = await asyncio.wait_for(asyncio.gather(*joins), 20)
                assert [j.room_id for j in results] == [r.room_id for r in rooms]

        run(scenario())
    assert_exited_cleanly(relay)

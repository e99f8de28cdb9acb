"""Room facts are bounded: expired rooms are remembered for a while, then forgotten (first
when space runs out); a relay whose every fact is a live room refuses new ones with
RELAY_FULL, and so does it for an address that made as many live rooms as it may."""

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
    facts = RoomFacts(keep_ms=1000, limit=10, per_address=10)
    facts.record(b"a", 100, "x")
    facts.record(b"a", 5000, "x")  # the first expiry stands
    assert facts.expiry(b"a") == 100
    assert facts.due(99) == []
    assert facts.due(100) == [b"a"]
    assert facts.expired(b"a")
    assert facts.expiry(b"a") is None
    facts.record(b"a", 9000, "x")  # an expired room cannot be given a new life
    assert facts.expiry(b"a") is None
    assert len(facts) == 1
    assert facts.due(1099) == []
    assert facts.due(1100) == []
    assert not facts.expired(b"a")
    assert len(facts) == 0


def test_a_shortened_expiry_is_due_at_its_new_time_and_only_then() -> None:
    """An earlier expiry from another relay brings the room's forward; a later one, or a
    room with none recorded, changes nothing, and the later entry it leaves is skipped."""
    facts = RoomFacts(keep_ms=1000, limit=10, per_address=10)
    facts.record(b"a", 500, "x")
    facts.shorten(b"a", 800)  # later: the earlier holds
    facts.shorten(b"b", 100)  # nothing recorded
    assert (facts.expiry(b"a"), facts.expiry(b"b")) == (500, None)
    facts.shorten(b"a", 200)
    assert facts.expiry(b"a") == 200
    assert facts.due(199) == []
    assert facts.due(200) == [b"a"]
    assert facts.due(500) == []  # the later entry: not a second expiry
    assert facts.expired(b"a")
    assert facts.due(1200) == []
    assert not facts.expired(b"a")
    assert len(facts) == 0


def test_facts_are_bounded_and_expired_ids_give_way_to_live_rooms() -> None:
    facts = RoomFacts(keep_ms=1000, limit=2, per_address=10)
    facts.record(b"a", 100, "x")
    assert facts.make_space()
    facts.record(b"b", 200, "x")
    assert not facts.make_space()  # two live rooms: nothing gives way
    assert facts.due(100) == [b"a"]
    assert facts.expired(b"a")
    assert facts.make_space()  # the expired id is forgotten for a live room
    assert not facts.expired(b"a")
    assert len(facts) == 1
    facts.record(b"c", 300, "x")
    assert facts.due(1100) == [b"b", b"c"]  # the forgotten id's entry (1100) is passed over
    assert len(facts) == 2
    assert facts.due(1300) == []
    assert len(facts) == 0


def test_rooms_made_without_end_keep_the_facts_memory_bounded() -> None:
    """Short-lived rooms, made one after another: expired ids give way, and what was
    kept for them (heap entries) does not pile up either."""
    facts = RoomFacts(keep_ms=10**9, limit=1000, per_address=10**6)
    for n in range(20_000):
        now = n * 10
        facts.due(now)
        assert facts.make_space()
        facts.record(n.to_bytes(4), now + 5, "x")
    assert len(facts) <= 1000
    assert len(facts._heap) <= 2 * 1000 + 1024
    assert facts.due(10**10) == [(19_999).to_bytes(4)]  # the one still live, once
    assert len(facts) == 0  # and nothing else was left behind


def test_one_address_makes_a_bounded_number_of_live_rooms() -> None:
    facts = RoomFacts(keep_ms=1000, limit=100, per_address=2)
    facts.record(b"a", 100, "x")
    facts.record(b"b", 200, "x")
    assert not facts.may_record("x")
    assert facts.may_record("y")
    facts.record(b"a", 300, "x")  # known already: not counted twice
    facts.due(100)
    assert facts.may_record("x")  # an expired room no longer counts


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


def test_one_address_cannot_fill_the_relay_with_rooms() -> None:
    with running_relay("--max-rooms-per-address", "2") as relay:

        async def scenario() -> None:
            later = int(time.time() * 1000) + 60_000
            first, second, third = fresh_room(), fresh_room(), fresh_room()
            async with raw_client(relay.ws_url) as client:
                await client.join(first, later)
                await client.join(second, later)
                challenge = await client.challenge(third, later)
                await client.send(RawClient.proof(third, challenge))
                refused = await client.expect_error(ErrorCode.RELAY_FULL)
                assert refused.room_id == third.room_id
                assert "your address" in refused.reason
                # A room without an expiry records nothing, and so is let in.
                await client.join(fresh_room())
            async with raw_client(relay.ws_url) as again:
                # The rooms it made stay open to it: joining one records nothing new.
                assert (await again.join(first, later)).expires_at_ms == later

        run(scenario())
    assert_exited_cleanly(relay)


def test_an_expiry_told_for_a_room_already_open_counts_as_a_new_fact() -> None:
    """Rooms opened without an expiry record nothing; telling their expiry afterwards,
    from another connection, records one each, within the same limits as a new room."""
    with running_relay("--max-rooms-per-address", "2", "--max-rooms", "20") as relay:

        async def scenario() -> None:
            later = int(time.time() * 1000) + 60_000
            rooms = [fresh_room() for _ in range(3)]
            async with raw_client(relay.ws_url) as opener, raw_client(relay.ws_url) as teller:
                for room in rooms:
                    assert (await opener.join(room)).expires_at_ms == 0
                for room in rooms[:2]:
                    assert (await teller.join(room, later)).expires_at_ms == later
                challenge = await teller.challenge(rooms[2], later)
                await teller.send(RawClient.proof(rooms[2], challenge))
                refused = await teller.expect_error(ErrorCode.RELAY_FULL)
                assert (refused.room_id, "your address" in refused.reason) == (
                    rooms[2].room_id,
                    True,
                )
                # Joined without an expiry, the open room lets it in: nothing is recorded.
                assert (await teller.join(rooms[2])).expires_at_ms == 0
            metrics = (await http_request(relay.port, "/metrics")).body.decode()
            assert "instantroom_room_facts 2.0" in metrics.splitlines()

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

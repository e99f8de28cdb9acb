"""Room lifetime: the first joiner's expiry holds; past it the relay refuses joins and tells
the members (at the expiry, by a timer); an expiry past --max-room-lifetime is refused.
"""

from __future__ import annotations

import time

from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.testing import (
    RawClient,
    assert_exited_cleanly,
    fresh_room,
    raw_client,
    run,
    running_relay,
)

LIFETIME = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_room_expires_for_its_members_and_refuses_joins_after() -> None:
    room, other = fresh_room(), fresh_room()
    rid = room.room_id
    with running_relay("--max-room-lifetime", str(LIFETIME)) as relay:

        async def scenario() -> None:
            async with (
                raw_client(relay.ws_url) as alice,
                raw_client(relay.ws_url) as bob,
                raw_client(relay.ws_url) as latecomer,
            ):
                expires = now_ms() + 2000
                assert await alice.join(room, expires) == frames.Joined(rid, expires, 1)
                # The first joiner set the expiry: later ones cannot move it.
                assert await bob.join(room, expires + 60_000) == frames.Joined(rid, expires, 2)
                await bob.join(other)
                await alice.barrier()

                for member in (alice, bob):
                    member.timeout = 4  # a loaded machine may be late
                    expired = await member.expect_error(ErrorCode.ROOM_EXPIRED)
                    assert expired.room_id == rid
                    assert now_ms() >= expires
                    # Out of the room: no more publishing to it.
                    await member.send(frames.Publish(3, rid, b"too late"))
                    assert (await member.expect_error(ErrorCode.NOT_JOINED)).ref == 3
                # bob's other room lives on.
                await bob.send(frames.Publish(4, other.room_id, b"still here"))
                assert await bob.barrier() == [frames.Ack(4)]

                # Joins after the expiry are refused, whatever expiry they ask for.
                for asked in (0, now_ms() + 30_000):
                    challenge = await latecomer.challenge(room, asked)
                    await latecomer.send(RawClient.proof(room, challenge))
                    refused = await latecomer.expect_error(ErrorCode.ROOM_EXPIRED)
                    assert refused.room_id == rid
                assert await latecomer.barrier() == []

        run(scenario())
    assert_exited_cleanly(relay)


def test_an_expiry_is_bounded_by_the_longest_lifetime() -> None:
    with running_relay("--max-room-lifetime", str(LIFETIME)) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as client:
                too_far = fresh_room()
                challenge = await client.challenge(too_far, now_ms() + 2 * int(LIFETIME * 1000))
                await client.send(RawClient.proof(too_far, challenge))
                refused = await client.expect_error(ErrorCode.EXPIRY_TOO_FAR)
                assert refused.room_id == too_far.room_id

                within = now_ms() + int(LIFETIME * 1000) // 2
                assert (await client.join(fresh_room(), within)).expires_at_ms == within
                # No expiry known to the joiner, none recorded: JOINED says "not known" (0)
                # rather than stretch the room to the longest lifetime.
                unknown = fresh_room()
                assert (await client.join(unknown, 0)).expires_at_ms == 0
                # The first expiry given later is recorded, and then holds.
                async with raw_client(relay.ws_url) as creator:
                    assert (await creator.join(unknown, within)).expires_at_ms == within
                async with raw_client(relay.ws_url) as later:
                    assert (await later.join(unknown, 0)).expires_at_ms == within
                await client.barrier()  # the presence counts those joins caused
                # An expiry already past: refused at once.
                past = fresh_room()
                challenge = await client.challenge(past, now_ms() - 1000)
                await client.send(RawClient.proof(past, challenge))
                await client.expect_error(ErrorCode.ROOM_EXPIRED)

        run(scenario())
    assert_exited_cleanly(relay)

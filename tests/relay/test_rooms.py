"""Fan-out and presence, frame by frame, against a relay process.

Absence is shown with barriers: a member's PING is answered after everything the relay
did before, so a DELIVER that was coming would arrive before the PONG.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal

import pytest

from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.relay import server
from instantroom.relay.config import RelayConfig
from instantroom.relay.server import Relay, RelayConnection, encode_wire
from instantroom.testing import LOOPBACK, RelayProcess, fresh_room, raw_client, run
from tests.relay.test_input_guard import run_on_uvloop


def envelope(size: int = 300) -> bytes:
    """Stand-in ciphertext: the relay never looks inside."""
    return secrets.token_bytes(size)


def test_a_publish_reaches_every_other_member_as_sent_and_no_other_room(
    relay: RelayProcess,
) -> None:
    room_a, room_b = fresh_room(), fresh_room()

    async def scenario() -> None:
        async with (
            raw_client(relay.ws_url) as alice,
            raw_client(relay.ws_url) as bob,
            raw_client(relay.ws_url) as carol,
            raw_client(relay.ws_url) as dave,
        ):
            assert (await alice.join(room_a)).members == 1
            assert (await bob.join(room_a)).members == 2
            assert (await carol.join(room_a)).members == 3
            assert (await dave.join(room_b)).members == 1
            assert await alice.barrier() == [
                frames.Presence(room_a.room_id, 2),
                frames.Presence(room_a.room_id, 3),
            ]
            assert await bob.barrier() == [frames.Presence(room_a.room_id, 3)]

            sealed = envelope()
            await alice.send(frames.Publish(7, room_a.room_id, sealed))
            assert await alice.barrier() == [frames.Ack(7)]  # not echoed to the sender
            deliver = frames.Deliver(room_a.room_id, sealed)
            assert await bob.barrier() == [deliver]
            assert await carol.barrier() == [deliver]
            assert await dave.barrier() == []

            # The other way: room B's traffic stays in room B.
            await dave.send(frames.Publish(8, room_b.room_id, envelope()))
            assert await dave.barrier() == [frames.Ack(8)]
            for member in (alice, bob, carol):
                assert await member.barrier() == []

            # Publishing to a room one is not in is refused and reaches nobody.
            await dave.send(frames.Publish(9, room_a.room_id, envelope()))
            refused = await dave.expect_error(ErrorCode.NOT_JOINED)
            assert (refused.ref, refused.room_id) == (9, room_a.room_id)
            for member in (alice, bob, carol):
                assert await member.barrier() == []

    run(scenario())


def test_the_relay_sends_the_same_bytes_for_every_size_bucket(relay: RelayProcess) -> None:
    room = fresh_room()

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
            await alice.join(room)
            await bob.join(room)
            sent = [envelope(size) for size in (1, 285, 1053, 4125, 16413, 65565)]
            for ref, sealed in enumerate(sent, start=1):
                await alice.send(frames.Publish(ref, room.room_id, sealed))
            assert await alice.barrier() == [
                frames.Presence(room.room_id, 2),
                *(frames.Ack(ref) for ref in range(1, len(sent) + 1)),
            ]
            assert await bob.barrier() == [frames.Deliver(room.room_id, s) for s in sent]

    run(scenario())


def test_one_connection_is_in_several_rooms(relay: RelayProcess) -> None:
    room_a, room_b = fresh_room(), fresh_room()

    async def scenario() -> None:
        async with (
            raw_client(relay.ws_url) as both,
            raw_client(relay.ws_url) as only_a,
            raw_client(relay.ws_url) as only_b,
        ):
            await both.join(room_a)
            await both.join(room_b)
            await only_a.join(room_a)
            await only_b.join(room_b)
            assert await both.barrier() == [
                frames.Presence(room_a.room_id, 2),
                frames.Presence(room_b.room_id, 2),
            ]
            to_a, to_b = envelope(), envelope()
            await only_a.send(frames.Publish(1, room_a.room_id, to_a))
            await only_b.send(frames.Publish(1, room_b.room_id, to_b))
            assert await only_a.barrier() == [frames.Ack(1)]
            assert await only_b.barrier() == [frames.Ack(1)]
            assert await both.barrier() == [
                frames.Deliver(room_a.room_id, to_a),
                frames.Deliver(room_b.room_id, to_b),
            ]
            from_both = envelope()
            await both.send(frames.Publish(2, room_b.room_id, from_both))
            assert await both.barrier() == [frames.Ack(2)]
            assert await only_b.barrier() == [frames.Deliver(room_b.room_id, from_both)]
            assert await only_a.barrier() == []

    run(scenario())


def test_presence_counts_follow_joins_leaves_and_disconnects(relay: RelayProcess) -> None:
    room = fresh_room()
    rid = room.room_id

    async def counts() -> None:
        async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
            joined = await alice.join(room)
            assert joined.members == 1
            assert (await bob.join(room)).members == 2
            assert await alice.barrier() == [frames.Presence(rid, 2)]
            async with raw_client(relay.ws_url) as carol:
                third = await carol.join(room)
                assert third == frames.Joined(rid, joined.expires_at_ms, 3)
                assert await alice.barrier() == [frames.Presence(rid, 3)]
                assert await bob.barrier() == [frames.Presence(rid, 3)]
                await carol.send(frames.Leave(rid))
                assert await carol.barrier() == []  # no count for one who left
                assert await alice.barrier() == [frames.Presence(rid, 2)]
                assert await bob.barrier() == [frames.Presence(rid, 2)]
                # Having left, carol cannot publish there any more.
                await carol.send(frames.Publish(1, rid, envelope()))
                assert (await carol.expect_error(ErrorCode.NOT_JOINED)).ref == 1
                # ... and may come back.
                assert (await carol.join(room)).members == 3
                assert await alice.barrier() == [frames.Presence(rid, 3)]
                assert await bob.barrier() == [frames.Presence(rid, 3)]
            # carol hung up: the others are told.
            assert await alice.expect(frames.Presence) == frames.Presence(rid, 2)
            assert await bob.expect(frames.Presence) == frames.Presence(rid, 2)
            await bob.ws.close()
            assert await alice.expect(frames.Presence) == frames.Presence(rid, 1)
            assert await alice.barrier() == []

    run(counts())


def test_a_fragmented_message_is_one_frame(relay: RelayProcess) -> None:
    """WebSocket fragments make one message: the relay reassembles them, the member gets
    one DELIVER."""
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
            await alice.join(room)
            await bob.join(room)
            sealed = envelope(5000)
            publish = frames.encode_frame(frames.Publish(5, rid, sealed))
            await alice.ws.send([publish[:3], publish[3:40], publish[40:4000], publish[4000:]])
            assert await alice.barrier() == [frames.Presence(rid, 2), frames.Ack(5)]
            assert await bob.barrier() == [frames.Deliver(rid, sealed)]

    run(scenario())


def test_frames_to_a_member_arrive_in_the_order_the_relay_decided_them(
    relay: RelayProcess,
) -> None:
    """Bob's PROOF and first PUBLISH, read in one pass of the relay's loop: Alice hears
    that the room has two members before Bob's message, though the DELIVER could be
    written at once and the PRESENCE waits in her queue for the pass's flush."""
    room = fresh_room()

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
            await alice.join(room)
            challenge = await bob.challenge(room)
            assert await alice.barrier() == []
            sealed = envelope()
            # Both frames wait in the relay's socket while it is stopped.
            os.kill(relay.pid, signal.SIGSTOP)
            try:
                await bob.send(bob.proof(room, challenge))
                await bob.send(frames.Publish(1, room.room_id, sealed))
                await asyncio.sleep(0.05)
            finally:
                os.kill(relay.pid, signal.SIGCONT)
            # Bob's barrier first: Alice's PING, were it read in the pass that reads Bob's
            # frames, could come before them.
            heard = await bob.barrier()
            assert [type(frame) for frame in heard] == [frames.Joined, frames.Ack]
            assert await alice.barrier() == [
                frames.Presence(room.room_id, 2),
                frames.Deliver(room.room_id, sealed),
            ]

    run(scenario())


def test_an_ack_leaves_after_the_delivers_of_its_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ACK says the relay passed the message on to the members (PROTOCOL.md 10.5), so it
    is written after every DELIVER of its event-loop pass: a relay that died between the
    two would otherwise have ACKed a message a member never got, and its sender would not
    send it again. Here the sender was due a write in that pass already (a PONG) before
    the fan-out queued the member's DELIVER. (In process: the order of writes to two
    sockets cannot be seen from outside.)"""
    monkeypatch.setattr(server, "DIRECT_WRITE_GAP", math.inf)  # every frame queued
    written: list[tuple[RelayConnection, bytes]] = []
    flush = RelayConnection.flush

    def recorded_flush(conn: RelayConnection) -> None:
        written.append((conn, b"".join(conn.out)))
        flush(conn)

    monkeypatch.setattr(RelayConnection, "flush", recorded_flush)
    room, sealed = fresh_room(), envelope()
    relay = Relay(RelayConfig(host=LOOPBACK, port=0))

    async def scenario() -> None:
        await relay.start()
        try:
            url = f"ws://{LOOPBACK}:{relay.port}/ws"
            async with raw_client(url) as alice, raw_client(url) as bob:
                await alice.join(room)
                await bob.join(room)
                assert await alice.barrier() == [frames.Presence(room.room_id, 2)]
                written.clear()
                # PING then PUBLISH in one write: read in one pass.
                ping, publish = frames.Ping(7), frames.Publish(1, room.room_id, sealed)
                alice.ws.protocol.send_binary(frames.encode_frame(ping))
                alice.ws.protocol.send_binary(frames.encode_frame(publish))
                alice.ws.send_data()
                assert await alice.recv() == frames.Pong(7)
                assert await alice.recv() == frames.Ack(1)
                assert await bob.recv() == frames.Deliver(room.room_id, sealed)
        finally:
            await relay.shutdown()

    run_on_uvloop(scenario())
    ack = encode_wire(frames.encode_frame(frames.Ack(1)))
    deliver = encode_wire(frames.encode_frame(frames.Deliver(room.room_id, sealed)))
    flushed = [data for _, data in written]
    acked = [i for i, data in enumerate(flushed) if ack in data]
    delivered = [i for i, data in enumerate(flushed) if deliver in data]
    assert len(acked) == len(delivered) == 1, flushed
    assert delivered[0] < acked[0]

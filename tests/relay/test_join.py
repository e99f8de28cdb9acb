"""Joining: only a holder of the room key gets in, and only with a proof made for this
challenge on this connection. Whoever is not in a room neither posts to it nor hears of it.
"""

from __future__ import annotations

import secrets

from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.join import sign_join_proof
from instantroom.testing import RawClient, RelayProcess, fresh_room, raw_client, run


async def assert_outside(client: RawClient, *members: RawClient) -> None:
    """``client`` is in no room: the members were told of nobody new, and it hears nothing."""
    assert await client.barrier() == []
    for member in members:
        assert await member.barrier() == []


def test_a_proof_signed_with_another_rooms_key_fails(relay: RelayProcess) -> None:
    room, other = fresh_room(), fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as member, raw_client(relay.ws_url) as stranger:
            await member.join(room)
            challenge = await stranger.challenge(room)
            forged = sign_join_proof(other.signing_key, rid, challenge)
            await stranger.send(frames.Proof(rid, forged))
            refused = await stranger.expect_error(ErrorCode.PROOF_FAILED)
            assert refused.room_id == rid
            await assert_outside(stranger, member)
            # The challenge is spent: even the right proof for it is now refused.
            await stranger.send(RawClient.proof(room, challenge))
            await stranger.expect_error(ErrorCode.NO_CHALLENGE)
            # A random signature, and a proof for a random challenge, fail too.
            challenge = await stranger.challenge(room)
            await stranger.send(frames.Proof(rid, secrets.token_bytes(64)))
            await stranger.expect_error(ErrorCode.PROOF_FAILED)
            challenge = await stranger.challenge(room)
            await stranger.send(RawClient.proof(room, secrets.token_bytes(32)))
            await stranger.expect_error(ErrorCode.PROOF_FAILED)
            await assert_outside(stranger, member)

    run(scenario())


def test_a_replayed_proof_fails(relay: RelayProcess) -> None:
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as member:
            challenge = await member.challenge(room)
            seen = RawClient.proof(room, challenge)  # what an eavesdropper records
            await member.send(seen)
            assert (await member.expect(frames.Joined)).members == 1
            # Used twice on its own connection: there is no challenge left to answer.
            await member.send(seen)
            assert (await member.expect_error(ErrorCode.NO_CHALLENGE)).room_id == rid
            # Replayed on a fresh connection, after that connection's own JOIN.
            async with raw_client(relay.ws_url) as replayer:
                fresh = await replayer.challenge(room)
                assert fresh != challenge
                await replayer.send(seen)
                assert (await replayer.expect_error(ErrorCode.PROOF_FAILED)).room_id == rid
                await assert_outside(replayer, member)
                # ... and without a JOIN at all.
                async with raw_client(relay.ws_url) as bare:
                    await bare.send(seen)
                    await bare.expect_error(ErrorCode.NO_CHALLENGE)
                    await assert_outside(bare, member)

    run(scenario())


def test_a_proof_for_another_room_fails(relay: RelayProcess) -> None:
    room_a, room_b = fresh_room(), fresh_room()
    a, b = room_a.room_id, room_b.room_id

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as member, raw_client(relay.ws_url) as client:
            await member.join(room_a)
            await member.join(room_b)
            challenge_a = await client.challenge(room_a)
            # A good proof for room B over A's challenge, sent as for room B: B was never
            # asked for on this connection.
            await client.send(frames.Proof(b, sign_join_proof(room_b.signing_key, b, challenge_a)))
            assert (await client.expect_error(ErrorCode.NO_CHALLENGE)).room_id == b
            # The same signature offered for room A.
            await client.send(frames.Proof(a, sign_join_proof(room_b.signing_key, b, challenge_a)))
            assert (await client.expect_error(ErrorCode.PROOF_FAILED)).room_id == a
            await assert_outside(client, member)
            # With both rooms asked for, each challenge answers for its own room only.
            challenge_a = await client.challenge(room_a)
            challenge_b = await client.challenge(room_b)
            await client.send(frames.Proof(a, sign_join_proof(room_a.signing_key, a, challenge_b)))
            await client.expect_error(ErrorCode.PROOF_FAILED)
            await client.send(frames.Proof(b, sign_join_proof(room_b.signing_key, b, challenge_a)))
            await client.expect_error(ErrorCode.PROOF_FAILED)
            await assert_outside(client, member)

    run(scenario())


def test_the_room_id_must_be_the_hash_of_the_public_key(relay: RelayProcess) -> None:
    room_a, room_b = fresh_room(), fresh_room()
    a = room_a.room_id

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as member, raw_client(relay.ws_url) as claimer:
            await member.join(room_a)
            # Room A's id with room B's public key, and a proof B's key can make.
            await claimer.send(frames.Join(a, room_b.public_key, 0))
            challenge = (await claimer.expect(frames.Challenge)).challenge
            await claimer.send(frames.Proof(a, sign_join_proof(room_b.signing_key, a, challenge)))
            assert (await claimer.expect_error(ErrorCode.PROOF_FAILED)).room_id == a
            await assert_outside(claimer, member)

    run(scenario())


def test_without_joining_one_cannot_publish_or_hear_a_room(relay: RelayProcess) -> None:
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        async with (
            raw_client(relay.ws_url) as alice,
            raw_client(relay.ws_url) as outsider,
            raw_client(relay.ws_url) as asker,
        ):
            await alice.join(room)
            # No JOIN at all.
            await outsider.send(frames.Publish(41, rid, b"\x01" * 300))
            refused = await outsider.expect_error(ErrorCode.NOT_JOINED)
            assert refused.ref == 41
            # JOIN asked for but never proved.
            await asker.challenge(room)
            await asker.send(frames.Publish(42, rid, b"\x01" * 300))
            assert (await asker.expect_error(ErrorCode.NOT_JOINED)).ref == 42
            assert await alice.barrier() == []

            # Members come and go and talk; the two outside hear nothing of it.
            async with raw_client(relay.ws_url) as bob:
                await bob.join(room)
                await bob.send(frames.Publish(1, rid, b"\x02" * 300))
                assert await bob.barrier() == [frames.Ack(1)]
                await alice.send(frames.Publish(1, rid, b"\x03" * 300))
                assert await alice.barrier() == [
                    frames.Presence(rid, 2),
                    frames.Deliver(rid, b"\x02" * 300),
                    frames.Ack(1),
                ]
                assert await bob.barrier() == [frames.Deliver(rid, b"\x03" * 300)]
            assert await alice.barrier() == [frames.Presence(rid, 1)]
            for client in (outsider, asker):
                assert await client.barrier() == []

    run(scenario())

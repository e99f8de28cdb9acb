"""Limits: each bad client is refused or cut off as its limit says, while a well-behaved
member of the same room keeps receiving, and the relay stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from instantroom.protocol import frames
from instantroom.protocol.codes import SUBPROTOCOL, CloseCode, ErrorCode, FrameType
from instantroom.protocol.kdf import RoomKeys
from instantroom.testing import (
    LOOPBACK,
    RawClient,
    RelayProcess,
    assert_exited_cleanly,
    fresh_room,
    http_request,
    raw_client,
    read_response_head,
    run,
    running_relay,
    send_raw,
    upgrade_request,
)


async def still_flowing(sender: RawClient, receiver: RawClient, room: RoomKeys) -> None:
    """A message from ``sender`` reaches ``receiver``, and nothing else is pending."""
    sealed = secrets.token_bytes(300)
    ref = secrets.randbelow(2**32)
    await sender.send(frames.Publish(ref, room.room_id, sealed))
    assert await sender.barrier() == [frames.Ack(ref)]
    assert await receiver.barrier() == [frames.Deliver(room.room_id, sealed)]


@contextlib.asynccontextmanager
async def three_members(relay: RelayProcess, room: RoomKeys) -> AsyncIterator[list[RawClient]]:
    """Alice and Bob, who behave, and a third member who will not: all in ``room``."""
    async with contextlib.AsyncExitStack() as stack:
        members = [await stack.enter_async_context(raw_client(relay.ws_url)) for _ in range(3)]
        for member in members:
            await member.join(room)
        yield members


async def healthy(relay: RelayProcess) -> None:
    response = await http_request(relay.port, "/healthz")
    assert response.status == 200
    assert b'"ok"' in response.body


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text exposition."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def metrics(relay: RelayProcess) -> str:
    return (await http_request(relay.port, "/metrics")).body.decode()


def test_an_oversized_frame_closes_that_connection_with_1009() -> None:
    room = fresh_room()
    rid = room.room_id
    with running_relay("--max-frame-size", "4096") as relay:

        async def scenario() -> None:
            async with three_members(relay, room) as (alice, bob, mallory):
                assert await alice.barrier() == [frames.Presence(rid, 2), frames.Presence(rid, 3)]
                # Exactly at the limit is fine...
                largest = secrets.token_bytes(4096 - frames.PUBLISH_HEADER_SIZE)
                await mallory.send(frames.Publish(1, rid, largest))
                assert await mallory.barrier() == [frames.Ack(1)]
                assert await alice.barrier() == [frames.Deliver(rid, largest)]
                assert await bob.barrier() == [
                    frames.Presence(rid, 3),
                    frames.Deliver(rid, largest),
                ]
                # ... one byte more is not.
                await mallory.send(frames.Publish(2, rid, largest + b"!"))
                closed = await mallory.closed()
                assert closed.code == CloseCode.MESSAGE_TOO_BIG
                assert closed.frames == []
                assert await alice.expect(frames.Presence) == frames.Presence(rid, 2)
                await bob.expect(frames.Presence)
                assert await alice.barrier() == []  # the big frame reached nobody
                await still_flowing(bob, alice, room)
                await still_flowing(alice, bob, room)

            # Fragments count together: small ones adding up past the limit close too.
            async with raw_client(relay.ws_url) as fragmenter:
                await fragmenter.join(room)
                publish = frames.encode_frame(frames.Publish(3, rid, largest + b"!"))
                chunks = [publish[i : i + 4000] for i in range(0, len(publish), 4000)]
                with contextlib.suppress(ConnectionClosed):
                    await fragmenter.ws.send(chunks)
                assert (await fragmenter.closed()).code == CloseCode.MESSAGE_TOO_BIG

            await healthy(relay)

        run(scenario())
    assert_exited_cleanly(relay)


def test_closes_the_websocket_layer_makes_are_counted_as_the_relays_own() -> None:
    """A message too big (1009) and a frame that breaks the WebSocket protocol (1002) are
    closes by the relay too: /metrics left them out of instantroom_disconnects_total."""
    with running_relay("--max-frame-size", "4096") as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as big:
                with contextlib.suppress(ConnectionClosed):
                    await big.ws.send(b"\x10" + bytes(5000))
                assert (await big.closed()).code == CloseCode.MESSAGE_TOO_BIG
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            writer.write(upgrade_request(relay.port))
            assert (await read_response_head(reader))[0] == 101
            writer.write(Frame(Opcode.BINARY, b"\x20").serialize(mask=False))
            async with asyncio.timeout(5):
                assert await reader.read()  # its close frame, then EOF
            writer.close()
            text = await metrics(relay)
            closes = "instantroom_disconnects_total"
            assert metric(text, closes, 'reason="message_too_big"') == 1
            assert metric(text, closes, 'reason="protocol_error"') == 1

        run(scenario())
    assert_exited_cleanly(relay)


def test_endless_empty_fragments_are_cut_off_while_the_room_flows(relay: RelayProcess) -> None:
    """websockets bounds a message's bytes, not its frames: empty fragments would pile up."""
    room = fresh_room()

    async def scenario() -> None:
        async with three_members(relay, room) as (alice, bob, fragmenter):
            with contextlib.suppress(ConnectionClosed):
                await fragmenter.ws.send([b"\x10", *[b""] * 1000])
            closed = await fragmenter.closed()
            assert (closed.code, closed.reason) == (CloseCode.MESSAGE_TOO_BIG, "too many fragments")
            await alice.barrier()
            await bob.barrier()
            await still_flowing(alice, bob, room)
        text = await metrics(relay)
        assert metric(text, "instantroom_rejections_total", 'reason="too_many_fragments"') == 1

    run(scenario())
    assert relay.problems() == []


def test_a_ping_flood_is_rate_limited_then_closed_while_the_room_flows() -> None:
    """websockets answers pings itself; they still cost tokens, as every frame does."""
    room = fresh_room()
    flags = ("--messages-per-second", "10", "--message-burst", "20", "--max-refusals", "30")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with three_members(relay, room) as (alice, bob, pinger):
                with contextlib.suppress(ConnectionClosed):
                    for n in range(1000):
                        await pinger.ws.ping(n.to_bytes(4))
                assert (await pinger.closed()).code == CloseCode.POLICY_VIOLATION
                await alice.barrier()
                await bob.barrier()
                await still_flowing(alice, bob, room)
            text = await metrics(relay)
            assert metric(text, "instantroom_rejections_total", 'reason="rate_limited"') >= 30

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_connection_the_relay_closed_is_read_no_further_and_hung_up_on(
    relay: RelayProcess,
) -> None:
    """Once the relay has sent its close frame, what comes in is not answered: it read on,
    answering each PING with a PONG, at a whole core for as long as the PONGs drained (a
    connection that kept pinging after its 1008 held the relay 37 s). EOF follows the
    close frame, and the pinging peer is cut off."""

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
        client = ClientProtocol(
            parse_uri(f"ws://{LOOPBACK}/ws"), subprotocols=[Subprotocol(SUBPROTOCOL)]
        )
        client.send_request(client.connect())
        writer.write(b"".join(client.data_to_send()))
        while not any(isinstance(event, Response) for event in client.events_received()):
            client.receive_data(await reader.read(65536))
        client.send_text(b"binary frames only, says the relay")
        writer.write(b"".join(client.data_to_send()))
        pings = Frame(Opcode.PING, b"").serialize(mask=True) * 1000
        closed_at, after_close = 0.0, 0

        async def read() -> None:
            nonlocal closed_at, after_close
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    if closed_at:
                        after_close += len(data)
                        continue
                    client.receive_data(data)
                    if client.close_rcvd is not None:
                        closed_at = time.monotonic()

        reading = asyncio.create_task(read())
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while not reading.done() and time.monotonic() - started < 10:
                writer.write(pings)
                await writer.drain()
        await asyncio.wait_for(reading, 5)
        writer.close()
        assert client.close_rcvd is not None
        assert client.close_rcvd.code == CloseCode.POLICY_VIOLATION
        assert time.monotonic() - closed_at < 4  # hung up, not kept on pinging
        assert after_close == 0  # no PONG, nor anything else, after its close frame

    run(scenario())
    assert relay.problems() == []


def test_fragments_cost_a_token_each_and_past_the_rate_the_message_is_refused() -> None:
    """A message in 64 fragments was parsed for one token: a connection at the rate limit
    cost the relay 64 times its share. Each fragment but the last now takes a token (the
    message takes one for its last); past the rate the message is refused as a whole one
    is, the rest of its fragments dropped, and the room flows."""
    room = fresh_room()
    rid = room.room_id
    flags = ("--messages-per-second", "1", "--message-burst", "12", "--max-refusals", "1000")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with three_members(relay, room) as (alice, bob, fragmenter):
                await alice.barrier()
                await bob.barrier()
                await fragmenter.barrier()
                # 11 tokens left (the JOIN took one): a message in 5 fragments goes, and
                # then one in 9 does not.
                small = frames.encode_frame(frames.Publish(1, rid, secrets.token_bytes(300)))
                await fragmenter.ws.send([small[i : i + 80] for i in range(0, len(small), 80)])
                assert await fragmenter.expect(frames.Ack) == frames.Ack(1)
                big = frames.encode_frame(frames.Publish(2, rid, secrets.token_bytes(300)))
                await fragmenter.ws.send([big[i : i + 40] for i in range(0, len(big), 40)])
                refused = await fragmenter.expect(frames.Error)
                assert (refused.code, refused.ref, refused.room_id) == (
                    ErrorCode.RATE_LIMITED, 2, rid,
                )  # fmt: skip
                await asyncio.sleep(1.5)  # a token for the barrier's PING (1 a second)
                assert await fragmenter.barrier() == []  # nothing more for the message
                assert [type(f) for f in await alice.barrier()] == [frames.Deliver]
            text = await metrics(relay)
            assert metric(text, "instantroom_rejections_total", 'reason="rate_limited"') >= 1

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_malformed_proof_costs_a_token_like_any_frame() -> None:
    """A PROOF for a pending challenge rides free with its JOIN, but only a well-formed one:
    malformed ones, sent again and again, are rate limited."""
    room = fresh_room()
    flags = ("--messages-per-second", "1", "--message-burst", "3", "--max-refusals", "1000")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as client:
                await client.challenge(room)
                for _ in range(10):
                    await client.send(bytes([FrameType.PROOF]) + room.room_id + b"short")
                codes = [(await client.expect(frames.Error)).code for _ in range(10)]
                assert codes.count(ErrorCode.MALFORMED_FRAME) <= 3
                assert ErrorCode.RATE_LIMITED in codes

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_flood_is_rate_limited_then_closed_while_the_room_flows() -> None:
    room = fresh_room()
    rid = room.room_id
    flags = ("--messages-per-second", "10", "--message-burst", "20", "--max-refusals", "30")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with three_members(relay, room) as (alice, bob, flooder):
                await alice.barrier()
                await bob.barrier()
                sent = {ref: secrets.token_bytes(300) for ref in range(1, 201)}
                with contextlib.suppress(ConnectionClosed):  # once closed, sending fails
                    for ref, sealed in sent.items():
                        await flooder.send(frames.Publish(ref, rid, sealed))
                closed = await flooder.closed()
                assert closed.code == CloseCode.POLICY_VIOLATION
                acked = [f.ref for f in closed.frames if isinstance(f, frames.Ack)]
                errors = [f for f in closed.frames if isinstance(f, frames.Error)]
                assert errors, closed.frames
                assert {e.code for e in errors} == {ErrorCode.RATE_LIMITED}
                limited = [e.ref for e in errors]
                # The bucket let through its burst (less the JOIN and PROOF), then refused
                # 30 frames in a row and closed on the 31st.
                assert 1 <= len(acked) <= 20
                assert len(limited) >= 30
                assert set(acked).isdisjoint(limited)
                assert acked == sorted(acked)
                assert limited == sorted(limited)
                assert len(acked) + len(limited) < len(sent)

                # The good members got exactly what the relay took, and nothing else.
                expected = [frames.Deliver(rid, sent[ref]) for ref in acked]
                for member in (alice, bob):
                    got = await member.barrier()
                    assert got == [*expected, frames.Presence(rid, 2)]
                await still_flowing(alice, bob, room)
                await still_flowing(bob, alice, room)

            text = await metrics(relay)
            assert metric(text, "instantroom_rejections_total", 'reason="rate_limited"') >= 30
            assert metric(text, "instantroom_disconnects_total", 'reason="policy_violation"') == 1

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_flood_with_a_good_frame_now_and_then_is_closed_too() -> None:
    """Refused frames are counted in a row, which each good frame restarts, and within a
    second: a good frame each time the bucket refills would otherwise keep a connection
    sending refused frames, each answered, at any rate."""
    room = fresh_room()
    flags = ("--messages-per-second", "20", "--message-burst", "5", "--max-refusals", "30")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with three_members(relay, room) as (alice, bob, flooder):
                await flooder.barrier()
                started = time.monotonic()
                closing = asyncio.create_task(flooder.closed())  # read all along
                with contextlib.suppress(ConnectionClosed):
                    while time.monotonic() - started < 3 and not closing.done():
                        # A token comes back each 50 ms: the first PING of each batch is
                        # answered, the 19 after it refused, fewer than 30 in a row.
                        await asyncio.sleep(0.06)
                        for token in range(20):
                            await flooder.send(frames.Ping(token))
                closed = await closing
                assert closed.code == CloseCode.POLICY_VIOLATION
                assert time.monotonic() - started < 1.5
                answered = [f for f in closed.frames if isinstance(f, frames.Pong)]
                refused = [f for f in closed.frames if isinstance(f, frames.Error)]
                assert answered
                assert {e.code for e in refused} == {ErrorCode.RATE_LIMITED}
                # 31 within a second closes it (the count of a second may start anew once
                # on the way: the relay counts from one sweep to the next).
                assert len(refused) <= 2 * 31
                await alice.barrier()
                await bob.barrier()
                await still_flowing(alice, bob, room)

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_leave_past_the_rate_is_honoured_and_counted_toward_the_refusals() -> None:
    """A refused LEAVE would keep a client in a room it believes it left, and its ERROR
    could not be told from one for the client's next JOIN (PROTOCOL.md 8.5)."""
    room = fresh_room()
    rid = room.room_id
    # Slow refill: the test is done long before the next token (10 s).
    flags = ("--messages-per-second", "0.1", "--message-burst", "3", "--max-refusals", "4")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
                await alice.join(room)
                await bob.join(room)
                assert await alice.barrier() == [frames.Presence(rid, 2)]
                seen = await bob.barrier()  # its PING takes the last token but one
                await bob.send(frames.Ping(1))  # the last
                await bob.send(frames.Ping(2))  # refused: over the rate
                assert seen == []
                assert await bob.recv() == frames.Pong(1)
                limited = await bob.expect(frames.Error)
                assert (limited.code, limited.ref, limited.room_id) == (
                    ErrorCode.RATE_LIMITED,
                    0,
                    frames.NO_ROOM,
                )
                await bob.send(frames.Leave(rid))  # over the rate, honoured
                assert await alice.expect(frames.Presence) == frames.Presence(rid, 1)
                await alice.send(frames.Publish(1, rid, b"\x01" + bytes(284)))
                await alice.expect(frames.Ack)
                # Bob gets no ERROR for the LEAVE and no DELIVER: he is out of the room.
                # The LEAVE was his second refusal in a row: PINGs 3 and 4 are refused,
                # and the fifth refusal, PING 5, closes.
                for token in range(3, 6):
                    await bob.send(frames.Ping(token))
                closed = await bob.closed()
                assert closed.code == CloseCode.POLICY_VIOLATION
                assert all(
                    f == frames.Error(ErrorCode.RATE_LIMITED, 0, frames.NO_ROOM, f.reason)
                    for f in closed.frames
                    if isinstance(f, frames.Error)
                ), closed.frames
                assert not any(isinstance(f, frames.Deliver) for f in closed.frames)
                assert len(closed.frames) == 2, closed.frames

            text = await metrics(relay)
            assert metric(text, "instantroom_rejections_total", 'reason="leave_over_rate"') == 1

        run(scenario())
    assert_exited_cleanly(relay)


def test_an_empty_message_past_the_rate_is_refused_as_any_other() -> None:
    """Past the rate, an empty binary message gets RATE_LIMITED like any frame: the
    connection stays open, and nothing is logged as an error."""
    room = fresh_room()
    flags = ("--messages-per-second", "0.1", "--message-burst", "3", "--max-refusals", "50")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as client:
                await client.join(room)  # its JOIN takes a token, its PROOF rides free
                for _ in range(4):  # two go through (MALFORMED_FRAME), two over the rate
                    await client.send(b"")
                codes = [(await client.expect(frames.Error)).code for _ in range(4)]
                assert codes == [ErrorCode.MALFORMED_FRAME] * 2 + [ErrorCode.RATE_LIMITED] * 2
                assert client.ws.state is State.OPEN

        run(scenario())
    assert "level=error" not in relay.log_text()
    assert_exited_cleanly(relay)


def test_refused_joins_and_proofs_count_toward_the_refusals_that_close() -> None:
    """A JOIN or PROOF refused within the rate is a refused frame like any other: a run of
    them closes the connection with 1008 (PROTOCOL.md 11.1)."""
    room = fresh_room()
    with running_relay("--max-refusals", "6") as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as client:
                await client.join(room)
                with contextlib.suppress(ConnectionClosed):
                    for n in range(10):  # ALREADY_JOINED and NO_CHALLENGE, in turn
                        if n % 2:
                            await client.send(frames.Proof(room.room_id, bytes(64)))
                        else:
                            await client.send(frames.Join(room.room_id, room.public_key, 0))
                closed = await client.closed()
                assert closed.code == CloseCode.POLICY_VIOLATION
                codes = [f.code for f in closed.frames if isinstance(f, frames.Error)]
                assert codes == [ErrorCode.ALREADY_JOINED, ErrorCode.NO_CHALLENGE] * 3

        run(scenario())
    assert_exited_cleanly(relay)


def test_garbage_on_the_socket_gets_a_400_or_a_close() -> None:
    """Each gets an HTTP error or a close: at once when it cannot be a request, else (no
    end of line yet) at the handshake timeout."""
    room = fresh_room()
    garbage = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + secrets.token_bytes(500),  # TLS hello
        secrets.token_bytes(4096) + b"\r\n\r\n",
        b"\r\n\r\n",
        b"GET /ws HTTP/1.1\r\n\x00\x01\x02: \xff\r\n\r\n",
        b"BREW /ws HTCPCP/1.0\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 500 + b"\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Long: " + b"y" * 20000 + b"\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ]

    with running_relay("--handshake-timeout", "1") as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
                await alice.join(room)
                await bob.join(room)
                await alice.barrier()
                async with asyncio.timeout(4):
                    answers = await asyncio.gather(
                        *(send_raw(relay.port, data) for data in garbage)
                    )
                for answer in answers:
                    if answer:
                        assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
                        status = int(answer.split(b" ", 2)[1])
                        assert status in (400, 414, 426, 431), answer[:100]
                    await still_flowing(bob, alice, room)
                await healthy(relay)

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_text_frame_closes_with_1008(relay: RelayProcess) -> None:
    room = fresh_room()

    async def scenario() -> None:
        async with three_members(relay, room) as (alice, bob, texter):
            await texter.barrier()
            await texter.send("hello as text")
            closed = await texter.closed()
            assert closed.code == CloseCode.POLICY_VIOLATION
            assert closed.frames == []
            assert [f for f in await alice.barrier() if isinstance(f, frames.Presence)][-1] == (
                frames.Presence(room.room_id, 2)
            )
            await bob.barrier()
            await still_flowing(bob, alice, room)

    run(scenario())


def test_half_open_handshakes_are_cut_off_after_the_handshake_timeout() -> None:
    room = fresh_room()
    with running_relay("--handshake-timeout", "1") as relay:

        async def hang(data: bytes) -> float:
            """Send ``data`` and wait for the relay to hang up; return how long it took."""
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            try:
                writer.write(data)
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
                return time.monotonic() - started
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        async def upgraded_but_never_joined() -> tuple[float, int]:
            started = time.monotonic()
            async with raw_client(relay.ws_url) as idler:
                closed = await idler.closed()
                return time.monotonic() - started, closed.code

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
                await alice.join(room)
                await bob.join(room)
                await alice.barrier()
                partial = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                async with asyncio.timeout(6):
                    hangers = [asyncio.create_task(hang(partial)) for _ in range(20)]
                    hangers += [asyncio.create_task(hang(b"")) for _ in range(5)]
                    hangers += [asyncio.create_task(hang(b"G")) for _ in range(5)]
                    idler = asyncio.create_task(upgraded_but_never_joined())
                    # The room keeps flowing while they wait.
                    await still_flowing(bob, alice, room)
                    times = await asyncio.gather(*hangers)
                    idle_time, idle_code = await idler
                assert all(1.0 <= t < 3.5 for t in times), times
                assert 1.0 <= idle_time < 3.5
                assert idle_code == CloseCode.HANDSHAKE_TIMEOUT
                # Members who joined are past their handshake: they stay.
                await still_flowing(bob, alice, room)
                await still_flowing(alice, bob, room)
            await healthy(relay)

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_thousand_connections_from_one_address_are_capped() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # this process and the relay (which inherits it) each hold 1,000 sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    room = fresh_room()
    limit = 50
    with running_relay("--connections-per-address", str(limit)) as relay:

        async def scenario() -> None:
            held: list[asyncio.StreamWriter] = []
            statuses: list[int | str] = []
            gate = asyncio.Semaphore(64)

            async def attempt() -> None:
                async with gate:
                    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
                    held.append(writer)
                    writer.write(upgrade_request(relay.port))
                    try:
                        status, _ = await read_response_head(reader)
                    except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
                        statuses.append(type(exc).__name__)
                    else:
                        statuses.append(status)

            try:
                async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
                    await alice.join(room)
                    await bob.join(room)
                    await alice.barrier()
                    await asyncio.gather(*(attempt() for _ in range(1000)))
                    # Two of the fifty are alice and bob. As many again are answered 429
                    # and kept open until they hang up; the rest are cut off at once.
                    assert statuses.count(101) == limit - 2
                    assert statuses.count(429) == limit, sorted({str(s) for s in statuses})
                    assert len(statuses) == 1000
                    cut_off = ("ConnectionResetError", "IncompleteReadError")
                    assert sum(s in cut_off for s in statuses) == 1000 - (limit - 2) - limit
                    await still_flowing(bob, alice, room)
                    await still_flowing(alice, bob, room)
                    # Full up, the relay answers on this address at once: by cutting it off.
                    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                        await http_request(relay.port, "/healthz")
                    for writer in held:
                        writer.close()
                    await asyncio.gather(
                        *(writer.wait_closed() for writer in held), return_exceptions=True
                    )
                    held.clear()
                    await still_flowing(bob, alice, room)
                    await healthy(relay)
                    text = await metrics(relay)
                    assert (
                        metric(
                            text, "instantroom_rejections_total", 'reason="too_many_connections"'
                        )
                        == 1000 - (limit - 2) + 1
                    )  # and the /healthz above
            finally:
                for writer in held:
                    writer.close()

        run(scenario())
    assert_exited_cleanly(relay)


def test_sockets_one_address_was_refused_cannot_fill_the_relay() -> None:
    """A connection turned away (429) stays open until its peer hangs up. Held open by the
    hundred, they took every place of --max-connections, and other addresses got 503: now
    an address keeps as many of them open as it may have connections, and no more."""
    with running_relay(
        "--trust-proxy", "--connections-per-address", "3", "--max-connections", "12"
    ) as relay:
        port = relay.port

        async def scenario() -> None:
            held: list[asyncio.StreamWriter] = []

            async def upgrade(forwarded: str) -> int | str:
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                held.append(writer)
                header = f"X-Forwarded-For: {forwarded}\r\n".encode()
                writer.write(upgrade_request(port)[:-2] + header + b"\r\n")
                try:
                    status, _ = await read_response_head(reader)
                except (ConnectionResetError, asyncio.IncompleteReadError):
                    return "cut off"
                return status

            try:
                flood = [await upgrade("203.0.113.7") for _ in range(20)]  # all held open
                assert flood == [101] * 3 + [429] * 3 + ["cut off"] * 14
                assert await upgrade("198.51.100.1") == 101  # another address still gets in
                text = await metrics(relay)
                # Three in, three 429s held, the newcomer, and this request.
                assert metric(text, "instantroom_connections_open") == 8
                assert (
                    metric(text, "instantroom_rejections_total", 'reason="too_many_connections"')
                    == 17
                )
            finally:
                for writer in held:
                    writer.close()

        run(scenario())
    assert_exited_cleanly(relay)


def test_behind_a_proxy_a_full_relay_answers_503_whoever_asks() -> None:
    """The 503 comes before the request says whose the connection is: they all come from
    the proxy, so none is cut off for the proxy's address (nginx would show 502)."""
    with running_relay(
        "--trust-proxy", "--connections-per-address", "1", "--max-connections", "2"
    ) as relay:
        port = relay.port

        async def scenario() -> None:
            held: list[asyncio.StreamWriter] = []

            async def upgrade(forwarded: str) -> int:
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                held.append(writer)
                header = f"X-Forwarded-For: {forwarded}\r\n".encode()
                writer.write(upgrade_request(port)[:-2] + header + b"\r\n")
                status, _ = await read_response_head(reader)
                return status

            try:
                assert [await upgrade(f"192.0.2.{n}") for n in range(2)] == [101, 101]
                assert [await upgrade(f"198.51.100.{n}") for n in range(4)] == [503] * 4
            finally:
                for writer in held:
                    writer.close()

        run(scenario())
    assert_exited_cleanly(relay)


def test_connections_past_the_relay_s_limit_get_a_503_while_members_keep_talking() -> None:
    room = fresh_room()
    with running_relay("--max-connections", "4") as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
                await alice.join(room)
                await bob.join(room)
                await alice.barrier()
                held = []
                statuses = []
                for _ in range(4):
                    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
                    held.append(writer)
                    writer.write(upgrade_request(relay.port))
                    statuses.append((await read_response_head(reader))[0])
                assert statuses == [101, 101, 503, 503]
                await still_flowing(alice, bob, room)
                for writer in held:
                    writer.close()
                    await writer.wait_closed()
                # Places given back: a newcomer gets in again.
                async with raw_client(relay.ws_url) as carol:
                    assert (await carol.join(room)).members == 3
                text = await metrics(relay)
                assert metric(text, "instantroom_rejections_total", 'reason="max_connections"') == 2

        run(scenario())
    assert "max_connections=4" in relay.log_text()
    assert_exited_cleanly(relay)


def test_the_relay_raises_its_open_files_limit_to_the_hard_one() -> None:
    """A soft limit of 1,024 open files, common, would cap a relay near 1,000 members."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, soft)
    script = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard}))\n"
        "from instantroom.relay.server import raise_file_limit\n"
        "print(raise_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    expected = min(hard, 1_048_576) if hard != resource.RLIM_INFINITY else 1_048_576
    assert done.stdout.split() == [str(expected), str(expected)]


def test_a_connection_waiting_for_a_place_in_a_full_room_outlasts_the_handshake_timeout() -> None:
    """Its proof was good and the room is full for now: the client asks again on the same
    connection every 15 s (PROTOCOL.md 10.6), and is not cut off (4001) meanwhile. One
    refused for good (an expired room) still is."""
    full, gone = fresh_room(), fresh_room()
    flags = ("--members-per-room", "1", "--handshake-timeout", "1")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with (
                raw_client(relay.ws_url) as alice,
                raw_client(relay.ws_url) as bob,
                raw_client(relay.ws_url) as carol,
            ):
                await alice.join(full)
                await bob.send(RawClient.proof(full, await bob.challenge(full)))
                await bob.expect_error(ErrorCode.ROOM_FULL)
                expired = int(time.time() * 1000) - 1
                await carol.send(RawClient.proof(gone, await carol.challenge(gone, expired)))
                await carol.expect_error(ErrorCode.ROOM_EXPIRED)
                assert (await carol.closed()).code == CloseCode.HANDSHAKE_TIMEOUT
                assert await bob.barrier() == []  # still open, past the timeout
                await alice.send(frames.Leave(full.room_id))
                await alice.barrier()
                assert (await bob.join(full)).members == 1

        run(scenario())
    assert_exited_cleanly(relay)


def test_members_per_room_and_rooms_per_connection() -> None:
    full = fresh_room()
    with running_relay("--members-per-room", "2", "--rooms-per-connection", "2") as relay:

        async def scenario() -> None:
            async with (
                raw_client(relay.ws_url) as alice,
                raw_client(relay.ws_url) as bob,
                raw_client(relay.ws_url) as carol,
            ):
                await alice.join(full)
                await bob.join(full)
                challenge = await carol.challenge(full)
                await carol.send(RawClient.proof(full, challenge))
                refused = await carol.expect_error(ErrorCode.ROOM_FULL)
                assert refused.room_id == full.room_id
                assert await carol.barrier() == []
                assert await alice.barrier() == [frames.Presence(full.room_id, 2)]
                assert await bob.barrier() == []
                await bob.send(frames.Leave(full.room_id))
                assert await alice.expect(frames.Presence) == frames.Presence(full.room_id, 1)
                assert (await carol.join(full)).members == 2

                # carol is in one room and may ask for one more, but not two.
                others = [fresh_room() for _ in range(3)]
                await carol.challenge(others[0])
                await carol.send(frames.Join(others[1].room_id, others[1].public_key, 0))
                refused = await carol.expect_error(ErrorCode.TOO_MANY_ROOMS)
                assert refused.room_id == others[1].room_id
                await carol.send(frames.Leave(others[0].room_id))  # withdraws the request
                await carol.join(others[1])
                await carol.send(frames.Join(others[2].room_id, others[2].public_key, 0))
                await carol.expect_error(ErrorCode.TOO_MANY_ROOMS)
                await carol.send(frames.Leave(full.room_id))
                assert (await carol.join(others[2])).members == 1
                assert await alice.barrier() == [
                    frames.Presence(full.room_id, 2),
                    frames.Presence(full.room_id, 1),
                ]

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_join_refused_as_room_full_records_nothing() -> None:
    """A refused join leaves nothing behind (PROTOCOL.md 8.5): not the expiry the joiner
    asked for, which would end the room at its time and throw its members out, nor a
    room counted against the joiner's address."""
    full = fresh_room()
    options = ("--members-per-room", "1", "--max-rooms-per-address", "1")
    with running_relay(*options) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as carol:
                assert (await alice.join(full)).expires_at_ms == 0
                soon = int(time.time() * 1000) + 1_000
                challenge = await carol.challenge(full, soon)
                await carol.send(RawClient.proof(full, challenge))
                await carol.expect_error(ErrorCode.ROOM_FULL)
                # Its address has not used up its one room with an expiry.
                own = fresh_room()
                later = int(time.time() * 1000) + 3_600_000
                assert (await carol.join(own, later)).expires_at_ms == later
                await asyncio.sleep(1.5)  # past the expiry the refused join asked for
                assert await alice.barrier() == []  # still in, told nothing

        run(scenario())
    assert_exited_cleanly(relay)


class MuteClient:
    """A WebSocket client that joins, then never sends a byte again: not even a pong.

    Built on websockets' sans-I/O ClientProtocol over a raw socket, whose automatic
    answers to pings this client simply never writes.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = ClientProtocol(
            parse_uri(f"ws://{LOOPBACK}/ws"), subprotocols=[Subprotocol(SUBPROTOCOL)]
        )
        self.muted = False
        # When its last bytes (the PROOF) went out: the relay counts its silence from
        # when it heard them, which is not before this.
        self.silent_since = 0.0

    @classmethod
    async def join(cls, port: int, room: RoomKeys) -> MuteClient:
        client = cls(*await asyncio.open_connection(LOOPBACK, port))
        client.protocol.send_request(client.protocol.connect())
        client._write()
        while not any(isinstance(e, Response) for e in await client._events()):
            pass
        client.protocol.send_binary(
            frames.encode_frame(frames.Join(room.room_id, room.public_key, 0))
        )
        client._write()
        challenge = frames.decode_frame((await client.frames())[0])
        assert isinstance(challenge, frames.Challenge)
        client.protocol.send_binary(frames.encode_frame(RawClient.proof(room, challenge.challenge)))
        client.silent_since = time.monotonic()
        client._write()
        assert isinstance(frames.decode_frame((await client.frames())[0]), frames.Joined)
        client.muted = True
        return client

    def _write(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if not self.muted:
            self.writer.write(data)

    async def _events(self) -> list[object]:
        data = await self.reader.read(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._write()
        return list(self.protocol.events_received())

    async def frames(self) -> list[bytes]:
        """The next binary messages to arrive (waiting for at least one)."""
        while True:
            found = [
                bytes(e.data)
                for e in await self._events()
                if isinstance(e, Frame) and e.opcode is Opcode.BINARY
            ]
            if found:
                return found

    async def close_code(self) -> tuple[int, int]:
        """Read until the relay closes; the close code and how many pings came first."""
        pings = 0
        while True:
            for event in await self._events():
                if isinstance(event, Frame) and event.opcode is Opcode.PING:
                    pings += 1
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    close = Close.parse(event.data)
                    return close.code, pings
            if self.protocol.state is State.CLOSED:
                return 1006, pings

    def close(self) -> None:
        self.writer.transport.abort()


def test_a_silent_member_is_pinged_then_closed_at_the_idle_timeout() -> None:
    """A member that answers pings stays; one that answers nothing goes (close 4003)."""
    room = fresh_room()
    flags = ("--ping-interval", "1", "--idle-timeout", "2.5")
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as quiet:  # websockets answers pings
                await quiet.join(room)
                mute = await MuteClient.join(relay.port, room)
                try:
                    async with asyncio.timeout(8):
                        code, pings = await mute.close_code()
                    assert code == CloseCode.IDLE_TIMEOUT
                    assert pings >= 1
                    assert 2.5 <= time.monotonic() - mute.silent_since < 5
                finally:
                    mute.close()
                # The quiet member, who said nothing but answered the pings, is still in.
                assert await quiet.barrier() == [
                    frames.Presence(room.room_id, 2),
                    frames.Presence(room.room_id, 1),
                ]

            text = await metrics(relay)
            assert metric(text, "instantroom_disconnects_total", 'reason="idle_timeout"') == 1

        run(scenario())
    assert_exited_cleanly(relay)


def test_behind_a_proxy_the_limit_is_per_forwarded_address() -> None:
    """--trust-proxy: the address is the last X-Forwarded-For entry, or the peer's when the
    header is missing; either way the per-address limit holds."""
    with running_relay("--trust-proxy", "--connections-per-address", "3") as relay:
        port = relay.port

        async def scenario() -> None:
            held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

            async def upgrade(forwarded: str | None) -> int:
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                held.append((reader, writer))
                request = upgrade_request(port)
                if forwarded is not None:
                    header = f"X-Forwarded-For: {forwarded}\r\n".encode()
                    request = request[:-2] + header + b"\r\n"
                writer.write(request)
                status, _ = await read_response_head(reader)
                return status

            async def hang_up_all() -> None:
                """Hang up, and wait for the relay to hang up too: then it has let go."""
                for reader, writer in held:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                        await reader.read()
                    writer.close()
                held.clear()

            try:
                for forwarded in ("203.0.113.7", "198.51.100.1, 203.0.113.7", None):
                    statuses = [await upgrade(forwarded) for _ in range(4)]
                    assert statuses == [101, 101, 101, 429], forwarded
                    await hang_up_all()
                # Each address has its own count.
                assert [await upgrade(f"192.0.2.{n}") for n in range(6)] == [101] * 6
                await hang_up_all()
                # Connections that go before saying anything do not count, coming or going.
                assert [await upgrade(None) for _ in range(3)] == [101] * 3
                for _ in range(3):
                    reader, writer = await asyncio.open_connection(LOOPBACK, port)
                    writer.write_eof()
                    assert await reader.read() == b""
                    writer.close()
                assert await upgrade(None) == 429
            finally:
                await hang_up_all()

        run(scenario())
    assert_exited_cleanly(relay)

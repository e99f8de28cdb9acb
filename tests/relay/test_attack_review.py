"""Attacks on the relay's network surface from a socket on loopback: bytes after a request,
request heads that never end, frames sent with a refused upgrade, and floods of logged
events. Each time the relay stays up, and members keep talking.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter

from websockets.frames import Frame, Opcode

from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.relay.logs import LOG_BURST
from instantroom.relay.server import MAX_REQUEST_HEAD
from instantroom.testing import (
    LOOPBACK,
    TIMEOUT,
    RawClient,
    RelayProcess,
    assert_exited_cleanly,
    fresh_room,
    raw_client,
    read_response_head,
    response_status,
    run,
    running_relay,
    send_raw,
    upgrade_request,
)
from tests.relay.test_limits import healthy, metric, metrics, still_flowing


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def masked(data: bytes) -> bytes:
    """One binary WebSocket frame as a client sends it."""
    return Frame(Opcode.BINARY, data).serialize(mask=True, extensions=None)


def test_bytes_after_a_request_in_the_same_read_get_its_answer_not_an_internal_error(
    relay: RelayProcess,
) -> None:
    """websockets reads what follows a request as WebSocket frames before the relay
    answers; bytes that are none (a second request, a stray CRLF) made the answer trip an
    assertion: no answer, and two log lines at error level per connection, for free."""
    host = f"Host: {LOOPBACK}:{relay.port}\r\n"
    room = fresh_room()

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
            await alice.join(room)
            await bob.join(room)
            await alice.barrier()
            for data in (
                f"GET /healthz HTTP/1.1\r\n{host}\r\n\r\n",  # a stray CRLF
                f"GET /healthz HTTP/1.1\r\n{host}\r\nGET /metrics HTTP/1.1\r\n{host}\r\n",
            ):
                answer = await send_raw(relay.port, data.encode())
                assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
                assert b'"status": "ok"' in answer
            await still_flowing(bob, alice, room)
            await healthy(relay)
        assert relay.problems() == [], relay.log_text()

    run(scenario())


def test_frames_sent_with_a_refused_upgrade_are_not_read(relay: RelayProcess) -> None:
    """A refused upgrade is answered, and frames sent with it are not: no frame before or
    after the refusal (the answer to a frame went out before the HTTP answer)."""

    async def scenario() -> None:
        request = upgrade_request(relay.port, origin="https://elsewhere.example")
        answer = await send_raw(relay.port, request + masked(frames.encode_frame(frames.Ping(7))))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 "), answer[:100]
        length = re.search(rb"Content-Length: (\d+)", head)
        assert length is not None, head
        assert len(body) == int(length.group(1)), body  # nothing after the refusal's own text

    run(scenario())


def test_a_request_head_that_grows_past_the_limit_is_answered_431_at_once() -> None:
    """websockets takes 128 header lines of 8 KiB: a socket could make the relay hold
    1 MiB before any request, and a few hundred addresses fill its memory. Past
    MAX_REQUEST_HEAD the relay answers 431 without waiting for the end of the head."""
    line = b"X-Pad: " + b"p" * 8000 + b"\r\n"
    endless = b"GET / HTTP/1.1\r\nHost: relay\r\n" + line * 127  # no end: never a request
    assert len(endless) > 30 * MAX_REQUEST_HEAD
    sockets = 100
    room = fresh_room()
    with running_relay("--connections-per-address", str(sockets + 10)) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
                await alice.join(room)
                await bob.join(room)
                await alice.barrier()  # Bob's arrival
                before = rss_kib(relay.pid)
                statuses = await asyncio.gather(
                    *(response_status(relay.port, endless) for _ in range(sockets))
                )
                assert statuses == [431] * sockets
                grown = rss_kib(relay.pid) - before
                # Unbounded, each socket had the relay hold ~1 MiB: 100 MiB.
                assert grown < 32 * 1024, f"{grown} KiB"
                await still_flowing(bob, alice, room)
                text = await metrics(relay)
                assert metric(text, "instantroom_rejections_total", 'reason="request_too_large"')

                # A head with a browser's share of cookies still opens a WebSocket, and
                # a first frame sent with the request does not count as head.
                cookies = "".join(f"Cookie: c{i}={'v' * 3000}\r\n" for i in range(4)).encode()
                request = upgrade_request(relay.port)[:-2] + cookies + b"\r\n"
                frame = masked(frames.encode_frame(frames.Ping(9)) + bytes(60_000))
                reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
                try:
                    writer.write(request + frame)
                    status, _ = await read_response_head(reader)
                    assert status == 101
                    async with asyncio.timeout(TIMEOUT):
                        header = await reader.readexactly(2)
                    assert header[0] == 0x82  # an ERROR frame: it was read as a frame
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                await healthy(relay)

        run(scenario())
    assert_exited_cleanly(relay)


def test_a_flood_of_one_event_is_logged_as_a_count_past_its_budget() -> None:
    """Anyone can make rooms that expire each second, one log line each, hundreds a
    second from one address. Past the event's budget the relay writes how many it left
    out, once a second, and the members are told of every expiry all the same."""
    rooms = [fresh_room() for _ in range(LOG_BURST + 60)]
    flags = ("--rooms-per-connection", str(len(rooms)), "--message-burst", str(len(rooms) + 50))
    with running_relay(*flags) as relay:

        async def scenario() -> None:
            async with raw_client(relay.ws_url) as member:
                expires = time.time_ns() // 1_000_000 + 3_000
                for room in rooms:  # all JOINs, then all PROOFs: the rooms are made at once
                    await member.send(frames.Join(room.room_id, room.public_key, expires))
                challenges = {}
                for _ in rooms:
                    challenge = await member.expect(frames.Challenge)
                    challenges[challenge.room_id] = challenge.challenge
                for room in rooms:
                    await member.send(member.proof(room, challenges[room.room_id]))
                for _ in rooms:
                    await member.expect(frames.Joined)
                member.timeout = 10.0
                expired = set()
                for _ in rooms:
                    error = await member.expect_error(ErrorCode.ROOM_EXPIRED)
                    expired.add(error.room_id)
                assert expired == {room.room_id for room in rooms}
                line = await asyncio.to_thread(
                    relay.wait_for_log, r"event=log\.suppressed of=room\.expired"
                )
                count = re.search(r"lines=(\d+)", line)
                assert count is not None, line
                left_out = int(count.group(1))
                written = relay.log_text().count("event=room.expired")
                assert written <= LOG_BURST + 10  # a few more refill while they are written
                assert written + left_out == len(rooms)
                await healthy(relay)

        run(scenario())
    assert_exited_cleanly(relay)


def test_joins_from_one_address_share_one_connection_s_rate() -> None:
    """Each JOIN has the relay check a join proof (~0.2 ms; a bad PROOF is free), so an
    address's 64 connections at 50 frames a second each kept it busy: its connections
    together now join as fast as one connection may send, and hanging up does not reset
    that. Other addresses, and the members already in, are not slowed."""
    burst, per_connection, connections = 20, 8, 4
    flags = ("--message-burst", str(burst), "--messages-per-second", "0.5")
    room = fresh_room()
    with running_relay(*flags) as relay:

        async def answers(client: RawClient, count: int) -> Counter[str]:
            for _ in range(count):
                other = fresh_room()
                await client.send(frames.Join(other.room_id, other.public_key, 0))
            said: Counter[str] = Counter()
            for frame in await client.barrier():
                if isinstance(frame, frames.Challenge):
                    said["challenged"] += 1
                elif isinstance(frame, frames.Error) and frame.code == ErrorCode.RATE_LIMITED:
                    said["rate_limited"] += 1
            return said

        async def scenario() -> None:
            elsewhere = {"local_addr": ("127.0.0.3", 0)}
            async with (
                raw_client(relay.ws_url, **elsewhere) as alice,
                raw_client(relay.ws_url, **elsewhere) as bob,
            ):
                await alice.join(room)
                await bob.join(room)
                await alice.barrier()
                async with contextlib.AsyncExitStack() as stack:
                    clients = [
                        await stack.enter_async_context(raw_client(relay.ws_url))
                        for _ in range(connections)
                    ]
                    said = sum(
                        [await answers(client, per_connection) for client in clients], Counter()
                    )
                assert said["challenged"] + said["rate_limited"] == connections * per_connection
                assert burst <= said["challenged"] <= burst + 2  # a token or two refilled
                await still_flowing(alice, bob, room)
                # Back on a new connection: the address's budget is still spent.
                async with raw_client(relay.ws_url) as again:
                    assert (await answers(again, 3))["rate_limited"] >= 2
                async with raw_client(relay.ws_url, local_addr=("127.0.0.2", 0)) as other:
                    assert (await answers(other, 3))["challenged"] == 3

        run(scenario())
    assert_exited_cleanly(relay)

"""A member that stops reading is cut off once its send buffer passes its bound; the rest
of its room never waits for it.
"""

from __future__ import annotations

import asyncio
import secrets
import socket

from instantroom.protocol import frames
from instantroom.testing import (
    LOOPBACK,
    RawClient,
    assert_exited_cleanly,
    fresh_room,
    http_request,
    raw_client,
    run,
    running_relay,
)

SEND_BUFFER = 65536
ENVELOPE = 65000  # close to the largest envelope
MESSAGES = 400  # 26 MB: past any kernel buffer between the relay and the stalled reader
WINDOW = 8


def small_receive_buffer_socket(port: int) -> socket.socket:
    """A connected TCP socket whose receive window stays small (no autotuning)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect((LOOPBACK, port))
    sock.setblocking(False)
    return sock


def test_a_stalled_reader_is_dropped_and_the_room_keeps_flowing() -> None:
    room = fresh_room()
    rid = room.room_id
    flags = ("--send-buffer", str(SEND_BUFFER), "--message-burst", "100000")
    with running_relay(*flags, "--messages-per-second", "100000") as relay:
        others: list[frames.Frame] = []

        async def receive(member: RawClient, count: int) -> list[bytes]:
            got: list[bytes] = []
            while len(got) < count:
                frame = await member.recv()
                if isinstance(frame, frames.Deliver):
                    got.append(frame.envelope)
                else:
                    others.append(frame)
            return got

        async def scenario() -> None:
            sock = small_receive_buffer_socket(relay.port)
            async with (
                raw_client(relay.ws_url) as sender,
                raw_client(relay.ws_url) as good,
                raw_client(relay.ws_url, sock=sock) as stalled,
            ):
                await good.join(room)
                await stalled.join(room)
                await sender.join(room)
                assert await good.barrier() == [frames.Presence(rid, 2), frames.Presence(rid, 3)]
                assert await stalled.barrier() == [frames.Presence(rid, 3)]
                stalled.ws.transport.pause_reading()  # and never reads again

                sent = [secrets.token_bytes(ENVELOPE) for _ in range(MESSAGES)]
                received: list[bytes] = []
                # The good member keeps up: the sender lets it fall at most WINDOW behind.
                for start in range(0, MESSAGES, WINDOW):
                    batch = sent[start : start + WINDOW]
                    receiving = asyncio.create_task(receive(good, len(batch)))
                    for ref, sealed in enumerate(batch, start=start + 1):
                        await sender.send(frames.Publish(ref, rid, sealed))
                    received += await receiving
                assert received == sent  # every message, in order
                acks = [f for f in await sender.barrier() if isinstance(f, frames.Ack)]
                assert acks == [frames.Ack(ref) for ref in range(1, MESSAGES + 1)]

                await asyncio.to_thread(relay.wait_for_log, r"event=connection\.dropped .*too_slow")
                # The others are told the room has one member fewer...
                assert [*others, *await good.barrier()] == [frames.Presence(rid, 2)]
                # ... and it keeps flowing.
                after = secrets.token_bytes(300)
                await sender.send(frames.Publish(0, rid, after))
                # The publish is handled before the good member's PING: it reaches the relay
                # on another socket, and could be read first.
                await sender.barrier()
                assert await good.barrier() == [frames.Deliver(rid, after)]

                # The stalled reader, reading at last, finds its connection cut short.
                stalled.ws.transport.resume_reading()
                stalled.timeout = 10
                cut = await stalled.closed()
                assert cut.code == 1006  # no goodbye for one too slow to hear it
                assert sum(isinstance(f, frames.Deliver) for f in cut.frames) < MESSAGES

        run(scenario())
        exposition = run(http_request(relay.port, "/metrics")).body.decode()
        assert 'instantroom_disconnects_total{reason="too_slow"} 1.0' in exposition
    assert_exited_cleanly(relay)

"""Graceful shutdown: on SIGTERM the relay tells every member to reconnect (close 1012),
hangs up on half-open handshakes, and exits 0 without waiting out its grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from instantroom.protocol.codes import CloseCode
from instantroom.testing import (
    LOOPBACK,
    assert_exited_cleanly,
    fresh_room,
    raw_client,
    run,
    running_relay,
)


def test_sigterm_closes_members_with_1012_and_exits_0_promptly() -> None:
    room = fresh_room()
    grace = 5.0
    with running_relay("--shutdown-grace", str(grace)) as relay:

        async def scenario() -> float:
            async with (
                raw_client(relay.ws_url) as alice,
                raw_client(relay.ws_url) as bob,
                raw_client(relay.ws_url) as unjoined,
            ):
                await alice.join(room)
                await bob.join(room)
                await alice.barrier()
                await unjoined.barrier()
                # A handshake left half-way, and a connection that said nothing at all.
                half_reader, half = await asyncio.open_connection(LOOPBACK, relay.port)
                half.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                silent_reader, silent = await asyncio.open_connection(LOOPBACK, relay.port)
                await half.drain()
                await alice.barrier()  # by now the relay has accepted both

                started = time.monotonic()
                relay.process.send_signal(signal.SIGTERM)
                for client in (alice, bob, unjoined):
                    closed = await client.closed()
                    assert closed.code == CloseCode.SERVICE_RESTART
                    assert closed.frames == []
                for reader in (half_reader, silent_reader):
                    with contextlib.suppress(ConnectionResetError):
                        assert await reader.read() == b""
                half.close()
                silent.close()
                status = await asyncio.to_thread(relay.process.wait, grace)
                assert status == 0
                return time.monotonic() - started

        took = run(scenario())
        assert took < 2.0, f"shutdown took {took:.1f} s"
        log = relay.log_text()
        assert "event=relay.stopping" in log
        assert "event=relay.stopped" in log
    assert_exited_cleanly(relay)


def test_a_member_that_never_answers_the_close_is_cut_off_at_the_grace() -> None:
    room = fresh_room()
    with running_relay("--shutdown-grace", "1") as relay:

        async def scenario() -> float:
            async with raw_client(relay.ws_url) as deaf:
                await deaf.join(room)
                await deaf.barrier()
                deaf.ws.transport.pause_reading()  # never sees the close frame
                started = time.monotonic()
                relay.process.send_signal(signal.SIGTERM)
                status = await asyncio.to_thread(relay.process.wait, 5)
                assert status == 0
                took = time.monotonic() - started
                deaf.ws.transport.abort()  # no use waiting for the close handshake now
                return took

        took = run(scenario())
        assert 0.9 < took < 3.0, f"shutdown took {took:.1f} s"
    assert_exited_cleanly(relay)

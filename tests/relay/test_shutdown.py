"""Graceful shutdown: on SIGTERM the relay tells every member to reconnect (close 1012),
hangs up on half-open handshakes, and exits 0 without waiting out its grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import time

import pytest
from websockets.exceptions import InvalidHandshake

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


def test_a_tls_handshake_that_ends_during_the_grace_is_not_let_in() -> None:
    """Handshakes under way at SIGTERM end after it: the relay must not let them join
    rooms, to be cut off with no goodbye at the end of the grace."""
    room = fresh_room()
    trust_anything = ssl.create_default_context()
    trust_anything.check_hostname = False
    trust_anything.verify_mode = ssl.CERT_NONE
    with running_relay("--tls-self-signed", "--shutdown-grace", "3") as relay:
        url = f"wss://{LOOPBACK}:{relay.port}/ws"

        async def scenario() -> None:
            async with raw_client(url, ssl=trust_anything) as deaf:
                await deaf.join(room)
                await deaf.barrier()
                deaf.ws.transport.pause_reading()  # keeps the relay in its grace
                late = socket.create_connection((LOOPBACK, relay.port))  # accepted, no TLS yet
                relay.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(relay.wait_for_log, r"event=relay\.stopping")
                with pytest.raises((InvalidHandshake, OSError)):
                    async with raw_client(url, ssl=trust_anything, sock=late) as client:
                        await client.join(room)  # (unfixed: joined, then cut off, 1006)
                assert await asyncio.to_thread(relay.process.wait, 10) == 0
                deaf.ws.transport.abort()

        run(scenario())
    assert_exited_cleanly(relay)

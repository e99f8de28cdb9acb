"""The guard around a connection's input: a bug met while handling one connection's bytes
costs that connection (dropped) and one error line naming the exception's type, never its
message, and the relay goes on serving the others.

No input reaches that guard while the relay has no bug, so a bug is put in: the relay runs
in this process, on uvloop and with its own log setup as ``instantroom serve`` runs it,
and one frame sent by one client makes its handling raise. The clients are real WebSocket
clients on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from instantroom.protocol import frames
from instantroom.relay import logs
from instantroom.relay.config import RelayConfig
from instantroom.relay.server import Relay, RelayConnection
from instantroom.testing import LOOPBACK, fresh_room, http_request, raw_client

T = TypeVar("T")

# What the bug's message quotes: were it logged, a room id would be in the relay's logs.
SECRET = "SECRET-ROOM-ID-123"
# The one frame whose handling raises: a PING no other client sends.
POISONED_FRAME = frames.encode_frame(frames.Ping(0x5EC2E7))
# A dropped connection hears no close frame: websockets reports 1006.
NO_CLOSE_FRAME = 1006


def run_on_uvloop(coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """``uvloop.run(coroutine)`` (the relay's own loop), cancelled after ``timeout``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coroutine

    return uvloop.run(bounded())


@pytest.fixture
def relay_stderr() -> Iterator[io.StringIO]:
    """The relay's logger set up by ``setup_logging`` as ``instantroom serve`` sets it up,
    its stderr stream swapped for the buffer yielded; put back as it was afterwards."""
    logger = logs.logger
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    logs.setup_logging("info")
    (handler,) = logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    try:
        yield stream
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def bug_on_poisoned_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the relay's handling of ``POISONED_FRAME`` raise, quoting ``SECRET``; every
    other frame is handled as usual."""
    handle_message = RelayConnection._message_received

    def handle_message_or_fail(conn: RelayConnection, data: bytes) -> None:
        if data == POISONED_FRAME:
            raise RuntimeError(f"a bug that quotes the room {SECRET}")
        handle_message(conn, data)

    monkeypatch.setattr(RelayConnection, "_message_received", handle_message_or_fail)


@pytest.mark.usefixtures("bug_on_poisoned_frame")
def test_a_bug_on_one_connections_input_drops_it_alone_and_logs_only_the_type(
    relay_stderr: io.StringIO,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    room = fresh_room()
    relay = Relay(RelayConfig(host=LOOPBACK, port=0))

    async def scenario() -> bytes:
        await relay.start()
        url = f"ws://{LOOPBACK}:{relay.port}/ws"
        try:
            async with (
                raw_client(url) as alice,
                raw_client(url) as bob,
                raw_client(url) as victim,
            ):
                for member in (alice, bob, victim):
                    await member.join(room)
                await alice.barrier()
                await bob.barrier()

                await victim.send(POISONED_FRAME)
                closed = await victim.closed()
                assert (closed.code, closed.frames) == (NO_CLOSE_FRAME, [])  # dropped, no PONG

                # The others are still in the room, which is one member smaller, and its
                # messages still flow.
                assert await alice.barrier() == [frames.Presence(room.room_id, 2)]
                sealed = secrets.token_bytes(300)
                await alice.send(frames.Publish(1, room.room_id, sealed))
                assert await alice.barrier() == [frames.Ack(1)]
                assert await bob.barrier() == [
                    frames.Presence(room.room_id, 2),
                    frames.Deliver(room.room_id, sealed),
                ]
                # A newcomer is let in.
                async with raw_client(url) as carol:
                    assert (await carol.join(room)).members == 3
                    assert await carol.barrier() == []

            metrics = await http_request(relay.port, "/metrics")
            assert metrics.status == 200
            return metrics.body
        finally:
            await relay.shutdown()

    metrics = run_on_uvloop(scenario())

    assert re.search(
        rb'^instantroom_disconnects_total\{reason="internal_error"\} 1\.0$', metrics, re.M
    ), metrics.decode()
    relay_log = relay_stderr.getvalue()
    error_lines = [line for line in relay_log.splitlines() if "level=error" in line]
    assert len(error_lines) == 1, relay_log
    assert re.fullmatch(
        r"ts=\S+Z level=error event=connection\.error error=RuntimeError", error_lines[0]
    ), error_lines
    dropped = [line for line in relay_log.splitlines() if "event=connection.dropped" in line]
    assert len(dropped) == 1, relay_log
    assert dropped[0].endswith(" reason=internal_error address=-"), dropped
    # Nothing else reported the bug: no event loop's "Fatal error", no traceback anywhere.
    others = [r for r in caplog.records if r.name != logs.logger.name]
    assert [r for r in others if r.levelno >= logging.WARNING] == [], caplog.text
    process = capfd.readouterr()
    for text in (relay_log, caplog.text, process.err, process.out):
        assert SECRET not in text
        assert "Traceback" not in text

"""Review of the expiry timer: a room ends at its expiry by the timer alone, even after the
wall clock has moved past the time the timer was set for without it firing (a host that
slept: the monotonic clock, which the loop's timers follow, stood still meanwhile; or a
clock stepped forward).

The relay runs in this process on uvloop, its sweep stopped, so that only the timer can
end a room; its wall clock is moved forward by replacing its ``now_ms``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from instantroom.protocol.codes import ErrorCode
from instantroom.relay.config import RelayConfig
from instantroom.relay.server import Relay
from instantroom.testing import LOOPBACK, fresh_room, raw_client

T = TypeVar("T")

HOUR_MS = 3_600_000


def run_on_uvloop(coroutine: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coroutine

    return uvloop.run(bounded())


def test_the_timer_ends_rooms_after_the_wall_clock_jumped_past_its_wake() -> None:
    relay = Relay(RelayConfig(host=LOOPBACK, port=0, max_room_lifetime=4 * 3600))
    jump = [0]  # ms the relay's wall clock is ahead of ours
    relay.now_ms = lambda: time.time_ns() // 1_000_000 + jump[0]  # type: ignore[method-assign]
    early, late = fresh_room(), fresh_room()

    async def scenario() -> None:
        await relay.start()
        assert relay._sweeper is not None
        relay._sweeper.cancel()  # the timer alone ends rooms here
        url = f"ws://{LOOPBACK}:{relay.port}/ws"
        try:
            async with raw_client(url) as alice, raw_client(url) as bob:
                await alice.join(early, relay.now_ms() + HOUR_MS)  # the timer: in an hour
                await alice.barrier()
                # The host sleeps an hour and a bit: the wall clock moves on, the monotonic
                # one (and the timer set for the hour) does not.
                jump[0] += HOUR_MS + 1000
                await bob.join(late, relay.now_ms() + 1000)
                for member, room in ((alice, early), (bob, late)):
                    member.timeout = 5  # a loaded machine may be late
                    expired = await member.expect_error(ErrorCode.ROOM_EXPIRED)
                    assert expired.room_id == room.room_id
        finally:
            await relay.shutdown()

    run_on_uvloop(scenario())

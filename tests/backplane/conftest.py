"""The backplane tests' real redis-server, one per test on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backplane.test_redis_backplane import RedisServer, free_port


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()

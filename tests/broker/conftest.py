"""A real redis-server per test (tests/redis_server.py), or the test is skipped saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, unavailable_reason


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()

"""A real redis-server per test (tests/redis_server.py), or the test is skipped saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, unavailable_reason
from tests.services import missing_service


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    reason = unavailable_reason()
    if reason is not None:
        missing_service(reason)
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()

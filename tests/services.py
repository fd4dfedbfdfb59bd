"""What a test does when a real component it needs (Chromium, redis-server, PostgreSQL, nginx)
is not installed: skip, saying which package provides it, on a developer's machine; fail in CI.

`.ci/run` installs every one of them and sets `GATEWAY_TESTS_REQUIRE_SERVICES=1`, so a broken
install there can never turn the browser, replica or PostgreSQL suites into silent skips.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["missing_service"]


def missing_service(reason: str) -> NoReturn:
    """Skip the calling test with `reason`, or fail it when CI requires every service."""
    if os.environ.get("GATEWAY_TESTS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required by CI but unavailable: {reason}", pytrace=False)
    pytest.skip(reason)

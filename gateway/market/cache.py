"""The TTL cache of on-demand market answers (trending, overview, protocols, TVL).

These answers change slowly and each costs one upstream call, so each is kept for its
category's TTL (settings `ttl_trending`, `ttl_overview`, `ttl_protocols`, `ttl_tvl`). While one
request fetches a key, concurrent requests for it wait and reuse its answer.

Must never serve an answer older than its TTL: an expired entry is refetched, and a failed
fetch raises rather than falling back to the expired value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast

import trio

from gateway.models import utc_now

__all__ = ["MarketCache"]

T = TypeVar("T")


class MarketCache:
    """Answers by key, each kept for its TTL; expired answers are refetched, never served."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, datetime, Any]] = {}
        self._locks: dict[str, trio.Lock] = {}

    async def get(
        self, key: str, ttl: float, fetch: Callable[[], Awaitable[T]]
    ) -> tuple[T, datetime]:
        """The cached value and when it was fetched, fetching it if absent or expired."""
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:  # one fetch at a time per key; waiters reuse its answer
            entry = self._entries.get(key)
            if entry is not None and trio.current_time() - entry[0] < ttl:
                return cast(T, entry[2]), entry[1]
            value = await fetch()
            fetched_at = utc_now()
            self._entries[key] = (trio.current_time(), fetched_at, value)
            return value, fetched_at

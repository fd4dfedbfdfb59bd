"""What the gateway keeps of on-demand market answers (trending, overview, protocols, TVL).

These answers change slowly and each costs an upstream call, so each is kept per key:

* the *last good answer* (`Entry`: value, provider, when the data was observed and fetched),
  kept after its TTL too, so that when every provider fails the gateway can still answer from
  it, with a warning (`gateway.market.answers` decides when). At most `keep` keys are held,
  the least recently stored forgotten first;
* one lock per key, so one request fetches while concurrent ones wait and reuse its answer;
* the last failure per key and when it happened, so that for a short while after every
  provider failed, requests answer from the last good answer instead of asking again;
* per pool and answer kind, the `Pool` view that walks only the members able to give that
  answer (see `view`).

Must never decide what is served: freshness and failover are `gateway.market.answers`' and
`gateway.market.freshness`' rules; this module only keeps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

import trio

from gateway.errors import UpstreamError
from gateway.upstream import Pool, PoolMember

__all__ = ["KEEP", "Entry", "MarketCache"]

T = TypeVar("T")

# Keys (answer kinds, and their variants) whose last good answer is kept.
KEEP: Final = 64


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """One answer as fetched: `observed_at` is when the upstream says the data is from (its own
    timestamp, else the fetch), `fetched_at` when the gateway got it, `clock` the trio clock
    then (the TTL runs on it)."""

    value: T
    provider: str
    observed_at: datetime
    fetched_at: datetime
    clock: float


class MarketCache:
    """Answers, locks, failures and pool views by key; see the module docstring."""

    def __init__(self, keep: int = KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep = keep
        self._entries: OrderedDict[str, Entry[Any]] = OrderedDict()
        self._locks: dict[str, trio.Lock] = {}
        self._failures: dict[str, tuple[float, UpstreamError]] = {}
        self._views: dict[tuple[str, str], tuple[Pool, Pool]] = {}

    def lock(self, key: str) -> trio.Lock:
        """The key's lock (made on first use; idle locks of forgotten keys are dropped)."""
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) >= 2 * self.keep:
                for name in [k for k, v in self._locks.items() if not v.locked()]:
                    if name not in self._entries:
                        del self._locks[name]
            lock = self._locks[key] = trio.Lock()
        return lock

    def fresh(self, key: str, ttl: float) -> Entry[Any] | None:
        """The key's answer if it was fetched less than `ttl` seconds ago, else None."""
        entry = self._entries.get(key)
        if entry is None or trio.current_time() - entry.clock >= ttl:
            return None
        return entry

    def last(self, key: str) -> Entry[Any] | None:
        """The key's last good answer, however old (None if it never had one)."""
        return self._entries.get(key)

    def store(self, key: str, entry: Entry[Any]) -> None:
        """Keep `entry` as the key's answer; forget the oldest key beyond `keep`."""
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self._failures.pop(key, None)
        while len(self._entries) > self.keep:
            self._entries.popitem(last=False)

    def record_failure(self, key: str, error: UpstreamError) -> None:
        self._failures[key] = (trio.current_time(), error)
        while len(self._failures) > self.keep:
            del self._failures[next(iter(self._failures))]

    def recent_failure(self, key: str, within: float) -> UpstreamError | None:
        """The key's last failure if it happened less than `within` seconds ago."""
        failure = self._failures.get(key)
        if failure is None or trio.current_time() - failure[0] >= within:
            return None
        return failure[1]

    def view(self, pool: Pool, kind: str, eligible: Callable[[PoolMember], bool]) -> Pool:
        """A pool over the `eligible` members of `pool` (those with a fetcher for `kind`).

        The view holds the *same* `PoolMember` objects, so every call through it counts on
        the pool itself (`uses`, successes, failures, latency, Retry-After backoff), and it
        shares the pool's guards, configuration check and rotation hook (a rotation is reported
        under the pool's id); its own state is which member served `kind` last, and the
        round-robin position. Members are re-read from the pool on every call, so members
        added, removed or re-weighted at run time apply at once.
        """
        held = self._views.get((pool.id, kind))
        if held is None or held[0] is not pool:
            view = Pool(
                pool.id,
                pool.name,
                pool.category,
                pool.strategy,
                guards=pool.guards,
                is_configured=pool.is_configured,
                on_rotation=pool.on_rotation,
                rng=pool.rng,
            )
            held = self._views[(pool.id, kind)] = (pool, view)
        view = held[1]
        view.strategy = pool.strategy
        view.members = [member for member in pool.members if eligible(member)]
        return view

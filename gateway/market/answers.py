"""On-demand market answers: which providers are asked, in what order, what is kept and served.

Each answer (`gateway.market.kinds`: trending, overview, protocols, TVL) is asked of its
category's pool (MARKET_DATA or DEFI, found with the registry's `pool_for`), through
`Pool.call`, so the pool's strategy orders the providers, skips the disabled, unconfigured,
circuit-open and backing-off ones, fails over within the call, and counts every call on its
members (`uses`). Only members with a fetcher for that answer are walked (a `MarketCache.view`
of the pool), so an exchange with no global endpoint is neither called nor counted.

One request, in order:

1. The answer fetched less than its TTL ago (`ttl_<kind>`) is served, unless its data is past
   the hard age limit.
2. Otherwise the pool is asked, for at most `market_answer_seconds` in all. Fetchers run with
   `NO_RETRY`: a 5xx, a timeout or a 429 moves on to the next provider at once (the pool
   remembers the Retry-After and skips that provider until it has passed), so a provider's
   `Retry-After: 30` never holds a client for 30 s. An answer whose own timestamp is past the
   hard limit counts as that provider's failure (StaleData), and the next one is asked.
3. When every provider failed (or the time ran out): the last good answer, kept even after its
   TTL, is served with an `UPSTREAM_FALLBACK` warning naming its provider, age and why, as long
   as it is within the hard limit; otherwise the error: STALE_DATA if providers answered only
   with data past the limit, else UPSTREAM_UNAVAILABLE listing each provider's failure. For
   `FAILURE_HOLD` seconds after such a failure, requests go straight to this step rather than
   asking again, so a crowd of clients cannot turn an outage into a crowd of upstream calls.

What the gateway stored itself (`stored(key)`, gateway.market.stored: TVL's daily series)
stands in for the last good answer when it is newer, or when there is none (after a restart).

Whatever is served passes `Freshness.check`: older than `fresh_<kind>`, a STALE_DATA warning
with its age. One fetch per answer at a time; concurrent requests wait for it and reuse it.

Must never serve data past its hard limit, never invent or combine figures from several
providers, and never import the API layer (warnings go to the `Warn` callable it is given).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import trio

from gateway.config import ProviderConfig, Settings
from gateway.errors import PoolExhausted, StaleData, UpstreamError, UpstreamUnconfigured
from gateway.market.cache import Entry, MarketCache
from gateway.market.freshness import Freshness, Warn, age_seconds
from gateway.market.kinds import Kind
from gateway.models import utc_now
from gateway.upstream import NO_RETRY, Pool, UpstreamClient

__all__ = ["FAILURE_HOLD", "UPSTREAM_FALLBACK", "MarketAnswers"]

T = TypeVar("T")

# After every provider failed, requests answer from the last good answer (or fail) without
# asking again for this long.
FAILURE_HOLD: Final = 5.0
# The warning on an answer served from the last good one because no provider could answer.
UPSTREAM_FALLBACK: Final = "UPSTREAM_FALLBACK"


class MarketAnswers:
    """Answers market questions through the pools; see the module docstring.

    `pool_for(category)` finds a category's pool (`ProviderRegistry.pool_for`); `key_for`
    a provider's API key (`Secrets.key_for`); `stored(key)` the gateway's own stored answer.
    All state lives in `cache`, so an instance is cheap and may be made per request.
    """

    def __init__(
        self,
        settings: Settings,
        cache: MarketCache,
        client: UpstreamClient,
        pool_for: Callable[[str], Pool | None],
        key_for: Callable[[ProviderConfig], str | None],
        stored: Callable[[str], Awaitable[Entry[Any] | None]] | None = None,
    ) -> None:
        self.stored = stored
        self.settings = settings
        self.cache = cache
        self.client = client
        self.pool_for = pool_for
        self.key_for = key_for

    async def answer(self, kind: Kind[T], warn: Warn) -> Entry[T]:
        """The answer to serve for `kind`, warnings given to `warn`; raises UpstreamError
        (UPSTREAM_UNAVAILABLE) or StaleData (STALE_DATA) when there is none to serve."""
        limits = Freshness.of(self.settings, kind.key)
        ttl = float(getattr(self.settings, f"ttl_{kind.key}"))
        async with self.cache.lock(kind.key):
            cached = self.cache.fresh(kind.key, ttl)
            if cached is not None and not limits.too_old(cached.observed_at, utc_now()):
                return self._served(kind, limits, cached, warn)
            failure = self.cache.recent_failure(kind.key, FAILURE_HOLD)
            if failure is None:
                try:
                    entry: Entry[T] = await self._fetch(kind, limits)
                except UpstreamError as exc:
                    self.cache.record_failure(kind.key, exc)
                    failure = exc
                else:
                    self.cache.store(kind.key, entry)
                    return self._served(kind, limits, entry, warn)
            kept = await self.stored(kind.key) if self.stored is not None else None
            return self._fallback(kind, limits, failure, warn, kept)

    def _served(self, kind: Kind[T], limits: Freshness, entry: Entry[T], warn: Warn) -> Entry[T]:
        limits.check(kind.what, entry.observed_at, utc_now(), warn, provider=entry.provider)
        return entry

    def _fallback(
        self,
        kind: Kind[T],
        limits: Freshness,
        failure: UpstreamError,
        warn: Warn,
        kept: Entry[T] | None = None,
    ) -> Entry[T]:
        last: Entry[T] | None = self.cache.last(kind.key)
        if kept is not None and (last is None or kept.observed_at > last.observed_at):
            last = kept  # the gateway's own stored history is newer (or all there is)
        now = utc_now()
        if last is None or limits.too_old(last.observed_at, now):
            raise failure.with_traceback(None)  # the same error for FAILURE_HOLD: no growing trace
        warn(
            UPSTREAM_FALLBACK,
            f"no provider could answer ({failure}); serving {kind.what} {last.provider} gave"
            f" at {last.fetched_at.isoformat()}",
            category=kind.key,
            provider=last.provider,
            stale=True,
            fetchedAt=last.fetched_at.isoformat(),
            ageSeconds=round(age_seconds(last.observed_at, now), 3),
        )
        return self._served(kind, limits, last, warn)

    async def _fetch(self, kind: Kind[T], limits: Freshness) -> Entry[T]:
        """Ask the pool's members that can answer `kind`, in the pool's order, within
        `market_answer_seconds`."""
        pool = self.pool_for(kind.category)
        if pool is None:
            raise UpstreamUnconfigured(
                f"no {kind.category} provider is enabled, so nobody can give {kind.what}",
                provider=kind.category.lower().replace("_", "-"),
            )
        view = self.cache.view(pool, kind.key, lambda m: kind.fetcher(m.provider) is not None)
        if not view.members:
            raise UpstreamUnconfigured(
                f"no provider of pool {pool.id!r} offers {kind.what}", provider=pool.id
            )
        refused: list[StaleData] = []

        async def ask(provider: ProviderConfig) -> Entry[T]:
            fetcher = kind.fetcher(provider)
            assert fetcher is not None  # the view holds only members with a fetcher
            value: T = await fetcher(
                self.client, provider, key=self.key_for(provider), retry=NO_RETRY
            )
            fetched_at = utc_now()
            observed_at = kind.dated(value) or fetched_at
            if limits.too_old(observed_at, fetched_at):
                error = limits.refusal(kind.what, observed_at, fetched_at, provider=provider.id)
                refused.append(error)
                raise error  # a provider failure: the pool asks the next one
            return Entry(value, provider.id, observed_at, fetched_at, trio.current_time())

        seconds = self.settings.market_answer_seconds
        with trio.move_on_after(seconds):
            try:
                entry = await view.call(ask)
            except PoolExhausted as exc:
                if refused:
                    raise min(refused, key=lambda e: e.age_seconds) from exc
                raise
            # The pool's `current` is the provider that served last, whatever it served; the
            # view has already reported a change of provider for this answer, if any.
            pool.current = entry.provider
            return entry
        raise UpstreamError(f"no provider gave {kind.what} within {seconds:g} s", provider=pool.id)

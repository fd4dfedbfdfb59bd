"""The collector base classes and the parsing helpers every source module shares.

A source module holds two things:

* a **pure parse function** (payload + observation time -> list of `PriceTick`), tested against
  fixture payloads, which either returns real parsed values or raises `UpstreamPayloadError`;
  it never fills in a value the upstream did not send;
* a **collector class**, usually a few lines on top of `PollingCollector`: `poll()` makes one
  request through the shared `UpstreamClient` and parses it.

`PollingCollector.run()` is the loop the supervisor starts with `await nursery.start(...)`: poll,
publish, sleep `interval_seconds`. Upstream trouble (`UpstreamError` and subclasses) is logged
and retried with doubling backoff; it never escapes. Anything else is a bug and does escape,
so the supervisor can restart the collector with its own backoff.

The one registry of what each provider runs is `gateway.sources.registry`.

Must never import a source module (they import this one) or anything above `gateway.upstream`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

import structlog
import trio

from gateway.config import MINUTES, ProviderConfig
from gateway.errors import UpstreamError, UpstreamRateLimited
from gateway.models import PriceTick, utc_now
from gateway.sources.schedule import JobClock
from gateway.symbols import normalize_symbol
from gateway.upstream import UpstreamClient
from gateway.upstream.client import NO_RETRY

R = TypeVar("R")  # what a polling loop collects
TickParser = Callable[..., list[PriceTick]]  # parse(payload, observed_at, *, provider=…)

__all__ = [
    "MAX_BACKOFF_FACTOR",
    "MAX_RETRY_AFTER",
    "Collector",
    "CollectorContext",
    "PollingCollector",
    "PollingLoop",
    "Publish",
    "backoff_delay",
    "epoch_millis",
    "is_valid_price",
    "number_or_none",
    "optional_number",
]

log = structlog.get_logger(__name__)

Publish = Callable[[Sequence[PriceTick]], Awaitable[None]]

# After n consecutive failures a collector waits interval * 2**n, at most this many intervals.
MAX_BACKOFF_FACTOR: Final = 10
# A Retry-After longer than this is treated as this long: one request an hour is harmless even
# while banned, and it stops a bogus far-future HTTP-date from silencing a provider for good.
MAX_RETRY_AFTER: Final = 60 * MINUTES


@dataclass
class CollectorContext:
    """What a collector is given: its provider entry, the shared client, what to collect, and
    where to send what it collected.

    `symbols` are canonical symbols; a provider entry's own `symbols` takes precedence. `publish`
    stores and fans out a batch; it may block briefly (backpressure), which simply delays the next
    poll. `key` is the provider's API key from `gateway.providers.upstream_keys` (the client sends
    it as `provider.auth` says); None for a keyless or unconfigured provider, and an unconfigured
    one is never started. Never log it.
    """

    provider: ProviderConfig
    client: UpstreamClient
    symbols: tuple[str, ...]
    publish: Publish
    key: str | None = field(default=None, repr=False)  # a secret: kept out of repr()


class Collector(Protocol):
    """What the supervisor needs from a collector class."""

    name: ClassVar[str]

    def __init__(self, ctx: CollectorContext) -> None: ...

    async def poll(self) -> list[PriceTick]:
        """One fetch + parse; raises `UpstreamError` subclasses on failure."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever; reports started at once; only unexpected exceptions escape."""
        ...


def backoff_delay(interval: float, failures: int, retry_after: float | None = None) -> float:
    """Seconds to wait before the next poll after `failures` consecutive failures.

    0 failures: `interval`. Then `interval * 2**failures` (2x, 4x, 8x, ...) capped at
    `MAX_BACKOFF_FACTOR * interval`. A provider's Retry-After wins when it is longer (itself
    capped at `MAX_RETRY_AFTER`).
    """
    if failures <= 0:
        delay = interval
    else:
        # The exponent is clamped first so a long outage cannot overflow a float.
        delay = min(interval * 2 ** min(failures, 16), interval * MAX_BACKOFF_FACTOR)
    if retry_after is not None and retry_after > delay:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def number_or_none(value: Any, *, strings: bool = False) -> float | None:
    """`value` as a float if it is a JSON number (or, with `strings`, a numeric string), else None.

    Booleans are not numbers here, although Python thinks so. NaN and infinities are returned
    as they are: whether they are acceptable is the caller's rule.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if strings and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def optional_number(
    section: Mapping[str, Any] | None,
    key: str,
    where: str,
    fail: Callable[[str], Exception],
    *,
    signed: bool,
    strings: bool = False,
) -> float | None:
    """`section[key]` as a finite number (not negative unless `signed`; a numeric string too
    with `strings`), None when absent or null; anything else is `fail(...)` raised: a provider
    that sends a field must send it right, and a missing figure stays missing, never 0."""
    raw = section.get(key) if section is not None else None
    if raw is None:
        return None
    value = number_or_none(raw, strings=strings)
    if value is None or not math.isfinite(value) or (not signed and value < 0):
        raise fail(f"{where}: invalid {key} {raw!r}")
    return value


def epoch_millis(value: Any) -> datetime | None:
    """An aware UTC datetime from milliseconds since the epoch, or None if not a sane time."""
    millis = number_or_none(value)
    if millis is None or not math.isfinite(millis) or millis <= 0:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000.0, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def is_valid_price(value: float | None) -> bool:
    """A usable USD price: a finite number above zero."""
    return value is not None and math.isfinite(value) and value > 0


class PollingLoop(Generic[R]):
    """poll -> publish -> sleep, forever: the one loop every polling collector runs, whatever
    it collects (price ticks here, news items and index values in `news_base`).

    A subclass sets `name` and implements `provider`, `poll()` and `publish()`. Exposes
    `consecutive_failures`, `last_error` and `last_success_at` for health reporting.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.consecutive_failures = 0
        self.last_error: UpstreamError | None = None
        self.last_success_at: datetime | None = None

    @property
    def provider(self) -> ProviderConfig:
        raise NotImplementedError

    async def poll(self) -> Sequence[R]:
        """One fetch + parse; raises `UpstreamError` subclasses on failure."""
        raise NotImplementedError

    async def publish(self, records: Sequence[R]) -> None:
        """Hand a polled batch on (it may wait: backpressure delays the next poll)."""
        raise NotImplementedError

    def next_delay(self, error: UpstreamError | None) -> float:
        """Delay before the next poll, given the current failure count and the last error."""
        retry_after = error.retry_after if isinstance(error, UpstreamRateLimited) else None
        return backoff_delay(self.provider.interval_seconds, self.consecutive_failures, retry_after)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll, publish, sleep; forever. See the module docstring for the error rules."""
        task_status.started()
        logger = log.bind(provider=self.provider.id, collector=self.name)
        clock = JobClock(f"collector:{self.provider.id}", self.provider.interval_seconds)
        while True:
            await clock.begin()
            error: UpstreamError | None = None
            try:
                records = await self.poll()
            except UpstreamError as exc:
                error = exc
                self.consecutive_failures += 1
                self.last_error = exc
            else:
                if self.consecutive_failures:
                    logger.info("collector.recovered", after_failures=self.consecutive_failures)
                self.consecutive_failures = 0
                self.last_success_at = utc_now()
                if records:
                    await self.publish(records)
            delay = self.next_delay(error)
            if error is not None:
                logger.warning(
                    "collector.poll_failed",
                    error=str(error),
                    error_class=type(error).__name__,
                    status=error.status,
                    failures=self.consecutive_failures,
                    retry_in_s=round(delay, 3),
                )
            await clock.plan(delay, error)
            await trio.sleep(delay)


class PollingCollector(PollingLoop[PriceTick]):
    """The price collectors' base: a subclass sets `name` and implements `poll()`."""

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__()
        self.ctx = ctx

    @property
    def provider(self) -> ProviderConfig:
        return self.ctx.provider

    async def publish(self, records: Sequence[PriceTick]) -> None:
        await self.ctx.publish(records)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Canonical symbols to collect: the provider entry's own list, else the context's."""
        chosen = self.ctx.provider.symbols or self.ctx.symbols
        return tuple(dict.fromkeys(normalize_symbol(s) for s in chosen if s.strip()))

    async def poll(self) -> list[PriceTick]:
        raise NotImplementedError

    async def fetch_ticks(
        self,
        path: str,
        parse: TickParser,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[PriceTick]:
        """GET `path` and `parse(payload, observed_at, provider=…)` the body, with the
        context's key.

        The parser runs inside the request's attempt, so a wrong-shape body counts against
        the provider's circuit breaker like any other failure. No retry: the polling loop's
        backoff is the retry.
        """
        provider_id = self.provider.id
        ticks: list[PriceTick] = await self.ctx.client.request_parsed(
            self.provider,
            path,
            lambda payload: parse(payload, utc_now(), provider=provider_id),
            params=params,
            headers=headers,
            key=self.ctx.key,
            retry=NO_RETRY,
        )
        return ticks

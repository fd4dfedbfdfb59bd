"""`gateway backfill`: fill a symbol's candle history from providers' candle endpoints.

It walks the requested range in slices of `SLICE_INTERVALS` candles. For each slice it reads
what the store already holds (our own ticks' candles, stored provider candles) and asks the
market-data providers, in pool order, only for the closed buckets still missing and only for
ranges each has not answered before (`gateway.store.candles` coverage). Each slice is committed
before the next begins, so:

* **resumable**: interrupted, it loses at most the slice in flight; run again, it skips
  what is held and carries on;
* **idempotent**: a second run over the same range asks nothing and stores nothing;
* **rate limits**: every request goes through the shared client's limiters (with the usage
  the server last saved restored first), so it waits for budget instead of being banned.
  A server running at the same time keeps its own count; the two together may use up to
  twice a provider's budget, which is why the default limits leave headroom.

Progress goes to stderr: a bar redrawn in place on a terminal, a line per tenth otherwise. The
bar counts slices *checked*, so a run that stores nothing still reaches 100 %; the command then
says so in one plain line, with the reason (`nothing_stored_reason`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TextIO

from gateway.config import ProviderConfig, ProvidersFile
from gateway.models import from_epoch_ms, utc_now
from gateway.prices.history import SLICE_INTERVALS, CandleHistory, FillReport, closed_grid, holes
from gateway.providers.registry import restore_usage
from gateway.providers.upstream_keys import Secrets
from gateway.storage import ProviderStore, Storage
from gateway.upstream import UpstreamClient

__all__ = [
    "BackfillResult",
    "ProgressBar",
    "backfill",
    "market_providers",
    "nothing_stored_reason",
    "open_history",
    "window",
]


@dataclass
class BackfillResult:
    """What a run did. `missing`: closed buckets no provider could give, as (start, end)."""

    slices: int = 0
    slices_held: int = 0  # already complete in the store: nothing asked
    inserted: int = 0
    requests: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[datetime, datetime]] = field(default_factory=list)


class ProgressBar:
    """A one-line progress bar on a terminal; on a pipe, a line at every tenth (so logs of a
    long backfill stay short)."""

    WIDTH = 30

    def __init__(self, label: str, total: int = 1, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)  # `backfill` sets it once it knows the slices
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_tenth = -1

    def update(self, done: int, note: str) -> None:
        fraction = min(done / self.total, 1.0)
        filled = round(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"{self.label} [{bar}] {fraction:4.0%} {done}/{self.total} slices  {note}"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        elif (tenth := int(fraction * 10)) != self._last_tenth:
            self._last_tenth = tenth
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def market_providers(file: ProvidersFile, secrets: Secrets) -> list[ProviderConfig]:
    """The market-data pool's members (declared or default), enabled and configured, in pool
    order: the providers `serve` would ask to fill gaps."""
    for pool in file.all_pools():
        if pool.category != "MARKET_DATA":
            continue
        found = [file.get(member) for member in pool.members]
        return [p for p in found if p is not None and p.enabled and secrets.is_configured(p)]
    return []


async def backfill(
    history: CandleHistory,
    symbol: str,
    interval_seconds: int,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
    progress: ProgressBar | None = None,
) -> BackfillResult:
    """Fill the closed buckets of [start, end) that the store lacks; see the module docstring."""
    now = now or utc_now()
    result = BackfillResult()
    grid = closed_grid(interval_seconds, start, end, now)
    if grid is None:
        return result
    step = SLICE_INTERVALS * interval_seconds * 1000
    bounds = range(grid[0], grid[1], step)
    if progress is not None:
        progress.total = max(len(bounds), 1)
    for number, a in enumerate(bounds, 1):
        b = min(a + step, grid[1])
        result.slices += 1
        lo, hi = from_epoch_ms(a), from_epoch_ms(b)
        series = await history.read(symbol, interval_seconds, lo, hi, now)
        gaps = holes(series, interval_seconds, (a, b))
        if not gaps:
            result.slices_held += 1
        else:
            report = await history.fill(symbol, interval_seconds, gaps, now, FillReport())
            result.inserted += report.inserted
            result.requests += report.requests
            result.errors += report.errors
            result.missing += [(from_epoch_ms(x), from_epoch_ms(y)) for x, y in report.missing]
        if progress is not None:
            progress.update(number, f"{result.inserted} candles stored, {lo:%Y-%m-%d %H:%M}")
    return result


def nothing_stored_reason(result: BackfillResult) -> str | None:
    """Why a run stored no candle, in words for the person who ran it; None if it stored some."""
    if result.inserted:
        return None
    if result.slices == 0:
        return "the range holds no closed candle yet (move --until back or widen --days)"
    if result.slices_held == result.slices:
        return "every candle in the range is already stored"
    if result.errors:
        provider, message = result.errors[-1]
        failed = sorted({p for p, _ in result.errors})
        return f"{', '.join(failed)} failed (last error: {provider}: {message})"
    if result.requests == 0:
        return "the providers have already answered for this range with no candles"
    return "the providers answered with no candles for this range (not listed on those dates?)"


async def open_history(
    storage: Storage,
    client: UpstreamClient,
    providers: Sequence[ProviderConfig],
    *,
    key_for: Callable[[ProviderConfig], str | None] | None = None,
) -> CandleHistory:
    """A CandleHistory for the CLI, its limiters primed with the usage the server last saved;
    `key_for` gives each provider's API key (`Secrets.key_for`)."""
    chosen = list(providers)
    await restore_usage(ProviderStore(storage), client, {p.id: p for p in chosen}.get)
    # reserve=0: it is here to spend
    return CandleHistory(storage, client, lambda: chosen, reserve=0, key_for=key_for)


def window(days: float, until: datetime | None) -> tuple[datetime, datetime]:
    """[until - days, until), `until` defaulting to now."""
    end = until or utc_now()
    return end - timedelta(days=days), end

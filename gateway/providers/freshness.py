"""Data freshness per category and provider: FRESH, STALE, EXPIRED or NO_DATA.

The age judged is that of each provider's newest delivered data (the status board's
`last_success_at`: a successful poll, or a stream's last message). The limits are the ones the
answers already use where a category has them (gateway.market.freshness, from
`Settings.fresh_<category>` and `Settings.max_age_<category>`): MARKET_DATA is judged by the
prices limits, DEFI by the protocols limits. A category without such settings is judged by each
provider's own polling interval: STALE past `STALE_INTERVALS` intervals without data (three
polls missed), EXPIRED past `EXPIRED_INTERVALS`. A provider that has delivered nothing yet (or
is unconfigured) is NO_DATA. Each category also gets a row of its own (provider None) judged
by its freshest provider: the category is as fresh as the best data the gateway has for it.

Pure rules over the board and settings; callers pass `now`. Must never: report FRESH for data
nobody delivered, or judge a disabled provider (it is not expected to deliver).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gateway.config import ProvidersFile, Settings
from gateway.providers.status import ProviderStatusBoard

__all__ = [
    "EXPIRED_INTERVALS",
    "STALE_INTERVALS",
    "DataFreshness",
    "FreshnessState",
    "data_freshness",
    "limits",
    "worst",
]

STALE_INTERVALS: Final = 3.0
EXPIRED_INTERVALS: Final = 20.0

# A category judged by the limits the answers use (gateway.market.freshness).
_SETTINGS_CATEGORY: Final = {"MARKET_DATA": "prices", "DEFI": "protocols"}


class FreshnessState(enum.StrEnum):
    """How old a category's or provider's newest data is, worst last."""

    FRESH = "FRESH"
    STALE = "STALE"
    EXPIRED = "EXPIRED"
    NO_DATA = "NO_DATA"


_ORDER: Final = {state: n for n, state in enumerate(FreshnessState)}


@dataclass(frozen=True, slots=True)
class DataFreshness:
    category: str
    provider: str | None
    last_data_at: datetime | None
    age_seconds: float | None
    state: FreshnessState


def limits(settings: Settings, category: str, interval_seconds: float) -> tuple[float, float]:
    """(stale after, expired after) in seconds for `category` polled every `interval_seconds`."""
    named = _SETTINGS_CATEGORY.get(category)
    if named is not None:
        return (
            float(getattr(settings, f"fresh_{named}")),
            float(getattr(settings, f"max_age_{named}")),
        )
    return STALE_INTERVALS * interval_seconds, EXPIRED_INTERVALS * interval_seconds


def _judge(age: float | None, stale_after: float, expired_after: float) -> FreshnessState:
    if age is None:
        return FreshnessState.NO_DATA
    if age > expired_after:
        return FreshnessState.EXPIRED
    if age > stale_after:
        return FreshnessState.STALE
    return FreshnessState.FRESH


def worst(states: Iterable[FreshnessState]) -> FreshnessState | None:
    """The worst of `states` (NO_DATA worst of all), None for none."""
    return max(states, key=_ORDER.__getitem__, default=None)


def data_freshness(
    settings: Settings, providers: ProvidersFile, board: ProviderStatusBoard, now: datetime
) -> list[DataFreshness]:
    """A row per (category, enabled provider), then a row per category (provider None),
    ordered by category, the category's own row first."""
    per_category: dict[str, list[DataFreshness]] = {}
    best: dict[str, tuple[float | None, datetime | None, float, float]] = {}
    for provider in providers.providers:
        if not provider.enabled:
            continue
        record = board.records.get(provider.id)
        last = record.last_success_at if record is not None and record.configured else None
        age = max(0.0, (now - last).total_seconds()) if last is not None else None
        for category in dict.fromkeys(str(c) for c in provider.categories):
            stale_after, expired_after = limits(settings, category, provider.interval_seconds)
            state = _judge(age, stale_after, expired_after)
            row = DataFreshness(category, provider.id, last, age, state)
            per_category.setdefault(category, []).append(row)
            held = best.get(category)
            if held is None or (age is not None and (held[0] is None or age < held[0])):
                best[category] = (age, last, stale_after, expired_after)
    rows: list[DataFreshness] = []
    for category in sorted(per_category):
        age, last, stale_after, expired_after = best[category]
        rows.append(
            DataFreshness(category, None, last, age, _judge(age, stale_after, expired_after))
        )
        rows.extend(sorted(per_category[category], key=lambda r: r.provider or ""))
    return rows

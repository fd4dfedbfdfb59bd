"""Alternative.me's Crypto Fear & Greed Index, `GET /fng/?limit=N&format=json` (no key).

The answer is `{"name": "Fear and Greed Index", "data": [{"value": "40", "value_classification":
"Fear", "timestamp": "1551157200", "time_until_update": "68499"}, …], "metadata": {"error":
null}}`, newest first: one value per UTC day, `timestamp` in Unix seconds (as strings), the
first entry also saying in how many seconds the next value is due (alternative.me/crypto/
fear-and-greed-index/, "API"). `limit=0` is the whole history (since February 2018).

History is asked for once: the collector's context says the newest day already stored, and the
first poll asks for every day since (all of them, `limit=0`, on an empty store); later polls ask
for the last two days (today's value and, around midnight, yesterday's final one). Between
polls it sleeps the provider's interval, or longer when the upstream says the next value is
further off (`time_until_update`), but never more than a day.

Must never store a value outside 0-100, a day without a timestamp, or an answer whose
`metadata.error` is set.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.models import utc_now
from gateway.news_models import FearGreedPoint
from gateway.sources.base import number_or_none
from gateway.sources.news_base import RecordCollector, RecordContext

__all__ = ["ALL_HISTORY", "FearAndGreedCollector", "history_limit", "parse_fng"]

ALL_HISTORY: Final = 0  # alternative.me's `limit=0`: every day it has
RECENT_DAYS: Final = 2
MAX_SLEEP: Final = 24 * 3600.0


def _point(entry: Any, provider: str) -> FearGreedPoint:
    if not isinstance(entry, dict):
        raise UpstreamPayloadError("a data entry is not an object", provider=provider)
    value = number_or_none(entry.get("value"), strings=True)
    stamp = number_or_none(entry.get("timestamp"), strings=True)
    label = entry.get("value_classification")
    if value is None or not value.is_integer() or not 0 <= value <= 100:
        raise UpstreamPayloadError(f"invalid value {entry.get('value')!r}", provider=provider)
    if stamp is None or not math.isfinite(stamp) or stamp <= 0:
        raise UpstreamPayloadError(
            f"invalid timestamp {entry.get('timestamp')!r}", provider=provider
        )
    if not isinstance(label, str) or not label.strip():
        raise UpstreamPayloadError("missing value_classification", provider=provider)
    return FearGreedPoint(int(value), label.strip(), datetime.fromtimestamp(stamp, UTC), provider)


def parse_fng(payload: Any, *, provider: str) -> tuple[list[FearGreedPoint], float | None]:
    """The index values of one answer (newest first) and the seconds until the next one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise UpstreamPayloadError("no data list in the answer", provider=provider)
    metadata = payload.get("metadata")
    error = metadata.get("error") if isinstance(metadata, dict) else None
    if error:
        raise UpstreamPayloadError(f"error answer: {error!r}", provider=provider)
    points = [_point(entry, provider) for entry in payload["data"]]
    first = payload["data"][0] if payload["data"] else None
    until = number_or_none(first.get("time_until_update"), strings=True) if first else None
    return points, (until if until is not None and math.isfinite(until) and until > 0 else None)


def history_limit(newest: datetime | None, now: datetime) -> int:
    """How many days to ask for: all (0) with nothing stored, else the days since the newest
    stored one, at least the last two."""
    if newest is None:
        return ALL_HISTORY
    missing = math.ceil((now - newest) / timedelta(days=1)) + 1
    return max(RECENT_DAYS, missing)


class FearAndGreedCollector(RecordCollector[FearGreedPoint]):
    """Backfills the index's history once, then keeps today's value current."""

    name: ClassVar[str] = "alternative-me"

    def __init__(self, ctx: RecordContext[FearGreedPoint]) -> None:
        super().__init__(ctx)
        self.newest = ctx.newest
        self.next_update: float | None = None

    async def poll(self) -> list[FearGreedPoint]:
        params = {"limit": str(history_limit(self.newest, utc_now())), "format": "json"}
        found: list[float | None] = [None]

        def parse(payload: object) -> list[FearGreedPoint]:
            points, found[0] = parse_fng(payload, provider=self.provider.id)
            return points

        points = await self.fetch_json("/fng/", parse, params=params)
        self.next_update = found[0]
        if points:
            newest = max(point.at for point in points)
            self.newest = max(newest, self.newest) if self.newest else newest
        return points

    def next_delay(self, error: UpstreamError | None) -> float:
        delay = super().next_delay(error)
        if error is None and self.next_update is not None:
            delay = max(delay, min(self.next_update, MAX_SLEEP))
        return delay

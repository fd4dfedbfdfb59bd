"""The Fear & Greed index: stored daily, the newest value published when it changes.

A Fear & Greed collector (`gateway.sources.alternative_me`) hands every value it read to
`FearGreedFeed.publish`: they are upserted one row per provider and day (the backfill's history
and the later daily values alike), and when a provider's newest day is new, or its value was
revised, that value goes out on `bus.fear_greed` (the `fearGreed` subscription). `newest` tells
a (re)starting collector which day it has up to, so the history is fetched once.

Must never publish a value that is not stored, or one that is older than what was published.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.news_models import FearGreedPoint
from gateway.pubsub import EventBus
from gateway.storage import NewsStore

__all__ = ["FearGreedFeed"]


class FearGreedFeed:
    """Stores index values and publishes each provider's newest when it changes."""

    def __init__(self, store: NewsStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self.latest: dict[str, FearGreedPoint] = {}

    async def newest(self, provider: str) -> datetime | None:
        """The newest day stored for `provider` (None: none yet, so fetch the history)."""
        point = self.latest.get(provider) or await self.store.latest_fear_greed(provider)
        if point is not None:
            self.latest.setdefault(provider, point)
        return point.at if point is not None else None

    async def publish(self, points: Sequence[FearGreedPoint]) -> None:
        """Store `points`; publish each provider's newest one that is new or revised."""
        if not points:
            return
        await self.store.add_fear_greed(points)
        newest: dict[str, FearGreedPoint] = {}
        for point in points:
            if point.provider not in newest or point.at > newest[point.provider].at:
                newest[point.provider] = point
        for provider, point in newest.items():
            known = self.latest.get(provider)
            if known is not None and (point.at < known.at or point == known):
                continue
            self.latest[provider] = point
            self.bus.fear_greed.publish(point)

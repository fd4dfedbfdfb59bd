"""Shared by the news tests: providers.toml's own news entries pointed at the simulator, a
recorder for collectors' batches, and a fake sentiment scorer with the real one's interface."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import trio

from gateway.config import ProviderConfig
from tests.simulator import shipped_provider
from tests.simulator.rest import Simulator

T = TypeVar("T")


def news_provider(sim: Simulator, provider_id: str, **overrides: Any) -> ProviderConfig:
    """The shipped providers.toml entry of `provider_id`, pointed at the simulator, quick: its
    rate limits (2 a minute for a feed) are lifted unless `overrides` sets them."""
    entry = shipped_provider(provider_id)
    fields: dict[str, Any] = {
        "base_url": sim.base_url(provider_id),
        "timeout_seconds": 2.0,
        "interval_seconds": 1.0,
        "rate_limits": (),
        **overrides,
    }
    return replace(entry, **fields)


class Recorder(Generic[T]):
    """A `publish` callable: keeps every batch and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.batches: list[list[T]] = []
        self._changed = trio.Event()

    async def __call__(self, records: Sequence[T]) -> None:
        self.batches.append(list(records))
        self._changed.set()
        self._changed = trio.Event()

    @property
    def records(self) -> list[T]:
        return [record for batch in self.batches for record in batch]

    async def wait_until(self, predicate: Callable[[list[list[T]]], bool]) -> None:
        while not predicate(self.batches):
            await self._changed.wait()


@dataclass(frozen=True)
class FakeVerdict:
    label: str
    score: float
    confidence: float
    model: str


class FakeScorer:
    """The interface of gateway.news.sentiment.SentimentScorer, deterministic: a text with
    "surge", "record" or "rall" is BULLISH, one with "drain" or "fall" BEARISH, else NEUTRAL.
    `available=False` plays a scorer that could load no model."""

    def __init__(self, available: bool = True, reason: str | None = None) -> None:
        self.available = available
        self.unavailable_reason = None if available else (reason or "no model")
        self.calls: list[list[str]] = []

    async def score(self, texts: Sequence[str]) -> list[FakeVerdict | None]:
        self.calls.append(list(texts))
        await trio.lowlevel.checkpoint()
        if not self.available:
            return [None] * len(texts)
        return [self._verdict(text.lower()) for text in texts]

    @staticmethod
    def _verdict(text: str) -> FakeVerdict:
        if any(word in text for word in ("surge", "record", "rall")):
            return FakeVerdict("BULLISH", 0.8, 0.9, "fake-model")
        if any(word in text for word in ("drain", "fall")):
            return FakeVerdict("BEARISH", -0.7, 0.85, "fake-model")
        return FakeVerdict("NEUTRAL", 0.0, 0.6, "fake-model")

"""A fixed-bucket histogram for Prometheus: one observation is a short scan and two additions.

The gateway times upstream requests, storage commits and GraphQL operations on their hot
paths, so recording must cost next to nothing: buckets are fixed when the histogram is made
(`LATENCY_BUCKETS`, in seconds), counts are plain integers, and nothing is allocated per
observation. `gateway.api.metrics` reads them at scrape time (cumulative, as Prometheus wants).

Must never: grow with the number of observations, or lock (one trio thread writes; a worker
thread that records races only on an integer increment, which the GIL keeps whole).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

__all__ = ["LATENCY_BUCKETS", "Histogram"]

# Seconds: 1 ms to 30 s, roughly doubling; fine enough for a commit and an upstream call alike.
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Histogram:
    """Counts of observations per upper bound (the last slot is +Inf), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations at or under it) per bucket, "+Inf" last."""
        result: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            result.append((bound, running))
        return result

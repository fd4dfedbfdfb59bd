"""Cyclic-GC accounting for the bench servers: how many collections, of which generation, and
how much wall time they took inside a window (gc.callbacks; costs ~1 µs per collection).

Also the `--gc` policies the bench servers accept, to measure what GC tuning would buy:
    product   what `gateway serve` does: gateway.gc_tuning.tune_gc() once started (default)
    default   leave the interpreter's settings alone
    freeze    gc.freeze() once all subscribers are connected (just before publishing), so
              the long-lived connection objects are never traversed again
    tuned     freeze, and gc.set_threshold(50_000, 20, 10): far fewer young collections
    off       gc.disable() during publishing (an upper bound, not a recommendation)
"""

from __future__ import annotations

import gc
import time
from collections import deque

POLICIES = ("product", "default", "freeze", "tuned", "off")


class GCStats:
    def __init__(self, policy: str = "default") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown gc policy {policy!r}")
        self.policy = policy
        # (wall-clock end, generation, seconds, objects collected): bounded
        self.events: deque[tuple[float, int, float, int]] = deque(maxlen=500_000)
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            took = time.perf_counter() - self._began
            self.events.append((time.time(), info["generation"], took, info["collected"]))

    def before_publishing(self) -> None:
        if self.policy in ("freeze", "tuned"):
            gc.collect()
            gc.freeze()
        if self.policy == "tuned":
            gc.set_threshold(50_000, 20, 10)
        elif self.policy == "off":
            gc.disable()

    def window(self, t0: float, t1: float) -> dict[str, object]:
        counts = [0, 0, 0]
        seconds = [0.0, 0.0, 0.0]
        longest = 0.0
        for at, gen, took, _collected in list(self.events):
            if t0 <= at < t1:
                counts[gen] += 1
                seconds[gen] += took
                longest = max(longest, took)
        return {
            "policy": self.policy,
            "collections": counts,
            "seconds": [round(s, 4) for s in seconds],
            "longest_s": round(longest, 4),
            "tracked_objects": len(gc.get_objects()) if self.policy != "off" else None,
            "frozen": gc.get_freeze_count(),
            "threshold": gc.get_threshold(),
        }

"""System metrics: a snapshot of the process and its load, stored every minute, kept 90 days.

What a snapshot holds (gateway.storage.MetricsSnapshot): CPU use since the previous snapshot
(% of one core), resident memory, open file descriptors, threads, live subscription operations,
open WebSockets, rows waiting in the storage writer's queue, rows it dropped, and the database's
size on disk. The `systemMetrics(hours, limit)` query reads them back (newest first), so an
operator can see last night's memory or descriptor climb without a Prometheus server; the live
values are also on `/metrics`.

Figures are read from /proc where Linux has it; on a platform without it RSS and descriptors
are stored as NULL, never guessed. Must never: raise into the supervisor on a failed read (one
snapshot is skipped and logged), or take a snapshot on the event loop's hot path (a minute
apart, a few syscalls).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import structlog
import trio

from gateway.api.context import Services
from gateway.errors import StorageError
from gateway.models import utc_now
from gateway.storage import MetricsSnapshot, MetricsStore

__all__ = ["CpuMeter", "open_descriptors", "resident_bytes", "snapshots_forever", "take_snapshot"]

log = structlog.get_logger(__name__)


def resident_bytes() -> int | None:
    """Resident set size now (Linux /proc/self/statm), None where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_descriptors() -> int | None:
    """Open file descriptors of this process (Linux /proc/self/fd), None where unknown."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class CpuMeter:
    """CPU time used between two readings, as % of one core."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def percent(self) -> float | None:
        cpu, wall = time.process_time(), time.monotonic()
        spent, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        if elapsed <= 0:
            return None
        return round(100.0 * spent / elapsed, 2)


def take_snapshot(services: Services, cpu: CpuMeter) -> MetricsSnapshot:
    hub = services.hub
    storage = services.storage
    return MetricsSnapshot(
        at=utc_now(),
        cpu_pct=cpu.percent(),
        rss_bytes=resident_bytes(),
        open_fds=open_descriptors(),
        threads=threading.active_count(),
        subscribers=hub.member_count if hub is not None else 0,
        websockets=services.ws_stats.connections,
        write_queue=storage.queued_rows,
        dropped_rows=storage.dropped_rows,
        database_bytes=storage.database_bytes(),
    )


async def snapshots_forever(services: Services, interval: float) -> None:
    """Store a snapshot every `interval` seconds, the first one interval after start."""
    store = MetricsStore(services.storage)
    cpu = CpuMeter()
    while True:
        await trio.sleep(interval)
        try:
            await store.add(take_snapshot(services, cpu))
        except (OSError, StorageError) as exc:
            log.warning("metrics.snapshot_failed", error=repr(exc))

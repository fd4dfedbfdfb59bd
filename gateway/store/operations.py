"""Operations records: collector schedule slots and system metrics snapshots (migration 10).

`ScheduleStore` keeps one row per slot of every collector job (`on_time`, `late`, or
`skipped` with a reason) as `gateway.sources.schedule.ScheduleBook` reports them, written
best-effort through the storage writer (`write_nowait`: a full queue drops the row and counts
it in `Storage.dropped_rows`, it never slows a collector), and sums them per job for the
`schedule` query. `MetricsStore` keeps the one-a-minute system snapshot for `systemMetrics`.
Both tables are pruned by the retention task (gateway.store.retention).

Must never: block a collector's loop on a write, or invent a figure a snapshot did not take
(a metric the platform cannot read is stored as NULL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gateway.models import epoch_ms, from_epoch_ms
from gateway.store.database import Storage

__all__ = ["JobCompliance", "MetricsSnapshot", "MetricsStore", "ScheduleStore"]

_RUN_SQL: Final = """
INSERT INTO schedule_runs (task, interval_s, expected_ms, actual_ms, outcome, reason)
VALUES (?, ?, ?, ?, ?, ?)
"""

_COMPLIANCE_SQL: Final = """
SELECT task,
       (SELECT interval_s FROM schedule_runs AS last
        WHERE last.task = r.task ORDER BY expected_ms DESC, id DESC LIMIT 1),
       max(actual_ms),
       count(CASE WHEN outcome = 'on_time' THEN 1 END),
       count(CASE WHEN outcome = 'late' THEN 1 END),
       count(CASE WHEN outcome = 'skipped' THEN 1 END)
FROM schedule_runs AS r
WHERE expected_ms >= ?
GROUP BY task
ORDER BY task
"""

_METRICS_INSERT: Final = """
INSERT OR REPLACE INTO system_metrics (at_ms, cpu_pct, rss_bytes, open_fds, threads,
    subscribers, websockets, write_queue, dropped_rows, database_bytes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_METRICS_SQL: Final = """
SELECT at_ms, cpu_pct, rss_bytes, open_fds, threads, subscribers, websockets, write_queue,
       dropped_rows, database_bytes
FROM system_metrics WHERE at_ms >= ? ORDER BY at_ms DESC LIMIT ?
"""


@dataclass(frozen=True, slots=True)
class JobCompliance:
    """One job's slots since a moment, summed."""

    task: str
    interval_seconds: float
    last_run_at: datetime | None
    on_time: int
    late: int
    skipped: int


class ScheduleStore:
    """Reads and writes `schedule_runs`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def record(
        self,
        task: str,
        interval_seconds: float,
        expected_at: datetime,
        actual_at: datetime | None,
        outcome: str,
        reason: str | None,
    ) -> bool:
        """Queue one slot (best-effort; False when the writer's queue is full)."""
        row = (
            task,
            float(interval_seconds),
            epoch_ms(expected_at),
            epoch_ms(actual_at) if actual_at is not None else None,
            outcome,
            reason,
        )
        return self.storage.write_nowait(_RUN_SQL, [row])

    async def compliance(self, since: datetime) -> list[JobCompliance]:
        """Every job's slots due since `since`, summed, by task name."""
        await self.storage.committed()
        rows: Sequence[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_COMPLIANCE_SQL, [epoch_ms(since)]).fetchall()
        )
        return [
            JobCompliance(
                task,
                float(interval or 0.0),
                from_epoch_ms(last) if last is not None else None,
                int(on_time or 0),
                int(late or 0),
                int(skipped or 0),
            )
            for task, interval, last, on_time, late, skipped in rows
        ]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The process and its load at one moment; None where the platform cannot tell."""

    at: datetime
    cpu_pct: float | None
    rss_bytes: int | None
    open_fds: int | None
    threads: int | None
    subscribers: int
    websockets: int
    write_queue: int
    dropped_rows: int
    database_bytes: int


class MetricsStore:
    """Reads and writes `system_metrics`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def add(self, snapshot: MetricsSnapshot) -> None:
        s = snapshot
        row = (
            epoch_ms(s.at), s.cpu_pct, s.rss_bytes, s.open_fds, s.threads, s.subscribers,
            s.websockets, s.write_queue, s.dropped_rows, s.database_bytes,
        )  # fmt: skip
        await self.storage.write(_METRICS_INSERT, [row])

    async def recent(self, since: datetime, limit: int) -> list[MetricsSnapshot]:
        """Snapshots taken since `since`, newest first, at most `limit`."""
        await self.storage.committed()
        rows: Sequence[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_METRICS_SQL, [epoch_ms(since), limit]).fetchall()
        )
        return [MetricsSnapshot(from_epoch_ms(row[0]), *row[1:]) for row in rows]

"""Schedule compliance: did each collector job start when it was due?

Every polling loop (`gateway.sources.base.PollingCollector.run`, the news pollers in
`gateway.sources.news_base`, the chain loop in `gateway.chains.polling`) plans its next start
before it sleeps. When it wakes it tells the `ScheduleBook` the planned and the actual start:
within `tolerance` seconds (5 s by default) the run is *on time*, otherwise *late* by the
difference. The plan is the previous start plus the interval, so a slow upstream that keeps a
poll busy for 20 s makes the next start 20 s late. Slots a job gives up while it backs off are
*skipped*, each with a reason: `rate_limited` (a 429 or our own budget), `circuit_open`,
`no_provider` (every member of a pool failed), `unconfigured` (no key: never started) or
`failing` (any other upstream trouble).

The book is reached through a context variable (`current_book`): the supervisor sets it before
it starts its tasks, and trio copies the context into every task spawned after, so each loop
finds it without a parameter threaded through three collector families. Outside a gateway (a
unit test driving one collector) it is None and nothing is recorded.

Recording is cheap on purpose: a few integer increments, a deque append and one best-effort
queued row (`record` callback: the storage writer's `write_nowait`). The alert callback runs
only when a job crosses below `floor` (80 %) of on-time starts over its recent slots.

Must never: block or raise into a collector's loop (a failing callback is logged and ignored),
or import the store (it sits beside this layer; the supervisor wires the callbacks).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import structlog
import trio

from gateway.errors import (
    CircuitOpenError,
    PoolExhausted,
    UpstreamRateLimited,
    UpstreamUnconfigured,
)
from gateway.models import utc_now

__all__ = [
    "ON_TIME_FLOOR",
    "JobClock",
    "ScheduleBook",
    "ScheduleRun",
    "ScheduledJob",
    "current_book",
    "skip_reason",
]

log = structlog.get_logger(__name__)

# A job is alerted on when fewer than this share of its recent slots started on time.
ON_TIME_FLOOR: Final = 0.8
# How many recent slots the alert looks at, and how many it needs before it judges.
RECENT_SLOTS: Final = 20
MIN_SLOTS: Final = 10


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One slot of a job: `outcome` is on_time, late or skipped (then `reason` says why)."""

    task: str
    interval_seconds: float
    expected_at: datetime
    actual_at: datetime | None
    outcome: str
    reason: str | None = None

    @property
    def delay_seconds(self) -> float | None:
        if self.actual_at is None:
            return None
        return (self.actual_at - self.expected_at).total_seconds()


@dataclass(slots=True)
class ScheduledJob:
    """What the book knows of one job since the process started."""

    task: str
    interval_seconds: float
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    on_time: int = 0
    late: int = 0
    skipped: int = 0
    last_skip_reason: str | None = None
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT_SLOTS))
    below_floor: bool = False

    @property
    def recent_on_time_pct(self) -> float | None:
        if len(self.recent) < MIN_SLOTS:
            return None
        return 100.0 * sum(self.recent) / len(self.recent)


def skip_reason(error: BaseException | None) -> str:
    """The reason a slot lost to backoff after `error` is skipped."""
    if isinstance(error, UpstreamRateLimited):
        return "rate_limited"
    if isinstance(error, CircuitOpenError):
        return "circuit_open"
    if isinstance(error, PoolExhausted):
        return "no_provider"
    if isinstance(error, UpstreamUnconfigured):
        return "unconfigured"
    return "failing"


Alert = Callable[[str, str], Awaitable[object]]  # (task, message)


class ScheduleBook:
    """Per-job tallies, a stored row per slot (via `record`), an alert below the floor."""

    def __init__(
        self,
        *,
        tolerance: float = 5.0,
        floor: float = ON_TIME_FLOOR,
        record: Callable[[ScheduleRun], object] | None = None,
        alert: Alert | None = None,
    ) -> None:
        self.tolerance = tolerance
        self.floor = floor
        self._record = record
        self._alert = alert
        self.jobs: dict[str, ScheduledJob] = {}

    def job(self, task: str, interval_seconds: float) -> ScheduledJob:
        job = self.jobs.get(task)
        if job is None:
            job = self.jobs[task] = ScheduledJob(task, interval_seconds)
        job.interval_seconds = interval_seconds
        return job

    async def started(
        self, task: str, interval_seconds: float, expected: datetime | None, actual: datetime
    ) -> None:
        """A run of `task` started at `actual`; it was due at `expected` (None: first run)."""
        job = self.job(task, interval_seconds)
        due = expected if expected is not None else actual
        on_time = abs((actual - due).total_seconds()) <= self.tolerance
        if on_time:
            job.on_time += 1
        else:
            job.late += 1
        job.last_run_at = actual
        job.recent.append(on_time)
        self._store(
            ScheduleRun(task, interval_seconds, due, actual, "on_time" if on_time else "late")
        )
        await self._judge(job)

    async def skipped(
        self, task: str, interval_seconds: float, reason: str, at: datetime, count: int = 1
    ) -> None:
        """`count` slots of `task` from `at` on are given up, for `reason`."""
        job = self.job(task, interval_seconds)
        job.skipped += count
        job.last_skip_reason = reason
        for n in range(count):
            job.recent.append(False)
            self._store(
                ScheduleRun(
                    task,
                    interval_seconds,
                    at + timedelta(seconds=n * interval_seconds),
                    None,
                    "skipped",
                    reason,
                )
            )
        await self._judge(job)

    async def planned(
        self,
        task: str,
        interval_seconds: float,
        delay: float,
        now: datetime,
        error: BaseException | None,
    ) -> datetime:
        """The job sleeps `delay` from `now`; slots that sleep passes over are skipped (with
        the reason `error` gives). Returns when the next run is due."""
        job = self.job(task, interval_seconds)
        due = now + timedelta(seconds=delay)
        job.next_run_at = due
        if interval_seconds > 0 and delay > interval_seconds * 1.5:
            lost = int(delay // interval_seconds) - 1
            if lost > 0:
                first = now + timedelta(seconds=interval_seconds)
                await self.skipped(task, interval_seconds, skip_reason(error), first, lost)
        return due

    def _store(self, run: ScheduleRun) -> None:
        if self._record is None:
            return
        try:
            self._record(run)
        except Exception as exc:  # bookkeeping must never stop a collector
            log.warning("schedule.record_failed", task=run.task, error=repr(exc))

    async def _judge(self, job: ScheduledJob) -> None:
        pct = job.recent_on_time_pct
        if pct is None:
            return
        if pct >= 100.0 * self.floor:
            job.below_floor = False
            return
        if job.below_floor:
            return
        job.below_floor = True
        if self._alert is None:
            return
        message = (
            f"{job.task} started on time in {pct:.0f} % of its last {len(job.recent)} slots"
            f" (below {100.0 * self.floor:.0f} %): {job.late} late, {job.skipped} skipped"
            + (f", last skipped: {job.last_skip_reason}" if job.last_skip_reason else "")
        )
        try:
            await self._alert(job.task, message)
        except Exception as exc:
            log.warning("schedule.alert_failed", task=job.task, error=repr(exc))


current_book: ContextVar[ScheduleBook | None] = ContextVar("schedule_book", default=None)


class JobClock:
    """What a polling loop holds: `await begin()` as a run starts, `await plan(delay, error)`
    before it sleeps `delay`. A no-op outside a gateway (no book in the context).

    Lateness is measured on trio's clock, the one the loop sleeps on (so a wall-clock jump
    is not a late run, and tests with a virtual clock see what the loop saw); the book is
    given wall-clock times for display, the due time placed that far before the start.
    """

    def __init__(self, task: str, interval_seconds: float) -> None:
        self.task = task
        self.interval = interval_seconds
        self.book = current_book.get()
        self._due_at: float | None = None  # trio time the next run is due
        self._began_wall: datetime | None = None
        self._began_at = 0.0

    async def begin(self) -> None:
        if self.book is None:
            return
        self._began_at = trio.current_time()
        self._began_wall = actual = utc_now()
        due = None
        if self._due_at is not None:
            due = actual - timedelta(seconds=self._began_at - self._due_at)
        await self.book.started(self.task, self.interval, due, actual)

    async def plan(self, delay: float, error: BaseException | None = None) -> None:
        if self.book is None:
            return
        began = self._began_wall or utc_now()
        self._due_at = self._began_at + delay
        await self.book.planned(self.task, self.interval, delay, began, error)

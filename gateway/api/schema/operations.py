"""GraphQL for operators: collector schedule compliance, data freshness, system metrics.

`schedule` sums each collector job's slots over the last `SCHEDULE_WINDOW_HOURS` from the
store (gateway.storage.ScheduleStore; so it outlives a restart) with the live book's next due
time (gateway.sources.schedule). `freshness` judges each category's and provider's newest data
(gateway.providers.freshness). `systemMetrics` reads the stored one-a-minute snapshots
(gateway.api.system_metrics), newest first.

Must never: report a percentage for a job with no slot counted (null instead), or a metric the
platform could not read (null).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

import strawberry
from strawberry.types import Info

import gateway.api.schema.providers  # noqa: F401  (registers Category with strawberry first)
from gateway.api.context import RequestContext
from gateway.errors import BadUserInput
from gateway.models import utc_now
from gateway.providers.freshness import FreshnessState, data_freshness
from gateway.storage import MetricsStore, ScheduleStore
from gateway.vocabulary import Category

__all__ = ["DataFreshness", "FreshnessState", "OperationsQuery", "ScheduleCompliance"]

# The window `schedule` counts slots over.
SCHEDULE_WINDOW_HOURS = 24
MAX_METRICS_HOURS = 90 * 24
MAX_METRICS_ROWS = 10_000

strawberry.enum(
    FreshnessState,
    name="Freshness",
    description="How old the newest data is: FRESH, STALE (past the freshness limit), EXPIRED"
    " (past the hard limit) or NO_DATA (nothing delivered yet).",
)


@strawberry.type(description="A collector job and how well it kept its schedule (last 24 h).")
class ScheduleCompliance:
    task: str = strawberry.field(description='e.g. "collector:coingecko", "chain:heads".')
    interval_seconds: int
    last_run_at: datetime | None
    next_run_at: datetime | None = strawberry.field(description="When the job is due next.")
    on_time: int = strawberry.field(
        description="Runs started within the tolerance (5 s; GATEWAY_SCHEDULE_TOLERANCE) of due."
    )
    late: int = strawberry.field(description="Runs started later (or earlier) than that.")
    skipped: int = strawberry.field(
        description="Slots given up: rate_limited, circuit_open, no_provider, unconfigured or"
        " failing (see lastSkipReason)."
    )
    on_time_pct: float | None = strawberry.field(
        description="onTime as % of every slot counted; null when none was."
    )
    last_skip_reason: str | None = None


@strawberry.type(description="How fresh a category's (provider null) or a provider's data is.")
class DataFreshness:
    category: Category
    provider: str | None
    last_data_at: datetime | None
    age_seconds: float | None
    state: FreshnessState


@strawberry.type(description="A snapshot of the gateway process and its load.")
class SystemMetrics:
    at: datetime
    cpu_pct: float | None = strawberry.field(description="% of one core since the last one.")
    rss_bytes: float | None = strawberry.field(description="Resident memory (a Float: > 2 GiB).")
    open_descriptors: int | None
    threads: int | None
    subscribers: int
    websockets: int
    write_queue: int = strawberry.field(description="Rows waiting in the storage writer.")
    dropped_rows: int = strawberry.field(description="Best-effort rows dropped, since start.")
    database_bytes: float


def _context(info: Info) -> RequestContext:
    return cast(RequestContext, info.context)


@strawberry.type
class OperationsQuery:
    @strawberry.field(description="Each collector job's schedule compliance over the last 24 h.")
    async def schedule(self, info: Info) -> list[ScheduleCompliance]:
        services = _context(info).services
        since = utc_now() - timedelta(hours=SCHEDULE_WINDOW_HOURS)
        stored = {row.task: row for row in await ScheduleStore(services.storage).compliance(since)}
        book = services.schedule
        live = book.jobs if book is not None else {}
        result: list[ScheduleCompliance] = []
        for task in sorted(set(stored) | set(live)):
            row, job = stored.get(task), live.get(task)
            on_time = row.on_time if row else 0
            late = row.late if row else 0
            skipped = row.skipped if row else 0
            total = on_time + late + skipped
            interval = job.interval_seconds if job else (row.interval_seconds if row else 0.0)
            result.append(
                ScheduleCompliance(
                    task=task,
                    interval_seconds=round(interval),
                    last_run_at=(job.last_run_at if job else None)
                    or (row.last_run_at if row else None),
                    next_run_at=job.next_run_at if job else None,
                    on_time=on_time,
                    late=late,
                    skipped=skipped,
                    on_time_pct=round(100.0 * on_time / total, 2) if total else None,
                    last_skip_reason=job.last_skip_reason if job else None,
                )
            )
        return result

    @strawberry.field(
        description="Freshness of each category (provider null: its freshest provider) and of"
        " each enabled provider."
    )
    def freshness(self, info: Info) -> list[DataFreshness]:
        services = _context(info).services
        rows = data_freshness(
            services.settings, services.providers, services.status_board, utc_now()
        )
        return [
            DataFreshness(
                category=Category(row.category),
                provider=row.provider,
                last_data_at=row.last_data_at,
                age_seconds=round(row.age_seconds, 3) if row.age_seconds is not None else None,
                state=row.state,
            )
            for row in rows
        ]

    @strawberry.field(
        description="Stored system metrics snapshots (one a minute, kept 90 days), newest first."
    )
    async def system_metrics(
        self, info: Info, hours: float = 24.0, limit: int = 1440
    ) -> list[SystemMetrics]:
        if not 0 < hours <= MAX_METRICS_HOURS:
            raise BadUserInput(f"hours must be above 0 and at most {MAX_METRICS_HOURS}")
        if not 1 <= limit <= MAX_METRICS_ROWS:
            raise BadUserInput(f"limit must be between 1 and {MAX_METRICS_ROWS}")
        services = _context(info).services
        since = utc_now() - timedelta(hours=hours)
        snapshots = await MetricsStore(services.storage).recent(since, limit)
        return [
            SystemMetrics(
                at=s.at,
                cpu_pct=s.cpu_pct,
                rss_bytes=s.rss_bytes,
                open_descriptors=s.open_fds,
                threads=s.threads,
                subscribers=s.subscribers,
                websockets=s.websockets,
                write_queue=s.write_queue,
                dropped_rows=s.dropped_rows,
                database_bytes=s.database_bytes,
            )
            for s in snapshots
        ]

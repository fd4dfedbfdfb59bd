"""The Prometheus series an operator alerts on, beyond the app's own counters (metrics.py):
upstream latency, rate-limit usage, breaker states, the storage writer's queue and commit
latency, GraphQL operations, authentication refusals, schedule compliance and freshness.

Everything is read at scrape time from where it is produced: the upstream client's per-provider
latency histograms and limiters, the status board, the storage writer, the GraphQL engine's
`OperationStats`, the access control's refusals, the schedule book. This module only formats.

`/metrics` may be protected: with `GATEWAY_METRICS_TOKEN` set, a scrape must send
`Authorization: Bearer <token>` (compared in constant time), else 401; refusals are counted.

Must never: put a secret in a label, or emit a label whose values a client can grow without
bound (operation names are capped by OperationStats).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import UTC, datetime

from gateway.api.context import Services
from gateway.api.operation_stats import OperationStats
from gateway.histogram import Histogram
from gateway.providers.freshness import FreshnessState, data_freshness

__all__ = ["MetricsGuard", "operator_metrics"]


class MetricsGuard:
    """The `/metrics` token check: `allows(authorization header)`; counts refusals."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None
        self.refused = 0

    @property
    def protected(self) -> bool:
        return self._token is not None

    def allows(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self._token
        ):
            return True
        self.refused += 1
        return False


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}" if inner else ""


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def head(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def series(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        self.head(name, kind, help_text)
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {value:g}")

    def histograms(
        self, name: str, help_text: str, items: Iterable[tuple[dict[str, str], Histogram]]
    ) -> None:
        self.head(name, "histogram", help_text)
        for labels, histogram in items:
            for le, count in histogram.cumulative():
                self.lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {count}")
            self.lines.append(f"{name}_sum{_labels(labels)} {histogram.total:g}")
            self.lines.append(f"{name}_count{_labels(labels)} {histogram.count}")


_FRESHNESS_LEVEL = {state: n for n, state in enumerate(FreshnessState)}


def operator_metrics(
    services: Services,
    operations: OperationStats | None,
    guard: MetricsGuard | None = None,
) -> list[str]:
    """The exposition lines of this module's series."""
    out = _Lines()
    registry = services.registry
    client = registry.client if registry is not None else None
    if client is not None:
        out.histograms(
            "gateway_upstream_request_seconds",
            "Upstream request latency by provider (every attempt, failed ones included).",
            (({"provider": p}, h) for p, h in sorted(client.latency.items())),
        )
        usage: list[tuple[dict[str, str], float]] = []
        limits: list[tuple[dict[str, str], float]] = []
        breakers: list[tuple[dict[str, str], float]] = []
        for provider in services.providers.providers:
            limiter = client.limiter(provider.id)
            for window in limiter.usage() if limiter is not None else ():
                labels = {"provider": provider.id, "window": window.name}
                usage.append((labels, window.used))
                limits.append((labels, window.limit))
            breaker = client.breaker(provider.id)
            if breaker is not None:
                state = str(breaker.state)
                for name in ("CLOSED", "OPEN", "HALF_OPEN"):
                    breakers.append(({"provider": provider.id, "state": name}, name == state))
        out.series(
            "gateway_rate_limit_used", "gauge", "Requests counted in a rate-limit window.", usage
        )
        out.series("gateway_rate_limit_limit", "gauge", "A rate-limit window's size.", limits)
        out.series(
            "gateway_circuit_breaker_state",
            "gauge",
            "1 for the state each provider's circuit breaker is in.",
            breakers,
        )
    storage = services.storage
    out.series(
        "gateway_storage_write_queue_rows",
        "gauge",
        "Rows waiting in the storage writer's queue.",
        [({}, storage.queued_rows)],
    )
    out.series(
        "gateway_storage_dropped_rows_total",
        "counter",
        "Best-effort rows dropped on a full write queue.",
        [({}, storage.dropped_rows)],
    )
    out.histograms(
        "gateway_storage_commit_seconds",
        "How long each batch commit took.",
        [({}, storage.commit_seconds)],
    )
    if operations is not None:
        out.series(
            "gateway_graphql_operations_total",
            "counter",
            "GraphQL queries and mutations by kind, operation name and outcome (error code).",
            (
                ({"kind": kind, "operation": name, "code": code}, n)
                for (kind, name, code), n in sorted(operations.counts.items())
            ),
        )
        out.histograms(
            "gateway_graphql_operation_seconds",
            "GraphQL query and mutation duration by kind and operation name.",
            (
                ({"kind": kind, "operation": name}, h)
                for (kind, name), h in sorted(operations.durations.items())
            ),
        )
        out.series(
            "gateway_graphql_document_cache_total",
            "counter",
            "Parsed and validated documents looked up by query text: hit (reused) or miss.",
            (({"result": r}, operations.document_lookups[r]) for r in ("hit", "miss")),
        )
        out.series(
            "gateway_graphql_document_cache_entries",
            "gauge",
            "Documents the cache holds now, and the most it holds (bound).",
            [
                ({"of": "held"}, operations.documents_cached),
                ({"of": "bound"}, operations.document_cache_size),
            ],
        )
    refusals = dict(services.access.refusals) if services.access is not None else {}
    if guard is not None:
        refusals["metrics_token"] = guard.refused
    out.series(
        "gateway_auth_refusals_total",
        "counter",
        "Requests refused for a missing or invalid API key (or /metrics token), by reason.",
        (({"reason": reason}, n) for reason, n in sorted(refusals.items())),
    )
    book = services.schedule
    if book is not None:
        pct = [
            ({"task": job.task}, job.recent_on_time_pct)
            for job in sorted(book.jobs.values(), key=lambda j: j.task)
        ]
        out.series(
            "gateway_schedule_on_time_ratio",
            "gauge",
            "Share of a collector job's recent slots that started on time (alert below 0.8).",
            ((labels, value / 100.0) for labels, value in pct if value is not None),
        )
    rows = data_freshness(
        services.settings, services.providers, services.status_board, datetime.now(UTC)
    )
    out.series(
        "gateway_data_freshness",
        "gauge",
        "Each category's newest data: 0 FRESH, 1 STALE, 2 EXPIRED, 3 NO_DATA.",
        (({"category": r.category}, _FRESHNESS_LEVEL[r.state]) for r in rows if r.provider is None),
    )
    return out.lines

"""Prometheus text exposition of the gateway's counters and gauges.

The numbers live where they are produced (the bus, the hub, the WebSocket stats, storage, the
upstream client); this module only reads them at scrape time, so counting costs an integer
increment on the hot path and nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from gateway.api.context import Services
from gateway.vocabulary import ProviderState

__all__ = ["HttpStats", "render_metrics"]


class HttpStats:
    """HTTP requests by method and status, counted by the app; client connections, open and
    refused by a cap, counted by gateway.api.connections."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.connections = 0
        self.connection_limit = 0
        self.connections_refused: Counter[str] = Counter()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {value:g}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.metric(name, kind, help_text, [({}, value)])


def render_metrics(
    services: Services, http: HttpStats, upstream_counters: dict[tuple[str, str], int]
) -> str:
    """The whole exposition, newline-terminated."""
    w = _Writer()
    w.one("gateway_up", "gauge", "1 while the gateway serves.", 1)
    w.one("gateway_uptime_seconds", "gauge", "Seconds since start.", services.uptime_seconds)
    w.metric(
        "gateway_http_requests_total",
        "counter",
        "HTTP requests by method and status.",
        (
            ({"method": method, "status": str(status)}, count)
            for (method, status), count in sorted(http.requests.items())
        ),
    )
    w.one(
        "gateway_http_connections",
        "gauge",
        "Client connections open (WebSockets included).",
        http.connections,
    )
    w.one(
        "gateway_http_connection_limit",
        "gauge",
        "Client connections that may be open at once (http_max_connections, or descriptors less"
        " a reserve), before the allowance for addresses that hold none.",
        http.connection_limit,
    )
    w.metric(
        "gateway_http_connections_refused_total",
        "counter",
        "Connections closed as soon as they were accepted, over the total or the client's cap.",
        (({"limit": label}, http.connections_refused[label]) for label in ("total", "client")),
    )
    ws = services.ws_stats
    w.one("gateway_ws_connections", "gauge", "Open GraphQL WebSocket connections.", ws.connections)
    w.one(
        "gateway_ws_connections_total",
        "counter",
        "WebSocket connections accepted.",
        ws.connections_total,
    )
    w.one(
        "gateway_ws_operations_total",
        "counter",
        "Operations started over WebSocket.",
        ws.operations,
    )
    w.one("gateway_ws_frames_sent_total", "counter", "WebSocket frames written.", ws.frames_sent)
    w.one(
        "gateway_ws_frames_dropped_total",
        "counter",
        "Subscription frames dropped because a client read too slowly (oldest first).",
        ws.frames_dropped,
    )
    w.one(
        "gateway_ws_slow_consumer_closes_total",
        "counter",
        "Connections closed (4413) for falling too far behind.",
        ws.slow_consumer_closes,
    )
    w.one(
        "gateway_ws_connection_limit",
        "gauge",
        "WebSockets that may be open at once (ws_max_connections, or descriptors less a reserve).",
        ws.max_connections,
    )
    w.metric(
        "gateway_ws_connections_refused_total",
        "counter",
        "WebSockets closed at the handshake or init by a limit: total (1013), client's cap or"
        " rate (4429).",
        (({"limit": label}, ws.refused[label]) for label in ("total", "client", "rate")),
    )
    w.one(
        "gateway_ws_idle_closes_total",
        "counter",
        "Connections closed (4408) for running no operation for ws_idle_timeout.",
        ws.idle_closes,
    )
    hub = services.hub
    if hub is not None:
        w.one(
            "gateway_subscription_groups",
            "gauge",
            "Distinct shared subscriptions.",
            hub.group_count,
        )
        w.one(
            "gateway_subscription_members",
            "gauge",
            "Operations attached to them.",
            hub.member_count,
        )
        w.one(
            "gateway_subscription_executions_total",
            "counter",
            "GraphQL executions of subscription events (one per event per group).",
            hub.executions,
        )
        w.one(
            "gateway_subscription_deliveries_total",
            "counter",
            "Payloads handed to subscribers.",
            hub.deliveries,
        )
    topics = services.bus.topics
    w.metric(
        "gateway_bus_published_total",
        "counter",
        "Events published.",
        (({"topic": t.name}, t.published) for t in topics),
    )
    w.metric(
        "gateway_bus_dropped_total",
        "counter",
        "Events an internal subscriber lost to its full buffer.",
        (({"topic": t.name}, t.dropped) for t in topics),
    )
    w.metric(
        "gateway_bus_subscribers",
        "gauge",
        "Internal subscribers.",
        (({"topic": t.name}, t.subscriber_count) for t in topics),
    )
    w.one(
        "gateway_storage_commits_total",
        "counter",
        "Write transactions committed.",
        services.storage.commits,
    )
    w.one(
        "gateway_database_bytes",
        "gauge",
        "SQLite files on disk.",
        services.storage.database_bytes(),
    )
    w.metric(
        "gateway_upstream_requests_total",
        "counter",
        "Upstream requests by provider and outcome.",
        (({"provider": p, "outcome": o}, n) for (p, o), n in sorted(upstream_counters.items())),
    )
    w.metric(
        "gateway_ticks_quarantined_total",
        "counter",
        "Ticks refused as implausible at ingest (never stored or published), by provider.",
        (
            ({"provider": pid}, record.quarantined)
            for pid, record in sorted(services.status_board.records.items())
            if record.quarantined
        ),
    )
    w.metric(
        "gateway_provider_up",
        "gauge",
        "1 when the provider's recent requests succeed (ONLINE or DEGRADED).",
        (
            (
                {"provider": pid, "state": record.state()},
                1 if record.state() in {ProviderState.ONLINE, ProviderState.DEGRADED} else 0,
            )
            for pid, record in sorted(services.status_board.records.items())
        ),
    )
    if services.replication is not None:  # several replicas (gateway/broker/)
        _broker_metrics(w, services)
    return "\n".join(w.lines) + "\n"


def _broker_metrics(w: _Writer, services: Services) -> None:
    assert services.replication is not None
    client, bus, lease = (
        services.replication.client,
        services.replication.bus,
        services.replication.lease,
    )
    w.one("gateway_broker_up", "gauge", "1 while Redis answers.", 1 if client.up else 0)
    w.one("gateway_leader", "gauge", "1 while this replica holds the collector lease.",
          1 if lease.holds() else 0)  # fmt: skip
    w.one("gateway_leader_elections_total", "counter", "Times this replica took the lease.",
          lease.elections)  # fmt: skip
    w.metric(
        "gateway_broker_events_total",
        "counter",
        "Events this replica handed to Redis, by outcome: sent; dropped (outbox full while "
        "Redis was slow or down); refused (fenced: not the leader); undecodable (read).",
        (
            ({"outcome": outcome}, count)
            for outcome, count in (
                ("sent", bus.sent),
                ("dropped", bus.dropped),
                ("refused", bus.refused),
                ("undecodable", bus.undecodable),
            )
        ),
    )
    w.one("gateway_broker_outbox", "gauge", "Events waiting to be written to Redis.", bus.pending)

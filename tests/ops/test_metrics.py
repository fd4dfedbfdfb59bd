"""/metrics: protectable by GATEWAY_METRICS_TOKEN, and carrying the series an operator alerts
on (upstream latency, rate limits, breakers, write queue and commit latency, GraphQL operations
by name and code, auth refusals, schedule and freshness); system metrics snapshots stored and
queryable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from gateway.api.operation_stats import MAX_NAMES, OTHER, OperationStats
from gateway.api.system_metrics import CpuMeter, take_snapshot
from gateway.config import ProvidersFile, RateLimitWindow
from gateway.config.environment import settings_from_env
from gateway.histogram import Histogram
from gateway.storage import MetricsStore
from tests.conftest import StartGateway, graphql
from tests.simulator.rest import Simulator, run_simulator


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with run_simulator() as sim:
        yield sim


async def test_metrics_token_is_required_when_set(start_gateway: StartGateway) -> None:
    running = await start_gateway(metrics_token="s3cret")
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as http:
        with trio.fail_after(10):
            missing = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "s3cret" not in missing.text
    assert right.status_code == 200
    assert 'gateway_auth_refusals_total{reason="metrics_token"} 2' in right.text


async def test_metrics_are_open_without_a_token(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as http:
        with trio.fail_after(10):
            assert (await http.get("/metrics")).status_code == 200
    assert settings_from_env({"GATEWAY_METRICS_TOKEN": "t"}).metrics_token == "t"
    assert "'t'" not in repr(settings_from_env({"GATEWAY_METRICS_TOKEN": "t"}))


async def test_operator_series(simulator: Simulator, start_gateway: StartGateway) -> None:
    providers = ProvidersFile(
        (
            simulator.provider(
                "coingecko",
                interval_seconds=0.2,
                symbols=("BTC",),
                rate_limits=(RateLimitWindow(100, 60, "minute"),),
            ),
        )
    )
    running = await start_gateway(providers, anonymous_access="off")
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as http:
        with trio.fail_after(10):
            refused = await http.post("/graphql", json={"query": "{ status { version } }"})
            assert refused.status_code == 401
            while "gateway_upstream_request_seconds_bucket" not in (
                text := (await http.get("/metrics")).text
            ):
                await trio.sleep(0.1)
    assert 'gateway_upstream_request_seconds_bucket{provider="coingecko",le="+Inf"}' in text
    assert 'gateway_rate_limit_limit{provider="coingecko",window="minute"} 100' in text
    assert 'gateway_circuit_breaker_state{provider="coingecko",state="CLOSED"} 1' in text
    assert (
        "gateway_storage_write_queue_rows 0" in text or "gateway_storage_write_queue_rows" in text
    )
    assert "gateway_storage_commit_seconds_count" in text
    assert 'gateway_auth_refusals_total{reason="missing_key"} 1' in text
    assert 'gateway_data_freshness{category="MARKET_DATA"}' in text
    assert 'gateway_bus_dropped_total{topic="' in text
    assert "gateway_subscription_members" in text


async def test_graphql_operations_by_name_and_code(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    await graphql(running, "query StatusNow { status { version } }")
    await graphql(running, 'query Bad { prices(symbols: ["NOPE"]) { usd } }')
    invalid = await graphql(running, "query Typo { nope }")
    invalid_code = invalid["errors"][0]["extensions"]["code"]
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as http:
        with trio.fail_after(10):
            text = (await http.get("/metrics")).text
    assert (
        'gateway_graphql_operations_total{kind="query",operation="StatusNow",code="OK"} 1' in text
    )
    assert 'operation="Bad",code="UNKNOWN_SYMBOL"} 1' in text
    assert 'gateway_graphql_operation_seconds_count{kind="query",operation="StatusNow"} 1' in text
    # Refused before execution, with the code the client saw.
    assert f'{{kind="refused",operation="(anonymous)",code="{invalid_code}"}} 1' in text


def test_operation_names_are_bounded() -> None:
    stats = OperationStats()
    for n in range(MAX_NAMES + 50):
        stats.record("query", f"op{n}", "OK", 0.01)
    names = {name for _, name, _ in stats.counts}
    assert len(names) == MAX_NAMES + 1 and OTHER in names
    assert stats.counts[("query", OTHER, "OK")] == 50


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4 and histogram.total == pytest.approx(3.65)


async def test_system_metrics_are_stored_and_queryable(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    snapshot = take_snapshot(running.services, CpuMeter())
    assert snapshot.rss_bytes is None or snapshot.rss_bytes > 1_000_000
    assert snapshot.database_bytes > 0
    with trio.fail_after(10):
        await MetricsStore(running.services.storage).add(snapshot)
        answer = await graphql(
            running,
            "{ systemMetrics(hours: 1) { at rssBytes openDescriptors subscribers writeQueue"
            " databaseBytes } }",
        )
        too_long = await graphql(running, "{ systemMetrics(hours: 100000) { at } }")
    (row,) = answer["data"]["systemMetrics"]
    assert row["rssBytes"] == snapshot.rss_bytes and row["subscribers"] == 0
    assert too_long["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_snapshots_are_taken_every_interval(start_gateway: StartGateway) -> None:
    running = await start_gateway(metrics_interval=0.1)
    store = MetricsStore(running.services.storage)
    from datetime import timedelta

    from gateway.models import utc_now

    with trio.fail_after(10):
        while len(await store.recent(utc_now() - timedelta(hours=1), 10)) < 2:
            await trio.sleep(0.1)

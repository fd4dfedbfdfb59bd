"""`schedule` and `freshness` against the upstream simulator: a late job and a stale provider
are shown as such; a rate-limited job's lost slots are skipped with the reason; a job that
falls below 80 % on time raises an alert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from gateway.config import AuthSpec, ProvidersFile
from gateway.errors import CircuitOpenError, UpstreamRateLimited
from gateway.sources.schedule import ScheduleBook, ScheduleRun, skip_reason
from tests.conftest import StartGateway, graphql
from tests.simulator.rest import Fault, Simulator, run_simulator

SCHEDULE = "{ schedule { task intervalSeconds lastRunAt nextRunAt onTime late skipped onTimePct } }"
NEVER_SET = "GATEWAY_TEST_NEVER_SET_KEY"
FRESHNESS = "{ freshness { category provider lastDataAt ageSeconds state } }"


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with run_simulator() as sim:
        yield sim


def _by_task(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["task"]: row for row in data["data"]["schedule"]}


def _by_provider(data: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {row["provider"]: row for row in data["data"]["freshness"]}


async def test_late_job_and_stale_provider_are_shown(
    simulator: Simulator, start_gateway: StartGateway
) -> None:
    # coingecko answers, but slowly: each poll takes 0.5 s, so each next start is 0.5 s past
    # due (tolerance 0.2 s) -> late. binance answers once, then fails: its data ages past the
    # 2 s freshness limit -> STALE, while coingecko's stays FRESH.
    simulator.inject("coingecko", Fault.latency(0.5))
    providers = ProvidersFile(
        (
            simulator.provider("coingecko", interval_seconds=0.3, symbols=("BTC",)),
            simulator.provider("binance", interval_seconds=0.3, symbols=("BTC",)),
        )
    )
    running = await start_gateway(
        providers, schedule_tolerance=0.2, fresh_prices=2.0, max_age_prices=600.0
    )
    with trio.fail_after(10):
        while True:  # binance has delivered once
            rows = _by_provider(await graphql(running, FRESHNESS))
            if rows.get("binance", {}).get("state") == "FRESH":
                break
            await trio.sleep(0.1)
    simulator.inject("binance", Fault.status(500))
    with trio.fail_after(15):
        while True:
            schedule = _by_task(await graphql(running, SCHEDULE))
            fresh = _by_provider(await graphql(running, FRESHNESS))
            gecko = schedule.get("collector:coingecko")
            if (
                gecko is not None
                and gecko["late"] >= 2
                and fresh["binance"]["state"] == "STALE"
                and fresh["coingecko"]["state"] == "FRESH"
            ):
                break
            await trio.sleep(0.2)
    assert gecko["intervalSeconds"] == 0  # 0.3 s rounds to 0 in the contract's Int
    assert gecko["onTimePct"] is not None and gecko["onTimePct"] < 80
    assert gecko["nextRunAt"] is not None and gecko["lastRunAt"] is not None
    assert fresh["binance"]["ageSeconds"] > 2.0
    assert fresh["binance"]["category"] == "MARKET_DATA"
    # The category itself is as fresh as its freshest provider.
    assert fresh[None]["state"] == "FRESH"
    status = await graphql(running, "{ status { freshness stalestCategory } }")
    assert status["data"]["status"]["freshness"] == "FRESH"


async def test_failing_job_skips_slots_and_unconfigured_provider_is_no_data(
    simulator: Simulator, start_gateway: StartGateway
) -> None:
    simulator.inject("binance", Fault.rate_limit(retry_after=2))
    providers = ProvidersFile(
        (
            simulator.provider("binance", interval_seconds=0.2, symbols=("BTC",)),
            # A keyed provider whose key is not set: never started, its slots skipped.
            simulator.provider(
                "coinmarketcap",
                interval_seconds=60,
                symbols=("BTC",),
                auth=AuthSpec(kind="header", name="X-CMC_PRO_API_KEY", env=NEVER_SET),
            ),
        )
    )
    running = await start_gateway(providers, schedule_tolerance=0.2)
    with trio.fail_after(10):
        while True:
            schedule = _by_task(await graphql(running, SCHEDULE))
            binance = schedule.get("collector:binance")
            if binance is not None and binance["skipped"] >= 3:
                break
            await trio.sleep(0.2)
    assert schedule["collector:coinmarketcap"]["skipped"] == 1
    assert schedule["collector:coinmarketcap"]["onTime"] == 0
    assert running.services.schedule is not None
    jobs = running.services.schedule.jobs
    assert jobs["collector:binance"].last_skip_reason == "rate_limited"
    assert jobs["collector:coinmarketcap"].last_skip_reason == "unconfigured"
    fresh = _by_provider(await graphql(running, FRESHNESS))
    assert fresh["coinmarketcap"]["state"] == "NO_DATA"
    assert fresh["binance"]["state"] == "NO_DATA"
    status = await graphql(running, "{ status { freshness stalestCategory } }")
    assert status["data"]["status"] == {"freshness": "NO_DATA", "stalestCategory": "MARKET_DATA"}


def test_skip_reasons() -> None:
    assert skip_reason(UpstreamRateLimited("x", provider="p")) == "rate_limited"
    assert skip_reason(CircuitOpenError(provider="p")) == "circuit_open"
    assert skip_reason(None) == "failing"


async def test_alert_once_below_80_percent_and_again_after_recovery() -> None:
    alerts: list[str] = []
    stored: list[ScheduleRun] = []

    async def alert(task: str, message: str) -> None:
        alerts.append(message)

    book = ScheduleBook(tolerance=5.0, record=stored.append, alert=alert)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(8):  # on time
        await book.started("job", 30, t0, t0 + timedelta(seconds=1))
    for _ in range(3):  # late by a minute
        await book.started("job", 30, t0, t0 + timedelta(seconds=60))
    assert len(alerts) == 1 and "job started on time in 73 %" in alerts[0]
    await book.started("job", 30, t0, t0 + timedelta(seconds=60))
    assert len(alerts) == 1  # still below: not repeated
    assert [r.outcome for r in stored].count("late") == 4
    assert stored[-1].delay_seconds == 60
    for _ in range(20):
        await book.started("job", 30, t0, t0)
    await book.skipped("job", 30, "circuit_open", t0, count=5)
    assert len(alerts) == 2 and "circuit_open" in alerts[1]


async def test_a_failing_record_or_alert_never_reaches_the_collector() -> None:
    def record(run: ScheduleRun) -> None:
        raise RuntimeError("disk on fire")

    async def alert(task: str, message: str) -> None:
        raise RuntimeError("no bus")

    book = ScheduleBook(record=record, alert=alert)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    await book.skipped("job", 30, "failing", t0, count=12)
    assert book.jobs["job"].skipped == 12


async def test_chain_loop_records_on_time_runs_and_rate_limited_skips(
    autojump_clock: trio.abc.Clock,
) -> None:
    from gateway.chains.polling import poll_forever
    from gateway.sources.schedule import current_book

    book = ScheduleBook(tolerance=5.0)
    rounds = 0

    async def round_() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            raise UpstreamRateLimited("429", provider="node", retry_after=100)

    token = current_book.set(book)
    try:
        with trio.move_on_after(300):
            await poll_forever("chain:heads", 30, round_)
    finally:
        current_book.reset(token)
    job = book.jobs["chain:heads"]
    assert job.late == 0 and job.on_time == rounds
    assert job.skipped >= 1 and job.last_skip_reason == "rate_limited"

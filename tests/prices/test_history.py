"""Candle history with gap filling (gateway/prices/history.py, gateway/store/candles.py), against a real
SQLite store and the upstream simulator."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from gateway.config import ProviderConfig, ProvidersFile, RateLimitWindow
from gateway.models import Candle, PriceTick, utc_now
from gateway.nursery import RunningGateway
from gateway.prices.history import SETTLE_SECONDS, CandleHistory, closed_grid, holes
from gateway.storage import Storage
from gateway.store.candles import CandleStore, merge_spans, subtract_spans
from gateway.upstream import UpstreamClient
from tests.conftest import StartGateway
from tests.simulator.rest import API_KEYS, Fault, Simulator, run_simulator

HOUR = timedelta(hours=1)


@pytest.fixture
def storage(running_storage: Storage) -> Storage:
    return running_storage


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator() as simulator:
        yield simulator


def candle_requests(sim: Simulator, provider: str) -> int:
    paths = ("/klines", "/candles", "/OHLC", "/ohlc", "/ohlcv/historical")
    return sum(1 for p, path, _, _ in sim.requests if p == provider and path.endswith(paths))


# -- spans and grids ------------------------------------------------------------------------------


def test_merge_and_subtract_spans() -> None:
    assert merge_spans([(5, 7), (1, 3), (3, 4), (9, 9), (6, 8)]) == [(1, 4), (5, 8)]
    assert subtract_spans([(0, 10)], [(2, 3), (3, 5), (8, 12)]) == [(0, 2), (5, 8)]
    assert subtract_spans([(0, 10), (20, 30)], [(-5, 25)]) == [(25, 30)]
    assert subtract_spans([(0, 10)], []) == [(0, 10)]
    assert subtract_spans([(0, 10)], [(0, 10)]) == []


def test_closed_grid_leaves_open_and_settling_buckets_out() -> None:
    now = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)  # the 11:59 minute closed 5 s ago
    grid = closed_grid(60, now - timedelta(minutes=10, seconds=30), now, now)
    assert grid is not None
    start, end = (datetime.fromtimestamp(ms / 1000, UTC) for ms in grid)
    assert start == datetime(2026, 1, 1, 11, 50, tzinfo=UTC)  # the cut 11:49 is not asked for
    assert end == datetime(2026, 1, 1, 11, 59, tzinfo=UTC)  # 11:59 is still settling
    later = now + timedelta(seconds=SETTLE_SECONDS)
    assert closed_grid(60, now - timedelta(minutes=1, seconds=5), later, later) is not None
    assert closed_grid(60, now - timedelta(minutes=1), later, later) is None  # 11:59 is cut
    assert closed_grid(3600, now - timedelta(minutes=5), now, now) is None


def test_holes_are_the_buckets_without_a_complete_candle() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def candle(minute: int, complete: bool) -> Candle:
        moment = t0 + timedelta(minutes=minute)
        return Candle("BTC", 60, moment, 1, 1, 1, 1, None, "binance", complete)

    ms = int(t0.timestamp() * 1000)
    grid = (ms, ms + 5 * 60_000)
    found = holes([candle(0, True), candle(1, False), candle(3, True)], 60, grid)
    assert found == [(ms + 60_000, ms + 3 * 60_000), (ms + 4 * 60_000, ms + 5 * 60_000)]


# -- filling --------------------------------------------------------------------------------------


async def test_a_gap_is_filled_from_upstream_once(storage: Storage, sim: Simulator) -> None:
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
            now = utc_now()
            first = await history.candles("BTC", 3600, now - 24 * HOUR, now)
            assert first.missing == []
            closed = [c for c in first.candles if c.complete]
            assert len(closed) >= 23 and {c.provider for c in first.candles} == {"binance"}
            steps = {b.open_time - a.open_time for a, b in itertools.pairwise(first.candles)}
            assert steps == {HOUR}
            assert all(c.volume is not None and c.volume > 0 for c in closed)
            requests = candle_requests(sim, "binance")
            assert requests >= 1

            again = await history.candles("BTC", 3600, now - 24 * HOUR, now)
            assert again.candles == first.candles
            assert candle_requests(sim, "binance") == requests  # held: nothing asked again
            stored = await CandleStore(storage).count()
            assert stored == len(closed)


async def test_a_provider_that_fails_is_passed_over_for_the_next(
    storage: Storage, sim: Simulator
) -> None:
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            providers = [sim.provider("coinbase"), sim.provider("binance")]
            history = CandleHistory(storage, client, lambda: providers)
            sim.inject("coinbase", Fault.status(503))
            now = utc_now()
            found = await history.candles("ETH", 3600, now - 6 * HOUR, now)
            assert found.missing == []
            assert {c.provider for c in found.candles if c.complete} == {"binance"}
            assert found.fill is not None and [p for p, _ in found.fill.errors] == ["coinbase"]


async def test_a_provider_without_the_pair_leaves_the_range_to_the_next(
    storage: Storage, sim: Simulator
) -> None:
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            providers = [sim.provider("coinbase"), sim.provider("binance")]
            history = CandleHistory(storage, client, lambda: providers)
            now = utc_now()
            found = await history.candles("BNB", 3600, now - 6 * HOUR, now)  # not on Coinbase
            assert found.missing == [] and found.candles
            assert {c.provider for c in found.candles} == {"binance"}


async def test_a_keyed_provider_is_asked_with_the_key_from_key_for(
    storage: Storage, sim: Simulator
) -> None:
    """`key_for` hands each fetcher its provider's key; without one a keyed provider is refused
    before anything is sent, and the range stays unanswered for a later fill."""
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            providers = [sim.provider("cryptocompare")]
            now = utc_now()
            keyless = await CandleHistory(storage, client, lambda: providers).candles(
                "BTC", 3600, now - 6 * HOUR, now
            )
            assert keyless.missing and keyless.fill is not None
            assert [p for p, _ in keyless.fill.errors] == ["cryptocompare"]
            assert sim.hits["cryptocompare"] == 0

            history = CandleHistory(
                storage, client, lambda: providers, key_for=lambda p: API_KEYS[p.id]
            )
            found = await history.candles("BTC", 3600, now - 6 * HOUR, now)
            assert found.missing == [] and {c.provider for c in found.candles} == {"cryptocompare"}
            sent = [r[3]["authorization"] for r in sim.requests if r[0] == "cryptocompare"]
            assert sent and set(sent) == {f"Apikey {API_KEYS['cryptocompare']}"}


async def test_holes_nobody_can_fill_are_reported_then_filled_on_recovery(
    storage: Storage, sim: Simulator
) -> None:
    with trio.fail_after(15):
        async with UpstreamClient() as client:
            history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
            sim.inject("binance", Fault.status(500))
            now = utc_now()
            down = await history.candles("BTC", 3600, now - 6 * HOUR, now)
            assert down.candles == []  # nothing invented
            assert down.missing and down.fill is not None and down.fill.errors

            sim.clear_faults("binance")
            back = await history.candles("BTC", 3600, now - 6 * HOUR, now)
            assert back.missing == [] and len(back.candles) >= 5


async def test_a_hanging_provider_cannot_hold_a_query_past_its_fill_budget(
    storage: Storage, sim: Simulator
) -> None:
    async with UpstreamClient() as client:
        history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
        sim.inject("binance", Fault.hang())
        now = utc_now()
        started = trio.current_time()
        with trio.fail_after(5):
            found = await history.candles("BTC", 3600, now - 6 * HOUR, now, fill_seconds=0.5)
        assert trio.current_time() - started < 2
        assert found.missing and found.candles == []


async def test_our_own_complete_candles_are_not_fetched_again(
    storage: Storage, sim: Simulator
) -> None:
    hour = datetime.fromtimestamp(int(utc_now().timestamp()) // 3600 * 3600, UTC) - 2 * HOUR
    ticks = [
        PriceTick("BTC", 50_000.0 + m, "kraken", hour + timedelta(minutes=m, seconds=5))
        for m in range(60)
    ]
    await storage.write_ticks(ticks)
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
            found = await history.candles("BTC", 3600, hour, hour + HOUR)
            assert candle_requests(sim, "binance") == 0
            (candle,) = found.candles
            assert candle.provider == "kraken" and candle.complete
            assert (candle.open, candle.close) == (50_000.0, 50_059.0)


async def test_stored_minutes_answer_wider_intervals_without_a_request(
    storage: Storage, sim: Simulator
) -> None:
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
            now = utc_now()
            end = datetime.fromtimestamp(int(now.timestamp()) // 3600 * 3600, UTC)
            minutes = await history.candles("SOL", 60, end - 2 * HOUR, end, now=now)
            assert minutes.missing == [] and len(minutes.candles) == 120
            requests = candle_requests(sim, "binance")

            five = await history.candles("SOL", 300, end - 2 * HOUR, end, now=now)
            assert candle_requests(sim, "binance") == requests
            assert five.missing == [] and len(five.candles) == 24
            first = five.candles[0]
            parts = minutes.candles[:5]
            assert first.open == parts[0].open and first.close == parts[-1].close
            assert first.high == max(c.high for c in parts)
            assert first.low == min(c.low for c in parts)
            assert first.volume == pytest.approx(sum(c.volume or 0 for c in parts))


async def test_without_providers_the_store_is_answered_and_holes_named(storage: Storage) -> None:
    history = CandleHistory(storage, None, tuple)
    now = utc_now()
    found = await history.candles("BTC", 3600, now - 3 * HOUR, now)
    assert found.candles == [] and found.missing and found.fill is None


# -- through GraphQL ------------------------------------------------------------------------------


async def graphql(running: RunningGateway, query: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
        return (await client.post("/graphql", json={"query": query})).json()  # type: ignore[no-any-return]


def market(sim: Simulator, provider: str) -> ProviderConfig:
    # A collector interval of an hour: these tests are about candles, not polling.
    return sim.provider(provider, interval_seconds=3600, symbols=("BTC",))


async def test_price_history_fills_from_the_pool_and_names_what_it_could_not(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start_gateway(providers=ProvidersFile((market(sim, "binance"),)))
    query = (
        '{ priceHistory(symbol: "btc", interval: H1, from: "%s") { openTime provider complete } }'
    )
    since = (utc_now() - 12 * HOUR).isoformat()
    body = await graphql(running, query % since)
    assert "errors" not in body and "extensions" not in body, body
    candles = body["data"]["priceHistory"]
    # 11 whole hours lie after an unaligned `from`; the cut first hour is not asked for
    assert len(candles) >= 11 and all(c["provider"] == "binance" for c in candles)

    sim.inject("binance", Fault.status(500))
    older = (utc_now() - 48 * HOUR).isoformat()
    body = await graphql(running, query % older)
    assert "errors" not in body, body
    (warning,) = body["extensions"]["warnings"]
    assert warning["code"] == "HISTORY_INCOMPLETE" and warning["symbol"] == "BTC"
    assert warning["missing"] and warning["providerErrors"][0]["provider"] == "binance"

    # what was filled before is still served; the unfilled older range is not invented
    def closed(series: list[dict[str, Any]]) -> list[str]:
        return [c["openTime"] for c in series if c["complete"]]

    assert closed(body["data"]["priceHistory"]) == closed(candles)


async def test_on_demand_filling_leaves_the_collectors_their_budget(
    storage: Storage, sim: Simulator
) -> None:
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            binance = sim.provider("binance", rate_limits=(RateLimitWindow(4, 60, "minute"),))
            history = CandleHistory(storage, client, lambda: [binance])
            for _ in range(2):  # the collectors have used half the minute's budget
                assert client.limiter_for(binance).try_acquire()
            now = utc_now()
            found = await history.candles("BTC", 3600, now - 6 * HOUR, now)
            assert candle_requests(sim, "binance") == 0 and found.missing
            assert found.fill is not None
            # Named once, in words a user knows (issue 13: was "binance: binance: minute
            # budget 2/4 is kept for the collectors").
            provider, message = found.fill.errors[0]
            assert provider == "binance"
            assert message.startswith("the requests left in this minute (2 of 4) are reserved")
            assert "binance" not in message and "collector" not in message
            # the backfill spends the budget (reserve 0), waiting in the limiter if it must
            spender = CandleHistory(storage, client, lambda: [binance], reserve=0)
            assert (await spender.candles("BTC", 3600, now - 6 * HOUR, now)).missing == []


async def test_concurrent_requests_for_the_same_holes_ask_upstream_once(
    storage: Storage, sim: Simulator
) -> None:
    with trio.fail_after(10):
        async with UpstreamClient() as client:
            history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
            sim.inject("binance", Fault.latency(0.3, times=1))  # the first fill takes a while
            now = utc_now()
            results = []

            async def ask() -> None:
                results.append(await history.candles("ETH", 60, now - 3 * HOUR, now))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(ask)
            assert candle_requests(sim, "binance") == 1  # 180 minutes: one page
            assert all(r.missing == [] and r.candles == results[0].candles for r in results)


async def test_a_bucket_cut_by_the_requested_range_is_not_a_hole(storage: Storage) -> None:
    hour = datetime.fromtimestamp(int(utc_now().timestamp()) // 3600 * 3600, UTC) - 3 * HOUR
    ticks = [
        PriceTick("BTC", 100.0 + m, "kraken", hour + timedelta(minutes=m, seconds=1))
        for m in range(120)
    ]
    await storage.write_ticks(ticks)
    history = CandleHistory(storage, None, tuple)
    # from 10 minutes into the first hour: that hour is cut (incomplete), the second is whole
    found = await history.candles("BTC", 3600, hour + timedelta(minutes=10), hour + 2 * HOUR)
    assert [c.complete for c in found.candles] == [False, True]
    assert found.missing == []  # nothing to report: the store holds all that was asked


# -- consensus across providers (the issue: a candle closed at 70,123.45 while prices said 67,187)


def _minute_ticks(provider: str, minute: datetime, usd: float) -> list[PriceTick]:
    return [PriceTick("BTC", usd, provider, minute + timedelta(seconds=s)) for s in (5, 30, 55)]


async def test_history_serves_the_consensus_of_providers_and_one_provider_on_request(
    storage: Storage,
) -> None:
    minute = datetime.fromtimestamp(int(utc_now().timestamp()) // 60 * 60, UTC) - 5 * 60 * (
        timedelta(seconds=1)
    )
    await storage.write_ticks(
        _minute_ticks("binance-stream", minute, 70_123.45)  # 4.4 % off: an outlier
        + _minute_ticks("coingecko", minute, 67_187.34)
        + _minute_ticks("kraken", minute, 67_190.00)
    )
    history = CandleHistory(storage, None, tuple)
    found = await history.candles("BTC", 60, minute, minute + timedelta(minutes=1))
    (candle,) = found.candles
    assert candle.close == pytest.approx((67_187.34 + 67_190.00) / 2)
    assert candle.provider == "consensus" and candle.providers == ("coingecko", "kraken")
    assert candle.complete and not found.disputed
    own = await history.candles(
        "BTC", 60, minute, minute + timedelta(minutes=1), provider="binance-stream"
    )
    assert [(c.close, c.provider) for c in own.candles] == [(70_123.45, "binance-stream")]


async def test_a_bucket_whose_two_providers_disagree_is_left_out_and_reported(
    storage: Storage,
) -> None:
    minute = datetime.fromtimestamp(int(utc_now().timestamp()) // 60 * 60, UTC) - timedelta(
        minutes=5
    )
    await storage.write_ticks(
        _minute_ticks("binance", minute, 70_123.45)
        + _minute_ticks("coingecko", minute, 67_187.34)
        + _minute_ticks("coingecko", minute + timedelta(minutes=1), 67_200.0)
    )
    history = CandleHistory(storage, None, tuple)
    found = await history.candles("BTC", 60, minute, minute + timedelta(minutes=2))
    assert [c.open_time for c in found.candles] == [minute + timedelta(minutes=1)]
    start = int(minute.timestamp() * 1000)
    assert found.disputed == [(start, start + 60_000)]
    assert found.missing == []  # disputed, not missing: someone holds it, nobody agrees


async def test_ohlcv_warns_when_sources_disagree_and_takes_a_provider_argument(
    start_gateway: StartGateway,
) -> None:
    # Known to the gateway (a `provider:` must name one), never called: disabled.
    entries = tuple(
        ProviderConfig(
            id=pid,
            name=pid,
            categories=("MARKET_DATA",),
            base_url="https://example.invalid",
            enabled=False,
            disabled_reason="history only",
        )
        for pid in ("binance", "coingecko")
    )
    running = await start_gateway(providers=ProvidersFile(entries))
    minute = datetime.fromtimestamp(int(utc_now().timestamp()) // 60 * 60, UTC) - timedelta(
        minutes=3
    )
    await running.services.storage.write_ticks(
        _minute_ticks("binance", minute, 70_123.45) + _minute_ticks("coingecko", minute, 67_187.34)
    )
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
        body = {
            "query": '{ all: ohlcv(symbol: "BTC", interval: M1, limit: 5) { close providers } '
            'one: ohlcv(symbol: "BTC", interval: M1, limit: 5, provider: "binance") '
            "{ close provider providers } }"
        }
        answer = (await client.post("/graphql", json=body)).json()
    assert answer["data"]["all"] == []
    assert answer["data"]["one"] == [
        {"close": 70_123.45, "provider": "binance", "providers": ["binance"]}
    ]
    (warning,) = [w for w in answer["extensions"]["warnings"] if w["code"] == "SOURCES_DISAGREE"]
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
        body = {"query": '{ ohlcv(symbol: "BTC", interval: M1, provider: "nope") { close } }'}
        unknown = (await client.post("/graphql", json=body)).json()
    assert unknown["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert warning["disputed"][0]["from"].startswith(minute.strftime("%Y-%m-%dT%H:%M"))

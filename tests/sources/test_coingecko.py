"""CoinGecko source: the pure parser against fixtures, the collector against the simulator, and
the shared polling loop of `gateway.sources` (driven through the CoinGecko collector).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trio

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.models import PriceTick
from gateway.sources import base as sources_base
from gateway.sources import coingecko
from gateway.sources.base import MAX_RETRY_AFTER, CollectorContext, PollingCollector, backoff_delay
from gateway.sources.binance import BinanceCollector
from gateway.sources.coinbase import CoinbaseCollector
from gateway.sources.coincap import CoinCapCollector
from gateway.sources.coingecko import (
    CoinGeckoCollector,
    parse_simple_price,
    simple_price_params,
)
from gateway.sources.coinmarketcap import CoinMarketCapCollector
from gateway.sources.coinpaprika import CoinPaprikaCollector
from gateway.sources.cryptocompare import CryptoCompareCollector
from gateway.sources.defillama import DefiLlamaPriceCollector
from gateway.sources.kraken import KrakenCollector
from gateway.sources.messari import MessariCollector
from gateway.sources.registry import COLLECTORS, collector_for
from gateway.upstream import UpstreamClient
from tests.simulator import Published, fixture_bytes, load_fixture, shipped_provider
from tests.simulator.rest import Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")
REPO = Path(__file__).resolve().parents[2]
# The shipped entry's `auth`, an optional demo-key header (the simulator's entry has none).
SHIPPED_AUTH = shipped_provider("coingecko").auth


def parse(payload: Any) -> list[PriceTick]:
    return parse_simple_price(payload, OBSERVED)


def btc(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "usd": 67187.3358936566,
        "usd_market_cap": 1317802988326.25,
        "usd_24h_vol": 31260929299.5248,
        "usd_24h_change": 3.63727894677354,
        "last_updated_at": 1711356300,
    }
    entry.update(fields)
    return {"bitcoin": {k: v for k, v in entry.items() if v is not ...}}


# -- parser: happy paths -----------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = parse(load_fixture("coingecko_simple_price"))
    assert [t.symbol for t in ticks] == list(DEFAULT_SYMBOLS)
    first = ticks[0]
    assert first == PriceTick(
        symbol="BTC",
        usd=67187.3358936566,
        provider="coingecko",
        observed_at=datetime(2024, 3, 25, 8, 45, 0, tzinfo=UTC),  # from last_updated_at
        market_cap_usd=1317802988326.25,
        volume_24h_usd=31260929299.5248,
        change_24h_pct=3.63727894677354,
    )
    assert all(t.provider == "coingecko" and t.usd > 0 for t in ticks)
    assert ticks[4].symbol == "XRP" and ticks[4].usd == 0.632784


def test_parse_stale_fixture_keeps_null_change_as_none() -> None:
    (tick,) = parse(load_fixture("coingecko_simple_price_stale"))
    assert tick.change_24h_pct is None
    assert tick.market_cap_usd == 1317802988326.25


def test_optional_fields_may_be_absent() -> None:
    (tick,) = parse({"bitcoin": {"usd": 67187}})
    assert tick.usd == 67187.0 and isinstance(tick.usd, float)
    assert tick.observed_at == OBSERVED  # no last_updated_at: the time we were given
    assert tick.market_cap_usd is None
    assert tick.volume_24h_usd is None
    assert tick.change_24h_pct is None


def test_unknown_ids_are_skipped_and_missing_coins_are_fine() -> None:
    ticks = parse({"some-new-token": {"usd": "not even a number"}, **btc()})
    assert [t.symbol for t in ticks] == ["BTC"]


def test_provider_name_is_configurable() -> None:
    (tick,) = parse_simple_price(btc(), OBSERVED, provider="coingecko-pro")
    assert tick.provider == "coingecko-pro"


def test_negative_change_is_fine() -> None:
    (tick,) = parse(btc(usd_24h_change=-12.5))
    assert tick.change_24h_pct == -12.5


# -- parser: everything that must raise --------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("coingecko_coins_markets"), id="coins-markets-list"),
        pytest.param(load_fixture("coingecko_error_rate_limit"), id="error-envelope"),
        pytest.param({"error": "coin not found"}, id="error-string"),
        pytest.param({}, id="empty"),
        pytest.param({"not-a-coin": {"usd": 1.0}}, id="only-unknown-ids"),
        pytest.param(None, id="null"),
        pytest.param("ok", id="string"),
        pytest.param(42, id="number"),
        pytest.param([btc()], id="wrapped-in-list"),
        pytest.param({"bitcoin": [67187.33]}, id="entry-not-object"),
        pytest.param({"bitcoin": 67187.33}, id="entry-bare-number"),
        pytest.param({"bitcoin": {}}, id="usd-missing"),
        pytest.param({"bitcoin": {"eur": 61000.0}}, id="other-currency-only"),
        pytest.param(btc(usd="67187.33"), id="usd-string"),
        pytest.param(btc(usd=None), id="usd-null"),
        pytest.param(btc(usd=True), id="usd-bool"),
        pytest.param(btc(usd=math.nan), id="usd-nan"),
        pytest.param(btc(usd=math.inf), id="usd-inf"),
        pytest.param(btc(usd=-1.0), id="usd-negative"),
        pytest.param(btc(usd=0), id="usd-zero"),
        pytest.param(btc(usd_market_cap=-5.0), id="market-cap-negative"),
        pytest.param(btc(usd_market_cap="1e12"), id="market-cap-string"),
        pytest.param(btc(usd_24h_vol=math.nan), id="volume-nan"),
        pytest.param(btc(usd_24h_change=math.inf), id="change-inf"),
        pytest.param(btc(last_updated_at="1711356300"), id="updated-string"),
        pytest.param(btc(last_updated_at=-1), id="updated-negative"),
        pytest.param(btc(last_updated_at=1e20), id="updated-out-of-range"),
        pytest.param({**btc(), "ethereum": {"usd": math.nan}}, id="one-corrupt-entry"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.provider == "coingecko"
    assert info.value.endpoint == "/simple/price"


def test_error_envelope_message_is_kept() -> None:
    with pytest.raises(UpstreamPayloadError, match="429: You've exceeded the Rate Limit"):
        parse(load_fixture("coingecko_error_rate_limit"))


# -- request building --------------------------------------------------------------------------


def test_simple_price_params() -> None:
    assert simple_price_params(["bitcoin", "ethereum"]) == {
        "ids": "bitcoin,ethereum",
        "vs_currencies": "usd",
        "include_market_cap": "true",
        "include_24hr_vol": "true",
        "include_24hr_change": "true",
        "include_last_updated_at": "true",
    }


# -- collector against the simulator (loopback, real clock) ------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: ProviderConfig,
    client: UpstreamClient,
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS,
    publish: Callable[[Sequence[PriceTick]], Awaitable[None]] = _ignore,
    key: str | None = None,
) -> CoinGeckoCollector:
    return CoinGeckoCollector(CollectorContext(provider, client, symbols, publish, key=key))


async def test_poll_against_simulator_then_set_price() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("coingecko"), client)
            ticks = await collector.poll()
            assert [t.symbol for t in ticks] == list(DEFAULT_SYMBOLS)
            assert ticks[0].usd == sim.price("BTC", "coingecko")
            assert ticks[0].market_cap_usd and ticks[0].volume_24h_usd
            assert ticks[0].change_24h_pct is not None

            sim.set_price("btc", 70123.45)
            ticks = await collector.poll()
            assert ticks[0].usd == 70123.45
            assert abs((ticks[0].observed_at - datetime.now(UTC)).total_seconds()) < 5

            _, path, params, headers = sim.requests[-1]
            assert path == "/simple/price"
            assert params["ids"] == "bitcoin,ethereum,solana,binancecoin,ripple,cardano,dogecoin"
            assert params["vs_currencies"] == "usd"
            assert "x-cg-demo-api-key" not in headers


async def test_provider_symbols_override_and_api_key() -> None:
    """The optional demo key comes in the context; the client sends it in the header that the
    shipped entry's `auth` names, and without one the keyless tier is asked."""
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = sim.provider(
                "coingecko", symbols=("avax", "MATIC", "USDT", "NOPE"), auth=SHIPPED_AUTH
            )
            ticks = await make_collector(provider, client, key="CG-test-key").poll()
            assert [t.symbol for t in ticks] == ["AVAX", "MATIC", "USDT"]
            _, _, params, headers = sim.requests[-1]
            assert params["ids"] == "avalanche-2,matic-network,tether"
            assert headers["x-cg-demo-api-key"] == "CG-test-key"
            keyless = await make_collector(provider, client, key=None).poll()
            assert [t.symbol for t in keyless] == ["AVAX", "MATIC", "USDT"]
            assert "x-cg-demo-api-key" not in sim.requests[-1][3]


async def test_no_mappable_symbols_means_no_request() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            assert await make_collector(sim.provider("coingecko"), client, ("NOPE",)).poll() == []
            assert sim.hits["coingecko"] == 0


@pytest.mark.parametrize(
    ("fault", "error_type", "outcome"),
    [
        (Fault.status(500), UpstreamError, "http_error"),
        (Fault.status(503, retry_after=3), UpstreamRateLimited, "rate_limited"),
        (Fault.rate_limit(retry_after=17), UpstreamRateLimited, "rate_limited"),
        (Fault.hang(), UpstreamError, "timeout"),
        (Fault.latency(5.0), UpstreamError, "timeout"),
        (Fault.malformed(), UpstreamPayloadError, "malformed"),
        (Fault.wrong_shape(), UpstreamPayloadError, None),
        (Fault.wrong_shape({"bitcoin": {"usd": -3}}), UpstreamPayloadError, None),
    ],
)
async def test_poll_under_faults(
    fault: Fault, error_type: type[UpstreamError], outcome: str | None
) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("coingecko", timeout_seconds=0.3), client)
            sim.inject("coingecko", replace(fault, times=1))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "coingecko"
            # The client saw HTTP fine for wrong_shape; the parser rejected it.
            assert client.attempts[-1].error_type == outcome
            if fault.kind == "rate_limit":
                assert isinstance(info.value, UpstreamRateLimited)
                assert info.value.retry_after == 17
            assert len(await collector.poll()) == len(DEFAULT_SYMBOLS)  # fault was one-shot


async def test_latency_within_timeout_is_fine() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("coingecko", Fault.latency(0.1))
            collector = make_collector(sim.provider("coingecko", timeout_seconds=2), client)
            assert len(await collector.poll()) == len(DEFAULT_SYMBOLS)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(500),
        Fault.rate_limit(retry_after=0),
        Fault.hang(),
        Fault.latency(1.0),
        Fault.malformed(),
        Fault.wrong_shape(),
    ],
    ids=lambda f: f.kind,
)
async def test_run_survives_each_fault_kind(fault: Fault) -> None:
    """Real clock: two faulty answers, then the collector recovers and publishes."""
    published = Published()

    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("coingecko", replace(fault, times=2))
            provider = sim.provider("coingecko", interval_seconds=0.05, timeout_seconds=0.2)
            collector = make_collector(provider, client, publish=published)
            async with trio.open_nursery() as nursery:
                await nursery.start(collector.run)
                await published.wait_until(bool)
                nursery.cancel_scope.cancel()
            assert sim.hits["coingecko"] == 3
            assert collector.consecutive_failures == 0
            assert collector.last_error is not None
            assert collector.last_success_at is not None
            assert [t.symbol for t in published.batches[0]] == list(DEFAULT_SYMBOLS)


# -- the polling loop (MockTransport + autojump_clock: no real sleeping) -----------------------

INTERVAL = 60.0
MOCK_PROVIDER = ProviderConfig(
    id="coingecko",
    name="CoinGecko",
    categories=("MARKET_DATA",),
    base_url="https://api.coingecko.com/api/v3",
    interval_seconds=INTERVAL,
    timeout_seconds=10.0,
)
OK_BODY = fixture_bytes("coingecko_simple_price")


class Script:
    """A mock upstream that answers from a list of (status, headers) and notes request times."""

    def __init__(self, *answers: tuple[int, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self._request = trio.Event()

    async def wait_for_requests(self, count: int) -> None:
        while len(self.times) < count:
            await self._request.wait()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(trio.current_time())
        self._request.set()
        self._request = trio.Event()
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return httpx.Response(status, content=OK_BODY if status == 200 else b"x", headers=headers)

    def gaps(self) -> list[float]:
        return [round(b - a, 6) for a, b in zip(self.times, self.times[1:], strict=False)]


async def run_script(script: Script, requests: int) -> list[list[PriceTick]]:
    published = Published()
    async with UpstreamClient(transport=httpx.MockTransport(script)) as client:
        collector = make_collector(MOCK_PROVIDER, client, publish=published)
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run)
            await script.wait_for_requests(requests)
            nursery.cancel_scope.cancel()
    return published.batches


OK: tuple[int, dict[str, str]] = (200, {})
FAIL: tuple[int, dict[str, str]] = (500, {})


async def test_run_polls_every_interval_and_publishes(autojump_clock: trio.abc.Clock) -> None:
    script = Script()
    published = await run_script(script, 4)
    assert script.gaps() == [INTERVAL] * 3
    assert len(published) >= 3
    assert [t.symbol for t in published[0]] == list(DEFAULT_SYMBOLS)


async def test_backoff_doubles_caps_and_resets(autojump_clock: trio.abc.Clock) -> None:
    script = Script(OK, FAIL, FAIL, FAIL, FAIL, FAIL, OK, OK, FAIL)
    published = await run_script(script, 10)
    i = INTERVAL
    #  ok->  f1->   f2->   f3->   f4->    f5->    ok->ok->f1->
    assert script.gaps() == [i, 2 * i, 4 * i, 8 * i, 10 * i, 10 * i, i, i, 2 * i]
    assert len(published) == 3 + 1  # the three OKs, plus the default OK answer at the end


async def test_retry_after_is_honoured_when_longer(autojump_clock: trio.abc.Clock) -> None:
    script = Script((429, {"Retry-After": "900"}), (429, {"Retry-After": "5"}), OK)
    await run_script(script, 3)
    # 900 s beats 2 * 60 s; 5 s does not beat 4 * 60 s.
    assert script.gaps() == [900.0, 4 * INTERVAL]


async def test_started_is_reported_before_the_first_answer(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    async with UpstreamClient(transport=httpx.MockTransport(never)) as client:
        collector = make_collector(MOCK_PROVIDER, client)
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run)
            assert trio.current_time() == 0
            nursery.cancel_scope.cancel()


async def test_upstream_errors_are_logged(autojump_clock: trio.abc.Clock) -> None:
    with structlog.testing.capture_logs() as logs:
        await run_script(Script(FAIL, FAIL, OK), 3)
    failures = [e for e in logs if e["event"] == "collector.poll_failed"]
    assert [e["failures"] for e in failures] == [1, 2]
    assert failures[0]["provider"] == "coingecko"
    assert failures[0]["status"] == 500
    assert failures[0]["retry_in_s"] == 2 * INTERVAL
    assert any(e["event"] == "collector.recovered" for e in logs)


async def test_unexpected_exception_from_publish_escapes(autojump_clock: trio.abc.Clock) -> None:
    async def broken_publish(ticks: Sequence[PriceTick]) -> None:
        raise RuntimeError("store is on fire")

    async with UpstreamClient(transport=httpx.MockTransport(Script())) as client:
        collector = make_collector(MOCK_PROVIDER, client, publish=broken_publish)
        with pytest.raises(RuntimeError, match="store is on fire"):
            await collector.run()


async def test_unexpected_exception_from_poll_escapes(autojump_clock: trio.abc.Clock) -> None:
    class Buggy(PollingCollector):
        name = "buggy"
        calls = 0

        async def poll(self) -> list[PriceTick]:
            self.calls += 1
            if self.calls < 3:
                raise UpstreamError("flaky", provider="buggy")
            raise KeyError("bug")

    async with UpstreamClient() as client:
        collector = Buggy(CollectorContext(MOCK_PROVIDER, client, ("BTC",), _ignore))
        with pytest.raises(KeyError):
            await collector.run()
        assert collector.calls == 3
        assert trio.current_time() == 2 * INTERVAL + 4 * INTERVAL


# -- backoff arithmetic and the registry -------------------------------------------------------


def test_backoff_delay() -> None:
    assert backoff_delay(60, 0) == 60
    assert [backoff_delay(60, n) for n in range(1, 6)] == [120, 240, 480, 600, 600]
    assert backoff_delay(60, 10_000) == 600  # no overflow after a very long outage
    assert backoff_delay(60, 1, retry_after=30) == 120
    assert backoff_delay(60, 1, retry_after=300) == 300
    assert backoff_delay(60, 0, retry_after=90) == 90
    assert backoff_delay(60, 1, retry_after=1e9) == MAX_RETRY_AFTER


def test_registry() -> None:
    expected = {
        "coingecko": CoinGeckoCollector,
        "binance": BinanceCollector,
        "kraken": KrakenCollector,
        "coinbase": CoinbaseCollector,
        "coinpaprika": CoinPaprikaCollector,
        "defillama-coins": DefiLlamaPriceCollector,
        "coincap": CoinCapCollector,
        "coinmarketcap": CoinMarketCapCollector,
        "cryptocompare": CryptoCompareCollector,
        "messari": MessariCollector,
    }
    assert expected == COLLECTORS
    assert all(cls.name == key for key, cls in COLLECTORS.items())
    assert collector_for(MOCK_PROVIDER) is CoinGeckoCollector
    assert collector_for(replace(MOCK_PROVIDER, id="cg-pro", collector="coingecko")) is (
        CoinGeckoCollector
    )
    # api.llama.fi serves TVL, not prices: only a `defillama-coins` entry gets a collector.
    assert collector_for(replace(MOCK_PROVIDER, id="defillama")) is None
    for name in sources_base.__all__:
        assert hasattr(sources_base, name), name
    for name in coingecko.__all__:
        assert hasattr(coingecko, name), name

"""CoinCap source (tier B, key required): the `/assets` parser against fixtures, the collector
against the simulator (key sent as `apiKey`, never called without one), and its fault cases.

Shapes: fixtures/coincap_assets.json follows the documented asset object
(https://docs.coincap.io, "Assets"; v3: https://pro.coincap.io/api-docs) as v3 answers it,
decimal strings and `tokens` included; see fixtures/SOURCES.md for what could not be checked.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.config import ProvidersFile
from gateway.errors import (
    UpstreamError,
    UpstreamPayloadError,
    UpstreamRateLimited,
    UpstreamUnconfigured,
)
from gateway.models import PriceTick
from gateway.providers.upstream_keys import Secrets
from gateway.sources.base import CollectorContext
from gateway.sources.coincap import CoinCapCollector, assets_params, parse_assets
from gateway.sources.registry import collector_for
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture, shipped_provider
from tests.simulator.rest import API_KEYS, Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")
KEY = API_KEYS["coincap"]


SHIPPED = shipped_provider("coincap")


def empty_env(tmp_path: Path) -> Path:
    path = tmp_path / "empty.env"
    path.write_text("")
    return path


def parse(payload: Any) -> list[PriceTick]:
    return parse_assets(payload, OBSERVED)


def btc(**fields: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("coincap_assets"))
    payload["data"] = [payload["data"][0]]
    payload["data"][0].update(fields)
    return dict(payload)


# -- parser ------------------------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = parse(load_fixture("coincap_assets"))
    assert [t.symbol for t in ticks] == ["BTC", "ETH"]  # `pepe` has no CoinCap id in the table
    assert ticks[0] == PriceTick(
        symbol="BTC",
        usd=67187.3358936566254621,
        provider="coincap",
        observed_at=datetime(2024, 3, 25, 8, 45, 2, 145000, tzinfo=UTC),  # `timestamp`, ms
        market_cap_usd=1321514079386.6052174961734000,
        volume_24h_usd=12724040223.1452060699561802,
        change_24h_pct=3.6372789467735400,
    )
    assert parse_assets(load_fixture("coincap_assets"), OBSERVED, provider="cc")[1].provider == "cc"


def test_nulls_stay_unknown_and_time_falls_back() -> None:
    payload = btc(marketCapUsd=None, volumeUsd24Hr=None, changePercent24Hr=None)
    del payload["timestamp"]
    (tick,) = parse(payload)
    assert (tick.market_cap_usd, tick.volume_24h_usd, tick.change_24h_pct) == (None, None, None)
    assert tick.observed_at == OBSERVED
    (tick,) = parse(btc(priceUsd=67187.5, changePercent24Hr="-1.25"))  # numbers are fine too
    assert (tick.usd, tick.change_24h_pct) == (67187.5, -1.25)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("coincap_error"), id="error-envelope"),
        pytest.param(None, id="null"),
        pytest.param([load_fixture("coincap_assets")["data"][0]], id="bare-array"),
        pytest.param({"data": load_fixture("coincap_assets")["data"][0]}, id="data-object"),
        pytest.param({"data": []}, id="empty"),
        pytest.param({"data": [load_fixture("coincap_assets")["data"][2]]}, id="only-unknown"),
        pytest.param({"data": [{"symbol": "BTC"}]}, id="no-id"),
        pytest.param({"data": ["bitcoin"]}, id="element-not-object"),
        pytest.param(btc(priceUsd=None), id="price-null"),
        pytest.param(btc(priceUsd="0.0000000000000000"), id="price-zero"),
        pytest.param(btc(priceUsd="sixty"), id="price-text"),
        pytest.param(btc(priceUsd="NaN"), id="price-nan"),
        pytest.param(btc(volumeUsd24Hr="-1"), id="volume-negative"),
        pytest.param(btc(marketCapUsd="Infinity"), id="cap-inf"),
        pytest.param(btc(changePercent24Hr=True), id="change-bool"),
        pytest.param({**btc(), "timestamp": "yesterday"}, id="timestamp-text"),
        pytest.param({**btc(), "timestamp": -5}, id="timestamp-negative"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.provider == "coincap" and info.value.endpoint == "/assets"


def test_assets_params() -> None:
    assert assets_params(["bitcoin", "ethereum"]) == {"ids": "bitcoin,ethereum", "limit": "2"}


def test_the_shipped_entry_runs_this_collector_and_needs_the_key() -> None:
    assert collector_for(SHIPPED) is CoinCapCollector
    assert SHIPPED.requires_key and SHIPPED.auth.env == "COINCAP_API_KEY"
    assert Secrets({}).is_configured(SHIPPED) is False  # UNCONFIGURED: never started
    assert Secrets({"COINCAP_API_KEY": "k"}).is_configured(SHIPPED)


# -- collector against the simulator -----------------------------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any,
    client: UpstreamClient,
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS,
    key: str | None = KEY,
) -> CoinCapCollector:
    """A collector given `key` in its context, as the supervisor gives it the configured one."""
    return CoinCapCollector(CollectorContext(provider, client, symbols, _ignore, key=key))


async def test_one_request_with_the_key() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            ticks = await make_collector(sim.provider("coincap"), client).poll()
            assert {t.symbol for t in ticks} == set(DEFAULT_SYMBOLS)
            btc_tick = next(t for t in ticks if t.symbol == "BTC")
            assert btc_tick.usd == pytest.approx(sim.price("BTC", "coincap"))
            assert btc_tick.market_cap_usd and btc_tick.volume_24h_usd
            _, path, params, _ = sim.requests[-1]
            assert path == "/assets" and params["apiKey"] == KEY
            assert params["ids"] == "bitcoin,ethereum,solana,binance-coin,xrp,cardano,dogecoin"

            sim.set_price("btc", 68000.5, provider="coincap")
            only = await make_collector(sim.provider("coincap"), client, ("BTC", "HYPE")).poll()
            assert [(t.symbol, t.usd) for t in only] == [("BTC", 68000.5)]
            # No CoinCap id for HYPE: nothing to ask for.
            assert await make_collector(sim.provider("coincap"), client, ("HYPE",)).poll() == []
            assert sim.hits["coincap"] == 2
            assert all(KEY not in (a.endpoint or "") for a in client.attempts)
            assert KEY not in repr(make_collector(sim.provider("coincap"), client).ctx)


async def test_without_a_key_nothing_is_sent() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            with pytest.raises(UpstreamUnconfigured, match="COINCAP_API_KEY"):
                await make_collector(sim.provider("coincap"), client, key=None).poll()
            assert sim.hits["coincap"] == 0


async def test_a_wrong_key_is_refused_upstream() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.api_keys["coincap"] = "another-key"
            with pytest.raises(UpstreamError) as info:
                await make_collector(sim.provider("coincap"), client).poll()
            assert info.value.status == 401


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.rate_limit(retry_after=45), UpstreamRateLimited),
        (Fault.status(500), UpstreamError),
        (Fault.status(503), UpstreamError),
        (Fault.malformed(), UpstreamPayloadError),
        (Fault.wrong_shape(), UpstreamPayloadError),
        (Fault.wrong_shape(load_fixture("coincap_error")), UpstreamPayloadError),
    ],
    ids=["429", "500", "503", "malformed", "wrong-shape", "error-envelope"],
)
async def test_poll_under_faults(fault: Fault, error_type: type[UpstreamError]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("coincap"), client)
            sim.inject("coincap", replace(fault, times=1))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "coincap"
            if isinstance(info.value, UpstreamRateLimited):
                assert info.value.retry_after == 45
                assert collector.next_delay(info.value) == 45  # longer than the interval
            assert len(await collector.poll()) == len(DEFAULT_SYMBOLS)  # the fault was one-shot


async def test_simulator_answers_like_the_fixture() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            url = sim.base_url("coincap") + "/assets"
            body = (await http.get(url, params={"ids": "bitcoin,nope", "apiKey": KEY})).json()
            expected = load_fixture("coincap_assets")
            assert body.keys() == expected.keys()
            (row,) = body["data"]
            assert row.keys() == expected["data"][0].keys()
            assert all(isinstance(row[k], str) for k in ("priceUsd", "marketCapUsd", "rank"))
            bearer = {"Authorization": f"Bearer {KEY}"}  # the other accepted form
            one = (await http.get(url + "/ethereum", headers=bearer)).json()
            assert one["data"]["symbol"] == "ETH"
            missing = await http.get(url + "/nope", headers=bearer)
            assert missing.status_code == 404 and "error" in missing.json()
            refused = await http.get(url, params={"ids": "bitcoin"})
            assert refused.status_code == 401 and "error" in refused.json()
            assert math.isfinite(float(row["priceUsd"]))


# -- through the supervisor --------------------------------------------------------------------


async def test_the_gateway_polls_a_keyed_provider_only_when_its_key_is_set(
    start_gateway: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With COINCAP_API_KEY the supervisor starts the collector and its ticks are stored; the
    CoinMarketCap entry beside it has no key: UNCONFIGURED, never called."""
    monkeypatch.setenv("GATEWAY_ENV_FILE", str(empty_env(tmp_path)))
    monkeypatch.setenv("COINCAP_API_KEY", KEY)
    monkeypatch.delenv("COINMARKETCAP_API_KEY", raising=False)
    async with run_simulator() as sim:
        fast = {"interval_seconds": 0.1, "symbols": ("BTC", "ETH")}
        providers = ProvidersFile(
            (sim.provider("coincap", **fast), sim.provider("coinmarketcap", **fast))
        )
        running = await start_gateway(providers=providers, db_path=tmp_path / "keyed.db")
        with trio.fail_after(10):
            while True:
                stored = await running.services.storage.latest_ticks(["BTC", "ETH"])
                if {(t.symbol, t.provider) for t in stored} == {
                    ("BTC", "coincap"),
                    ("ETH", "coincap"),
                }:
                    break
                await trio.sleep(0.05)
        assert sim.hits["coincap"] >= 1 and sim.hits["coinmarketcap"] == 0
        assert all(r[2]["apiKey"] == KEY for r in sim.requests if r[0] == "coincap")

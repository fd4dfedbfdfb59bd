"""The upstream simulator itself: shapes match the fixtures, controls work, faults behave, and
shutdown is quick. Raw httpx is used here so nothing of the gateway's client is assumed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from gateway import symbols
from tests.simulator import load_fixture
from tests.simulator.rest import Fault, Simulator, run_simulator

CG_PARAMS = {
    "ids": "bitcoin,ethereum",
    "vs_currencies": "usd",
    "include_market_cap": "true",
    "include_24hr_vol": "true",
    "include_24hr_change": "true",
    "include_last_updated_at": "true",
}


@asynccontextmanager
async def running() -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            yield sim, http


async def test_base_urls_and_pings() -> None:
    async with running() as (sim, http):
        cg, bn = sim.base_url("coingecko"), sim.base_url("binance")
        assert cg.startswith("http://127.0.0.1:") and cg.endswith("/coingecko/api/v3")
        assert bn.endswith("/binance/api/v3")
        assert (await http.get(cg + "/ping")).json() == load_fixture("coingecko_ping")
        assert (await http.get(bn + "/ping")).json() == load_fixture("binance_ping")
        assert (await http.get(bn + "/ping")).status_code == 200
        assert sim.hits == {"coingecko": 1, "binance": 2}
        with pytest.raises(KeyError):
            sim.base_url("no-such-provider")


def test_base_url_needs_a_running_simulator() -> None:
    with pytest.raises(RuntimeError):
        Simulator().base_url("binance")


# -- shapes: the simulator must answer like the fixtures (which follow the docs) ---------------


async def test_coingecko_shape_matches_fixture() -> None:
    async with running() as (sim, http):
        response = await http.get(sim.base_url("coingecko") + "/simple/price", params=CG_PARAMS)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        fixture = load_fixture("coingecko_simple_price")
        assert list(body) == ["bitcoin", "ethereum"]
        for coin_id, entry in body.items():
            assert entry.keys() == fixture[coin_id].keys()
            assert all(type(entry[k]) is type(fixture[coin_id][k]) for k in entry), coin_id


async def test_coingecko_respects_params() -> None:
    async with running() as (sim, http):
        url = sim.base_url("coingecko") + "/simple/price"
        body = (
            await http.get(url, params={"ids": "bitcoin,no-such-coin", "vs_currencies": "usd"})
        ).json()
        assert body == {
            "bitcoin": {"usd": sim.price("BTC", "coingecko")}
        }  # no include_*: no extras
        body = (await http.get(url, params={"ids": "tether", "vs_currencies": "eur"})).json()
        assert body == {"tether": {}}  # the simulator only prices in USD
        assert (await http.get(url, params={"ids": "bitcoin"})).status_code == 400


async def test_binance_shape_matches_fixture() -> None:
    async with running() as (sim, http):
        response = await http.get(
            sim.base_url("binance") + "/ticker/24hr", params={"symbols": '["BTCUSDT","ETHUSDT"]'}
        )
        assert response.status_code == 200
        body = response.json()
        fixture = load_fixture("binance_ticker_24hr")[0]
        assert [t["symbol"] for t in body] == ["BTCUSDT", "ETHUSDT"]
        for item in body:
            assert list(item) == list(fixture)  # same fields, same order
            assert all(type(item[k]) is type(fixture[k]) for k in item)
            assert float(item["lastPrice"]) > 0


async def test_binance_symbol_parameter_forms() -> None:
    async with running() as (sim, http):
        url = sim.base_url("binance") + "/ticker/24hr"

        single = await http.get(url, params={"symbol": "SOLUSDT"})
        assert single.status_code == 200 and single.json()["symbol"] == "SOLUSDT"

        spaced = await http.get(url, params={"symbols": '["BTCUSDT", "ETHUSDT"]'})
        assert spaced.status_code == 400 and spaced.json()["code"] == -1100

        for bad in ({"symbol": "NOPEUSDT"}, {"symbols": '["BTCUSDT","MATICUSDT"]'}):
            response = await http.get(url, params=bad)
            assert response.status_code == 400
            assert response.json() == load_fixture("binance_error_invalid_symbol")

        both = await http.get(url, params={"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'})
        assert both.status_code == 400 and both.json()["code"] == -1128

        everything = (await http.get(url)).json()
        pairs = {t["symbol"] for t in everything}
        assert {"BTCUSDT", "POLUSDT", "ETHBTC"} <= pairs and "MATICUSDT" not in pairs


async def test_every_gateway_asset_is_served_where_listed() -> None:
    """The gateway's table and the simulator's (independent) table agree."""
    async with running() as (sim, http):
        ids = [i for i in map(symbols.coingecko_id, sorted(symbols.known_symbols())) if i]
        body = (
            await http.get(
                sim.base_url("coingecko") + "/simple/price",
                params={"ids": ",".join(ids), "vs_currencies": "usd"},
            )
        ).json()
        assert sorted(body) == sorted(ids)
        pairs = [p for p in map(symbols.binance_pair, sorted(symbols.known_symbols())) if p]
        response = await http.get(
            sim.base_url("binance") + "/ticker/24hr",
            params={"symbols": "[" + ",".join(f'"{p}"' for p in pairs) + "]"},
        )
        assert response.status_code == 200, response.text


# -- controls ----------------------------------------------------------------------------------


async def test_set_price_all_providers_or_one() -> None:
    async with running() as (sim, http):
        cg = sim.base_url("coingecko") + "/simple/price"
        bn = sim.base_url("binance") + "/ticker/24hr"
        before = time.time()
        sim.set_price("btc", 70000.5)
        cg_entry = (await http.get(cg, params=CG_PARAMS)).json()["bitcoin"]
        bn_entry = (await http.get(bn, params={"symbol": "BTCUSDT"})).json()
        assert cg_entry["usd"] == 70000.5
        assert float(bn_entry["lastPrice"]) == 70000.5
        assert cg_entry["last_updated_at"] >= int(before)
        assert bn_entry["closeTime"] >= int(before * 1000)

        sim.set_price("BTC", 1.25, provider="binance")
        assert (await http.get(cg, params=CG_PARAMS)).json()["bitcoin"]["usd"] == 70000.5
        assert float((await http.get(bn, params={"symbol": "BTCUSDT"})).json()["lastPrice"]) == 1.25
        with pytest.raises(KeyError):
            sim.set_price("NOPE", 1.0)


# -- faults ------------------------------------------------------------------------------------


async def test_faults_apply_in_order_for_their_count() -> None:
    async with running() as (sim, http):
        url = sim.base_url("binance") + "/ping"
        sim.inject("binance", Fault.status(500, times=2))
        sim.inject("binance", Fault.rate_limit(retry_after=30, times=1))
        statuses = [(await http.get(url)).status_code for _ in range(4)]
        assert statuses == [500, 500, 429, 200]
        assert (await http.get(sim.base_url("coingecko") + "/ping")).status_code == 200


async def test_persistent_fault_until_cleared() -> None:
    async with running() as (sim, http):
        url = sim.base_url("coingecko") + "/ping"
        sim.inject("coingecko", Fault.status(503, retry_after=5))
        for _ in range(3):
            response = await http.get(url)
            assert response.status_code == 503 and response.headers["retry-after"] == "5"
        sim.clear_faults("coingecko")
        assert (await http.get(url)).status_code == 200


async def test_rate_limit_bodies_are_provider_specific() -> None:
    async with running() as (sim, http):
        sim.inject("coingecko", Fault.rate_limit(retry_after=60, times=1))
        sim.inject("binance", Fault.rate_limit(retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
        cg = await http.get(sim.base_url("coingecko") + "/ping")
        assert cg.status_code == 429 and cg.headers["retry-after"] == "60"
        assert cg.json() == load_fixture("coingecko_error_rate_limit")
        bn = await http.get(sim.base_url("binance") + "/ping")
        assert bn.headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
        assert bn.json()["code"] == -1003
        sim.clear_faults()
        assert (await http.get(sim.base_url("binance") + "/ping")).status_code == 200


async def test_latency_delays_then_answers() -> None:
    async with running() as (sim, http):
        sim.inject("binance", Fault.latency(0.3, times=1))
        start = trio.current_time()
        assert (await http.get(sim.base_url("binance") + "/ping")).status_code == 200
        assert trio.current_time() - start >= 0.3


async def test_malformed_and_wrong_shape() -> None:
    async with running() as (sim, http):
        url = sim.base_url("coingecko") + "/simple/price"
        sim.inject("coingecko", Fault.malformed(times=1))
        sim.inject("coingecko", Fault.wrong_shape(times=1))
        sim.inject("coingecko", Fault.wrong_shape({"custom": True}, times=1))
        malformed = await http.get(url, params=CG_PARAMS)
        assert malformed.status_code == 200
        with pytest.raises(ValueError):
            malformed.json()
        assert isinstance((await http.get(url, params=CG_PARAMS)).json(), list)
        assert (await http.get(url, params=CG_PARAMS)).json() == {"custom": True}


async def test_hang_never_answers_and_shutdown_stays_quick() -> None:
    async with running() as (sim, http):
        sim.inject("binance", Fault.hang())
        with pytest.raises(httpx.ReadTimeout):
            await http.get(sim.base_url("binance") + "/ping", timeout=0.3)


async def test_shutdown_with_requests_in_flight_is_quick() -> None:
    outcomes: list[str] = []

    async def stuck(sim: Simulator) -> None:
        async with httpx.AsyncClient() as http:
            try:
                response = await http.get(sim.base_url("coingecko") + "/ping", timeout=30)
                outcomes.append(f"answered {response.status_code}")
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with run_simulator() as sim:
                sim.inject("coingecko", Fault.hang())
                for _ in range(3):
                    nursery.start_soon(stuck, sim)
                await sim.wait_for_hits("coingecko", 3)
                start = trio.current_time()
            shutdown = trio.current_time() - start
    assert shutdown < 1.0
    assert len(outcomes) == 3  # every stuck client was released, none left waiting 30 s


async def test_errors_inside_the_block_come_out_unwrapped() -> None:
    """A failure in the test body is re-raised as itself, not inside an exception group."""

    class Boom(Exception):
        pass

    with trio.fail_after(10), pytest.raises(Boom) as info:
        async with run_simulator():
            try:
                raise KeyError("first")
            except KeyError as exc:
                raise Boom("second") from exc
    assert isinstance(info.value.__cause__, KeyError)

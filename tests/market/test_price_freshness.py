"""`prices` says how old a latest price is: past GATEWAY_FRESH_PRICES a STALE_DATA warning with
its age, past GATEWAY_MAX_AGE_PRICES left out (or, if nothing else is left, refused)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import trio

from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway


async def query(running: RunningGateway, symbols: str) -> dict[str, Any]:
    document = f"{{ prices(symbols: {symbols}) {{ symbol usd ageSeconds }} }}"
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
        return (await client.post("/graphql", json={"query": document})).json()  # type: ignore[no-any-return]


async def store(running: RunningGateway, *ticks: PriceTick) -> None:
    with trio.fail_after(5):
        await running.services.storage.write_ticks(list(ticks))


async def test_a_price_older_than_fresh_is_served_with_its_age(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway()
    now = utc_now()
    await store(running, PriceTick("BTC", 67_000.0, "a", now - timedelta(minutes=20)))
    await store(running, PriceTick("ETH", 3_500.0, "a", now - timedelta(seconds=5)))
    body = await query(running, '["BTC", "ETH"]')
    assert "errors" not in body, body
    assert [p["symbol"] for p in body["data"]["prices"]] == ["BTC", "ETH"]
    (warning,) = body["extensions"]["warnings"]
    assert warning["code"] == "STALE_DATA" and warning["symbol"] == "BTC"
    assert warning["ageSeconds"] == pytest.approx(1200, abs=10)
    assert warning["freshSeconds"] == 600 and warning["maxAgeSeconds"] == 3600


async def test_a_price_past_the_hard_limit_is_refused(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    await store(running, PriceTick("BTC", 67_000.0, "a", utc_now() - timedelta(hours=3)))
    body = await query(running, '["BTC"]')
    assert body["data"] is None
    error = body["errors"][0]["extensions"]
    assert error["code"] == "STALE_DATA"
    assert error["ageSeconds"] == pytest.approx(3 * 3600, abs=10)
    assert error["maxAgeSeconds"] == 3600 and error["provider"] == "a"


async def test_a_stale_symbol_is_left_out_of_an_answer_that_has_others(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(fresh_prices=60, max_age_prices=600)
    now = utc_now()
    await store(
        running,
        PriceTick("BTC", 67_000.0, "a", now - timedelta(seconds=2)),
        PriceTick("ETH", 3_500.0, "a", now - timedelta(minutes=30)),
    )
    body = await query(running, '["BTC", "ETH"]')
    assert [p["symbol"] for p in body["data"]["prices"]] == ["BTC"]
    (warning,) = body["extensions"]["warnings"]
    assert warning["code"] == "STALE_DATA" and warning["refused"] is True
    assert warning["symbol"] == "ETH" and warning["ageSeconds"] == pytest.approx(1800, abs=10)

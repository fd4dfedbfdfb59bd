"""`priceTicks(symbols, since)`: stored ticks first, then live ones, with no gap and no
duplicate at the seam, even for a tick that is on its way to the store while the client
subscribes (gateway/api/schema/prices.py `_price_ticks`, `Storage.committed`, gateway/ingest.py)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.config import ProviderConfig, ProvidersFile
from gateway.ingest import Ingest
from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from gateway.prices.consensus import OutlierWatch
from gateway.providers.status import ProviderStatusBoard
from gateway.pubsub import EventBus
from gateway.storage import Storage
from tests.conftest import StartGateway, graphql, wait_members
from tests.simulator.rest import run_simulator

QUERY = (
    "subscription($s: DateTime) "
    '{ priceTicks(symbols: ["BTC"], since: $s) { usd provider observedAt } }'
)


def ingest_for(running: RunningGateway) -> Ingest:
    services = running.services
    return Ingest(services.storage, services.bus, services.status_board, OutlierWatch())


@asynccontextmanager
async def replaying(running: RunningGateway, since: datetime) -> AsyncIterator[WebSocketConnection]:
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        await ws.get_message()
        payload = {"query": QUERY, "variables": {"s": since.isoformat()}}
        await ws.send_message(json.dumps({"type": "subscribe", "id": "r", "payload": payload}))
        yield ws


async def received(ws: WebSocketConnection, count: int) -> list[float]:
    prices = []
    for _ in range(count):
        message = json.loads(await ws.get_message())
        assert message["type"] == "next", message
        prices.append(message["payload"]["data"]["priceTicks"]["usd"])
    return prices


async def test_a_tick_still_being_committed_when_a_client_subscribes_is_replayed(
    start_gateway: StartGateway,
) -> None:
    # Commits wait 0.5 s, so the tick is queued (and was published live) but not yet stored
    # when the subscription starts: it is in neither the live buffer nor the store yet.
    running = await start_gateway(storage_batch_seconds=0.5)
    ingest = ingest_for(running)
    since = utc_now() - timedelta(minutes=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ingest, [PriceTick("BTC", 101.0, "p", since + timedelta(seconds=1))])
        await trio.sleep(0.05)  # queued and published, the commit still 0.45 s away
        async with replaying(running, since) as ws:
            with trio.fail_after(5):
                assert await received(ws, 1) == [101.0]
            with trio.move_on_after(0.7):  # and only once
                extra = await ws.get_message()
                raise AssertionError(f"unexpected message {extra}")


async def test_replay_then_live_without_gap_or_duplicate(start_gateway: StartGateway) -> None:
    running = await start_gateway(storage_batch_seconds=0.05)
    ingest = ingest_for(running)
    t0 = utc_now() - timedelta(minutes=5)
    stored = [PriceTick("BTC", 100.0 + n, "p", t0 + timedelta(seconds=n)) for n in range(5)]
    await ingest(stored)
    async with replaying(running, t0 + timedelta(seconds=1)) as ws:  # after the tick at t0+1
        with trio.fail_after(5):
            assert await received(ws, 3) == [102.0, 103.0, 104.0]
            await wait_members(running, 1)
            # (plausible moves: a jump from 104 to 200 would be quarantined, never published)
            live = [
                PriceTick("BTC", 110.0 + n, "p", utc_now() + timedelta(seconds=n)) for n in range(3)
            ]
            await ingest(live)
            assert await received(ws, 3) == [110.0, 111.0, 112.0]


async def test_ingest_publishes_without_waiting_for_the_commit(
    start_gateway: StartGateway,
) -> None:
    # A stream hands over one message at a time: if ingest waited for each commit (a whole
    # batch window), one stream could publish only a few messages a second.
    running = await start_gateway(storage_batch_seconds=1.0)
    ingest = ingest_for(running)
    storage = running.services.storage
    base = utc_now()
    with running.services.bus.prices.subscribe() as live:
        started = trio.current_time()
        for n in range(20):
            await ingest([PriceTick("BTC", 100.0 + n, "p", base + timedelta(milliseconds=n))])
        assert trio.current_time() - started < 0.5
        assert live.pending == 20
    assert await storage.tick_count() == 0  # still in the 1 s batch window
    with trio.fail_after(3):
        await storage.committed()
    assert await storage.tick_count() == 20


# -- the ingest path itself ---------------------------------------------------------------------


def _ingest_parts(storage: Storage) -> tuple[Ingest, EventBus, ProviderStatusBoard]:
    entries = tuple(
        ProviderConfig(id=p, name=p, categories=("MARKET_DATA",), base_url="https://x.test")
        for p in ("a", "b", "c")
    )
    bus = EventBus(16)
    board = ProviderStatusBoard(ProvidersFile(entries))
    return Ingest(storage, bus, board, OutlierWatch(max_deviation_pct=5)), bus, board


async def test_ingest_queues_before_it_publishes(running_storage: Storage) -> None:
    ingest, bus, _board = _ingest_parts(running_storage)
    queued_when_published: list[int] = []
    real_publish = bus.prices.publish

    def publish(tick: PriceTick) -> None:
        queued_when_published.append(running_storage.queued_rows)
        real_publish(tick)

    bus.prices.publish = publish  # type: ignore[method-assign]
    with trio.fail_after(5), bus.prices.subscribe() as live:
        await ingest([PriceTick("BTC", 67_000.0, "a", utc_now())])
        # Published while its row was already in the writer's queue (not yet committed).
        assert queued_when_published == [1]
        assert (await live.__anext__()).usd == 67_000.0
        await running_storage.committed()
        assert await running_storage.tick_count() == 1


async def test_a_batch_with_an_invalid_tick_is_neither_stored_nor_published(
    running_storage: Storage,
) -> None:
    ingest, bus, _board = _ingest_parts(running_storage)
    now = utc_now()
    with trio.fail_after(5):
        with pytest.raises(ValueError, match="not a number"):
            await ingest([PriceTick("BTC", 1.0, "a", now), PriceTick("ETH", math.nan, "a", now)])
        await running_storage.committed()
    assert bus.prices.published == 0
    assert await running_storage.tick_count() == 0


async def test_an_outlier_is_counted_on_its_provider(running_storage: Storage) -> None:
    ingest, _bus, board = _ingest_parts(running_storage)
    now = utc_now()
    with trio.fail_after(5):
        await ingest([PriceTick("BTC", 67_000.0, "a", now), PriceTick("BTC", 67_010.0, "b", now)])
        await ingest([PriceTick("BTC", 70_500.0, "c", now)])  # 5 % off: believable, an outlier
    assert board.records["c"].outliers == 1 and board.records["c"].quarantined == 0
    assert board.records["a"].outliers == board.records["b"].outliers == 0


# -- bad upstream values end to end (issue: 1e300 stored, streamed and served by history) -------


async def test_a_wild_upstream_value_is_quarantined_not_stored_streamed_or_in_candles(
    start_gateway: StartGateway,
) -> None:
    async with run_simulator() as sim:
        running = await start_gateway(
            providers=ProvidersFile(
                tuple(
                    sim.provider(pid, interval_seconds=0.2, symbols=("BTC",))
                    for pid in ("coingecko", "kraken", "binance")
                )
            ),
            symbols=("BTC",),
            storage_batch_seconds=0.05,
        )
        board = running.services.status_board
        streamed: list[float] = []
        with running.services.bus.prices.subscribe() as live:

            async def listen() -> None:
                async for tick in live:
                    streamed.append(tick.usd)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                # Every provider believed first, then Binance alone goes wild.
                with trio.fail_after(10):
                    while len(streamed) < 6:
                        await trio.sleep(0.05)
                sim.set_price("BTC", 1e300, provider="binance")
                with trio.fail_after(10):
                    while board.records["binance"].quarantined < 3:
                        await trio.sleep(0.05)
                await running.services.storage.committed()
                nursery.cancel_scope.cancel()

        assert streamed and max(streamed) < 1e6  # no subscriber ever saw it
        stored = await running.services.storage.latest_ticks(["BTC"])
        assert {t.provider for t in stored} == {"coingecko", "kraken", "binance"}
        assert max(t.usd for t in stored) < 1e6  # binance's latest stored tick is its last sane one
        answer = await graphql(
            running,
            '{ ohlcv(symbol: "BTC", interval: M1, limit: 5) { high close } '
            'prices(symbols: ["BTC"]) { usd } '
            'quarantinedTicks(provider: "binance") { symbol usd referenceUsd reason } '
            "providers { id quarantined } }",
        )
        assert "errors" not in answer, answer
        data = answer["data"]
        assert data["ohlcv"] and max(c["high"] for c in data["ohlcv"]) < 1e6
        assert data["prices"][0]["usd"] < 1e6
        refused = data["quarantinedTicks"]
        assert refused and all(r["usd"] == 1e300 for r in refused)
        assert refused[0]["referenceUsd"] < 1e6 and "other providers" in refused[0]["reason"]
        counts = {p["id"]: p["quarantined"] for p in data["providers"]}
        assert counts["binance"] >= 3 and counts["coingecko"] == counts["kraken"] == 0


async def test_two_disagreeing_sources_give_a_warning_and_no_price(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway()
    now = utc_now()
    ingest = ingest_for(running)
    with trio.fail_after(5):
        await ingest([PriceTick("BTC", 67_000.0, "coingecko", now)])
        await ingest([PriceTick("BTC", 1e12, "binance", now)])  # both new: the gate cannot tell
        await running.services.storage.committed()
    answer = await graphql(running, '{ prices(symbols: ["BTC"]) { symbol usd } }')
    assert answer["data"]["prices"] == []  # never the 500,000,033,500 average
    codes = [w["code"] for w in answer["extensions"]["warnings"]]
    assert "SOURCES_DISAGREE" in codes

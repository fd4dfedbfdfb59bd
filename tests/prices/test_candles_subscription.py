"""The `candles` subscription (gateway/prices/live_candles.py): the open candle, live, then its close.

`OpenCandle` is tested directly. The subscription runs against a real gateway on loopback,
with ticks fed through `gateway.ingest.Ingest`, as collectors feed them.
A candle boundary is at least a minute away, so those tests shift the wall clock that
live_candles places boundaries by: each starts a couple of seconds before a boundary.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.ingest import Ingest
from gateway.models import Candle, PriceTick, utc_now
from gateway.nursery import RunningGateway
from gateway.prices import live_candles
from gateway.prices.consensus import OutlierWatch
from gateway.prices.live_candles import OpenCandle
from tests.conftest import StartGateway, wait_members

START = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
M5 = 300_000
LEAD = 2.5  # seconds from subscribing to the (shifted) boundary


def at(seconds: float, usd: float, provider: str = "alpha", symbol: str = "BTC") -> PriceTick:
    return PriceTick(symbol, usd, provider, START + timedelta(seconds=seconds))


# -- OpenCandle ----------------------------------------------------------------------------------


def test_open_and_close_follow_observation_time_not_arrival() -> None:
    candle = OpenCandle("BTC", START_MS, M5)
    for tick in (at(30, 10.0), at(90, 12.0), at(10, 9.0), at(60, 15.0), at(20, 8.0)):
        assert candle.add(tick)
    record = candle.record(closed=False)
    assert (record.open, record.high, record.low, record.close) == (9.0, 15.0, 8.0, 12.0)
    assert record.provider == "alpha" and record.volume is None and not record.complete
    assert candle.minutes == {0, 1}


def test_one_provider_per_candle_and_only_its_own_bucket() -> None:
    candle = OpenCandle("BTC", START_MS, M5)
    assert candle.add(at(5, 10.0, provider="beta"))  # the first provider to tick
    assert not candle.add(at(6, 99.0, provider="alpha"))
    assert not candle.add(at(300, 11.0, provider="beta"))  # the next bucket
    assert not candle.add(at(-1, 11.0, provider="beta"))  # the previous one
    assert not candle.add(at(7, 11.0, provider="beta", symbol="ETH"))
    record = candle.record(closed=True)
    assert (record.provider, record.high, record.close) == ("beta", 10.0, 10.0)


def test_complete_needs_the_end_and_a_tick_in_every_minute() -> None:
    candle = OpenCandle("BTC", START_MS, M5)
    for minute in range(4):
        candle.add(at(minute * 60 + 59.9, 1.0))
    assert not candle.record(closed=True).complete  # minute 4 has no tick
    candle.add(at(240, 1.0))
    assert candle.record(closed=True).complete
    assert not candle.record(closed=False).complete


def test_a_tick_folded_twice_changes_nothing() -> None:
    candle = OpenCandle("BTC", START_MS, M5)
    ticks = [at(1, 5.0), at(2, 7.0), at(3, 6.0)]
    for tick in ticks:
        candle.add(tick)
    before = candle.record(closed=False)
    for tick in reversed(ticks):
        candle.add(tick)
    assert candle.record(closed=False) == before


def minute_candle(minute: int, o: float, h: float, lo: float, c: float) -> Candle:
    open_time = START + timedelta(minutes=minute)
    return Candle("BTC", 60, open_time, o, h, lo, c, None, "alpha", False)


def test_a_seed_from_minute_candles_is_made_exact_by_the_last_minutes_ticks() -> None:
    candle = OpenCandle("BTC", START_MS, M5)
    last = candle.seed([minute_candle(0, 10, 12, 9, 11), minute_candle(2, 11, 14, 11, 13)])
    assert last == START_MS + 120_000 and candle.minutes == {0, 2}
    # The stored ticks of the last minute, then the same ticks again from the live buffer.
    for tick in [at(125, 11.0), at(150, 14.0), at(170, 13.0)] * 2:
        candle.add(tick)
    record = candle.record(closed=False)
    assert (record.open, record.high, record.low, record.close) == (10, 14, 9, 13)
    candle.add(at(175, 12.5))  # later in the same minute: the new close
    candle.add(at(50, 1.0))  # inside the first stored minute: its time is unknown, open stays
    assert (candle.close, candle.open, candle.low) == (12.5, 10, 1.0)


# -- the subscription, end to end ------------------------------------------------------------------


@dataclass
class ShiftedClock:
    """The wall clock live_candles reads, running at real speed from a chosen moment."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def set(self, moment: datetime) -> None:
        self.offset = moment - utc_now()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ShiftedClock:
    shifted = ShiftedClock()
    monkeypatch.setattr(live_candles, "wall_clock", shifted)
    return shifted


def boundary() -> datetime:
    """A five-minute boundary well clear of the real clock (history checks stay satisfied)."""
    now = utc_now()
    return now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5 - 10)


async def ingest(running: RunningGateway, *ticks: PriceTick) -> None:
    """Through the gateway's own ingest path, then wait until the ticks are committed."""
    services = running.services
    with trio.fail_after(5):
        await Ingest(services.storage, services.bus, services.status_board, OutlierWatch())(ticks)
        await services.storage.committed()


@asynccontextmanager
async def subscribed(
    running: RunningGateway, symbol: str, interval: str
) -> AsyncIterator[WebSocketConnection]:
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        with trio.fail_after(5):
            await ws.get_message()
        query = (
            "subscription($s: String!, $i: Interval!) { candles(symbol: $s, interval: $i) "
            "{ symbol interval openTime open high low close volume provider complete } }"
        )
        payload = {"query": query, "variables": {"s": symbol, "i": interval}}
        await ws.send_message(json.dumps({"type": "subscribe", "id": "c", "payload": payload}))
        yield ws


async def next_candle(ws: WebSocketConnection, timeout: float = 3) -> dict[str, Any]:
    with trio.fail_after(timeout):
        message = json.loads(await ws.get_message())
    assert message["type"] == "next", message
    candle: dict[str, Any] = message["payload"]["data"]["candles"]
    candle["openTime"] = datetime.fromisoformat(candle["openTime"])
    return candle


def ohlc(candle: dict[str, Any]) -> tuple[float, float, float, float]:
    return (candle["open"], candle["high"], candle["low"], candle["close"])


async def nothing_within(ws: WebSocketConnection, seconds: float) -> None:
    with trio.move_on_after(seconds):
        message = await ws.get_message()
        raise AssertionError(f"unexpected message {message}")


async def test_seeded_candle_follows_its_providers_ticks_and_closes_as_stored(
    start_gateway: StartGateway, clock: ShiftedClock
) -> None:
    running = await start_gateway(storage_batch_seconds=0.02)
    end = boundary()
    start = end - timedelta(minutes=5)

    def tick(seconds: float, usd: float, provider: str = "alpha") -> PriceTick:
        return PriceTick("BTC", usd, provider, start + timedelta(seconds=seconds))

    # Minutes 0-3 are stored before anyone subscribes; beta has fewer minutes than alpha.
    await ingest(
        running,
        tick(5, 100.0), tick(30, 104.0), tick(70, 98.0), tick(130, 101.0),
        tick(200, 102.0), tick(230, 103.0),
        tick(10, 500.0, "beta"), tick(80, 510.0, "beta"),
    )  # fmt: skip
    clock.set(end - timedelta(seconds=LEAD))
    async with subscribed(running, "btc", "M5") as ws:
        seeded = await next_candle(ws)
        assert seeded["openTime"] == start and seeded["interval"] == "M5"
        assert ohlc(seeded) == (100.0, 104.0, 98.0, 103.0)
        assert seeded["provider"] == "alpha" and seeded["symbol"] == "BTC"
        assert seeded["volume"] is None and seeded["complete"] is False
        await wait_members(running, 1)

        await ingest(running, tick(200, 102.0))  # already in the seed: nothing new to send
        await ingest(running, tick(250, 1000.0, "beta"))  # another provider: never mixed in
        await ingest(running, tick(280, 99.0))  # minute 4: every minute now has a tick
        update = await next_candle(ws)
        assert ohlc(update) == (100.0, 104.0, 98.0, 99.0) and update["complete"] is False

        # No more ticks: the boundary timer alone closes the candle, as the store has it.
        final = await next_candle(ws, timeout=LEAD + 3)
        assert final["openTime"] == start and final["complete"] is True
        (stored,) = await running.services.storage.candles("BTC", 300, start, end, clock())
        assert ohlc(final) == (stored.open, stored.high, stored.low, stored.close)
        assert final["provider"] == stored.provider == "alpha" and stored.complete

        # The next bucket starts empty: its first tick is the next message (no second final).
        await ingest(running, PriceTick("BTC", 105.0, "beta", end + timedelta(seconds=1)))
        following = await next_candle(ws)
        assert following["openTime"] == end and following["provider"] == "beta"
        assert ohlc(following) == (105.0,) * 4 and following["complete"] is False


async def test_a_fresh_bucket_takes_the_first_provider_and_closes_incomplete_with_holes(
    start_gateway: StartGateway, clock: ShiftedClock
) -> None:
    running = await start_gateway(storage_batch_seconds=0.02)
    end = boundary()
    start = end - timedelta(minutes=5)
    clock.set(end - timedelta(seconds=LEAD))
    async with subscribed(running, "ETH", "M5") as ws:
        await wait_members(running, 1)
        await nothing_within(ws, 0.2)  # nothing stored: nothing to send

        def tick(seconds: float, usd: float, provider: str) -> PriceTick:
            return PriceTick("ETH", usd, provider, end + timedelta(seconds=seconds))

        await ingest(running, tick(-30, 2000.0, "beta"))
        first = await next_candle(ws)
        assert first["provider"] == "beta" and ohlc(first) == (2000.0,) * 4
        assert first["openTime"] == start
        await ingest(running, tick(-25, 3000.0, "alpha"), tick(-20, 2010.0, "beta"))
        second = await next_candle(ws)
        assert ohlc(second) == (2000.0, 2010.0, 2000.0, 2010.0)
        # Stamped just past the boundary before our clock gets there: the next bucket's, held
        # back until this one's final candle is out.
        await ingest(running, tick(0.5, 2020.0, "alpha"))

        final = await next_candle(ws, timeout=LEAD + 3)
        # One minute of five had ticks. The store would pick alpha (a tie on minutes goes to
        # the alphabetically first), but the series stays with its provider.
        assert final["openTime"] == start and final["complete"] is False
        assert final["provider"] == "beta" and ohlc(final) == ohlc(second)
        (stored,) = await running.services.storage.candles("ETH", 300, start, end, clock())
        assert stored.provider == "alpha"

        following = await next_candle(ws)
        assert following["openTime"] == end and following["provider"] == "alpha"
        assert ohlc(following) == (2020.0,) * 4


async def test_an_unknown_symbol_is_an_error_for_the_subscribe_request(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway()
    async with subscribed(running, "BTCC", "M1") as ws:
        with trio.fail_after(5):
            message = json.loads(await ws.get_message())
    assert message["type"] == "error" and message["id"] == "c"
    error = message["payload"][0]
    assert error["extensions"]["code"] == "UNKNOWN_SYMBOL"
    assert "BTC" in error["extensions"]["suggestions"]
    hub = running.services.hub
    assert hub is not None and hub.group_count == 0  # no stream was left running

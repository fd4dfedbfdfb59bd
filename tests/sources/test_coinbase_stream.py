"""Coinbase Exchange ticker stream: the pure parser against documented messages, then the
client against the simulated feed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from gateway.config import ProviderConfig, ProvidersFile
from gateway.errors import UpstreamPayloadError
from gateway.sources.coinbase_stream import (
    CoinbaseStream,
    parse_coinbase_message,
    subscription_message,
)
from gateway.sources.interest import SymbolInterest
from gateway.sources.stream_parsing import IGNORED, Frame
from gateway.sources.stream_state import StreamHealth, StreamSettings
from tests.conftest import StartGateway
from tests.simulator.ws import TickRecorder, run_ws_simulator

NOW = datetime(2024, 3, 25, 12, 0, tzinfo=UTC)

# The documented ticker message (Exchange WebSocket channels, "Ticker channel"), verbatim.
TICKER: dict[str, Any] = {
    "type": "ticker",
    "sequence": 37475248783,
    "product_id": "ETH-USD",
    "price": "1285.22",
    "open_24h": "1310.79",
    "volume_24h": "245532.79269678",
    "low_24h": "1280.52",
    "high_24h": "1313.8",
    "volume_30d": "9788783.60117027",
    "best_bid": "1285.04",
    "best_bid_size": "0.46688654",
    "best_ask": "1285.27",
    "best_ask_size": "1.56637040",
    "side": "buy",
    "time": "2022-10-19T23:28:22.061769Z",
    "trade_id": 370843401,
    "last_size": "11.4396987",
}

FAST = StreamSettings(
    connect_timeout=2,
    close_timeout=0.5,
    backoff_initial=0.05,
    backoff_max=0.2,
    resubscribe_delay=0.01,
    min_publish_interval=0,
)


def ticker(**changes: Any) -> str:
    merged = {**TICKER, **changes}
    return json.dumps({k: v for k, v in merged.items() if v is not ...})


def test_a_ticker_becomes_a_tick() -> None:
    tick = parse_coinbase_message(ticker(), NOW).ticks[0]
    assert (tick.symbol, tick.usd, tick.provider) == ("ETH", 1285.22, "coinbase-stream")
    assert tick.observed_at == datetime(2022, 10, 19, 23, 28, 22, 61769, tzinfo=UTC)
    assert tick.change_24h_pct == pytest.approx((1285.22 / 1310.79 - 1) * 100)
    # volume_24h is in ETH: no USD volume is made up from it
    assert tick.volume_24h_usd is None and tick.market_cap_usd is None


def test_optional_fields_may_be_absent() -> None:
    tick = parse_coinbase_message(ticker(time=..., open_24h=None), NOW).ticks[0]
    assert tick.observed_at == NOW and tick.change_24h_pct is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({**TICKER, "product_id": "ETH-EUR"}, IGNORED),
        (
            {
                "type": "heartbeat",
                "sequence": 90,
                "last_trade_id": 20,
                "product_id": "BTC-USD",
                "time": "2014-11-07T08:19:28.464459Z",
            },
            IGNORED,
        ),
        (
            {
                "type": "subscriptions",
                "channels": [
                    {"name": "ticker", "product_ids": ["ETH-USD", "BTC-USD"]},
                    {"name": "heartbeat", "product_ids": ["ETH-USD", "BTC-USD"]},
                ],
            },
            IGNORED,
        ),
        ({"type": "a-type-added-next-year", "anything": 1}, IGNORED),
        (
            {
                "type": "error",
                "message": "Failed to subscribe",
                "reason": "XYZ-USD is not a valid product",
            },
            Frame(
                error="Failed to subscribe: XYZ-USD is not a valid product",
                refused=("XYZ-USD",),
            ),
        ),
        (
            {"type": "error", "message": "Failed to subscribe", "reason": "rate limited"},
            Frame(error="Failed to subscribe: rate limited"),
        ),
    ],
)
def test_other_messages(payload: Any, expected: Frame) -> None:
    assert parse_coinbase_message(json.dumps(payload), NOW) == expected


@pytest.mark.parametrize(
    "message",
    [
        "<html>502 Bad Gateway</html>",
        json.dumps(["ticker"]),
        json.dumps({"product_id": "BTC-USD", "price": "1"}),
        json.dumps({"type": 7}),
        ticker(product_id=None),
        ticker(price=...),
        ticker(price="free"),
        ticker(price="0.00"),
        ticker(price="-1285.22"),
        ticker(time="19/10/2022"),
        ticker(open_24h="0"),
    ],
)
def test_malformed_messages_are_refused_whole(message: str) -> None:
    with pytest.raises(UpstreamPayloadError) as error:
        parse_coinbase_message(message, NOW)
    assert error.value.provider == "coinbase-stream"


def test_request_messages_and_names() -> None:
    assert json.loads(subscription_message(["BTC-USD"], subscribe=True)) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD"],
        "channels": ["ticker", "heartbeat"],
    }
    assert json.loads(subscription_message(["BTC-USD"], subscribe=False))["type"] == "unsubscribe"
    client = CoinbaseStream(SymbolInterest(), TickRecorder().publish)
    assert client.url == "wss://ws-feed.exchange.coinbase.com"
    assert client.upstream_id(" sol ") == "SOL-USD" and client.upstream_id("btc") == "BTC-USD"
    assert client.upstream_id("BNB") is None  # not traded on Coinbase: no guessed product


async def test_subscribes_on_connect_and_follows_interest() -> None:
    interest = SymbolInterest(["BTC"])
    recorder = TickRecorder()
    async with run_ws_simulator(heartbeat=0.05) as simulator, trio.open_nursery() as nursery:
        client = CoinbaseStream(
            interest, recorder.publish, url=simulator.url("coinbase"), settings=FAST
        )
        await nursery.start(client.run)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
            simulator.set_price("coinbase", "BTC", 68001.25)
            assert (await recorder.wait_for_price("BTC", 68001.25)).provider == "coinbase-stream"
            async with interest.hold(["ETH", "SOL"]):
                await client.wait_until(lambda: client.live_symbols() == {"BTC", "ETH", "SOL"})
            await simulator.wait_for(lambda: simulator.subscribed("coinbase") == {"BTC"})
        channels = ["ticker", "heartbeat"]
        assert simulator.messages("coinbase") == [
            {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": channels},
            {"type": "subscribe", "product_ids": ["ETH-USD", "SOL-USD"], "channels": channels},
            {"type": "unsubscribe", "product_ids": ["ETH-USD", "SOL-USD"], "channels": channels},
        ]
        assert client.malformed == 0 and client.upstream_errors == 0 and client.connects == 1
        nursery.cancel_scope.cancel()


async def test_an_invalid_product_error_refuses_it() -> None:
    interest = SymbolInterest(["BTC"])
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        simulator.refuse("coinbase", "SOL")
        client = CoinbaseStream(
            interest, TickRecorder().publish, url=simulator.url("coinbase"), settings=FAST
        )
        await nursery.start(client.run)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
            interest.acquire(["SOL"])
            await client.wait_until(lambda: bool(client.refused))
        assert client.refused == {"SOL-USD"} and client.subscribed == {"BTC"}
        assert client.connected and client.upstream_errors == 1
        nursery.cancel_scope.cancel()


# -- a product the feed refuses (issue 10, item 4) ---------------------------------------------
#
# Relied on: Coinbase's Exchange feed answers a subscribe that names a product it does not list
# with one documented error message, {"type": "error", "message": "Failed to subscribe",
# "reason": "ADA-USD is not a valid product"} (the shape of the Exchange WebSocket docs'
# subscribe section, as client libraries quote it), and then ignores the whole request, valid
# products too ("the subscribe call being ignored entirely", coinbase/coinbase-pro-node#174).
# The simulator answers that way; ADA is not listed by the simulated feed, and is refused
# explicitly as well.

RATE_LIMITED = {"type": "error", "message": "Failed to subscribe", "reason": "rate limited"}


def subscribes(simulator: Any) -> list[list[str]]:
    return [
        m["product_ids"]
        for m in simulator.messages("coinbase")
        if isinstance(m, dict) and m.get("type") == "subscribe"
    ]


async def test_a_refused_product_is_dropped_reported_and_not_asked_for_again() -> None:
    interest = SymbolInterest(["BTC", "ETH", "ADA"])
    recorder = TickRecorder()
    reports: list[StreamHealth] = []
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        simulator.refuse("coinbase", "ADA")
        with capture_logs() as logs:
            client = CoinbaseStream(
                interest,
                recorder.publish,
                url=simulator.url("coinbase"),
                settings=FAST,
                on_health=reports.append,
            )
            await nursery.start(client.run)
            with trio.fail_after(5):
                # the others stream, although the first subscribe named ADA-USD with them
                await recorder.wait_for(lambda ticks: {t.symbol for t in ticks} == {"BTC", "ETH"})
                await client.wait_until(lambda: client.live_symbols() == {"BTC", "ETH"})
                simulator.set_price("coinbase", "ETH", 3401.5)
                await recorder.wait_for_price("ETH", 3401.5)
        assert "ADA" not in {t.symbol for t in recorder.ticks}

        # reported: on the stream's status, its health reason (the provider's stateReason), a log
        status = client.status()
        assert status.refused == ("ADA",) and status.subscribed == ("BTC", "ETH")
        assert status.state == "ONLINE" and status.state_reason is not None
        assert status.state_reason.startswith("connected; refused by the exchange: ADA")
        assert "ADA-USD is not a valid product" in status.state_reason
        assert reports[-1].state == "ONLINE" and reports[-1].reason == status.state_reason
        refused_logs = [e for e in logs if e["event"] == "stream.product_refused"]
        assert [(e["product"], e["symbol"]) for e in refused_logs] == [("ADA-USD", "ADA")]
        assert client.upstream_errors == 1

        # a reconnect subscribes to the others only
        await simulator.drop("coinbase")
        with trio.fail_after(5):
            await simulator.wait_for(lambda: simulator.connects["coinbase"] == 2)
            await client.wait_until(
                lambda: client.connects == 2 and client.live_symbols() == {"BTC", "ETH"}
            )
        assert subscribes(simulator) == [
            ["ADA-USD", "BTC-USD", "ETH-USD"],  # refused whole
            ["BTC-USD", "ETH-USD"],  # asked again at once, without ADA
            ["BTC-USD", "ETH-USD"],  # the reconnect
        ]
        assert client.upstream_errors == 1 and client.status().refused == ("ADA",)
        nursery.cancel_scope.cancel()


async def test_several_refused_products_are_dropped_one_error_at_a_time() -> None:
    # The feed names one refused product per error; each drop asks again without it.
    interest = SymbolInterest(["BTC", "ADA", "DOGE"])
    recorder = TickRecorder()
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        client = CoinbaseStream(
            interest, recorder.publish, url=simulator.url("coinbase"), settings=FAST
        )
        await nursery.start(client.run)
        with trio.fail_after(5):
            await recorder.wait_for(lambda ticks: any(t.symbol == "BTC" for t in ticks))
            await client.wait_until(lambda: client.live_symbols() == {"BTC"})
        assert subscribes(simulator) == [
            ["ADA-USD", "BTC-USD", "DOGE-USD"],
            ["BTC-USD", "DOGE-USD"],
            ["BTC-USD"],
        ]
        assert client.refused == {"ADA-USD", "DOGE-USD"} and client.upstream_errors == 2
        assert client.status().refused == ("ADA", "DOGE")
        nursery.cancel_scope.cancel()


async def test_an_error_that_names_no_product_drops_nothing() -> None:
    interest = SymbolInterest(["BTC", "ETH"])
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        client = CoinbaseStream(
            interest, TickRecorder().publish, url=simulator.url("coinbase"), settings=FAST
        )
        await nursery.start(client.run)
        with trio.fail_after(5):
            await client.wait_until(lambda: client.live_symbols() == {"BTC", "ETH"})
            simulator.send_raw("coinbase", json.dumps(RATE_LIMITED))
            while client.upstream_errors < 1:  # an error changes no state: poll
                await trio.sleep(0.01)
            assert client.refused == frozenset() and client.subscribed == {"BTC", "ETH"}
            await simulator.drop("coinbase")
            await client.wait_until(
                lambda: client.connects == 2 and client.live_symbols() == {"BTC", "ETH"}
            )
        assert subscribes(simulator) == [["BTC-USD", "ETH-USD"]] * 2
        assert client.status().state_reason == "connected"
        nursery.cancel_scope.cancel()


async def test_with_every_wanted_product_refused_it_waits_then_asks_again_later() -> None:
    settings = replace(FAST, refusal_memory=0.6)
    interest = SymbolInterest(["ADA"])
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        client = CoinbaseStream(
            interest, TickRecorder().publish, url=simulator.url("coinbase"), settings=settings
        )
        await nursery.start(client.run)
        with trio.fail_after(5):
            await client.wait_until(lambda: client.refused == {"ADA-USD"} and client.connects)
            await client.wait_until(lambda: not client.connected)
            # no reconnect loop (and no "silent for 30 s") while the refusal is remembered
            await trio.sleep(0.3)
            assert simulator.connects["coinbase"] == 1 and client.failures == 0
            # once it is forgotten, the feed is asked again (it may list the product by now)
            await simulator.wait_for(lambda: len(subscribes(simulator)) == 2)
        assert subscribes(simulator) == [["ADA-USD"], ["ADA-USD"]]
        assert simulator.connects["coinbase"] == 2
        assert client.health_state is None  # never delivered, never reported ONLINE
        nursery.cancel_scope.cancel()


async def test_the_gateway_stores_the_others_and_names_the_refused_one(
    start_gateway: StartGateway,
) -> None:
    async with run_ws_simulator() as simulator:
        simulator.refuse("coinbase", "ADA")
        coinbase = ProviderConfig(
            id="coinbase-stream",
            name="Coinbase stream",
            categories=("MARKET_DATA",),
            base_url=simulator.url("coinbase"),
            timeout_seconds=2,
        )
        running = await start_gateway(
            providers=ProvidersFile((coinbase,)), symbols=("BTC", "ETH", "ADA")
        )
        storage = running.services.storage
        with trio.fail_after(10):
            while {t.symbol for t in await storage.latest_ticks(["BTC", "ETH"])} != {"BTC", "ETH"}:
                await trio.sleep(0.05)
        stored = await storage.latest_ticks(["BTC", "ETH", "ADA"])
        assert {(t.symbol, t.provider) for t in stored} == {
            ("BTC", "coinbase-stream"),
            ("ETH", "coinbase-stream"),
        }
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as http:
            query = '{ provider(id: "coinbase-stream") { state stateReason } }'
            body = (await http.post("/graphql", json={"query": query})).json()
        provider = body["data"]["provider"]
        assert provider["state"] == "ONLINE"
        assert "refused by the exchange: ADA (" in provider["stateReason"]
        assert all("ADA-USD" not in m for m in subscribes(simulator)[1:])

"""Coinbase Exchange ticker stream: the pure parser against documented messages, then the
client against the simulated feed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from gateway.errors import UpstreamPayloadError
from gateway.sources.coinbase_stream import (
    CoinbaseStream,
    parse_coinbase_message,
    subscription_message,
)
from gateway.sources.interest import SymbolInterest
from gateway.sources.stream_parsing import IGNORED, Frame
from gateway.sources.stream_state import StreamSettings
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

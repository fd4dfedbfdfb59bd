"""Binance mini-ticker stream: the pure parser against documented frames, then the client
against the simulated combined stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from gateway.errors import UpstreamPayloadError
from gateway.sources.binance_stream import (
    BinanceStream,
    combined_stream_url,
    parse_binance_message,
    stream_name,
    subscription_message,
)
from gateway.sources.interest import SymbolInterest
from gateway.sources.stream_parsing import IGNORED, Frame
from gateway.sources.stream_state import StreamSettings
from tests.simulator.ws import TickRecorder, run_ws_simulator

NOW = datetime(2024, 3, 25, 12, 0, tzinfo=UTC)

# The documented mini-ticker (web-socket-streams.md, "Individual Symbol Mini Ticker Stream"),
# with a pair from the asset table and realistic values, wrapped as the combined stream does.
MINI_TICKER: dict[str, Any] = {
    "stream": "btcusdt@miniTicker",
    "data": {
        "e": "24hrMiniTicker",
        "E": 1711368000123,
        "s": "BTCUSDT",
        "c": "67187.34000000",
        "o": "64832.10000000",
        "h": "67500.00000000",
        "l": "64500.00000000",
        "v": "24187.50000000",
        "q": "1596312345.12000000",
    },
}

FAST = StreamSettings(
    connect_timeout=2,
    close_timeout=0.5,
    backoff_initial=0.05,
    backoff_max=0.2,
    resubscribe_delay=0.01,
    min_publish_interval=0,
)


def frame(payload: Any) -> str:
    return json.dumps(payload)


def with_data(**changes: Any) -> str:
    data = {**MINI_TICKER["data"], **changes}
    return frame({**MINI_TICKER, "data": {k: v for k, v in data.items() if v is not ...}})


def test_a_mini_ticker_becomes_a_tick() -> None:
    parsed = parse_binance_message(frame(MINI_TICKER), NOW)
    assert len(parsed.ticks) == 1
    tick = parsed.ticks[0]
    assert (tick.symbol, tick.usd, tick.provider) == ("BTC", 67187.34, "binance-stream")
    assert tick.observed_at == datetime(2024, 3, 25, 12, 0, 0, 123000, tzinfo=UTC)  # from E
    assert tick.volume_24h_usd == pytest.approx(1596312345.12)  # q: USDT, taken as USD
    assert tick.change_24h_pct == pytest.approx((67187.34 / 64832.10 - 1) * 100)
    assert tick.market_cap_usd is None
    assert parse_binance_message(frame(MINI_TICKER).encode(), NOW) == parsed  # bytes too


def test_optional_fields_may_be_absent() -> None:
    tick = parse_binance_message(with_data(E=..., o=..., q=...), NOW).ticks[0]
    assert tick.observed_at == NOW and tick.change_24h_pct is None and tick.volume_24h_usd is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # the docs' own example: a pair outside the asset table is not ours
        (
            {
                "stream": "bnbbtc@miniTicker",
                "data": {**MINI_TICKER["data"], "s": "BNBBTC", "c": "0.0025", "o": "0.0010"},
            },
            IGNORED,
        ),
        ({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "s": "BTCUSDT"}}, IGNORED),
        ({"result": None, "id": 7}, Frame(request_id=7)),
        ({"result": ["btcusdt@miniTicker"], "id": 3}, Frame(request_id=3)),
        (
            {"error": {"code": 2, "msg": "Invalid request: invalid stream name"}, "id": 9},
            Frame(error="error 2: Invalid request: invalid stream name", request_id=9),
        ),
        (
            {"code": 0, "msg": "Unknown property", "id": 4},
            Frame(error="error 0: Unknown property", request_id=4),
        ),
        ({"e": "serverShutdown", "E": 1711368000123}, Frame(reconnect=True)),
        (
            {"stream": "btcusdt@miniTicker", "data": {"e": "serverShutdown", "E": 1}},
            Frame(reconnect=True),
        ),
    ],
)
def test_control_messages(payload: Any, expected: Frame) -> None:
    assert parse_binance_message(frame(payload), NOW) == expected


def test_a_raw_stream_event_is_read_too() -> None:
    assert parse_binance_message(frame(MINI_TICKER["data"]), NOW).ticks[0].usd == 67187.34


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '{"stream": "btcusdt@miniTicker", "data": {"c": NaN}}',
        frame([MINI_TICKER]),
        frame({"stream": "btcusdt@miniTicker"}),
        frame({"stream": 5, "data": MINI_TICKER["data"]}),
        frame({"hello": "world"}),
        with_data(s=None),
        with_data(c="abc"),
        with_data(c="0"),
        with_data(c="-67187.34"),
        with_data(c=...),
        with_data(E="yesterday"),
        with_data(E=-1),
        with_data(o="0"),
        with_data(q="-5"),
        with_data(q="lots"),
        with_data(s="ETHUSDT"),  # the stream says BTC, the event says ETH
    ],
)
def test_malformed_frames_are_refused_whole(message: str) -> None:
    with pytest.raises(UpstreamPayloadError) as error:
        parse_binance_message(message, NOW)
    assert error.value.provider == "binance-stream"


def test_request_messages_and_urls() -> None:
    assert stream_name("BTCUSDT") == "btcusdt@miniTicker"
    base = "wss://stream.binance.com:9443/stream"
    streams = ["btcusdt@miniTicker", "ethusdt@miniTicker"]
    assert combined_stream_url(base, streams) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@miniTicker/ethusdt@miniTicker"
    )
    assert combined_stream_url(base, []) == base
    assert json.loads(subscription_message(streams, 1, subscribe=True)) == {
        "method": "SUBSCRIBE",
        "params": streams,
        "id": 1,
    }
    assert json.loads(subscription_message(streams[:1], 2, subscribe=False))["method"] == (
        "UNSUBSCRIBE"
    )
    client = BinanceStream(SymbolInterest(), TickRecorder().publish)
    assert client.url == base
    assert client.upstream_id("btc") == "btcusdt@miniTicker"
    assert client.upstream_id("MATIC") is None  # delisted on Binance: no guessed pair
    assert client.upstream_id("NOPE") is None


async def test_streams_from_the_url_then_follows_interest_with_requests() -> None:
    interest = SymbolInterest(["BTC", "ETH"])
    recorder = TickRecorder()
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        client = BinanceStream(
            interest, recorder.publish, url=simulator.url("binance"), settings=FAST
        )
        await nursery.start(client.run)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.live_symbols() == {"BTC", "ETH"})
            assert simulator.messages("binance") == []  # the URL subscribed them
            simulator.set_price("binance", "ETH", 3512.5)
            tick = await recorder.wait_for_price("ETH", 3512.5)
            assert tick.provider == "binance-stream"
            async with interest.hold(["SOL"]):
                await client.wait_until(lambda: client.is_live("SOL"))
            await simulator.wait_for(lambda: "SOL" not in simulator.subscribed("binance"))
            await simulator.ping("binance")  # a WebSocket ping is answered
        assert simulator.messages("binance") == [
            {"method": "SUBSCRIBE", "params": ["solusdt@miniTicker"], "id": 2},
            {"method": "UNSUBSCRIBE", "params": ["solusdt@miniTicker"], "id": 3},
        ]
        assert client.connects == 1 and client.malformed == 0
        nursery.cancel_scope.cancel()


async def test_an_error_answer_refuses_that_requests_streams() -> None:
    interest = SymbolInterest(["BTC"])
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        simulator.refuse("binance", "BNB")
        client = BinanceStream(
            interest, TickRecorder().publish, url=simulator.url("binance"), settings=FAST
        )
        await nursery.start(client.run)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
            interest.acquire(["BNB"])
            await client.wait_until(lambda: bool(client.refused))
        assert client.refused == {"bnbusdt@miniTicker"} and not client.is_live("BNB")
        assert client.upstream_errors == 1 and client.connected
        nursery.cancel_scope.cancel()


async def test_server_shutdown_means_reconnect_now() -> None:
    async with run_ws_simulator() as simulator, trio.open_nursery() as nursery:
        client = BinanceStream(
            SymbolInterest(["BTC"]),
            TickRecorder().publish,
            url=simulator.url("binance"),
            settings=FAST,
        )
        await nursery.start(client.run)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
            simulator.send_raw("binance", frame({"e": "serverShutdown", "E": 1711368000123}))
            await client.wait_until(lambda: client.connects == 2 and client.is_live("BTC"))
        assert "reconnect" in (client.last_error or "")
        nursery.cancel_scope.cancel()

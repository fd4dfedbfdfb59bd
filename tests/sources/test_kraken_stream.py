"""Kraken v2 ticker stream: the pure parser against documented messages, then the client
against the simulated feed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from gateway.errors import UpstreamPayloadError
from gateway.sources.interest import SymbolInterest
from gateway.sources.kraken_stream import (
    KrakenStream,
    parse_kraken_message,
    ping_message,
    subscription_message,
)
from gateway.sources.stream_parsing import IGNORED, Frame
from gateway.sources.stream_state import StreamSettings
from tests.simulator.ws import TickRecorder, run_ws_simulator

NOW = datetime(2024, 3, 25, 12, 0, tzinfo=UTC)

# The documented snapshot (websocket-v2/ticker), verbatim.
DOC_SNAPSHOT: dict[str, Any] = {
    "channel": "ticker",
    "type": "snapshot",
    "data": [
        {
            "symbol": "ALGO/USD",
            "bid": 0.10025,
            "bid_qty": 740.0,
            "ask": 0.10036,
            "ask_qty": 1361.44813783,
            "last": 0.10035,
            "volume": 997038.98383185,
            "vwap": 0.10148,
            "low": 0.09979,
            "high": 0.10285,
            "change": -0.00017,
            "change_pct": -0.17,
            "timestamp": "2023-09-25T09:04:31.742648Z",
        }
    ],
}
BTC_ENTRY: dict[str, Any] = {
    **DOC_SNAPSHOT["data"][0],
    "symbol": "BTC/USD",
    "bid": 67187.3,
    "ask": 67187.4,
    "last": 67187.4,
    "volume": 2411.87,
    "vwap": 66012.5,
    "low": 64500.1,
    "high": 67500.0,
    "change": 2355.3,
    "change_pct": 3.63,
}

FAST = StreamSettings(
    connect_timeout=2,
    close_timeout=0.5,
    backoff_initial=0.05,
    backoff_max=0.2,
    resubscribe_delay=0.01,
    min_publish_interval=0,
)


def update(*entries: dict[str, Any], kind: str = "update") -> str:
    return json.dumps({"channel": "ticker", "type": kind, "data": list(entries)})


def btc(**changes: Any) -> dict[str, Any]:
    merged = {**BTC_ENTRY, **changes}
    return {k: v for k, v in merged.items() if v is not ...}


def test_a_ticker_update_becomes_ticks() -> None:
    eth = btc(symbol="ETH/USD", last=3454.78, volume=None, timestamp=...)
    gbp = btc(symbol="MATIC/GBP", last=0.74)  # not a USD market of the asset table
    parsed = parse_kraken_message(update(btc(), gbp, eth), NOW)
    assert [t.symbol for t in parsed.ticks] == ["BTC", "ETH"]
    tick = parsed.ticks[0]
    assert (tick.usd, tick.provider, tick.change_24h_pct) == (67187.4, "kraken-stream", 3.63)
    assert tick.observed_at == datetime(2023, 9, 25, 9, 4, 31, 742648, tzinfo=UTC)
    assert tick.volume_24h_usd == pytest.approx(2411.87 * 66012.5)  # volume x vwap = USD value
    assert parsed.ticks[1].observed_at == NOW and parsed.ticks[1].volume_24h_usd is None


def test_the_documented_snapshot_parses() -> None:
    (tick,) = parse_kraken_message(json.dumps(DOC_SNAPSHOT), NOW).ticks
    assert (tick.symbol, tick.usd, tick.change_24h_pct) == ("ALGO", 0.10035, -0.17)
    assert tick.observed_at == datetime(2023, 9, 25, 9, 4, 31, 742648, tzinfo=UTC)
    assert tick.volume_24h_usd == pytest.approx(997038.98383185 * 0.10148)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"channel": "heartbeat"}, IGNORED),
        (
            {
                "channel": "status",
                "type": "update",
                "data": [
                    {
                        "api_version": "v2",
                        "connection_id": 12893948494633069000,
                        "system": "online",
                        "version": "2.0.0",
                    }
                ],
            },
            IGNORED,
        ),
        (
            {
                "method": "pong",
                "req_id": 101,
                "time_in": "2023-09-24T14:10:23.799685Z",
                "time_out": "2023-09-24T14:10:23.799703Z",
            },
            IGNORED,
        ),
        (
            {
                "method": "subscribe",
                "result": {"channel": "ticker", "snapshot": True, "symbol": "BTC/USD"},
                "success": True,
                "time_in": "2023-09-25T09:04:31.742599Z",
                "time_out": "2023-09-25T09:04:31.742648Z",
                "req_id": 3,
            },
            IGNORED,
        ),
        (
            {
                "error": "Currency pair not supported XYZ/USD",
                "method": "subscribe",
                "success": False,
                "symbol": "XYZ/USD",
                "req_id": 3,
            },
            Frame(
                error="subscribe failed: Currency pair not supported XYZ/USD",
                refused=("XYZ/USD",),
            ),
        ),
        (
            {"error": "Rate limit exceeded", "method": "subscribe", "success": False, "req_id": 4},
            Frame(error="subscribe failed: Rate limit exceeded", request_id=4),
        ),
        ({"channel": "book", "type": "update", "data": [{"symbol": "BTC/USD"}]}, IGNORED),
    ],
)
def test_control_messages(payload: Any, expected: Frame) -> None:
    assert parse_kraken_message(json.dumps(payload), NOW) == expected


@pytest.mark.parametrize(
    "message",
    [
        "pong",
        json.dumps([0, {"c": ["5525.1", "0.1"]}, "ticker", "XBT/USD"]),  # a v1 message
        json.dumps({"hello": 1}),
        json.dumps({"channel": 42}),
        json.dumps({"channel": "ticker", "type": "delta", "data": []}),
        json.dumps({"channel": "ticker", "type": "update", "data": {"symbol": "BTC/USD"}}),
        json.dumps({"channel": "ticker", "type": "update", "data": ["BTC/USD"]}),
        update(btc(symbol=None)),
        update(btc(last=...)),
        update(btc(last=0)),
        update(btc(last="n/a")),
        update(btc(timestamp="2023-09-25")),
        update(btc(change_pct="lots")),
        update(btc(volume=-1)),
        update(btc(vwap=-0.5)),
        update(btc(), btc(symbol="ETH/USD", last=-1)),  # one bad entry spoils the frame
    ],
)
def test_malformed_messages_are_refused_whole(message: str) -> None:
    with pytest.raises(UpstreamPayloadError) as error:
        parse_kraken_message(message, NOW)
    assert error.value.provider == "kraken-stream"


def test_request_messages_and_names() -> None:
    assert json.loads(subscription_message(["BTC/USD", "ETH/USD"], 3, subscribe=True)) == {
        "method": "subscribe",
        "params": {"channel": "ticker", "symbol": ["BTC/USD", "ETH/USD"]},
        "req_id": 3,
    }
    assert json.loads(subscription_message(["BTC/USD"], 4, subscribe=False))["method"] == (
        "unsubscribe"
    )
    assert json.loads(ping_message(5)) == {"method": "ping", "req_id": 5}
    client = KrakenStream(SymbolInterest(), TickRecorder().publish)
    assert client.url == "wss://ws.kraken.com/v2" and client.keepalive
    assert client.upstream_id("btc") == "BTC/USD"  # v2 spelling, not REST's XBTUSD
    assert client.upstream_id("BNB") is None  # not traded on Kraken: no guessed pair
    assert parse_kraken_message(update(btc(symbol="XBT/USD")), NOW) == Frame()  # v1 name


async def test_snapshot_then_updates_and_interest_changes() -> None:
    interest = SymbolInterest(["ETH"])
    recorder = TickRecorder()
    settings = replace(FAST, keepalive_interval=0.05)
    async with run_ws_simulator(heartbeat=0.05) as simulator, trio.open_nursery() as nursery:
        client = KrakenStream(
            interest, recorder.publish, url=simulator.url("kraken"), settings=settings
        )
        await nursery.start(client.run)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("ETH"))
            simulator.set_price("kraken", "ETH", 3600.5)
            assert (await recorder.wait_for_price("ETH", 3600.5)).provider == "kraken-stream"
            with interest.hold(["BTC"]):
                await client.wait_until(lambda: client.is_live("BTC"))
            await simulator.wait_for(lambda: simulator.subscribed("kraken") == {"ETH"})
            await simulator.wait_for(
                lambda: any(m.get("method") == "ping" for m in simulator.messages("kraken"))
            )
        requests = [m for m in simulator.messages("kraken") if m.get("method") != "ping"]
        assert [(m["method"], m["params"]["symbol"]) for m in requests] == [
            ("subscribe", ["ETH/USD"]),
            ("subscribe", ["BTC/USD"]),
            ("unsubscribe", ["BTC/USD"]),
        ]
        ids = [m["req_id"] for m in simulator.messages("kraken")]
        assert ids == sorted(set(ids))  # every request has its own id
        assert client.malformed == 0 and client.upstream_errors == 0 and client.connects == 1
        nursery.cancel_scope.cancel()

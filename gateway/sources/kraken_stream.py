"""Kraken spot live prices: the `ticker` channel of WebSocket API v2.

Docs: https://docs.kraken.com/api/docs/websocket-v2/ticker (and ping, heartbeat, status).
Requests are `{"method": ..., "params": {...}, "req_id": n}`::

    {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"]}, "req_id": 3}
    {"method": "unsubscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"]}, "req_id": 4}
    {"method": "ping", "req_id": 5}                          -> {"method": "pong", "req_id": 5, ...}

Each symbol of a (un)subscribe is acknowledged on its own: `{"method": "subscribe", "result":
{"channel": "ticker", "symbol": "BTC/USD", ...}, "success": true, "req_id": 3, ...}`, or
`{"method": "subscribe", "success": false, "error": "Currency pair not supported XYZ/USD",
"symbol": "XYZ/USD", "req_id": 3, ...}`. Data comes as a snapshot on subscribing, then an
update on every trade, both with the same schema::

    {"channel": "ticker", "type": "snapshot", "data": [{"symbol": "ALGO/USD", "bid": 0.10025,
     "bid_qty": 740.0, "ask": 0.10036, "ask_qty": 1361.44813783, "last": 0.10035,
     "volume": 997038.98383185, "vwap": 0.10148, "low": 0.09979, "high": 0.10285,
     "change": -0.00017, "change_pct": -0.17, "timestamp": "2023-09-25T09:04:31.742648Z"}]}

`last` is the price, `timestamp` (when present) the observation time, `change_pct` the 24-hour
change. `volume` is in the base currency and `vwap` is its volume-weighted average price, so
`volume * vwap` is exactly the 24-hour traded value in USD. `{"channel": "heartbeat"}` arrives
about once a second when nothing else does, and `{"channel": "status", ...}` on connecting;
the client also sends an application-level `ping` every `keepalive_interval`. v2 spells
Bitcoin `BTC` (v1 and REST say `XBT`); the v2 names come from the asset table
(`gateway.symbols.kraken_ws_symbol`), all USD markets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick
from gateway.sources.stream_parsing import (
    IGNORED,
    Frame,
    decode_json,
    optional_finite,
    positive_price,
    rfc3339,
)
from gateway.sources.streams import StreamClient
from gateway.symbols import kraken_ws_symbol, symbol_for_kraken_ws

__all__ = [
    "DEFAULT_URL",
    "PROVIDER_ID",
    "KrakenStream",
    "parse_kraken_message",
    "ping_message",
    "subscription_message",
]

PROVIDER_ID: Final = "kraken-stream"
DEFAULT_URL: Final = "wss://ws.kraken.com/v2"
ENDPOINT: Final = "ticker"

_Fail = Callable[[str], UpstreamPayloadError]


def subscription_message(pairs: Sequence[str], request_id: int, *, subscribe: bool) -> str:
    return json.dumps(
        {
            "method": "subscribe" if subscribe else "unsubscribe",
            "params": {"channel": "ticker", "symbol": list(pairs)},
            "req_id": request_id,
        },
        separators=(",", ":"),
    )


def ping_message(request_id: int) -> str:
    return json.dumps({"method": "ping", "req_id": request_id}, separators=(",", ":"))


def parse_kraken_message(
    message: str | bytes, received_at: datetime, *, provider: str = PROVIDER_ID
) -> Frame:
    """One v2 message -> Frame; UpstreamPayloadError if malformed.

    Heartbeats, status, pongs, successful acks and other channels are ignored. A ticker frame
    is accepted whole or not at all: every entry needs a string `symbol` and, for a known pair,
    a positive `last`; `timestamp`, `change_pct`, `volume` and `vwap` may be absent but must be
    valid if present.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    payload = decode_json(message, provider, ENDPOINT)
    if not isinstance(payload, dict):
        raise fail(f"expected an object, got {type(payload).__name__}")
    if "channel" in payload:
        channel = payload["channel"]
        if channel == "ticker":
            return _ticker(payload, received_at, provider, fail)
        if not isinstance(channel, str):
            raise fail("'channel' is not a string")
        return IGNORED  # heartbeat, status, channels this client does not use
    if "method" in payload:
        return _answer(payload)
    raise fail("neither a channel message nor an answer to a request")


def _answer(payload: dict[str, Any]) -> Frame:
    if payload.get("success") is not False or payload.get("method") == "pong":
        return IGNORED
    error = f"{payload.get('method')} failed: {payload.get('error')}"
    pair = payload.get("symbol")
    if pair is None and isinstance(payload.get("result"), dict):
        pair = payload["result"].get("symbol")
    if payload.get("method") == "subscribe" and isinstance(pair, str):
        return Frame(error=error, refused=(pair,))
    request_id = payload.get("req_id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        request_id = None
    # The error does not say which symbol: it answers the whole request.
    return Frame(error=error, request_id=request_id)


def _ticker(payload: dict[str, Any], received_at: datetime, provider: str, fail: _Fail) -> Frame:
    if payload.get("type") not in ("snapshot", "update"):
        raise fail(f"ticker message of type {payload.get('type')!r}")
    data = payload.get("data")
    if not isinstance(data, list):
        raise fail("ticker message without a 'data' array")
    ticks: list[PriceTick] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise fail(f"data[{index}] is not an object")
        pair = entry.get("symbol")
        if not isinstance(pair, str):
            raise fail(f"data[{index}] without a string 'symbol'")
        symbol = symbol_for_kraken_ws(pair)
        if symbol is None:
            continue
        price = positive_price(entry.get("last"))
        if price is None:
            raise fail(f"{pair}: last {entry.get('last')!r} is not a positive number")
        observed_at = received_at
        if entry.get("timestamp") is not None:
            moment = rfc3339(entry["timestamp"])
            if moment is None:
                raise fail(f"{pair}: invalid timestamp {entry['timestamp']!r}")
            observed_at = moment
        ok, change = optional_finite(entry.get("change_pct"))
        if not ok:
            raise fail(f"{pair}: invalid change_pct {entry.get('change_pct')!r}")
        ok, volume = optional_finite(entry.get("volume"))
        if not ok or (volume is not None and volume < 0):
            raise fail(f"{pair}: invalid volume {entry.get('volume')!r}")
        ok, vwap = optional_finite(entry.get("vwap"))
        if not ok or (vwap is not None and vwap < 0):
            raise fail(f"{pair}: invalid vwap {entry.get('vwap')!r}")
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=price,
                provider=provider,
                observed_at=observed_at,
                volume_24h_usd=volume * vwap if volume is not None and vwap is not None else None,
                change_24h_pct=change,
            )
        )
    return Frame(ticks=tuple(ticks))


class KrakenStream(StreamClient):
    """Tickers of every interest symbol with a Kraken USD pair, kept alive with pings."""

    name = PROVIDER_ID
    default_url = DEFAULT_URL
    keepalive = True

    def upstream_id(self, symbol: str) -> str | None:
        return kraken_ws_symbol(symbol)

    def subscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        return [subscription_message(ids, request_id, subscribe=True)]

    def unsubscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        return [subscription_message(ids, request_id, subscribe=False)]

    def keepalive_message(self, request_id: int) -> str | None:
        return ping_message(request_id)

    def parse(self, message: str | bytes, received_at: datetime) -> Frame:
        return parse_kraken_message(message, received_at, provider=self.provider_id)

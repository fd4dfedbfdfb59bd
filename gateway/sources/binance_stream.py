"""Binance spot live prices: the `<symbol>@miniTicker` streams on the combined endpoint.

Docs: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams. The client
connects to `/stream?streams=btcusdt@miniTicker/ethusdt@miniTicker` (the interest at connect
time) and follows later changes with live requests::

    {"method": "SUBSCRIBE", "params": ["solusdt@miniTicker"], "id": 7}
    {"method": "UNSUBSCRIBE", "params": ["solusdt@miniTicker"], "id": 8}

each answered with `{"result": null, "id": <the request's id>}` or, on error, with
`{"error": {"code": 2, "msg": "..."}, "id": 7}` (older servers: `{"code": 2, "msg": "...",
"id": 7}`). Events arrive wrapped as `{"stream": "btcusdt@miniTicker", "data": {...}}`; a
mini-ticker is, every second while the symbol trades::

    {"e": "24hrMiniTicker", "E": 1672515782136, "s": "BNBBTC", "c": "0.0025", "o": "0.0010",
     "h": "0.0025", "l": "0.0010", "v": "10000", "q": "18"}

`c` (last price) is the price, `E` (event time, ms) the observation time, `q` (24-hour quote
volume) the volume and `(c - o) / o` the 24-hour change (Binance's window is rolling, like
the REST ticker's). Binance sends WebSocket-level pings every 20 s, which trio-websocket
answers; `{"e": "serverShutdown"}` announces a disconnect, and the client reconnects at once.
At most 5 incoming messages per second per connection and 1024 streams are allowed; the
client's `resubscribe_delay` and `max_subscriptions` keep well inside both.

Every pair is quoted in USDT, taken as USD (as the REST source does): USDT trades within a
fraction of a percent of a dollar, far less than the spread between providers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick
from gateway.sources.base import epoch_millis
from gateway.sources.stream_parsing import (
    IGNORED,
    Frame,
    decode_json,
    optional_finite,
    positive_price,
)
from gateway.sources.streams import StreamClient
from gateway.symbols import binance_pair, symbol_for_binance_pair

__all__ = [
    "DEFAULT_URL",
    "PROVIDER_ID",
    "BinanceStream",
    "combined_stream_url",
    "parse_binance_message",
    "stream_name",
    "subscription_message",
]

PROVIDER_ID: Final = "binance-stream"
DEFAULT_URL: Final = "wss://stream.binance.com:9443/stream"
ENDPOINT: Final = "miniTicker"
_SUFFIX: Final = "@miniTicker"

_Fail = Callable[[str], UpstreamPayloadError]


def stream_name(pair: str) -> str:
    """`BTCUSDT` -> `btcusdt@miniTicker` (stream names are lower case)."""
    return pair.lower() + _SUFFIX


def combined_stream_url(base_url: str, streams: Sequence[str]) -> str:
    """The combined-stream URL that starts with `streams` already subscribed."""
    if not streams:
        return base_url
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}streams={'/'.join(streams)}"


def subscription_message(streams: Sequence[str], request_id: int, *, subscribe: bool) -> str:
    method = "SUBSCRIBE" if subscribe else "UNSUBSCRIBE"
    return json.dumps(
        {"method": method, "params": list(streams), "id": request_id}, separators=(",", ":")
    )


def parse_binance_message(
    message: str | bytes, received_at: datetime, *, provider: str = PROVIDER_ID
) -> Frame:
    """One combined-stream message -> Frame; UpstreamPayloadError if malformed.

    Mini-tickers of pairs outside the asset table, and events of other streams, are ignored.
    A mini-ticker must have a positive `c`; `E`, `o` and `q` may be absent but if present must
    be valid. The stream name must match the event's pair.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    payload = decode_json(message, provider, ENDPOINT)
    if not isinstance(payload, dict):
        raise fail(f"expected an object, got {type(payload).__name__}")
    request_id = payload.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        request_id = None
    if "stream" in payload:
        stream, data = payload.get("stream"), payload.get("data")
        if not isinstance(stream, str) or not isinstance(data, dict):
            raise fail("a stream event needs a string 'stream' and an object 'data'")
        return _event(data, stream, received_at, provider, fail)
    if "error" in payload:
        error = payload["error"]
        text = _error_text(error) if isinstance(error, dict) else str(error)
        return Frame(error=text, request_id=request_id)
    if "code" in payload and "msg" in payload:
        return Frame(error=_error_text(payload), request_id=request_id)
    if "result" in payload and "id" in payload:
        return Frame(request_id=request_id)
    if "e" in payload:  # a raw (unwrapped) event, as on /ws
        return _event(payload, None, received_at, provider, fail)
    raise fail("neither a stream event nor an answer to a request")


def _error_text(error: dict[str, Any]) -> str:
    return f"error {error.get('code')}: {error.get('msg')}"


def _event(
    data: dict[str, Any],
    stream: str | None,
    received_at: datetime,
    provider: str,
    fail: _Fail,
) -> Frame:
    event = data.get("e")
    if event == "serverShutdown":
        return Frame(reconnect=True)
    if event != "24hrMiniTicker":
        return IGNORED
    pair = data.get("s")
    if not isinstance(pair, str):
        raise fail("mini-ticker without a string 's'")
    if stream is not None and stream.lower() != stream_name(pair).lower():
        raise fail(f"stream {stream!r} carries an event for {pair!r}")
    symbol = symbol_for_binance_pair(pair)
    if symbol is None:
        return IGNORED
    price = positive_price(data.get("c"))
    if price is None:
        raise fail(f"{pair}: 'c' {data.get('c')!r} is not a positive price")
    observed_at = received_at
    if data.get("E") is not None:
        event_time = epoch_millis(data["E"])
        if event_time is None:
            raise fail(f"{pair}: invalid event time {data['E']!r}")
        observed_at = event_time
    change: float | None = None
    if data.get("o") is not None:
        open_price = positive_price(data["o"])
        if open_price is None:
            raise fail(f"{pair}: 'o' {data['o']!r} is not a positive price")
        change = (price - open_price) / open_price * 100
    ok, volume = optional_finite(data.get("q"))
    if not ok or (volume is not None and volume < 0):
        raise fail(f"{pair}: invalid quote volume {data.get('q')!r}")
    tick = PriceTick(
        symbol=symbol,
        usd=price,
        provider=provider,
        observed_at=observed_at,
        volume_24h_usd=volume,
        change_24h_pct=change,
    )
    return Frame(ticks=(tick,))


class BinanceStream(StreamClient):
    """Mini-tickers of every interest symbol that has a Binance USDT pair."""

    name = PROVIDER_ID
    default_url = DEFAULT_URL

    def upstream_id(self, symbol: str) -> str | None:
        pair = binance_pair(symbol)
        return stream_name(pair) if pair else None

    def connect_url(self, ids: Sequence[str]) -> str:
        return combined_stream_url(self.url, ids)

    def initial_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        return []  # the connect URL already names them

    def subscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        return [subscription_message(ids, request_id, subscribe=True)]

    def unsubscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        return [subscription_message(ids, request_id, subscribe=False)]

    def parse(self, message: str | bytes, received_at: datetime) -> Frame:
        return parse_binance_message(message, received_at, provider=self.provider_id)

"""Coinbase Exchange live prices: the `ticker` channel of the public market data feed.

Docs: https://docs.cdp.coinbase.com/exchange/websocket-feed/overview (and the channels page).
Every message is a JSON object with a `type`; new types may appear at any time and clients are
expected to ignore the ones they do not know. A connection must subscribe within 5 seconds or
it is closed::

    {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]}
    {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]}

Each (un)subscribe is answered with the full current subscription (`{"type": "subscriptions",
"channels": [{"name": "ticker", "product_ids": [...]}, ...]}`) or with
`{"type": "error", "message": "Failed to subscribe", "reason": "XYZ-USD is not a valid product"}`.
Such an error makes the feed ignore the *whole* request, the valid products in it too (as the
maintainers of Coinbase's own Node client put it: "the subscribe call being ignored entirely",
coinbase/coinbase-pro-node#174), so the client drops the product it names, asks again for the
others at once (`refusal_fails_request`), and does not ask for it again for a while, not even
on a reconnect (see `gateway.sources.streams`).
A ticker is sent for every match (and once on subscribing)::

    {"type": "ticker", "sequence": 37475248783, "product_id": "ETH-USD", "price": "1285.22",
     "open_24h": "1310.79", "volume_24h": "245532.79269678", "low_24h": "1280.52",
     "high_24h": "1313.8", "volume_30d": "9788783.60117027", "best_bid": "1285.04",
     "best_ask": "1285.27", "side": "buy", "time": "2022-10-19T23:28:22.061769Z",
     "trade_id": 370843401, "last_size": "11.4396987"}

`price` is the price, `time` the observation time, `(price - open_24h) / open_24h` the 24-hour
change. `volume_24h` is in the base currency, so no USD volume is reported (we never make one
up). The `heartbeat` channel (one message per product per second) is subscribed too: it keeps a
quiet product's connection from looking silent to the watchdog. Product names come from the
asset table (`gateway.symbols.coinbase_product`); all are real USD markets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick
from gateway.sources.stream_parsing import IGNORED, Frame, decode_json, positive_price, rfc3339
from gateway.sources.streams import StreamClient
from gateway.symbols import coinbase_product, symbol_for_coinbase_product

__all__ = [
    "CHANNELS",
    "DEFAULT_URL",
    "PROVIDER_ID",
    "CoinbaseStream",
    "parse_coinbase_message",
    "subscription_message",
]

PROVIDER_ID: Final = "coinbase-stream"
DEFAULT_URL: Final = "wss://ws-feed.exchange.coinbase.com"
ENDPOINT: Final = "ticker"
CHANNELS: Final = ("ticker", "heartbeat")

_Fail = Callable[[str], UpstreamPayloadError]


def subscription_message(
    products: Sequence[str], *, subscribe: bool, channels: Sequence[str] = CHANNELS
) -> str:
    return json.dumps(
        {
            "type": "subscribe" if subscribe else "unsubscribe",
            "product_ids": list(products),
            "channels": list(channels),
        },
        separators=(",", ":"),
    )


def parse_coinbase_message(
    message: str | bytes, received_at: datetime, *, provider: str = PROVIDER_ID
) -> Frame:
    """One feed message -> Frame; UpstreamPayloadError if malformed.

    Unknown types, heartbeats and subscription confirmations are ignored; tickers of products
    outside the table too. A ticker must carry a positive `price`; `time` and `open_24h` may
    be absent but must be valid if present.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    payload = decode_json(message, provider, ENDPOINT)
    if not isinstance(payload, dict):
        raise fail(f"expected an object, got {type(payload).__name__}")
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise fail("message without a string 'type'")
    if kind == "ticker":
        return _ticker(payload, received_at, provider, fail)
    if kind == "error":
        text = f"{payload.get('message')}: {payload.get('reason')}"
        return Frame(error=text, refused=_refused_product(payload.get("reason")))
    return IGNORED  # subscriptions, heartbeat, and types this client does not use


def _refused_product(reason: Any) -> tuple[str, ...]:
    # "XYZ-USD is not a valid product": the only error that names what it refused.
    if isinstance(reason, str) and reason.endswith(" is not a valid product"):
        product = reason.split(" ", 1)[0]
        return (product,) if product else ()
    return ()


def _ticker(payload: dict[str, Any], received_at: datetime, provider: str, fail: _Fail) -> Frame:
    product = payload.get("product_id")
    if not isinstance(product, str):
        raise fail("ticker without a string 'product_id'")
    symbol = symbol_for_coinbase_product(product)
    if symbol is None:
        return IGNORED
    price = positive_price(payload.get("price"))
    if price is None:
        raise fail(f"{product}: price {payload.get('price')!r} is not a positive number")
    observed_at = received_at
    if payload.get("time") is not None:
        moment = rfc3339(payload["time"])
        if moment is None:
            raise fail(f"{product}: invalid time {payload['time']!r}")
        observed_at = moment
    change: float | None = None
    if payload.get("open_24h") is not None:
        open_price = positive_price(payload["open_24h"])
        if open_price is None:
            raise fail(f"{product}: open_24h {payload['open_24h']!r} is not a positive number")
        change = (price - open_price) / open_price * 100
    tick = PriceTick(
        symbol=symbol,
        usd=price,
        provider=provider,
        observed_at=observed_at,
        change_24h_pct=change,
    )
    return Frame(ticks=(tick,))


class CoinbaseStream(StreamClient):
    """Tickers (and heartbeats) of every interest symbol with a Coinbase USD product."""

    name = PROVIDER_ID
    default_url = DEFAULT_URL
    refusal_fails_request = True  # one invalid product fails the whole subscribe

    def upstream_id(self, symbol: str) -> str | None:
        return coinbase_product(symbol)

    def subscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        return [subscription_message(ids, subscribe=True)]

    def unsubscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        return [subscription_message(ids, subscribe=False)]

    def parse(self, message: str | bytes, received_at: datetime) -> Frame:
        return parse_coinbase_message(message, received_at, provider=self.provider_id)

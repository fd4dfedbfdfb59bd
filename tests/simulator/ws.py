"""A loopback stand-in for the exchanges' public WebSocket feeds, for tests only.

One trio-websocket server on 127.0.0.1, port 0, speaks three dialects under their own paths::

    /binance/stream   combined stream: ?streams=btcusdt@miniTicker/..., SUBSCRIBE/UNSUBSCRIBE
                      with ids, {"stream": ..., "data": {"e": "24hrMiniTicker", ...}} events
    /coinbase         Exchange feed: subscribe/unsubscribe with product_ids and channels,
                      "subscriptions" confirmations, "error" messages, "ticker" messages
    /kraken/v2        v2: a status message on connect, per-symbol acks, ticker snapshot on
                      subscribing then updates, ping/pong, heartbeat channel

Frames have the documented shapes (see the exchange modules in gateway/sources/). On
subscribing, a connection is sent the current ticker of each new symbol (as every exchange
does, roughly); `set_price(exchange, symbol, usd)` then pushes an update to every connection
subscribed to it. Misbehaviour on demand: `drop` (close, or `abort=True`: the TCP connection
just ends), `silence` (current connections send nothing more, not even acks), `send_raw`
(any text frame, e.g. a malformed one), `refuse` (subscriptions to a symbol are answered with
the exchange's error), `reject_connections` (the next N handshakes get HTTP 503), and
optional heartbeats.

Like tests/simulator/rest.py, it keeps its *own* table of exchange names, so a wrong
entry in the gateway's tables shows up as a test failure instead of being mirrored here.

Bounded: each connection's outbox holds 256 frames (more are dropped and counted), the log of
received client messages keeps the last 1000. Leaving `run_ws_simulator()` cancels every
connection at once; trio-websocket closes each socket, so shutdown takes milliseconds.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import trio
from trio.lowlevel import ParkingLot
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from gateway.models import PriceTick

__all__ = ["EXCHANGES", "Exchange", "TickRecorder", "WsSimulator", "run_ws_simulator"]

Exchange = Literal["binance", "coinbase", "kraken"]
EXCHANGES: tuple[Exchange, ...] = ("binance", "coinbase", "kraken")
_PATHS: dict[str, Exchange] = {
    "/binance/stream": "binance",
    "/coinbase": "coinbase",
    "/kraken/v2": "kraken",
}

# Each exchange's own name for an asset's USD (Binance: USDT) market.
_NAMES: dict[Exchange, dict[str, str]] = {
    "binance": {"BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT", "BNB": "BNBUSDT"},
    "coinbase": {"BTC": "BTC-USD", "ETH": "ETH-USD", "SOL": "SOL-USD"},
    "kraken": {"BTC": "BTC/USD", "ETH": "ETH/USD", "SOL": "SOL/USD"},
}
# Opening prices of the 24-hour window (late March 2024) and 24-hour base volumes.
_OPEN: dict[str, float] = {"BTC": 64832.10, "ETH": 3352.45, "SOL": 172.44, "BNB": 568.27}
_VOLUME: dict[str, float] = {"BTC": 24187.5, "ETH": 301442.1, "SOL": 4921734.0, "BNB": 1.2e6}

OUTBOX = 256
RECEIVED = 1000


def _binance_stream(pair: str) -> str:
    return pair.lower() + "@miniTicker"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dump(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


@dataclass(eq=False)
class _Connection:
    exchange: Exchange
    number: int
    ws: WebSocketConnection
    send: trio.MemorySendChannel[str]
    receive: trio.MemoryReceiveChannel[str]
    subscribed: set[str] = field(default_factory=set)  # canonical symbols
    silent: bool = False
    dropped: int = 0
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class WsSimulator:
    """The running simulator: URLs, prices, misbehaviour switches, what clients sent."""

    def __init__(self, *, heartbeat: float | None = None) -> None:
        self.heartbeat = heartbeat
        self.port = 0
        self.prices: dict[Exchange, dict[str, float]] = {
            ex: {symbol: _OPEN[symbol] * 1.03 for symbol in names} for ex, names in _NAMES.items()
        }
        self.connects: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()
        # (exchange, connection number, message as sent: parsed JSON, or the raw text)
        self.received: collections.deque[tuple[Exchange, int, Any]] = collections.deque(
            maxlen=RECEIVED
        )
        self._connections: dict[Exchange, set[_Connection]] = {ex: set() for ex in EXCHANGES}
        self._refused: dict[Exchange, set[str]] = {ex: set() for ex in EXCHANGES}
        self._reject: collections.Counter[str] = collections.Counter()
        self._numbers = itertools.count(1)
        self._sequence = itertools.count(1_000_000)
        self._lot = ParkingLot()

    # -- control ----------------------------------------------------------------------------

    def url(self, exchange: Exchange) -> str:
        if not self.port:
            raise RuntimeError("the simulator is not running")
        path = next(p for p, ex in _PATHS.items() if ex == exchange)
        return f"ws://127.0.0.1:{self.port}{path}"

    def set_price(self, exchange: Exchange, symbol: str, usd: float) -> None:
        """Change a price and push the update to every connection subscribed to it."""
        symbol = symbol.upper()
        if symbol not in _NAMES[exchange]:
            raise KeyError(f"the simulated {exchange} does not list {symbol!r}")
        self.prices[exchange][symbol] = usd
        for conn in self._connections[exchange]:
            if symbol in conn.subscribed:
                self._push(conn, self._ticker(exchange, symbol, snapshot=False))
        self._pulse()

    def subscribed(self, exchange: Exchange) -> set[str]:
        """Canonical symbols some open connection of `exchange` is subscribed to."""
        return set().union(*(c.subscribed for c in self._connections[exchange]))

    def open_connections(self, exchange: Exchange) -> int:
        return len(self._connections[exchange])

    def messages(self, exchange: Exchange) -> list[Any]:
        """Every message clients sent to `exchange` (oldest first, last RECEIVED kept)."""
        return [message for ex, _, message in self.received if ex == exchange]

    def refuse(self, exchange: Exchange, symbol: str) -> None:
        """Answer later subscriptions to `symbol` with the exchange's error."""
        self._refused[exchange].add(symbol.upper())

    def reject_connections(self, exchange: Exchange, count: int) -> None:
        """Refuse the next `count` WebSocket handshakes with HTTP 503."""
        self._reject[exchange] += count

    def silence(self, exchange: Exchange) -> None:
        """Current connections go quiet (no data, acks, pongs or heartbeats); new ones do not."""
        for conn in self._connections[exchange]:
            conn.silent = True

    def send_raw(self, exchange: Exchange, text: str) -> None:
        """Push one text frame, as is, to every connection of `exchange`."""
        for conn in self._connections[exchange]:
            self._push(conn, text)

    async def drop(self, exchange: Exchange, *, code: int = 1011, abort: bool = False) -> None:
        """End every connection of `exchange`: a close frame with `code`, or with `abort` the
        TCP connection simply ends (as when a network path dies)."""
        for conn in list(self._connections[exchange]):
            if abort:
                await conn.ws._close_stream()  # private, but exactly "the socket went away"
            else:
                with trio.move_on_after(1):
                    await conn.ws.aclose(code, "simulated drop")
            conn.scope.cancel()

    async def ping(self, exchange: Exchange) -> None:
        """A WebSocket-level ping on every connection; returns once each has answered."""
        for conn in list(self._connections[exchange]):
            await conn.ws.ping()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; checked after every connection, message or price."""
        while not predicate():
            await self._lot.park()

    def _pulse(self) -> None:
        self._lot.unpark_all()

    # -- frames -----------------------------------------------------------------------------

    def _ticker(self, exchange: Exchange, symbol: str, *, snapshot: bool) -> str:
        name = _NAMES[exchange][symbol]
        price, opened, volume = self.prices[exchange][symbol], _OPEN[symbol], _VOLUME[symbol]
        high, low = max(price, opened) * 1.01, min(price, opened) * 0.99
        now = time.time()
        if exchange == "binance":
            data = {
                "e": "24hrMiniTicker",
                "E": int(now * 1000),
                "s": name,
                "c": f"{price:.8f}",
                "o": f"{opened:.8f}",
                "h": f"{high:.8f}",
                "l": f"{low:.8f}",
                "v": f"{volume:.8f}",
                "q": f"{volume * (price + opened) / 2:.8f}",
            }
            return _dump({"stream": _binance_stream(name), "data": data})
        if exchange == "coinbase":
            return _dump(
                {
                    "type": "ticker",
                    "sequence": next(self._sequence),
                    "product_id": name,
                    "price": f"{price:.2f}",
                    "open_24h": f"{opened:.2f}",
                    "volume_24h": f"{volume:.8f}",
                    "low_24h": f"{low:.2f}",
                    "high_24h": f"{high:.2f}",
                    "volume_30d": f"{volume * 30:.8f}",
                    "best_bid": f"{price * 0.9999:.2f}",
                    "best_bid_size": "0.46688654",
                    "best_ask": f"{price:.2f}",
                    "best_ask_size": "1.56637040",
                    "side": "buy",
                    "time": _iso(now),
                    "trade_id": next(self._sequence),
                    "last_size": "0.01",
                }
            )
        entry = {
            "symbol": name,
            "bid": round(price * 0.9999, 5),
            "bid_qty": 0.5,
            "ask": price,
            "ask_qty": 1.25,
            "last": price,
            "volume": volume,
            "vwap": round((price + opened) / 2, 5),
            "low": round(low, 5),
            "high": round(high, 5),
            "change": round(price - opened, 5),
            "change_pct": round((price - opened) / opened * 100, 2),
            "timestamp": _iso(now),
        }
        kind = "snapshot" if snapshot else "update"
        return _dump({"channel": "ticker", "type": kind, "data": [entry]})

    def _heartbeat(self, conn: _Connection) -> list[str]:
        if conn.exchange == "kraken":
            return [_dump({"channel": "heartbeat"})]
        if conn.exchange == "coinbase":
            return [
                _dump(
                    {
                        "type": "heartbeat",
                        "sequence": next(self._sequence),
                        "last_trade_id": next(self._sequence),
                        "product_id": _NAMES["coinbase"][symbol],
                        "time": _iso(time.time()),
                    }
                )
                for symbol in sorted(conn.subscribed)
            ]
        return []  # Binance keeps connections alive with WebSocket pings, not messages

    # -- dialects ---------------------------------------------------------------------------

    def _symbol(self, exchange: Exchange, name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        for symbol, listed in _NAMES[exchange].items():
            if listed == name or (exchange == "binance" and _binance_stream(listed) == name):
                return symbol
        return None

    def _subscribe(self, conn: _Connection, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            if symbol not in conn.subscribed:
                conn.subscribed.add(symbol)
                self._push(conn, self._ticker(conn.exchange, symbol, snapshot=True))

    def _on_binance(self, conn: _Connection, message: Any) -> None:
        method, params, rid = message.get("method"), message.get("params"), message.get("id")
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            error = {"code": 2, "msg": "Invalid request: unknown variant"}
            self._push(conn, _dump({"error": error, "id": rid}))
            return
        symbols = [self._symbol("binance", p) for p in params]
        if method == "UNSUBSCRIBE":
            conn.subscribed.difference_update(s for s in symbols if s)
            self._push(conn, _dump({"result": None, "id": rid}))
            return
        bad = [
            p
            for p, s in zip(params, symbols, strict=True)
            if not s or s in self._refused["binance"]
        ]
        if bad:  # Binance validates a request as a whole
            error = {"code": 2, "msg": f"Invalid request: invalid stream name {bad[0]}"}
            self._push(conn, _dump({"error": error, "id": rid}))
            return
        self._push(conn, _dump({"result": None, "id": rid}))
        self._subscribe(conn, [s for s in symbols if s])

    def _on_coinbase(self, conn: _Connection, message: Any) -> None:
        kind, products = message.get("type"), message.get("product_ids")
        if kind not in ("subscribe", "unsubscribe") or not isinstance(products, list):
            error = {"type": "error", "message": "Failed to subscribe", "reason": "bad request"}
            self._push(conn, _dump(error))
            return
        symbols = [self._symbol("coinbase", p) for p in products]
        wanted = [s for s in symbols if s]
        if kind == "subscribe":
            # Coinbase validates a subscribe as a whole: one product it does not list fails the
            # request with one error naming it, and none of the request's products is subscribed
            # ("the subscribe call being ignored entirely", coinbase/coinbase-pro-node#174).
            for product, symbol in zip(products, symbols, strict=True):
                if not symbol or symbol in self._refused["coinbase"]:
                    reason = f"{product} is not a valid product"
                    error = {"type": "error", "message": "Failed to subscribe", "reason": reason}
                    self._push(conn, _dump(error))
                    return
            now = conn.subscribed | set(wanted)
        else:
            conn.subscribed.difference_update(wanted)
            now = set(conn.subscribed)
        names = sorted(_NAMES["coinbase"][s] for s in now)
        channels = [{"name": c, "product_ids": names} for c in message.get("channels") or []]
        self._push(conn, _dump({"type": "subscriptions", "channels": channels}))
        if kind == "subscribe":
            self._subscribe(conn, wanted)

    def _on_kraken(self, conn: _Connection, message: Any) -> None:
        method, rid = message.get("method"), message.get("req_id")
        stamp = {"time_in": _iso(time.time()), "time_out": _iso(time.time())}
        if method == "ping":
            self._push(conn, _dump({"method": "pong", "req_id": rid, **stamp}))
            return
        params = message.get("params") or {}
        pairs = params.get("symbol") if isinstance(params, dict) else None
        if method not in ("subscribe", "unsubscribe") or not isinstance(pairs, list):
            error = {"error": "Malformed request", "method": method, "success": False}
            self._push(conn, _dump({**error, "req_id": rid, **stamp}))
            return
        for pair in pairs:
            symbol = self._symbol("kraken", pair)
            if method == "subscribe" and (symbol is None or symbol in self._refused["kraken"]):
                text = f"Currency pair not supported {pair}"
                answer = {"error": text, "method": method, "success": False, "symbol": pair}
                self._push(conn, _dump({**answer, "req_id": rid, **stamp}))
                continue
            result = {"channel": "ticker", "symbol": pair}
            if method == "subscribe":
                result |= {"snapshot": True, "event_trigger": "trades"}
            ack = {"method": method, "result": result, "success": True, "req_id": rid}
            self._push(conn, _dump({**ack, **stamp}))
            if symbol is None:
                continue
            if method == "subscribe":
                self._subscribe(conn, [symbol])
            else:
                conn.subscribed.discard(symbol)

    # -- serving ----------------------------------------------------------------------------

    def _push(self, conn: _Connection, text: str) -> None:
        if conn.silent:
            return
        try:
            conn.send.send_nowait(text)
        except trio.WouldBlock:
            conn.dropped += 1  # a client that does not read loses frames, we keep no more
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _handle(self, request: WebSocketRequest) -> None:
        target = urlsplit(request.path)
        exchange = _PATHS.get(target.path)
        if exchange is None:
            await request.reject(404)
            return
        if self._reject[exchange] > 0:
            self._reject[exchange] -= 1
            self.rejected[exchange] += 1
            self._pulse()
            await request.reject(503, body=b"simulated outage")
            return
        ws = await request.accept()
        send, receive = trio.open_memory_channel[str](OUTBOX)
        conn = _Connection(exchange, next(self._numbers), ws, send, receive)
        self._connections[exchange].add(conn)
        self.connects[exchange] += 1
        try:
            with conn.scope:
                if exchange == "kraken":
                    status = {
                        "api_version": "v2",
                        "connection_id": 12_345_678_900 + conn.number,
                        "system": "online",
                        "version": "2.0.10",
                    }
                    self._push(
                        conn, _dump({"channel": "status", "type": "update", "data": [status]})
                    )
                if exchange == "binance":
                    streams = parse_qs(target.query).get("streams", [""])[0].split("/")
                    self._subscribe(
                        conn, filter(None, (self._symbol("binance", s) for s in streams))
                    )
                self._pulse()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn, nursery.cancel_scope)
                    if self.heartbeat:
                        nursery.start_soon(self._heartbeats, conn, self.heartbeat)
                    await self._reader(conn)
                    nursery.cancel_scope.cancel()
        finally:
            self._connections[exchange].discard(conn)
            send.close()
            self._pulse()

    async def _reader(self, conn: _Connection) -> None:
        handlers = {
            "binance": self._on_binance,
            "coinbase": self._on_coinbase,
            "kraken": self._on_kraken,
        }
        while True:
            try:
                text = await conn.ws.get_message()
            except ConnectionClosed:
                return
            try:
                message: Any = json.loads(text)
            except ValueError:
                message = text
            self.received.append((conn.exchange, conn.number, message))
            if isinstance(message, dict) and not conn.silent:
                handlers[conn.exchange](conn, message)
            self._pulse()

    async def _writer(self, conn: _Connection, scope: trio.CancelScope) -> None:
        async for text in conn.receive:
            if conn.silent:
                continue
            try:
                await conn.ws.send_message(text)
            except ConnectionClosed:
                break
        scope.cancel()

    async def _heartbeats(self, conn: _Connection, every: float) -> None:
        while True:
            await trio.sleep(every)
            for text in self._heartbeat(conn):
                self._push(conn, text)


class TickRecorder:
    """A `publish` callable for tests: keeps every batch, wakes `wait_for` on each."""

    def __init__(self) -> None:
        self.batches: list[list[PriceTick]] = []
        self._lot = ParkingLot()

    @property
    def ticks(self) -> list[PriceTick]:
        return [tick for batch in self.batches for tick in batch]

    async def publish(self, ticks: Sequence[PriceTick]) -> None:
        self.batches.append(list(ticks))
        self._lot.unpark_all()

    def prices(self, symbol: str) -> list[float]:
        return [tick.usd for tick in self.ticks if tick.symbol == symbol]

    async def wait_for(self, predicate: Callable[[list[PriceTick]], bool]) -> None:
        while not predicate(self.ticks):
            await self._lot.park()

    async def wait_for_price(self, symbol: str, usd: float) -> PriceTick:
        await self.wait_for(lambda ticks: any(t.symbol == symbol and t.usd == usd for t in ticks))
        return next(t for t in self.ticks if t.symbol == symbol and t.usd == usd)


@asynccontextmanager
async def run_ws_simulator(*, heartbeat: float | None = None) -> AsyncIterator[WsSimulator]:
    """Start the simulator on a free loopback port; stop it (at once) on exit."""
    simulator = WsSimulator(heartbeat=heartbeat)
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    simulator._handle,
                    "127.0.0.1",
                    0,
                    None,
                    connect_timeout=2,
                    disconnect_timeout=0.5,
                )
            )
            simulator.port = server.port
            try:
                yield simulator
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The server only ends by cancellation, so a group with a single member is the
        # caller's own exception (a failed assertion, say): hand it back as it was raised.
        if len(group.exceptions) != 1 or isinstance(group.exceptions[0], BaseExceptionGroup):
            raise
        error = group.exceptions[0]
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context
            del error, group

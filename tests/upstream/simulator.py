"""A local stand-in for the upstream APIs, for tests only (production code never imports it).

One HTTP server on 127.0.0.1, port 0, run by hypercorn's Trio worker inside the caller's
nursery, serves every simulated provider under its own prefix::

    /coingecko/api/v3/ping            {"gecko_says": "(V3) To the Moon!"}
    /coingecko/api/v3/simple/price    ids, vs_currencies, include_* as the real API
    /binance/api/v3/ping              {}
    /binance/api/v3/ticker/24hr       symbol / symbols (compact JSON array) / neither
    POST /rpc-a, /rpc-b               Ethereum JSON-RPC 2.0: eth_blockNumber, eth_chainId
                                      (single or batch), as any public node answers

Payloads have the documented shapes and realistic values; `set_price` moves a price (and stamps
`last_updated_at` / `closeTime` with the current wall-clock time). `inject` adds a `Fault`
(latency, an HTTP status, a 429 rate limit, a hang, a non-JSON body, JSON of the wrong shape),
optionally for the next N requests only; faults queue per provider and apply in order.

The simulator keeps its *own* table of upstream identifiers (coin ids, trading pairs) rather
than reading `gateway.assets`, so a wrong entry in the gateway's table shows up as a test
failure instead of being mirrored here.

Shutdown is quick even with hanging requests: leaving `run_simulator()` releases every hung
handler, asks hypercorn to stop, and puts a short deadline on whatever is still running.
"""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import ProviderConfig

__all__ = ["PROVIDERS", "Fault", "FaultKind", "Simulator", "run_simulator"]

PROVIDERS = ("coingecko", "binance", "rpc-a", "rpc-b")
_PREFIX = {
    "coingecko": "/coingecko/api/v3",
    "binance": "/binance/api/v3",
    # Two Ethereum JSON-RPC nodes (POST /, single or batch requests), for pools and failover.
    "rpc-a": "/rpc-a",
    "rpc-b": "/rpc-b",
}

# Leaving run_simulator() gives in-flight requests this long before they are cancelled.
SHUTDOWN_GRACE = 0.5

FaultKind = Literal["latency", "status", "rate_limit", "hang", "malformed", "wrong_shape"]


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to inject; build one with the class methods.

    `times`: apply to the next N requests to that provider only (None: until cleared).
    """

    kind: FaultKind
    seconds: float = 0.0
    status_code: int = 500
    retry_after: str | None = None
    payload: Any = None
    times: int | None = None

    @classmethod
    def latency(cls, seconds: float, *, times: int | None = None) -> Fault:
        """Wait `seconds`, then answer normally."""
        return cls("latency", seconds=seconds, times=times)

    @classmethod
    def status(
        cls, status_code: int, *, retry_after: float | str | None = None, times: int | None = None
    ) -> Fault:
        """Answer with this HTTP status (and a Retry-After header if given)."""
        return cls("status", status_code=status_code, retry_after=_header(retry_after), times=times)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = 1, *, times: int | None = None) -> Fault:
        """Answer 429 with the provider's own error body and `Retry-After: retry_after`."""
        return cls("rate_limit", status_code=429, retry_after=_header(retry_after), times=times)

    @classmethod
    def hang(cls, *, times: int | None = None) -> Fault:
        """Never answer (until the client gives up or the simulator shuts down)."""
        return cls("hang", times=times)

    @classmethod
    def malformed(cls, *, times: int | None = None) -> Fault:
        """200 with a body that is not JSON (a truncated document)."""
        return cls("malformed", times=times)

    @classmethod
    def wrong_shape(cls, payload: Any = None, *, times: int | None = None) -> Fault:
        """200 with valid JSON of another shape (default: a sibling endpoint's response)."""
        return cls("wrong_shape", payload=payload, times=times)


def _header(value: float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class _Armed:
    """An injected fault and how many more requests it applies to (None: until cleared)."""

    fault: Fault
    remaining: int | None


@dataclass
class _Quote:
    usd: float
    change_pct: float
    volume_usd: float
    supply: float
    updated_at: float  # Unix seconds


@dataclass(frozen=True)
class _Listing:
    coingecko_id: str | None
    binance_pair: str | None
    usd: float
    change_pct: float
    volume_usd: float
    supply: float


# The upstreams' own names for each asset, with realistic starting values (late March 2024).
# MATICUSDT is absent on purpose: Binance delisted it after the MATIC -> POL migration.
_LISTINGS: dict[str, _Listing] = {
    "BTC": _Listing("bitcoin", "BTCUSDT", 67187.34, 3.637, 31_260_929_299, 19_670_000),
    "ETH": _Listing("ethereum", "ETHUSDT", 3454.78, 3.052, 13_104_925_087, 120_090_000),
    "SOL": _Listing("solana", "SOLUSDT", 184.03, 6.719, 3_841_069_035, 443_700_000),
    "BNB": _Listing("binancecoin", "BNBUSDT", 578.34, 1.771, 1_710_934_576, 153_820_000),
    "XRP": _Listing("ripple", "XRPUSDT", 0.6328, 2.442, 1_379_044_522, 55_130_000_000),
    "ADA": _Listing("cardano", "ADAUSDT", 0.6542, 3.281, 501_234_578, 35_530_000_000),
    "DOGE": _Listing("dogecoin", "DOGEUSDT", 0.17618, 4.932, 1_838_410_392, 143_800_000_000),
    "USDT": _Listing("tether", None, 1.0003, 0.021, 52_337_102_519, 103_800_000_000),
    "USDC": _Listing("usd-coin", "USDCUSDT", 0.9998, -0.012, 6_132_884_004, 31_950_000_000),
    "TRX": _Listing("tron", "TRXUSDT", 0.1228, 1.104, 312_457_990, 87_860_000_000),
    "DOT": _Listing("polkadot", "DOTUSDT", 9.21, 4.012, 402_776_314, 1_435_000_000),
    "LINK": _Listing("chainlink", "LINKUSDT", 18.74, 2.807, 612_004_381, 587_100_000),
    "MATIC": _Listing("matic-network", None, 0.9914, 2.113, 390_117_212, 9_900_000_000),
    "POL": _Listing("polygon-ecosystem-token", "POLUSDT", 0.9921, 2.090, 12_401_337, 100_000_000),
    "LTC": _Listing("litecoin", "LTCUSDT", 93.18, 4.515, 640_102_977, 74_570_000),
    "AVAX": _Listing("avalanche-2", "AVAXUSDT", 56.12, 7.301, 1_024_663_120, 378_300_000),
}

# Binance's documented validation of `symbols` (rest-api.md / errors.md): compact JSON only.
_SYMBOLS_RE = re.compile(r'^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$')
_SYMBOLS_ILLEGAL = (
    "Illegal characters found in parameter 'symbols'; legal range is "
    '\'^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$\'.'
)

_RATE_LIMIT_BODY: dict[str, Any] = {
    "coingecko": {
        "status": {
            "error_code": 429,
            "error_message": "You've exceeded the Rate Limit. Please visit "
            "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for "
            "higher rate limits.",
        }
    },
    "binance": {
        "code": -1003,
        "msg": "Too much request weight used; current limit is 6000 request weight per "
        "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
    },
}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # json.dumps, not JSONResponse: a test may want to serve NaN, as a broken upstream might.
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _binance_error(code: int, msg: str, status: int = 400) -> Response:
    return _json({"code": code, "msg": msg}, status)


class Simulator:
    """The running simulator: URLs, price controls, fault injection, request counts."""

    def __init__(self) -> None:
        now = time.time()
        self._quotes: dict[str, dict[str, _Quote]] = {
            provider: {
                symbol: _Quote(li.usd, li.change_pct, li.volume_usd, li.supply, now)
                for symbol, li in _LISTINGS.items()
            }
            for provider in PROVIDERS
        }
        self._faults: dict[str, collections.deque[_Armed]] = {
            p: collections.deque() for p in PROVIDERS
        }
        self._origin: str | None = None
        self._closing = trio.Event()
        self.hits: collections.Counter[str] = collections.Counter()
        self.blocks: dict[str, int] = {"rpc-a": 21_000_000, "rpc-b": 21_000_000}
        self._hit = trio.Event()  # set (and replaced) on every request
        # Every request received, oldest first: (provider, path, query params, headers).
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.app = Starlette(routes=self._routes())

    # -- control ----------------------------------------------------------------------------

    def base_url(self, provider_id: str) -> str:
        """The base URL to put in a ProviderConfig for this provider."""
        if self._origin is None:
            raise RuntimeError("the simulator is not running")
        if provider_id not in _PREFIX:
            raise KeyError(f"the simulator does not serve {provider_id!r}")
        return self._origin + _PREFIX[provider_id]

    def provider(self, provider_id: str, **overrides: Any) -> ProviderConfig:
        """A ProviderConfig pointing at the simulator (short timeout; overrides applied)."""
        config = ProviderConfig(
            id=provider_id,
            name=provider_id,
            categories=("MARKET_DATA",),
            base_url=self.base_url(provider_id),
            interval_seconds=1.0,
            timeout_seconds=2.0,
        )
        return replace(config, **overrides)

    def price(self, symbol: str, provider: str) -> float:
        return self._quotes[provider][symbol.upper()].usd

    def set_price(self, symbol: str, usd: float, *, provider: str | None = None) -> None:
        """Change what later responses say (for one provider, or all) and stamp them "now"."""
        symbol = symbol.strip().upper()
        if symbol not in _LISTINGS:
            raise KeyError(f"the simulator does not list {symbol!r}")
        for p in (provider,) if provider else PROVIDERS:
            quote = self._quotes[p][symbol]
            quote.usd = usd
            quote.updated_at = time.time()

    async def wait_for_hits(self, provider_id: str, count: int) -> None:
        """Return once `provider_id` has received at least `count` requests."""
        while self.hits[provider_id] < count:
            await self._hit.wait()

    def inject(self, provider_id: str, fault: Fault) -> None:
        """Queue a fault for a provider; faults apply in the order injected."""
        self._faults[provider_id].append(_Armed(fault, fault.times))

    def clear_faults(self, provider_id: str | None = None) -> None:
        for p in (provider_id,) if provider_id else PROVIDERS:
            self._faults[p].clear()

    # -- serving ----------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        def route(provider: str, path: str, handler: Callable[[Request], Response]) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self._serve(provider, path, request, handler)

            return Route(_PREFIX[provider] + path, endpoint)

        return [
            route("coingecko", "/ping", lambda r: _json({"gecko_says": "(V3) To the Moon!"})),
            route("coingecko", "/simple/price", self._coingecko_simple_price),
            route("binance", "/ping", lambda r: _json({})),
            route("binance", "/ticker/24hr", self._binance_ticker_24hr),
            *(
                Route(_PREFIX[node], partial(self._rpc_endpoint, node), methods=["POST"])
                for node in ("rpc-a", "rpc-b")
            ),
        ]

    def set_block(self, node: str, number: int) -> None:
        """The head block a simulated RPC node reports."""
        self.blocks[node] = number

    async def _rpc_endpoint(self, node: str, request: Request) -> Response:
        body = await request.body()
        return await self._serve(node, "/", request, lambda r: self._json_rpc(node, body))

    def _json_rpc(self, node: str, body: bytes) -> Response:
        try:
            message = json.loads(body)
        except ValueError:
            return _json({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
        results = {
            "eth_blockNumber": lambda: hex(self.blocks[node]),
            "eth_chainId": lambda: "0x1",
        }

        def answer(call: Any) -> dict[str, Any]:
            if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or "method" not in call:
                return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
            method = results.get(call["method"])
            if method is None:
                error = {"code": -32601, "message": "the method does not exist/is not available"}
                return {"jsonrpc": "2.0", "id": call.get("id"), "error": error}
            return {"jsonrpc": "2.0", "id": call.get("id"), "result": method()}

        if isinstance(message, list):
            return _json([answer(call) for call in message])
        return _json(answer(message))

    def _take_fault(self, provider: str) -> Fault | None:
        queue = self._faults[provider]
        if not queue:
            return None
        armed = queue[0]
        if armed.remaining is not None:
            armed.remaining -= 1
            if armed.remaining <= 0:
                queue.popleft()
        return armed.fault

    async def _serve(
        self,
        provider: str,
        path: str,
        request: Request,
        handler: Callable[[Request], Response],
    ) -> Response:
        self.hits[provider] += 1
        self._hit.set()
        self._hit = trio.Event()
        self.requests.append((provider, path, dict(request.query_params), dict(request.headers)))
        fault = self._take_fault(provider)
        if fault is not None:
            response = await self._apply(provider, path, fault)
            if response is not None:
                return response
        return handler(request)

    async def _apply(self, provider: str, path: str, fault: Fault) -> Response | None:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.kind == "latency":
            with trio.move_on_after(fault.seconds):
                await self._closing.wait()  # shutting down: stop waiting, answer at once
            return None
        if fault.kind == "status":
            text = f"{fault.status_code} simulated upstream error"
            return Response(text, status_code=fault.status_code, headers=headers)
        if fault.kind == "rate_limit":
            body = _RATE_LIMIT_BODY.get(provider, {"error": "Too Many Requests"})
            return _json(body, 429, headers)
        if fault.kind == "hang":
            await self._closing.wait()
            return Response("shutting down", status_code=503)
        if fault.kind == "malformed":
            return Response('{"bitcoin":{"usd":6718', media_type="application/json")
        if fault.kind == "wrong_shape":
            payload = fault.payload if fault.payload is not None else _wrong_shape(provider, path)
            return _json(payload)
        raise AssertionError(f"unknown fault kind {fault.kind!r}")

    def _coingecko_simple_price(self, request: Request) -> Response:
        params = request.query_params
        currencies = [c.strip().lower() for c in params.get("vs_currencies", "").split(",")]
        if not any(currencies):
            return _json({"error": "Missing parameter vs_currencies"}, 400)
        flags = {
            name: params.get(name, "false").lower() == "true"
            for name in (
                "include_market_cap",
                "include_24hr_vol",
                "include_24hr_change",
                "include_last_updated_at",
            )
        }
        by_id = {li.coingecko_id: s for s, li in _LISTINGS.items() if li.coingecko_id}
        body: dict[str, Any] = {}
        for coin_id in (i.strip().lower() for i in params.get("ids", "").split(",")):
            symbol = by_id.get(coin_id)
            if symbol is None:
                continue  # the real API silently omits unknown ids
            quote = self._quotes["coingecko"][symbol]
            entry: dict[str, Any] = {}
            if "usd" in currencies:
                entry["usd"] = float(quote.usd)
                if flags["include_market_cap"]:
                    entry["usd_market_cap"] = float(quote.usd * quote.supply)
                if flags["include_24hr_vol"]:
                    entry["usd_24h_vol"] = float(quote.volume_usd)
                if flags["include_24hr_change"]:
                    entry["usd_24h_change"] = float(quote.change_pct)
            if flags["include_last_updated_at"]:
                entry["last_updated_at"] = int(quote.updated_at)
            body[coin_id] = entry
        return _json(body)

    def _binance_ticker_24hr(self, request: Request) -> Response:
        params = request.query_params
        by_pair = {li.binance_pair: s for s, li in _LISTINGS.items() if li.binance_pair}
        symbol, symbols = params.get("symbol"), params.get("symbols")
        if symbol is not None and symbols is not None:
            return _binance_error(-1128, "Combination of optional parameters invalid.")
        if symbols is not None:
            if not _SYMBOLS_RE.fullmatch(symbols):
                return _binance_error(-1100, _SYMBOLS_ILLEGAL)
            pairs = list(dict.fromkeys(json.loads(symbols)))
            if not pairs or any(p not in by_pair for p in pairs):
                return _binance_error(-1121, "Invalid symbol.")
            return _json([self._binance_ticker(p, by_pair[p]) for p in pairs])
        if symbol is not None:
            if symbol not in by_pair:
                return _binance_error(-1121, "Invalid symbol.")
            return _json(self._binance_ticker(symbol, by_pair[symbol]))
        tickers = [self._binance_ticker(p, s) for p, s in by_pair.items()]
        tickers.append(self._binance_cross("ETHBTC", "ETH", "BTC"))
        return _json(tickers)

    def _binance_ticker(self, pair: str, symbol: str) -> dict[str, Any]:
        quote = self._quotes["binance"][symbol]
        return _full_ticker(
            pair, quote.usd, quote.change_pct, quote.volume_usd / quote.usd, quote.updated_at
        )

    def _binance_cross(self, pair: str, base: str, quote_symbol: str) -> dict[str, Any]:
        """A non-USDT pair, so a listing of every ticker holds pairs the gateway must skip."""
        b, q = self._quotes["binance"][base], self._quotes["binance"][quote_symbol]
        return _full_ticker(pair, b.usd / q.usd, 0.5, b.volume_usd / b.usd / 20, b.updated_at)


def _full_ticker(
    pair: str, last: float, change_pct: float, base_volume: float, updated_at: float
) -> dict[str, Any]:
    """A FULL 24hr ticker as Binance sends it: numbers as 8-decimal strings, times in ms."""
    open_price = last / (1 + change_pct / 100)
    high, low = max(open_price, last) * 1.012, min(open_price, last) * 0.991
    weighted = (open_price + last + high + low) / 4
    close_ms = int(updated_at * 1000)

    def s(x: float) -> str:
        return f"{x:.8f}"

    return {
        "symbol": pair,
        "priceChange": s(last - open_price),
        "priceChangePercent": f"{change_pct:.3f}",
        "weightedAvgPrice": s(weighted),
        "prevClosePrice": s(open_price),
        "lastPrice": s(last),
        "lastQty": s(0.5),
        "bidPrice": s(last * 0.99999),
        "bidQty": s(1.2045),
        "askPrice": s(last),
        "askQty": s(0.319),
        "openPrice": s(open_price),
        "highPrice": s(high),
        "lowPrice": s(low),
        "volume": s(base_volume),
        "quoteVolume": s(base_volume * weighted),
        "openTime": close_ms - 86_400_000,
        "closeTime": close_ms,
        "firstId": 3_501_922_451,
        "lastId": 3_503_406_462,
        "count": 1_484_012,
    }


def _wrong_shape(provider: str, path: str) -> Any:
    """Valid JSON from a neighbouring endpoint: right host, wrong shape."""
    if provider == "coingecko":  # /coins/markets: a list of market rows
        return [{"id": "bitcoin", "symbol": "btc", "current_price": 67187.34}]
    if provider.startswith("rpc-"):  # a JSON-RPC answer whose result is not a quantity
        return {"jsonrpc": "2.0", "id": 1, "result": {"number": "latest"}}
    return [{"symbol": "BTCUSDT", "price": "67187.34000000"}]  # Binance /ticker/price


@asynccontextmanager
async def run_simulator() -> AsyncIterator[Simulator]:
    """Start the simulator on a free loopback port; stop it (quickly) on exit."""
    simulator = Simulator()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = SHUTDOWN_GRACE
    config.accesslog = None
    config.loglevel = "WARNING"
    stop = trio.Event()
    app: Any = simulator.app  # an ASGI app; hypercorn's type for it is narrower than Starlette's
    try:
        async with trio.open_nursery() as nursery:
            start: Callable[..., Awaitable[Any]] = partial(
                serve,
                app,
                config,
                shutdown_trigger=stop.wait,
            )
            binds: list[str] = await nursery.start(start)
            simulator._origin = binds[0]
            try:
                yield simulator
            finally:
                simulator._closing.set()
                stop.set()
                nursery.cancel_scope.deadline = min(
                    nursery.cancel_scope.deadline, trio.current_time() + 2 * SHUTDOWN_GRACE
                )
    except BaseExceptionGroup as group:
        # The server task ends cleanly, so a group with a single member is the caller's own
        # exception (a failed assertion, say): hand it back as it was raised, not wrapped.
        if len(group.exceptions) != 1 or isinstance(group.exceptions[0], BaseExceptionGroup):
            raise
        error = group.exceptions[0]
        context = error.__context__
        try:
            raise error  # keeps its own traceback and __cause__
        finally:
            error.__context__ = context  # not the group it was unwrapped from
            del error, group

"""A local stand-in for the upstream APIs, for tests only (production code never imports it).

One HTTP server on 127.0.0.1, port 0, run by hypercorn's Trio worker inside the caller's
nursery, serves every simulated provider under its own prefix::

    /coingecko/api/v3/ping            {"gecko_says": "(V3) To the Moon!"}
    /coingecko/api/v3/simple/price    ids, vs_currencies, include_* as the real API
    /binance/api/v3/ping              {}
    /binance/api/v3/ticker/24hr       symbol / symbols (compact JSON array) / neither
    /coingecko/api/v3/search/trending, /global, /coins/{id}/ohlc?vs_currency=usd&days=N
    /binance/api/v3/klines            symbol, interval, startTime, endTime, limit (<= 1000)
    /kraken/0/public/Time, /Ticker?pair=A,B, /OHLC?pair=&interval=&since=
                                      (errors in the 200 envelope, as Kraken does)
    /coinbase/time, /coinbase/products/{id}/ticker, /products/{id}/candles
                                      (granularity, start, end; at most 300 rows, newest first)
    /coinpaprika/v1/global, /tickers, /tickers/{id}, /coins/{id}/ohlcv/historical
    /defillama/v2/chains, /protocols, /v2/historicalChainTvl[/{chain}]      (api.llama.fi)
    /defillama-coins/prices/current/{coingecko:id,...}                         (coins.llama.fi)
    /coincap/v3/assets?ids=, /assets/{id}                   (key: apiKey= or Bearer)
    /coinmarketcap/v1/cryptocurrency/quotes/latest?symbol=, /key/info   (X-CMC_PRO_API_KEY)
    /coinmarketcap/v1/global-metrics/quotes/latest?convert=USD
    /cryptocompare/data/pricemultifull, /price, /v2/histominute|histohour|histoday
                                      (authorization: Apikey …, or api_key=)
    /messari/metrics/v2/assets/details?assets=|slugs=, /metrics/v2/assets (x-messari-api-key)
    POST /rpc-a, /rpc-b, /rpc/{node}  EVM JSON-RPC 2.0 nodes (single calls and batches) of the
                                      scripted chains in `evm` (tests/simulator/jsonrpc.py)
    /mempool/api/…, /blockchair/…, /trongrid/wallet/…, /etherscan/v2/api
                                      chain tips, fees, gas oracle (tests/simulator/chain_apis.py)
    /blockscout/…, /ethplorer/…, /tronscan/…, /whale-alert/…, /bitquery/…, /defillama-dexs/…,
    /defillama-yields/…, /thegraph/…, /covalent/…, /mempool/api/blocks…
                                      explorers, DEX analytics, whale APIs, Bitcoin blocks
                                      (tests/simulator/onchain.py)
    /coindesk/…, /reddit-cryptocurrency/…, /cryptopanic/…, /newsdata/…, /alternative-me/fng/
                                      the news feeds and Fear & Greed (tests/simulator/news.py)

The four keyed providers (tier B) check the key as the real APIs do: `provider()` gives their
entries the providers.toml `auth`, and a request without the simulator's key (`api_keys`,
default `API_KEYS`) gets that API's "missing key" answer (see fixtures/SOURCES.md).

Payloads have the documented shapes and realistic values; `set_price` moves a price (and stamps
`last_updated_at` / `closeTime` with the current wall-clock time). Market-wide answers (the
global overviews, DefiLlama's TVL series) are stamped "now" too, or with the time
`set_market_time` gives, to play an upstream serving old data. Candles are synthetic but
deterministic (a function of the current price and the open time), on each provider's grid, with
the still-open interval last; provider plan limits (CoinPaprika's free-plan history) are not
modelled. `inject` adds a `Fault`
(latency, an HTTP status, a 429 rate limit, a hang, a non-JSON body, JSON of the wrong shape),
optionally for the next N requests only; faults queue per provider and apply in order.

The simulator keeps its *own* table of upstream identifiers (coin ids, trading pairs; in
`fixtures/simulator_listings.json`) rather than reading `gateway.symbols`, so a wrong entry in the
gateway's table shows up as a test failure instead of being mirrored here.

Shutdown is quick even with hanging requests: leaving `run_simulator()` releases every hung
handler, asks hypercorn to stop, and puts a short deadline on whatever is still running.
"""

from __future__ import annotations

import collections
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import formatdate
from functools import partial
from pathlib import Path
from typing import Any, Literal

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import AuthSpec, ProviderConfig
from tests.simulator.chain_apis import CHAIN_AUTH, CHAIN_PREFIX, CHAIN_PROVIDERS, ChainApis
from tests.simulator.jsonrpc import JsonRpcUpstream
from tests.simulator.news import (
    NEWS_AUTH,
    NEWS_PREFIX,
    NEWS_PROVIDERS,
    NewsFeeds,
    news_key,
)
from tests.simulator.onchain import ONCHAIN_AUTH, ONCHAIN_PREFIX, ONCHAIN_PROVIDERS, Onchain

__all__ = ["API_KEYS", "PROVIDERS", "Fault", "FaultKind", "Simulator", "run_simulator"]

PROVIDERS = (
    "coingecko",
    "binance",
    "kraken",
    "coinbase",
    "coinpaprika",
    "defillama",
    "defillama-coins",
    "rpc-a",
    "rpc-b",
    "coincap",
    "coinmarketcap",
    "cryptocompare",
    "messari",
    *NEWS_PROVIDERS,  # the news and Fear & Greed upstreams (tests/simulator/news.py)
    *CHAIN_PROVIDERS,  # mempool.space, Blockchair, TronGrid, Etherscan (chain_apis.py)
    *ONCHAIN_PROVIDERS,  # explorers, DEX analytics, whale APIs (onchain.py)
)
_PREFIX = {
    "coingecko": "/coingecko/api/v3",
    "binance": "/binance/api/v3",
    "kraken": "/kraken/0/public",
    "coinbase": "/coinbase",
    "coinpaprika": "/coinpaprika/v1",
    "defillama": "/defillama",  # api.llama.fi: TVL
    "defillama-coins": "/defillama-coins",  # coins.llama.fi: prices
    # Two Ethereum JSON-RPC nodes (POST /, single or batch requests), for pools and failover.
    "rpc-a": "/rpc-a",
    "rpc-b": "/rpc-b",
    # Tier B: keyed. Each prefix stands for the path of its providers.toml base_url.
    "coincap": "/coincap/v3",  # rest.coincap.io/v3
    "coinmarketcap": "/coinmarketcap/v1",  # pro-api.coinmarketcap.com/v1
    "cryptocompare": "/cryptocompare/data",  # min-api.cryptocompare.com/data
    "messari": "/messari",  # api.messari.io
    **NEWS_PREFIX,
    **CHAIN_PREFIX,
    **ONCHAIN_PREFIX,
}
# The auth of the keyed providers, as in providers.toml; `provider()` applies it.
_AUTH: dict[str, AuthSpec] = {
    "coincap": AuthSpec(kind="query", name="apiKey", env="COINCAP_API_KEY"),
    "coinmarketcap": AuthSpec(kind="header", name="X-CMC_PRO_API_KEY", env="COINMARKETCAP_API_KEY"),
    "cryptocompare": AuthSpec(
        kind="header", name="authorization", prefix="Apikey ", env="CRYPTOCOMPARE_API_KEY"
    ),
    "messari": AuthSpec(kind="header", name="x-messari-api-key", env="MESSARI_API_KEY"),
    **NEWS_AUTH,
    **CHAIN_AUTH,
    **ONCHAIN_AUTH,
}
# The key each keyed provider accepts unless a test changes `Simulator.api_keys`.
API_KEYS: dict[str, str] = {provider: f"sim-{provider}-key" for provider in _AUTH}

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
    kraken_pair: str | None = None  # the REST name Kraken is asked with (XBTUSD)
    kraken_key: str | None = None  # the key Kraken answers with (XXBTZUSD)
    coinbase_product: str | None = None
    coinpaprika_id: str | None = None
    coincap_id: str | None = None
    messari_slug: str | None = None


_FIXTURES = Path(__file__).parent / "fixtures"


def _load_listings() -> dict[str, _Listing]:
    """The upstreams' own names for each asset, with starting values (see the fixture's notes).
    MATICUSDT is absent on purpose: Binance delisted it after the MATIC -> POL migration."""
    raw = json.loads((_FIXTURES / "simulator_listings.json").read_text(encoding="utf-8"))
    listings: dict[str, _Listing] = {}
    for entry in raw["listings"]:
        kraken = entry["kraken"] or {}
        listings[entry["symbol"]] = _Listing(
            coingecko_id=entry["coingecko"],
            binance_pair=entry["binance"],
            usd=entry["usd"],
            change_pct=entry["change_pct"],
            volume_usd=entry["volume_usd"],
            supply=entry["supply"],
            kraken_pair=kraken.get("pair"),
            kraken_key=kraken.get("key"),
            coinbase_product=entry["coinbase"],
            coinpaprika_id=entry["coinpaprika"],
            coincap_id=entry.get("coincap"),
            messari_slug=entry.get("messari"),
        )
    return listings


_LISTINGS: dict[str, _Listing] = _load_listings()

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
    "kraken": {"error": ["EGeneral:Too many requests"]},
    "coinbase": {"message": "Public rate limit exceeded"},
    "coinpaprika": {"error": "Too many requests"},
    "coincap": {"error": "Too Many Requests"},
    "coinmarketcap": {
        "status": {
            "timestamp": "2024-03-25T08:45:21.406Z",
            "error_code": 1008,
            "error_message": "You've exceeded your API Key's HTTP request rate limit. Rate limits "
            "reset every minute.",
            "elapsed": 0,
            "credit_count": 0,
        }
    },
    "cryptocompare": json.loads(
        (_FIXTURES / "cryptocompare_error_rate_limit.json").read_text(encoding="utf-8")
    ),
    "messari": {"data": None, "error": "rate limit exceeded"},
}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # json.dumps, not JSONResponse: a test may want to serve NaN, as a broken upstream might.
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


_BINANCE_INTERVALS = {
    "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200,
    "1w": 604800,
}  # fmt: skip
_KRAKEN_MINUTES = frozenset({1, 5, 15, 30, 60, 240, 1440, 10080, 21600})


def _load(name: str) -> Any:
    return json.loads((_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _fixture(name: str) -> Response:
    return _json(_load(name))


def _num(x: float) -> str:
    """A price or amount as the exchanges write it: a decimal string, no exponent."""
    text = f"{x:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _iso(seconds: float, *, micro: bool = False) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: str) -> int | None:
    """Unix seconds from `1711356300`, `2024-03-25` or `2024-03-25T08:45:00Z`."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _synthetic(usd: float, open_s: int, interval_s: int) -> tuple[float, float, float, float]:
    """Open, high, low and close of one simulated interval: deterministic, near `usd`."""

    def wobble(k: int) -> float:
        return ((k * 2654435761) % 1000) / 1000 - 0.5

    k = open_s // interval_s
    open_, close = usd * (1 + 0.004 * wobble(k)), usd * (1 + 0.004 * wobble(k + 1))
    return open_, max(open_, close) * 1.001, min(open_, close) * 0.999, close


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
        # Per provider; JSON-RPC nodes a test adds (`evm.add_node`) get theirs on first use.
        self._faults: collections.defaultdict[str, collections.deque[_Armed]] = (
            collections.defaultdict(collections.deque, {p: collections.deque() for p in PROVIDERS})
        )
        self._origin: str | None = None
        self._closing = trio.Event()
        self.hits: collections.Counter[str] = collections.Counter()
        # The EVM chains and their JSON-RPC nodes (rpc-a, rpc-b on ethereum; tests add more).
        self.evm = JsonRpcUpstream()
        self._hit = trio.Event()  # set (and replaced) on every request
        # Every request received, oldest first: (provider, path, query params, headers).
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.api_keys: dict[str, str] = dict(API_KEYS)  # what the keyed providers accept
        # When each provider's market-wide answers say they were computed (None: now).
        self.market_times: dict[str, float | None] = {}
        self.news = NewsFeeds()  # the news and Fear & Greed upstreams' state
        self.chain_apis = ChainApis(self.api_keys)  # Bitcoin, Tron, gas oracle state
        self.onchain = Onchain(self.api_keys)  # explorers, DEX, whale APIs, Bitcoin blocks
        self.app = Starlette(routes=self._routes())

    # -- control ----------------------------------------------------------------------------

    def base_url(self, provider_id: str) -> str:
        """The base URL to put in a ProviderConfig for this provider."""
        if self._origin is None:
            raise RuntimeError("the simulator is not running")
        return self._origin + self._prefix(provider_id)

    def provider(self, provider_id: str, **overrides: Any) -> ProviderConfig:
        """A ProviderConfig pointing at the simulator (short timeout; overrides applied).

        A keyed provider gets its providers.toml `auth`, so the client sends the key (found in
        the environment variable it names) the way the real API expects it.
        """
        config = ProviderConfig(
            id=provider_id,
            name=provider_id,
            categories=("MARKET_DATA",),
            base_url=self.base_url(provider_id),
            interval_seconds=1.0,
            timeout_seconds=2.0,
        )
        if provider_id in _AUTH:
            config = replace(config, auth=_AUTH[provider_id])
        return replace(config, **overrides)

    def rpc_provider(self, node: str, **overrides: Any) -> ProviderConfig:
        """A ProviderConfig for one of `evm`'s JSON-RPC nodes: category RPC, the node's chain."""
        settings: dict[str, Any] = {"categories": ("RPC",), "chain": self.evm.node(node).chain.name}
        return self.provider(node, **(settings | overrides))

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
        for p in (provider_id,) if provider_id else list(self._faults):
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
            route("coingecko", "/search/trending", lambda r: _fixture("coingecko_trending")),
            route("coingecko", "/global", self._coingecko_global),
            route("coingecko", "/coins/{coin_id}/ohlc", self._coingecko_ohlc),
            route("binance", "/ping", lambda r: _json({})),
            route("binance", "/ticker/24hr", self._binance_ticker_24hr),
            route("binance", "/klines", self._binance_klines),
            route("kraken", "/Time", self._kraken_time),
            route("kraken", "/Ticker", self._kraken_ticker),
            route("kraken", "/OHLC", self._kraken_ohlc),
            route("coinbase", "/time", self._coinbase_time),
            route("coinbase", "/products/{product_id}/ticker", self._coinbase_ticker),
            route("coinbase", "/products/{product_id}/candles", self._coinbase_candles),
            route("coinpaprika", "/global", self._coinpaprika_global),
            route("coinpaprika", "/tickers", self._coinpaprika_tickers),
            route("coinpaprika", "/tickers/{coin_id}", self._coinpaprika_tickers),
            route("coinpaprika", "/coins/{coin_id}/ohlcv/historical", self._coinpaprika_ohlcv),
            route("defillama", "/v2/chains", lambda r: _fixture("defillama_chains")),
            route("defillama", "/protocols", lambda r: _fixture("defillama_protocols")),
            route("defillama", "/v2/historicalChainTvl", self._defillama_chain_tvl),
            route("defillama", "/v2/historicalChainTvl/{chain}", self._defillama_chain_tvl),
            route("defillama-coins", "/prices/current/{coins}", self._defillama_prices),
            route("coincap", "/assets", self._coincap_assets),
            route("coincap", "/assets/{asset_id}", self._coincap_assets),
            route("coinmarketcap", "/cryptocurrency/quotes/latest", self._cmc_quotes_latest),
            route("coinmarketcap", "/key/info", self._cmc_key_info),
            route("coinmarketcap", "/global-metrics/quotes/latest", self._cmc_global_metrics),
            route("cryptocompare", "/pricemultifull", self._cc_pricemultifull),
            route("cryptocompare", "/price", self._cc_price),
            *(
                route("cryptocompare", f"/v2/histo{unit}", partial(self._cc_histo, seconds))
                for unit, seconds in (("minute", 60), ("hour", 3600), ("day", 86400))
            ),
            route("messari", "/metrics/v2/assets/details", self._messari_details),
            route("messari", "/metrics/v2/assets", self._messari_assets),
            *(
                Route(_PREFIX[node], partial(self._rpc_endpoint, node), methods=["POST"])
                for node in ("rpc-a", "rpc-b")
            ),
            Route("/rpc/{node}", self._rpc_node, methods=["POST"]),
            *self.chain_apis.routes(self._serve),
            *self.onchain.routes(self._serve),
            *self.news.routes(route),
        ]

    def set_block(self, node: str, number: int) -> None:
        """The head block a simulated RPC node reports (its chain is extended to it)."""
        self.evm.pin(node, number)

    def _prefix(self, provider: str) -> str:
        if provider in _PREFIX:
            return _PREFIX[provider]
        if provider in self.evm.nodes:
            return self.evm.prefix(provider)
        raise KeyError(f"the simulator does not serve {provider!r}")

    async def _rpc_endpoint(self, node: str, request: Request) -> Response:
        body = await request.body()
        answer = self.evm.node(node).respond
        return await self._serve(node, "/", request, lambda r: _json(answer(body)))

    async def _rpc_node(self, request: Request) -> Response:
        node = request.path_params["node"]
        if node not in self.evm.nodes:
            return _json({"error": f"no node {node}"}, 404)
        return await self._rpc_endpoint(node, request)

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
        concrete = request.url.path.removeprefix(self._prefix(provider)) or path
        self.requests.append(
            (provider, concrete, dict(request.query_params), dict(request.headers))
        )
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

    # -- CoinGecko market endpoints, Binance klines --------------------------------------------

    def _coingecko_ohlc(self, request: Request) -> Response:
        params = request.query_params
        if not params.get("vs_currency"):
            return _json({"error": "Missing parameter vs_currency"}, 400)
        raw_days = params.get("days", "")
        days = 365 if raw_days == "max" else int(raw_days) if raw_days.isdigit() else 0
        if days < 1:
            return _json({"error": "Invalid value for days"}, 400)
        by_id = {li.coingecko_id: s for s, li in _LISTINGS.items() if li.coingecko_id}
        symbol = by_id.get(request.path_params["coin_id"])
        if symbol is None:
            return _json({"error": "coin not found"}, 404)
        if params["vs_currency"].lower() != "usd":
            return _json({"error": "the simulator only prices in usd"}, 400)
        interval = 1800 if days <= 2 else 14400 if days <= 30 else 345600
        now = time.time()
        usd = self._quotes["coingecko"][symbol].usd
        first = math.ceil((now - days * 86400) / interval) * interval
        last = math.ceil(now / interval) * interval  # the open candle, stamped with its close
        rows = []
        for close in range(first, last + 1, interval):
            o, h, low, c = _synthetic(usd, close - interval, interval)
            rows.append([close * 1000, o, h, low, c])
        return _json(rows)

    def _binance_klines(self, request: Request) -> Response:
        params = request.query_params
        by_pair = {li.binance_pair: s for s, li in _LISTINGS.items() if li.binance_pair}
        pair, name = params.get("symbol"), params.get("interval")
        if not pair or not name:
            return _binance_error(-1102, "Mandatory parameter was not sent, was empty/null.")
        if pair not in by_pair:
            return _binance_error(-1121, "Invalid symbol.")
        seconds = _BINANCE_INTERVALS.get(name)
        if seconds is None:
            return _binance_error(-1120, "Invalid interval.")
        try:
            limit = int(params.get("limit", "500"))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return _binance_error(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return _binance_error(-1130, "Data sent for parameter 'limit' is not valid.")
        step = seconds * 1000
        current = int(time.time() * 1000) // step * step
        last = current if end is None else min(current, end // step * step)
        if start is not None:
            opens = range(-(-start // step) * step, last + 1, step)[:limit]
        else:
            opens = range(max(0, last - (limit - 1) * step), last + 1, step)
        quote = self._quotes["binance"][by_pair[pair]]
        base = quote.volume_usd / quote.usd * seconds / 86400

        def s(x: float) -> str:
            return f"{x:.8f}"

        rows = []
        for open_ms in opens:
            o, h, low, c = _synthetic(quote.usd, open_ms // 1000, seconds)
            traded = base * c
            row = [open_ms, s(o), s(h), s(low), s(c), s(base), open_ms + step - 1, s(traded)]
            rows.append([*row, 120, s(base / 2), s(traded / 2), "0"])
        return _json(rows)

    # -- Kraken ---------------------------------------------------------------------------------

    def _kraken_pairs(self) -> dict[str, tuple[str, str]]:
        """Every name Kraken accepts for a pair (REST name or key) -> (symbol, key)."""
        index: dict[str, tuple[str, str]] = {}
        for symbol, li in _LISTINGS.items():
            if li.kraken_pair and li.kraken_key:
                index[li.kraken_pair] = index[li.kraken_key] = (symbol, li.kraken_key)
        return index

    def _kraken_time(self, request: Request) -> Response:
        now = time.time()
        result = {"unixtime": int(now), "rfc1123": formatdate(now, usegmt=True)}
        return _json({"error": [], "result": result})

    def _kraken_ticker(self, request: Request) -> Response:
        index = self._kraken_pairs()
        names = [n for n in request.query_params.get("pair", "").split(",") if n]
        if not names:  # no pair: every ticker, as Kraken does
            names = sorted({key for _, key in index.values()})
        if any(n.upper() not in index for n in names):
            return _json(_load("kraken_error_unknown_pair"))
        result: dict[str, Any] = {}
        for name in names:
            symbol, key = index[name.upper()]
            q = self._quotes["kraken"][symbol]
            opened = q.usd / (1 + q.change_pct / 100)
            base = q.volume_usd / q.usd
            vwap = (opened + q.usd) / 2
            high, low = max(opened, q.usd) * 1.01, min(opened, q.usd) * 0.99
            result[key] = {
                "a": [_num(q.usd * 1.00001), "1", "1.000"],
                "b": [_num(q.usd), "2", "2.000"],
                "c": [_num(q.usd), "0.00120000"],
                "v": [_num(base * 0.4), _num(base)],
                "p": [_num(vwap), _num(vwap)],
                "t": [21003, 52617],
                "l": [_num(low), _num(low)],
                "h": [_num(high), _num(high)],
                "o": _num(opened),
            }
        return _json({"error": [], "result": result})

    def _kraken_ohlc(self, request: Request) -> Response:
        params = request.query_params
        found = self._kraken_pairs().get(params.get("pair", "").upper())
        if found is None:
            return _json(_load("kraken_error_unknown_pair"))
        minutes, since = params.get("interval", "1"), params.get("since", "0")
        if not minutes.isdigit() or int(minutes) not in _KRAKEN_MINUTES or not since.isdigit():
            return _json({"error": ["EGeneral:Invalid arguments"]})
        symbol, key = found
        seconds = int(minutes) * 60
        current = int(time.time()) // seconds * seconds
        quote = self._quotes["kraken"][symbol]
        base = quote.volume_usd / quote.usd * seconds / 86400
        rows = []
        for open_s in range(current - 719 * seconds, current + 1, seconds):
            if open_s <= int(since) and open_s != current:
                continue  # `since` is exclusive; the open interval is always sent
            o, h, low, c = _synthetic(quote.usd, open_s, seconds)
            vwap = (h + low + c) / 3
            rows.append([open_s, _num(o), _num(h), _num(low), _num(c), _num(vwap), _num(base), 42])
        return _json({"error": [], "result": {key: rows, "last": current - seconds}})

    # -- Coinbase -------------------------------------------------------------------------------

    def _coinbase_symbol(self, request: Request) -> str | None:
        by_product = {li.coinbase_product: s for s, li in _LISTINGS.items() if li.coinbase_product}
        return by_product.get(request.path_params["product_id"])

    def _coinbase_time(self, request: Request) -> Response:
        now = time.time()
        return _json({"iso": _iso(now, micro=True), "epoch": round(now, 3)})

    def _coinbase_ticker(self, request: Request) -> Response:
        symbol = self._coinbase_symbol(request)
        if symbol is None:
            return _json({"message": "NotFound"}, 404)
        q = self._quotes["coinbase"][symbol]
        return _json(
            {
                "ask": _num(q.usd * 1.00001),
                "bid": _num(q.usd * 0.99999),
                "volume": _num(q.volume_usd / q.usd),
                "trade_id": 630281919,
                "price": _num(q.usd),
                "size": "0.00029000",
                "time": _iso(q.updated_at, micro=True),
            }
        )

    def _coinbase_candles(self, request: Request) -> Response:
        symbol = self._coinbase_symbol(request)
        if symbol is None:
            return _json({"message": "NotFound"}, 404)
        params = request.query_params
        raw = params.get("granularity", "60")
        if not raw.isdigit() or int(raw) not in {60, 300, 900, 3600, 21600, 86400}:
            return _json({"message": "Unsupported granularity"}, 400)
        granularity = int(raw)
        current = int(time.time()) // granularity * granularity
        first, last = current - 299 * granularity, current
        if "start" in params and "end" in params:
            start, end = _seconds(params["start"]), _seconds(params["end"])
            if start is None or end is None or start > end:
                return _json({"message": "Invalid start or end"}, 400)
            if (end - start) / granularity > 300:
                return _json(
                    {
                        "message": "granularity too small for the requested time range. "
                        "Count of aggregations requested exceeds 300"
                    },
                    400,
                )
            first = -(-start // granularity) * granularity
            last = min(current, end // granularity * granularity)
        q = self._quotes["coinbase"][symbol]
        base = q.volume_usd / q.usd * granularity / 86400
        rows = []
        for open_s in range(last, first - 1, -granularity):  # newest first
            o, h, low, c = _synthetic(q.usd, open_s, granularity)
            rows.append([open_s, low, h, o, c, base])
        return _json(rows)

    # -- CoinPaprika ----------------------------------------------------------------------------

    def _coinpaprika_tickers(self, request: Request) -> Response:
        quotes = request.query_params.get("quotes", "USD").upper().split(",")
        if "USD" not in quotes:
            return _json({"error": "the simulator only quotes USD"}, 400)
        entries = [
            self._paprika_ticker(rank, symbol, li)
            for rank, (symbol, li) in enumerate(_LISTINGS.items(), start=1)
            if li.coinpaprika_id
        ]
        entries.append(_load("coinpaprika_tickers")[2])  # HEX: a coin the gateway does not know
        coin_id = request.path_params.get("coin_id")
        if coin_id is None:
            return _json(entries)
        for entry in entries:
            if entry["id"] == coin_id:
                return _json(entry)
        return _json(_load("coinpaprika_error"), 404)

    def _paprika_ticker(self, rank: int, symbol: str, li: _Listing) -> dict[str, Any]:
        q = self._quotes["coinpaprika"][symbol]
        changes = {f"percent_change_{p}": 0.1 for p in ("15m", "30m", "1h", "6h", "12h")}
        return {
            "id": li.coinpaprika_id,
            "name": symbol.title(),
            "symbol": symbol,
            "rank": rank,
            "total_supply": q.supply,
            "max_supply": 0,
            "beta_value": 1.0,
            "first_data_at": "2015-01-01T00:00:00Z",
            "last_updated": _iso(q.updated_at),
            "quotes": {
                "USD": {
                    "price": q.usd,
                    "volume_24h": q.volume_usd,
                    "volume_24h_change_24h": 1.5,
                    "market_cap": round(q.usd * q.supply),
                    "market_cap_change_24h": q.change_pct,
                    **changes,
                    "percent_change_24h": q.change_pct,
                    "percent_change_7d": 2.0,
                    "percent_change_30d": 9.0,
                    "percent_change_1y": 80.0,
                    "ath_price": q.usd * 1.3,
                    "ath_date": "2021-11-10T16:05:00Z",
                    "percent_from_price_ath": -23.08,
                }
            },
        }

    def _coinpaprika_ohlcv(self, request: Request) -> Response:
        by_id = {li.coinpaprika_id: s for s, li in _LISTINGS.items() if li.coinpaprika_id}
        symbol = by_id.get(request.path_params["coin_id"])
        if symbol is None:
            return _json(_load("coinpaprika_error"), 404)
        params = request.query_params
        start = _seconds(params.get("start", ""))
        end = _seconds(params["end"]) if "end" in params else int(time.time())
        limit = params.get("limit", "1")
        if start is None or end is None:
            return _json({"error": "invalid start or end"}, 400)
        if not limit.isdigit() or not 1 <= int(limit) <= 366:
            return _json({"error": "limit must be between 1 and 366"}, 400)
        if params.get("interval", "24h") not in ("24h", "1d"):
            return _json({"error": "the simulator serves 24h candles only"}, 400)
        if params.get("quote", "usd").lower() != "usd":
            return _json({"error": "the simulator only quotes usd"}, 400)
        q = self._quotes["coinpaprika"][symbol]
        today = int(time.time()) // 86400 * 86400
        rows = []
        for open_s in range(start // 86400 * 86400, min(end, today) + 1, 86400)[: int(limit)]:
            o, h, low, c = _synthetic(q.usd, open_s, 86400)
            rows.append(
                {
                    "time_open": _iso(open_s),
                    "time_close": _iso(open_s + 86399),
                    "open": o,
                    "high": h,
                    "low": low,
                    "close": c,
                    "volume": round(q.volume_usd),
                    "market_cap": round(c * q.supply),
                }
            )
        return _json(rows)

    # -- DefiLlama ------------------------------------------------------------------------------

    def _defillama_chain_tvl(self, request: Request) -> Response:
        points = self._tvl_points()
        chain = request.path_params.get("chain")
        if chain is None:
            return _json(points)
        if chain.lower() != "ethereum":
            return Response(f"There is no chain called {chain}", status_code=400)
        return _json([{"date": p["date"], "tvl": round(p["tvl"] * 0.61, 2)} for p in points])

    def _defillama_prices(self, request: Request) -> Response:
        by_id = {li.coingecko_id: s for s, li in _LISTINGS.items() if li.coingecko_id}
        coins: dict[str, Any] = {}
        for key in request.path_params["coins"].split(","):
            chain, _, coin_id = key.partition(":")
            symbol = by_id.get(coin_id) if chain == "coingecko" else None
            if symbol is None:
                continue  # DefiLlama leaves out what it cannot price
            q = self._quotes["defillama-coins"][symbol]
            coins[key] = {
                "price": q.usd,
                "symbol": symbol,
                "timestamp": int(q.updated_at),
                "confidence": 0.99,
            }
        return _json({"coins": coins})

    # -- Tier B: the keyed providers ------------------------------------------------------------

    # -- market-wide answers: global overviews, the TVL series ---------------------------------

    def set_market_time(self, provider: str, seconds: float | None) -> None:
        """When `provider`'s market-wide answers (its global overview; DefiLlama's TVL series,
        whose newest day it sets) say they were computed, in Unix seconds; None: now."""
        if provider not in _PREFIX:
            raise KeyError(f"the simulator does not serve {provider!r}")
        self.market_times[provider] = seconds

    def _market_time(self, provider: str) -> float:
        stamp = self.market_times.get(provider)
        return time.time() if stamp is None else stamp

    def _coingecko_global(self, request: Request) -> Response:
        body = _load("coingecko_global")
        body["data"]["updated_at"] = int(self._market_time("coingecko"))
        return _json(body)

    def _coinpaprika_global(self, request: Request) -> Response:
        body = _load("coinpaprika_global")
        body["last_updated"] = int(self._market_time("coinpaprika"))
        return _json(body)

    def _cmc_global_metrics(self, request: Request) -> Response:
        rejected = self._key_error("coinmarketcap", request)
        if rejected is not None:
            return rejected
        if request.query_params.get("convert", "USD").upper() != "USD":
            return _json({"status": {"error_code": 400, "error_message": "USD only here"}}, 400)
        body = _load("coinmarketcap_global_metrics")
        stamp = self._market_time("coinmarketcap")
        body["status"]["timestamp"] = _iso(time.time(), micro=True)
        body["data"]["last_updated"] = body["data"]["quote"]["USD"]["last_updated"] = _iso(
            stamp, micro=True
        )
        return _json(body)

    def _tvl_points(self) -> list[dict[str, Any]]:
        """The fixture's daily TVL series moved so that its newest day is the day of DefiLlama's
        market time (today by default), as a current series is."""
        points: list[dict[str, Any]] = _load("defillama_historical_chain_tvl")
        newest_day = int(self._market_time("defillama")) // 86400 * 86400
        shift = newest_day - max(int(p["date"]) for p in points)
        return [{**p, "date": int(p["date"]) + shift} for p in points]

    def _key_error(self, provider: str, request: Request) -> Response | None:
        """The API's own answer to a missing or wrong key, or None when the key is right."""
        given = _presented_key(provider, request)
        if given == self.api_keys[provider]:
            return None
        missing = not given
        now = time.time()
        if provider == "coinmarketcap":  # documented: 1002 missing, 1001 invalid, HTTP 401
            body = _load("coinmarketcap_error_key_missing")
            body["status"]["timestamp"] = _iso(now, micro=True)
            if not missing:
                body["status"].update(error_code=1001, error_message="This API Key is invalid.")
            return _json(body, 401)
        if provider == "cryptocompare":  # the error envelope, with HTTP 200 as min-api does
            return _json(_cc_error("You need a valid auth key or api key to access this endpoint"))
        if provider == "coincap":
            return _json({"error": "Unauthorized", "timestamp": int(now * 1000)}, 401)
        return _json(_load("messari_error"), 401)  # messari

    def _coincap_assets(self, request: Request) -> Response:
        rejected = self._key_error("coincap", request)
        if rejected is not None:
            return rejected
        listed = [(s, li) for s, li in _LISTINGS.items() if li.coincap_id]
        stamp = int(time.time() * 1000)
        asset_id = request.path_params.get("asset_id")
        if asset_id is not None:
            for rank, (symbol, li) in enumerate(listed, start=1):
                if li.coincap_id == asset_id:
                    return _json(
                        {"data": self._coincap_asset(rank, symbol, li), "timestamp": stamp}
                    )
            return _json({"error": f"{asset_id} not found", "timestamp": stamp}, 404)
        params = request.query_params
        limit = params.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 2000:
            return _json({"error": "limit must be between 1 and 2000", "timestamp": stamp}, 400)
        wanted = [i for i in params.get("ids", "").split(",") if i]
        rows = [
            self._coincap_asset(rank, symbol, li)
            for rank, (symbol, li) in enumerate(listed, start=1)
            if not wanted or li.coincap_id in wanted
        ]
        return _json({"data": rows[: int(limit)], "timestamp": stamp})

    def _coincap_asset(self, rank: int, symbol: str, li: _Listing) -> dict[str, Any]:
        q = self._quotes["coincap"][symbol]
        return {
            "id": li.coincap_id,
            "rank": str(rank),
            "symbol": symbol,
            "name": symbol.title(),
            "supply": f"{q.supply:.16f}",
            "maxSupply": None,
            "marketCapUsd": f"{q.usd * q.supply:.16f}",
            "volumeUsd24Hr": f"{q.volume_usd:.16f}",
            "priceUsd": f"{q.usd:.16f}",
            "changePercent24Hr": f"{q.change_pct:.16f}",
            "vwap24Hr": f"{q.usd * 0.998:.16f}",
            "explorer": None,
            "tokens": {},
        }

    def _cmc_quotes_latest(self, request: Request) -> Response:
        rejected = self._key_error("coinmarketcap", request)
        if rejected is not None:
            return rejected
        params = request.query_params
        now = _iso(time.time(), micro=True)

        def error(code: int, message: str) -> Response:
            status = {"timestamp": now, "error_code": code, "error_message": message}
            return _json({"status": {**status, "elapsed": 0, "credit_count": 0}}, code)

        symbols = [s for s in params.get("symbol", "").split(",") if s]
        if not symbols:
            return error(400, '"value" must contain at least one of [id, symbol, slug]')
        if params.get("convert", "USD").upper() != "USD":
            return error(400, "the simulator only converts to USD")
        unknown = [s for s in symbols if s.upper() not in _LISTINGS]
        if unknown and params.get("skip_invalid", "false").lower() != "true":
            return error(400, f'Invalid value for "symbol": "{",".join(unknown)}"')
        ranks = {symbol: rank for rank, symbol in enumerate(_LISTINGS, start=1)}
        data: dict[str, Any] = {}
        for symbol in (s.upper() for s in symbols if s.upper() in _LISTINGS):
            q = self._quotes["coinmarketcap"][symbol]
            updated = _iso(q.updated_at, micro=True)
            data[symbol] = {
                "id": 10_000 + ranks[symbol],
                "name": symbol.title(),
                "symbol": symbol,
                "slug": symbol.lower(),
                "num_market_pairs": 500,
                "date_added": "2015-08-07T00:00:00.000Z",
                "tags": [],
                "max_supply": None,
                "circulating_supply": q.supply,
                "total_supply": q.supply,
                "is_active": 1,
                "infinite_supply": False,
                "platform": None,
                "cmc_rank": ranks[symbol],
                "is_fiat": 0,
                "self_reported_circulating_supply": None,
                "self_reported_market_cap": None,
                "tvl_ratio": None,
                "last_updated": updated,
                "quote": {
                    "USD": {
                        "price": q.usd,
                        "volume_24h": q.volume_usd,
                        "volume_change_24h": 1.5,
                        "percent_change_1h": 0.1,
                        "percent_change_24h": q.change_pct,
                        "percent_change_7d": 2.0,
                        "percent_change_30d": 9.0,
                        "percent_change_60d": 12.0,
                        "percent_change_90d": 20.0,
                        "market_cap": q.usd * q.supply,
                        "market_cap_dominance": 1.0,
                        "fully_diluted_market_cap": q.usd * q.supply,
                        "tvl": None,
                        "last_updated": updated,
                    }
                },
            }
        status = {"timestamp": now, "error_code": 0, "error_message": None, "elapsed": 5}
        credits = max(1, -(-len(data) // 100))  # one credit per 100 coins
        return _json({"status": {**status, "credit_count": credits, "notice": None}, "data": data})

    def _cmc_key_info(self, request: Request) -> Response:
        rejected = self._key_error("coinmarketcap", request)
        return _fixture("coinmarketcap_key_info") if rejected is None else rejected

    def _cc_pricemultifull(self, request: Request) -> Response:
        rejected = self._key_error("cryptocompare", request)
        if rejected is not None:
            return rejected
        params = request.query_params
        fsyms, tsyms = params.get("fsyms", ""), params.get("tsyms", "")
        if not fsyms or not tsyms:
            return _json(_cc_error("fsyms and tsyms are required"))
        if len(fsyms) > 300:
            return _json(_cc_error("fsyms param is longer than the maximum of 300 characters"))
        if "USD" not in tsyms.upper().split(","):
            return _json(_cc_error("the simulator only prices in USD"))
        raw: dict[str, Any] = {}
        display: dict[str, Any] = {}
        for symbol in (s.upper() for s in fsyms.split(",")):
            if symbol not in _LISTINGS:
                continue  # relaxedValidation (the default): unknown symbols are left out
            q = self._quotes["cryptocompare"][symbol]
            opened = q.usd / (1 + q.change_pct / 100)
            raw[symbol] = {"USD": _cc_raw(symbol, q, opened)}
            display[symbol] = {
                "USD": {"FROMSYMBOL": symbol, "TOSYMBOL": "$", "PRICE": f"$ {q.usd:,.2f}"}
            }
        if not raw:
            return _json(_cc_error(f"There is no data for any of the toSymbols {tsyms} ."))
        return _json({"RAW": raw, "DISPLAY": display})

    def _cc_price(self, request: Request) -> Response:
        rejected = self._key_error("cryptocompare", request)
        if rejected is not None:
            return rejected
        symbol = request.query_params.get("fsym", "").upper()
        if symbol not in _LISTINGS:
            return _json(_cc_error(f"fsym param is invalid. ({symbol} does not exist)"))
        return _json({"USD": self._quotes["cryptocompare"][symbol].usd})

    def _cc_histo(self, seconds: int, request: Request) -> Response:
        rejected = self._key_error("cryptocompare", request)
        if rejected is not None:
            return rejected
        params = request.query_params
        symbol = params.get("fsym", "").upper()
        if symbol not in _LISTINGS:
            return _json(_cc_error(f"fsym param is invalid. ({symbol} does not exist)"))
        if params.get("tsym", "").upper() != "USD":
            return _json(_cc_error("the simulator only prices in USD"))
        default_limit = {60: "1440", 3600: "168", 86400: "30"}[seconds]
        limit, to_ts = params.get("limit", default_limit), params.get("toTs")
        if not limit.isdigit() or not 1 <= int(limit) <= 2000:
            return _json(_cc_error("limit param is not an integer or is not between 1 and 2000"))
        if to_ts is not None and not to_ts.isdigit():
            return _json(_cc_error("toTs param is not an integer"))
        current = int(time.time()) // seconds * seconds
        last = current if to_ts is None else min(current, int(to_ts) // seconds * seconds)
        first = last - int(limit) * seconds
        q = self._quotes["cryptocompare"][symbol]
        base = q.volume_usd / q.usd * seconds / 86400
        rows = []
        for open_s in range(first, last + 1, seconds):
            o, h, low, c = _synthetic(q.usd, open_s, seconds)
            rows.append(
                {
                    "time": open_s,
                    "high": h,
                    "low": low,
                    "open": o,
                    "volumefrom": base,
                    "volumeto": base * c,
                    "close": c,
                    "conversionType": "direct",
                    "conversionSymbol": "",
                }
            )
        data = {"Aggregated": False, "TimeFrom": first, "TimeTo": last, "Data": rows}
        envelope = {"Response": "Success", "Message": "", "HasWarning": False, "Type": 100}
        return _json({**envelope, "RateLimit": {}, "Data": data})

    def _messari_details(self, request: Request) -> Response:
        rejected = self._key_error("messari", request)
        if rejected is not None:
            return rejected
        params = request.query_params
        given = params.get("assets") or params.get("slugs") or params.get("ids") or ""
        wanted = [w for w in given.split(",") if w]
        if not wanted:
            return _json({"data": None, "error": "at least one asset identifier is required"}, 400)
        if len(wanted) > 20:
            return _json({"data": None, "error": "at most 20 assets per request"}, 400)
        by_slug = {li.messari_slug: (s, li) for s, li in _LISTINGS.items() if li.messari_slug}
        rows = [self._messari_asset(*by_slug[w]) for w in wanted if w in by_slug]
        return _json({"error": None, "data": rows})

    def _messari_asset(self, symbol: str, li: _Listing) -> dict[str, Any]:
        q = self._quotes["messari"][symbol]
        rank = list(_LISTINGS).index(symbol) + 1
        btc = self._quotes["messari"]["BTC"].usd
        eth = self._quotes["messari"]["ETH"].usd
        opened = q.usd / (1 + q.change_pct / 100)
        hour = {"open": q.usd, "high": q.usd, "low": q.usd, "close": q.usd, "volume": 0.0}
        day = {
            "open": opened,
            "high": max(opened, q.usd) * 1.01,
            "low": min(opened, q.usd) * 0.99,
            "close": q.usd,
            "volume": q.volume_usd,
        }
        return {
            "id": f"00000000-0000-4000-8000-{rank:012d}",
            "name": symbol.title(),
            "slug": li.messari_slug,
            "symbol": symbol,
            "rank": rank,
            "category": "Cryptocurrency",
            "sector": "Cryptocurrency",
            "sectorV2": ["Networks"],
            "subSectorV2": ["Layer-1"],
            "tags": [],
            "description": f"{symbol} (simulated).",
            "links": [],
            "marketData": {
                "priceUsd": q.usd,
                "priceBtc": q.usd / btc,
                "priceEth": q.usd / eth,
                "priceAt": _iso(q.updated_at),
                "volume24Hour": q.volume_usd,
                "ohlcv1HourUsd": hour,
                "ohlcv24HourUsd": day,
                "supply": {"circulating": q.supply, "total": q.supply, "max": None},
                "marketcap": {
                    "circulatingUsd": q.usd * q.supply,
                    "fullyDilutedUsd": q.usd * q.supply,
                    "dominance": 1.0,
                },
            },
            "networkSlugs": [],
            "protocolSlugs": [],
            "returnOnInvestment": {"priceChange24h": q.change_pct, "priceChange7d": 2.0},
            "allTimeHigh": {"allTimeHigh": q.usd * 1.3, "allTimeHighDate": "2021-11-10T14:24:11Z"},
        }

    def _messari_assets(self, request: Request) -> Response:
        rejected = self._key_error("messari", request)
        if rejected is not None:
            return rejected
        limit = request.query_params.get("limit", "20")
        if not limit.isdigit() or int(limit) < 1:
            return _json({"data": None, "error": "invalid limit"}, 400)
        rows = [
            {"id": symbol, "name": symbol.title(), "slug": li.messari_slug, "symbol": symbol}
            for symbol, li in _LISTINGS.items()
            if li.messari_slug
        ][: int(limit)]
        page = {"page": 1, "limit": int(limit), "total": len(rows), "hasMore": False}
        return _json({"error": None, "data": rows, "metadata": page})


def _presented_key(provider: str, request: Request) -> str | None:
    """The key a request carries, in any of the ways the provider's API accepts one."""
    headers, params = request.headers, request.query_params
    if provider in NEWS_AUTH:
        return news_key(provider, request)
    if provider == "coincap":
        bearer = headers.get("authorization", "")
        return params.get("apiKey") or (bearer[7:] if bearer.startswith("Bearer ") else None)
    if provider == "coinmarketcap":
        return headers.get("x-cmc_pro_api_key") or params.get("CMC_PRO_API_KEY")
    if provider == "cryptocompare":
        scheme, _, key = headers.get("authorization", "").partition(" ")
        return (key if scheme.lower() == "apikey" else None) or params.get("api_key")
    return headers.get("x-messari-api-key")


def _cc_error(message: str) -> dict[str, Any]:
    """CryptoCompare's error envelope."""
    envelope = {"Response": "Error", "Message": message, "HasWarning": False, "Type": 2}
    return {**envelope, "RateLimit": {}, "Data": {}}


def _cc_raw(symbol: str, q: _Quote, opened: float) -> dict[str, Any]:
    """One `RAW` entry of `/pricemultifull`: every field the real answer has, as numbers."""
    base = q.volume_usd / q.usd
    high, low = max(opened, q.usd) * 1.01, min(opened, q.usd) * 0.99
    return {
        "TYPE": "5",
        "MARKET": "CCCAGG",
        "FROMSYMBOL": symbol,
        "TOSYMBOL": "USD",
        "FLAGS": "2049",
        "PRICE": q.usd,
        "LASTUPDATE": int(q.updated_at),
        "MEDIAN": q.usd,
        "LASTVOLUME": 0.01,
        "LASTVOLUMETO": q.usd * 0.01,
        "LASTTRADEID": "658173394",
        "VOLUMEDAY": base * 0.4,
        "VOLUMEDAYTO": q.volume_usd * 0.4,
        "VOLUME24HOUR": base * 0.04,
        "VOLUME24HOURTO": q.volume_usd * 0.04,
        "OPENDAY": opened,
        "HIGHDAY": high,
        "LOWDAY": low,
        "OPEN24HOUR": opened,
        "HIGH24HOUR": high,
        "LOW24HOUR": low,
        "LASTMARKET": "Coinbase",
        "VOLUMEHOUR": base / 24,
        "VOLUMEHOURTO": q.volume_usd / 24,
        "OPENHOUR": q.usd,
        "HIGHHOUR": q.usd,
        "LOWHOUR": q.usd,
        "TOPTIERVOLUME24HOUR": base * 0.04,
        "TOPTIERVOLUME24HOURTO": q.volume_usd * 0.04,
        "CHANGE24HOUR": q.usd - opened,
        "CHANGEPCT24HOUR": q.change_pct,
        "CHANGEDAY": q.usd - opened,
        "CHANGEPCTDAY": q.change_pct,
        "CHANGEHOUR": 0.0,
        "CHANGEPCTHOUR": 0.0,
        "CONVERSIONTYPE": "direct",
        "CONVERSIONSYMBOL": "",
        "SUPPLY": q.supply,
        "MKTCAP": q.usd * q.supply,
        "MKTCAPPENALTY": 0,
        "CIRCULATINGSUPPLY": q.supply,
        "CIRCULATINGSUPPLYMKTCAP": q.usd * q.supply,
        "TOTALVOLUME24H": base,
        "TOTALVOLUME24HTO": q.volume_usd,
        "TOTALTOPTIERVOLUME24H": base * 0.9,
        "TOTALTOPTIERVOLUME24HTO": q.volume_usd * 0.9,
        "IMAGEURL": f"/media/1/{symbol.lower()}.png",
    }


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
    if provider == "kraken":  # /Time: a valid envelope without any pair
        return _load("kraken_time")
    if provider == "coinbase":  # /time
        return _load("coinbase_time")
    if provider == "coinpaprika":  # /global: one object without an id
        return _load("coinpaprika_global")
    if provider == "defillama":  # /v2/chains answered where protocols or TVL points were due
        return {"chains": _load("defillama_chains")}
    if provider == "defillama-coins":  # a list, where an object with "coins" was due
        return [{"name": "Ethereum", "tvl": 58211930211.1}]
    if provider == "coincap":  # /assets/{id}: one object where an array was due
        return {"data": {"id": "bitcoin", "priceUsd": "67187.33"}, "timestamp": 1711356302145}
    if provider == "coinmarketcap":  # /key/info: `data` holds no symbol at all
        return _load("coinmarketcap_key_info")
    if provider == "cryptocompare":  # /price: no RAW section
        return {"USD": 67187.34}
    if provider == "messari":  # /metrics/v2/assets: list items without marketData
        return {"error": None, "data": [{"id": "x", "slug": "bitcoin", "symbol": "BTC"}]}
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

"""The simulator's explorer, DEX and whale-API upstreams (mounted by `tests/simulator/rest.py`);
fixtures/SOURCES.md names where each shape comes from.

    GET  /blockscout/api/v2/stats                  Blockscout counters (blockscout_stats)
    GET  /ethplorer/getLastBlock?apiKey=freekey    {"lastBlock": …}
    GET  /blockchair/ethereum/stats                Blockchair (/bitcoin/stats is chain_apis.py's)
    GET  /mempool/api/mempool, /v1/difficulty-adjustment   mempool.space statistics
    GET  /mempool/api/blocks, /block/{hash}/txs/{start}    the scripted Bitcoin chain `bitcoin`
    GET  /tronscan/api/system/status               TronScan (header TRON-PRO-API-KEY)
    GET  /whale-alert/v1/transactions?api_key=…    Whale Alert (`whale_alert` transactions)
    POST /bitquery/graphql                         Bitquery EVM Transfers (Bearer token)
    GET  /defillama-dexs/overview/dexs             DefiLlama DEX volumes
    GET  /defillama-yields/pools                   DefiLlama yield pools (DEX pools among them)
    POST /thegraph/api/{key}/subgraphs/id/uniswap-v3   The Graph (the key is a path segment)
    GET  /covalent/v1/{chain}/xy=k/{dex}/pools/    Covalent xy=k pools (Bearer key)

Keyed upstreams check their key as the real APIs do and answer their documented error without
it. `bitcoin` is a small scripted Bitcoin chain (`add_block(txs)`, `reorg(depth, [txs…])`) whose
blocks mempool.space's routes serve, 25 transactions a page; a new block is stamped "now"
(unless a test says otherwise), so the gateway can price it with its own fresh ticks.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import AuthSpec
from tests.simulator.chain_apis import CHAIN_PREFIX

__all__ = [
    "ONCHAIN_AUTH",
    "ONCHAIN_PREFIX",
    "ONCHAIN_PROVIDERS",
    "BitcoinChain",
    "Onchain",
    "btc_tx",
]

_FIXTURES = Path(__file__).parent / "fixtures"

ONCHAIN_PREFIX: dict[str, str] = {
    "blockscout": "/blockscout/api/v2",  # eth.blockscout.com/api/v2
    "ethplorer": "/ethplorer",  # api.ethplorer.io
    "tronscan": "/tronscan/api",  # apilist.tronscanapi.com/api
    "whale-alert": "/whale-alert/v1",  # api.whale-alert.io/v1
    "bitquery": "/bitquery/graphql",  # streaming.bitquery.io/graphql
    "defillama-dexs": "/defillama-dexs/overview/dexs",  # api.llama.fi/overview/dexs
    "defillama-yields": "/defillama-yields",  # yields.llama.fi
    "thegraph": "/thegraph/api/{key}/subgraphs/id/uniswap-v3",  # gateway.thegraph.com/api/{key}/…
    "covalent": "/covalent/v1",  # api.covalenthq.com/v1
}
ONCHAIN_PROVIDERS = tuple(ONCHAIN_PREFIX)
ONCHAIN_AUTH: dict[str, AuthSpec] = {
    "ethplorer": AuthSpec(
        kind="query", name="apiKey", env="ETHPLORER_API_KEY", required=False, default="freekey"
    ),
    "tronscan": AuthSpec(kind="header", name="TRON-PRO-API-KEY", env="TRONSCAN_API_KEY"),
    "whale-alert": AuthSpec(kind="query", name="api_key", env="WHALE_ALERT_API_KEY"),
    "bitquery": AuthSpec(
        kind="header", name="Authorization", prefix="Bearer ", env="BITQUERY_API_KEY"
    ),
    "thegraph": AuthSpec(kind="path", env="THEGRAPH_API_KEY"),
    "covalent": AuthSpec(
        kind="header", name="Authorization", prefix="Bearer ", env="COVALENT_API_KEY"
    ),
}

Serve = Callable[[str, str, Request, Callable[[Request], Response]], Awaitable[Response]]
PAGE = 25  # mempool.space's transactions per page


def _load(name: str) -> Any:
    return json.loads((_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def _h(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def btc_tx(
    txid: str, inputs: Sequence[tuple[str, int]], outputs: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    """A transaction in mempool.space's (Esplora's) shape: inputs and outputs (address, sats)."""
    return {
        "txid": _h("tx", txid),
        "version": 2,
        "locktime": 0,
        "vin": [
            {
                "txid": _h("prev", txid, n),
                "vout": 0,
                "prevout": {"scriptpubkey_address": address, "value": sats,
                            "scriptpubkey_type": "v0_p2wpkh"},
                "is_coinbase": False,
                "sequence": 4294967293,
            }
            for n, (address, sats) in enumerate(inputs)
        ],
        "vout": [
            {"scriptpubkey_address": address, "value": sats, "scriptpubkey_type": "v0_p2wpkh"}
            for address, sats in outputs
        ],
        "size": 223,
        "weight": 562,
        "fee": 2000,
    }  # fmt: skip


@dataclass
class _BtcBlock:
    height: int
    hash: str
    previous: str
    timestamp: int
    txs: list[dict[str, Any]]


class BitcoinChain:
    """A scripted Bitcoin chain: blocks with transactions, replaced on demand."""

    def __init__(self, height: int = 840_000) -> None:
        self.salt = 0
        self.blocks: dict[int, _BtcBlock] = {}
        timestamp = self._time = int(time.time()) - 600
        first = _BtcBlock(height, _h("btc", height, 0), _h("btc", height - 1, 0), timestamp, [])
        self.blocks[height] = first
        self.head = height

    def add_block(
        self, txs: Sequence[dict[str, Any]] = (), *, timestamp: int | None = None
    ) -> _BtcBlock:
        number = self.head + 1
        # A new block is "just mined" unless a test says when (prices are judged at its time).
        self._time = timestamp if timestamp is not None else max(self._time + 1, int(time.time()))
        coinbase = {
            "txid": _h("coinbase", number, self.salt),
            "vin": [{"is_coinbase": True, "prevout": None, "txid": "0" * 64, "vout": 4294967295}],
            "vout": [{"scriptpubkey_address": "bc1qminer", "value": 312_500_000}],
        }
        block = _BtcBlock(
            number,
            _h("btc", number, self.salt),
            self.blocks[self.head].hash,
            self._time,
            [coinbase, *copy.deepcopy(list(txs))],
        )
        self.blocks[number] = block
        self.head = number
        return block

    def reorg(self, depth: int, replacement: Sequence[Sequence[dict[str, Any]]] = ()) -> None:
        for number in range(self.head - depth + 1, self.head + 1):
            del self.blocks[number]
        self.head -= depth
        self._time = self.blocks[self.head].timestamp
        self.salt += 1
        for txs in replacement or [() for _ in range(depth)]:
            self.add_block(txs)

    def newest(self, count: int = 10) -> list[dict[str, Any]]:
        return [
            {
                "id": b.hash,
                "height": b.height,
                "version": 536870912,
                "timestamp": b.timestamp,
                "tx_count": len(b.txs),
                "size": 1_500_000,
                "weight": 3_993_000,
                "merkle_root": _h("merkle", b.hash),
                "previousblockhash": b.previous,
                "mediantime": b.timestamp - 3000,
                "nonce": 1,
                "bits": 386089497,
                "difficulty": 86388558925171.02,
            }
            for b in sorted(self.blocks.values(), key=lambda b: -b.height)[:count]
        ]

    def page(self, block_hash: str, start: int) -> list[dict[str, Any]] | None:
        block = next((b for b in self.blocks.values() if b.hash == block_hash), None)
        if block is None:
            return None
        return block.txs[start : start + PAGE]


class Onchain:
    """State and routes of the explorer, DEX and whale-API upstreams; see the module doc."""

    def __init__(self, api_keys: dict[str, str]) -> None:
        self.api_keys = api_keys  # shared with the rest simulator
        self.bitcoin = BitcoinChain()
        self.whale_alert: list[dict[str, Any]] = _load("whale_alert_transactions")["transactions"]
        self.bitquery: list[dict[str, Any]] = _load("bitquery_transfers")["data"]["EVM"][
            "Transfers"
        ]

    def routes(self, serve: Serve) -> list[Route]:
        """The routes to mount, each through the rest simulator's `serve(provider, path, …)`."""

        def route(provider: str, path: str, handler: Callable[[Request], Response],
                  methods: tuple[str, ...] = ("GET",)) -> Route:  # fmt: skip
            prefix = ONCHAIN_PREFIX.get(provider) or CHAIN_PREFIX[provider]

            async def endpoint(request: Request) -> Response:
                return await serve(provider, path, request, handler)

            return Route(prefix + path, endpoint, methods=list(methods))

        fixture = lambda name: lambda r: _json(_load(name))  # noqa: E731
        return [
            route("blockscout", "/stats", fixture("blockscout_stats")),
            route("ethplorer", "/getLastBlock", self._ethplorer),
            route("blockchair", "/ethereum/stats", fixture("blockchair_ethereum_stats")),
            route("mempool", "/mempool", fixture("mempool_mempool")),
            route("mempool", "/v1/difficulty-adjustment", fixture("mempool_difficulty_adjustment")),
            route("mempool", "/blocks", lambda r: _json(self.bitcoin.newest())),
            route("mempool", "/block/{block}/txs/{start:int}", self._btc_page),
            route("tronscan", "/system/status", self._tronscan),
            route("whale-alert", "/transactions", self._whale_alert),
            route("bitquery", "", self._bitquery, ("POST",)),
            route("defillama-dexs", "", fixture("defillama_dexs_overview")),
            route("defillama-yields", "/pools", fixture("defillama_yields_pools")),
            route("thegraph", "", self._thegraph, ("POST",)),
            route("covalent", "/{chain}/xy=k/{dex}/pools/", self._covalent),
        ]

    def _bearer(self, provider: str, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_keys[provider]}"

    def _ethplorer(self, request: Request) -> Response:
        if request.query_params.get("apiKey") not in ("freekey", self.api_keys["ethplorer"]):
            return _json(_load("ethplorer_error"), 401)
        return _json(_load("ethplorer_last_block"))

    def _btc_page(self, request: Request) -> Response:
        page = self.bitcoin.page(request.path_params["block"], request.path_params["start"])
        if page is None:
            return Response("Block not found", status_code=404)
        return _json(page)

    def _tronscan(self, request: Request) -> Response:
        if request.headers.get("tron-pro-api-key") != self.api_keys["tronscan"]:
            return _json({"Error": "request rate exceeded the allowed_rps(1)"}, 401)
        return _json(_load("tronscan_system_status"))

    def _whale_alert(self, request: Request) -> Response:
        if request.query_params.get("api_key") != self.api_keys["whale-alert"]:
            return _json(_load("whale_alert_error"), 401)
        start = int(request.query_params.get("start", "0"))
        rows = [t for t in self.whale_alert if t["timestamp"] >= start]
        return _json(
            {"result": "success", "cursor": "sim-cursor", "count": len(rows), "transactions": rows}
        )

    def _bitquery(self, request: Request) -> Response:
        if not self._bearer("bitquery", request):
            return _json(_load("bitquery_error"), 401)
        return _json({"data": {"EVM": {"Transfers": self.bitquery}}})

    def _thegraph(self, request: Request) -> Response:
        if request.path_params.get("key") != self.api_keys["thegraph"]:
            return _json(_load("thegraph_error"))
        return _json(_load("thegraph_pools"))

    def _covalent(self, request: Request) -> Response:
        if not self._bearer("covalent", request):
            return _json(_load("covalent_error"), 401)
        return _json(_load("covalent_xyk_pools"))

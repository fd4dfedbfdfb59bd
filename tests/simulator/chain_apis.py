"""The simulator's non-JSON-RPC chain upstreams: mempool.space, Blockchair, TronGrid and the
Etherscan API v2 gas oracle (fixtures/SOURCES.md names where each shape comes from).

    GET  /mempool/api/blocks/tip/height        plain text: the Bitcoin tip height
    GET  /mempool/api/v1/fees/recommended      fastestFee, halfHourFee, hourFee, economyFee, …
    GET  /blockchair/bitcoin/stats             {"data": {"best_block_height": …}, "context": …}
    POST /trongrid/wallet/getblock             {"detail": false}: the newest block's header
    GET  /etherscan/v2/api?chainid=1&module=gastracker&action=gasoracle&apikey=…
    GET  /etherscan/v2/api?…&module=proxy&action=eth_blockNumber   (the health check)
    GET  /etherscan/v2/api?…&module=stats&action=ethsupply|nodecount   (network statistics)
         (/bscscan/v2/api the same, for the bscscan entry)

State tests set: `bitcoin_height`, `fees` (sat/vB by mempool's field name), `tron_height`,
`gas_oracle` (gwei strings by the oracle's field name). The Etherscan family checks its key
(`apikey`) as the real API does: without it, HTTP 200 with status "0" and "Missing/Invalid API
Key". Every route goes through the rest simulator's `serve`, so hits, recorded requests and
injected faults apply as to any provider.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.config import AuthSpec

__all__ = ["CHAIN_API_KEYS", "CHAIN_AUTH", "CHAIN_PREFIX", "CHAIN_PROVIDERS", "ChainApis"]

_FIXTURES = Path(__file__).parent / "fixtures"

CHAIN_PREFIX: dict[str, str] = {
    "mempool": "/mempool/api",  # mempool.space/api
    "blockchair": "/blockchair",  # api.blockchair.com
    "trongrid": "/trongrid",  # api.trongrid.io
    "etherscan": "/etherscan/v2/api",  # api.etherscan.io/v2/api
    "bscscan": "/bscscan/v2/api",  # the same API, the bscscan entry's own key
}
CHAIN_PROVIDERS = tuple(CHAIN_PREFIX)
CHAIN_AUTH: dict[str, AuthSpec] = {
    "etherscan": AuthSpec(kind="query", name="apikey", env="ETHERSCAN_API_KEY"),
    "bscscan": AuthSpec(kind="query", name="apikey", env="BSCSCAN_API_KEY"),
}
CHAIN_API_KEYS: dict[str, str] = {provider: f"sim-{provider}-key" for provider in CHAIN_AUTH}

Serve = Callable[[str, str, Request, Callable[[Request], Response]], Awaitable[Response]]


def _load(name: str) -> Any:
    return json.loads((_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _json(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


class ChainApis:
    """State and routes of the chain upstreams; see the module docstring."""

    def __init__(self, api_keys: dict[str, str] | None = None) -> None:
        stats = _load("blockchair_bitcoin_stats")
        self.bitcoin_height: int = stats["data"]["best_block_height"]
        self.fees: dict[str, float] = dict(_load("mempool_fees_recommended"))
        block = _load("trongrid_getblock")
        self.tron_height: int = block["block_header"]["raw_data"]["number"]
        self.gas_oracle: dict[str, str] = dict(_load("etherscan_gas_oracle")["result"])
        # What the Etherscan family accepts: the rest simulator shares its `api_keys` dict.
        self.api_keys: dict[str, str] = api_keys if api_keys is not None else dict(CHAIN_API_KEYS)

    def routes(self, serve: Serve) -> list[Route]:
        """The routes to mount, each through the rest simulator's `serve(provider, path, …)`."""

        def route(provider: str, path: str, handler: Callable[[Request], Response],
                  methods: tuple[str, ...] = ("GET",)) -> Route:  # fmt: skip
            async def endpoint(request: Request) -> Response:
                return await serve(provider, path, request, handler)

            return Route(CHAIN_PREFIX[provider] + path, endpoint, methods=list(methods))

        return [
            route("mempool", "/blocks/tip/height", self._tip_height),
            route("mempool", "/v1/fees/recommended", lambda r: _json(self.fees)),
            route("blockchair", "/bitcoin/stats", self._blockchair_stats),
            route("trongrid", "/wallet/getblock", self._tron_block, ("POST",)),
            route("trongrid", "/wallet/getnowblock", self._tron_block, ("GET", "POST")),
            route("etherscan", "", self._etherscan("etherscan")),
            route("bscscan", "", self._etherscan("bscscan")),
        ]

    def _tip_height(self, request: Request) -> Response:
        return PlainTextResponse(str(self.bitcoin_height))

    def _blockchair_stats(self, request: Request) -> Response:
        payload = _load("blockchair_bitcoin_stats")
        payload["data"]["best_block_height"] = self.bitcoin_height
        payload["data"]["blocks"] = self.bitcoin_height + 1
        payload["context"]["state"] = self.bitcoin_height
        return _json(payload)

    def _tron_block(self, request: Request) -> Response:
        payload = _load("trongrid_getblock")
        payload["block_header"]["raw_data"]["number"] = self.tron_height
        return _json(payload)

    def _etherscan(self, provider: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            params = request.query_params
            if params.get("apikey") != self.api_keys[provider]:
                return _json(_load("etherscan_error_missing_key"))
            module, action = params.get("module"), params.get("action")
            if module == "gastracker" and action == "gasoracle":
                return _json({"status": "1", "message": "OK", "result": self.gas_oracle})
            if module == "proxy" and action == "eth_blockNumber":
                return _json({"jsonrpc": "2.0", "id": 83, "result": hex(23_467_872)})
            if module == "stats" and action in ("ethsupply", "nodecount"):  # network statistics
                return _json(_load(f"etherscan_{action}"))
            return _json({"status": "0", "message": "NOTOK", "result": "Error! Invalid action"})

        return serve

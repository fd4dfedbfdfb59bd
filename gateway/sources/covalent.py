"""Covalent / GoldRush (keyed): the largest pools of a DEX, from its "xy=k" endpoints.

`GET /v1/{chain}/xy=k/{dex}/pools/?page-size=50` with `Authorization: Bearer <key>`
(https://goldrush.dev/docs/api-reference/ "Xy=k"; the page could not be read here, so the shape
below is as remembered from Covalent's class-B endpoints and is unverified) answers::

    {"data": {"updated_at": "2024-03-25T08:45:11Z", "items": [{"exchange": "0xb4e1…c9dc",
      "dex_name": "uniswap_v2", "chain_name": "eth-mainnet", "total_liquidity_quote": 1.2e8,
      "volume_24h_quote": 3.4e7, "token_0": {"contract_ticker_symbol": "USDC"},
      "token_1": {"contract_ticker_symbol": "WETH"}}], "pagination": {…}},
     "error": false, "error_message": null, "error_code": null}

Errors: `{"error": true, "error_message": "…", "error_code": 401}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError
from gateway.models import utc_now
from gateway.onchain_models import DexPool, chain_name
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stat_value
from gateway.upstream.client import UpstreamClient

__all__ = ["DEXES", "fetch_pools", "parse_pools", "pools_path"]

# (Covalent chain name, DEX name) pairs whose pools are read.
DEXES: Final = (("eth-mainnet", "uniswap_v2"),)


def pools_path(chain: str, dex: str) -> str:
    return f"/{chain}/xy=k/{dex}/pools/"


def _ticker(token: Any) -> str | None:
    symbol = token.get("contract_ticker_symbol") if isinstance(token, dict) else None
    return symbol if isinstance(symbol, str) and symbol else None


def parse_pools(
    payload: Any, observed_at: datetime, *, chain: str, dex: str, provider: str = "covalent"
) -> list[DexPool]:
    endpoint = pools_path(chain, dex)
    fail = payload_fail(provider, endpoint)
    if not isinstance(payload, dict):
        raise fail("expected an object")
    if payload.get("error"):
        message = payload.get("error_message") or f"error {payload.get('error_code')}"
        raise UpstreamError(f"Covalent: {message}", provider=provider, endpoint=endpoint)
    data = payload.get("data")
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise fail("expected data.items to be a list")
    pools: list[DexPool] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("exchange"), str):
            raise fail("a pool without an exchange address")
        token0, token1 = _ticker(item.get("token_0")), _ticker(item.get("token_1"))
        if token0 is None or token1 is None:
            raise fail(f"{item['exchange']}: a token without a ticker")
        pools.append(
            DexPool(
                chain=chain_name(str(item.get("chain_name") or chain)),
                dex=str(item.get("dex_name") or dex).replace("_", "-"),
                pair=f"{token0}-{token1}",
                pool_id=item["exchange"].lower(),
                tvl_usd=stat_value(item.get("total_liquidity_quote"), "liquidity", fail),
                volume_24h_usd=stat_value(item.get("volume_24h_quote"), "volume", fail),
                provider=provider,
                observed_at=observed_at,
            )
        )
    return pools


async def fetch_pools(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[DexPool]:
    pools: list[DexPool] = []
    provider_id = provider.id
    for chain, dex in DEXES:

        def parse(payload: Any, chain: str = chain, dex: str = dex) -> list[DexPool]:
            return parse_pools(payload, utc_now(), chain=chain, dex=dex, provider=provider_id)

        pools += await fetch_parsed(
            client, provider, pools_path(chain, dex), parse, key=key, params={"page-size": "50"}
        )
    return pools

"""The Graph (keyed): the largest Uniswap v3 pools on Ethereum, from the Uniswap v3 subgraph.

POSTed to the gateway URL with the key as a path segment (providers.toml `thegraph`); the
`Pool` entity's fields are Uniswap's documented subgraph schema
(https://docs.uniswap.org/api/subgraph/subgraphs-devs/schemas/pool: `totalValueLockedUSD`,
`token0`/`token1`, `feeTier`; `PoolDayData.volumeUSD` per UTC day). The answer::

    {"data": {"pools": [{"id": "0x88e6…5640", "feeTier": "500",
      "totalValueLockedUSD": "312345678.9", "token0": {"symbol": "USDC"},
      "token1": {"symbol": "WETH"}, "poolDayData": [{"date": 1711324800,
      "volumeUSD": "456789012.3"}, {"date": 1711238400, "volumeUSD": "…"}]}]}}

`volume24hUsd` is the newest *complete* UTC day's volume (the current day is still counting),
None when the subgraph has none. Errors: `{"errors": [{"message": "…"}]}`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError
from gateway.models import utc_now
from gateway.onchain_models import DexPool
from gateway.sources.base import number_or_none
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stat_value
from gateway.upstream.client import UpstreamClient

__all__ = ["POOLS_QUERY", "fetch_pools", "parse_pools"]

POOLS_QUERY: Final = """
{ pools(first: 50, orderBy: totalValueLockedUSD, orderDirection: desc) {
    id feeTier totalValueLockedUSD
    token0 { symbol } token1 { symbol }
    poolDayData(first: 2, orderBy: date, orderDirection: desc) { date volumeUSD } } }
"""


def _symbol(token: Any) -> str | None:
    symbol = token.get("symbol") if isinstance(token, dict) else None
    return symbol if isinstance(symbol, str) and symbol else None


def parse_pools(
    payload: Any, observed_at: datetime, *, provider: str = "thegraph", chain: str = "ethereum"
) -> list[DexPool]:
    fail = payload_fail(provider, "pools")
    if not isinstance(payload, dict):
        raise fail("expected an object")
    if payload.get("errors"):
        errors = payload["errors"]
        first = errors[0] if isinstance(errors, list) and errors else errors
        message = first.get("message") if isinstance(first, dict) else str(first)
        raise UpstreamError(f"The Graph: {message}", provider=provider, endpoint="pools")
    data = payload.get("data")
    rows = data.get("pools") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise fail("expected data.pools to be a list")
    today = int(
        datetime(observed_at.year, observed_at.month, observed_at.day, tzinfo=UTC).timestamp()
    )
    pools: list[DexPool] = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise fail("a pool without an id")
        token0, token1 = _symbol(row.get("token0")), _symbol(row.get("token1"))
        if token0 is None or token1 is None:
            raise fail(f"{row['id']}: a token without a symbol")
        volume = None
        for day in row.get("poolDayData") or []:
            date = number_or_none(day.get("date")) if isinstance(day, dict) else None
            if date is not None and date < today:
                volume = stat_value(day.get("volumeUSD"), f"{row['id']} volumeUSD", fail)
                break
        pools.append(
            DexPool(
                chain=chain,
                dex="uniswap-v3",
                pair=f"{token0}-{token1}",
                pool_id=row["id"].lower(),
                tvl_usd=stat_value(row.get("totalValueLockedUSD"), f"{row['id']} TVL", fail),
                volume_24h_usd=volume,
                provider=provider,
                observed_at=observed_at,
            )
        )
    return pools


async def fetch_pools(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[DexPool]:
    provider_id = provider.id
    pools: list[DexPool] = await fetch_parsed(
        client,
        provider,
        "",
        lambda p: parse_pools(p, utc_now(), provider=provider_id),
        key=key,
        method="POST",
        json={"query": POOLS_QUERY},
    )
    return pools

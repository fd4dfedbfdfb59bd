"""GraphQL for on-chain analytics: `dexPools` (the contract), `dexVolumes` and `networkStats`.

Every answer is read from what the collectors stored (gateway/chains/dex.py, explorers.py):
each DEX-pool provider's latest snapshot (DefiLlama's pools, free; The Graph and Covalent when
keyed), DefiLlama's 24 h volume per DEX, and the newest figure of every explorer statistic.
Nothing is fetched on demand, so a query costs no upstream call; before the first collection
an answer is empty with a `NO_DATA` warning saying so.

Must never merge figures of different providers into one record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, cast

import strawberry
from strawberry.types import Info

from gateway.api.context import RequestContext
from gateway.errors import BadUserInput
from gateway.onchain_models import chain_name
from gateway.storage import DexStore, NetworkStatStore

__all__ = ["DexPool", "DexVolume", "NetworkStat", "OnchainQuery"]

MAX_POOLS: Final = 200
MAX_CHAIN_CHARS: Final = 40


@strawberry.type(description="A DEX liquidity pool, as its provider reports it.")
class DexPool:
    chain: str
    dex: str = strawberry.field(description='The exchange, e.g. "uniswap-v3".')
    pair: str = strawberry.field(description='Its tokens as the provider writes them: "USDC-WETH".')
    tvl_usd: float | None
    volume_24h_usd: float | None = strawberry.field(
        description="Traded in the last 24 h (The Graph: the last complete UTC day)."
    )
    provider: str
    observed_at: datetime = strawberry.field(description="When the gateway fetched it.")
    pool_id: str = strawberry.field(description="The provider's id for it (an address, a uuid).")


@strawberry.type(description="One DEX's traded volume over the last 24 h (DefiLlama).")
class DexVolume:
    dex: str
    name: str
    chains: list[str]
    volume_24h_usd: float | None
    change_1d_pct: float | None
    provider: str
    observed_at: datetime


@strawberry.type(description="One figure an explorer gives about a chain, as it gave it.")
class NetworkStat:
    chain: str
    provider: str
    metric: str = strawberry.field(
        description='e.g. "total_transactions", "mempool_transactions", '
        '"average_block_time_seconds"; amounts in the chain\'s base unit unless the name says'
    )
    value: float
    observed_at: datetime


def _context(info: Info) -> RequestContext:
    return cast(RequestContext, info.context)


def _chain(chain: str | None) -> str | None:
    if chain is None:
        return None
    if len(chain) > MAX_CHAIN_CHARS or not chain.strip():
        raise BadUserInput(
            f"chain must be a chain name such as ethereum (at most {MAX_CHAIN_CHARS} characters)"
        )
    return chain_name(chain)


def _no_data(info: Info, what: str) -> None:
    _context(info).warn("NO_DATA", f"no {what} has been collected yet")


@strawberry.type
class OnchainQuery:
    @strawberry.field(
        description="The largest DEX liquidity pools by TVL (of `chain`, if given): DefiLlama's "
        "pools (free; hourly), The Graph's Uniswap v3 and Covalent's pools when keyed. Each "
        "pool is one provider's figures."
    )
    async def dex_pools(
        self, info: Info, chain: str | None = None, limit: int = 20
    ) -> list[DexPool]:
        if not 1 <= limit <= MAX_POOLS:
            raise BadUserInput(f"limit must be between 1 and {MAX_POOLS}")
        pools = await DexStore(_context(info).services.storage).top_pools(
            chain=_chain(chain), limit=limit
        )
        if not pools:
            _no_data(info, "DEX pool data" + (f" for {chain}" if chain else ""))
        return [
            DexPool(
                chain=p.chain,
                dex=p.dex,
                pair=p.pair,
                tvl_usd=p.tvl_usd,
                volume_24h_usd=p.volume_24h_usd,
                provider=p.provider,
                observed_at=p.observed_at,
                pool_id=p.pool_id,
            )
            for p in pools
        ]

    @strawberry.field(description="Each DEX's 24 h volume, largest first (DefiLlama, hourly).")
    async def dex_volumes(self, info: Info, limit: int = 20) -> list[DexVolume]:
        if not 1 <= limit <= MAX_POOLS:
            raise BadUserInput(f"limit must be between 1 and {MAX_POOLS}")
        volumes = await DexStore(_context(info).services.storage).volumes()
        if not volumes:
            _no_data(info, "DEX volume data")
        return [
            DexVolume(
                dex=v.dex,
                name=v.name,
                chains=list(v.chains),
                volume_24h_usd=v.volume_24h_usd,
                change_1d_pct=v.change_1d_pct,
                provider=v.provider,
                observed_at=v.observed_at,
            )
            for v in volumes[:limit]
        ]

    @strawberry.field(
        description="The newest figure of every network statistic the explorers give "
        "(Blockscout, Ethplorer, Blockchair, mempool.space; Etherscan family and TronScan when "
        "keyed), of `chain` if given."
    )
    async def network_stats(self, info: Info, chain: str | None = None) -> list[NetworkStat]:
        stats = await NetworkStatStore(_context(info).services.storage).latest(_chain(chain))
        if not stats:
            _no_data(info, "network statistic" + (f" for {chain}" if chain else ""))
        return [
            NetworkStat(
                chain=s.chain,
                provider=s.provider,
                metric=s.metric,
                value=s.value,
                observed_at=s.observed_at,
            )
            for s in stats
        ]

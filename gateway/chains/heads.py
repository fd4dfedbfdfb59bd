"""Chain heads from the RPC pools: each chain's newest block, from whichever node answers.

One request per chain goes through that chain's RPC pool (failing over between nodes within
the call). `lagBlocks` says how far the answering node is behind the highest block this
gateway has seen on that chain recently, so a stale node is visible. Answers are cached for a
few seconds: a dashboard polling `chainHeads` does not multiply upstream traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import trio

from gateway.config import ProviderConfig
from gateway.errors import PoolExhausted, UpstreamError
from gateway.models import utc_now
from gateway.providers.registry import ProviderRegistry
from gateway.sources.rpc import fetch_block_number

__all__ = ["ChainHead", "ChainHeads"]

CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ChainHead:
    chain: str
    block_number: int
    provider: str
    lag_blocks: int
    observed_at: datetime


class ChainHeads:
    """Reads chain heads through the registry's RPC pools."""

    def __init__(self, registry: ProviderRegistry, cache_seconds: float = CACHE_SECONDS) -> None:
        self._registry = registry
        self._cache_seconds = cache_seconds
        self._highest: dict[str, int] = {}
        self._cache: dict[str, tuple[float, ChainHead]] = {}

    def rpc_pools(self) -> dict[str, str]:
        """chain -> pool id, for every RPC pool whose members share a chain."""
        found: dict[str, str] = {}
        for pool in self._registry.pools.values():
            if pool.category != "RPC" or not pool.members:
                continue
            chains = {m.provider.chain for m in pool.members}
            if len(chains) == 1 and (chain := chains.pop()) is not None:
                found.setdefault(chain, pool.id)
        return found

    async def head(self, chain: str, pool_id: str) -> ChainHead:
        cached = self._cache.get(chain)
        if cached is not None and trio.current_time() - cached[0] < self._cache_seconds:
            return cached[1]
        registry = self._registry
        pool = registry.require_pool(pool_id)
        served: dict[str, str] = {}

        async def ask(provider: ProviderConfig) -> int:
            served["provider"] = provider.id
            return await fetch_block_number(
                registry.client, provider, registry.secrets.key_for(provider)
            )

        number = await pool.call(ask)
        highest = max(number, self._highest.get(chain, 0))
        self._highest[chain] = highest
        head = ChainHead(chain, number, served["provider"], highest - number, utc_now())
        self._cache[chain] = (trio.current_time(), head)
        return head

    async def heads(self) -> tuple[list[ChainHead], list[UpstreamError]]:
        """Every chain's head (concurrently), and the errors of the chains that failed."""
        pools = self.rpc_pools()
        results: dict[str, ChainHead] = {}
        errors: list[UpstreamError] = []

        async def one(chain: str, pool_id: str) -> None:
            try:
                results[chain] = await self.head(chain, pool_id)
            except (PoolExhausted, UpstreamError) as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for chain, pool_id in pools.items():
                nursery.start_soon(one, chain, pool_id)
        return [results[chain] for chain in sorted(results)], errors

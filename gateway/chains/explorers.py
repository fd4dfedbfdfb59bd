"""Explorer network statistics: which provider family gives which, and the collector that
stores them.

`STAT_READERS` maps a provider family (a providers.toml entry's `collector`, else its `id`) to
the fetch of its statistics: free Blockscout, Ethplorer (with its public "freekey"), Blockchair
and mempool.space; Etherscan-family and TronScan once their keys are set (an entry without its
key is never started). `collect_stats` is one round for one provider: fetch, then store every
figure with when it was observed (`NetworkStatStore`); `networkStats` serves the newest.

Must never store a figure an explorer did not give, or call a provider the supervisor did not
start (disabled or unconfigured ones never are).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from gateway.config import ProviderConfig
from gateway.onchain_models import NetworkStat
from gateway.sources import (
    blockchair,
    blockscout,
    etherscan_stats,
    ethplorer,
    mempool_space,
    tronscan,
)
from gateway.storage import NetworkStatStore
from gateway.upstream import UpstreamClient

__all__ = ["STAT_READERS", "StatReader", "collect_stats", "stat_reader_for"]

StatReader = Callable[[UpstreamClient, ProviderConfig, str | None], Awaitable[list[NetworkStat]]]

STAT_READERS: Final[Mapping[str, StatReader]] = {
    "blockscout": blockscout.fetch_stats,
    "ethplorer": ethplorer.fetch_stats,
    "blockchair": blockchair.fetch_stats,
    "mempool": mempool_space.fetch_stats,
    "etherscan": etherscan_stats.fetch_stats,
    "bscscan": etherscan_stats.fetch_stats,
    "polygonscan": etherscan_stats.fetch_stats,
    "tronscan": tronscan.fetch_stats,
}


def stat_reader_for(provider: ProviderConfig) -> StatReader | None:
    return STAT_READERS.get(provider.collector or provider.id)


async def collect_stats(
    client: UpstreamClient,
    provider: ProviderConfig,
    key: str | None,
    store: NetworkStatStore,
    reader: StatReader,
) -> list[NetworkStat]:
    """One round: fetch the provider's statistics and store them; returns what was stored."""
    stats = await reader(client, provider, key)
    await store.add(stats)
    return stats

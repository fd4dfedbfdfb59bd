"""The on-chain collectors the supervisor runs, built once: whale tracking, explorer statistics,
DEX analytics and stored TVL (`OnchainData`).

`OnchainData.build(...)` decides what runs from providers.toml and the settings, skipping every
provider that is disabled or lacks its key (it is never called):

* `whales:<chain>`: an `EvmWhaleWatch` per EVM chain of `tokens.json` that has an RPC pool,
  every `whale_poll_seconds`, through the shared `JsonRpcClient` (so each node's limits and
  breaker see the gateway's every call); `whales:bitcoin` over mempool.space's blocks;
  `whales:whale-alert` and `whales:bitquery` when keyed. All only while `whale_tracking` is on.
* `explorer:<id>`: network statistics of each explorer with a reader (`explorers.py`).
* `dex:<id>`: DEX pools and volumes (`dex.py`); `tvl:<id>`: DefiLlama's TVL, stored (first
  a minute after start, then every `tvl_store_interval`).
* `onchain:prune`: hourly, whale transfers and statistics past their retention are deleted.

`tasks()` names each loop; the supervisor starts and restarts them (gateway/nursery.py). Must
never start a task itself, or build a collector for a provider it may not call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Final

import trio

from gateway.chains.bitcoin_whales import BitcoinWhaleWatch
from gateway.chains.dex import (
    POOL_READERS,
    VOLUME_READERS,
    collect_pools,
    collect_tvl,
    collect_volumes,
)
from gateway.chains.explorers import collect_stats, stat_reader_for
from gateway.chains.follower import BlockFollower
from gateway.chains.polling import poll_forever
from gateway.chains.rpc_pool import PoolRpc
from gateway.chains.tokens import Labels, load_labels, load_tokens
from gateway.chains.whale_apis import BitqueryFeed, WhaleAlertFeed
from gateway.chains.whales import EvmWhaleWatch, PriceAt
from gateway.config import ProviderConfig, Settings
from gateway.models import utc_now
from gateway.onchain_models import WhaleTransfer
from gateway.providers.registry import ProviderRegistry
from gateway.pubsub import EventBus
from gateway.sources.jsonrpc import JsonRpcClient
from gateway.storage import DexStore, NetworkStatStore, Storage, TvlStore, WhaleStore
from gateway.upstream import UpstreamClient

__all__ = ["PRUNE_EVERY", "OnchainData", "price_symbols"]

PRUNE_EVERY: Final = 3600.0
TVL_FIRST_DELAY: Final = 60.0
Runner = Callable[[], Awaitable[None]]


def price_symbols(settings: Settings) -> tuple[str, ...]:
    """The symbols whale tracking needs priced (none while it is off)."""
    return load_tokens().price_symbols() if settings.whale_tracking else ()


@dataclass
class OnchainData:
    """Every on-chain collector, by task name; see the module docstring."""

    runners: dict[str, Runner] = field(default_factory=dict)
    evm_watches: dict[str, EvmWhaleWatch] = field(default_factory=dict)
    bitcoin: BitcoinWhaleWatch | None = None

    def tasks(self) -> dict[str, Runner]:
        return dict(self.runners)

    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: ProviderRegistry,
        rpc: JsonRpcClient,
        storage: Storage,
        bus: EventBus,
        price_at: PriceAt,
    ) -> OnchainData:
        built = cls()
        client, secrets = registry.client, registry.secrets
        whales, labels = WhaleStore(storage), load_labels()
        stats, dex, tvl = NetworkStatStore(storage), DexStore(storage), TvlStore(storage)
        publish = bus.whales.publish
        min_usd = settings.whale_min_usd

        def every(
            name: str,
            interval: float,
            round_: Callable[[], Awaitable[object]],
            first_delay: float = 0.0,
        ) -> None:
            built.runners[name] = partial(
                poll_forever, name, interval, round_, first_delay=first_delay
            )

        if settings.whale_tracking:
            pools = registry.rpc_pools()
            for chain, tokens in load_tokens().chains.items():
                pool = pools.get(chain)
                if pool is None:
                    continue
                chain_rpc = PoolRpc(rpc, pool)
                follower = BlockFollower(
                    chain,
                    chain_rpc,
                    tokens,
                    depth=settings.whale_reorg_depth,
                    max_blocks=settings.whale_max_blocks,
                )
                watch = EvmWhaleWatch(
                    follower, chain_rpc, tokens, labels, price_at, whales, publish, min_usd=min_usd
                )
                built.evm_watches[chain] = watch
                every(f"whales:{chain}", settings.whale_poll_seconds, watch.scan_once)
        for provider in registry.providers.providers:
            if not provider.enabled or not secrets.is_configured(provider):
                continue
            key = secrets.key_for(provider)
            family = provider.collector or provider.id
            name = provider.id
            reader = stat_reader_for(provider)
            if reader is not None:
                every(
                    f"explorer:{name}",
                    provider.interval_seconds,
                    partial(collect_stats, client, provider, key, stats, reader),
                )
            if family in POOL_READERS:
                every(
                    f"dex:{name}",
                    provider.interval_seconds,
                    partial(collect_pools, client, provider, key, dex, POOL_READERS[family]),
                )
            if family in VOLUME_READERS:
                every(
                    f"dex:{name}",
                    provider.interval_seconds,
                    partial(collect_volumes, client, provider, key, dex),
                )
            if family == "defillama" and "DEFI" in provider.categories:
                every(
                    f"tvl:{name}",
                    settings.tvl_store_interval,
                    partial(collect_tvl, client, provider, key, tvl),
                    # Not in the start-up burst: a minute in (sooner only if the interval is).
                    first_delay=min(TVL_FIRST_DELAY, settings.tvl_store_interval),
                )
            if not settings.whale_tracking:
                continue
            if family == "mempool":
                built.bitcoin = BitcoinWhaleWatch(
                    client, provider, key, labels, price_at, whales, publish,
                    min_usd=min_usd, max_pages=settings.whale_btc_max_pages,
                )  # fmt: skip
                every("whales:bitcoin", provider.interval_seconds, built.bitcoin.scan_once)
            feed = _feed_for(family, client, provider, key, labels, whales, publish, min_usd)
            if feed is not None:
                every(f"whales:{name}", provider.interval_seconds, feed.round)
        built.runners["onchain:prune"] = partial(_prune_forever, settings, whales, stats)
        return built


def _feed_for(
    family: str,
    client: UpstreamClient,
    provider: ProviderConfig,
    key: str | None,
    labels: Labels,
    sink: WhaleStore,
    publish: Callable[[WhaleTransfer], None],
    min_usd: float,
) -> WhaleAlertFeed | BitqueryFeed | None:
    if family == "whale-alert":
        return WhaleAlertFeed(client, provider, key, labels, sink, publish, min_usd=min_usd)
    if family == "bitquery":
        return BitqueryFeed(client, provider, key, labels, sink, publish, min_usd=min_usd)
    return None


async def _prune_forever(settings: Settings, whales: WhaleStore, stats: NetworkStatStore) -> None:
    """A minute after start, then hourly: drop what is past its retention."""
    await trio.sleep(60.0)
    while True:
        now = utc_now()
        await whales.prune(now - timedelta(days=settings.whale_retention_days))
        await stats.prune(now - timedelta(days=settings.network_stats_retention_days))
        await trio.sleep(PRUNE_EVERY)

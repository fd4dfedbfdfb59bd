"""A provider registry wired to the upstream simulator, for the chain-heads and gas tests.

`open_rig(sim, storage, providers, env=...)` builds what the supervisor builds (client,
secrets, registry with its pools loaded, the chain store and bus) without starting any task, so
a test drives `ChainHeads.poll` / `GasTracker.observe` itself, one round at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.chains.data import ChainData
from gateway.config import PoolConfig, ProviderConfig, ProvidersFile, Settings
from gateway.providers.registry import ProviderRegistry
from gateway.providers.upstream_keys import Secrets
from gateway.pubsub import EventBus
from gateway.storage import ChainStore, ProviderStore, Storage
from gateway.upstream.client import UpstreamClient


@dataclass
class Rig:
    registry: ProviderRegistry
    chains: ChainData
    store: ChainStore
    bus: EventBus


@asynccontextmanager
async def open_rig(
    storage: Storage,
    providers: Iterable[ProviderConfig],
    *,
    pools: Iterable[PoolConfig] = (),
    env: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[Rig]:
    file = ProvidersFile(tuple(providers), tuple(pools))
    bus = EventBus(64)
    async with UpstreamClient(providers=file.providers) as client:
        registry = ProviderRegistry(
            file, Secrets(dict(env or {})), client, ProviderStore(storage), bus
        )
        await registry.load_pools()
        chains = ChainData.build(registry, settings or Settings(), storage=storage, bus=bus)
        yield Rig(registry, chains, ChainStore(storage), bus)

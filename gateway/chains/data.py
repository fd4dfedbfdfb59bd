"""The chain services the supervisor builds once and the API reads: `ChainData`.

One `JsonRpcClient` (shared by heads, gas and the whale detector, so every node's limits and
breaker see all of the gateway's calls), the `ChainHeads` collector and the `GasTracker`, built
from settings. `tasks()` names the long-running loops the supervisor starts (each restarted on
a crash with the other collectors' backoff, gateway/nursery.py).

Must never start a task itself: the supervisor owns every task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from gateway.chains.gas import GasTracker
from gateway.chains.heads import ChainHeads
from gateway.config import Settings
from gateway.providers.registry import ProviderRegistry
from gateway.pubsub import EventBus
from gateway.sources.jsonrpc import JsonRpcClient
from gateway.storage import ChainStore, Storage

__all__ = ["ChainData"]


@dataclass
class ChainData:
    """JSON-RPC, chain heads and gas, wired to one registry, store and bus."""

    rpc: JsonRpcClient
    heads: ChainHeads
    gas: GasTracker

    @classmethod
    def build(
        cls,
        registry: ProviderRegistry,
        settings: Settings,
        *,
        storage: Storage | None = None,
        bus: EventBus | None = None,
    ) -> ChainData:
        rpc = JsonRpcClient(registry.client, registry.secrets.key_for)
        store = ChainStore(storage) if storage is not None else None
        heads = ChainHeads(
            registry,
            rpc,
            store=store,
            bus=bus,
            interval=settings.chain_heads_interval,
            max_lag_blocks=settings.chain_max_lag_blocks,
            retention_days=settings.chain_retention_days,
        )
        gas = GasTracker(
            registry,
            rpc,
            store=store,
            bus=bus,
            interval=settings.gas_interval,
            blocks=settings.gas_fee_history_blocks,
            percentiles=settings.gas_reward_percentiles,
        )
        return cls(rpc, heads, gas)

    def tasks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The loops to supervise, by name: each runs until cancelled."""

        async def heads() -> None:
            await self.heads.run(task_status=trio.TASK_STATUS_IGNORED)

        async def gas() -> None:
            await self.gas.run(task_status=trio.TASK_STATUS_IGNORED)

        return {"chains:heads": heads, "chains:gas": gas}

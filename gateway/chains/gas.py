"""Gas: each chain's fee tiers, observed on an interval, stored and streamed.

Per EVM chain, in this order, the first source that answers gives the tiers:

1. an Etherscan-family gas oracle (Etherscan API v2, `chainid` for the chain), when the
   explorer entry for that chain is enabled and its key is set (`ORACLE`);
2. `eth_feeHistory` over the last `blocks` blocks at `percentiles` (slow, standard, fast),
   through the chain's RPC pool (failing over between nodes, never a lagging one), turned into
   tiers as wallets do (`gateway.sources.gas.fee_history_tiers`: `FEE_HISTORY`);
3. `eth_gasPrice` through the same pool: one price for all three tiers, no base fee
   (`GAS_PRICE`), for nodes without eth_feeHistory.

Bitcoin: mempool.space's recommended rates (sat/vB): slow `hourFee`, standard `halfHourFee`,
fast `fastestFee` (`MEMPOOL`).

Each observation is stored (`ChainStore`) and published on `EventBus.gas`. `current(chain)` (the
`gas` query) serves the newest observation, observing on demand when there is none yet; when
the last attempt failed it still serves the last good one, and `failure(chain)` says why (the
API turns that into an UPSTREAM_FALLBACK warning). Must never: invent a tier (a source that
gives one price is labelled GAS_PRICE, not spread into three), or call an unkeyed oracle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import structlog
import trio

from gateway.chain_models import EVM_CHAIN_IDS, GasPrice
from gateway.config import ProviderConfig
from gateway.errors import PoolExhausted, StorageError, UpstreamError
from gateway.models import utc_now
from gateway.providers.registry import ProviderRegistry
from gateway.pubsub import EventBus
from gateway.sources.chain_tips import TIP_READERS
from gateway.sources.gas import (
    ETHERSCAN_FAMILY,
    GWEI,
    fee_history_tiers,
    fetch_etherscan_gas_oracle,
    fetch_mempool_fees,
)
from gateway.sources.jsonrpc import JsonRpcClient
from gateway.sources.schedule import JobClock
from gateway.storage import ChainStore
from gateway.upstream.pool import Pool

__all__ = ["BITCOIN_FEE_SOURCES", "GasTracker"]

log = structlog.get_logger(__name__)

# Providers (by `collector`, else `id`) whose fee recommendation gives Bitcoin's tiers.
BITCOIN_FEE_SOURCES: Final = frozenset({"mempool"})

Ask = Callable[[ProviderConfig], Awaitable[GasPrice]]


class GasTracker:
    """Observes, keeps, stores and publishes fee tiers; see the module docstring."""

    def __init__(
        self,
        registry: ProviderRegistry,
        rpc: JsonRpcClient,
        *,
        store: ChainStore | None = None,
        bus: EventBus | None = None,
        interval: float = 60.0,
        blocks: int = 20,
        percentiles: Sequence[float] = (10.0, 50.0, 90.0),
    ) -> None:
        if len(percentiles) != 3 or list(percentiles) != sorted(percentiles):
            raise ValueError("percentiles must be three ascending numbers (slow, standard, fast)")
        self.registry = registry
        self.rpc = rpc
        self.store = store
        self.bus = bus
        self.interval = interval
        self.blocks = blocks
        self.percentiles = tuple(percentiles)
        self._latest: dict[str, GasPrice] = {}
        self._failures: dict[str, UpstreamError] = {}
        self._observing: dict[str, trio.Event] = {}

    # -- what is served -------------------------------------------------------------------------

    def chains(self) -> list[str]:
        """The chains gas is served for: EVM chains with an RPC pool, and Bitcoin when a fee
        source is configured."""
        tip_chains = {reader.chain for reader in TIP_READERS.values()}
        found = {chain for chain in self.registry.rpc_pools() if chain not in tip_chains}
        if self._bitcoin_sources():
            found.add("bitcoin")
        return sorted(found)

    def latest(self, chain: str) -> GasPrice | None:
        return self._latest.get(chain)

    def failure(self, chain: str) -> UpstreamError | None:
        """Why the last observation of `chain` failed, if it did (the latest is older)."""
        return self._failures.get(chain)

    async def current(self, chain: str) -> GasPrice:
        """The newest tiers of a chain, observed now if there are none yet; raises the
        observation's error when there is nothing to serve."""
        latest = self._latest.get(chain)
        if latest is not None:
            return latest
        await self.observe(chain)
        latest = self._latest.get(chain)
        if latest is None:
            raise self._failures.get(chain) or PoolExhausted(f"gas-{chain}", [])
        return latest

    # -- observing --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Seed from the store, then observe every chain each `interval`, forever."""
        if self.store is not None:
            for gas in await self.store.latest_gas():
                self._latest.setdefault(gas.chain, gas)
        task_status.started()
        clock = JobClock("chain:gas", self.interval)
        while True:
            await clock.begin()
            async with trio.open_nursery() as nursery:
                for chain in self.chains():
                    nursery.start_soon(self.observe, chain)
            await clock.plan(self.interval)
            await trio.sleep(self.interval)

    async def observe(self, chain: str) -> GasPrice | None:
        """One observation of a chain (or wait for the one in progress): stored, published and
        kept as the latest; None (the error kept in `failure`) when every source failed."""
        running = self._observing.get(chain)
        if running is not None:
            await running.wait()
            return None if chain in self._failures else self._latest.get(chain)
        self._observing[chain] = trio.Event()
        try:
            try:
                gas = await self._observe(chain)
            except UpstreamError as exc:
                self._failures[chain] = exc
                log.info("chains.gas_unavailable", chain=chain, error=str(exc))
                return None
            self._latest[chain] = gas
            self._failures.pop(chain, None)
            if self.store is not None:
                try:
                    await self.store.record_gas(gas)
                except StorageError as exc:  # still served and streamed
                    log.warning("chains.gas_not_stored", error=str(exc))
            if self.bus is not None:
                self.bus.gas.publish(gas)
            return gas
        finally:
            self._observing.pop(chain).set()

    async def _observe(self, chain: str) -> GasPrice:
        errors: list[tuple[str, str, int | None]] = []
        if chain == "bitcoin":
            for provider in self._bitcoin_sources():
                try:
                    return await self._mempool(provider)
                except UpstreamError as exc:
                    errors.append((provider.id, _message(exc), exc.status))
            raise PoolExhausted(f"gas-{chain}", errors)
        for provider in self._oracles(chain):
            try:
                return await self._oracle(chain, provider)
            except UpstreamError as exc:
                errors.append((provider.id, _message(exc), exc.status))
        pool = self.registry.rpc_pools().get(chain)
        if pool is None:
            raise PoolExhausted(f"gas-{chain}", errors)
        for attempt in (self._fee_history, self._gas_price):
            try:
                return await self._via_pool(pool, attempt(chain))
            except PoolExhausted as exc:
                errors.extend(exc.errors)
        raise PoolExhausted(f"gas-{chain}", errors)

    def _usable(self, provider: ProviderConfig) -> bool:
        return provider.enabled and self.registry.secrets.is_configured(provider)

    def _oracles(self, chain: str) -> list[ProviderConfig]:
        """The chain's keyed Etherscan-family explorers, in priority order."""
        return sorted(
            (
                p
                for p in self.registry.providers.providers
                if (p.collector or p.id) in ETHERSCAN_FAMILY
                and p.chain == chain
                and chain in EVM_CHAIN_IDS
                and self._usable(p)
            ),
            key=lambda p: p.priority,
        )

    def _bitcoin_sources(self) -> list[ProviderConfig]:
        return sorted(
            (
                p
                for p in self.registry.providers.providers
                if (p.collector or p.id) in BITCOIN_FEE_SOURCES and self._usable(p)
            ),
            key=lambda p: p.priority,
        )

    async def _oracle(self, chain: str, provider: ProviderConfig) -> GasPrice:
        key = self.registry.secrets.key_for(provider)
        limit = provider.timeout_seconds + 1
        with trio.move_on_after(limit):
            oracle = await fetch_etherscan_gas_oracle(
                self.registry.client, provider, key, EVM_CHAIN_IDS[chain]
            )
            return GasPrice(
                chain=chain,
                slow=oracle.safe,
                standard=oracle.propose,
                fast=oracle.fast,
                base_fee=oracle.base_fee,
                unit="gwei",
                method="ORACLE",
                provider=provider.id,
                observed_at=utc_now(),
                block_number=oracle.last_block,
            )
        raise UpstreamError(f"gas oracle: no answer within {limit:g}s", provider=provider.id)

    def _fee_history(self, chain: str) -> Ask:
        """Tiers from eth_feeHistory, on one node."""

        async def ask(provider: ProviderConfig) -> GasPrice:
            history = await self.rpc.fee_history(provider, self.blocks, self.percentiles)
            try:
                tiers = fee_history_tiers(history)
            except ValueError as exc:
                raise UpstreamError(f"eth_feeHistory: {exc}", provider=provider.id) from None
            return GasPrice(
                chain=chain,
                slow=tiers.slow / GWEI,
                standard=tiers.standard / GWEI,
                fast=tiers.fast / GWEI,
                base_fee=tiers.base_fee / GWEI,
                unit="gwei",
                method="FEE_HISTORY",
                provider=provider.id,
                observed_at=utc_now(),
                block_number=history.newest_block,
            )

        return ask

    def _gas_price(self, chain: str) -> Ask:
        """One price from eth_gasPrice, on one node."""

        async def ask(provider: ProviderConfig) -> GasPrice:
            price = await self.rpc.gas_price(provider) / GWEI
            return GasPrice(
                chain=chain,
                slow=price,
                standard=price,
                fast=price,
                base_fee=None,
                unit="gwei",
                method="GAS_PRICE",
                provider=provider.id,
                observed_at=utc_now(),
            )

        return ask

    async def _via_pool(self, pool: Pool, ask: Ask) -> GasPrice:
        """`ask` on the pool's nodes with failover; PoolExhausted when none answered in time.
        Each attempt is bounded by the client; the limit also bounds a wait for rate budget."""
        timeouts = [m.provider.timeout_seconds for m in pool.members]
        limit = 3 * max(timeouts, default=10.0) + 1
        with trio.move_on_after(limit):
            return await pool.call(ask)
        raise PoolExhausted(pool.id, [(pool.id, f"no answer within {limit:g}s", None)])

    async def _mempool(self, provider: ProviderConfig) -> GasPrice:
        key = self.registry.secrets.key_for(provider)
        limit = provider.timeout_seconds + 1
        with trio.move_on_after(limit):
            fees = await fetch_mempool_fees(self.registry.client, provider, key)
            return GasPrice(
                chain="bitcoin",
                slow=fees.hour,
                standard=fees.half_hour,
                fast=fees.fastest,
                base_fee=None,
                unit="sat/vB",
                method="MEMPOOL",
                provider=provider.id,
                observed_at=utc_now(),
            )
        raise UpstreamError(f"fees: no answer within {limit:g}s", provider=provider.id)


def _message(error: UpstreamError) -> str:
    text = str(error)
    prefix = f"{error.provider}: "
    return text[len(prefix) :] if text.startswith(prefix) else text

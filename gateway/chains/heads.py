"""Chain heads: polled from every node, stored, streamed, and lagging nodes benched.

Each round (every `interval` seconds, `run`) asks, per chain:

* an EVM chain (ethereum, bsc, polygon: any chain of an RPC pool that is not a tip chain): every
  member of its RPC pool, concurrently, `eth_blockNumber` (a node without it: the latest
  block's number). The first time a node is seen it is asked `eth_chainId` too, so a node that
  serves another chain is caught: it is benched and shown OFFLINE. The highest block any node
  reports wins (ties: pool order). Each node's `lagBlocks` is how far it is behind the highest
  block seen recently (this round or the one before); a node more than `max_lag_blocks` behind
  is DEGRADED on the status board and benched in the registry, so no pool reads from it until
  it catches up.
* a tip chain (bitcoin, tron: `gateway.sources.chain_tips`): its tip sources in priority order
  until one answers (mempool.space, then Blockchair, whose free day budget is small; TronGrid).

A round's node reports are stored (`ChainStore`), and a new head is stored and published on
`EventBus.chain_heads`. A round in which every node failed keeps the last head but remembers
the error (`PoolExhausted`, naming each node's): `heads()` (the `chainHeads` query) then leaves
that chain out and returns the error, so a client sees which chain is down rather than an old
block as if it were current. A chain never polled in this run (nor stored before) is polled on
demand by `heads()`; a query arriving while a round runs waits for that round.

Every request is bounded: the upstream client's deadline per attempt, and a limit per node per
round. Must never: publish a head that no node reported, or unbench a provider it did not
bench.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import structlog
import trio

from gateway.chain_models import EVM_CHAIN_IDS, ChainHead, NodeHead
from gateway.config import ProviderConfig
from gateway.errors import JsonRpcError, PoolExhausted, StorageError, UpstreamError
from gateway.models import utc_now
from gateway.providers.registry import ProviderRegistry
from gateway.pubsub import EventBus
from gateway.sources.chain_tips import tip_reader_for
from gateway.sources.jsonrpc import JsonRpcClient
from gateway.sources.jsonrpc_results import parse_quantity
from gateway.sources.schedule import JobClock
from gateway.storage import ChainStore
from gateway.vocabulary import ProviderState

__all__ = ["ChainHeads", "HeadSources"]

log = structlog.get_logger(__name__)

PRUNE_EVERY: Final = 3600.0
# JSON-RPC's "method not found": a node without eth_blockNumber (Cloudflare's public gateway)
# is read through eth_getBlockByNumber("latest") instead.
METHOD_NOT_FOUND: Final = -32601


@dataclass(frozen=True, slots=True)
class HeadSources:
    """Who is asked for a chain's head: an RPC pool's nodes (all of them), or tip sources
    (in order, until one answers)."""

    chain: str
    pool: str  # the RPC pool's id, or "tips-<chain>"
    providers: tuple[ProviderConfig, ...]
    evm: bool


@dataclass
class _ChainState:
    head: ChainHead | None = None
    error: UpstreamError | None = None  # the last round's, when every node failed
    reference: int | None = None  # the highest block of the last round that had one
    reference_at: float = -math.inf
    polling: trio.Event | None = None  # set when the round in progress ends


@dataclass
class _Round:
    answers: dict[str, int] = field(default_factory=dict)
    errors: dict[str, UpstreamError] = field(default_factory=dict)


class ChainHeads:
    """Polls, keeps, stores and publishes every chain's head; see the module docstring."""

    def __init__(
        self,
        registry: ProviderRegistry,
        rpc: JsonRpcClient,
        *,
        store: ChainStore | None = None,
        bus: EventBus | None = None,
        interval: float = 30.0,
        max_lag_blocks: int = 5,
        retention_days: float = 30.0,
    ) -> None:
        self.registry = registry
        self.rpc = rpc
        self.store = store
        self.bus = bus
        self.interval = interval
        self.max_lag_blocks = max_lag_blocks
        self.retention_days = retention_days
        self.rounds = 0
        self._state: dict[str, _ChainState] = {}
        self._verified: set[str] = set()  # nodes whose eth_chainId matched their chain
        self._by_latest_block: set[str] = set()  # nodes without eth_blockNumber
        self._lagging: set[str] = set()  # nodes this module benched as lagging
        self._wrong_chain: set[str] = set()  # nodes this module benched for their chain id

    # -- who is asked -------------------------------------------------------------------------

    def sources(self) -> dict[str, HeadSources]:
        """Every chain with a head source: RPC pools' chains, and the tip chains."""
        found: dict[str, HeadSources] = {}
        tips: dict[str, list[ProviderConfig]] = {}
        for provider in self.registry.providers.providers:
            reader = tip_reader_for(provider)
            if reader is not None and self._usable(provider):
                tips.setdefault(reader.chain, []).append(provider)
        for chain, pool in self.registry.rpc_pools().items():
            if chain in tips:
                continue
            members = tuple(m.provider for m in pool.members if self._usable(m.provider))
            if members:
                found[chain] = HeadSources(chain, pool.id, members, evm=True)
        for chain, providers in tips.items():
            ordered = tuple(sorted(providers, key=lambda p: p.priority))
            found[chain] = HeadSources(chain, f"tips-{chain}", ordered, evm=False)
        return dict(sorted(found.items()))

    def _usable(self, provider: ProviderConfig) -> bool:
        return provider.enabled and self.registry.secrets.is_configured(provider)

    # -- reading --------------------------------------------------------------------------------

    def latest(self, chain: str) -> ChainHead | None:
        """The newest head known for a chain (this run's, or the stored one), if any."""
        state = self._state.get(chain)
        return state.head if state is not None else None

    async def heads(self) -> tuple[list[ChainHead], list[UpstreamError]]:
        """Every chain's current head, and the errors of the chains whose last round failed
        (those are left out). A chain with nothing known yet is polled now."""
        sources = self.sources()
        results: dict[str, ChainHead] = {}
        errors: list[UpstreamError] = []

        async def one(chain: str) -> None:
            state = self._state.get(chain)
            if state is None or (state.head is None and state.error is None):
                await self.poll(chain, sources[chain])
                state = self._state[chain]
            if state.error is not None:
                errors.append(state.error)
            elif state.head is not None:
                results[chain] = state.head

        async with trio.open_nursery() as nursery:
            for chain in sources:
                nursery.start_soon(one, chain)
        return [results[chain] for chain in sorted(results)], errors

    # -- polling --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Seed from the store, then poll every chain each `interval`, forever."""
        await self._seed()
        task_status.started()
        pruned_at = -math.inf
        clock = JobClock("chain:heads", self.interval)
        while True:
            await clock.begin()
            async with trio.open_nursery() as nursery:
                for chain, sources in self.sources().items():
                    nursery.start_soon(self.poll, chain, sources)
            self.rounds += 1
            if self.store is not None and trio.current_time() - pruned_at >= PRUNE_EVERY:
                pruned_at = trio.current_time()
                await self._prune()
            await clock.plan(self.interval)
            await trio.sleep(self.interval)

    async def poll(self, chain: str, sources: HeadSources | None = None) -> ChainHead | None:
        """One round for one chain (or wait for the round already running): the head, or None
        when no node answered (the error is kept for `heads()`)."""
        state = self._state.setdefault(chain, _ChainState())
        if state.polling is not None:
            await state.polling.wait()
            return state.head if state.error is None else None
        sources = sources or self.sources().get(chain)
        if sources is None:
            return None
        state.polling = trio.Event()
        try:
            if sources.evm:
                found = await self._evm_round(sources)
            else:
                found = await self._tip_round(sources)
            return await self._settle(state, sources, found)
        finally:
            state.polling.set()
            state.polling = None

    async def _evm_round(self, sources: HeadSources) -> _Round:
        found = _Round()
        async with trio.open_nursery() as nursery:
            for provider in sources.providers:
                nursery.start_soon(self._ask_node, sources.chain, provider, found)
        return found

    async def _ask_node(self, chain: str, provider: ProviderConfig, found: _Round) -> None:
        # At most three calls (chain id, head, the latest block), each under the client's own
        # deadline; this also bounds a wait for rate-limit budget.
        limit = 3 * provider.timeout_seconds + 1
        with trio.move_on_after(limit) as scope:
            try:
                found.answers[provider.id] = await self._node_head(chain, provider)
            except UpstreamError as exc:
                found.errors[provider.id] = exc
        if scope.cancelled_caught:
            found.errors[provider.id] = UpstreamError(
                f"no head within {limit:g}s", provider=provider.id
            )

    async def _node_head(self, chain: str, provider: ProviderConfig) -> int:
        expected = EVM_CHAIN_IDS.get(chain)
        if expected is not None and provider.id not in self._verified:
            await self._verify_chain(chain, expected, provider)
        if provider.id not in self._by_latest_block:
            try:
                return await self.rpc.block_number(provider)
            except JsonRpcError as exc:
                if exc.rpc_code != METHOD_NOT_FOUND:
                    raise
                self._by_latest_block.add(provider.id)
        block = await self.rpc.get_block(provider, "latest")
        if block is None:
            raise UpstreamError("the latest block is null", provider=provider.id)
        return parse_quantity(block["number"])

    async def _verify_chain(self, chain: str, expected: int, provider: ProviderConfig) -> None:
        """Once per node: does it serve the chain its entry names? (A node without
        eth_chainId cannot say, and is taken at its word.)"""
        try:
            chain_id = await self.rpc.chain_id(provider)
        except JsonRpcError as exc:
            if exc.rpc_code != METHOD_NOT_FOUND:
                raise
            chain_id = expected
        if chain_id != expected:
            reason = f"serves chain id {chain_id}, not {chain} ({expected})"
            self._wrong_chain.add(provider.id)
            self.registry.bench(provider.id, reason, state=ProviderState.OFFLINE)
            raise UpstreamError(reason, provider=provider.id)
        if provider.id in self._wrong_chain:
            self._wrong_chain.discard(provider.id)
            self.registry.unbench(provider.id, f"serves {chain} ({expected})")
        self._verified.add(provider.id)

    async def _tip_round(self, sources: HeadSources) -> _Round:
        found = _Round()
        client = self.registry.client
        for provider in sources.providers:
            reader = tip_reader_for(provider)
            if reader is None:
                continue
            if not client.breaker_for(provider).would_allow():
                found.errors[provider.id] = UpstreamError("circuit open", provider=provider.id)
                continue
            if not client.limiter_for(provider).available():
                found.errors[provider.id] = UpstreamError(
                    "no rate-limit budget left", provider=provider.id
                )
                continue
            limit = provider.timeout_seconds + 1
            with trio.move_on_after(limit):
                try:
                    key = self.registry.secrets.key_for(provider)
                    found.answers[provider.id] = await reader.fetch(client, provider, key)
                    return found
                except UpstreamError as exc:
                    found.errors[provider.id] = exc
                    continue
            found.errors[provider.id] = UpstreamError(
                f"no tip within {limit:g}s", provider=provider.id
            )
        return found

    async def _settle(
        self, state: _ChainState, sources: HeadSources, found: _Round
    ) -> ChainHead | None:
        """Judge one round: lags, benching, the head; store and publish it."""
        chain, now = sources.chain, utc_now()
        if not found.answers:
            state.error = PoolExhausted(
                sources.pool,
                [
                    (p.id, _message(found.errors[p.id]), found.errors[p.id].status)
                    for p in sources.providers
                    if p.id in found.errors
                ],
            )
            nodes = [
                NodeHead(chain, pid, None, None, pid in self._lagging, _message(exc), now)
                for pid, exc in found.errors.items()
            ]
            await self._record(None, nodes)
            return None
        highest = max(found.answers.values())
        reference = highest
        if state.reference is not None and (
            trio.current_time() - state.reference_at <= 2 * self.interval + 1
        ):
            reference = max(reference, state.reference)
        state.reference, state.reference_at = highest, trio.current_time()
        nodes = []
        for provider in sources.providers:
            if provider.id in found.answers:
                number = found.answers[provider.id]
                lag = reference - number
                lagging = sources.evm and lag > self.max_lag_blocks
                self._judge(chain, provider.id, lag, reference, lagging)
                nodes.append(NodeHead(chain, provider.id, number, lag, lagging, None, now))
            elif provider.id in found.errors:
                error = _message(found.errors[provider.id])
                lagging = provider.id in self._lagging
                nodes.append(NodeHead(chain, provider.id, None, None, lagging, error, now))
        winner = next(p.id for p in sources.providers if found.answers.get(p.id) == highest)
        head = ChainHead(chain, highest, winner, reference - highest, now, tuple(nodes))
        previous = state.head
        state.head, state.error = head, None
        advanced = previous is None or previous.block_number != highest
        await self._record(head if advanced else None, nodes)
        if advanced and self.bus is not None:
            self.bus.chain_heads.publish(head)
        return head

    def _judge(self, chain: str, node: str, lag: int, reference: int, lagging: bool) -> None:
        """Bench a node that lags past the threshold; let it back once it has caught up."""
        if lagging:
            self._lagging.add(node)
            self.registry.bench(
                node,
                f"lagging {lag} blocks behind the {chain} head {reference}"
                f" (more than {self.max_lag_blocks})",
            )
        elif node in self._lagging:
            self._lagging.discard(node)
            self.registry.unbench(node, f"caught up with the {chain} head ({lag} blocks behind)")

    async def _record(self, head: ChainHead | None, nodes: Sequence[NodeHead]) -> None:
        if self.store is None:
            return
        try:
            await self.store.record_round(head, nodes)
        except StorageError as exc:  # the head is still served and streamed
            log.warning("chains.head_not_stored", error=str(exc))

    async def _seed(self) -> None:
        """The heads stored by the last run, so queries answer before the first round."""
        if self.store is None:
            return
        for head in await self.store.latest_heads():
            state = self._state.setdefault(head.chain, _ChainState())
            if state.head is None:
                state.head = head

    async def _prune(self) -> None:
        assert self.store is not None
        try:
            await self.store.prune(utc_now() - timedelta(days=self.retention_days))
        except StorageError as exc:
            log.warning("chains.prune_failed", error=str(exc))


def _message(error: UpstreamError) -> str:
    """The error's message without the "provider: " prefix UpstreamError adds."""
    text = str(error)
    prefix = f"{error.provider}: "
    return text[len(prefix) :] if text.startswith(prefix) else text

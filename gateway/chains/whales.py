"""Free whale tracking: large transfers found in new EVM blocks, priced by our own consensus.

`EvmWhaleWatch` runs one chain: each `scan_once()` takes a `BlockFollower` step (new blocks
with their Transfer logs, and the blocks a reorg replaced), withdraws the transfers of replaced
blocks, finds the native and ERC-20 transfers of the followed coins (`gateway.chains.transfers`)
and values each at the gateway's consensus price of its `price_symbol` at the block's time
(`price_at`: `gateway.prices.at_time.ConsensusAt`). A transfer worth at least `min_usd` is a
whale: a native one is kept only if its receipt says it succeeded (a reverted transaction moved
nothing), both ends are labelled from `labels.json`, and it is stored (`WhaleStore.record`,
deduplicated by chain + hash + log index) and published once. Withdrawals are published too,
with `removed` set, so a subscriber can take back what it was told.

A transfer whose price is unknown then (no fresh tick, or the providers disagree) is skipped
and counted per symbol (`counters.unpriced`): it is never valued at a guess, a stablecoin at
1.00 included. Upstream trouble ends one scan with an UpstreamError (the loop running it,
`gateway.chains.polling`, logs it and backs off); nothing of a failed scan is committed, so the
next one sees the same blocks again.

Must never publish a transfer twice as new, leave a replaced block's transfer standing, or
value a transfer without a consensus price.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import structlog

from gateway.chains.follower import BlockFollower, ChainRpc, FollowStep
from gateway.chains.tokens import ChainTokens, Labels
from gateway.chains.transfers import Block, Candidate, native_transfers, token_transfers
from gateway.errors import UpstreamPayloadError
from gateway.onchain_models import NATIVE_INDEX, WhaleTransfer

__all__ = [
    "SCAN_PROVIDER",
    "EvmWhaleWatch",
    "PriceAt",
    "WhaleCounters",
    "WhaleSink",
    "price_block",
]

log = structlog.get_logger(__name__)

# The `provider` of whale transfers the gateway found itself, in blocks read over RPC.
SCAN_PROVIDER: Final = "chain-scan"

PriceAt = Callable[[str, datetime], Awaitable[float | None]]


class WhaleSink(Protocol):
    """Where whale transfers go (`gateway.storage.WhaleStore`)."""

    async def record(self, transfers: Sequence[WhaleTransfer]) -> list[WhaleTransfer]: ...

    async def withdraw(self, chain: str, block_hashes: Sequence[str]) -> list[WhaleTransfer]: ...


@dataclass
class WhaleCounters:
    """What a watch has done, for logs, metrics and the bench."""

    blocks: int = 0
    rpc_calls: int = 0
    transfers: int = 0  # candidates seen (native + followed tokens)
    whales: int = 0  # published as new
    duplicates: int = 0  # over the threshold but already stored
    reverted: int = 0  # native candidates whose transaction failed
    skipped_blocks: int = 0
    replaced_blocks: int = 0
    withdrawn: int = 0
    unpriced: Counter[str] = field(default_factory=Counter)


async def price_block(
    candidates: Sequence[Candidate], price_at: PriceAt
) -> dict[str, float | None]:
    """The consensus price of each symbol the candidates need, once per symbol and block time."""
    prices: dict[str, float | None] = {}
    for symbol, at in {(c.price_symbol, c.at) for c in candidates}:
        if symbol not in prices:
            prices[symbol] = await price_at(symbol, at)
    return prices


def _over(
    candidates: Sequence[Candidate],
    prices: dict[str, float | None],
    min_usd: float,
    unpriced: Counter[str],
) -> list[tuple[Candidate, float]]:
    kept: list[tuple[Candidate, float]] = []
    for candidate in candidates:
        price = prices.get(candidate.price_symbol)
        if price is None:
            unpriced[candidate.price_symbol] += 1
            continue
        if candidate.amount * price >= min_usd:
            kept.append((candidate, price))
    return kept


class EvmWhaleWatch:
    """One EVM chain's whale detector; see the module docstring."""

    def __init__(
        self,
        follower: BlockFollower,
        rpc: ChainRpc,
        tokens: ChainTokens,
        labels: Labels,
        price_at: PriceAt,
        sink: WhaleSink,
        publish: Callable[[WhaleTransfer], None],
        *,
        min_usd: float,
        provider: str = SCAN_PROVIDER,
    ) -> None:
        self.chain = tokens.chain
        self.follower = follower
        self.rpc = rpc
        self.tokens = tokens
        self.labels = labels
        self.price_at = price_at
        self.sink = sink
        self.publish = publish
        self.min_usd = min_usd
        self.provider = provider
        self.counters = WhaleCounters()

    async def scan_once(self) -> list[WhaleTransfer]:
        """One step: follow, withdraw, detect, store, publish, commit. Returns what was
        published (new transfers, then withdrawals first when a reorg happened)."""
        step = await self.follower.step()
        counters = self.counters
        counters.rpc_calls += step.calls
        whales: list[WhaleTransfer] = []
        for block, logs in step.blocks:
            whales += await self._detect(block, logs, step)
        withdrawn = await self.sink.withdraw(self.chain, step.replaced)
        fresh = await self.sink.record(whales)
        self.follower.commit(step)
        counters.blocks += len(step.blocks)
        counters.skipped_blocks += step.skipped
        counters.replaced_blocks += len(step.replaced)
        counters.withdrawn += len(withdrawn)
        counters.whales += len(fresh)
        counters.duplicates += len(whales) - len(fresh)
        if step.skipped:
            log.warning("whales.blocks_skipped", chain=self.chain, skipped=step.skipped)
        if step.replaced:
            log.info(
                "whales.reorg", chain=self.chain, replaced=step.replaced, withdrawn=len(withdrawn)
            )
        published = [t.withdrawn() for t in withdrawn] + fresh
        for transfer in published:
            self.publish(transfer)
        return published

    async def _detect(self, block: Block, logs: Any, step: FollowStep) -> list[WhaleTransfer]:
        candidates = native_transfers(block, self.tokens) + token_transfers(
            block, logs, self.tokens
        )
        self.counters.transfers += len(candidates)
        if not candidates:
            return []
        prices = await price_block(candidates, self.price_at)
        kept = _over(candidates, prices, self.min_usd, self.counters.unpriced)
        natives = [c.hash for c, _ in kept if c.log_index == NATIVE_INDEX]
        if natives:
            succeeded = await self._succeeded(natives, step)
            before = len(kept)
            kept = [(c, p) for c, p in kept if c.log_index != NATIVE_INDEX or c.hash in succeeded]
            self.counters.reverted += before - len(kept)
        return [self._whale(c, price) for c, price in kept]

    async def _succeeded(self, hashes: list[str], step: FollowStep) -> set[str]:
        """Which of these transactions succeeded, from their receipts (`status` 0x1)."""
        calls = [("eth_getTransactionReceipt", [h]) for h in hashes]
        step.calls += len(calls)
        answer = await self.rpc.batch(calls)
        ok: set[str] = set()
        for tx_hash, receipt in zip(hashes, answer.results, strict=True):
            if not isinstance(receipt, dict) or receipt.get("status") not in ("0x0", "0x1"):
                # No receipt yet, or one without a status: the node cannot say; ask again later.
                raise UpstreamPayloadError(
                    f"no usable receipt for {tx_hash}", provider=answer.provider
                )
            if receipt["status"] == "0x1":
                ok.add(tx_hash)
        return ok

    def _whale(self, c: Candidate, price: float) -> WhaleTransfer:
        amount = c.amount
        return WhaleTransfer(
            chain=c.chain,
            hash=c.hash,
            log_index=c.log_index,
            from_address=c.from_address,
            to_address=c.to_address,
            asset=c.asset,
            amount=amount,
            amount_usd=amount * price,
            at=c.at,
            provider=self.provider,
            block_number=c.block_number,
            block_hash=c.block_hash,
            from_label=self.labels.label(c.chain, c.from_address),
            to_label=self.labels.label(c.chain, c.to_address),
            price_usd=price,
        )

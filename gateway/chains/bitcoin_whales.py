"""Large Bitcoin transactions, from mempool.space's blocks, priced by our own BTC consensus.

Each `scan_once()` reads the ten newest blocks (`/blocks`). The first scan starts at the newest;
later ones take every block above the newest seen. A block at a height already seen with
another hash means the chain reorganised: every transfer of the replaced blocks is withdrawn
(`WhaleStore.withdraw`, published with `removed`). A new block is read 25 transactions a page
(at most `max_pages` pages; a bigger block is read in part, logged and counted), each
transaction's transfer to others (`mempool_space.btc_transfer`: change excluded) valued at the
gateway's BTC consensus price at the block's time; at least `min_usd` is a whale, labelled from
`labels.json`, stored and published once.

With no BTC price at that time the block is skipped and counted (`unpriced_blocks`): never a
value at a guess. A failure mid-block leaves the block unseen, so the next scan reads it again
(storage deduplicates). Must never publish a transfer twice as new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.chains.tokens import Labels
from gateway.chains.whales import SCAN_PROVIDER, PriceAt, WhaleSink
from gateway.config import ProviderConfig
from gateway.onchain_models import NATIVE_INDEX, WhaleTransfer
from gateway.sources import mempool_space
from gateway.sources.mempool_space import PAGE_SIZE, SATS, BtcBlock
from gateway.upstream import UpstreamClient

__all__ = ["BitcoinWhaleWatch"]

log = structlog.get_logger(__name__)

CHAIN = "bitcoin"


@dataclass
class BitcoinCounters:
    blocks: int = 0
    pages: int = 0
    whales: int = 0
    partial_blocks: int = 0
    unpriced_blocks: int = 0
    withdrawn: int = 0


class BitcoinWhaleWatch:
    """One mempool.space provider's blocks, scanned for whales; see the module docstring."""

    def __init__(
        self,
        client: UpstreamClient,
        provider: ProviderConfig,
        key: str | None,
        labels: Labels,
        price_at: PriceAt,
        sink: WhaleSink,
        publish: Callable[[WhaleTransfer], None],
        *,
        min_usd: float,
        max_pages: int = 300,
        depth: int = 12,
    ) -> None:
        self.client = client
        self.provider = provider
        self.key = key
        self.labels = labels
        self.price_at = price_at
        self.sink = sink
        self.publish = publish
        self.min_usd = min_usd
        self.max_pages = max_pages
        self.depth = depth
        self.seen: dict[int, str] = {}  # height -> hash of blocks scanned
        self.counters = BitcoinCounters()

    async def scan_once(self) -> list[WhaleTransfer]:
        blocks = await mempool_space.fetch_blocks(self.client, self.provider, self.key)
        if not blocks:
            return []
        fork = next(
            (b.height for b in blocks if self.seen.get(b.height) not in (None, b.hash)), None
        )
        # Everything seen at or above the first replaced height was on the old branch.
        replaced = [self.seen.pop(h) for h in sorted(self.seen) if fork is not None and h >= fork]
        published: list[WhaleTransfer] = []
        withdrawn = await self.sink.withdraw(CHAIN, replaced)
        self.counters.withdrawn += len(withdrawn)
        for transfer in withdrawn:
            self.publish(transfer.withdrawn())
            published.append(transfer.withdrawn())
        if self.seen:
            newest = max(self.seen)
        elif fork is not None:
            newest = fork - 1
        else:
            newest = blocks[-1].height - 1  # the first scan starts at the newest block
        for block in blocks:
            if block.height > newest:
                published += await self._scan_block(block)
        return published

    async def _scan_block(self, block: BtcBlock) -> list[WhaleTransfer]:
        price = await self.price_at("BTC", block.at)
        found: list[WhaleTransfer] = []
        if price is None:
            self.counters.unpriced_blocks += 1
            log.warning("whales.btc_unpriced", height=block.height)
        else:
            pages = -(-block.tx_count // PAGE_SIZE)
            if pages > self.max_pages:
                self.counters.partial_blocks += 1
                log.warning("whales.btc_partial", height=block.height, pages=pages)
            for page in range(min(pages, self.max_pages)):
                txs = await mempool_space.fetch_block_txs(
                    self.client, self.provider, self.key, block.hash, page * PAGE_SIZE
                )
                self.counters.pages += 1
                found += self._whales(block, txs, price)
        fresh = await self.sink.record(found)
        self.seen[block.height] = block.hash
        for old in [h for h in self.seen if h <= block.height - self.depth]:
            del self.seen[old]
        self.counters.blocks += 1
        self.counters.whales += len(fresh)
        for transfer in fresh:
            self.publish(transfer)
        return fresh

    def _whales(
        self, block: BtcBlock, txs: list[dict[str, Any]], price: float
    ) -> list[WhaleTransfer]:
        found = []
        for tx in txs:
            transfer = mempool_space.btc_transfer(tx)
            if transfer is None:
                continue
            amount = transfer.sats / SATS
            if amount * price < self.min_usd:
                continue
            found.append(
                WhaleTransfer(
                    chain=CHAIN,
                    hash=transfer.txid,
                    log_index=NATIVE_INDEX,
                    from_address=transfer.from_address,
                    to_address=transfer.to_address,
                    asset="BTC",
                    amount=amount,
                    amount_usd=amount * price,
                    at=block.at,
                    provider=SCAN_PROVIDER,
                    block_number=block.height,
                    block_hash=block.hash,
                    from_label=self.labels.label(CHAIN, transfer.from_address),
                    to_label=self.labels.label(CHAIN, transfer.to_address),
                    price_usd=price,
                )
            )
        return found

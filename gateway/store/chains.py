"""Chain heads, each node's latest report, and gas prices: the tables of migration 8.

Written by the chain collectors (`gateway.chains`) through the batching writer, read at start
(so `chainHeads` and `gas` answer from the last run before the first poll) and by the API.
Heads are stored when a chain's head block changes, gas on every observation; both are pruned
after the chain-data retention. A node's row is replaced every round.

Must never: store a figure the collector did not observe (no carried-forward values), or block
the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from gateway.chain_models import ChainHead, GasPrice, NodeHead
from gateway.models import epoch_ms, from_epoch_ms
from gateway.store.database import Storage

__all__ = ["ChainStore"]

_INSERT_HEAD: Final = """
INSERT OR REPLACE INTO chain_heads (chain, observed_ms, block_number, provider, lag_blocks)
VALUES (?, ?, ?, ?, ?)
"""
_UPSERT_NODE: Final = """
INSERT OR REPLACE INTO chain_node_heads
    (chain, provider, block_number, lag_blocks, lagging, error, observed_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_GAS: Final = """
INSERT OR REPLACE INTO gas_prices
    (chain, observed_ms, provider, slow, standard, fast, base_fee, unit, method, block_number)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_LATEST_HEADS: Final = """
SELECT h.chain, h.observed_ms, h.block_number, h.provider, h.lag_blocks
FROM chain_heads h
WHERE h.observed_ms = (SELECT max(observed_ms) FROM chain_heads WHERE chain = h.chain)
ORDER BY h.chain
"""
_NODES: Final = """
SELECT chain, provider, block_number, lag_blocks, lagging, error, observed_ms
FROM chain_node_heads ORDER BY chain, provider
"""
_LATEST_GAS: Final = """
SELECT g.chain, g.observed_ms, g.provider, g.slow, g.standard, g.fast, g.base_fee, g.unit,
       g.method, g.block_number
FROM gas_prices g
WHERE g.observed_ms = (SELECT max(observed_ms) FROM gas_prices WHERE chain = g.chain)
ORDER BY g.chain
"""
_GAS_HISTORY: Final = """
SELECT chain, observed_ms, provider, slow, standard, fast, base_fee, unit, method, block_number
FROM gas_prices WHERE chain = ? AND observed_ms >= ? ORDER BY observed_ms DESC LIMIT ?
"""


def _gas(row: Sequence[Any]) -> GasPrice:
    chain, observed, provider, slow, standard, fast, base_fee, unit, method, block = row
    return GasPrice(
        chain, slow, standard, fast, base_fee, unit, method, provider, from_epoch_ms(observed),
        block,
    )  # fmt: skip


class ChainStore:
    """Typed reads and writes of the chain tables over one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def record_round(self, head: ChainHead | None, nodes: Sequence[NodeHead]) -> None:
        """One polling round of a chain: every node's report, and the head if it is new."""
        rows = [
            (
                node.chain,
                node.provider,
                node.block_number,
                node.lag_blocks,
                int(node.lagging),
                node.error,
                epoch_ms(node.observed_at),
            )
            for node in nodes
        ]
        if rows:
            await self.storage.write(_UPSERT_NODE, rows)
        if head is not None:
            row = (
                head.chain,
                epoch_ms(head.observed_at),
                head.block_number,
                head.provider,
                head.lag_blocks,
            )
            await self.storage.write(_INSERT_HEAD, [row])

    async def latest_heads(self) -> list[ChainHead]:
        """Each chain's newest stored head, with its nodes' latest reports."""

        def query(db: Any) -> tuple[list[Any], list[Any]]:
            return db.execute(_LATEST_HEADS).fetchall(), db.execute(_NODES).fetchall()

        heads, nodes = await self.storage.read(query)
        by_chain: dict[str, list[NodeHead]] = {}
        for chain, provider, block, lag, lagging, error, observed in nodes:
            by_chain.setdefault(chain, []).append(
                NodeHead(chain, provider, block, lag, bool(lagging), error, from_epoch_ms(observed))
            )
        return [
            ChainHead(chain, block, provider, lag, from_epoch_ms(observed),
                      tuple(by_chain.get(chain, ())))
            for chain, observed, block, provider, lag in heads
        ]  # fmt: skip

    async def record_gas(self, gas: GasPrice) -> None:
        """One observation of a chain's fee tiers."""
        row = (
            gas.chain,
            epoch_ms(gas.observed_at),
            gas.provider,
            gas.slow,
            gas.standard,
            gas.fast,
            gas.base_fee,
            gas.unit,
            gas.method,
            gas.block_number,
        )
        await self.storage.write(_INSERT_GAS, [row])

    async def latest_gas(self) -> list[GasPrice]:
        """Each chain's newest stored fee tiers."""
        rows = await self.storage.read(lambda db: db.execute(_LATEST_GAS).fetchall())
        return [_gas(row) for row in rows]

    async def gas_history(self, chain: str, since: datetime, limit: int = 100) -> list[GasPrice]:
        """A chain's fee tiers since `since`, newest first."""
        params = (chain, epoch_ms(since), limit)
        rows = await self.storage.read(lambda db: db.execute(_GAS_HISTORY, params).fetchall())
        return [_gas(row) for row in rows]

    async def prune(self, before: datetime) -> None:
        """Delete heads and gas observations older than `before` (node rows are current)."""
        cutoff = epoch_ms(before)
        await self.storage.write("DELETE FROM chain_heads WHERE observed_ms < ?", [(cutoff,)])
        await self.storage.write("DELETE FROM gas_prices WHERE observed_ms < ?", [(cutoff,)])

"""Whale transfers (migration 9): recorded once, withdrawn when their block is replaced.

`record()` runs in one transaction of its own (`Storage.transact`) and returns only the
transfers that are new, or that come back after a withdrawal, so the caller publishes each
transfer once however often a block is replayed. A transfer is the same as a stored one when
its (chain, hash, log_index) matches, or, where either side does not know the log
(`NATIVE_INDEX`: a native transfer, or a whale API that does not say which log), when chain,
hash and asset match: the detector and a whale API reporting one transfer make one row.

`withdraw()` marks every transfer seen in the given blocks `removed` and returns them; the
queries leave removed rows out unless asked. Must never delete a withdrawn row (a replay of
the old block must find it and not publish it again as new) or return a row twice from one
`record()`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from gateway.models import epoch_ms, from_epoch_ms, utc_now
from gateway.onchain_models import NATIVE_INDEX, WhaleTransfer
from gateway.store.database import Storage

__all__ = ["WhaleStore"]

_COLUMNS: Final = (
    "chain, hash, log_index, block_number, block_hash, from_address, to_address, from_label,"
    " to_label, asset, amount, amount_usd, price_usd, at_ms, provider, removed"
)
_FIND_SQL: Final = f"""
SELECT {_COLUMNS} FROM whale_transactions
WHERE chain = :chain AND hash = :hash
  AND (log_index = :log_index
       OR ((log_index = {NATIVE_INDEX} OR :log_index = {NATIVE_INDEX}) AND asset = :asset))
LIMIT 1
"""
_INSERT_SQL: Final = f"""
INSERT INTO whale_transactions ({_COLUMNS}, recorded_ms)
VALUES (:chain, :hash, :log_index, :block_number, :block_hash, :from_address, :to_address,
        :from_label, :to_label, :asset, :amount, :amount_usd, :price_usd, :at_ms, :provider, 0,
        :recorded_ms)
"""
_REVIVE_SQL: Final = """
UPDATE whale_transactions
SET removed = 0, block_number = :block_number, block_hash = :block_hash, at_ms = :at_ms,
    amount_usd = :amount_usd, price_usd = :price_usd, recorded_ms = :recorded_ms
WHERE chain = :chain AND hash = :hash AND log_index = :stored_index
"""
_PLACE_SQL: Final = """
UPDATE whale_transactions SET block_number = :block_number, block_hash = :block_hash
WHERE chain = :chain AND hash = :hash AND log_index = :stored_index
"""
_WITHDRAW_SQL: Final = f"""
UPDATE whale_transactions SET removed = 1
WHERE chain = ? AND block_hash = ? AND removed = 0
RETURNING {_COLUMNS}
"""
_RECENT_SQL: Final = f"""
SELECT {_COLUMNS} FROM whale_transactions INDEXED BY whale_transactions_time
WHERE at_ms >= :since
  AND (:chain IS NULL OR chain = :chain)
  AND amount_usd >= :min_usd
  AND (:removed <> 0 OR removed = 0)
ORDER BY at_ms DESC, chain, hash, log_index
LIMIT :limit
"""
_PRUNE_SQL: Final = "DELETE FROM whale_transactions WHERE at_ms < ?"


def _params(t: WhaleTransfer) -> dict[str, Any]:
    return {
        "chain": t.chain,
        "hash": t.hash,
        "log_index": t.log_index,
        "block_number": t.block_number,
        "block_hash": t.block_hash,
        "from_address": t.from_address,
        "to_address": t.to_address,
        "from_label": t.from_label,
        "to_label": t.to_label,
        "asset": t.asset,
        "amount": t.amount,
        "amount_usd": t.amount_usd,
        "price_usd": t.price_usd,
        "at_ms": epoch_ms(t.at),
        "provider": t.provider,
        "recorded_ms": epoch_ms(utc_now()),
    }


def _transfer(row: Sequence[Any]) -> WhaleTransfer:
    (chain, hash_, log_index, number, block_hash, from_address, to_address, from_label,
     to_label, asset, amount, amount_usd, price_usd, at_ms, provider, removed) = row  # fmt: skip
    return WhaleTransfer(
        chain=chain,
        hash=hash_,
        log_index=log_index,
        from_address=from_address,
        to_address=to_address,
        asset=asset,
        amount=amount,
        amount_usd=amount_usd,
        at=from_epoch_ms(at_ms),
        provider=provider,
        block_number=number,
        block_hash=block_hash,
        from_label=from_label,
        to_label=to_label,
        price_usd=price_usd,
        removed=bool(removed),
    )


def _record(conn: sqlite3.Connection, transfers: Sequence[WhaleTransfer]) -> list[WhaleTransfer]:
    fresh: list[WhaleTransfer] = []
    for transfer in transfers:
        params = _params(transfer)
        row = conn.execute(_FIND_SQL, params).fetchone()
        if row is None:
            conn.execute(_INSERT_SQL, params)
            fresh.append(transfer)
            continue
        stored = _transfer(row)
        if stored.block_hash is None and transfer.block_hash is not None and not stored.removed:
            # Reported by an API that did not say its block; now we know it, so a reorg of
            # that block can withdraw it. The same transfer: not news.
            conn.execute(_PLACE_SQL, {**params, "stored_index": stored.log_index})
            continue
        moved = transfer.block_hash is not None and transfer.block_hash != stored.block_hash
        if stored.removed or moved:
            # Back on the chain (in a new branch's block, or the old block again): revive it,
            # in the block it is in now, and tell subscribers once more.
            conn.execute(_REVIVE_SQL, {**params, "stored_index": stored.log_index})
            fresh.append(transfer)
    return fresh


def _withdraw(
    conn: sqlite3.Connection, chain: str, block_hashes: Sequence[str]
) -> list[WhaleTransfer]:
    withdrawn: list[WhaleTransfer] = []
    for block_hash in block_hashes:
        withdrawn += [_transfer(row) for row in conn.execute(_WITHDRAW_SQL, (chain, block_hash))]
    return withdrawn


class WhaleStore:
    """Reads and writes `whale_transactions` through the storage writer and readers."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def record(self, transfers: Sequence[WhaleTransfer]) -> list[WhaleTransfer]:
        """Store `transfers`; returns those that were not stored yet (or were withdrawn), in
        the order given. Raises StorageError when the write fails (nothing is stored then)."""
        if not transfers:
            return []
        batch = list(transfers)
        return await self.storage.transact(lambda conn: _record(conn, batch))

    async def withdraw(self, chain: str, block_hashes: Sequence[str]) -> list[WhaleTransfer]:
        """Mark every live transfer seen in these blocks of `chain` removed; returns them."""
        if not block_hashes:
            return []
        hashes = [h.lower() for h in block_hashes]
        return await self.storage.transact(lambda conn: _withdraw(conn, chain, hashes))

    async def recent(
        self,
        *,
        since: datetime,
        chain: str | None = None,
        min_usd: float = 0.0,
        limit: int = 50,
        include_removed: bool = False,
    ) -> list[WhaleTransfer]:
        """Transfers at or after `since`, newest first, at least `min_usd` each."""
        params = {
            "since": epoch_ms(since),
            "chain": chain,
            "min_usd": min_usd,
            "limit": limit,
            "removed": include_removed,
        }
        rows: list[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_RECENT_SQL, params).fetchall()
        )
        return [_transfer(row) for row in rows]

    async def prune(self, before: datetime) -> None:
        """Delete transfers that happened before `before`."""
        await self.storage.write(_PRUNE_SQL, [(epoch_ms(before),)])

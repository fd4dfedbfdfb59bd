"""Explorer statistics, DEX pools and volumes, and daily TVL (migration 9).

* `network_stats`: every figure an explorer gave, with when (`NetworkStatStore`); the newest per
  (chain, provider, metric) is what `networkStats` serves; old rows are pruned.
* `dex_pools`, `dex_volumes`: each provider's latest snapshot (`DexStore.replace_pools` swaps a
  provider's whole set in one transaction, so a reader never sees half of two snapshots).
* `tvl_daily`, `protocol_tvl_daily`: one value per (scope, UTC day) and per (protocol, UTC day)
  (`TvlStore`), written by the daily DefiLlama collector and read by `tvlHistory` when the
  upstream cannot answer: the gateway's own history, which survives an outage and a restart.

Must never invent a figure: a value an upstream did not give is stored as NULL (pools,
volumes) or not stored at all (statistics, TVL).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from gateway.market_models import DefiProtocol, TvlPoint
from gateway.models import epoch_ms, from_epoch_ms
from gateway.onchain_models import DexPool, DexVolume, NetworkStat
from gateway.store.database import Storage

__all__ = ["DexStore", "NetworkStatStore", "TvlStore", "day_start"]

_STAT_INSERT: Final = """
INSERT OR REPLACE INTO network_stats (chain, provider, metric, observed_ms, value)
VALUES (?, ?, ?, ?, ?)
"""
_STAT_LATEST: Final = """
SELECT s.chain, s.provider, s.metric, s.value, s.observed_ms FROM network_stats AS s
JOIN (SELECT chain, provider, metric, max(observed_ms) AS newest FROM network_stats
      WHERE (:chain IS NULL OR chain = :chain) GROUP BY chain, provider, metric) AS n
  ON s.chain = n.chain AND s.provider = n.provider AND s.metric = n.metric
 AND s.observed_ms = n.newest
ORDER BY s.chain, s.provider, s.metric
"""
_STAT_PRUNE: Final = "DELETE FROM network_stats WHERE observed_ms < ?"

_POOL_DELETE: Final = "DELETE FROM dex_pools WHERE provider = ?"
_POOL_INSERT: Final = """
INSERT OR REPLACE INTO dex_pools
    (provider, pool_id, chain, dex, pair, tvl_usd, volume_24h_usd, observed_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_POOL_TOP: Final = """
SELECT chain, dex, pair, pool_id, tvl_usd, volume_24h_usd, provider, observed_ms FROM dex_pools
WHERE (:chain IS NULL OR chain = :chain)
ORDER BY tvl_usd IS NULL, tvl_usd DESC, volume_24h_usd DESC, provider, pool_id
LIMIT :limit
"""
_VOLUME_DELETE: Final = "DELETE FROM dex_volumes WHERE provider = ?"
_VOLUME_INSERT: Final = """
INSERT OR REPLACE INTO dex_volumes
    (provider, dex, name, chains, volume_24h_usd, change_1d_pct, observed_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_VOLUME_TOP: Final = """
SELECT dex, name, chains, volume_24h_usd, change_1d_pct, provider, observed_ms FROM dex_volumes
ORDER BY volume_24h_usd IS NULL, volume_24h_usd DESC, dex
"""

_TVL_UPSERT: Final = """
INSERT INTO tvl_daily (scope, day_ms, tvl_usd, provider, fetched_ms) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (scope, day_ms) DO UPDATE SET
    tvl_usd = excluded.tvl_usd, provider = excluded.provider, fetched_ms = excluded.fetched_ms
"""
_TVL_SERIES: Final = """
SELECT day_ms, tvl_usd, provider, fetched_ms FROM tvl_daily
WHERE scope = ? AND day_ms >= ? ORDER BY day_ms
"""
_PROTOCOL_UPSERT: Final = """
INSERT OR REPLACE INTO protocol_tvl_daily (slug, day_ms, name, tvl_usd, provider)
VALUES (?, ?, ?, ?, ?)
"""
_PROTOCOL_DAY: Final = """
SELECT slug, name, tvl_usd, provider, day_ms FROM protocol_tvl_daily
WHERE day_ms = (SELECT max(day_ms) FROM protocol_tvl_daily)
ORDER BY tvl_usd DESC, slug
"""


def day_start(moment: datetime) -> datetime:
    """Midnight UTC of `moment`'s day."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)


class NetworkStatStore:
    """Explorer statistics: appended as observed, the newest served."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def add(self, stats: Sequence[NetworkStat]) -> None:
        rows = [(s.chain, s.provider, s.metric, epoch_ms(s.observed_at), s.value) for s in stats]
        if rows:
            await self.storage.write(_STAT_INSERT, rows)

    async def latest(self, chain: str | None = None) -> list[NetworkStat]:
        """The newest value of every (chain, provider, metric), optionally of one chain."""
        rows: list[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_STAT_LATEST, {"chain": chain}).fetchall()
        )
        return [
            NetworkStat(chain_, provider, metric, value, from_epoch_ms(observed))
            for chain_, provider, metric, value, observed in rows
        ]

    async def prune(self, before: datetime) -> None:
        await self.storage.write(_STAT_PRUNE, [(epoch_ms(before),)])


def _replace(
    conn: sqlite3.Connection, delete: str, insert: str, provider: str, rows: list[tuple[Any, ...]]
) -> None:
    conn.execute(delete, (provider,))
    conn.executemany(insert, rows)


class DexStore:
    """Each provider's latest DEX pools and DEX volumes."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def replace_pools(self, provider: str, pools: Sequence[DexPool]) -> None:
        """Make `pools` the provider's whole snapshot (one transaction)."""
        rows = [
            (provider, p.pool_id, p.chain, p.dex, p.pair, p.tvl_usd, p.volume_24h_usd,
             epoch_ms(p.observed_at))
            for p in pools
        ]  # fmt: skip
        await self.storage.transact(
            lambda conn: _replace(conn, _POOL_DELETE, _POOL_INSERT, provider, rows)
        )

    async def top_pools(self, *, chain: str | None = None, limit: int = 20) -> list[DexPool]:
        """Pools by TVL, largest first (those without a TVL last)."""
        params = {"chain": chain, "limit": limit}
        rows: list[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_POOL_TOP, params).fetchall()
        )
        return [
            DexPool(chain_, dex, pair, pool_id, tvl, volume, provider, from_epoch_ms(observed))
            for chain_, dex, pair, pool_id, tvl, volume, provider, observed in rows
        ]

    async def replace_volumes(self, provider: str, volumes: Sequence[DexVolume]) -> None:
        rows = [
            (provider, v.dex, v.name, json.dumps(list(v.chains)), v.volume_24h_usd,
             v.change_1d_pct, epoch_ms(v.observed_at))
            for v in volumes
        ]  # fmt: skip
        await self.storage.transact(
            lambda conn: _replace(conn, _VOLUME_DELETE, _VOLUME_INSERT, provider, rows)
        )

    async def volumes(self) -> list[DexVolume]:
        """Every DEX's latest 24 h volume, largest first."""
        rows: list[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_VOLUME_TOP).fetchall()
        )
        return [
            DexVolume(dex, name, tuple(json.loads(chains)), volume, change, provider,
                      from_epoch_ms(observed))
            for dex, name, chains, volume, change, provider, observed in rows
        ]  # fmt: skip


class TvlStore:
    """Daily TVL, total (scope "all") or per chain, and per protocol."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def add_series(
        self, scope: str, points: Sequence[TvlPoint], provider: str, fetched_at: datetime
    ) -> None:
        """Upsert one value per UTC day (a later fetch of a day replaces the earlier one)."""
        fetched = epoch_ms(fetched_at)
        rows = [(scope, epoch_ms(day_start(p.date)), p.tvl_usd, provider, fetched) for p in points]
        if rows:
            await self.storage.write(_TVL_UPSERT, rows)

    async def series(self, scope: str, since: datetime) -> list[tuple[TvlPoint, str, datetime]]:
        """Stored days from `since` on, oldest first: (point, provider, when it was fetched)."""
        rows: list[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_TVL_SERIES, (scope, epoch_ms(since))).fetchall()
        )
        return [
            (TvlPoint(from_epoch_ms(day), tvl), provider, from_epoch_ms(fetched))
            for day, tvl, provider, fetched in rows
        ]

    async def add_protocols(
        self, day: datetime, protocols: Sequence[DefiProtocol], provider: str
    ) -> None:
        """One day's snapshot of protocol TVLs (protocols without a TVL are not stored)."""
        day_ms = epoch_ms(day_start(day))
        rows = [
            (p.slug, day_ms, p.name, p.tvl_usd, provider)
            for p in protocols
            if p.tvl_usd is not None
        ]
        if rows:
            await self.storage.write(_PROTOCOL_UPSERT, rows)

    async def latest_protocols(self) -> list[tuple[str, str, float, str, datetime]]:
        """The newest stored day's protocols: (slug, name, tvl_usd, provider, day)."""
        rows: list[Sequence[Any]] = await self.storage.read(
            lambda db: db.execute(_PROTOCOL_DAY).fetchall()
        )
        return [
            (slug, name, tvl, provider, from_epoch_ms(day))
            for slug, name, tvl, provider, day in rows
        ]

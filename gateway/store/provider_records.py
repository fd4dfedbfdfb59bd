"""Persistence of everything the gateway learns about its providers.

Connection attempts, failures, rate-limit usage, provider states, pools and their members,
rotation history and state, and alerts — the tables of migration 2 in migrations.py. All writes
go through the Storage writer (batched, flushed on shutdown); all reads through its read-only
pool, off the event loop. Times are stored as epoch milliseconds.

Attempts are recorded best-effort (`write_nowait`): bookkeeping never blocks an upstream call,
and a full queue drops the record (counted in `Storage.dropped_rows`) rather than wait.
Attempts and failures older than the retention are pruned by `prune()`.

Must never: store a secret (endpoints are recorded as the client masked them), or block the
event loop.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.models import AlertRecord, FailureRecord, epoch_ms, from_epoch_ms, utc_now
from gateway.store.database import Storage

__all__ = ["PoolRecord", "ProviderStore"]


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """A pool as persisted (created by a mutation or from providers.toml)."""

    id: str
    name: str
    category: str
    strategy: str
    members: tuple[tuple[str, int, float], ...]  # (provider, priority, weight)
    current: str | None = None


@dataclass(frozen=True, slots=True)
class RotationRecord:
    pool: str
    from_provider: str | None
    to_provider: str
    reason: str
    at: datetime


class ProviderStore:
    """Typed reads and writes of the provider tables over one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # -- attempts and failures ----------------------------------------------------------------

    def record_attempt(
        self,
        *,
        provider: str,
        endpoint: str,
        status: int | None,
        latency_ms: float | None,
        error_type: str | None,
        message: str | None,
        at: datetime,
    ) -> None:
        """Queue one attempt (and a failure row when it failed); never waits."""
        at_ms = epoch_ms(at)
        self.storage.write_nowait(
            "INSERT INTO connection_attempts (provider, endpoint, status, latency_ms, error_type,"
            " at_ms) VALUES (?, ?, ?, ?, ?, ?)",
            [(provider, endpoint, status, latency_ms, error_type, at_ms)],
        )
        if error_type is not None:
            self.storage.write_nowait(
                "INSERT INTO failures (provider, error_type, message, http_status, at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                [(provider, error_type, message or error_type, status, at_ms)],
            )

    async def failures(
        self, provider: str | None = None, since: datetime | None = None, limit: int = 50
    ) -> list[FailureRecord]:
        """Newest first."""
        clauses, params = ["at_ms >= ?"], [epoch_ms(since) if since else 0]
        if provider is not None:
            clauses.append("provider = ?")
            params.append(provider)  # type: ignore[arg-type]
        sql = (
            "SELECT provider, error_type, message, http_status, at_ms FROM failures WHERE "
            + " AND ".join(clauses)
            + " ORDER BY at_ms DESC, id DESC LIMIT ?"
        )
        rows = await self.storage.read(lambda db: db.execute(sql, [*params, limit]).fetchall())
        return [FailureRecord(p, e, m, s, from_epoch_ms(at)) for p, e, m, s, at in rows]

    async def attempt_stats(self, since: datetime) -> dict[str, tuple[int, int, float | None]]:
        """Per provider since `since`: (attempts, successes, mean latency of successes)."""
        sql = (
            "SELECT provider, count(*), count(CASE WHEN error_type IS NULL THEN 1 END),"
            " avg(CASE WHEN error_type IS NULL THEN latency_ms END)"
            " FROM connection_attempts WHERE at_ms >= ? GROUP BY provider"
        )
        rows = await self.storage.read(lambda db: db.execute(sql, [epoch_ms(since)]).fetchall())
        return {p: (int(n), int(ok or 0), latency) for p, n, ok, latency in rows}

    async def prune(self, older_than: timedelta) -> None:
        """Delete attempts and failures older than the retention."""
        cutoff = epoch_ms(utc_now() - older_than)
        await self.storage.execute_now("DELETE FROM connection_attempts WHERE at_ms < ?", [cutoff])
        await self.storage.execute_now("DELETE FROM failures WHERE at_ms < ?", [cutoff])

    # -- provider states and rate-limit usage -------------------------------------------------

    async def save_state(
        self, provider: str, state: str, last_checked: datetime | None, last_error: str | None
    ) -> None:
        await self.storage.write(
            "INSERT INTO providers (id, state, last_checked_ms, last_error, updated_ms)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
            " last_checked_ms = excluded.last_checked_ms, last_error = excluded.last_error,"
            " updated_ms = excluded.updated_ms",
            [
                (
                    provider,
                    state,
                    epoch_ms(last_checked) if last_checked else None,
                    last_error,
                    epoch_ms(utc_now()),
                )
            ],
        )

    async def states(self) -> dict[str, tuple[str, datetime | None, str | None]]:
        rows = await self.storage.read(
            lambda db: db.execute(
                "SELECT id, state, last_checked_ms, last_error FROM providers"
            ).fetchall()
        )
        return {p: (s, from_epoch_ms(c) if c is not None else None, e) for p, s, c, e in rows}

    async def save_usage(self, provider: str, window: str, snapshot: Any) -> None:
        await self.storage.write(
            "INSERT INTO rate_limit_usage (provider, window, snapshot, updated_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (provider, window) DO UPDATE SET"
            " snapshot = excluded.snapshot, updated_ms = excluded.updated_ms",
            [(provider, window, json.dumps(snapshot), epoch_ms(utc_now()))],
        )

    async def usage(self) -> dict[tuple[str, str], Any]:
        rows = await self.storage.read(
            lambda db: db.execute(
                "SELECT provider, window, snapshot FROM rate_limit_usage"
            ).fetchall()
        )
        return {(p, w): json.loads(snapshot) for p, w, snapshot in rows}

    # -- pools and rotations ------------------------------------------------------------------

    async def save_pool(self, pool: PoolRecord) -> None:
        """Create or replace a pool and its member list, atomically."""
        now = epoch_ms(utc_now())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO pools (id, name, category, strategy, created_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                " category = excluded.category, strategy = excluded.strategy",
                [pool.id, pool.name, pool.category, pool.strategy, now],
            )
            conn.execute("DELETE FROM pool_members WHERE pool = ?", [pool.id])
            conn.executemany(
                "INSERT INTO pool_members (pool, provider, priority, weight) VALUES (?, ?, ?, ?)",
                [
                    (pool.id, provider, priority, weight)
                    for provider, priority, weight in pool.members
                ],
            )

        await self.storage.transact(work)

    async def delete_pool(self, pool_id: str) -> bool:
        """Remove a pool with its members and rotation state; False if there was none."""

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM pool_members WHERE pool = ?", [pool_id])
            conn.execute("DELETE FROM rotation_state WHERE pool = ?", [pool_id])
            return conn.execute("DELETE FROM pools WHERE id = ?", [pool_id]).rowcount > 0

        return await self.storage.transact(work)

    async def pools(self) -> list[PoolRecord]:
        def query(db: Any) -> list[PoolRecord]:
            members: dict[str, list[tuple[str, int, float]]] = {}
            for pool, provider, priority, weight in db.execute(
                "SELECT pool, provider, priority, weight FROM pool_members ORDER BY pool, priority"
            ).fetchall():
                members.setdefault(pool, []).append((provider, priority, weight))
            current = dict(
                db.execute("SELECT pool, current_provider FROM rotation_state").fetchall()
            )
            return [
                PoolRecord(
                    pid, name, category, strategy, tuple(members.get(pid, ())), current.get(pid)
                )
                for pid, name, category, strategy in db.execute(
                    "SELECT id, name, category, strategy FROM pools ORDER BY created_ms, id"
                ).fetchall()
            ]

        return await self.storage.read(query)

    async def record_rotation(
        self, pool: str, from_provider: str | None, to_provider: str, reason: str, at: datetime
    ) -> None:
        await self.storage.write(
            "INSERT INTO rotation_history (pool, from_provider, to_provider, reason, at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            [(pool, from_provider, to_provider, reason, epoch_ms(at))],
        )
        await self.storage.write(
            "INSERT INTO rotation_state (pool, current_provider, updated_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (pool) DO UPDATE SET current_provider = excluded.current_provider,"
            " updated_ms = excluded.updated_ms",
            [(pool, to_provider, epoch_ms(at))],
        )

    async def rotations(self, pool: str | None = None, limit: int = 50) -> list[RotationRecord]:
        """Newest first."""
        where, params = ("WHERE pool = ?", [pool]) if pool else ("", [])
        sql = (
            "SELECT pool, from_provider, to_provider, reason, at_ms FROM rotation_history "
            f"{where} ORDER BY at_ms DESC, id DESC LIMIT ?"
        )
        rows = await self.storage.read(lambda db: db.execute(sql, [*params, limit]).fetchall())
        return [RotationRecord(p, f, t, r, from_epoch_ms(at)) for p, f, t, r, at in rows]

    # -- alerts -------------------------------------------------------------------------------

    async def create_alert(
        self, severity: str, kind: str, message: str, provider: str | None, at: datetime
    ) -> AlertRecord:
        alert_id, _ = await self.storage.execute_now(
            "INSERT INTO alerts (severity, kind, message, provider, at_ms, acknowledged)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            [severity, kind, message, provider, epoch_ms(at)],
        )
        return AlertRecord(alert_id, severity, kind, message, provider, at, False)

    async def acknowledge_alert(self, alert_id: int) -> AlertRecord | None:
        await self.storage.execute_now(
            "UPDATE alerts SET acknowledged = 1 WHERE id = ?", [alert_id]
        )
        found = await self.alerts(alert_id=alert_id)
        return found[0] if found else None

    async def alerts(
        self, unacknowledged_only: bool = False, limit: int = 200, alert_id: int | None = None
    ) -> list[AlertRecord]:
        """Newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        if unacknowledged_only:
            clauses.append("acknowledged = 0")
        if alert_id is not None:
            clauses.append("id = ?")
            params.append(alert_id)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = (
            "SELECT id, severity, kind, message, provider, at_ms, acknowledged FROM alerts "
            f"{where} ORDER BY at_ms DESC, id DESC LIMIT ?"
        )
        rows = await self.storage.read(lambda db: db.execute(sql, [*params, limit]).fetchall())
        return [
            AlertRecord(i, s, k, m, p, from_epoch_ms(at), bool(a)) for i, s, k, m, p, at, a in rows
        ]

"""API keys at rest: how they are made, stored, found, revoked, and how much they are used.

A key looks like ``gw_<prefix>_<secret>``: `prefix` is 8 random lowercase hex characters, public
(it names the key in `gateway keys list` and finds its row), and `secret` is 32 random bytes in
URL-safe base64. Only the SHA-256 of the whole key is stored, and the plain key is shown once,
by `gateway keys create`.

Why SHA-256 and not a slow KDF (scrypt, argon2): a slow hash protects *low-entropy* secrets
(passwords) whose hashes leak, by making each dictionary guess expensive. A 256-bit random
secret has no dictionary: finding a preimage of its SHA-256 takes about 2**255 guesses however
fast each guess is, so slowness buys nothing. It would cost something, though: every request
that presents a key (a bogus one included) would pay the KDF, which turns authentication into
a CPU-exhaustion target. Hashes are compared with `hmac.compare_digest`.

Tables (migration 3 in migrations.py): `api_keys` (one row per key; revoked keys stay, with
`revoked_ms`, so `list` shows them and an id is never reused) and `api_key_usage` (requests per
key per UTC day, saved periodically by gateway.api.auth.control). Times are epoch milliseconds.

The synchronous functions take any connection with `execute` (sqlite3 or sqlite-utils) and are
what both the server (`KeyStore`, through `Storage`, off the event loop) and the `gateway keys`
CLI use, so the server and the CLI can share one database file: SQLite's WAL lets the CLI write
while the server runs, and the server notices revocations by polling (gateway.api.auth.control).

Must never: store, return (after `create`) or log a plain key; compare secrets with `==`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from gateway.errors import BadUserInput
from gateway.models import epoch_ms, from_epoch_ms, utc_now
from gateway.store.database import Storage
from gateway.vocabulary import ROLES, TIER_NAMES

__all__ = [
    "KEY_PATTERN",
    "KeyRecord",
    "KeyStore",
    "create_key",
    "find_key",
    "hash_key",
    "list_keys",
    "revoke_key",
]


KEY_PREFIX: Final = "gw_"
# The whole key; `SecretMasker` (gateway.log) masks anything of this shape in log lines.
KEY_PATTERN: Final = re.compile(r"gw_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_NAME_MAX: Final = 100


class _Executes(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else from_epoch_ms(ms)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as stored, without its secret or hash."""

    id: int
    name: str
    role: str
    tier: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def display_prefix(self) -> str:
        """What identifies the key to people: ``gw_<prefix>``, never more of it."""
        return f"{KEY_PREFIX}{self.prefix}"


_COLUMNS = "id, name, role, tier, prefix, created_ms, last_used_ms, revoked_ms"


def _record(row: Sequence[Any]) -> KeyRecord:
    key_id, name, role, tier, prefix, created, last_used, revoked = row
    created_at = _at(created)
    assert created_at is not None
    return KeyRecord(key_id, name, role, tier, prefix, created_at, _at(last_used), _at(revoked))


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _check(name: str, role: str, tier: str) -> None:
    if not name.strip() or len(name) > _NAME_MAX or not name.isprintable():
        raise BadUserInput(f"a key name is 1 to {_NAME_MAX} printable characters")
    if role not in ROLES:
        raise BadUserInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if tier not in TIER_NAMES:
        raise BadUserInput(f"tier must be one of {', '.join(TIER_NAMES)}, got {tier!r}")


def create_key(
    conn: _Executes, name: str, role: str, tier: str, now: datetime | None = None
) -> tuple[KeyRecord, str]:
    """Insert a new key; returns its record and the plain key (the only time it exists).

    Run inside a transaction. Raises BadUserInput for a bad name, role or tier.
    """
    _check(name, role, tier)
    created = epoch_ms(now or utc_now())
    for _ in range(8):  # 2**32 prefixes: a clash is rare, and then another draw settles it
        prefix = secrets.token_hex(4)
        taken = conn.execute("SELECT 1 FROM api_keys WHERE prefix = ?", [prefix]).fetchone()
        if taken is None:
            break
    else:  # pragma: no cover - would take billions of keys
        raise RuntimeError("could not draw an unused key prefix")
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    cursor = conn.execute(
        "INSERT INTO api_keys (name, role, tier, prefix, hash, created_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [name, role, tier, prefix, hash_key(key), created],
    )
    record = KeyRecord(int(cursor.lastrowid), name, role, tier, prefix, _at(created) or utc_now())
    return record, key


def list_keys(conn: _Executes, *, include_revoked: bool = True) -> list[KeyRecord]:
    """Every key, oldest first."""
    where = "" if include_revoked else " WHERE revoked_ms IS NULL"
    rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY id").fetchall()
    return [_record(row) for row in rows]


def revoke_key(conn: _Executes, key_id: int, now: datetime | None = None) -> KeyRecord | None:
    """Mark a key revoked (keeping the first revocation time); None when there is no such key.

    Run inside a transaction.
    """
    conn.execute(
        "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
        [epoch_ms(now or utc_now()), key_id],
    )
    row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", [key_id]).fetchone()
    return _record(row) if row is not None else None


def find_key(conn: _Executes, presented: str) -> KeyRecord | None:
    """The live key `presented` is, or None (malformed, unknown, wrong secret, or revoked)."""
    match = KEY_PATTERN.fullmatch(presented)
    if match is None:
        return None
    row = conn.execute(
        f"SELECT {_COLUMNS}, hash FROM api_keys WHERE prefix = ?", [match.group(1)]
    ).fetchone()
    if row is None:
        return None
    # Constant time in the secret: the prefix is public, the hash comparison is not a
    # character-by-character oracle.
    if not hmac.compare_digest(row[-1], hash_key(presented)):
        return None
    record = _record(row[:-1])
    return None if record.revoked else record


class KeyStore:
    """The key tables over one `Storage`: reads off the event loop, writes through its writer."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def create(self, name: str, role: str, tier: str) -> tuple[KeyRecord, str]:
        """A new key and its plain text (show it once, store it nowhere)."""
        _check(name, role, tier)
        return await self.storage.transact(lambda conn: create_key(conn, name, role, tier))

    async def records(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        """Every key, oldest first."""
        return await self.storage.read(lambda db: list_keys(db, include_revoked=include_revoked))

    async def revoke(self, key_id: int) -> KeyRecord | None:
        return await self.storage.transact(lambda conn: revoke_key(conn, key_id))

    async def verify(self, presented: str) -> KeyRecord | None:
        """The live key record for a presented key, or None. Malformed keys cost no query."""
        if KEY_PATTERN.fullmatch(presented) is None:
            return None
        return await self.storage.read(lambda db: find_key(db, presented))

    async def is_live(self, key_id: int) -> bool:
        """Whether the key exists and is not revoked (one primary-key lookup)."""
        row = await self.storage.read(
            lambda db: db.execute(
                "SELECT revoked_ms IS NULL FROM api_keys WHERE id = ?", [key_id]
            ).fetchone()
        )
        return bool(row and row[0])

    async def revoked_among(self, key_ids: Iterable[int]) -> set[int]:
        """Which of these keys are revoked (or gone)."""
        wanted = sorted(set(key_ids))
        if not wanted:
            return set()
        marks = ", ".join("?" * len(wanted))
        live = await self.storage.read(
            lambda db: db.execute(
                f"SELECT id FROM api_keys WHERE id IN ({marks}) AND revoked_ms IS NULL", wanted
            ).fetchall()
        )
        return set(wanted) - {row[0] for row in live}

    def touch(self, key_id: int, at: datetime) -> None:
        """Record a use (best-effort, never waits; the caller limits how often)."""
        self.storage.write_nowait(
            "UPDATE api_keys SET last_used_ms = ? WHERE id = ?", [(epoch_ms(at), key_id)]
        )

    async def save_usage(self, rows: Sequence[tuple[int, str, int]]) -> None:
        """Store (key id, UTC day, requests) counts; a count never goes down."""
        await self.storage.write(
            "INSERT INTO api_key_usage (key_id, day, requests) VALUES (?, ?, ?)"
            " ON CONFLICT (key_id, day) DO UPDATE SET requests = max(requests, excluded.requests)",
            rows,
        )

    async def usage_on(self, day: str) -> dict[int, int]:
        """Requests per key on one UTC day (YYYY-MM-DD), as last saved."""
        rows = await self.storage.read(
            lambda db: db.execute(
                "SELECT key_id, requests FROM api_key_usage WHERE day = ?", [day]
            ).fetchall()
        )
        return {int(key_id): int(requests) for key_id, requests in rows}

"""Which database the gateway uses: GATEWAY_DB or `--db`, a SQLite file or a PostgreSQL URL.

The value is a path (the embedded default, `data/gateway.db`) unless it starts with
`postgresql://` or `postgres://`, which puts the history on that PostgreSQL server
(gateway.store.postgres). A URL must never become a `Path` (that would fold its `//`), so the
two live in separate settings: `db_path` and `db_url` (None: SQLite).

This module only reads strings; it never connects to anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["database_overrides", "is_database_url"]

_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(value: str) -> bool:
    """Whether `value` names a PostgreSQL database rather than a SQLite file."""
    return value.startswith(_SCHEMES)


def database_overrides(value: str | Path | None) -> dict[str, Any]:
    """The settings GATEWAY_DB or `--db` set: `db_url` for a PostgreSQL URL, `db_path` (and
    no URL) for a file; nothing when unset."""
    if value is None or not str(value).strip():
        return {}
    text = str(value).strip()
    if is_database_url(text):
        return {"db_url": text}
    return {"db_path": Path(text), "db_url": ""}

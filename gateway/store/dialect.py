"""The store's SQL, written for SQLite, as PostgreSQL runs it: one set of queries, two engines.

Every statement of `gateway.store` is written once, in the SQLite dialect it has always used;
`postgres_sql()` rewrites it for PostgreSQL where the two differ, and `postgres_ddl()` does the
same for the column types of a migration:

- placeholders: `?` and `?N` (positional) and `:name` (named) become psycopg's `%s` and
  `%(name)s` (a literal `%` is doubled); `postgres_params()` turns `?N` arguments into a dict;
  a named parameter only tested for NULL is cast to text (PostgreSQL must know its type);
- `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING`, and `INSERT OR REPLACE` an upsert on
  the table's primary key (`PRIMARY_KEYS`, read from the migrations);
- `json_each(x)` becomes `json_array_elements_text(CAST(x AS json))` (a column named `value`,
  as in SQLite), the two-argument scalar `min`/`max` become `least`/`greatest`, `INDEXED BY`
  hints are dropped, `rowid` is `ctid`, and the reserved word `window` is quoted;
- the FTS5 match on `news_fts` becomes a match of the `search` tsvector of news_articles
  (migration 7 on PostgreSQL: a generated column with a GIN index) against
  `websearch_to_tsquery`, which, like `fts_query`'s quoted phrases, has no syntax a user can
  break.

Rewrites are cached per statement. This module must never touch a connection: it is string
functions only, run by `gateway.store.postgres` just before psycopg sends a statement. It must
never change what a statement means on SQLite: the SQLite engine never calls it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "IDENTITY_TABLES",
    "PRIMARY_KEYS",
    "identity_insert",
    "postgres_ddl",
    "postgres_params",
    "postgres_sql",
    "table_keys",
]

# Strings in single quotes are copied as they are; everything else may be rewritten.
_LITERAL: Final = re.compile(r"('(?:[^']|'')*')")
_NUMBERED: Final = re.compile(r"\?(\d+)")
_NAMED: Final = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_NULL_TEST: Final = re.compile(r"(?<![:\w]):([A-Za-z_]\w*) IS NULL")
_INSERT_OR: Final = re.compile(r"\bINSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)", re.IGNORECASE)
_COLUMNS_AFTER: Final = re.compile(r"\s*\(([^)]*)\)")
_RETURNING: Final = re.compile(r"\bRETURNING\b", re.IGNORECASE)
_INDEXED_BY: Final = re.compile(r"\s+INDEXED\s+BY\s+\w+", re.IGNORECASE)
_JSON_EACH: Final = re.compile(r"\bjson_each\(([^()]+)\)")
_SCALAR_MIN_MAX: Final = re.compile(r"\b(min|max)\(([^(),]+),([^(),]+)\)")
_ROWID: Final = re.compile(r"\browid\b")
# Lower case only: the rate_limit_usage column; a `WINDOW w AS` clause stays as it is.
_WINDOW_COLUMN: Final = re.compile(r'(?<!")\bwindow\b(?!")')
_FTS_MATCH: Final = re.compile(
    r"SELECT rowid FROM news_fts WHERE news_fts MATCH (:\w+|\?)", re.IGNORECASE
)
_INSERT_INTO: Final = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)

# table -> its primary-key columns, and the tables whose key is an `id INTEGER PRIMARY KEY`
# (a rowid alias in SQLite, an identity column in PostgreSQL). Filled from the migrations by
# `table_keys()` (gateway.store.migrations calls it once at import).
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {}
IDENTITY_TABLES: set[str] = set()

_CREATE_TABLE: Final = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)\s*\((.*)\)", re.DOTALL)
_TABLE_KEY: Final = re.compile(r"PRIMARY KEY\s*\(([^)]*)\)")
_INTEGER_KEY: Final = re.compile(r"\bid INTEGER PRIMARY KEY\b")
_COLUMN_KEY: Final = re.compile(r"^\s*(\w+)\s+\w+\s+PRIMARY KEY", re.MULTILINE)


def table_keys(statements: Sequence[str]) -> None:
    """Record the primary key of every table the CREATE TABLE `statements` make."""
    for statement in statements:
        found = _CREATE_TABLE.search(statement)
        if found is None:
            continue
        table, body = found.group(1), found.group(2)
        if (key := _TABLE_KEY.search(body)) is not None:
            PRIMARY_KEYS[table] = tuple(c.strip() for c in key.group(1).split(","))
        elif (column := _COLUMN_KEY.search(body)) is not None:
            PRIMARY_KEYS[table] = (column.group(1),)
            if _INTEGER_KEY.search(body):
                IDENTITY_TABLES.add(table)


def _outside_literals(sql: str, rewrite: Any) -> str:
    parts = _LITERAL.split(sql)
    return "".join(part if i % 2 else rewrite(part) for i, part in enumerate(parts))


def _insert_or(sql: str) -> str:
    found = _INSERT_OR.search(sql)
    if found is None:
        return sql
    mode, table = found.group(1).upper(), found.group(2)
    head = sql[: found.start()] + f"INSERT INTO {table}"
    rest = sql[found.end() :]
    returning = _RETURNING.search(rest)
    body, tail = (
        (rest, "") if returning is None else (rest[: returning.start()], rest[returning.start() :])
    )
    if mode == "IGNORE":
        conflict = " ON CONFLICT DO NOTHING "
    else:
        columns_match = _COLUMNS_AFTER.match(rest)
        if columns_match is None or table not in PRIMARY_KEYS:
            raise ValueError(f"INSERT OR REPLACE INTO {table} needs a column list and a key")
        key = PRIMARY_KEYS[table]
        columns = [c.strip() for c in columns_match.group(1).split(",")]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        conflict = f" ON CONFLICT ({', '.join(key)}) {action} "
    return head + body.rstrip() + conflict + tail


def _placeholders(text: str) -> str:
    text = text.replace("%", "%%")
    text = _NUMBERED.sub(lambda m: f"%(p{m.group(1)})s", text)
    text = text.replace("?", "%s")
    # "(:chain IS NULL OR chain = :chain)": PostgreSQL cannot type a parameter that is only
    # tested for NULL; these optional filters are all on text columns.
    text = _NULL_TEST.sub(lambda m: f"CAST(%({m.group(1)})s AS text) IS NULL", text)
    return _NAMED.sub(lambda m: f"%({m.group(1)})s", text)


def _words(text: str) -> str:
    text = _INDEXED_BY.sub("", text)
    text = _JSON_EACH.sub(lambda m: f"json_array_elements_text(CAST({m.group(1)} AS json))", text)
    text = _SCALAR_MIN_MAX.sub(
        lambda m: f"{'least' if m.group(1) == 'min' else 'greatest'}({m.group(2)},{m.group(3)})",
        text,
    )
    text = _ROWID.sub("ctid", text)
    return _WINDOW_COLUMN.sub('"window"', text)


@lru_cache(maxsize=1024)
def postgres_sql(sql: str) -> tuple[str, bool]:
    """`sql` (SQLite dialect) for psycopg, and whether its `?N` arguments must become a dict
    (`postgres_params`)."""
    numbered = _NUMBERED.search(sql) is not None
    text = _FTS_MATCH.sub(
        lambda m: (
            "SELECT id FROM news_articles WHERE search @@"
            f" websearch_to_tsquery('simple', {m.group(1)})"
        ),
        sql,
    )
    text = _outside_literals(text, lambda part: _placeholders(_words(part)))
    return _insert_or(text), numbered


def postgres_params(params: Sequence[Any] | Mapping[str, Any], numbered: bool) -> Any:
    """The arguments of a statement rewritten by `postgres_sql`, as psycopg takes them."""
    if numbered and not isinstance(params, Mapping):
        return {f"p{i}": value for i, value in enumerate(params, start=1)}
    return params


def identity_insert(sql: str) -> bool:
    """Whether `sql` inserts into a table with an identity `id` and returns nothing yet, so
    `RETURNING id` can stand in for SQLite's `lastrowid`."""
    found = _INSERT_INTO.match(sql)
    return found is not None and found.group(1) in IDENTITY_TABLES and not _RETURNING.search(sql)


_TYPES: Final = (
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)


def postgres_ddl(statement: str) -> str:
    """A migration statement's column types for PostgreSQL: `INTEGER` is BIGINT (epoch
    milliseconds overflow 32 bits), `REAL` DOUBLE PRECISION (SQLite's REAL is 8 bytes), an
    `id INTEGER PRIMARY KEY` an identity column, and `WITHOUT ROWID` goes (every PostgreSQL
    table is a heap with separate indexes)."""
    text = _INTEGER_KEY.sub("id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", statement)
    for pattern, replacement in _TYPES:
        text = pattern.sub(replacement, text)
    return re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", text)

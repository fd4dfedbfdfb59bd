"""Reading providers.toml: `load_providers` parses the file into a `ProvidersFile`.

It reads the TOML, hands each [[provider]] table to `provider_entry`, parses the [[pool]] tables
and checks the rules between entries: unique ids, pool members that exist and share the pool's
category (and chain, for RPC), one pool per category, no pool taking another category's default
id. Every problem is a `ConfigError` naming the file and the line of the offending entry's header
(and the entry's id), which the CLI prints as one line and exits 2. This module must never return
a file it has not checked whole.

A file without a single [[provider]] is refused (a gateway that collects nothing and says
nothing is a typo'd path or a truncated file far more often than a wish) unless it says so
with the top-level `allow_empty = true`. Given the sources registry's names (`sources`, passed
in by the CLI: this layer never imports gateway.sources), each entry's `collector` must be one
of them and its base_url must suit it (`provider_entry.check_source`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.chain_models import EVM_CHAIN_IDS
from gateway.config.provider_entry import check_source, parse_provider
from gateway.config.providers_file import (
    CATEGORIES,
    ID_PATTERN,
    STRATEGIES,
    PoolConfig,
    ProviderConfig,
    ProvidersFile,
    default_pool_id,
    pool_key,
)
from gateway.errors import ConfigError

__all__ = ["load_providers"]

_POOL_KEYS = frozenset({"id", "name", "category", "strategy", "members"})


def _header_lines(text: str, header: str) -> list[int]:
    """Line numbers (1-based) of each `[[header]]` array-of-tables header, in order."""
    marker = f"[[{header}]]"
    return [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip().replace(" ", "").startswith(marker)
    ]


def _parse_pool(
    raw: dict[str, Any], where: str, line: int, providers: dict[str, ProviderConfig]
) -> PoolConfig:
    unknown = sorted(set(raw) - _POOL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for required in ("id", "category", "members"):
        if required not in raw:
            raise ConfigError(f"{where}: missing required key {required!r}")
    pool_id = raw["id"]
    if not isinstance(pool_id, str) or not ID_PATTERN.match(pool_id):
        raise ConfigError(f"{where}: id must be lowercase letters, digits and '-', got {pool_id!r}")
    category = raw["category"]
    if category not in CATEGORIES:
        raise ConfigError(
            f"{where}: category must be one of {', '.join(sorted(CATEGORIES))}, got {category!r}"
        )
    strategy = raw.get("strategy", "PRIORITY")
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"{where}: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    name = raw.get("name", pool_id)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string")
    members = raw["members"]
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise ConfigError(f"{where}: members must be a non-empty list of provider ids")
    if len(set(members)) != len(members):
        raise ConfigError(f"{where}: members lists a provider twice")
    for member in members:
        provider = providers.get(member)
        if provider is None:
            raise ConfigError(f"{where}: member {member!r} is not a provider id in this file")
        if category not in provider.categories:
            raise ConfigError(f"{where}: member {member!r} is not in category {category}")
    if category == "RPC":
        chains = sorted({c for m in members if (c := providers[m].chain) is not None})
        if len(chains) > 1:
            raise ConfigError(
                f"{where}: RPC pool members must share one chain, got {', '.join(chains)}"
            )
        # A pool named like a chain's default pool ("rpc-bsc") serves that chain: holding
        # another chain's nodes, it would answer for the wrong chain (and that chain would drop
        # out of chainHeads).
        named = pool_id.removeprefix("rpc-")
        known = {p.chain for p in providers.values() if p.chain} | set(EVM_CHAIN_IDS)
        if pool_id.startswith("rpc-") and named in known and chains and chains != [named]:
            raise ConfigError(
                f"{where}: pool {pool_id!r} is the pool of chain {named}, but its members serve"
                f" {chains[0]}: an RPC pool only takes nodes of its own chain"
            )
    return PoolConfig(
        id=pool_id,
        name=name,
        category=category,
        strategy=strategy,
        members=tuple(members),
        line=line,
    )


def _array_of_tables(document: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    entries = document.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: '{key}' must be an array of tables ([[{key}]])")
    return entries


@contextmanager
def _naming(raw: dict[str, Any], kind: str) -> Iterator[None]:
    """Add the entry's id to a ConfigError raised inside, when it has a usable one."""
    try:
        yield
    except ConfigError as exc:
        entry_id = raw.get("id")
        if (
            isinstance(entry_id, str)
            and ID_PATTERN.match(entry_id)
            and repr(entry_id) not in str(exc)
        ):
            raise ConfigError(f"{exc} (in {kind} {entry_id!r})") from None
        raise


def load_providers(path: Path, *, sources: Mapping[str, bool] | None = None) -> ProvidersFile:
    """Read and validate providers.toml; every problem is a ConfigError naming the line.

    The line is that of the `[[provider]]` (or `[[pool]]`) header of the offending entry.
    `sources`: every name the sources registry knows -> True for a live stream; when given,
    collectors and base_url schemes are checked against it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"providers file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"providers file {path} cannot be read: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(document) - {"provider", "pool", "allow_empty"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}")
    allow_empty = document.get("allow_empty", False)
    if not isinstance(allow_empty, bool):
        raise ConfigError(f"{path}: allow_empty must be true or false")

    lines = _header_lines(text, "provider")
    providers: dict[str, ProviderConfig] = {}
    for index, raw in enumerate(_array_of_tables(document, "provider", path)):
        line = lines[index] if index < len(lines) else 0
        where = f"{path}:{line}"
        with _naming(raw, "provider"):
            provider = parse_provider(raw, where, line)
            if sources is not None:
                check_source(provider, where, sources)
        if provider.id in providers:
            first = providers[provider.id].line
            raise ConfigError(
                f"{where}: duplicate provider id {provider.id!r} (first at line {first})"
            )
        providers[provider.id] = provider

    if not providers and not allow_empty:
        raise ConfigError(
            f"{path}: no [[provider]] entry, so the gateway would collect and serve nothing;"
            " add providers, or `allow_empty = true` to run without any"
        )

    lines = _header_lines(text, "pool")
    pools: dict[str, PoolConfig] = {}
    covered: dict[tuple[str, str | None], PoolConfig] = {}
    reserved = {
        default_pool_id(*pool_key(c, p.chain)): pool_key(c, p.chain)
        for p in providers.values()
        for c in p.categories
    }
    for index, raw in enumerate(_array_of_tables(document, "pool", path)):
        line = lines[index] if index < len(lines) else 0
        where = f"{path}:{line}"
        with _naming(raw, "pool"):
            pool = _parse_pool(raw, where, line, providers)
        if pool.id in pools:
            raise ConfigError(
                f"{where}: duplicate pool id {pool.id!r} (first at line {pools[pool.id].line})"
            )
        chain = next((providers[m].chain for m in pool.members), None)
        key = pool_key(pool.category, chain)
        if key in covered:
            raise ConfigError(
                f"{where}: pool {pool.id!r} serves the same category as pool"
                f" {covered[key].id!r} (line {covered[key].line})"
            )
        if pool.id in reserved and reserved[pool.id] != key:
            raise ConfigError(
                f"{where}: pool id {pool.id!r} is the default pool id of category"
                f" {reserved[pool.id][0]}; choose another"
            )
        pools[pool.id] = pool
        covered[key] = pool
    return ProvidersFile(tuple(providers.values()), tuple(pools.values()))

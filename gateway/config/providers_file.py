"""The providers.toml model: what each [[provider]] and [[pool]] entry means once parsed.

Frozen value objects (`ProviderConfig` with its auth, rate-limit, health-check and breaker specs,
`PoolConfig`, `ProvidersFile`), the words an entry may use (`CATEGORIES`, `TIERS`,
`STRATEGIES`, `AUTH_KINDS`, `RATE_LIMIT_WINDOWS`), and the default pool of every category that no
declared pool covers. Parsing and checking the file is `provider_entry` and `providers_loader`:
this module never reads the file, and trusts that what reaches its classes has been checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from gateway.config.units import MINUTES, SECONDS
from gateway.vocabulary import CATEGORY_LABELS, Category, RotationStrategy

__all__ = [
    "AUTH_KINDS",
    "CATEGORIES",
    "ID_PATTERN",
    "KEY_PLACEHOLDER",
    "MAX_RESPONSE_BYTES_LIMIT",
    "RATE_LIMIT_WINDOWS",
    "STRATEGIES",
    "TIERS",
    "AuthSpec",
    "BreakerSpec",
    "HealthCheckSpec",
    "PoolConfig",
    "ProviderConfig",
    "ProvidersFile",
    "RateLimitWindow",
    "default_pool_id",
    "default_pools",
    "pool_key",
]

CATEGORIES = frozenset(Category)  # the vocabulary's words (StrEnum members are their strings)

# What a provider or pool id may be: lowercase letters, digits and '-'.
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class RateLimitWindow:
    """At most `limit` requests in any `seconds`-long window (several may apply at once)."""

    limit: int
    seconds: float
    # "second", "minute", "hour", "day", "week" or "month" (30 days), as written in the file
    name: str


# Window names accepted in `rate_limits`, and their length.
RATE_LIMIT_WINDOWS: dict[str, float] = {
    "second": 1 * SECONDS,
    "minute": 1 * MINUTES,
    "hour": 60 * MINUTES,
    "day": 24 * 60 * MINUTES,
    "week": 7 * 24 * 60 * MINUTES,
    "month": 30 * 24 * 60 * MINUTES,
}

TIERS = ("A", "B", "C")
AUTH_KINDS = ("none", "query", "header", "path")
STRATEGIES = tuple(RotationStrategy)

# The placeholder a path-segment key replaces in base_url.
KEY_PLACEHOLDER = "{key}"

# The most a providers.toml entry may raise its response-size cap to (bytes): a body is held in
# memory whole, and then decoded, so this bounds what one upstream answer can cost.
MAX_RESPONSE_BYTES_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True)
class AuthSpec:
    """How a provider's key is sent. Keys come only from the environment (or `.env`).

    kind: "none"; "query" (param `name`); "header" (header `name`, value `prefix + key`);
    "path" (the key replaces `{key}` in base_url). `required=False` means the provider also
    works without a key (then `default`, if any, is sent in its place, e.g. Ethplorer's
    "freekey"; a path key with neither leaves `{key}` empty).
    """

    kind: str = "none"
    name: str | None = None
    env: str | None = None
    prefix: str = ""
    required: bool = True
    default: str | None = None


@dataclass(frozen=True)
class HealthCheckSpec:
    """The request that tells whether a provider is healthy, and what counts as healthy."""

    path: str = ""
    method: str = "GET"  # GET, or POST for JSON-RPC
    params: tuple[tuple[str, str], ...] = ()
    json_body: Any = None
    expect_status: int = 200
    expect_json_key: str | None = None  # the JSON body must be an object holding this key
    degraded_after_ms: float = 2000.0  # slower than this is DEGRADED
    interval_seconds: float = 300.0


@dataclass(frozen=True)
class BreakerSpec:
    """Circuit breaker: open after `failure_threshold` consecutive failures, probe after
    `cooldown_seconds`."""

    failure_threshold: int = 5
    cooldown_seconds: float = 60.0


@dataclass(frozen=True)
class ProviderConfig:
    """One upstream as declared in providers.toml.

    `base_url` is the only place a provider's host appears: every request is built from it, so
    pointing a provider at another host (a mirror, a proxy, the test simulator) is a one-line
    change.
    """

    id: str
    name: str
    categories: tuple[str, ...]
    base_url: str
    enabled: bool = True
    collector: str | None = None
    interval_seconds: float = 60.0
    timeout_seconds: float = 10.0
    docs_url: str | None = None
    symbols: tuple[str, ...] | None = None
    disabled_reason: str | None = None
    line: int = 0
    tier: str = "A"
    auth: AuthSpec = field(default_factory=AuthSpec)
    rate_limits: tuple[RateLimitWindow, ...] = ()
    priority: int = 1
    weight: float = 1.0
    health: HealthCheckSpec | None = None
    breaker: BreakerSpec = field(default_factory=BreakerSpec)
    chain: str | None = None  # for RPC and explorer providers: "ethereum", "bsc", …
    # Largest response body accepted from this provider, in bytes; None: the upstream client's
    # default (5 MiB). For the few endpoints that are legitimately bigger (DefiLlama /protocols).
    max_response_bytes: int | None = None

    @property
    def requires_key(self) -> bool:
        return self.auth.kind != "none" and self.auth.required

    def base_url_with_key(self, key: str | None) -> str:
        """base_url with `{key}` replaced by the (URL-quoted) key, or by nothing without one.

        Only path-segment auth puts `{key}` in base_url; any other base_url comes back as is.
        The result holds a secret: never log it.
        """
        if KEY_PLACEHOLDER not in self.base_url:
            return self.base_url
        return self.base_url.replace(KEY_PLACEHOLDER, quote(key or "", safe=""))


@dataclass(frozen=True)
class PoolConfig:
    """Providers of one category that can stand in for each other, and how to pick among them.

    strategy: ROUND_ROBIN, PRIORITY (lowest `priority` first), WEIGHTED_RANDOM (by `weight`),
    LEAST_USED or FASTEST_RESPONSE. Members are provider ids, in the order written.
    """

    id: str
    name: str
    category: str
    strategy: str = "PRIORITY"
    members: tuple[str, ...] = ()
    line: int = 0  # 0 for the pools `default_pools` makes


@dataclass(frozen=True)
class ProvidersFile:
    """The parsed providers.toml: providers and declared pools in file order."""

    providers: tuple[ProviderConfig, ...] = field(default_factory=tuple)
    pools: tuple[PoolConfig, ...] = ()

    def get(self, provider_id: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.id == provider_id), None)

    def rebased(self, base_urls: dict[str, str]) -> ProvidersFile:
        """A copy with some providers' base_url replaced (used to point at a simulator)."""
        return ProvidersFile(
            tuple(
                replace(p, base_url=base_urls[p.id]) if p.id in base_urls else p
                for p in self.providers
            ),
            self.pools,
        )

    def all_pools(self) -> tuple[PoolConfig, ...]:
        """The declared pools, then the default pool of every category none of them covers."""
        return self.pools + default_pools(self)


def default_pool_id(category: str, chain: str | None = None) -> str:
    """The id `default_pools` gives a category's pool (per chain for RPC): "market-data"."""
    base = category.lower().replace("_", "-")
    return f"{base}-{chain}" if chain else base


def pool_key(category: str, chain: str | None) -> tuple[str, str | None]:
    """What one pool serves: a category, and for RPC a chain (None for every other)."""
    # JSON-RPC nodes of different chains cannot stand in for each other, so RPC pools are per
    # chain; every other category has one pool.
    return (category, chain if category == "RPC" else None)


def default_pools(file: ProvidersFile) -> tuple[PoolConfig, ...]:
    """One PRIORITY pool per category (per chain for RPC) that no declared pool covers.

    Each holds every enabled provider of its category, lowest `priority` first (file order
    breaks ties). Its id is the category in lower case with '-' ("market-data"; for RPC
    "rpc-ethereum"). Categories come in the order they first appear in the file; a category
    with no enabled provider gets no pool.
    """
    covered: set[tuple[str, str | None]] = set()
    for pool in file.pools:
        chains = {p.chain for m in pool.members if (p := file.get(m)) is not None}
        for chain in chains or {None}:
            covered.add(pool_key(pool.category, chain))
    members: dict[tuple[str, str | None], list[ProviderConfig]] = {}
    for provider in file.providers:
        if not provider.enabled:
            continue
        for category in provider.categories:
            key = pool_key(category, provider.chain)
            if key not in covered:
                members.setdefault(key, []).append(provider)
    pools = []
    for (category, chain), providers in members.items():
        ordered = sorted(providers, key=lambda p: p.priority)  # stable: file order on ties
        label = CATEGORY_LABELS.get(category, category) + (f" ({chain})" if chain else "")
        pools.append(
            PoolConfig(
                id=default_pool_id(category, chain),
                name=label,
                category=category,
                strategy="PRIORITY",
                members=tuple(p.id for p in ordered),
            )
        )
    return tuple(pools)

"""Settings: defaults, then the environment, then command-line flags; plus providers.toml.

Everything the gateway can be told lives in one typed `Settings` whose attribute defaults are
the documented defaults. Values are validated here, once, so the rest of the code never sees a
bad port or a missing file: a problem is a `ConfigError` whose message names the setting (and,
for providers.toml, the line), which the CLI prints as one line and exits 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from gateway.errors import ConfigError

__all__ = [
    "AUTH_KINDS",
    "CATEGORIES",
    "KEY_PLACEHOLDER",
    "MAX_RESPONSE_BYTES_LIMIT",
    "MINUTES",
    "RATE_LIMIT_WINDOWS",
    "SECONDS",
    "STRATEGIES",
    "TIERS",
    "TTL_CATEGORIES",
    "AuthSpec",
    "BreakerSpec",
    "HealthCheckSpec",
    "PoolConfig",
    "ProviderConfig",
    "ProvidersFile",
    "RateLimitWindow",
    "Settings",
    "default_pool_id",
    "default_pools",
    "load_providers",
    "parse_cors_origins",
    "parse_trusted_proxies",
    "settings_from_env",
]

SECONDS = 1.0
MINUTES = 60 * SECONDS

CATEGORIES = frozenset(
    {"MARKET_DATA", "EXPLORER", "RPC", "NEWS", "SENTIMENT", "WHALE_TRACKING", "ONCHAIN", "DEFI"}
)


@dataclass(frozen=True)
class Settings:
    """Every tunable of a running gateway. Attribute values are the defaults."""

    host: str = "127.0.0.1"
    port: int = 7860
    db_path: Path = Path("data/gateway.db")
    providers_path: Path = Path("providers.toml")
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"

    # Live fan-out: each WebSocket connection's outbound queue holds at most this many frames.
    # When full, the oldest data frame is dropped (counted in gateway_ws_dropped_frames_total).
    ws_send_queue: int = 256
    # A connection that has dropped this many frames in a row without its queue ever draining
    # is closed with 4413 ("slow consumer"): it is not reading, and keeping it costs memory.
    ws_slow_consumer_drops: int = 2048
    # A subscription frame still unsent this long after it was queued is dropped (counted):
    # a client that fell behind gets fresh data, and its latency stays bounded.
    ws_max_frame_age: float = 2 * SECONDS
    ws_init_timeout: float = 10 * SECONDS
    ws_ping_interval: float = 20 * SECONDS
    ws_max_message_bytes: int = 256 * 1024

    # Storage: the single writer commits a batch when it holds this many rows or this much time
    # has passed since the first pending row, whichever comes first.
    storage_batch_rows: int = 500
    storage_batch_seconds: float = 0.25 * SECONDS
    storage_queue: int = 10_000
    # Raw ticks older than this many days are deleted (hourly, in small transactions); the
    # one-minute candles built from them are kept, so priceHistory/ohlcv still reach back.
    # Streams store up to a tick per symbol per second: a month of 20 symbols is ~50M rows.
    # 0 keeps every tick. GATEWAY_TICK_RETENTION_DAYS.
    tick_retention_days: float = 30.0

    # The event bus: each internal subscriber (fan-out group, storage feed) buffers this many.
    bus_buffer: int = 1024

    # Shutdown: in-flight work gets this long after SIGINT/SIGTERM before it is cancelled.
    shutdown_grace: float = 3 * SECONDS
    # A write to a client that makes no progress (64 KiB not taken) for this long is given up
    # and the connection closed: a client that stops reading cannot hold its connection, or
    # the shutdown, forever (gateway/api/server.py).
    send_stall_timeout: float = 4 * SECONDS

    # A collector that raised is restarted after a doubling backoff capped here.
    restart_backoff_initial: float = 1 * SECONDS
    restart_backoff_max: float = 5 * MINUTES

    # State-changing mutations (pools, alerts, provider checks) need an admin API key. For local
    # development only, GATEWAY_ALLOW_ADMIN_MUTATIONS=1 makes anonymous clients and viewer keys
    # admins too (see gateway/api/auth.py).
    allow_admin_mutations: bool = False

    # chainHeads answers are reused for this long, so polling clients do not multiply traffic.
    chain_head_cache_seconds: float = 5 * SECONDS

    # Market-wide answers (gateway/api/schema/market.py) are cached this long per category; the
    # environment overrides them in seconds: GATEWAY_TTL_TRENDING, GATEWAY_TTL_OVERVIEW,
    # GATEWAY_TTL_PROTOCOLS, GATEWAY_TTL_TVL. Answers say their age (`ageSeconds`).
    ttl_trending: float = 5 * MINUTES
    ttl_overview: float = 5 * MINUTES
    ttl_protocols: float = 60 * MINUTES
    ttl_tvl: float = 60 * MINUTES

    # A live exchange stream publishes at most one tick per symbol this often (the latest
    # wins), so a feed that pushes every trade costs subscribers and the store one tick per
    # interval; 0 publishes every message. GATEWAY_STREAM_PUBLISH_INTERVAL, in seconds.
    stream_publish_interval: float = 1 * SECONDS

    # priceHistory/ohlcv fill holes from upstream candle endpoints for at most this long per
    # request; what was stored by then stays stored, the rest is reported as missing.
    history_fill_seconds: float = 8 * SECONDS

    # Consensus: with three or more fresh sources, one deviating from their median by more than
    # this many percent is excluded from the price and counted as an outlier on its provider.
    consensus_max_deviation_pct: float = 2.0

    # Symbols collected by every price collector unless a provider entry says otherwise.
    symbols: tuple[str, ...] = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None values replaced, re-validated."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes).validated()

    def validated(self) -> Settings:
        """Check every value; raises ConfigError naming the first bad one."""
        if not self.host.strip():
            raise ConfigError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.log_format not in {"auto", "console", "json"}:
            raise ConfigError(f"log format must be auto, console or json, got {self.log_format!r}")
        if self.db_path.exists() and self.db_path.is_dir():
            raise ConfigError(f"database path {self.db_path} is a directory")
        for name in ("ws_send_queue", "storage_batch_rows", "storage_queue", "bus_buffer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not (math.isfinite(self.tick_retention_days) and self.tick_retention_days >= 0):
            raise ConfigError("tick_retention_days must be 0 (keep all) or a positive number")
        if not (math.isfinite(self.stream_publish_interval) and self.stream_publish_interval >= 0):
            raise ConfigError("stream_publish_interval must be 0 or a positive number of seconds")
        for category in TTL_CATEGORIES:
            ttl = getattr(self, f"ttl_{category}")
            if not (math.isfinite(ttl) and ttl > 0):
                raise ConfigError(f"ttl_{category} must be a positive number of seconds")
        self._validate_access()
        return self

    def _validate_access(self) -> None:
        """The access-control and HTTP-hygiene settings, also when set in code (tests, benches)
        rather than through the environment, which `_env_access` checks on the way in."""
        if self.anonymous_access not in _ANONYMOUS_ACCESS:
            raise ConfigError(
                f"anonymous_access must be read or off, got {self.anonymous_access!r}"
            )
        for tier in ("free", "pro", "enterprise"):
            for limit in _TIER_LIMIT_NAMES:
                value = getattr(self, f"tier_{tier}_{limit}")
                if not isinstance(value, int) or value < 0:
                    raise ConfigError(f"tier_{tier}_{limit} must be an integer >= 0, got {value!r}")
        parse_cors_origins(self.cors_origins)
        parse_trusted_proxies(self.trusted_proxies)
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be at least 1, got {self.max_body_bytes}")
        if self.cors_max_age < 0:
            raise ConfigError(f"cors_max_age must not be negative, got {self.cors_max_age}")

    # Query limits (gateway/api/query_limits.py), checked before anything executes, the same over
    # HTTP and both WebSocket protocols. A violation is an error with extensions.code
    # QUERY_TOO_COMPLEX (BAD_USER_INPUT for introspection while it is disabled). The defaults
    # admit GraphiQL's introspection query and the largest query the schema serves.
    query_max_document_bytes: int = 32 * 1024  # the query text, in UTF-8, before parsing
    query_max_depth: int = 15  # field nesting, fragments expanded; `{ status { version } }` is 2
    query_max_aliases: int = 30  # aliased fields in one document, as written
    # Pairs of same-named fields (and of fragment spreads) that validation must compare; bounds
    # graphql-core's quadratic overlapping-fields check (about 25 ms at the default).
    query_max_overlap_pairs: int = 1_000
    # Estimated cost: each field 1, a list field multiplies its sub-selection by its
    # first/last/limit argument, else by `query_default_list_size` (formula in query_limits.py).
    query_max_cost: int = 60_000
    query_default_list_size: int = 10
    allow_introspection: bool = True  # when False, __schema/__type are refused; __typename works

    # WebSocket: operations one connection may run at once (one more is answered with an
    # `error` message for it; the connection stays), and how long a connection with no message
    # from the client (pongs aside) and no operation running stays open before it is closed
    # with 4408 "Connection idle timeout".
    ws_max_operations: int = 100
    ws_idle_timeout: float = 10 * MINUTES

    # Access control (gateway/api/auth.py, gateway/store/api_keys.py). Keys are made with `gateway
    # keys create`. A request without one is anonymous: with anonymous_access "read" it may read and
    # run viewer mutations (viewer role, free tier, limits counted per client IP); with "off" it is
    # refused (HTTP 401 UNAUTHENTICATED, WebSocket close 4401).
    anonymous_access: str = "read"  # read | off
    # Tier limits, per key (per client IP for anonymous clients); 0 means unlimited. Requests
    # per minute (sliding window) and per UTC day: one more is RATE_LIMITED (HTTP 429 with
    # Retry-After). Symbols in one request and days of history a query may reach back: more is
    # BAD_USER_INPUT naming the limit. Subscriptions open at once: one more is RATE_LIMITED.
    # GATEWAY_TIER_FREE="per_minute=30,per_day=1000,symbols=5,history_days=7,subscriptions=5"
    # (and _PRO, _ENTERPRISE) override any of them.
    tier_free_per_minute: int = 30
    tier_free_per_day: int = 1_000
    tier_free_symbols: int = 5
    tier_free_history_days: int = 7
    tier_free_subscriptions: int = 5
    tier_pro_per_minute: int = 300
    tier_pro_per_day: int = 50_000
    tier_pro_symbols: int = 100
    tier_pro_history_days: int = 90
    tier_pro_subscriptions: int = 50
    tier_enterprise_per_minute: int = 0
    tier_enterprise_per_day: int = 0
    tier_enterprise_symbols: int = 0
    tier_enterprise_history_days: int = 0
    tier_enterprise_subscriptions: int = 0
    # A key revoked by `gateway keys revoke` (another process) stops working on its next HTTP
    # request or WebSocket operation; its open WebSockets are closed (4403) within this long.
    auth_revocation_poll: float = 2 * SECONDS
    # A key's last-used time is written at most this often (never once per request).
    auth_last_used_interval: float = 1 * MINUTES
    # Each key's requests of the day are saved this often (and at shutdown), restored at start.
    auth_usage_flush: float = 1 * MINUTES
    # Anonymous clients whose usage is tracked at once; the least recently seen are forgotten.
    auth_max_anonymous_clients: int = 10_000

    # HTTP hygiene (gateway/api/http_policy.py). Browser origins (scheme://host[:port]) allowed to
    # call the API cross-origin; "*" allows any. Same-origin pages (GraphiQL) need no entry.
    # A request or WebSocket handshake to /graphql from another origin is refused with 403.
    cors_origins: tuple[str, ...] = ()
    cors_max_age: int = 600  # seconds a browser may cache a preflight answer
    # Proxies (CIDRs) whose X-Forwarded-For / Forwarded headers are believed: the client is the
    # rightmost address not in them. Without any, the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    # Largest GraphQL request body accepted over HTTP (413 beyond it).
    max_body_bytes: int = 1024 * 1024


def _env_port(env: dict[str, str]) -> int | None:
    for name in ("GATEWAY_PORT", "PORT"):
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer port, got {raw!r}") from None
    return None


def _env_flag(env: dict[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Defaults overridden by GATEWAY_* variables (and PORT, for container platforms)."""
    env = dict(os.environ) if env is None else env
    base = Settings()
    symbols = env.get("GATEWAY_SYMBOLS")
    return base.with_overrides(
        host=env.get("GATEWAY_HOST") or None,
        port=_env_port(env),
        db_path=Path(env["GATEWAY_DB"]) if env.get("GATEWAY_DB") else None,
        providers_path=Path(env["GATEWAY_PROVIDERS"]) if env.get("GATEWAY_PROVIDERS") else None,
        log_format=env.get("GATEWAY_LOG_FORMAT") or None,
        log_level=env.get("GATEWAY_LOG_LEVEL") or None,
        allow_admin_mutations=_env_flag(env, "GATEWAY_ALLOW_ADMIN_MUTATIONS"),
        symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
        if symbols
        else None,
        stream_publish_interval=_env_seconds(env, "GATEWAY_STREAM_PUBLISH_INTERVAL"),
        tick_retention_days=_env_seconds(env, "GATEWAY_TICK_RETENTION_DAYS"),
        **_env_access(env),
        **_env_ttls(env),
    )


def _env_seconds(env: dict[str, str], name: str) -> float | None:
    """A duration (in the unit its name says): 0 or a positive, finite number; None if unset."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(f"{name} must be 0 or a positive number, got {raw!r}")
    return seconds


# The market categories with their own cache TTL (Settings.ttl_<category>).
TTL_CATEGORIES = ("trending", "overview", "protocols", "tvl")


def _env_ttls(env: dict[str, str]) -> dict[str, float]:
    """GATEWAY_TTL_<CATEGORY> in seconds: a positive, finite number."""
    overrides: dict[str, float] = {}
    for category in TTL_CATEGORIES:
        name = f"GATEWAY_TTL_{category.upper()}"
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
        overrides[f"ttl_{category}"] = seconds
    return overrides


_ANONYMOUS_ACCESS = ("read", "off")
_TIER_LIMIT_NAMES = ("per_minute", "per_day", "symbols", "history_days", "subscriptions")


def _env_list(env: dict[str, str], name: str) -> list[str] | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_cors_origins(
    values: list[str] | tuple[str, ...], name: str = "cors_origins"
) -> tuple[str, ...]:
    """Origins as browsers send them (scheme://host[:port], lower case), or "*"."""
    origins = []
    for value in values:
        if value == "*":
            origins.append(value)
            continue
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise ConfigError(
                f"{name}: {value!r} is not an origin like https://app.example.com (or *)"
            )
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ConfigError(f"{name}: {value!r} is not an origin like https://app.example.com")
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(origins)


def parse_trusted_proxies(
    values: list[str] | tuple[str, ...], name: str = "trusted_proxies"
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """CIDRs (or single addresses) of trusted proxies."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not an IP network like 10.0.0.0/8") from None
    return tuple(networks)


def _env_tier(env: dict[str, str], tier: str) -> dict[str, int]:
    name = f"GATEWAY_TIER_{tier.upper()}"
    overrides: dict[str, int] = {}
    for item in _env_list(env, name) or []:
        limit, _, value = item.partition("=")
        limit = limit.strip()
        if limit not in _TIER_LIMIT_NAMES:
            raise ConfigError(
                f"{name}: unknown limit {limit!r} (one of {', '.join(_TIER_LIMIT_NAMES)})"
            )
        try:
            number = int(value.strip())
        except ValueError:
            number = -1
        if number < 0:
            raise ConfigError(f"{name}: {limit} must be an integer, 0 for unlimited; got {value!r}")
        overrides[f"tier_{tier}_{limit}"] = number
    return overrides


def _env_access(env: dict[str, str]) -> dict[str, Any]:
    """The access-control and HTTP-hygiene variables, checked."""
    overrides: dict[str, Any] = {}
    anonymous = env.get("GATEWAY_ANONYMOUS")
    if anonymous:
        if anonymous.lower() not in _ANONYMOUS_ACCESS:
            raise ConfigError(f"GATEWAY_ANONYMOUS must be read or off, got {anonymous!r}")
        overrides["anonymous_access"] = anonymous.lower()
    for tier in ("free", "pro", "enterprise"):
        overrides.update(_env_tier(env, tier))
    origins = _env_list(env, "GATEWAY_CORS_ORIGINS")
    if origins is not None:
        overrides["cors_origins"] = parse_cors_origins(origins, "GATEWAY_CORS_ORIGINS")
    proxies = _env_list(env, "GATEWAY_TRUSTED_PROXIES")
    if proxies is not None:
        parse_trusted_proxies(proxies, "GATEWAY_TRUSTED_PROXIES")
        overrides["trusted_proxies"] = tuple(proxies)
    body = env.get("GATEWAY_MAX_BODY_BYTES")
    if body:
        try:
            overrides["max_body_bytes"] = int(body)
        except ValueError:
            overrides["max_body_bytes"] = 0
        if overrides["max_body_bytes"] < 1:
            raise ConfigError(f"GATEWAY_MAX_BODY_BYTES must be a positive integer, got {body!r}")
    return overrides


# ---------------------------------------------------------------------------------------------
# providers.toml


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
STRATEGIES = ("ROUND_ROBIN", "PRIORITY", "WEIGHTED_RANDOM", "LEAST_USED", "FASTEST_RESPONSE")

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


_CATEGORY_LABELS = {
    "MARKET_DATA": "Market data",
    "EXPLORER": "Explorers",
    "RPC": "RPC",
    "NEWS": "News",
    "SENTIMENT": "Sentiment",
    "WHALE_TRACKING": "Whale tracking",
    "ONCHAIN": "On-chain analytics",
    "DEFI": "DeFi",
}


def default_pool_id(category: str, chain: str | None = None) -> str:
    """The id `default_pools` gives a category's pool (per chain for RPC): "market-data"."""
    base = category.lower().replace("_", "-")
    return f"{base}-{chain}" if chain else base


def _pool_key(category: str, chain: str | None) -> tuple[str, str | None]:
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
            covered.add(_pool_key(pool.category, chain))
    members: dict[tuple[str, str | None], list[ProviderConfig]] = {}
    for provider in file.providers:
        if not provider.enabled:
            continue
        for category in provider.categories:
            key = _pool_key(category, provider.chain)
            if key not in covered:
                members.setdefault(key, []).append(provider)
    pools = []
    for (category, chain), providers in members.items():
        ordered = sorted(providers, key=lambda p: p.priority)  # stable: file order on ties
        label = _CATEGORY_LABELS.get(category, category) + (f" ({chain})" if chain else "")
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


# --- parsing -------------------------------------------------------------------------------

_PROVIDER_KEYS = frozenset(
    {
        "id",
        "name",
        "tier",
        "category",
        "base_url",
        "docs_url",
        "enabled",
        "disabled_reason",
        "collector",
        "interval_seconds",
        "timeout_seconds",
        "symbols",
        "auth",
        "rate_limits",
        "priority",
        "weight",
        "health",
        "breaker",
        "chain",
        "max_response_bytes",
    }
)
_AUTH_KEYS = frozenset({"kind", "name", "env", "prefix", "required", "default"})
_HEALTH_KEYS = frozenset(
    {
        "path",
        "method",
        "params",
        "json",
        "expect_status",
        "expect_json_key",
        "degraded_after_ms",
        "interval_seconds",
    }
)
_BREAKER_KEYS = frozenset({"failure_threshold", "cooldown_seconds"})
_POOL_KEYS = frozenset({"id", "name", "category", "strategy", "members"})
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_CHAIN_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PLACEHOLDER_RE = re.compile(r"\{[^}]*\}")
_URL_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_DOCS_SCHEMES = frozenset({"http", "https"})


def _header_lines(text: str, header: str) -> list[int]:
    """Line numbers (1-based) of each `[[header]]` array-of-tables header, in order."""
    marker = f"[[{header}]]"
    return [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip().replace(" ", "").startswith(marker)
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_url(
    value: Any, where: str, key: str = "base_url", schemes: frozenset[str] = _URL_SCHEMES
) -> str:
    """An absolute URL of one of `schemes`, without a trailing '/'; `{key}` may stand for a
    path-segment key."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string")
    stray = [p for p in _PLACEHOLDER_RE.findall(value) if p != KEY_PLACEHOLDER]
    if stray:
        raise ConfigError(f"{where}: {key} {value!r} has unknown placeholder {stray[0]}")
    if KEY_PLACEHOLDER in urlsplit(value).netloc:
        raise ConfigError(f"{where}: {key} may hold {KEY_PLACEHOLDER} only in its path")
    parts = urlsplit(value.replace(KEY_PLACEHOLDER, "KEY"))
    if parts.scheme not in schemes or not parts.hostname or any(c.isspace() for c in value):
        kinds = " or ".join(sorted(schemes))
        raise ConfigError(f"{where}: {key} {value!r} is not an absolute {kinds} URL")
    return value.rstrip("/")


def _table(raw: dict[str, Any], key: str, allowed: frozenset[str], where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table, e.g. {key} = {{ … }}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) in {key}: {', '.join(unknown)}"
            f" (allowed: {', '.join(sorted(allowed))})"
        )
    return value


def _optional_str(raw: dict[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _parse_auth(raw: dict[str, Any], base_url: str, where: str) -> AuthSpec:
    table = _table(raw, "auth", _AUTH_KEYS, where)
    kind = table.get("kind", "none")
    if kind not in AUTH_KINDS:
        raise ConfigError(
            f"{where}: auth.kind must be one of {', '.join(AUTH_KINDS)}, got {kind!r}"
        )
    name = _optional_str(table, "name", f"{where}: auth")
    env = _optional_str(table, "env", f"{where}: auth")
    default = _optional_str(table, "default", f"{where}: auth")
    prefix = table.get("prefix", "")
    required = table.get("required", True)
    if not isinstance(prefix, str):
        raise ConfigError(f"{where}: auth.prefix must be a string")
    if not isinstance(required, bool):
        raise ConfigError(f"{where}: auth.required must be true or false")
    has_placeholder = KEY_PLACEHOLDER in base_url
    if kind == "none":
        extra = sorted(k for k in table if k != "kind")
        if extra:
            raise ConfigError(f"{where}: auth kind 'none' takes no {', '.join(extra)}")
    else:
        if env is None:
            raise ConfigError(
                f"{where}: auth kind {kind!r} needs env (the variable holding the key)"
            )
        if not _ENV_RE.match(env):
            raise ConfigError(f"{where}: auth.env must be an UPPER_CASE variable name, got {env!r}")
        if kind in {"query", "header"} and name is None:
            what = "query parameter" if kind == "query" else "header"
            raise ConfigError(f"{where}: auth kind {kind!r} needs name (the {what})")
        if kind == "path" and name is not None:
            raise ConfigError(f"{where}: auth kind 'path' takes no name: the key goes in {{key}}")
        if prefix and kind != "header":
            raise ConfigError(f"{where}: auth.prefix applies only to kind 'header'")
        if default is not None and required:
            raise ConfigError(f"{where}: auth.default needs required = false")
    if kind == "path" and not has_placeholder:
        raise ConfigError(f"{where}: auth kind 'path' needs {KEY_PLACEHOLDER} in base_url")
    if has_placeholder and kind != "path":
        raise ConfigError(
            f"{where}: base_url holds {KEY_PLACEHOLDER} but auth kind is {kind!r}, not 'path'"
        )
    return AuthSpec(
        kind=kind,
        name=name,
        env=env,
        prefix=prefix,
        required=required if kind != "none" else True,
        default=default,
    )


def _parse_rate_limits(raw: dict[str, Any], where: str) -> tuple[RateLimitWindow, ...]:
    value = raw.get("rate_limits", {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: rate_limits must be a table, e.g. rate_limits = {{ minute = 30 }}"
        )
    windows = []
    for name, limit in value.items():
        if name not in RATE_LIMIT_WINDOWS:
            raise ConfigError(
                f"{where}: unknown rate-limit window {name!r}"
                f" (one of {', '.join(RATE_LIMIT_WINDOWS)})"
            )
        if not _is_int(limit) or limit < 1:
            raise ConfigError(
                f"{where}: rate_limits.{name} must be a positive integer, got {limit!r}"
            )
        windows.append(RateLimitWindow(limit=limit, seconds=RATE_LIMIT_WINDOWS[name], name=name))
    return tuple(sorted(windows, key=lambda w: w.seconds))


def _parse_health(raw: dict[str, Any], where: str) -> HealthCheckSpec | None:
    if "health" not in raw:
        return None
    table = _table(raw, "health", _HEALTH_KEYS, where)
    method = table.get("method", "GET")
    if method not in {"GET", "POST"}:
        raise ConfigError(f"{where}: health.method must be GET or POST, got {method!r}")
    path = table.get("path", "")
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ConfigError(f"{where}: health.path must be empty or start with '/', got {path!r}")
    params = table.get("params", {})
    if not isinstance(params, dict) or not all(
        isinstance(v, str) or _is_int(v) for v in params.values()
    ):
        raise ConfigError(f"{where}: health.params must be a table of strings or integers")
    if "json" in table and method != "POST":
        raise ConfigError(f'{where}: health.json needs method = "POST"')
    status = table.get("expect_status", 200)
    if not _is_int(status) or not 100 <= status <= 599:
        raise ConfigError(f"{where}: health.expect_status must be an HTTP status, got {status!r}")
    key = table.get("expect_json_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigError(f"{where}: health.expect_json_key must be a non-empty string")
    for number_key in ("degraded_after_ms", "interval_seconds"):
        number = table.get(number_key)
        if number is not None and (not _is_number(number) or number <= 0):
            raise ConfigError(f"{where}: health.{number_key} must be a positive number")
    defaults = HealthCheckSpec()
    return HealthCheckSpec(
        path=path,
        method=method,
        params=tuple((str(k), str(v)) for k, v in params.items()),
        json_body=table.get("json"),
        expect_status=status,
        expect_json_key=key,
        degraded_after_ms=float(table.get("degraded_after_ms", defaults.degraded_after_ms)),
        interval_seconds=float(table.get("interval_seconds", defaults.interval_seconds)),
    )


def _parse_breaker(raw: dict[str, Any], where: str) -> BreakerSpec:
    table = _table(raw, "breaker", _BREAKER_KEYS, where)
    defaults = BreakerSpec()
    threshold = table.get("failure_threshold", defaults.failure_threshold)
    cooldown = table.get("cooldown_seconds", defaults.cooldown_seconds)
    if not _is_int(threshold) or threshold < 1:
        raise ConfigError(f"{where}: breaker.failure_threshold must be an integer of at least 1")
    if not _is_number(cooldown) or cooldown <= 0:
        raise ConfigError(f"{where}: breaker.cooldown_seconds must be a positive number")
    return BreakerSpec(failure_threshold=threshold, cooldown_seconds=float(cooldown))


def _parse_categories(value: Any, where: str) -> tuple[str, ...]:
    categories = [value] if isinstance(value, str) else value
    if not isinstance(categories, list) or not categories:
        raise ConfigError(f"{where}: category must be a name or a list of names")
    for category in categories:
        if category not in CATEGORIES:
            raise ConfigError(
                f"{where}: unknown category {category!r} (one of {', '.join(sorted(CATEGORIES))})"
            )
    if len(set(categories)) != len(categories):
        raise ConfigError(f"{where}: category lists a name twice")
    return tuple(categories)


def _parse_provider(raw: dict[str, Any], where: str, line: int) -> ProviderConfig:
    unknown = sorted(set(raw) - _PROVIDER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for required in ("id", "category", "base_url"):
        if required not in raw:
            raise ConfigError(f"{where}: missing required key {required!r}")
    provider_id = raw["id"]
    if not isinstance(provider_id, str) or not _ID_RE.match(provider_id):
        raise ConfigError(
            f"{where}: id must be lowercase letters, digits and '-', got {provider_id!r}"
        )
    categories = _parse_categories(raw["category"], where)
    base_url = _check_url(raw["base_url"], where)
    docs_url = raw.get("docs_url")
    if docs_url is not None:
        docs_url = _check_url(docs_url, where, "docs_url", _DOCS_SCHEMES)
    name = raw.get("name", provider_id)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string")
    collector = _optional_str(raw, "collector", where)
    symbols = raw.get("symbols")
    if symbols is not None and (
        not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols)
    ):
        raise ConfigError(f"{where}: symbols must be a list of strings")
    for number_key in ("interval_seconds", "timeout_seconds"):
        value = raw.get(number_key)
        if value is not None and (not _is_number(value) or value <= 0):
            raise ConfigError(f"{where}: {number_key} must be a positive number")
    tier = raw.get("tier", "A")
    if tier not in TIERS:
        raise ConfigError(f"{where}: tier must be one of {', '.join(TIERS)}, got {tier!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    reason = _optional_str(raw, "disabled_reason", where)
    if tier == "C" and enabled:
        raise ConfigError(
            f"{where}: tier C providers must have enabled = false (and a disabled_reason)"
        )
    if not enabled and reason is None:
        raise ConfigError(f"{where}: enabled = false needs a disabled_reason saying why")
    if enabled and reason is not None:
        raise ConfigError(f"{where}: disabled_reason given but the provider is enabled")
    priority = raw.get("priority", 1)
    if not _is_int(priority) or priority < 0:
        raise ConfigError(f"{where}: priority must be an integer of at least 0, got {priority!r}")
    weight = raw.get("weight", 1.0)
    if not _is_number(weight) or weight <= 0:
        raise ConfigError(f"{where}: weight must be a number above 0, got {weight!r}")
    chain = raw.get("chain")
    if chain is not None and (not isinstance(chain, str) or not _CHAIN_RE.match(chain)):
        raise ConfigError(f'{where}: chain must be a lowercase name like "ethereum", got {chain!r}')
    if "RPC" in categories and chain is None:
        raise ConfigError(f'{where}: RPC providers need chain (e.g. chain = "ethereum")')
    max_bytes = raw.get("max_response_bytes")
    if max_bytes is not None and (
        not _is_int(max_bytes) or not 1024 <= max_bytes <= MAX_RESPONSE_BYTES_LIMIT
    ):
        raise ConfigError(
            f"{where}: max_response_bytes must be an integer from 1024 to"
            f" {MAX_RESPONSE_BYTES_LIMIT} (bytes), got {max_bytes!r}"
        )
    return ProviderConfig(
        id=provider_id,
        name=name,
        categories=categories,
        base_url=base_url,
        enabled=enabled,
        collector=collector,
        interval_seconds=float(raw.get("interval_seconds", 60.0)),
        timeout_seconds=float(raw.get("timeout_seconds", 10.0)),
        docs_url=docs_url,
        symbols=tuple(s.upper() for s in symbols) if symbols else None,
        disabled_reason=reason,
        line=line,
        tier=tier,
        auth=_parse_auth(raw, base_url, where),
        rate_limits=_parse_rate_limits(raw, where),
        priority=priority,
        weight=float(weight),
        health=_parse_health(raw, where),
        breaker=_parse_breaker(raw, where),
        chain=chain,
        max_response_bytes=max_bytes,
    )


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
    if not isinstance(pool_id, str) or not _ID_RE.match(pool_id):
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
        if isinstance(entry_id, str) and _ID_RE.match(entry_id) and repr(entry_id) not in str(exc):
            raise ConfigError(f"{exc} (in {kind} {entry_id!r})") from None
        raise


def load_providers(path: Path) -> ProvidersFile:
    """Read and validate providers.toml; every problem is a ConfigError naming the line.

    The line is that of the `[[provider]]` (or `[[pool]]`) header of the offending entry.
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
    unknown = sorted(set(document) - {"provider", "pool"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}")

    lines = _header_lines(text, "provider")
    providers: dict[str, ProviderConfig] = {}
    for index, raw in enumerate(_array_of_tables(document, "provider", path)):
        line = lines[index] if index < len(lines) else 0
        where = f"{path}:{line}"
        with _naming(raw, "provider"):
            provider = _parse_provider(raw, where, line)
        if provider.id in providers:
            first = providers[provider.id].line
            raise ConfigError(
                f"{where}: duplicate provider id {provider.id!r} (first at line {first})"
            )
        providers[provider.id] = provider

    lines = _header_lines(text, "pool")
    pools: dict[str, PoolConfig] = {}
    covered: dict[tuple[str, str | None], PoolConfig] = {}
    reserved = {
        default_pool_id(*_pool_key(c, p.chain)): _pool_key(c, p.chain)
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
        key = _pool_key(pool.category, chain)
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

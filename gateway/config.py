"""Settings: defaults, then the environment, then command-line flags; plus providers.toml.

Everything the gateway can be told lives in one typed `Settings` whose attribute defaults are
the documented defaults. Values are validated here, once, so the rest of the code never sees a
bad port or a missing file: a problem is a `ConfigError` whose message names the setting (and,
for providers.toml, the line), which the CLI prints as one line and exits 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError

__all__ = [
    "CATEGORIES",
    "AuthSpec",
    "BreakerSpec",
    "HealthCheckSpec",
    "RateLimitWindow",
    "MINUTES",
    "SECONDS",
    "ProviderConfig",
    "ProvidersFile",
    "Settings",
    "load_providers",
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
    ws_init_timeout: float = 10 * SECONDS
    ws_ping_interval: float = 20 * SECONDS
    ws_max_message_bytes: int = 256 * 1024

    # Storage: the single writer commits a batch when it holds this many rows or this much time
    # has passed since the first pending row, whichever comes first.
    storage_batch_rows: int = 500
    storage_batch_seconds: float = 0.25 * SECONDS
    storage_queue: int = 10_000

    # The event bus: each internal subscriber (fan-out group, storage feed) buffers this many.
    bus_buffer: int = 1024

    # Shutdown: in-flight work gets this long after SIGINT/SIGTERM before it is cancelled.
    shutdown_grace: float = 3 * SECONDS

    # A collector that raised is restarted after a doubling backoff capped here.
    restart_backoff_initial: float = 1 * SECONDS
    restart_backoff_max: float = 5 * MINUTES

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
        return self


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
        symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
        if symbols
        else None,
    )


# ---------------------------------------------------------------------------------------------
# providers.toml


@dataclass(frozen=True)
class RateLimitWindow:
    """At most `limit` requests in any `seconds`-long window (several may apply at once)."""

    limit: int
    seconds: float
    name: str  # "second", "minute", "hour", "day", "month" (30 days), as written in the file


@dataclass(frozen=True)
class AuthSpec:
    """How a provider's key is sent. Keys come only from the environment (or `.env`).

    kind: "none"; "query" (param `name`); "header" (header `name`, value `prefix + key`);
    "path" (the key replaces `{key}` in base_url). `required=False` means the provider also
    works without a key (then `default`, if any, is sent in its place, e.g. Ethplorer's
    "freekey").
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

    @property
    def requires_key(self) -> bool:
        return self.auth.kind != "none" and self.auth.required


@dataclass(frozen=True)
class ProvidersFile:
    """The parsed providers.toml: providers in file order."""

    providers: tuple[ProviderConfig, ...] = field(default_factory=tuple)

    def get(self, provider_id: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.id == provider_id), None)

    def rebased(self, base_urls: dict[str, str]) -> ProvidersFile:
        """A copy with some providers' base_url replaced (used to point at a simulator)."""
        return ProvidersFile(
            tuple(
                replace(p, base_url=base_urls[p.id]) if p.id in base_urls else p
                for p in self.providers
            )
        )


_PROVIDER_KEYS = {
    "id",
    "name",
    "category",
    "base_url",
    "enabled",
    "collector",
    "interval_seconds",
    "timeout_seconds",
    "docs_url",
    "symbols",
    "disabled_reason",
}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _provider_lines(text: str) -> list[int]:
    """Line numbers (1-based) of each `[[provider]]` header, in order."""
    return [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip().startswith("[[provider]]")
    ]


def _check_url(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: base_url must be a string")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https", "ws", "wss"} or not parts.netloc:
        raise ConfigError(f"{where}: base_url {value!r} is not an http(s) or ws(s) URL")
    return value.rstrip("/")


def _parse_provider(raw: dict[str, Any], where: str, line: int) -> ProviderConfig:
    unknown = sorted(set(raw) - _PROVIDER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for required in ("id", "category", "base_url"):
        if required not in raw:
            raise ConfigError(f"{where}: missing required key {required!r}")
    provider_id = raw["id"]
    if not isinstance(provider_id, str) or not _ID_RE.match(provider_id):
        raise ConfigError(f"{where}: id must be lowercase letters, digits and '-', got {provider_id!r}")
    categories = raw["category"]
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, list) or not categories:
        raise ConfigError(f"{where}: category must be a name or a list of names")
    for category in categories:
        if category not in CATEGORIES:
            raise ConfigError(
                f"{where}: unknown category {category!r} (one of {', '.join(sorted(CATEGORIES))})"
            )
    symbols = raw.get("symbols")
    if symbols is not None and (
        not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols)
    ):
        raise ConfigError(f"{where}: symbols must be a list of strings")
    for number_key in ("interval_seconds", "timeout_seconds"):
        value = raw.get(number_key)
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise ConfigError(f"{where}: {number_key} must be a positive number")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    return ProviderConfig(
        id=provider_id,
        name=str(raw.get("name", provider_id)),
        categories=tuple(categories),
        base_url=_check_url(raw["base_url"], where),
        enabled=enabled,
        collector=raw.get("collector"),
        interval_seconds=float(raw.get("interval_seconds", 60.0)),
        timeout_seconds=float(raw.get("timeout_seconds", 10.0)),
        docs_url=raw.get("docs_url"),
        symbols=tuple(s.upper() for s in symbols) if symbols else None,
        disabled_reason=raw.get("disabled_reason"),
        line=line,
    )


def load_providers(path: Path) -> ProvidersFile:
    """Read and validate providers.toml; every problem is a ConfigError naming the line."""
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
    unknown = sorted(set(document) - {"provider"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}")
    entries = document.get("provider", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'provider' must be an array of tables ([[provider]])")
    lines = _provider_lines(text)
    providers: list[ProviderConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(entries):
        line = lines[index] if index < len(lines) else 0
        where = f"{path}:{line}"
        provider = _parse_provider(raw, where, line)
        if provider.id in seen:
            raise ConfigError(
                f"{where}: duplicate provider id {provider.id!r} (first at line {seen[provider.id]})"
            )
        seen[provider.id] = line
        providers.append(provider)
    return ProvidersFile(tuple(providers))

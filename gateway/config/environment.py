"""Settings from the environment: GATEWAY_* variables (and PORT) over the defaults of `Settings`.

Each variable is parsed and checked on the way in, so a bad value is a `ConfigError` naming the
variable (not the attribute it sets); the result is validated again as a whole by
`Settings.validated`. This module must never hold a default of its own: an unset or empty
variable leaves the attribute of `Settings` as it is.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gateway.config.broker import broker_from_env
from gateway.config.database import database_overrides
from gateway.config.settings import (
    ANONYMOUS_ACCESS,
    FRESHNESS_CATEGORIES,
    RETENTION_SETTINGS,
    TIER_LIMIT_NAMES,
    TTL_CATEGORIES,
    Settings,
    parse_allowed_hosts,
    parse_cors_origins,
    parse_trusted_proxies,
)
from gateway.errors import ConfigError
from gateway.vocabulary import LOG_LEVELS, TIER_NAMES

__all__ = ["settings_from_env"]


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


def _env_log_level(env: dict[str, str]) -> str | None:
    raw = env.get("GATEWAY_LOG_LEVEL")
    if raw is None or not raw.strip():
        return None
    if raw.strip().lower() not in LOG_LEVELS:
        raise ConfigError(f"GATEWAY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw.strip().lower()


def settings_from_env(env: dict[str, str] | None = None, *, broker: str | None = None) -> Settings:
    """Defaults overridden by GATEWAY_* variables (and PORT, for container platforms);
    `broker` (`serve --broker`) is taken over GATEWAY_BROKER."""
    env = dict(os.environ) if env is None else env
    base = Settings()
    symbols = env.get("GATEWAY_SYMBOLS")
    return base.with_overrides(
        host=env.get("GATEWAY_HOST") or None,
        port=_env_port(env),
        **database_overrides(env.get("GATEWAY_DB")),  # a SQLite file or a postgresql:// URL
        providers_path=Path(env["GATEWAY_PROVIDERS"]) if env.get("GATEWAY_PROVIDERS") else None,
        log_format=env.get("GATEWAY_LOG_FORMAT") or None,
        log_level=_env_log_level(env),
        allow_admin_mutations=_env_flag(env, "GATEWAY_ALLOW_ADMIN_MUTATIONS"),
        symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
        if symbols
        else None,
        stream_publish_interval=_env_seconds(env, "GATEWAY_STREAM_PUBLISH_INTERVAL"),
        tick_retention_days=_env_seconds(env, "GATEWAY_TICK_RETENTION_DAYS"),
        **_env_access(env),
        **_env_ttls(env),
        **_env_http(env),
        **_env_freshness(env),
        **_env_ws_limits(env),
        **_env_connections(env),
        **_env_chains(env),
        **_env_whales(env),
        **_env_sentiment(env),
        **_env_news(env),
        **_env_operations(env),
        **_env_backups(env),
        # Several replicas: GATEWAY_BROKER, GATEWAY_BROKER_RETENTION, GATEWAY_LEADER_LEASE.
        broker=broker_from_env(env, broker),
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


def _env_positive(env: dict[str, str], name: str, unit: str = "") -> float | None:
    """A positive, finite number (`unit` names it in the error, e.g. " of seconds"); None if
    unset."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number{unit}, got {raw!r}")
    return value


def _env_ttls(env: dict[str, str]) -> dict[str, float]:
    """GATEWAY_TTL_<CATEGORY> in seconds: a positive, finite number."""
    overrides: dict[str, float] = {}
    for category in TTL_CATEGORIES:
        seconds = _env_positive(env, f"GATEWAY_TTL_{category.upper()}", " of seconds")
        if seconds is not None:
            overrides[f"ttl_{category}"] = seconds
    return overrides


def _env_freshness(env: dict[str, str]) -> dict[str, float]:
    """GATEWAY_FRESH_<CATEGORY> and GATEWAY_MAX_AGE_<CATEGORY> in seconds: positive, finite
    (that a freshness limit is not above its hard limit is checked by `Settings.validated`)."""
    overrides: dict[str, float] = {}
    for category in FRESHNESS_CATEGORIES:
        for prefix, attribute in (("FRESH", "fresh"), ("MAX_AGE", "max_age")):
            name = f"GATEWAY_{prefix}_{category.upper()}"
            seconds = _env_positive(env, name, " of seconds")
            if seconds is not None:
                overrides[f"{attribute}_{category}"] = seconds
    return overrides


def _env_list(env: dict[str, str], name: str) -> list[str] | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _env_tier(env: dict[str, str], tier: str) -> dict[str, int]:
    name = f"GATEWAY_TIER_{tier.upper()}"
    overrides: dict[str, int] = {}
    for item in _env_list(env, name) or []:
        limit, _, value = item.partition("=")
        limit = limit.strip()
        if limit not in TIER_LIMIT_NAMES:
            raise ConfigError(
                f"{name}: unknown limit {limit!r} (one of {', '.join(TIER_LIMIT_NAMES)})"
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
        if anonymous.lower() not in ANONYMOUS_ACCESS:
            raise ConfigError(f"GATEWAY_ANONYMOUS must be read or off, got {anonymous!r}")
        overrides["anonymous_access"] = anonymous.lower()
    for tier in TIER_NAMES:
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


# -- WebSocket connection caps, idle time and the descriptor reserve (gateway/api/ws/admission.py)


def _env_count(env: dict[str, str], name: str, minimum: int) -> int | None:
    """An integer of at least `minimum`; None if unset."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        number = int(raw.strip())
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ConfigError(f"{name} must be an integer of at least {minimum}, got {raw!r}")
    return number


def _env_ws_limits(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_WS_MAX_CONNECTIONS (a number, or `auto`: derived from the descriptor limit),
    GATEWAY_FD_RESERVE, GATEWAY_WS_IDLE_TIMEOUT (seconds, positive) and GATEWAY_WS_COMPRESSION."""
    overrides: dict[str, Any] = {}
    raw = env.get("GATEWAY_WS_MAX_CONNECTIONS")
    if raw is not None and raw.strip().lower() != "auto":
        overrides["ws_max_connections"] = _env_count(env, "GATEWAY_WS_MAX_CONNECTIONS", 1)
    overrides["fd_reserve"] = _env_count(env, "GATEWAY_FD_RESERVE", 0)
    idle = _env_positive(env, "GATEWAY_WS_IDLE_TIMEOUT", " of seconds")
    if idle is not None:
        overrides["ws_idle_timeout"] = idle
    compression = env.get("GATEWAY_WS_COMPRESSION")  # shared | off (gateway/api/deflate.py)
    if compression is not None:
        overrides["ws_compression"] = compression.strip().lower()
    return overrides


# -- connection caps and the listen backlog (gateway/api/connections.py, server.py) -----------


def _env_connections(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_HTTP_MAX_CONNECTIONS (a number, or `auto`: derived from the descriptor limit),
    GATEWAY_HTTP_MAX_CONNECTIONS_PER_CLIENT (0: no cap) and GATEWAY_HTTP_BACKLOG (1-65535)."""
    overrides: dict[str, Any] = {}
    raw = env.get("GATEWAY_HTTP_MAX_CONNECTIONS")
    if raw is not None and raw.strip().lower() != "auto":
        overrides["http_max_connections"] = _env_count(env, "GATEWAY_HTTP_MAX_CONNECTIONS", 1)
    overrides["http_max_connections_per_client"] = _env_count(
        env, "GATEWAY_HTTP_MAX_CONNECTIONS_PER_CLIENT", 0
    )
    backlog = _env_count(env, "GATEWAY_HTTP_BACKLOG", 1)
    if backlog is not None and backlog > 65535:
        raise ConfigError(f"GATEWAY_HTTP_BACKLOG must be at most 65535, got {backlog}")
    overrides["http_backlog"] = backlog
    return overrides


# -- slow clients and allowed hosts (gateway/api/server.py, app.py, http_policy.py) ------------


def _env_http(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_HTTP_HEADER_TIMEOUT and GATEWAY_HTTP_BODY_TIMEOUT (seconds, positive) and
    GATEWAY_ALLOWED_HOSTS (comma-separated host names, or *)."""
    overrides: dict[str, Any] = {}
    for name, attribute in (
        ("GATEWAY_HTTP_HEADER_TIMEOUT", "http_header_timeout"),
        ("GATEWAY_HTTP_BODY_TIMEOUT", "http_body_timeout"),
    ):
        seconds = _env_positive(env, name, " of seconds")
        if seconds is not None:
            overrides[attribute] = seconds
    hosts = _env_list(env, "GATEWAY_ALLOWED_HOSTS")
    if hosts is not None:
        overrides["allowed_hosts"] = parse_allowed_hosts(hosts, "GATEWAY_ALLOWED_HOSTS")
    return overrides


# -- sentiment (gateway/news/sentiment.py) ------------------------------------------------------


def _env_sentiment(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_SENTIMENT_MODEL (embedded, off, a model id or a directory) and
    GATEWAY_SENTIMENT_THREADS (0: automatic, or a number of torch threads)."""
    overrides: dict[str, Any] = {}
    model = env.get("GATEWAY_SENTIMENT_MODEL", "").strip()
    if model:
        overrides["sentiment_model"] = model
    overrides["sentiment_threads"] = _env_count(env, "GATEWAY_SENTIMENT_THREADS", 0)
    return overrides


# -- chain data (gateway/chains/) ----------------------------------------------------------------


def _env_chains(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_CHAIN_HEADS_INTERVAL, GATEWAY_GAS_INTERVAL (seconds), GATEWAY_CHAIN_RETENTION_DAYS,
    GATEWAY_CHAIN_MAX_LAG_BLOCKS, GATEWAY_GAS_FEE_HISTORY_BLOCKS (integers >= 1) and
    GATEWAY_GAS_REWARD_PERCENTILES ("10,50,90": three ascending percentiles)."""
    overrides: dict[str, Any] = {
        "chain_heads_interval": _env_positive(env, "GATEWAY_CHAIN_HEADS_INTERVAL"),
        "gas_interval": _env_positive(env, "GATEWAY_GAS_INTERVAL"),
        "chain_retention_days": _env_positive(env, "GATEWAY_CHAIN_RETENTION_DAYS"),
        "chain_max_lag_blocks": _env_count(env, "GATEWAY_CHAIN_MAX_LAG_BLOCKS", 1),
        "gas_fee_history_blocks": _env_count(env, "GATEWAY_GAS_FEE_HISTORY_BLOCKS", 1),
    }
    raw = env.get("GATEWAY_GAS_REWARD_PERCENTILES")
    if raw is not None and raw.strip():
        try:
            percentiles = tuple(float(part) for part in raw.split(","))
        except ValueError:
            percentiles = ()
        if len(percentiles) != 3 or list(percentiles) != sorted(percentiles) or not all(
            0 <= p <= 100 for p in percentiles
        ):
            raise ConfigError(
                "GATEWAY_GAS_REWARD_PERCENTILES must be three ascending percentiles from 0 to"
                f" 100, e.g. 10,50,90; got {raw!r}"
            )
        overrides["gas_reward_percentiles"] = percentiles
    return overrides


# -- whale tracking (gateway/chains/whales.py) --------------------------------------------------


def _env_whales(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_WHALE_TRACKING (1/0), GATEWAY_WHALE_MIN_USD (USD) and
    GATEWAY_WHALE_POLL_SECONDS (seconds), each positive."""
    return {
        "whale_tracking": _env_flag(env, "GATEWAY_WHALE_TRACKING"),
        "whale_min_usd": _env_positive(env, "GATEWAY_WHALE_MIN_USD"),
        "whale_poll_seconds": _env_positive(env, "GATEWAY_WHALE_POLL_SECONDS"),
    }


# -- news (gateway/news/) -----------------------------------------------------------------------


def _env_news(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_NEWS_SUMMARY_CHARS (an integer >= 1) and GATEWAY_NEWS_DEDUP_WINDOW_HOURS (hours,
    positive)."""
    return {
        "news_summary_chars": _env_count(env, "GATEWAY_NEWS_SUMMARY_CHARS", 1),
        "news_dedup_window_hours": _env_positive(env, "GATEWAY_NEWS_DEDUP_WINDOW_HOURS"),
    }


# -- operations (gateway/store/retention.py, gateway/sources/schedule.py, api/metrics.py) -----


def _env_operations(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_<NAME>_RETENTION_DAYS (days, 0 keeps all) for each retention setting,
    GATEWAY_SCHEDULE_TOLERANCE and GATEWAY_METRICS_INTERVAL (seconds, positive) and
    GATEWAY_METRICS_TOKEN (a secret: never logged or echoed)."""
    overrides: dict[str, Any] = {
        name: _env_seconds(env, f"GATEWAY_{name.upper()}") for name in RETENTION_SETTINGS
    }
    overrides["schedule_tolerance"] = _env_positive(env, "GATEWAY_SCHEDULE_TOLERANCE")
    overrides["metrics_interval"] = _env_positive(env, "GATEWAY_METRICS_INTERVAL")
    token = env.get("GATEWAY_METRICS_TOKEN", "").strip()
    overrides["metrics_token"] = token or None
    return overrides


# -- backups (gateway/ops/backup.py) -------------------------------------------------------------


def _env_backups(env: dict[str, str]) -> dict[str, Any]:
    """GATEWAY_BACKUP_DIR (a folder; daily backups are off when unset) and GATEWAY_BACKUP_KEEP
    (how many backups to keep, an integer >= 1)."""
    folder = env.get("GATEWAY_BACKUP_DIR", "").strip()
    return {
        "backup_dir": Path(folder) if folder else None,
        "backup_keep": _env_count(env, "GATEWAY_BACKUP_KEEP", 1),
    }

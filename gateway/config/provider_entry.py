"""One [[provider]] table of providers.toml, checked and turned into a `ProviderConfig`.

Every rule about a single entry lives here: its keys (also inside auth, health, breaker and
rate_limits), URLs and the `{key}` placeholder, auth kinds, tiers and the enabled /
disabled_reason pairing. A problem is a `ConfigError` that starts with `where` (file:line). Rules
that span entries (duplicate ids, pools and their members) are `providers_loader`'s; this module
never reads a file and never looks at the environment (keys are `gateway.providers`' business).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.config.providers_file import (
    AUTH_KINDS,
    CATEGORIES,
    ID_PATTERN,
    KEY_PLACEHOLDER,
    MAX_RESPONSE_BYTES_LIMIT,
    RATE_LIMIT_WINDOWS,
    TIERS,
    AuthSpec,
    BreakerSpec,
    HealthCheckSpec,
    ProviderConfig,
    RateLimitWindow,
)
from gateway.errors import ConfigError

__all__ = ["check_source", "parse_provider"]

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
_ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_CHAIN_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PLACEHOLDER_RE = re.compile(r"\{[^}]*\}")
_URL_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_DOCS_SCHEMES = frozenset({"http", "https"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive(value: Any) -> bool:
    """A number above zero that is finite: TOML's nan and inf are numbers, but no interval,
    timeout or weight (a collector sleeping nan seconds crash-loops)."""
    return _is_number(value) and math.isfinite(value) and value > 0


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
        if number is not None and not _is_positive(number):
            raise ConfigError(
                f"{where}: health.{number_key} must be a positive, finite number, got {number!r}"
            )
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
    if not _is_positive(cooldown):
        raise ConfigError(
            f"{where}: breaker.cooldown_seconds must be a positive, finite number, got {cooldown!r}"
        )
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


def parse_provider(raw: dict[str, Any], where: str, line: int) -> ProviderConfig:
    unknown = sorted(set(raw) - _PROVIDER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for required in ("id", "category", "base_url"):
        if required not in raw:
            raise ConfigError(f"{where}: missing required key {required!r}")
    provider_id = raw["id"]
    if not isinstance(provider_id, str) or not ID_PATTERN.match(provider_id):
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
        if value is not None and not _is_positive(value):
            raise ConfigError(
                f"{where}: {number_key} must be a positive, finite number, got {value!r}"
            )
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
    if not _is_positive(weight):
        raise ConfigError(f"{where}: weight must be a finite number above 0, got {weight!r}")
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


_STREAM_SCHEMES = frozenset({"ws", "wss"})


def check_source(provider: ProviderConfig, where: str, sources: Mapping[str, bool]) -> None:
    """What runs the entry exists, and its base_url fits it.

    `sources` maps every name the sources registry knows to True for a live stream (the
    registry lives above this layer, so whoever sees both passes it in). An explicit
    `collector` must be one of those names; a live stream needs a ws:// or wss:// base_url,
    anything else (a REST collector, or an entry only health-checked and pooled) http(s)://.
    """
    name = provider.collector or provider.id
    if provider.collector is not None and provider.collector not in sources:
        known = ", ".join(sorted(sources))
        raise ConfigError(
            f"{where}: collector {provider.collector!r} is not a known collector (one of {known})"
        )
    scheme = provider.base_url.split(":", 1)[0].lower()
    stream = sources.get(name, False)
    if stream and scheme not in _STREAM_SCHEMES:
        raise ConfigError(
            f"{where}: base_url {provider.base_url!r} is not a WebSocket URL, but {name!r}"
            " is a live stream: it needs ws:// or wss://"
        )
    if not stream and scheme in _STREAM_SCHEMES:
        raise ConfigError(
            f"{where}: base_url {provider.base_url!r} is a WebSocket URL, but {name!r} is not"
            " a live stream: it needs http:// or https://"
        )

"""Configuration: the `Settings` of a running gateway (defaults, then the environment, then
command-line flags) and the providers.toml model and parser. Everything is validated here, once,
so the rest of the code never sees a bad value: a problem is a `ConfigError` naming the setting
(or, for providers.toml, the file and line), which the CLI prints as one line and exits 2. The
modules: `units` (SECONDS, MINUTES), `settings` (the typed class and its checks), `addresses`
(allowed hosts, CORS origins, trusted proxies), `environment` (GATEWAY_* variables),
`providers_file` (the model and default pools), `provider_entry` and `providers_loader` (the
parser). Every layer of the gateway imports this package, so it must
never import anything of the gateway above `gateway.errors` and `gateway.vocabulary`; its
modules import each other directly, never through this file.
"""

from __future__ import annotations

from gateway.config.environment import settings_from_env
from gateway.config.providers_file import (
    AUTH_KINDS,
    CATEGORIES,
    KEY_PLACEHOLDER,
    MAX_RESPONSE_BYTES_LIMIT,
    RATE_LIMIT_WINDOWS,
    STRATEGIES,
    TIERS,
    AuthSpec,
    BreakerSpec,
    HealthCheckSpec,
    PoolConfig,
    ProviderConfig,
    ProvidersFile,
    RateLimitWindow,
    default_pool_id,
    default_pools,
)
from gateway.config.providers_loader import load_providers
from gateway.config.settings import (
    TTL_CATEGORIES,
    Settings,
    parse_allowed_hosts,
    parse_cors_origins,
    parse_trusted_proxies,
)
from gateway.config.units import MINUTES, SECONDS

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
    "parse_allowed_hosts",
    "parse_cors_origins",
    "parse_trusted_proxies",
    "settings_from_env",
]

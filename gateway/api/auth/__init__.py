"""Who is calling and how much they may do: the gateway's API keys, roles and tier limits.

`principal` defines the caller (a key holder or an anonymous client) and its tier's limits;
`credentials` reads the API key a client presents; `access` decides what a principal may run
(roles, symbols per request, days of history); `metering` counts requests and open
subscriptions; `control` (`AccessControl`) checks keys against the store, ties the rest
together and closes the WebSockets of revoked keys. Everyone else imports from this package;
the submodules import each other directly, never through it. Nothing here may keep or log a
presented key.
"""

from __future__ import annotations

from gateway.api.auth.access import (
    VIEWER_MUTATIONS,
    check_history,
    check_symbols,
    forbidden_result,
    require_admin,
)
from gateway.api.auth.control import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    AccessControl,
    Closeable,
    address_bucket,
)
from gateway.api.auth.credentials import credential_from_headers, credential_from_init
from gateway.api.auth.metering import UsageMeter, UsageSnapshot
from gateway.api.auth.principal import (
    Principal,
    TierLimits,
    current_principal,
    use_principal,
)

# Re-exported so callers catch the refusals of this package without importing gateway.errors.
from gateway.errors import RateLimited, TierLimitExceeded, Unauthenticated

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_UNAUTHORIZED",
    "VIEWER_MUTATIONS",
    "AccessControl",
    "Closeable",
    "Principal",
    "RateLimited",
    "TierLimitExceeded",
    "TierLimits",
    "Unauthenticated",
    "UsageMeter",
    "UsageSnapshot",
    "address_bucket",
    "check_history",
    "check_symbols",
    "credential_from_headers",
    "credential_from_init",
    "current_principal",
    "forbidden_result",
    "require_admin",
    "use_principal",
]

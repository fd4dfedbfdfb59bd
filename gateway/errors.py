"""The gateway's exception tree.

Every error the gateway raises on purpose derives from `GatewayError` and carries the GraphQL
`extensions.code` a client sees, so a resolver can let it propagate and the client still learns
exactly what failed::

    GatewayError                      code INTERNAL
    ├── ConfigError                   bad settings or providers.toml (CLI exits 2)
    ├── BadUserInput                  code BAD_USER_INPUT
    │   ├── UnknownSymbol             code UNKNOWN_SYMBOL
    │   └── TierLimitExceeded         more symbols/history than the caller's tier allows
    ├── Unauthenticated               code UNAUTHENTICATED: no usable key (HTTP 401, WS 4401/4403)
    ├── RateLimited                   code RATE_LIMITED: over the caller's tier rate; retryAfter
    ├── Forbidden                     code FORBIDDEN: the caller may not do this; nothing changed
    ├── UpstreamError                 code UPSTREAM_UNAVAILABLE; carries provider/endpoint/status
    │   ├── UpstreamRateLimited       code RATE_LIMITED; carries retry_after seconds
    │   ├── UpstreamPayloadError      the body was malformed or of the wrong shape
    │   ├── JsonRpcError              a JSON-RPC node answered an error object; carries the
    │   │                             JSON-RPC code and message (RATE_LIMITED for a limit)
    │   ├── CircuitOpenError          the provider's circuit breaker is open; nothing was sent
    │   ├── UpstreamUnconfigured      disabled, or its API key is missing; nothing was sent
    │   ├── PoolExhausted             every provider of a pool failed; lists each one's error
    │   └── StaleData                 code STALE_DATA: the newest data is past its hard age
    │                                 limit; carries ageSeconds and maxAgeSeconds
    ├── StorageError                  the database could not be read or written
    │   └── StoreUnavailable          code STORE_UNAVAILABLE: the database server cannot be
    │                                 reached (PostgreSQL down); carries the reason
    ├── BrokerUnavailable             code BROKER_UNAVAILABLE: the Redis broker (several
    │                                 replicas) cannot be reached; live streams pause
    └── ModelUnavailable              code MODEL_UNAVAILABLE: no sentiment model could be
                                      loaded (or it is still loading); carries the reason

Never raise a bare Exception for a condition a user can cause or a provider can trigger.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "BadUserInput",
    "BrokerUnavailable",
    "CircuitOpenError",
    "ConfigError",
    "Forbidden",
    "GatewayError",
    "JsonRpcError",
    "ModelUnavailable",
    "PoolExhausted",
    "RateLimited",
    "StaleData",
    "StorageError",
    "StoreUnavailable",
    "TierLimitExceeded",
    "Unauthenticated",
    "UnknownSymbol",
    "UpstreamError",
    "UpstreamPayloadError",
    "UpstreamRateLimited",
    "UpstreamUnconfigured",
    "without_provider",
]


class GatewayError(Exception):
    """Base of every deliberate gateway error; `code` becomes GraphQL `extensions.code`."""

    code = "INTERNAL"

    def extensions(self) -> dict[str, Any]:
        """Extra fields for the GraphQL error's `extensions` (the code is added by the caller)."""
        return {}


class ConfigError(GatewayError):
    """Settings or providers.toml are invalid; the message names the setting or line."""


class BadUserInput(GatewayError):
    """The client sent arguments that cannot be served."""

    code = "BAD_USER_INPUT"


class UnknownSymbol(BadUserInput):
    """The client asked for an asset symbol the gateway does not know."""

    code = "UNKNOWN_SYMBOL"

    def __init__(self, symbol: str, suggestions: list[str] | None = None) -> None:
        self.symbol = symbol
        self.suggestions = suggestions or []
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown symbol {symbol!r}{hint}")

    def extensions(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "suggestions": self.suggestions}


class Forbidden(GatewayError):
    """The caller is not allowed to perform this operation; nothing was changed."""

    code = "FORBIDDEN"


def without_provider(provider: str, message: str) -> str:
    """`message` with any leading "provider: " removed (repeated ones too), so a text that
    already names its provider is not prefixed a second time."""
    prefix = f"{provider}: "
    while message.startswith(prefix):
        message = message[len(prefix) :]
    return message


class UpstreamError(GatewayError):
    """An upstream provider failed; the message and fields say which one and how."""

    code = "UPSTREAM_UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        endpoint: str | None = None,
        status: int | None = None,
    ) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.status = status
        # What went wrong, without the provider: callers that name the provider themselves
        # ("kraken failed: …") print this, so no text says "kraken: kraken: …".
        self.reason = without_provider(provider, message)
        super().__init__(f"{provider}: {self.reason}")

    def extensions(self) -> dict[str, Any]:
        return {"provider": self.provider, "endpoint": self.endpoint, "httpStatus": self.status}


class UpstreamRateLimited(UpstreamError):
    """The upstream answered 429 (or 503 with Retry-After)."""

    code = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        endpoint: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, endpoint=endpoint, status=status)
        self.retry_after = retry_after

    def extensions(self) -> dict[str, Any]:
        return {**super().extensions(), "retryAfter": self.retry_after}


class UpstreamPayloadError(UpstreamError):
    """The upstream body was not JSON, or JSON of a shape the parser does not accept.

    Counts as a provider failure; nothing from such a body is ever stored.
    """


class JsonRpcError(UpstreamError):
    """A JSON-RPC 2.0 node answered an error object instead of a result.

    `rpc_code` and `rpc_message` are the node's own (e.g. -32601 "method not found", -32005
    "limit exceeded"); `data` its optional `data` member. The node did answer, so this is not
    counted against its circuit breaker, but a pool fails over to its next node. A node's rate
    limit (-32005, or a message saying so) carries the code RATE_LIMITED.
    """

    # Codes and words with which nodes say "too many requests" inside a 200 answer.
    RATE_LIMIT_CODES = frozenset({-32005, -32029, 429})

    def __init__(
        self,
        rpc_code: int,
        rpc_message: str,
        *,
        provider: str,
        method: str | None = None,
        data: Any = None,
        endpoint: str | None = None,
    ) -> None:
        self.rpc_code = rpc_code
        self.rpc_message = rpc_message
        self.method = method
        self.data = data
        lowered = rpc_message.lower()
        if rpc_code in self.RATE_LIMIT_CODES or "rate limit" in lowered or "too many" in lowered:
            self.code = "RATE_LIMITED"
        where = f"{method}: " if method else ""
        super().__init__(
            f"{where}JSON-RPC error {rpc_code}: {rpc_message}", provider=provider, endpoint=endpoint
        )

    def extensions(self) -> dict[str, Any]:
        return {**super().extensions(), "rpcCode": self.rpc_code, "rpcMessage": self.rpc_message}


class CircuitOpenError(UpstreamError):
    """The provider's circuit breaker is open (or its one half-open probe is in flight), so the
    request was refused without being sent. `retry_in` is seconds until a probe may go."""

    def __init__(
        self, *, provider: str, endpoint: str | None = None, retry_in: float = 0.0
    ) -> None:
        self.retry_in = retry_in
        hint = f"; next probe in {retry_in:.3g}s" if retry_in > 0 else "; a probe is in flight"
        super().__init__(f"circuit open{hint}", provider=provider, endpoint=endpoint)

    def extensions(self) -> dict[str, Any]:
        return {**super().extensions(), "circuitOpen": True, "retryIn": self.retry_in}


class UpstreamUnconfigured(UpstreamError):
    """The provider is disabled, or needs an API key that is not configured; nothing was sent."""


class PoolExhausted(UpstreamError):
    """Every provider of a pool failed or was skipped; `errors` holds each one's last error.

    `errors` is a list of (provider id, error message, HTTP status or None), in the order the
    providers were considered. `provider` is the pool's id.
    """

    def __init__(self, pool: str, errors: list[tuple[str, str, int | None]]) -> None:
        self.pool = pool
        self.errors = list(errors)
        detail = "; ".join(
            f"{provider}: {without_provider(provider, message)}"
            for provider, message, _ in self.errors
        )
        super().__init__(
            f"every provider failed ({detail})" if detail else "the pool has no providers",
            provider=pool,
        )

    def extensions(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "providers": [
                {"provider": provider, "error": message, "httpStatus": status}
                for provider, message, status in self.errors
            ],
        }


class StaleData(UpstreamError):
    """The newest data there is for an answer is older than its category's hard age limit, so
    it is refused rather than served as current (code STALE_DATA).

    `age_seconds` is the data's age as the upstream dates it (its own timestamp where it gives
    one, else when the gateway fetched it); `max_age_seconds` the limit it broke. Raised inside a
    pool call it counts as that provider's failure, so the pool asks the next one.
    """

    code = "STALE_DATA"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        age_seconds: float,
        max_age_seconds: float,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, endpoint=endpoint)
        self.age_seconds = age_seconds
        self.max_age_seconds = max_age_seconds

    def extensions(self) -> dict[str, Any]:
        return {
            **super().extensions(),
            "ageSeconds": round(self.age_seconds, 3),
            "maxAgeSeconds": self.max_age_seconds,
        }


class StorageError(GatewayError):
    """The database could not be opened, migrated, read or written."""


class StoreUnavailable(StorageError):
    """The database server (PostgreSQL) cannot be reached: history queries fail with this
    until it answers again, while live streams go on. `reason` is the driver's message."""

    code = "STORE_UNAVAILABLE"

    def __init__(self, database: str, reason: str) -> None:
        super().__init__(f"the database {database} is unavailable: {reason}")
        self.database = database
        self.reason = reason

    def extensions(self) -> dict[str, Any]:
        return {"reason": self.reason}


class BrokerUnavailable(GatewayError):
    """The Redis broker that carries live events between replicas cannot be reached (`reason`
    says why). Queries are still answered from the database; a subscription gets this as its
    `error` instead of waiting in silence, and may subscribe again once the broker is back."""

    code = "BROKER_UNAVAILABLE"

    def __init__(self, reason: str) -> None:
        super().__init__(f"live events are unavailable: the broker cannot be reached: {reason}")
        self.reason = reason

    def extensions(self) -> dict[str, Any]:
        return {"reason": self.reason}


class ModelUnavailable(GatewayError):
    """No sentiment model is available: none could be loaded (`reason` says why: disabled,
    missing files, labels it cannot map), or it is still loading. Nothing is scored, so nothing
    is made up: articles keep `sentiment: null`, and a query that needs a score gets this."""

    code = "MODEL_UNAVAILABLE"

    def __init__(self, reason: str) -> None:
        super().__init__(f"no sentiment model is available: {reason}")
        self.reason = reason

    def extensions(self) -> dict[str, Any]:
        return {"reason": self.reason}


class Unauthenticated(GatewayError):
    """No usable credentials: a key is required and none was sent, or the key is bad or revoked.

    HTTP 401 with code UNAUTHENTICATED; over WebSocket, close 4401 (none sent) or 4403 (bad).
    """

    code = "UNAUTHENTICATED"

    def __init__(self, message: str, *, presented: bool) -> None:
        super().__init__(message)
        self.presented = presented


class RateLimited(GatewayError):
    """Over a request-rate or concurrency limit of the caller's tier; retrying later works."""

    code = "RATE_LIMITED"

    def __init__(
        self, message: str, *, limit: str, maximum: int, tier: str, retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum
        self.tier = tier
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int | None:
        """Whole seconds, rounded up (what Retry-After carries); at least 1."""
        if self.retry_after is None:
            return None
        return max(1, math.ceil(self.retry_after))

    def extensions(self) -> dict[str, Any]:
        return {
            "retryAfter": self.retry_after_seconds,
            "limit": self.limit,
            "maximum": self.maximum,
            "tier": self.tier,
        }


class TierLimitExceeded(BadUserInput):
    """The arguments ask for more than the caller's tier allows (symbols, history)."""

    def __init__(self, message: str, *, limit: str, maximum: int, tier: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum
        self.tier = tier

    def extensions(self) -> dict[str, Any]:
        return {"limit": self.limit, "maximum": self.maximum, "tier": self.tier}

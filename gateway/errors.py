"""The gateway's exception tree.

Every error the gateway raises on purpose derives from `GatewayError` and carries the GraphQL
`extensions.code` a client sees, so a resolver can let it propagate and the client still learns
exactly what failed::

    GatewayError                      code INTERNAL
    ├── ConfigError                   bad settings or providers.toml (CLI exits 2)
    ├── BadUserInput                  code BAD_USER_INPUT
    │   └── UnknownSymbol             code UNKNOWN_SYMBOL
    ├── UpstreamError                 code UPSTREAM_UNAVAILABLE; carries provider/endpoint/status
    │   ├── UpstreamRateLimited       code RATE_LIMITED; carries retry_after seconds
    │   └── UpstreamPayloadError      the body was malformed or of the wrong shape
    └── StorageError                  the database could not be read or written

Never raise a bare Exception for a condition a user can cause or a provider can trigger.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadUserInput",
    "ConfigError",
    "GatewayError",
    "StorageError",
    "UnknownSymbol",
    "UpstreamError",
    "UpstreamPayloadError",
    "UpstreamRateLimited",
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
        super().__init__(f"{provider}: {message}")

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


class StorageError(GatewayError):
    """The SQLite database could not be opened, migrated, read or written."""

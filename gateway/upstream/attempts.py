"""What one upstream attempt is and how it ended: the record the upstream client keeps.

`Outcome` names the six ways an HTTP exchange can end (see `gateway.upstream.client`), and
`Attempt` is the immutable record of one: provider, masked endpoint, status, latency, outcome and
a masked message. `AttemptCall` is the mutable bookkeeping while the attempt is in flight: it
builds the matching `UpstreamError` when the attempt fails, says what the outcome means to the
circuit breaker, and turns into the `Attempt` that is recorded.

Must never hold or record a secret: request headers are not kept, and every endpoint and
message passes through the request's masker first. Sends nothing and records nothing itself:
the client decides where an `Attempt` goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.models import utc_now
from gateway.upstream.masking import masker

__all__ = ["ATTEMPTS_KEPT", "OUTCOMES", "Attempt", "AttemptCall", "Outcome"]

Outcome = Literal["ok", "http_error", "timeout", "rate_limited", "malformed", "transport_error"]
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "ok",
    "http_error",
    "timeout",
    "rate_limited",
    "malformed",
    "transport_error",
)

# How many recent attempts the client keeps (its `attempts` deque).
ATTEMPTS_KEPT: Final = 1000


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to an upstream and how it ended.

    `endpoint` is the path below the provider's base URL, without the query string.
    `error_type` is None for a success, otherwise the outcome name (`timeout`, `http_error`, ...).
    `status` is the HTTP status when one was received.
    """

    provider: str
    endpoint: str
    status: int | None
    latency_ms: float
    error_type: str | None
    at: datetime
    message: str | None = None  # what went wrong, secrets masked (None for a success)

    @property
    def ok(self) -> bool:
        return self.error_type is None


class AttemptCall:
    """Mutable bookkeeping for one attempt while it is in flight."""

    __slots__ = (
        "endpoint",
        "mask",
        "message",
        "outcome",
        "provider",
        "size",
        "started",
        "status",
    )

    def __init__(
        self, provider: ProviderConfig, endpoint: str, secrets: tuple[str, ...] = ()
    ) -> None:
        self.provider = provider
        self.mask = masker(secrets)
        self.endpoint = self.mask(endpoint)
        self.started = time.perf_counter()
        self.status: int | None = None
        self.outcome: Outcome | None = None
        self.message: str | None = None
        self.size = 0  # bytes of the body received

    def fail(self, outcome: Outcome, message: str) -> UpstreamError:
        """Note the outcome and build the matching error (the caller raises it)."""
        self.outcome = outcome
        self.message = self.mask(message)
        cls = UpstreamPayloadError if outcome == "malformed" else UpstreamError
        return cls(
            self.mask(message),
            provider=self.provider.id,
            endpoint=self.endpoint,
            status=self.status,
        )

    def counts_against_breaker(self) -> bool | None:
        """True: a provider failure; False: a success; None: neither (4xx, rate limited)."""
        if self.outcome == "ok":
            return False
        if self.outcome in ("timeout", "transport_error", "malformed"):
            return True
        if self.outcome == "http_error" and self.status is not None and self.status >= 500:
            return True
        return None

    def to_attempt(self) -> Attempt:
        """The record of this attempt, which must have reached an outcome."""
        assert self.outcome is not None
        return Attempt(
            provider=self.provider.id,
            endpoint=self.endpoint,
            status=self.status,
            latency_ms=(time.perf_counter() - self.started) * 1000.0,
            error_type=None if self.outcome == "ok" else self.outcome,
            at=utc_now(),
            message=None if self.outcome == "ok" else (self.message or self.outcome),
        )

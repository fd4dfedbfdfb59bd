"""Everything between the gateway and upstream HTTP APIs: the shared client, rate limits,
circuit breakers and provider pools.

Sources import from here, never from httpx directly, so that every upstream request is bounded,
size-capped, rate-limited, circuit-broken, classified and recorded the same way.
"""

from gateway.upstream.breaker import BreakerState, CircuitBreaker
from gateway.upstream.client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_USER_AGENT,
    NO_RETRY,
    OUTCOMES,
    Attempt,
    BreakerChangeCallback,
    Outcome,
    RetryPolicy,
    UpstreamClient,
    parse_retry_after,
)
from gateway.upstream.pool import (
    Guards,
    Pool,
    PoolMember,
    RotationEvent,
    RotationReason,
    Strategy,
)
from gateway.upstream.ratelimit import RateLimiter, ThresholdCallback, WindowUsage

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_USER_AGENT",
    "NO_RETRY",
    "OUTCOMES",
    "Attempt",
    "BreakerChangeCallback",
    "BreakerState",
    "CircuitBreaker",
    "Guards",
    "Outcome",
    "Pool",
    "PoolMember",
    "RateLimiter",
    "RetryPolicy",
    "RotationEvent",
    "RotationReason",
    "Strategy",
    "ThresholdCallback",
    "UpstreamClient",
    "WindowUsage",
    "parse_retry_after",
]

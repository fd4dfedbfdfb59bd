"""Everything between the gateway and upstream HTTP APIs: the shared client, rate limits,
circuit breakers and provider pools.

Sources import from here, never from httpx directly, so that every upstream request is bounded,
size-capped, rate-limited, circuit-broken, classified and recorded the same way.
"""

from gateway.upstream.attempts import OUTCOMES, Attempt, Outcome
from gateway.upstream.breaker import BreakerState, CircuitBreaker
from gateway.upstream.client import (
    DEFAULT_USER_AGENT,
    NO_RETRY,
    BreakerChangeCallback,
    RetryPolicy,
    UpstreamClient,
)
from gateway.upstream.decoding import DEFAULT_MAX_RESPONSE_BYTES
from gateway.upstream.pool import (
    Guards,
    Pool,
    PoolMember,
    RotationEvent,
    RotationReason,
)
from gateway.upstream.ratelimit import RateLimiter, ThresholdCallback, WindowUsage
from gateway.upstream.status_errors import parse_retry_after
from gateway.vocabulary import RotationStrategy

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
    "RotationStrategy",
    "ThresholdCallback",
    "UpstreamClient",
    "WindowUsage",
    "parse_retry_after",
]

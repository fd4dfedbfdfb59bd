"""Everything between the gateway and upstream HTTP APIs: the shared client (and, later, rate
limits, circuit breakers, provider pools and health checks).

Sources import from here, never from httpx directly, so that every upstream request is bounded,
size-capped, classified and recorded the same way.
"""

from gateway.upstream.client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_USER_AGENT,
    OUTCOMES,
    Attempt,
    Outcome,
    UpstreamClient,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_USER_AGENT",
    "OUTCOMES",
    "Attempt",
    "Outcome",
    "UpstreamClient",
    "parse_retry_after",
]

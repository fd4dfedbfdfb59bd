"""What an upstream's non-2xx answer means: `status_error` turns it into the right error.

A 429 is always a rate limit; a 418 or 503 is one only when it says when to come back
(Retry-After, read by `parse_retry_after`): `UpstreamRateLimited(retry_after)`, outcome
`rate_limited`. Any other non-2xx status is an `UpstreamError` (outcome `http_error`) quoting the
first `ERROR_SNIPPET_BYTES` of the body on one line, secrets masked.

Must never read more of an error body than the snippet, nor retry or wait: the client decides
what to do with the error.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from gateway.errors import UpstreamError, UpstreamRateLimited
from gateway.models import utc_now
from gateway.upstream.attempts import AttemptCall

__all__ = ["ERROR_SNIPPET_BYTES", "parse_retry_after", "read_snippet", "status_error"]

# How much of an error response body is quoted in the exception message.
ERROR_SNIPPET_BYTES: Final = 300

# 429 is always a rate limit. 503 means "overloaded, come back later" only when the server says
# when; Binance answers 418 with Retry-After when an IP is banned for ignoring earlier 429s.
_RATE_LIMIT_STATUSES: Final = frozenset({429})
_RATE_LIMIT_IF_RETRY_AFTER: Final = frozenset({418, 503})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a Retry-After header, or None if absent or unreadable.

    RFC 9110 allows either a number of seconds or an HTTP-date; a date in the past means 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 5322 "-0000": treat as UTC, as HTTP-dates always are
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utc_now())).total_seconds())


async def status_error(call: AttemptCall, response: httpx.Response) -> UpstreamError:
    """The error for a non-2xx `response`, its outcome noted on `call` (the caller raises it)."""
    status = response.status_code
    retry_after_header = response.headers.get("retry-after")
    if status in _RATE_LIMIT_STATUSES or (
        status in _RATE_LIMIT_IF_RETRY_AFTER and retry_after_header is not None
    ):
        call.outcome = "rate_limited"
        retry_after = parse_retry_after(retry_after_header)
        hint = f", retry after {retry_after:g}s" if retry_after is not None else ""
        call.message = f"rate limited (HTTP {status}{hint})"
        return UpstreamRateLimited(
            f"rate limited (HTTP {status}{hint})",
            provider=call.provider.id,
            endpoint=call.endpoint,
            status=status,
            retry_after=retry_after,
        )
    snippet = await read_snippet(response)
    return call.fail("http_error", f"HTTP {status}" + (f": {snippet}" if snippet else ""))


async def read_snippet(response: httpx.Response) -> str:
    """The start of an error body, on one line, for the exception message."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= ERROR_SNIPPET_BYTES:
            break
    text = bytes(data[:ERROR_SNIPPET_BYTES]).decode("utf-8", errors="replace")
    return " ".join(text.split())

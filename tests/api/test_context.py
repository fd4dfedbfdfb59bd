"""A request context's warnings stay bounded, however long the context lives.

One context serves every operation on a WebSocket, and one serves the shared subscriptions for
the whole life of the process: their warnings must not grow with each operation."""

from __future__ import annotations

from typing import Any, cast

from gateway.api.context import MAX_WARNINGS, RequestContext, Services


def context() -> RequestContext:
    return RequestContext(cast(Services, cast(Any, object())))


def test_a_warning_repeated_by_every_operation_is_kept_once() -> None:
    ctx = context()
    for _ in range(10_000):
        ctx.warn("STALE_DATA", "coingecko's price is 95 s old", provider="coingecko")
    assert ctx.warnings == [
        {"code": "STALE_DATA", "message": "coingecko's price is 95 s old", "provider": "coingecko"}
    ]


def test_distinct_warnings_stop_at_the_cap() -> None:
    ctx = context()
    for n in range(10_000):
        ctx.warn("NO_DATA", f"no price for SYM{n}", symbol=f"SYM{n}")
    assert len(ctx.warnings) == MAX_WARNINGS
    assert ctx.warnings[0]["symbol"] == "SYM0"  # the first ones are the ones kept

"""Error texts name their provider once (issue 13: "kraken: kraken: …")."""

from __future__ import annotations

from gateway.errors import PoolExhausted, UpstreamError, UpstreamRateLimited


def test_an_upstream_error_names_its_provider_once() -> None:
    plain = UpstreamError("HTTP 500", provider="kraken")
    assert str(plain) == "kraken: HTTP 500" and plain.reason == "HTTP 500"
    already = UpstreamRateLimited("kraken: second budget used up", provider="kraken")
    assert str(already) == "kraken: second budget used up"
    assert already.reason == "second budget used up"


def test_a_pool_error_names_each_provider_once() -> None:
    inner = UpstreamError("timed out", provider="kraken")
    pool = PoolExhausted("prices", [("kraken", str(inner), None), ("binance", "HTTP 503", 503)])
    assert str(pool) == "prices: every provider failed (kraken: timed out; binance: HTTP 503)"

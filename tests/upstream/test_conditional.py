"""Conditional GET through the upstream client: `request_raw` returns the undecoded body with its
validators, sends them back, and takes a 304 as an answer (a success), never as data.

Before `request_raw` existed the client could not say what an answer's ETag was, and any 304
was an `http_error`; these tests fail on that client.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError
from gateway.upstream import NO_RETRY, UpstreamClient
from gateway.upstream.conditional import RawResponse, Validators

PROVIDER = ProviderConfig(
    id="feedprov",
    name="Feed provider",
    categories=("NEWS",),
    base_url="https://feeds.example.test",
    timeout_seconds=5.0,
)
BODY = "<?xml version='1.0' encoding='windows-1252'?><rss><channel><title>Caf\xe9</title>"
ETAG = '"abc123"'
MODIFIED = "Mon, 25 Mar 2024 08:45:00 GMT"


def feed_server(seen: list[httpx.Request]) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        validators = {"ETag": ETAG, "Last-Modified": MODIFIED}
        if request.headers.get("if-none-match") == ETAG:
            return httpx.Response(304, headers=validators)
        headers = {**validators, "Content-Type": "application/rss+xml; charset=windows-1252"}
        return httpx.Response(200, content=BODY.encode("cp1252"), headers=headers)

    return httpx.MockTransport(handler)


async def test_a_raw_answer_keeps_its_bytes_and_validators() -> None:
    seen: list[httpx.Request] = []
    async with UpstreamClient(transport=feed_server(seen)) as client:
        first = await client.request_raw(PROVIDER, "/rss")
    assert first == RawResponse(
        200,
        BODY.encode("cp1252"),  # not decoded: the feed parser reads the declared encoding
        {
            "etag": ETAG,
            "last-modified": MODIFIED,
            "content-type": "application/rss+xml; charset=windows-1252",
        },
    )
    assert not first.not_modified
    assert first.validators() == Validators(ETAG, MODIFIED)
    assert "if-none-match" not in seen[0].headers


async def test_validators_go_back_and_a_304_is_an_answer_not_an_error() -> None:
    seen: list[httpx.Request] = []
    async with UpstreamClient(transport=feed_server(seen)) as client:
        first = await client.request_raw(PROVIDER, "/rss")
        again = await client.request_raw(PROVIDER, "/rss", headers=first.validators().headers())
        breaker = client.breaker("feedprov")
        outcomes = [a.error_type for a in client.attempts]
    assert seen[1].headers["if-none-match"] == ETAG
    assert seen[1].headers["if-modified-since"] == MODIFIED
    assert again.not_modified and again.status == 304 and again.body == b""
    # A 304 that repeats no validator keeps the ones that still describe what we hold.
    assert RawResponse(304, b"", {}).validators(first.validators()) == first.validators()
    assert outcomes == [None, None]  # both recorded as successes
    assert breaker is not None and breaker.consecutive_failures == 0


async def test_a_304_to_an_ordinary_json_request_is_still_an_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(304)

    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.get_json(PROVIDER, "/data.json")
    assert caught.value.status == 304


async def test_raw_errors_are_the_usual_upstream_errors() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=b"maintenance")

    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.request_raw(PROVIDER, "/rss", retry=NO_RETRY)
    assert caught.value.status == 503

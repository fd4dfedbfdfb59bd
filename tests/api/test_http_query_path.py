"""The HTTP query path's per-request work (issue 16, item 3), against a real gateway on loopback.

What a request repeats is what it must: authentication, its tier's counts and limits, the
query's cost with its variables, execution. What it no longer repeats: parsing and validating
a document seen before (the engine's cache, visible in /metrics), a keep-alive timer task per
request (gateway.api.hypercorn_patches, patch 5), a task watching for a disconnect while
nothing is left to await (gateway.api.app), Starlette's router for /graphql.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel

from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway

SMALL = "{ __typename }"
PRICES = '{ prices(symbols: ["BTC", "ETH"]) { symbol usd provider sources } }'


async def post(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, **kw: Any
) -> httpx.Response:
    with trio.fail_after(5):
        return await client.post("/graphql", json={"query": query, "variables": variables}, **kw)


def cache_counts(metrics: str) -> dict[str, float]:
    """The document cache's series in a /metrics page: hit, miss, held, bound."""
    found = {}
    for name, value in re.findall(
        r'^gateway_graphql_document_cache_\w+\{\w+="(\w+)"\} (\S+)$', metrics, re.MULTILINE
    ):
        found[name] = float(value)
    return found


async def metrics(client: httpx.AsyncClient) -> dict[str, float]:
    with trio.fail_after(5):
        return cache_counts((await client.get("/metrics")).text)


async def test_a_repeated_query_is_parsed_once_and_the_cache_says_so(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway()
    async with httpx.AsyncClient(base_url=running.urls[0]) as client:
        before = await metrics(client)
        for _ in range(5):
            assert (await post(client, SMALL)).json() == {"data": {"__typename": "Query"}}
        after = await metrics(client)
    assert after["miss"] - before["miss"] == 1
    assert after["hit"] - before["hit"] == 4
    assert after["bound"] == 512 and 1 <= after["held"] <= 512


async def test_an_invalid_query_is_refused_the_same_way_every_time(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(query_max_depth=2)
    async with httpx.AsyncClient(base_url=running.urls[0]) as client:
        for query, code in (
            ("{ prices(symbols: [", "BAD_USER_INPUT"),  # syntax
            ("{ nope }", "BAD_USER_INPUT"),  # validation
            ("{ status { providers { total } } }", "QUERY_TOO_COMPLEX"),  # depth
        ):
            first = (await post(client, query)).json()
            second = (await post(client, query)).json()
            assert first == second, query
            assert "data" not in first and first["errors"][0]["extensions"]["code"] == code
        counts = await metrics(client)
    assert counts["hit"] >= 3  # the second of each came from the cache, refused all the same


async def test_limits_that_depend_on_variables_or_the_tier_apply_on_cache_hits(
    start_gateway: StartGateway,
) -> None:
    """The cached document is shared; the cost (from the variables) and the caller's tier
    limits are decided per request."""
    running = await start_gateway(query_max_cost=300)
    access = running.services.access
    assert access is not None
    _, pro = await access.keys.create("pro", "viewer", "pro")
    now = utc_now()
    with trio.fail_after(5):
        await running.services.storage.write_ticks(
            [PriceTick(s, 1.0, "a", now - timedelta(seconds=1)) for s in ("BTC", "ETH")]
        )
    costly = 'query($n: Int!) { ohlcv(symbol: "BTC", interval: H1, limit: $n) { open close } }'
    seven = "query($s: [String!]!) { prices(symbols: $s) { symbol } }"
    symbols = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE"]
    async with httpx.AsyncClient(base_url=running.urls[0]) as client:
        small = (await post(client, costly, {"n": 10})).json()
        assert "errors" not in small or small["errors"][0]["extensions"]["code"] != (
            "QUERY_TOO_COMPLEX"
        )
        big = (await post(client, costly, {"n": 1000})).json()  # a hit: same text
        assert big["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert big["errors"][0]["extensions"]["limit"] == "cost"

        free = (await post(client, seven, {"s": symbols})).json()
        assert free["errors"][0]["extensions"]["limit"] == "symbols"
        headers = {"Authorization": f"Bearer {pro}"}
        paid = (await post(client, seven, {"s": symbols}, headers=headers)).json()
        assert [p["symbol"] for p in paid["data"]["prices"]] == ["BTC", "ETH"]
        again = (await post(client, seven, {"s": symbols})).json()  # free again, cached doc
        assert again["errors"][0]["extensions"]["limit"] == "symbols"
        counts = await metrics(client)
    assert counts["hit"] >= 3


class _Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


async def _keep_alive_requests(running: RunningGateway, query: str, count: int) -> None:
    """`count` POSTs, one after another, on one keep-alive connection (raw socket: no client
    library's own tasks in the count); each answer read whole."""
    body = ('{"query": "' + query.replace('"', '\\"') + '"}').encode()
    request = (
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    async with stream:
        for _ in range(count):
            await stream.send_all(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(65536)
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            while len(rest) < length:
                rest += await stream.receive_some(65536)
            assert head.startswith(b"HTTP/1.1 200"), head


async def test_a_keep_alive_request_starts_one_task_the_asgi_app(
    start_gateway: StartGateway,
) -> None:
    """Hypercorn started a keep-alive timer task per request (under a lock, through
    nursery.start) and the app a task watching for a disconnect: three tasks per
    `{ __typename }`. Now the app's own task, and for a query that awaits (prices) the watcher."""
    running = await start_gateway(tier_free_per_minute=0, tier_free_per_day=0)
    counter = _Spawned()
    with trio.fail_after(10):
        await _keep_alive_requests(running, SMALL, 2)  # warm: the connection's own tasks
        trio.lowlevel.add_instrument(counter)
        try:
            await _keep_alive_requests(running, SMALL, 20)
            small = len(counter.names)
            counter.names.clear()
            await _keep_alive_requests(running, PRICES, 20)
            prices = len(counter.names)
        finally:
            trio.lowlevel.remove_instrument(counter)
    # Besides one task per request (two for prices): the connection's handler and its timer.
    assert small <= 20 + 3, counter.names  # was 62: three per request
    assert prices <= 20 * 2 + 3, counter.names  # was 62


async def test_a_keep_alive_connection_left_idle_is_still_closed_after_the_header_timeout(
    start_gateway: StartGateway,
) -> None:
    """The one timer per connection (patch 5) still closes it: after each response, the
    connection has `http_header_timeout` to start its next request."""
    running = await start_gateway(http_header_timeout=0.5)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        async with stream:
            for _ in range(3):  # requests closer together than the timeout: kept open
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = b""
                while b'"alive"' not in answer:
                    answer += await stream.receive_some(4096)
                await trio.sleep(0.3)
            began = trio.current_time()
            while await stream.receive_some(4096):
                pass
            idle = trio.current_time() - began
    assert 0.1 < idle < 1.5


async def test_an_unexpected_error_is_still_a_500_and_the_server_goes_on(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/graphql no longer runs under Starlette's error middleware: hypercorn answers 500 for an
    exception that escapes the handler, and the next request is served."""
    running = await start_gateway()
    access = running.app.access

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    async with httpx.AsyncClient(base_url=running.urls[0]) as client:
        with monkeypatch.context() as patch:
            patch.setattr(access, "authenticate", broken)
            assert (await post(client, SMALL)).status_code == 500
        answer = await post(client, SMALL)
        assert answer.status_code == 200 and answer.json()["data"] == {"__typename": "Query"}
        for method in ("PUT", "DELETE"):  # still Starlette's router: not allowed
            with trio.fail_after(5):
                assert (await client.request(method, "/graphql")).status_code == 405

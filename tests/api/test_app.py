"""GraphQL over HTTP, health, readiness and metrics, against a real gateway on loopback."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import httpx
import pytest
import structlog
import trio

from gateway.errors import StorageError
from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway

PRICES = '{ prices(symbols: ["btc", "ETH"]) { symbol usd provider sources ageSeconds } }'


async def post(running: RunningGateway, body: object, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
        return await client.post("/graphql", json=body, **kwargs)  # type: ignore[arg-type]


async def get(running: RunningGateway, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
        return await client.get(path, **kwargs)  # type: ignore[arg-type]


async def store(running: RunningGateway, *ticks: PriceTick) -> None:
    with trio.fail_after(5):
        await running.services.storage.write_ticks(list(ticks))


async def test_prices_are_the_median_of_fresh_providers(gateway: RunningGateway) -> None:
    now = utc_now()
    await store(
        gateway,
        PriceTick("BTC", 100.0, "a", now),
        PriceTick("BTC", 102.0, "b", now - timedelta(seconds=5)),
        PriceTick("BTC", 200.0, "c", now - timedelta(hours=2)),  # stale: not in the median
        PriceTick("BTC", 101.0, "d", now - timedelta(seconds=1)),
        PriceTick("ETH", 3000.0, "a", now),
    )
    response = await post(gateway, {"query": PRICES})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    btc, eth = response.json()["data"]["prices"]
    assert btc["symbol"] == "BTC" and btc["usd"] == 101.0
    assert btc["provider"] == "consensus" and btc["sources"] == ["a", "b", "d"]
    assert 0 <= btc["ageSeconds"] < 60
    assert eth == {
        "symbol": "ETH",
        "usd": 3000.0,
        "provider": "a",
        "sources": ["a"],
        "ageSeconds": eth["ageSeconds"],
    }


async def test_missing_prices_are_named_never_invented(gateway: RunningGateway) -> None:
    response = await post(gateway, {"query": PRICES})
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    await store(gateway, PriceTick("BTC", 100.0, "a", utc_now()))
    body = (await post(gateway, {"query": PRICES})).json()
    assert [p["symbol"] for p in body["data"]["prices"]] == ["BTC"]
    assert body["extensions"]["warnings"][0]["symbol"] == "ETH"


async def test_unknown_symbol_suggests_close_matches(gateway: RunningGateway) -> None:
    body = (await post(gateway, {"query": '{ prices(symbols: ["BTCC"]) { usd } }'})).json()
    error = body["errors"][0]
    assert error["extensions"]["code"] == "UNKNOWN_SYMBOL"
    assert "BTC" in error["extensions"]["suggestions"]


async def test_errors_never_echo_a_huge_input_back(gateway: RunningGateway) -> None:
    """An unknown 900 KB symbol came back as a 1.8 MB error (message and extensions.symbol)."""
    huge = "X" * 900_000
    for query, variables in (
        ("query($s: [String!]!) { prices(symbols: $s) { usd } }", {"s": ["BTC", huge]}),
        ("query($s: String!) { ohlcv(symbol: $s, interval: M1) { close } }", {"s": huge}),
        # graphql-core's own coercion error quotes an enum value whole
        ('query($i: Interval!) { ohlcv(symbol: "BTC", interval: $i) { close } }', {"i": huge}),
    ):
        response = await post(gateway, {"query": query, "variables": variables})
        assert len(response.content) < 2_000, query
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", query
    long_symbol = '{ prices(symbols: ["' + "Q" * 25 + '"]) { usd } }'
    body = (await post(gateway, {"query": long_symbol})).json()
    assert body["errors"][0]["message"] == "a symbol is at most 24 characters, got one of 25"
    # a plausible unknown symbol is still named, with suggestions
    body = (await post(gateway, {"query": '{ prices(symbols: ["ETHH"]) { usd } }'})).json()
    assert body["errors"][0]["extensions"]["symbol"] == "ETHH"
    assert "ETH" in body["errors"][0]["extensions"]["suggestions"]


async def test_price_history_candles(gateway: RunningGateway) -> None:
    now = utc_now().replace(second=0, microsecond=0)
    start = now.replace(minute=now.minute - now.minute % 5) - timedelta(minutes=30)  # M5-aligned
    ticks = [PriceTick("BTC", 100.0 + i, "a", start + timedelta(seconds=30 * i)) for i in range(20)]
    await store(gateway, *ticks)
    query = """query($from: DateTime!, $to: DateTime!) {
      priceHistory(symbol: "BTC", from: $from, to: $to, interval: M5) {
        openTime open high low close provider complete interval } }"""
    variables = {"from": start.isoformat(), "to": (start + timedelta(minutes=10)).isoformat()}
    body = (await post(gateway, {"query": query, "variables": variables})).json()
    candles = body["data"]["priceHistory"]
    assert [(c["open"], c["high"], c["low"], c["close"]) for c in candles] == [
        (100.0, 109.0, 100.0, 109.0),
        (110.0, 119.0, 110.0, 119.0),
    ]
    assert all(c["provider"] == "a" and c["interval"] == "M5" for c in candles)


async def test_price_history_rejects_bad_ranges(gateway: RunningGateway) -> None:
    query = '{ priceHistory(symbol: "BTC", from: "2026-01-02T00:00:00Z", to: "2026-01-01T00:00:00Z") { open } }'
    body = (await post(gateway, {"query": query})).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    query = '{ priceHistory(symbol: "BTC", from: "2020-01-01T00:00:00Z", interval: M1) { open } }'
    body = (await post(gateway, {"query": query})).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# -- GraphQL over HTTP conformance ------------------------------------------------------------


async def test_get_queries_work_and_get_mutations_do_not(gateway: RunningGateway) -> None:
    response = await get(gateway, "/graphql", params={"query": "{ status { version } }"})
    assert response.status_code == 200
    assert response.json()["data"]["status"]["version"] == gateway.services.version
    response = await get(gateway, "/graphql", params={"query": "mutation { x }"})
    assert response.status_code in {200, 400}  # no Mutation type yet: a validation error
    assert response.json()["errors"]


async def test_graphql_response_json_media_type(gateway: RunningGateway) -> None:
    accept = {"accept": "application/graphql-response+json"}
    ok = await post(gateway, {"query": "{ status { version } }"}, headers=accept)
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("application/graphql-response+json")
    invalid = await post(gateway, {"query": "{ nope }"}, headers=accept)
    assert invalid.status_code == 400  # request errors are 4xx with this media type
    legacy = await post(gateway, {"query": "{ nope }"})
    assert legacy.status_code == 200  # and 200 with application/json
    assert "data" not in legacy.json()


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"[1]", {"content-type": "application/json"}, 400),
        (b"query=x", {"content-type": "application/x-www-form-urlencoded"}, 415),
        (
            b'{"query": "{ status { version } }"}',
            {"content-type": "application/json", "accept": "text/plain"},
            406,
        ),
        (b"x" * (1024 * 1024 + 10), {"content-type": "application/json"}, 413),
    ],
)
async def test_bad_requests_get_clear_statuses(
    gateway: RunningGateway, content: bytes, headers: dict[str, str], status: int
) -> None:
    async with httpx.AsyncClient(base_url=gateway.urls[0], timeout=5) as client:
        response = await client.post("/graphql", content=content, headers=headers)
    assert response.status_code == status
    if status != 406:
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_variables_must_be_an_object(gateway: RunningGateway) -> None:
    body = (await post(gateway, {"query": "{ status { version } }", "variables": [1]})).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_subscriptions_over_http_point_to_websocket(gateway: RunningGateway) -> None:
    response = await post(
        gateway, {"query": 'subscription { priceTicks(symbols: ["BTC"]) { usd } }'}
    )
    assert response.status_code == 400
    assert "WebSocket" in response.json()["errors"][0]["message"]


async def test_graphql_get_for_a_browser_is_graphiql(gateway: RunningGateway) -> None:
    response = await get(gateway, "/graphql", headers={"accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_application_graphql_body(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.urls[0], timeout=5) as client:
        response = await client.post(
            "/graphql",
            content=b"{ status { version } }",
            headers={"content-type": "application/graphql"},
        )
    assert response.json()["data"]["status"]["version"]


# -- health, readiness, metrics ---------------------------------------------------------------


async def test_health_and_readiness(gateway: RunningGateway) -> None:
    assert (await get(gateway, "/healthz")).json()["status"] == "alive"
    ready = await get(gateway, "/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    gateway.services.ready = False
    assert (await get(gateway, "/readyz")).status_code == 503


async def test_readiness_fails_when_the_database_does(gateway: RunningGateway) -> None:
    storage = gateway.services.storage

    async def broken() -> None:
        raise OSError("disk gone")

    storage.ping = broken  # type: ignore[method-assign]
    response = await get(gateway, "/readyz")
    assert response.status_code == 503
    assert "database" in response.json()["problems"][0]


async def test_readiness_fails_while_database_writes_do(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full: reads (and the ping) still work, every commit fails. Not ready until a later
    commit succeeds."""
    storage = gateway.services.storage

    def disk_full(batch: object) -> int:
        raise StorageError("cannot write 1 rows: database or disk is full")

    with trio.fail_after(10):
        monkeypatch.setattr(storage._writes, "_insert_sync", disk_full)
        await storage.queue_ticks([PriceTick("BTC", 1.0, "a", utc_now())])
        await storage.committed()
        response = await get(gateway, "/readyz")
        assert response.status_code == 503
        assert response.json()["problems"][0].startswith("database writes failing since ")
        assert (await get(gateway, "/readyz")).status_code == 503  # still: nothing committed
        monkeypatch.undo()
        await storage.write_ticks([PriceTick("BTC", 2.0, "a", utc_now())])
        assert (await get(gateway, "/readyz")).json() == {"status": "ready"}


async def test_metrics_are_prometheus_text(gateway: RunningGateway) -> None:
    await get(gateway, "/healthz")
    response = await get(gateway, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "gateway_up 1" in text
    assert 'gateway_http_requests_total{method="GET",status="200"}' in text
    assert "gateway_ws_frames_dropped_total 0" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2, line


async def test_status_query(gateway: RunningGateway) -> None:
    query = "{ status { status version uptimeSeconds providers { total online } subscribers databaseBytes } }"
    status = (await post(gateway, {"query": query})).json()["data"]["status"]
    assert status["version"] == gateway.services.version
    assert status["databaseBytes"] > 0
    assert status["subscribers"] == 0


async def test_client_disconnect_cancels_the_query(start_gateway: StartGateway) -> None:
    """A client that goes away mid-query must not leave its resolvers running."""
    running = await start_gateway()
    storage = running.services.storage
    started, cancelled = trio.Event(), trio.Event()
    original = storage.latest_ticks

    async def slow_latest(symbols: list[str]) -> list[PriceTick]:
        started.set()
        try:
            await trio.sleep(30)
        except trio.Cancelled:
            cancelled.set()
            raise
        return await original(symbols)

    storage.latest_ticks = slow_latest  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post, running, {"query": PRICES})
        with trio.fail_after(5):
            await started.wait()
        nursery.cancel_scope.cancel()  # the client hangs up
    with trio.fail_after(5):
        await cancelled.wait()


def test_payload_json_is_compact() -> None:
    from gateway.api.graphql_trio import dumps

    assert dumps({"a": [1, 2]}) == json.dumps({"a": [1, 2]}, separators=(",", ":"))


async def test_an_outlier_source_is_excluded_from_prices_and_counted(
    start_gateway: StartGateway,
) -> None:
    from gateway.config import ProviderConfig, ProvidersFile

    providers = ProvidersFile(
        tuple(
            ProviderConfig(id=p, name=p, categories=("MARKET_DATA",), base_url=f"https://{p}.example", enabled=False, disabled_reason="test")
            for p in ("a", "b", "c", "d")
        )
    )
    running = await start_gateway(providers=providers)
    now = utc_now()
    await store(
        running,
        PriceTick("BTC", 100.0, "a", now),
        PriceTick("BTC", 100.2, "b", now),
        PriceTick("BTC", 100.4, "c", now),
        PriceTick("BTC", 180.0, "d", now),
    )
    body = (await post(running, {"query": '{ prices(symbols: ["BTC"]) { usd sources } }'})).json()
    assert body["data"]["prices"] == [{"usd": 100.2, "sources": ["a", "b", "c"]}]


# -- slow and broken request bodies -----------------------------------------------------------

UPLOAD = (
    b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n"
)


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """hypercorn logged nothing at error level (its "Error in ASGI Framework" traceback)."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_trickled_body_is_cut_off_at_the_body_timeout(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A client sending its body a byte at a time held its connection (and a descriptor) for
    as long as it liked: 1,500 of them were all still held after 150 s."""
    running = await start_gateway(http_body_timeout=0.5)
    received = bytearray()
    with structlog.testing.capture_logs() as logs, trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        await stream.send_all(UPLOAD + b'{"query": ')
        began = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                for _ in range(100):  # 10 s at most, far past the limit
                    await trio.sleep(0.1)
                    try:
                        await stream.send_all(b" ")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

            nursery.start_soon(trickle)
            try:
                while chunk := await stream.receive_some(4096):
                    received += chunk
            except trio.BrokenResourceError:
                pass  # reset: the server closed with our last bytes unread
            closed_after = trio.current_time() - began
            nursery.cancel_scope.cancel()
        await stream.aclose()
    assert 0.4 < closed_after < 2.0  # closed by the server, at the limit
    assert received == b"" or received.startswith(b"HTTP/1.1 408 ")
    (aborted,) = [e for e in logs if e["event"] == "http.upload_aborted"]
    assert aborted["path"] == "/graphql" and aborted["client"] == "127.0.0.1"
    assert aborted["bytes_read"] >= len(b'{"query": ')
    assert "0.5 s" in aborted["reason"]
    _no_tracebacks(caplog)


async def test_an_upload_cut_short_is_one_log_line_not_a_traceback(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with structlog.testing.capture_logs() as logs, trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", gateway.port)
        await stream.send_all(UPLOAD + b'{"qu')
        await trio.sleep(0.2)
        await stream.aclose()
        while not any(e["event"] == "http.upload_aborted" for e in logs):
            await trio.sleep(0.02)
        await trio.sleep(0.2)  # anything else it would log
    (aborted,) = [e for e in logs if e["event"] == "http.upload_aborted"]
    assert aborted["reason"] == "client disconnected" and aborted["bytes_read"] == 4
    assert aborted["log_level"] == "warning"
    _no_tracebacks(caplog)

"""Access control: API keys, roles, tiers and their limits, revocation, over HTTP and WebSocket.

Unit tests drive `UsageMeter` and the credential parsers directly (time with autojump_clock);
the rest run a real gateway on loopback and act as a client would: keys sent as headers or in
connection_init, limits broken one request past them, keys revoked in-process and by a real
`python -m gateway keys revoke` against the same database while the server runs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trio
from graphql import parse
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.api.auth import (
    Principal,
    RateLimited,
    TierLimits,
    UsageMeter,
    credential_from_headers,
    credential_from_init,
    forbidden_result,
)
from gateway.api.graphql_trio import PreparedOperation
from gateway.config import Settings
from gateway.log import SecretMasker, configure_logging
from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from gateway.store.api_keys import KEY_PATTERN, hash_key
from tests.conftest import StartGateway, wait_members

REPO = Path(__file__).resolve().parents[2]
NO_UPSTREAMS = REPO / "tests" / "data" / "no-providers.toml"
TICKS = 'subscription { priceTicks(symbols: ["BTC"]) { symbol usd } }'
CREATE_POOL = 'mutation { createPool(name: "p", category: RPC, strategy: PRIORITY) { id } }'
USAGE = "{ apiKeyUsage(includeRevoked: true) { id name role tier prefix requestsToday refusedToday openSubscriptions openConnections lastUsedAt revokedAt limits { requestsPerMinute symbolsPerRequest } } }"


# -- helpers ----------------------------------------------------------------------------------


async def make_key(
    running: RunningGateway, role: str = "viewer", tier: str = "free"
) -> tuple[int, str]:
    access = running.services.access
    assert access is not None
    record, key = await access.keys.create(f"{role}-{tier}", role, tier)
    return record.id, key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(
    running: RunningGateway, query: str, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
            return await client.post("/graphql", json={"query": query, **body}, headers=headers)


def code(response: httpx.Response) -> str | None:
    errors = response.json().get("errors")
    return errors[0]["extensions"]["code"] if errors else None


def ws_url(running: RunningGateway) -> str:
    return running.urls[0].replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def connect(
    running: RunningGateway,
    protocol: str = "graphql-transport-ws",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(
        ws_url(running),
        subprotocols=[protocol],
        extra_headers=headers,
        connect_timeout=5,
        disconnect_timeout=2,
    ) as ws:
        yield ws


async def send(ws: WebSocketConnection, message: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(message))


async def receive(ws: WebSocketConnection, timeout: float = 3) -> dict[str, Any]:
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def close_code(ws: WebSocketConnection, timeout: float = 3) -> int:
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code
    raise AssertionError("unreachable")


async def init(ws: WebSocketConnection, payload: dict[str, Any] | None = None) -> None:
    await send(ws, {"type": "connection_init", **({"payload": payload} if payload else {})})
    message = await receive(ws)
    assert message == {"type": "connection_ack"}


async def subscribe(ws: WebSocketConnection, op_id: str, query: str = TICKS) -> None:
    await send(ws, {"type": "subscribe", "id": op_id, "payload": {"query": query}})


def limits(**overrides: int | None) -> TierLimits:
    values: dict[str, Any] = {
        "tier": "free",
        "per_minute": None,
        "per_day": None,
        "symbols": None,
        "history_days": None,
        "subscriptions": None,
    }
    values.update(overrides)
    return TierLimits(**values)


def principal(client: str = "ip:1.2.3.4", **overrides: int | None) -> Principal:
    key_id = int(client[4:]) if client.startswith("key:") else None
    return Principal(client, "viewer", limits(**overrides), admin=False, key_id=key_id)


# -- units: limits, credentials, operations ------------------------------------------------------


async def test_the_minute_window_slides(autojump_clock: trio.abc.Clock) -> None:
    meter = UsageMeter()
    caller = principal(per_minute=3)
    for _ in range(3):
        meter.admit(caller)
        await trio.sleep(10)
    with pytest.raises(RateLimited) as refused:
        meter.admit(caller)  # 30 s after the first: it leaves the window in 30 s
    assert refused.value.limit == "perMinute" and refused.value.maximum == 3
    assert refused.value.retry_after == pytest.approx(30)
    assert refused.value.extensions()["retryAfter"] == 30
    await trio.sleep(30)
    meter.admit(caller)  # the first request has left the window
    snapshot = meter.snapshot(caller.client)
    assert (snapshot.requests_today, snapshot.requests_last_minute, snapshot.refused_today) == (
        4,
        3,
        1,
    )


async def test_the_daily_limit_retries_after_midnight(autojump_clock: trio.abc.Clock) -> None:
    meter = UsageMeter()
    caller = principal(per_day=2)
    meter.admit(caller)
    meter.admit(caller)
    with pytest.raises(RateLimited) as refused:
        meter.admit(caller)
    assert refused.value.limit == "perDay"
    assert 0 < refused.value.retry_after <= 86_400  # type: ignore[operator]
    other = principal("ip:5.6.7.8", per_day=2)  # limits are per client
    meter.admit(other)


async def test_subscriptions_are_counted_and_released() -> None:
    meter = UsageMeter()
    caller = principal("key:7", subscriptions=2)
    meter.open_subscription(caller)
    meter.open_subscription(caller)
    with pytest.raises(RateLimited) as refused:
        meter.open_subscription(caller)
    assert refused.value.limit == "subscriptions" and refused.value.retry_after is None
    meter.close_subscription(caller)
    meter.open_subscription(caller)
    assert meter.snapshot("key:7").subscriptions == 2


async def test_anonymous_clients_are_bounded() -> None:
    meter = UsageMeter(max_anonymous=100)
    for n in range(1000):
        meter.admit(principal(f"ip:10.0.{n // 256}.{n % 256}", per_minute=5))
    assert meter.anonymous_clients == 100


async def test_usage_restores_and_saves_only_what_changed() -> None:
    meter = UsageMeter()
    day = utc_now().date().isoformat()
    meter.restore(day, {3: 40})
    assert meter.unsaved() == []
    meter.admit(principal("key:3"))
    rows = meter.unsaved()
    assert rows == [(3, day, 41)]
    meter.mark_saved(rows)
    assert meter.unsaved() == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        ([(b"authorization", b"Bearer gw_k")], "gw_k"),
        ([(b"Authorization", b"bearer   gw_k ")], "gw_k"),
        ([(b"x-api-key", b"gw_k")], "gw_k"),
        ([(b"authorization", b"gw_k")], "gw_k"),
        ([(b"authorization", b"Basic dXNlcjpwYXNz")], None),  # not ours: ignored
        ([(b"authorization", b"Bearer")], ""),  # sent, but empty: a bad key, not anonymous
    ],
)
def test_credentials_from_headers(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert credential_from_headers(headers) == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, None),
        ({"other": 1}, None),
        ({"authorization": "Bearer gw_k"}, "gw_k"),
        ({"Authorization": "Bearer gw_k"}, "gw_k"),
        ({"headers": {"Authorization": "Bearer gw_k"}}, "gw_k"),
        ({"headers": {"X-API-Key": "gw_k"}}, "gw_k"),
        ({"x-api-key": "gw_k"}, "gw_k"),
        ({"authorization": 12}, ""),
        ({"authorization": "Basic abc"}, ""),
    ],
)
def test_credentials_from_connection_init(payload: dict[str, Any], expected: str | None) -> None:
    assert credential_from_init(payload) == expected


def test_a_viewer_mutation_is_refused_whole_fragments_included() -> None:
    from graphql import OperationDefinitionNode

    document = parse(
        "mutation { a: analyzeSentiment ...F } fragment F on Mutation { b: createPool }"
    )
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    prepared = PreparedOperation(document, operation)
    refused = forbidden_result(principal(), prepared)
    assert refused is not None and refused.errors is not None
    assert [error.path for error in refused.errors] == [["b"]]
    admin = Principal("key:1", "admin", limits(), admin=True, key_id=1)
    assert forbidden_result(admin, prepared) is None
    only_viewer = parse("mutation { analyzeSentiment }")
    operation = only_viewer.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    assert forbidden_result(principal(), PreparedOperation(only_viewer, operation)) is None


def test_keys_are_masked_in_log_lines() -> None:
    key = "gw_0123abcd_" + "x" * 43
    masked = SecretMasker().mask(f"presented {key} and Bearer {key}")
    assert key not in masked and "x" * 8 not in masked
    assert "gw_0123abcd_***" in masked  # the public prefix still names the key


# -- HTTP ---------------------------------------------------------------------------------------


async def test_keys_over_http(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    _, key = await make_key(running)
    assert KEY_PATTERN.fullmatch(key)
    anonymous = await post(running, "{ status { version } }")
    assert anonymous.status_code == 200 and "errors" not in anonymous.json()
    for headers in (bearer(key), {"X-API-Key": key}):
        response = await post(running, "{ status { version } }", headers)
        assert response.status_code == 200 and "errors" not in response.json()
    for bad in (key[:-1] + ("A" if key[-1] != "A" else "B"), "gw_nope", "Bearer-ish"):
        response = await post(running, "{ status { version } }", bearer(bad))
        assert response.status_code == 401
        assert code(response) == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert bad not in response.text


async def test_anonymous_access_off_needs_a_key(start_gateway: StartGateway) -> None:
    running = await start_gateway(anonymous_access="off")
    response = await post(running, "{ status { version } }")
    assert response.status_code == 401 and code(response) == "UNAUTHENTICATED"
    _, key = await make_key(running)
    assert (await post(running, "{ status { version } }", bearer(key))).status_code == 200
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=running.urls[0]) as client:
            page = await client.get("/graphql", headers={"Accept": "text/html"})
            health = await client.get("/healthz")
    assert page.status_code == 200 and health.status_code == 200  # not GraphQL: open


async def test_roles_guard_mutations(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    _, viewer = await make_key(running, "viewer")
    _, admin = await make_key(running, "admin")
    for headers in (None, bearer(viewer)):
        body = (await post(running, CREATE_POOL, headers)).json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    registry = running.services.registry
    assert registry is not None and "p" not in registry.pools  # nothing changed
    body = (await post(running, CREATE_POOL, bearer(admin))).json()
    assert body == {"data": {"createPool": {"id": "p"}}}
    usage = (await post(running, USAGE, bearer(viewer))).json()
    assert usage["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_allow_admin_mutations_makes_everyone_admin(start_gateway: StartGateway) -> None:
    running = await start_gateway(allow_admin_mutations=True)
    body = (await post(running, CREATE_POOL)).json()
    assert body == {"data": {"createPool": {"id": "p"}}}


async def test_per_minute_limit_answers_429_with_retry_after(start_gateway: StartGateway) -> None:
    running = await start_gateway(tier_free_per_minute=3)
    for _ in range(3):
        assert (await post(running, "{ status { version } }")).status_code == 200
    refused = await post(running, "{ status { version } }")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] == int(refused.headers["retry-after"])
    assert error["extensions"]["limit"] == "perMinute" and error["extensions"]["tier"] == "free"
    _, key = await make_key(running, tier="pro")  # a key has its own budget
    assert (await post(running, "{ status { version } }", bearer(key))).status_code == 200


async def test_per_day_limit(start_gateway: StartGateway) -> None:
    running = await start_gateway(tier_pro_per_day=2)
    _, key = await make_key(running, tier="pro")
    for _ in range(2):
        assert (await post(running, "{ status { version } }", bearer(key))).status_code == 200
    refused = await post(running, "{ status { version } }", bearer(key))
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["extensions"]["limit"] == "perDay"


SEVEN = '["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE"]'


async def test_symbols_per_request_by_tier(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    with trio.fail_after(5):
        await running.services.storage.write_ticks([PriceTick("BTC", 1.0, "a", utc_now())])
    _, pro = await make_key(running, tier="pro")
    query = f"{{ prices(symbols: {SEVEN}) {{ symbol }} }}"
    refused = (await post(running, query)).json()["errors"][0]
    assert refused["extensions"] == {
        "code": "BAD_USER_INPUT",
        "limit": "symbols",
        "maximum": 5,
        "tier": "free",
    }
    duplicates = '{ prices(symbols: ["btc", "BTC", "Btc", "BTC", "btc", "BTC"]) { symbol } }'
    assert (await post(running, duplicates)).json()["data"]["prices"][0]["symbol"] == "BTC"
    assert (await post(running, query, bearer(pro))).json()["data"]["prices"][0]["symbol"] == "BTC"


async def test_history_depth_by_tier(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    _, pro = await make_key(running, tier="pro")
    start = (utc_now() - timedelta(days=8)).isoformat()
    end = (utc_now() - timedelta(days=7, hours=12)).isoformat()
    query = 'query($f: DateTime!, $t: DateTime!) { priceHistory(symbol: "BTC", from: $f, to: $t, interval: H1) { open } }'
    variables = {"f": start, "t": end}
    refused = (await post(running, query, variables=variables)).json()["errors"][0]
    assert refused["extensions"]["limit"] == "historyDays" and refused["extensions"]["maximum"] == 7
    # Allowed, but nothing is stored and no provider is configured: empty, and said so.
    allowed = (await post(running, query, bearer(pro), variables=variables)).json()
    assert allowed["data"] == {"priceHistory": []} and "errors" not in allowed
    assert allowed["extensions"]["warnings"][0]["code"] == "HISTORY_INCOMPLETE"
    deep = '{ ohlcv(symbol: "BTC", interval: D1, limit: 9) { open } }'
    assert (await post(running, deep)).json()["errors"][0]["extensions"]["limit"] == "historyDays"
    shallow = '{ ohlcv(symbol: "BTC", interval: D1, limit: 7) { open } }'
    assert (await post(running, shallow)).json()["data"] == {"ohlcv": []}
    assert (await post(running, deep, bearer(pro))).json()["data"] == {"ohlcv": []}


async def test_usage_is_queryable_by_admins_and_survives_a_restart(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    db = tmp_path / "usage.db"
    first = await start_gateway(db_path=db, auth_last_used_interval=0.0)
    key_id, key = await make_key(first, "admin", "pro")
    for _ in range(3):
        await post(first, "{ status { version } }", bearer(key))
    body = (await post(first, USAGE, bearer(key))).json()
    (row,) = body["data"]["apiKeyUsage"]
    assert row["id"] == str(key_id) and row["role"] == "ADMIN" and row["tier"] == "PRO"
    assert row["requestsToday"] == 4 and row["refusedToday"] == 0  # this query is the 4th
    assert row["prefix"] == key[:11] and key not in json.dumps(body)
    assert row["limits"] == {"requestsPerMinute": 300, "symbolsPerRequest": 100}
    first.gateway.shutdown.set()  # the usage is saved on the way out
    with trio.fail_after(10):
        await first.gateway.stopped.wait()
    second = await start_gateway(db_path=db)
    (row,) = (await post(second, USAGE, bearer(key))).json()["data"]["apiKeyUsage"]
    assert row["requestsToday"] == 5
    assert row["lastUsedAt"] is not None


# -- WebSocket ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["authorization", "Authorization", "headers", "x-api-key", "handshake"],
)
async def test_websocket_keys_in_every_accepted_place(
    start_gateway: StartGateway, how: str
) -> None:
    running = await start_gateway(anonymous_access="off")
    _, key = await make_key(running)
    payload: dict[str, Any] | None = {
        "authorization": {"authorization": f"Bearer {key}"},
        "Authorization": {"Authorization": f"Bearer {key}"},
        "headers": {"headers": {"Authorization": f"Bearer {key}"}},
        "x-api-key": {"X-API-Key": key},
        "handshake": None,
    }[how]
    headers = [(b"authorization", f"Bearer {key}".encode())] if how == "handshake" else None
    async with connect(running, headers=headers) as ws:
        await init(ws, payload)
        await send(ws, {"type": "subscribe", "id": "q", "payload": {"query": "{ __typename }"}})
        assert (await receive(ws))["type"] == "next"


async def test_websocket_auth_failures(start_gateway: StartGateway) -> None:
    running = await start_gateway(anonymous_access="off", ws_init_timeout=0.5)
    async with connect(running) as ws:  # no init at all
        assert await close_code(ws) == 4408
    async with connect(running) as ws:  # no key while one is required
        await send(ws, {"type": "connection_init"})
        assert await close_code(ws) == 4401
    async with connect(running) as ws:  # a bad key: closed before anything else
        await send(ws, {"type": "connection_init", "payload": {"authorization": "Bearer gw_x"}})
        await subscribe(ws, "s")
        assert await close_code(ws) == 4403
    async with connect(running) as ws:  # subscribe before the ack
        await subscribe(ws, "s")
        assert await close_code(ws) == 4401
    async with connect(running, "graphql-ws") as ws:  # legacy clients are told why
        await send(ws, {"type": "connection_init", "payload": {"authorization": "Bearer gw_x"}})
        message = await receive(ws)
        assert (
            message["type"] == "connection_error" and "not valid" in message["payload"]["message"]
        )
        assert await close_code(ws) == 4403


async def test_websocket_viewer_mutation_is_forbidden(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    _, viewer = await make_key(running, "viewer")
    async with connect(running) as ws:
        await init(ws, {"authorization": f"Bearer {viewer}"})
        await subscribe(ws, "m", CREATE_POOL)
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "m"
        assert message["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}  # the connection survives
    registry = running.services.registry
    assert registry is not None and "p" not in registry.pools


async def test_websocket_rate_limit_is_per_operation(start_gateway: StartGateway) -> None:
    running = await start_gateway(tier_free_per_minute=3)  # the handshake is one of them
    async with connect(running) as ws:
        await init(ws)
        for op_id in ("a", "b"):
            await subscribe(ws, op_id, "{ __typename }")
            assert (await receive(ws))["type"] == "next"
            assert (await receive(ws))["type"] == "complete"
        await subscribe(ws, "c", "{ __typename }")
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "c"
        extensions = message["payload"][0]["extensions"]
        assert extensions["code"] == "RATE_LIMITED" and 1 <= extensions["retryAfter"] <= 60
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}


async def test_concurrent_subscriptions_per_tier(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    _, key = await make_key(running, tier="free")
    auth = {"authorization": f"Bearer {key}"}
    async with connect(running) as first, connect(running) as second:
        await init(first, auth)
        await init(second, auth)  # the limit is the key's, over all its connections
        for n in range(3):
            await subscribe(first, f"s{n}")
        for n in range(2):
            await subscribe(second, f"t{n}")
        await wait_members(running, 5)
        await subscribe(second, "over")
        message = await receive(second)
        assert message["type"] == "error" and message["id"] == "over"
        assert message["payload"][0]["extensions"]["limit"] == "subscriptions"
        await send(first, {"type": "complete", "id": "s0"})
        await wait_members(running, 4)
        await subscribe(second, "over")  # one was freed
        await wait_members(running, 5)


async def test_subscription_symbols_are_limited_by_tier(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    _, pro = await make_key(running, tier="pro")
    query = f"subscription {{ priceTicks(symbols: {SEVEN}) {{ symbol }} }}"
    async with connect(running) as free_ws, connect(running) as pro_ws:
        await init(pro_ws, {"authorization": f"Bearer {pro}"})
        await subscribe(pro_ws, "p", query)  # starts a shared group
        await wait_members(running, 1)
        await init(free_ws)
        await subscribe(free_ws, "f", query)  # same text: must not slip into the pro group
        message = await receive(free_ws)
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["limit"] == "symbols"


async def test_subscription_replay_depth_is_limited_by_tier(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    since = (utc_now() - timedelta(days=8)).isoformat()
    query = f'subscription {{ priceTicks(symbols: ["BTC"], since: "{since}") {{ symbol }} }}'
    async with connect(running) as ws:
        await init(ws)
        await subscribe(ws, "old", query)
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "old"
        assert message["payload"][0]["extensions"]["limit"] == "historyDays"


# -- revocation ---------------------------------------------------------------------------------


async def test_revoked_in_process_stops_at_once(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    key_id, key = await make_key(running)
    assert (await post(running, "{ status { version } }", bearer(key))).status_code == 200
    async with connect(running) as ws:
        await init(ws, {"authorization": f"Bearer {key}"})
        await subscribe(ws, "s")
        await wait_members(running, 1)
        access = running.services.access
        assert access is not None
        await access.revoke(key_id)
        assert await close_code(ws) == 4403
    assert (await post(running, "{ status { version } }", bearer(key))).status_code == 401
    await wait_members(running, 0)


async def test_revoked_by_the_cli_while_the_server_runs(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    db = tmp_path / "shared.db"
    running = await start_gateway(db_path=db)
    key_id, key = await make_key(running)
    async with connect(running) as idle, connect(running) as busy:
        await init(idle, {"authorization": f"Bearer {key}"})
        await init(busy, {"authorization": f"Bearer {key}"})
        await subscribe(busy, "s")
        await wait_members(running, 1)
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, "-m", "gateway", "keys", "revoke", str(key_id), "--db", str(db)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=REPO,
                env={**os.environ, "GATEWAY_PROVIDERS": str(NO_UPSTREAMS)},
            )
        assert result.returncode == 0, result.stderr.decode()
        revoked_at = trio.current_time()
        # Its next request fails at once, over HTTP and as a new WebSocket operation
        assert (await post(running, "{ status { version } }", bearer(key))).status_code == 401
        await subscribe(idle, "late", "{ __typename }")
        assert await close_code(idle) == 4403
        # and its open subscription ends within the poll interval (2 s) and a margin.
        assert await close_code(busy, timeout=6) == 4403
        assert trio.current_time() - revoked_at < 5
    await wait_members(running, 0)


# -- nothing leaks into logs ------------------------------------------------------------------


def stored_bytes(folder: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob(pattern))


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the gateway (structlog) and of hypercorn (stdlib) into one buffer."""
    buffer = io.StringIO()
    previous = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("json", "debug", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.configure(**previous)
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_no_key_ever_reaches_the_logs(start_gateway: StartGateway, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    keys: list[str] = []
    with captured_logs() as logs:
        running = await start_gateway(db_path=db, tier_free_per_minute=2, log_level="debug")
        viewer_id, viewer = await make_key(running, "viewer", "free")
        admin_id, admin = await make_key(running, "admin", "pro")
        keys += [viewer, admin]
        for key in keys:
            await post(running, "{ status { version } }", bearer(key))
            await post(running, CREATE_POOL, bearer(key))
            await post(running, "{ nope }", {"X-API-Key": key})
            await post(running, "{ status { version } }", bearer(key[:-2] + "zz"))
        for _ in range(3):
            assert (await post(running, "{ __typename }", bearer(viewer))).status_code == 429
        async with connect(running) as ws:
            await init(ws, {"headers": {"Authorization": f"Bearer {admin}"}})
            await subscribe(ws, "s")
            await wait_members(running, 1)
            access = running.services.access
            assert access is not None
            await access.revoke(admin_id)
            assert await close_code(ws) == 4403
        async with connect(running) as ws:
            await send(ws, {"type": "connection_init", "payload": {"authorization": admin}})
            assert await close_code(ws) == 4403
        await access.revoke(viewer_id)
        running.gateway.shutdown.set()
        with trio.fail_after(10):
            await running.gateway.stopped.wait()
    text = logs.getvalue()
    assert "gateway.stopped" in text  # the capture worked
    for key in keys:
        secret = key.split("_", 2)[2]
        assert key not in text and secret not in text and secret[:16] not in text
    # At rest only hashes: neither the database nor its write-ahead log holds a key.
    stored = stored_bytes(tmp_path, "logs.db*")
    for key in keys:
        assert key.encode() not in stored and key.split("_", 2)[2].encode() not in stored
        assert hash_key(key).encode() in stored


def test_settings_defaults_match_the_issue() -> None:
    settings = Settings()
    free = TierLimits.from_settings(settings, "free")
    pro = TierLimits.from_settings(settings, "pro")
    enterprise = TierLimits.from_settings(settings, "enterprise")
    assert free == TierLimits("free", 30, 1_000, 5, 7, 5, connections=10)
    assert pro == TierLimits("pro", 300, 50_000, 100, 90, 50, connections=100)
    assert enterprise == TierLimits("enterprise", None, None, None, None, None, None)
    assert settings.anonymous_access == "read"

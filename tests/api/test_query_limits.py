"""Query limits: the pure checks, the engine that applies them, and every transport.

The pure functions are tested against a small SDL schema whose list fields take `first` and
`limit`; the end-to-end tests run a real gateway and check that a refused request looks the
same over HTTP, graphql-transport-ws and legacy graphql-ws, and that no resolver runs for it.
The per-connection WebSocket limits (operations at once, idle time) are tested both end to end
and on one connection driven through memory channels under `autojump_clock`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import strawberry
import trio
import trio.testing
from graphql import (
    GraphQLError,
    build_schema,
    get_introspection_query,
    get_operation_ast,
    parse,
    validate,
)
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.api.graphql_trio import GraphQLEngine
from gateway.api.query_limits import (
    QueryLimits,
    check_cost,
    check_document,
    check_query,
    check_size,
    count_aliases,
    count_overlap_pairs,
    estimate_cost,
    measure_depth,
    uses_introspection,
)
from gateway.api.shared_subscriptions import SubscriptionHub
from gateway.api.ws import Connection, ShutdownSignal, WebSocketOptions, WebSocketStats
from gateway.config import Settings
from gateway.nursery import RunningGateway
from gateway.schema import build_schema as build_gateway_schema
from tests.conftest import StartGateway, wait_members

SDL = build_schema(
    """
    type Query {
      items(first: Int): [Item!]!
      pages(limit: Int = 5): [Item]
      item: Item
      tags: [String!]!
      node: Node
    }
    interface Node { id: ID! }
    type Item implements Node {
      id: ID!
      name: String
      children(first: Int): [Item!]!
      grid: [[Int]]
    }
    """
)

GATEWAY_SCHEMA = build_gateway_schema()._schema
TICKS = 'subscription { priceTicks(symbols: ["BTC"]) { symbol usd provider } }'


def cost(query: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> int:
    document = parse(query)
    operation = get_operation_ast(document)
    assert operation is not None
    return estimate_cost(SDL, document, operation, variables, **kwargs)


def violations(query: str, **limits: Any) -> dict[str, dict[str, Any]]:
    """The document violations of `query`, by limit name, as their extensions."""
    errors = check_document(parse(query), QueryLimits(**limits))
    return {error.extensions["limit"]: error.extensions for error in errors}  # type: ignore[index]


# -- depth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "depth"),
    [
        ("{ item { id } }", 2),
        ("{ tags }", 1),
        ("{ __typename }", 1),
        ("{ item { children { children { name } } } }", 4),
        ("{ item { ... on Item { children { id } } } }", 3),  # inline fragments add no level
        ("{ item { ...F } } fragment F on Item { children { id } }", 3),  # spreads expand
        ("{ a: item { id } b: item { children { children { id } } } }", 4),  # the deepest wins
        ("query A { tags } query B { item { id } }", 2),  # every operation counts
    ],
)
def test_depth(query: str, depth: int) -> None:
    assert measure_depth(parse(query)) == depth


def test_depth_survives_fragment_cycles_and_unknown_fragments() -> None:
    cyclic = (
        "{ item { ...A } } fragment A on Item { children { ...B } } fragment B on Item { ...A }"
    )
    assert measure_depth(parse(cyclic)) == 2
    assert measure_depth(parse("{ item { ...Missing } }")) == 1


def test_a_thousand_chained_fragments_do_not_exhaust_the_stack() -> None:
    n = 3000
    chain = "{ ...F0 }" + "".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(n))
    chain += f"fragment F{n} on Query {{ item {{ id }} }}"
    document = parse(chain)
    assert measure_depth(document) == 2
    assert estimate_cost(SDL, document, get_operation_ast(document), None) == 2  # type: ignore[arg-type]
    assert count_overlap_pairs(document, give_up_above=1000) > 1000  # gives up, fast
    assert not [e for e in check_document(document, QueryLimits()) if "depth" in e.message]


# -- aliases, introspection -------------------------------------------------------------------


def test_aliases_are_counted_as_written() -> None:
    assert count_aliases(parse("{ a: item { b: id } item { id } }")) == 2
    spread_twice = "{ x: item { ...F } y: item { ...F } } fragment F on Item { n: name }"
    assert count_aliases(parse(spread_twice)) == 3


def test_introspection_is_schema_and_type_never_typename() -> None:
    assert uses_introspection(parse("{ __schema { types { name } } }"))
    assert uses_introspection(parse('{ t: __type(name: "Item") { name } }'))
    assert uses_introspection(parse("{ ...F } fragment F on Query { __schema { __typename } }"))
    assert not uses_introspection(parse("{ __typename item { __typename } }"))


def test_disabled_introspection_is_bad_user_input() -> None:
    found = violations("{ __schema { types { name } } }", allow_introspection=False)
    assert found["introspection"]["code"] == "BAD_USER_INPUT"
    assert violations("{ __typename }", allow_introspection=False) == {}
    assert violations("{ __schema { types { name } } }") == {}  # allowed by default


# -- cost -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables", "expected"),
    [
        ("{ item { id name } }", None, 3),  # objects and scalars: 1 each
        ("{ tags }", None, 1),  # a list of scalars has nothing to multiply
        ("{ items { id } }", None, 1 + 10 * 1),  # no size argument: the default, 10
        ("{ items(first: 3) { id name } }", None, 1 + 3 * 2),
        ("{ pages { id } }", None, 1 + 5 * 1),  # the argument's default in the schema
        ("{ pages(limit: 2) { id } }", None, 1 + 2 * 1),
        ("query($n: Int) { items(first: $n) { id } }", {"n": 7}, 1 + 7),
        ("query($n: Int = 4) { items(first: $n) { id } }", None, 1 + 4),  # variable's default
        ("query($n: Int = 4) { items(first: $n) { id } }", {"n": 6}, 1 + 6),
        ("query($n: Int) { items(first: $n) { id } }", {"n": "x"}, 1 + 10),  # unusable
        ("query($n: Int) { items(first: $n) { id } }", {"n": True}, 1 + 10),
        ("{ items(first: 0) { id } }", None, 1),
        ("{ items(first: -5) { id } }", None, 1),
        # lists nest: 1 + 2 * (1 + 1 + 3 * (1 + 1))
        ("{ items(first: 2) { id children(first: 3) { id name } } }", None, 1 + 2 * (2 + 3 * 2)),
        ("{ item { grid } }", None, 2),  # [[Int]] is one field
        ("{ items(first: 2) { ...F ...F } } fragment F on Item { id name }", None, 1 + 2 * 4),
        ("{ node { id ... on Item { name children(first: 2) { id } } } }", None, 1 + 1 + 1 + 3),
    ],
)
def test_cost_formula(query: str, variables: dict[str, Any] | None, expected: int) -> None:
    assert cost(query, variables) == expected


def test_cost_default_list_size_is_configurable() -> None:
    assert cost("{ items { id } }", default_list_size=100) == 101


def test_an_absurd_size_literal_is_capped_not_parsed_forever() -> None:
    huge = "9" * 5000  # int() of this is refused by Python and slow before that
    assert cost(f"{{ items(first: {huge}) {{ id }} }}") == 1 + 10**12


def test_cost_depends_on_variables() -> None:
    document = parse("query($n: Int) { items(first: $n) { id children(first: $n) { id } } }")
    operation = get_operation_ast(document)
    assert operation is not None
    limits = QueryLimits(max_cost=1000)
    assert check_cost(SDL, document, operation, {"n": 10}, limits) is None  # 1 + 10 * 12
    error = check_cost(SDL, document, operation, {"n": 100}, limits)
    assert error is not None and error.extensions is not None
    assert error.extensions == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "cost",
        "maximum": 1000,
        "actual": 1 + 100 * (1 + 1 + 100 * 1),
    }


def test_check_query_combines_document_and_cost() -> None:
    document = parse("{ a: items(first: 1000) { id } }")
    operation = get_operation_ast(document)
    assert operation is not None
    errors = check_query(SDL, document, operation, None, QueryLimits(max_cost=100, max_aliases=0))
    assert [e.extensions["limit"] for e in errors] == ["aliases"]  # type: ignore[index]
    errors = check_query(SDL, document, operation, None, QueryLimits(max_cost=100))
    assert [e.extensions["limit"] for e in errors] == ["cost"]  # type: ignore[index]


# -- overlapping fields: what validation would compare ---------------------------------------


def test_overlap_pairs_count_same_named_fields_and_spreads() -> None:
    assert count_overlap_pairs(parse("{ item { id name } tags }")) == 0
    assert count_overlap_pairs(parse("{ item { id } item { id } item { id } }")) == 3 + 3
    spreads = "{ ...A ...B ...C } " + " ".join(f"fragment {n} on Query {{ tags }}" for n in "ABC")
    assert count_overlap_pairs(parse(spreads)) == 3 + 3  # 3 spread pairs, 3 `tags` pairs
    assert count_overlap_pairs(parse(get_introspection_query())) == 0


def test_documents_that_make_validation_quadratic_are_refused_before_it() -> None:
    """Each of these validates for a second or more with graphql-core; refused in ms here."""
    flood = "{" + " ".join("status { version }" for _ in range(400)) + "}"
    spreads = (
        "{ "
        + " ".join(f"...F{i}" for i in range(300))
        + " }"
        + "".join(f"fragment F{i} on Query {{ status {{ version }} }}" for i in range(300))
    )
    tree = (
        "{ ...F1 }"
        + "".join(
            f"fragment F{i} on Query {{ status {{ version }} ...F{2 * i} ...F{2 * i + 1} }}"
            for i in range(1, 150)
        )
        + "".join(f"fragment F{i} on Query {{ status {{ version }} }}" for i in range(150, 300))
    )
    for query in (flood, spreads, tree):
        started = time.perf_counter()
        found = violations(query)
        assert time.perf_counter() - started < 0.5
        assert found["overlap"]["code"] == "QUERY_TOO_COMPLEX"


def test_what_passes_the_overlap_limit_validates_quickly() -> None:
    """The worst documents at the default limit (about 1,000 pairs) validate in tens of ms."""
    limits = QueryLimits()
    spreads = (
        "{ "
        + " ".join(f"...F{i}" for i in range(25))
        + " }"
        + "".join(f"fragment F{i} on Query {{ status {{ version }} }}" for i in range(25))
    )
    flood = "{" + " ".join("status { version uptimeSeconds }" for _ in range(25)) + "}"
    for query in (spreads, flood):
        document = parse(query)
        assert not check_document(document, limits)
        started = time.perf_counter()
        assert validate(GATEWAY_SCHEMA, document) == []
        assert time.perf_counter() - started < 0.5  # generous: about 0.02 s on a laptop


# -- size -------------------------------------------------------------------------------------


def test_size_is_utf8_bytes() -> None:
    limits = QueryLimits(max_document_bytes=10)
    assert check_size("{ tags }", limits) is None
    assert check_size("{ ééé }", limits) is None  # 7 characters, 10 bytes
    error = check_size("{ éééé }", limits)  # 8 characters, 12 bytes
    assert error is not None and error.extensions is not None
    assert error.extensions["code"] == "QUERY_TOO_COMPLEX"
    assert error.extensions["actual"] == 12
    assert check_size("x" * 10_000_000, limits) is not None  # quick, whatever the length


# -- the defaults -----------------------------------------------------------------------------


def test_the_defaults_are_the_settings_defaults() -> None:
    assert QueryLimits.from_settings(Settings()) == QueryLimits()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "input_value_deprecation": True,
            "schema_description": True,
            "specified_by_url": True,
            "directive_is_repeatable": True,
        },
    ],
)
def test_the_defaults_admit_graphiql_introspection(options: dict[str, bool]) -> None:
    document = parse(get_introspection_query(**options))
    operation = get_operation_ast(document)
    assert operation is not None
    assert check_query(GATEWAY_SCHEMA, document, operation, None, QueryLimits()) == []


def test_the_defaults_admit_the_largest_query_and_not_two() -> None:
    fields = "symbol interval openTime open high low close volume provider complete"
    one = f'ohlcv(symbol: "BTC", interval: H1, limit: 5000) {{ {fields} }}'
    limits = QueryLimits()
    for query, admitted in ((f"{{ {one} }}", True), (f"{{ a: {one} b: {one} }}", False)):
        document = parse(query)
        operation = get_operation_ast(document)
        assert operation is not None
        errors = check_query(GATEWAY_SCHEMA, document, operation, None, limits)
        assert (errors == []) is admitted, errors


def test_recursive_introspection_is_refused_by_default() -> None:
    inner = "name"
    for _ in range(4):
        inner = f"name fields {{ type {{ ofType {{ {inner} }} }} }}"
    document = parse("{ __schema { types { " + inner + " } } }")
    operation = get_operation_ast(document)
    assert operation is not None
    errors = check_query(GATEWAY_SCHEMA, document, operation, None, QueryLimits())
    assert {e.extensions["limit"] for e in errors} & {"cost", "depth"}  # type: ignore[index]


# -- the engine -------------------------------------------------------------------------------


def engine(**limits: Any) -> GraphQLEngine:
    return GraphQLEngine(GATEWAY_SCHEMA, limits=QueryLimits(**limits))


def codes(result: Any) -> list[tuple[str, str]]:
    return [(e.extensions["code"], e.extensions.get("limit")) for e in result.errors]


def test_engine_refuses_before_validation_and_caches_the_verdict() -> None:
    gate = engine(max_depth=2)
    deep = "{ status { providers { total } } }"
    first = gate.prepare(deep)
    assert codes(first) == [("QUERY_TOO_COMPLEX", "depth")]
    assert gate.prepare(deep) is not first  # a fresh result …
    assert gate._documents[deep].outcome == first.errors  # type: ignore[union-attr]  # … same verdict
    assert gate.prepare("{ status { version } }").__class__.__name__ == "PreparedOperation"


def test_engine_checks_cost_per_request_with_variables() -> None:
    gate = engine(max_cost=300)
    query = 'query($n: Int!) { ohlcv(symbol: "BTC", interval: H1, limit: $n) { open close } }'
    assert gate.prepare(query, None, {"n": 100}).__class__.__name__ == "PreparedOperation"
    assert codes(gate.prepare(query, None, {"n": 1000})) == [("QUERY_TOO_COMPLEX", "cost")]
    assert gate.prepare(query, None, {"n": 10}).__class__.__name__ == "PreparedOperation"


def test_engine_size_limit_comes_before_parsing() -> None:
    gate = engine(max_document_bytes=100)
    result = gate.prepare("{" * 1000)  # would be a syntax error if parsed
    assert codes(result) == [("QUERY_TOO_COMPLEX", "size")]
    assert not gate._documents  # nothing parsed, nothing cached


def test_set_limits_forgets_verdicts_made_under_the_old_ones() -> None:
    gate = engine(max_depth=1)
    assert codes(gate.prepare("{ status { version } }")) == [("QUERY_TOO_COMPLEX", "depth")]
    gate.set_limits(QueryLimits(max_depth=2))
    assert gate.prepare("{ status { version } }").__class__.__name__ == "PreparedOperation"


# -- end to end: HTTP -------------------------------------------------------------------------

PRICES = '{ prices(symbols: ["BTC"]) { usd } }'


async def post(running: RunningGateway, body: Any, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
        return await client.post("/graphql", json=body, headers=headers)


def refused(body: dict[str, Any], code: str, limit: str) -> None:
    assert "data" not in body, body  # refused before execution: a request error
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code and error["extensions"]["limit"] == limit, error
    assert isinstance(error["message"], str)


def count_resolver_calls(running: RunningGateway) -> list[list[str]]:
    """Replace the storage read behind `prices`; returns the list its calls are recorded in."""
    calls: list[list[str]] = []
    storage = running.services.storage
    original = storage.latest_ticks

    async def recording(symbols: list[str]) -> Any:
        calls.append(symbols)
        return await original(symbols)

    storage.latest_ticks = recording  # type: ignore[method-assign]
    return calls


LIMITED = {
    "query_max_depth": 2,
    "query_max_aliases": 2,
    "query_max_cost": 50,
    "query_max_document_bytes": 2000,
}
OVER_LIMIT = [
    ("{ status { providers { total } } }", None),
    (
        '{ a: prices(symbols: ["BTC"]) { usd } b: prices(symbols: ["BTC"]) { usd } c: status '
        "{ version } }",
        None,
    ),
    (
        'query($n: Int!) { ohlcv(symbol: "BTC", interval: H1, limit: $n) { open close } }',
        {"n": 100},
    ),
    (PRICES + " " * 2000, None),
]
EXPECTED = ["depth", "aliases", "cost", "size"]


async def test_http_refuses_over_limit_queries_before_any_resolver(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(**LIMITED)
    calls = count_resolver_calls(running)
    for (query, variables), limit in zip(OVER_LIMIT, EXPECTED, strict=True):
        response = await post(running, {"query": query, "variables": variables})
        assert response.status_code == 200
        refused(response.json(), "QUERY_TOO_COMPLEX", limit)
        strict = await post(
            running,
            {"query": query, "variables": variables},
            accept="application/graphql-response+json",
        )
        assert strict.status_code == 400  # a request error under the newer media type
        refused(strict.json(), "QUERY_TOO_COMPLEX", limit)
    assert calls == []
    within = await post(running, {"query": PRICES})
    assert within.json()["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert calls == [["BTC"]]  # the same resolver does run for a query within the limits


async def test_http_get_refuses_the_same_way(start_gateway: StartGateway) -> None:
    running = await start_gateway(query_max_depth=1)
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
        response = await client.get("/graphql", params={"query": "{ status { version } }"})
    refused(response.json(), "QUERY_TOO_COMPLEX", "depth")


async def test_introspection_can_be_disabled(start_gateway: StartGateway) -> None:
    running = await start_gateway(allow_introspection=False)
    body = (await post(running, {"query": "{ __schema { queryType { name } } }"})).json()
    refused(body, "BAD_USER_INPUT", "introspection")
    body = (await post(running, {"query": '{ __type(name: "Price") { name } }'})).json()
    refused(body, "BAD_USER_INPUT", "introspection")
    body = (await post(running, {"query": "{ __typename status { __typename } }"})).json()
    assert body == {"data": {"__typename": "Query", "status": {"__typename": "SystemStatus"}}}


async def test_introspection_is_on_by_default(gateway: RunningGateway) -> None:
    query = get_introspection_query(descriptions=True)
    body = (await post(gateway, {"query": query})).json()
    assert "errors" not in body
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


# -- end to end: both WebSocket protocols -----------------------------------------------------


@asynccontextmanager
async def connect(
    running: RunningGateway, protocol: str = "graphql-transport-ws"
) -> AsyncIterator[WebSocketConnection]:
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(
        url, subprotocols=[protocol], connect_timeout=5, disconnect_timeout=2
    ) as ws:
        yield ws


async def send(ws: WebSocketConnection, message: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(message))


async def receive(ws: WebSocketConnection, within: float = 3) -> dict[str, Any]:
    with trio.fail_after(within):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def close_code(ws: WebSocketConnection, within: float = 3) -> int:
    with trio.fail_after(within):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code
    raise AssertionError("unreachable")


async def init(ws: WebSocketConnection) -> None:
    await send(ws, {"type": "connection_init"})
    assert await receive(ws) == {"type": "connection_ack"}


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_websocket_refuses_over_limit_operations_and_stays_open(
    start_gateway: StartGateway, protocol: str
) -> None:
    running = await start_gateway(**LIMITED)
    calls = count_resolver_calls(running)
    legacy = protocol == "graphql-ws"
    subscribe = "start" if legacy else "subscribe"
    async with connect(running, protocol) as ws:
        await send(ws, {"type": "connection_init"})
        assert await receive(ws) == {"type": "connection_ack"}
        if legacy:
            assert await receive(ws) == {"type": "ka"}
        for index, ((query, variables), limit) in enumerate(zip(OVER_LIMIT, EXPECTED, strict=True)):
            payload = {"query": query, "variables": variables}
            await send(ws, {"type": subscribe, "id": f"op{index}", "payload": payload})
            message = await receive(ws)
            assert message["type"] == "error" and message["id"] == f"op{index}"
            error = message["payload"] if legacy else message["payload"][0]
            assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
            assert error["extensions"]["limit"] == limit
        deep_subscription = 'subscription { priceTicks(symbols: ["BTC"]) { symbol } } ' + (
            "query Q { status { providers { total } } }"
        )
        payload = {"query": deep_subscription, "operationName": "Q"}
        await send(ws, {"type": subscribe, "id": "deep", "payload": payload})
        message = await receive(ws)
        assert message["type"] == "error"  # the depth limit counts the whole document
        await send(
            ws, {"type": subscribe, "id": "ok", "payload": {"query": "{ status { version } }"}}
        )
        message = await receive(ws)
        assert message["type"] == ("data" if legacy else "next") and message["id"] == "ok"
    assert calls == []


async def test_a_subscription_over_the_cost_limit_never_joins_a_group(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(query_max_cost=5, query_default_list_size=10)
    hub = running.services.hub
    assert hub is not None
    async with connect(running) as ws:
        await init(ws)
        query = 'subscription { priceTicks(symbols: ["BTC"]) { symbol usd provider sources '
        query += "observedAt ageSeconds } }"
        await send(ws, {"type": "subscribe", "id": "s", "payload": {"query": query}})
        message = await receive(ws)
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["limit"] == "cost"
        assert hub.group_count == 0


# -- WebSocket: operations at once ------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_operations_per_connection_are_limited(
    start_gateway: StartGateway, protocol: str
) -> None:
    running = await start_gateway(ws_max_operations=2)
    legacy = protocol == "graphql-ws"
    start, stop = ("start", "stop") if legacy else ("subscribe", "complete")
    async with connect(running, protocol) as ws:
        await send(ws, {"type": "connection_init"})
        assert await receive(ws) == {"type": "connection_ack"}
        if legacy:
            assert await receive(ws) == {"type": "ka"}
        for op in ("a", "b"):
            await send(ws, {"type": start, "id": op, "payload": {"query": TICKS}})
        await wait_members(running, 2)
        await send(ws, {"type": start, "id": "c", "payload": {"query": TICKS}})
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "c"
        error = message["payload"] if legacy else message["payload"][0]
        assert error["extensions"] == {"code": "RATE_LIMITED", "limit": "operations", "maximum": 2}
        await send(ws, {"type": stop, "id": "a"})
        await wait_members(running, 1)
        await send(ws, {"type": start, "id": "c", "payload": {"query": TICKS}})
        await wait_members(running, 2)  # room again: the connection survived the refusal


# -- WebSocket: idle connections --------------------------------------------------------------


async def test_an_idle_connection_is_closed_4408(start_gateway: StartGateway) -> None:
    running = await start_gateway(ws_idle_timeout=0.3)
    async with connect(running) as ws:
        await init(ws)
        assert await close_code(ws, within=3) == 4408


async def test_a_connection_with_a_subscription_is_not_idle(start_gateway: StartGateway) -> None:
    running = await start_gateway(ws_idle_timeout=0.3)
    async with connect(running) as ws:
        await init(ws)
        await send(ws, {"type": "subscribe", "id": "s", "payload": {"query": TICKS}})
        await wait_members(running, 1)
        await trio.sleep(0.8)
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}
        await send(ws, {"type": "complete", "id": "s"})
        assert await close_code(ws, within=3) == 4408  # idle again once it is done


@strawberry.type
class _Query:
    ok: bool = True


@strawberry.type
class _Subscription:
    @strawberry.subscription
    async def forever(self) -> AsyncGenerator[int, None]:
        await trio.sleep_forever()
        yield 0  # pragma: no cover


class _Harness:
    """One `Connection` over memory channels: what it sends, when (under autojump_clock)."""

    def __init__(self, nursery: trio.Nursery, **options: Any) -> None:
        engine = GraphQLEngine(strawberry.Schema(query=_Query, subscription=_Subscription)._schema)
        self.hub = SubscriptionHub(engine, None)
        self.inbound, receive_channel = trio.open_memory_channel[dict[str, Any]](16)
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.closed = trio.Event()
        self.connection = Connection(
            legacy=False,
            receive=receive_channel.receive,
            send=self._record,
            engine=engine,
            hub=self.hub,
            context=None,
            options=WebSocketOptions(ping_interval=1000, **options),
            stats=WebSocketStats(),
            shutdown=ShutdownSignal(),
        )
        self.nursery = nursery

    async def _record(self, message: dict[str, Any]) -> None:
        self.sent.append((trio.current_time(), message))
        if message["type"] == "websocket.close":
            self.closed.set()

    async def start(self) -> None:
        await self.nursery.start(self.hub.run)
        self.nursery.start_soon(self.connection.run)

    async def client(self, message: dict[str, Any]) -> None:
        await self.inbound.send({"type": "websocket.receive", "text": json.dumps(message)})

    def close_at(self) -> tuple[float, int]:
        ((at, close),) = [(t, m) for t, m in self.sent if m["type"] == "websocket.close"]
        return at, close["code"]


async def test_idle_timer_is_not_reset_by_pings_or_any_other_message(autojump_clock: Any) -> None:
    # Issue 10: a client pinging every few seconds held its socket forever. Only operations
    # are use: without one, the socket closes `idle_timeout` after the handshake.
    async with trio.open_nursery() as nursery:
        harness = _Harness(nursery, idle_timeout=60, init_timeout=10)
        began = trio.current_time()
        await harness.start()
        await harness.client({"type": "connection_init"})
        for _ in range(20):  # bounded: the close comes after six of these
            await trio.sleep(10)
            if harness.closed.is_set():
                break
            await harness.client({"type": "ping"})
            await harness.client({"type": "pong"})
        await harness.closed.wait()
        nursery.cancel_scope.cancel()
    at, code = harness.close_at()
    assert code == 4408
    assert at - began == pytest.approx(60, abs=0.5)


async def test_idle_timer_waits_for_running_operations(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        harness = _Harness(nursery, idle_timeout=60)
        await harness.start()
        await harness.client({"type": "connection_init"})
        await harness.client(
            {"type": "subscribe", "id": "s", "payload": {"query": "subscription { forever }"}}
        )
        await trio.sleep(500)  # a quiet subscription keeps the connection
        assert not harness.closed.is_set()
        await harness.client({"type": "complete", "id": "s"})
        await trio.testing.wait_all_tasks_blocked()
        done = trio.current_time()
        await harness.closed.wait()
        nursery.cancel_scope.cancel()
    at, code = harness.close_at()
    assert code == 4408
    assert at - done == pytest.approx(60, abs=0.5)


def test_graphql_errors_from_limits_are_graphql_errors() -> None:
    errors = check_document(parse("{ a: tags b: tags }"), QueryLimits(max_aliases=1))
    assert all(isinstance(error, GraphQLError) for error in errors)
    assert errors[0].formatted["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "aliases",
        "maximum": 1,
        "actual": 2,
    }

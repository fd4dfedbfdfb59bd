"""The graphql-core-under-Trio adapter: a matrix of execution shapes that must all work.

Each shape is run with the adapter installed (must pass) and, for the shapes that make
graphql-core gather several awaitables, with the adapter removed (must fail the way
DEVELOPERS.md describes) — so the suite proves the adapter is what makes them work.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import strawberry
import trio
import trio.lowlevel
from graphql import ExecutionResult

from gateway.api import graphql_trio
from gateway.api.graphql_trio import GraphQLEngine, PreparedOperation, result_to_dict
from gateway.errors import BadUserInput

events: list[str] = []


@strawberry.type
class Item:
    n: int

    @strawberry.field
    async def doubled(self) -> int:
        await trio.sleep(0.01 * (5 - self.n))  # finish out of order
        return self.n * 2

    @strawberry.field
    async def must(self) -> int:
        await trio.lowlevel.checkpoint()
        if self.n == 2:
            raise ValueError("item 2 is broken")
        return self.n


@strawberry.type
class Inner:
    @strawberry.field
    async def fine(self) -> str:
        await trio.lowlevel.checkpoint()
        return "fine"

    @strawberry.field
    async def required(self) -> str:
        await trio.lowlevel.checkpoint()
        raise BadUserInput("required field failed")


@strawberry.type
class Query:
    @strawberry.field
    async def a(self) -> int:
        await trio.sleep(1)
        return 1

    @strawberry.field
    async def b(self) -> int:
        await trio.sleep(1)
        return 2

    @strawberry.field
    async def items(self) -> list[Item]:
        await trio.lowlevel.checkpoint()
        return [Item(n=n) for n in range(5)]

    @strawberry.field
    async def optional(self) -> str | None:
        await trio.lowlevel.checkpoint()
        raise BadUserInput("optional field failed")

    @strawberry.field
    async def inner(self) -> Inner | None:
        return Inner()

    @strawberry.field
    async def slow(self) -> str:
        events.append("slow:start")
        try:
            await trio.sleep(60)
        finally:
            events.append("slow:finally")
        return "never"

    @strawberry.field
    async def boom(self) -> str | None:
        raise RuntimeError("secret internal detail")


@pytest.fixture
def engine() -> GraphQLEngine:
    return GraphQLEngine(strawberry.Schema(query=Query)._schema)


@pytest.fixture
def without_adapter() -> Iterator[None]:
    graphql_trio.uninstall()
    try:
        yield
    finally:
        graphql_trio.install()


async def run(engine: GraphQLEngine, query: str) -> dict[str, object]:
    prepared = engine.prepare(query)
    assert isinstance(prepared, PreparedOperation), prepared
    result = await engine.execute(prepared, variables=None, context=None)
    return result_to_dict(result)


# shape -> (query, expected data, expected [(error path, message)])
CONCURRENT_SHAPES: dict[str, tuple[str, object, list[tuple[list[object], str]]]] = {
    "sibling async fields": ("{ a b }", {"a": 1, "b": 2}, []),
    "list of objects with async fields": (
        "{ items { n doubled } }",
        {"items": [{"n": n, "doubled": 2 * n} for n in range(5)]},
        [],
    ),
    "non-null error inside a list": (
        "{ items { must } }",
        None,
        [(["items", 2, "must"], "internal error")],
    ),
    "non-null error in nullable parent": (
        "{ inner { fine required } }",
        {"inner": None},
        [(["inner", "required"], "required field failed")],
    ),
}


def summary(response: dict[str, object]) -> tuple[object, list[tuple[object, object]]]:
    errors = response.get("errors") or []
    return response.get("data"), [(e["path"], e["message"]) for e in errors]  # type: ignore[union-attr, index]


async def test_sibling_resolvers_run_concurrently(
    engine: GraphQLEngine, autojump_clock: object
) -> None:
    start = trio.current_time()
    assert await run(engine, "{ a b }") == {"data": {"a": 1, "b": 2}}
    assert trio.current_time() - start == pytest.approx(1.0)  # not 2: they overlapped


async def test_list_items_resolve_in_order(engine: GraphQLEngine) -> None:
    with trio.fail_after(5):
        response = await run(engine, "{ items { n doubled } }")
    assert response == {"data": {"items": [{"n": n, "doubled": 2 * n} for n in range(5)]}}


async def test_non_null_error_in_list_nulls_the_list_with_path(engine: GraphQLEngine) -> None:
    with trio.fail_after(5):
        response = await run(engine, "{ items { must } }")
    # Item.must is Int!: the error nulls item 2, and items is [Item!]!, so it bubbles to data.
    assert response["data"] is None
    (error,) = response["errors"]  # type: ignore[misc]
    assert error["path"] == ["items", 2, "must"]
    assert error["message"] == "internal error"
    assert error["extensions"]["code"] == "INTERNAL"


async def test_nullable_field_error_keeps_siblings(engine: GraphQLEngine) -> None:
    with trio.fail_after(5):
        response = await run(engine, "{ optional items { n } }")
    assert response["data"] == {"optional": None, "items": [{"n": n} for n in range(5)]}
    (error,) = response["errors"]  # type: ignore[misc]
    assert error["path"] == ["optional"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "optional field failed"


async def test_non_null_error_propagates_to_nullable_parent(engine: GraphQLEngine) -> None:
    with trio.fail_after(5):
        response = await run(engine, "{ inner { fine required } }")
    assert response["data"] == {"inner": None}
    (error,) = response["errors"]  # type: ignore[misc]
    assert error["path"] == ["inner", "required"]


async def test_internal_errors_do_not_leak_details(engine: GraphQLEngine) -> None:
    response = await run(engine, "{ boom }")
    assert response["data"] == {"boom": None}
    (error,) = response["errors"]  # type: ignore[misc]
    assert "secret" not in error["message"]
    assert error["extensions"]["code"] == "INTERNAL"


async def test_cancellation_reaches_running_resolvers(
    engine: GraphQLEngine, autojump_clock: object
) -> None:
    events.clear()
    prepared = engine.prepare("{ a slow }")
    assert isinstance(prepared, PreparedOperation)
    with trio.move_on_after(2) as scope:
        await engine.execute(prepared, variables=None, context=None)
    assert scope.cancelled_caught
    assert events == ["slow:start", "slow:finally"]


async def test_request_errors_have_codes_and_no_data(engine: GraphQLEngine) -> None:
    prepared = engine.prepare("{ nope }")
    assert isinstance(prepared, ExecutionResult)
    response = result_to_dict(prepared)
    assert "data" not in response
    assert response["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"  # type: ignore[index]
    syntax = engine.prepare("{")
    assert isinstance(syntax, ExecutionResult)
    assert result_to_dict(syntax)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"  # type: ignore[index]


def test_documents_are_cached(engine: GraphQLEngine) -> None:
    first = engine.prepare("{ a }")
    second = engine.prepare("{ a }")
    assert isinstance(first, PreparedOperation) and isinstance(second, PreparedOperation)
    assert first.document is second.document


def test_the_document_cache_counts_hits_and_misses_and_drops_the_least_recently_used() -> None:
    engine = GraphQLEngine(strawberry.Schema(query=Query)._schema, cache_size=3)
    stats = engine.operations
    assert stats.document_cache_size == 3
    for query in ("{ a }", "{ b }", "{ a }", "{ items { n } }", "{ slow }", "{ a }", "{ b }"):
        engine.prepare(query)
    # a, b, a (hit), items, slow (b out: least recently used), a (hit), b (miss again)
    assert stats.document_lookups == {"hit": 2, "miss": 5}
    assert stats.documents_cached == 3
    invalid = engine.prepare("{ nope }")
    again = engine.prepare("{ nope }")  # a refusal is cached too, and refused the same way
    assert isinstance(invalid, ExecutionResult) and isinstance(again, ExecutionResult)
    assert result_to_dict(invalid) == result_to_dict(again)
    assert stats.document_lookups == {"hit": 3, "miss": 6}


def test_documents_validated_against_another_schema_are_not_reused() -> None:
    @strawberry.type
    class Other:
        @strawberry.field
        def b(self) -> int:
            return 2

    engine = GraphQLEngine(strawberry.Schema(query=Query)._schema)
    assert isinstance(engine.prepare("{ a }"), PreparedOperation)
    engine.schema = strawberry.Schema(query=Other)._schema
    refused = engine.prepare("{ a }")
    assert isinstance(refused, ExecutionResult) and refused.errors
    assert engine.operations.document_lookups["miss"] == 2


async def test_begin_answers_at_once_when_nothing_awaits_and_counts_both_ways() -> None:
    @strawberry.type
    class Mixed:
        @strawberry.field
        def now(self) -> int:
            return 1

        @strawberry.field
        async def later(self) -> int:
            await trio.lowlevel.checkpoint()
            return 2

    engine = GraphQLEngine(strawberry.Schema(query=Mixed)._schema)
    at_once = engine.prepare("{ now __typename }")
    awaited = engine.prepare("{ now later }")
    assert isinstance(at_once, PreparedOperation) and isinstance(awaited, PreparedOperation)
    result = engine.begin(at_once, variables=None, context=None)
    assert isinstance(result, ExecutionResult)
    assert result.data == {"now": 1, "__typename": "Mixed"}
    pending = engine.begin(awaited, variables=None, context=None)
    assert not isinstance(pending, ExecutionResult)
    with trio.fail_after(5):
        finished = await pending
    assert finished.data == {"now": 1, "later": 2}
    assert sum(engine.operations.counts.values()) == 2


@pytest.mark.parametrize("shape", list(CONCURRENT_SHAPES))
async def test_shapes_work_with_the_adapter(engine: GraphQLEngine, shape: str) -> None:
    query, data, errors = CONCURRENT_SHAPES[shape]
    assert graphql_trio.installed()
    with trio.fail_after(5):
        response = await run(engine, query)
    assert summary(response) == (data, errors)


@pytest.mark.parametrize("shape", list(CONCURRENT_SHAPES))
async def test_shapes_break_without_the_adapter(
    engine: GraphQLEngine, without_adapter: None, shape: str
) -> None:
    """The reason the adapter exists: graphql-core's own gathering is asyncio-only, so each
    shape either crashes or comes back wrong (errors at the wrong path, data lost)."""
    query, data, errors = CONCURRENT_SHAPES[shape]
    assert not graphql_trio.installed()
    try:
        with trio.fail_after(5):
            response = await run(engine, query)
    except BaseException as exc:
        assert "unrecognized yield message" in repr(exc) or isinstance(exc, BaseExceptionGroup)
    else:
        assert summary(response) != (data, errors)

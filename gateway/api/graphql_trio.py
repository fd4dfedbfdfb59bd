"""What it takes to run graphql-core 3.3 under Trio, and nothing else.

graphql-core executes sibling async resolvers (several fields of one object, the items of a
list) through `graphql.execution.executor.gather_with_cancel`, which is built on
`asyncio.ensure_future` and `asyncio.gather`. Under Trio there is no asyncio loop, so the first
query with two async resolvers at one level dies with "trio.run received unrecognized yield
message". Everything else graphql-core does is plain coroutine code and runs under any loop.

The fix is one function: `_trio_gather_with_cancel` runs the awaitables as children of a Trio
nursery, with the same contract as the original (results in order; the first failure cancels
the siblings and propagates *unwrapped*, so graphql-core's null propagation and error paths work
unchanged). `install()` puts it in place of the module-level name that graphql-core looks up at
call time; under asyncio it defers to the original, so nothing else in the process changes.

The rest of the module is the execution front door used by HTTP and WebSocket handlers: a cache
of parsed and validated documents (parsing and validation are the expensive, repeatable part;
least recently used first out past `cache_size`, keyed by the query text, for one schema and
one set of limits; hits and misses in /metrics as `gateway_graphql_document_cache_total`),
the query limits of `gateway.api.query_limits` (so every transport enforces the same ones
before any resolver runs; the cost, which depends on the variables, is checked per request,
cache hit or not), `execute` and `subscribe` with errors formatted the same way everywhere.

Must never: start work outside the caller's nursery, or swallow trio.Cancelled.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sniffio
import structlog
import trio
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
    validate,
)
from graphql.execution import execute, subscribe
from graphql.execution import executor as _executor_module
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.api.operation_stats import OperationStats, outcome_code
from gateway.api.query_limits import QueryLimits, check_cost, check_document, check_size
from gateway.errors import GatewayError

__all__ = [
    "GraphQLEngine",
    "PreparedOperation",
    "bad_request",
    "dumps",
    "format_error",
    "install",
    "installed",
    "loads",
    "result_to_dict",
    "uninstall",
]

log = structlog.get_logger(__name__)

# graphql-core does not re-export the name, so it is reached through the module's namespace.
_GATHER = "gather_with_cancel"
_ORIGINAL_GATHER: Callable[..., Awaitable[list[Any]]] = vars(_executor_module)[_GATHER]


async def _trio_gather_with_cancel(*awaitables: Awaitable[Any]) -> list[Any]:
    """graphql-core's `gather_with_cancel`, with Trio tasks instead of asyncio futures."""
    if sniffio.current_async_library() != "trio":
        return await _ORIGINAL_GATHER(*awaitables)
    results: list[Any] = [None] * len(awaitables)

    async def run_one(index: int, awaitable: Awaitable[Any]) -> None:
        results[index] = await awaitable

    try:
        async with trio.open_nursery() as nursery:
            for index, awaitable in enumerate(awaitables):
                nursery.start_soon(run_one, index, awaitable)
    except BaseExceptionGroup as group:
        # graphql-core expects the failing field's own exception, not a group: it decides null
        # propagation by the exception type. Siblings were cancelled by the nursery; if several
        # failed at the same instant, the first is reported, as asyncio.gather would.
        first = _first_leaf(group)
        raise first from None
    return results


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first: BaseException = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def install() -> None:
    """Make graphql-core's concurrent resolver gathering Trio-native (idempotent)."""
    vars(_executor_module)[_GATHER] = _trio_gather_with_cancel


def uninstall() -> None:
    """Restore graphql-core's asyncio gathering (used by the tests that prove the need)."""
    vars(_executor_module)[_GATHER] = _ORIGINAL_GATHER


def installed() -> bool:
    return vars(_executor_module)[_GATHER] is _trio_gather_with_cancel


install()


class _TrioExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor (so resolvers get strawberry's Info), with no asyncio fallbacks.

    `settle_in_background` is called when a synchronous error bubbles past siblings that were
    already created as coroutines; graphql-core would hand them to asyncio. Under Trio they have
    not started (coroutines are lazy), so closing them is the complete and correct settlement.
    """

    def settle_in_background(self, awaitables: list[Awaitable[Any]]) -> None:
        if sniffio.current_async_library() != "trio":
            super().settle_in_background(awaitables)
            return
        for awaitable in awaitables:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()


# ---------------------------------------------------------------------------------------------
# error formatting


def format_error(error: GraphQLError) -> dict[str, Any]:
    """The JSON form of one error, with `extensions.code` always present.

    A GatewayError raised by a resolver keeps its message and code; any other exception from a
    resolver is an INTERNAL error whose message does not leak internals (it is logged instead).
    The message and each text extension are cut to MAX_ERROR_TEXT characters: they may quote
    what the client sent (graphql-core's "Value '…' does not exist in 'Interval' enum" quotes a
    900 KB value whole), and an error is no way to send it back.
    """
    formatted: dict[str, Any] = dict(error.formatted)
    original = error.original_error
    extensions = dict(formatted.get("extensions") or {})
    if isinstance(original, GatewayError):
        extensions.update({k: v for k, v in original.extensions().items() if v is not None})
        extensions["code"] = original.code
    elif original is not None and not isinstance(original, GraphQLError):
        log.error(
            "resolver_failed",
            path=formatted.get("path"),
            error=repr(original),
            exc_info=original,
        )
        formatted["message"] = "internal error"
        extensions["code"] = "INTERNAL"
    else:
        extensions.setdefault("code", "BAD_USER_INPUT" if error.path is None else "INTERNAL")
    formatted["message"] = _cut(formatted.get("message"))
    formatted["extensions"] = {key: _cut(value) for key, value in extensions.items()}
    return formatted


MAX_ERROR_TEXT = 500


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_ERROR_TEXT:
        return f"{value[:MAX_ERROR_TEXT]}… ({len(value)} characters)"
    return value


def result_to_dict(result: ExecutionResult) -> dict[str, Any]:
    """The GraphQL response map: data only when execution started, errors only when present."""
    response: dict[str, Any] = {}
    if result.errors:
        response["errors"] = [format_error(error) for error in result.errors]
    if result.data is not None or not result.errors or _execution_started(result):
        response["data"] = result.data
    return response


def _execution_started(result: ExecutionResult) -> bool:
    # A request error (parse, validation, variables) has errors without paths and no data key;
    # a field error during execution has a path, and then "data" must be present (maybe null).
    return any(error.path is not None for error in result.errors or ())


def bad_request(message: str, code: str = "BAD_USER_INPUT") -> ExecutionResult:
    """An ExecutionResult for a request that never reached execution."""
    return ExecutionResult(None, [GraphQLError(message, extensions={"code": code})])


# ---------------------------------------------------------------------------------------------
# the front door


@dataclass(frozen=True, slots=True)
class PreparedOperation:
    """A parsed, validated document and the operation in it that a request selected."""

    document: DocumentNode
    operation: OperationDefinitionNode

    @property
    def kind(self) -> OperationType:
        return self.operation.operation


@dataclass(slots=True)
class _Document:
    """A cache entry: the parsed document, or why it was refused; and cost verdicts."""

    outcome: DocumentNode | list[GraphQLError]
    # Cost verdicts of operations that declare no variables (theirs cannot change per request).
    costs: dict[str | None, GraphQLError | None] = field(default_factory=dict)


class GraphQLEngine:
    """Parses, validates (cached), executes and subscribes against one schema under Trio.

    `prepare` is where every request is admitted or refused: the size limit on the text, then
    (cached with the document) parsing, the depth, alias, overlap and introspection limits, and
    validation, then the cost limit with the request's variables. A request refused there never
    reaches a resolver.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        cache_size: int = 512,
        limits: QueryLimits | None = None,
    ) -> None:
        self.schema = schema
        self._cache_size = max(1, cache_size)
        self._limits = limits or QueryLimits()
        # Keyed by the query text; every entry was validated against `_cached_for` (cleared
        # when `schema` is another object) under `_limits` (cleared by `set_limits`).
        self._documents: OrderedDict[str, _Document] = OrderedDict()
        self._cached_for = schema
        self.operations = OperationStats()  # for /metrics
        self.operations.document_cache_size = self._cache_size

    @property
    def limits(self) -> QueryLimits:
        return self._limits

    def set_limits(self, limits: QueryLimits) -> None:
        """Apply new limits; cached verdicts were made under the old ones and are forgotten."""
        self._limits = limits
        self._documents.clear()
        self.operations.documents_cached = 0

    def _document(self, query: str) -> _Document:
        if self.schema is not self._cached_for:  # verdicts of another schema: not reusable
            self._documents.clear()
            self._cached_for = self.schema
        lookups = self.operations.document_lookups
        cached = self._documents.get(query)
        if cached is not None:
            lookups["hit"] += 1
            self._documents.move_to_end(query)
            return cached
        lookups["miss"] += 1
        try:
            document = parse(query)
        except GraphQLError as error:
            outcome: DocumentNode | list[GraphQLError] = [error]
        else:
            # The limits go first: they are linear in the document, and they bound what
            # validation (quadratic in places) is asked to do.
            errors = check_document(document, self._limits) or validate(self.schema, document)
            outcome = errors if errors else document
        entry = _Document(outcome)
        self._documents[query] = entry
        if len(self._documents) > self._cache_size:
            self._documents.popitem(last=False)  # the least recently used
        self.operations.documents_cached = len(self._documents)
        return entry

    def prepare(
        self, query: Any, operation_name: Any = None, variables: Any = None
    ) -> PreparedOperation | ExecutionResult:
        """Parse, validate and check the limits; an ExecutionResult with errors means "reject"
        (counted in `operations` as kind "refused")."""
        prepared = self._prepare(query, operation_name, variables)
        if isinstance(prepared, ExecutionResult):
            name = operation_name if isinstance(operation_name, str) else None
            self.operations.record("refused", name, outcome_code(prepared.errors), 0.0)
        return prepared

    def _prepare(
        self, query: Any, operation_name: Any, variables: Any
    ) -> PreparedOperation | ExecutionResult:
        """See `prepare`.

        `variables` (the request's, when they are an object) only feed the cost estimate; they
        are coerced and checked against the operation by `execute`/`subscribe` as usual.
        """
        if not isinstance(query, str) or not query.strip():
            return bad_request("a GraphQL request must include a non-empty string 'query'")
        if operation_name is not None and not isinstance(operation_name, str):
            return bad_request("'operationName' must be a string")
        too_big = check_size(query, self._limits)
        if too_big is not None:
            return ExecutionResult(None, [too_big])
        entry = self._document(query)
        outcome = entry.outcome
        if isinstance(outcome, list):
            return ExecutionResult(None, outcome)
        operation = get_operation_ast(outcome, operation_name)
        if operation is None:
            if operation_name:
                return bad_request(f"unknown operation named {operation_name!r}")
            return bad_request("the document has several operations: give 'operationName'")
        too_costly = self._cost(entry, outcome, operation, variables)
        if too_costly is not None:
            return ExecutionResult(None, [too_costly])
        return PreparedOperation(outcome, operation)

    def _cost(
        self,
        entry: _Document,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Any,
    ) -> GraphQLError | None:
        static = not operation.variable_definitions
        name = _name(operation)
        if static and name in entry.costs:
            return entry.costs[name]
        values = variables if isinstance(variables, Mapping) and not static else None
        verdict = check_cost(self.schema, document, operation, values, self._limits)
        if static:
            entry.costs[name] = verdict
        return verdict

    async def execute(
        self,
        prepared: PreparedOperation,
        *,
        variables: Mapping[str, Any] | None,
        context: Any,
        root_value: Any = None,
    ) -> ExecutionResult:
        """Run a query or mutation; all of its resolvers run under the caller's cancel scope.
        Counted in `operations` (by name and outcome code, with its duration)."""
        started = self.begin(prepared, variables=variables, context=context, root_value=root_value)
        if isinstance(started, ExecutionResult):
            return started
        return await started

    def begin(
        self,
        prepared: PreparedOperation,
        *,
        variables: Mapping[str, Any] | None,
        context: Any,
        root_value: Any = None,
    ) -> ExecutionResult | Awaitable[ExecutionResult]:
        """`execute` in two steps: run every resolver that can run without awaiting now, and
        return the result when that was all of them (`{ __typename }`, `status`: nothing to
        wait for, so the caller needs no task to watch for a disconnect meanwhile); otherwise
        an awaitable of the result, to be awaited once under the caller's cancel scope.
        Counted in `operations` like `execute`."""
        began = time.perf_counter()
        result = execute(
            self.schema,
            prepared.document,
            root_value=root_value,
            context_value=context,
            variable_values=dict(variables) if variables is not None else None,
            operation_name=_name(prepared.operation),
            executor_class=_TrioExecutor,
        )
        if isinstance(result, ExecutionResult):
            self._record(prepared, result, began)
            return result
        return self._finish(prepared, result, began)

    async def _finish(
        self, prepared: PreparedOperation, pending: Awaitable[ExecutionResult], began: float
    ) -> ExecutionResult:
        result = await pending
        self._record(prepared, result, began)
        return result

    def _record(self, prepared: PreparedOperation, result: ExecutionResult, began: float) -> None:
        self.operations.record(
            prepared.operation.operation.value,
            _name(prepared.operation),
            outcome_code(result.errors),
            time.perf_counter() - began,
        )

    async def subscribe(
        self,
        prepared: PreparedOperation,
        *,
        variables: Mapping[str, Any] | None,
        context: Any,
    ) -> AsyncIterator[ExecutionResult] | ExecutionResult:
        """Start a subscription; an ExecutionResult (errors) means it could not start.

        Each source event is executed once into an ExecutionResult, however many clients share
        the stream (fanout.py hands the same result to all of them).
        """
        outcome = subscribe(
            self.schema,
            prepared.document,
            context_value=context,
            variable_values=dict(variables) if variables is not None else None,
            operation_name=_name(prepared.operation),
            executor_class=_TrioExecutor,
        )
        if not isinstance(outcome, ExecutionResult) and not hasattr(outcome, "__anext__"):
            outcome = await outcome
        return outcome  # type: ignore[return-value]


def _name(operation: OperationDefinitionNode) -> str | None:
    return operation.name.value if operation.name else None


def dumps(payload: Any) -> str:
    """Compact JSON for responses (one place, so HTTP and WebSocket bytes agree).

    Always encodable as UTF-8: a lone surrogate (JSON may spell one, `"\\ud800"`, and an error
    message may quote it back) is written as a `\\u` escape instead of breaking the encoder
    of the transport after the response has been chosen.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes | bytearray) -> Any:
    """Strict JSON for requests: ValueError for anything that is not JSON.

    Python's parser accepts NaN and Infinity, which no response may contain, and raises
    RecursionError (not ValueError) on deeply nested arrays; both become a ValueError here, so
    callers have one exception to turn into "malformed request".
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None

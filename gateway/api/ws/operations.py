"""The GraphQL operations one WebSocket connection runs, each in its own task.

`Operations` starts an operation (within `max_operations` and the caller's tier limits), runs
it (a query or mutation once through the engine; a subscription as a member of the shared
execution in `gateway.api.shared_subscriptions`), and cancels it on complete/stop. Query limits
(depth, cost, …) are the engine's, shared with HTTP; the tier limits (gateway.api.auth: requests
per minute and day, open subscriptions, symbols, history) and a mutation the caller's role may
not run (FORBIDDEN) are checked here: each refusal is an `error` message for that operation,
and the connection stays. An accepted operation's task is started by `launch`, in the nursery
its connection opens only while operation tasks run (gateway.api.ws.connection).

Everything it sends goes through its connection (`OperationHost`). Must never let one
operation's failure end the connection, write to the socket, or run an operation of a client
whose API key was revoked since connection_init (that closes 4403).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import structlog
import trio
from graphql import ExecutionResult, OperationType

from gateway.api import deflate
from gateway.api.auth import (
    CLOSE_FORBIDDEN,
    AccessControl,
    Principal,
    RateLimited,
    forbidden_result,
    use_principal,
)
from gateway.api.graphql_trio import GraphQLEngine, PreparedOperation, result_to_dict
from gateway.api.shared_subscriptions import Membership, SubscriptionHub
from gateway.api.ws.options import WebSocketOptions, WebSocketStats

__all__ = ["OperationHost", "Operations"]

log = structlog.get_logger(__name__)


class OperationHost(Protocol):
    """What an operation needs from its connection."""

    @property
    def legacy(self) -> bool:
        """True for the legacy graphql-ws protocol (its `data`, `ka` and error shapes)."""
        ...

    @property
    def principal(self) -> Principal | None: ...

    @property
    def deflation(self) -> deflate.Deflation | None:
        """The socket's permessage-deflate, or None: sent uncompressed."""
        ...

    @property
    def context(self) -> Any:
        """The GraphQL context the connection made once the client was known."""
        ...

    def queue_control(self, message: dict[str, Any]) -> None: ...

    def queue_data(self, frame: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def mark_active(self) -> None:
        """An operation ended: the idle timeout counts from now."""
        ...

    def task_ended(self) -> None:
        """An operation's task is over (the connection may close the nursery it ran in)."""
        ...


class _OperationSink:
    """Delivers one operation's shared-subscription payloads into its connection's queue.

    Once joined, a subscription is this object and its hub membership, and no task: its end
    (`finish`, `fail`: the source stream's; `Operations.cancel`: the client's; `close_all`: the
    connection's) is handled by `on_end` / `Operations`, synchronously.
    """

    __slots__ = (
        "_deflated_prefix",
        "_deflation",
        "_host",
        "_prefix",
        "counted",
        "ended",
        "errors",
        "membership",
        "on_end",
        "op_id",
    )

    def __init__(self, host: OperationHost, op_id: str, prefix: str) -> None:
        self._host = host
        self.op_id = op_id
        self._prefix = prefix
        self._deflation = host.deflation
        # Compressed once per operation; the payload once per event, for every socket.
        self._deflated_prefix = (
            b"" if self._deflation is None else deflate.deflate_part(prefix.encode())
        )
        self.ended = False
        self.errors: list[dict[str, Any]] | None = None
        self.membership: Membership | None = None  # set once the operation's task has ended
        # The tier's open subscription, counted until `Operations._stop` (a flag, not a
        # partial: every idle socket keeps what its subscriptions hold, issue 16).
        self.counted = False
        self.on_end: Callable[[str, _OperationSink], None] | None = None  # Operations._ended

    def deliver(self, payload: str) -> None:
        text = self._prefix + payload + "}"
        self._host.queue_data(
            deflate.shared_frame(self._deflation, self._deflated_prefix, payload, text)
        )

    def fail(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        self.finish()

    def finish(self) -> None:
        if not self.ended:
            self.ended = True
            if self.on_end is not None:
                self.on_end(self.op_id, self)


class Operations:
    """One connection's running operations, by id, each with the cancel scope that stops it."""

    __slots__ = (
        "_access",
        "_engine",
        "_host",
        "_hub",
        "_options",
        "_running",
        "_stats",
        "_to_launch",
    )

    def __init__(
        self,
        host: OperationHost,
        *,
        engine: GraphQLEngine,
        hub: SubscriptionHub,
        access: AccessControl | None,
        options: WebSocketOptions,
        stats: WebSocketStats,
    ) -> None:
        self._host = host
        self._engine = engine
        self._hub = hub
        self._access = access
        self._options = options
        self._stats = stats
        # An operation's task's cancel scope, or, for a subscription once joined, its sink.
        self._running: dict[str, trio.CancelScope | _OperationSink] = {}
        # Accepted by `start`, their tasks not started yet: `launch` starts them in the nursery
        # the connection opens for them (none while no operation task runs: issue 16).
        self._to_launch: list[tuple[str, dict[str, Any], trio.CancelScope]] | None = None

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, op_id: str) -> bool:
        return op_id in self._running

    @property
    def to_launch(self) -> bool:
        """Whether `start` accepted operations whose tasks `launch` has not started yet."""
        return self._to_launch is not None

    def launch(self, nursery: trio.Nursery) -> None:
        """Start, in tasks of `nursery`, the operations `start` accepted (one cancelled since
        starts and ends at once)."""
        to_launch, self._to_launch = self._to_launch or [], None
        for op_id, payload, scope in to_launch:
            nursery.start_soon(self._run, op_id, payload, scope)

    def start(self, op_id: str, payload: dict[str, Any]) -> None:
        """Accept `payload` as operation `op_id`, to run in a task once the connection calls
        `launch`, or answer why not."""
        maximum = self._options.max_operations
        if len(self._running) >= maximum:
            error = {
                "message": f"this connection already runs {maximum} operations: "
                "complete one before starting another",
                "extensions": {"code": "RATE_LIMITED", "limit": "operations", "maximum": maximum},
            }
            self._send_errors(op_id, [error])
            return
        principal = self._host.principal
        if self._access is not None and principal is not None:
            try:
                self._access.admit(principal)  # every operation is a request
            except RateLimited as limited:
                self._send_errors(op_id, [_rate_limited(limited)])
                return
        scope = trio.CancelScope()
        self._running[op_id] = scope
        self._stats.operations += 1
        if self._to_launch is None:
            self._to_launch = []
        self._to_launch.append((op_id, payload, scope))

    def cancel(self, op_id: str) -> None:
        entry = self._running.pop(op_id, None)
        if isinstance(entry, trio.CancelScope):
            entry.cancel()
        elif entry is not None:  # a joined subscription: it ends here, without a `complete`
            self._stop(entry)

    def close_all(self) -> None:
        """The connection is over: every joined subscription leaves its group, unanswered."""
        joined = [op for op, entry in self._running.items() if isinstance(entry, _OperationSink)]
        for op_id in joined:
            self.cancel(op_id)

    def _stop(self, sink: _OperationSink) -> None:
        sink.on_end = None
        if sink.membership is not None:
            self._hub.leave(sink.membership)
            sink.membership = None
        principal = self._host.principal
        if sink.counted and self._access is not None and principal is not None:
            sink.counted = False
            self._access.close_subscription(principal)  # as `_operate`'s `release` does
        self._host.mark_active()

    def _ended(self, op_id: str, sink: _OperationSink) -> None:
        """A joined subscription's source stream ended (`finish`) or failed (`fail`)."""
        if self._running.get(op_id) is sink:
            del self._running[op_id]
        self._stop(sink)
        if sink.errors is not None:
            self._send_errors(op_id, sink.errors)
        else:
            self._host.queue_control({"id": op_id, "type": "complete"})

    def _send_errors(self, op_id: str, errors: list[dict[str, Any]]) -> None:
        payload: Any = errors[0] if self._host.legacy and errors else errors
        self._host.queue_control({"type": "error", "id": op_id, "payload": payload})

    def _data_prefix(self, op_id: str) -> str:
        kind = "data" if self._host.legacy else "next"
        return '{"id":' + json.dumps(op_id) + ',"type":"' + kind + '","payload":'

    async def _run(self, op_id: str, payload: dict[str, Any], scope: trio.CancelScope) -> None:
        use_principal(self._host.principal)  # this task's (resolvers check the tier's limits)
        outcome: bool | None = False
        try:
            with scope:
                outcome = await self._operate(op_id, payload, scope)
                if outcome:
                    self._host.queue_control({"id": op_id, "type": "complete"})
        except Exception as exc:  # an operation's failure is reported, never fatal
            log.exception("ws_operation_failed", op_id=op_id, error=repr(exc))
            self._send_errors(
                op_id, [{"message": "internal error", "extensions": {"code": "INTERNAL"}}]
            )
        finally:
            if outcome is not None:  # None: a joined subscription lives on without this task
                if self._running.get(op_id) is scope:
                    del self._running[op_id]
                self._host.mark_active()
            self._host.task_ended()

    async def _operate(
        self, op_id: str, payload: dict[str, Any], scope: trio.CancelScope
    ) -> bool | None:
        """Run one operation; True when a `complete` should follow, None when it is a
        subscription that joined its group (it now lives on as its sink, without a task)."""
        query: str = payload["query"]  # a string: checked by protocols.operation_fields
        variables = payload.get("variables")
        host = self._host
        principal = host.principal
        # A key revoked since the init (here or by `gateway keys revoke` elsewhere) stops now.
        if (
            self._access is not None
            and principal is not None
            and not await self._access.still_valid(principal)
        ):
            host.close(CLOSE_FORBIDDEN, "API key revoked")
            return False
        if variables is not None and not isinstance(variables, dict):
            error = {"message": "'variables' must be an object"}
            self._send_errors(op_id, [{**error, "extensions": {"code": "BAD_USER_INPUT"}}])
            return False
        prepared = self._engine.prepare(query, payload.get("operationName"), variables)
        if isinstance(prepared, ExecutionResult):
            self._send_errors(op_id, result_to_dict(prepared)["errors"])
            return False
        forbidden = forbidden_result(principal, prepared)
        if forbidden is not None:
            self._send_errors(op_id, result_to_dict(forbidden)["errors"])
            return False
        if prepared.kind is not OperationType.SUBSCRIPTION:
            result = await self._engine.execute(prepared, variables=variables, context=host.context)
            host.queue_control(
                {
                    "id": op_id,
                    "type": "data" if host.legacy else "next",
                    "payload": result_to_dict(result),
                }
            )
            return True
        if self._access is None or principal is None:
            return await self._subscribe(op_id, query, prepared, variables, "", scope, None)
        try:
            self._access.open_subscription(principal)
        except RateLimited as limited:
            self._send_errors(op_id, [_rate_limited(limited)])
            return False
        release = partial(self._access.close_subscription, principal)
        outcome: bool | None = False
        try:
            outcome = await self._subscribe(
                op_id, query, prepared, variables, principal.tier, scope, release
            )
        finally:
            if outcome is not None:  # not joined, or already over: the tier's count goes now
                release()
        return outcome

    async def _subscribe(
        self,
        op_id: str,
        query: str,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        tier: str,
        scope: trio.CancelScope,
        release: Callable[[], None] | None,
    ) -> bool | None:
        sink = _OperationSink(self._host, op_id, self._data_prefix(op_id))
        # The hub shares one execution among identical subscriptions and keys its groups by the
        # text it is given. Its resolvers see the tier of the client that started a group (they
        # inherit this task's context), and tiers differ in what arguments they accept: so the
        # tier is made part of the key, and clients of different tiers never share a group.
        key = f"#tier:{tier}\n{query}" if tier else query
        joined = await self._hub.join(key, prepared, variables, sink)
        if not isinstance(joined, Membership):
            self._send_errors(op_id, joined)
            return False
        if sink.ended or scope.cancel_called or self._running.get(op_id) is not scope:
            # The stream ended while this task was joining, or the client completed it.
            self._hub.leave(joined)
            if sink.errors is not None:
                self._send_errors(op_id, sink.errors)
                return False
            return sink.ended and not scope.cancel_called
        # Joined: from here the operation is its sink and its membership, and this task ends
        # (a parked task per subscription cost an idle socket ~3 KB, issue 16).
        sink.membership = joined
        sink.counted = release is not None  # `_stop` closes it: `release` is not kept
        sink.on_end = self._ended
        self._running[op_id] = sink
        return None


def _rate_limited(error: RateLimited) -> dict[str, Any]:
    extensions = {k: v for k, v in error.extensions().items() if v is not None}
    return {"message": str(error), "extensions": {**extensions, "code": error.code}}

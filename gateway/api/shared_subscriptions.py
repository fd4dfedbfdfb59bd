"""Shared GraphQL subscriptions: one execution per event, however many clients listen.

Clients that subscribe with the same document, operation name and variables join one *group*.
The group owns a single graphql-core subscription (one source stream, one execution per source
event) and serializes each result once; every member receives the same payload string and only
wraps it in its own protocol envelope. A subscriber therefore costs a frame write, not a GraphQL
execution.

Group producers run in the hub's own nursery, so their lifetime is the hub's, not a client's:
the group ends when its last member leaves (its cancel scope is cancelled), when the source
stream ends (members get `complete`) or when it fails (members get `error`).

Members must be cheap and non-blocking (`deliver` is called in a loop over all members); the
WebSocket connection's bounded queue is where a slow client's backlog is kept and trimmed.

Must never: let one group's failure escape into the hub's nursery, or execute an event more
than once per group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio
from graphql import ExecutionResult

from gateway.api.graphql_trio import (
    GraphQLEngine,
    PreparedOperation,
    dumps,
    format_error,
    result_to_dict,
)
from gateway.errors import GatewayError

__all__ = ["GroupKey", "Member", "Membership", "SubscriptionHub"]

log = structlog.get_logger(__name__)

GroupKey = tuple[str, str | None, str]


class Member(Protocol):
    """The receiving end of a shared subscription (one operation of one connection)."""

    def deliver(self, payload: str) -> None:
        """A serialized ExecutionResult; must not block."""

    def fail(self, errors: list[dict[str, Any]]) -> None:
        """The subscription could not continue; no more payloads follow."""

    def finish(self) -> None:
        """The source stream ended normally; no more payloads follow."""


@dataclass(eq=False)
class _Group:
    key: GroupKey
    members: dict[int, Member] = field(default_factory=dict)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    ready: trio.Event = field(default_factory=trio.Event)
    setup_errors: list[dict[str, Any]] | None = None
    executions: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """A member's place in a group; hand it back to `SubscriptionHub.leave`."""

    group: _Group
    token: int


def group_key(
    query: str, operation_name: str | None, variables: Mapping[str, Any] | None
) -> GroupKey:
    """Two subscriptions share work exactly when document, operation and variables agree."""
    canonical = json.dumps(variables or {}, sort_keys=True, separators=(",", ":"), default=str)
    return (query, operation_name, canonical)


class SubscriptionHub:
    """Owns every shared subscription group; `run` must be started in a nursery first."""

    def __init__(self, engine: GraphQLEngine, context: Any) -> None:
        self._engine = engine
        self._context = context
        self._groups: dict[GroupKey, _Group] = {}
        self._nursery: trio.Nursery | None = None
        self._next_token = 0
        self.executions = 0
        self.deliveries = 0

    @property
    def group_count(self) -> int:
        return len(self._groups)

    @property
    def member_count(self) -> int:
        return sum(len(group.members) for group in self._groups.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    async def join(
        self,
        query: str,
        prepared: PreparedOperation,
        variables: Mapping[str, Any] | None,
        member: Member,
    ) -> Membership | list[dict[str, Any]]:
        """Add `member` to the group for this subscription, starting it if needed.

        Returns the errors instead when the subscription cannot start (bad variables, a
        resolver that refuses its arguments): the caller reports them and nothing is kept.
        """
        if self._nursery is None:
            return [{"message": "the server is shutting down", "extensions": {"code": "INTERNAL"}}]
        key = group_key(query, _operation_name(prepared), variables)
        self._next_token += 1
        token = self._next_token
        group = self._groups.get(key)
        # The member is added before the group can produce anything, so a new member never
        # misses an event published while its group was starting.
        try:
            if group is None:
                group = _Group(key)
                self._groups[key] = group
                group.members[token] = member
                await self._nursery.start(self._produce, group, prepared, variables)
            else:
                group.members[token] = member
                await group.ready.wait()
        except BaseException:
            self.leave(Membership(group, token))  # type: ignore[arg-type]
            raise
        if group.setup_errors is not None:
            group.members.pop(token, None)
            return group.setup_errors
        return Membership(group, token)

    def leave(self, membership: Membership) -> None:
        """Remove a member; the last one out stops the group's execution."""
        group = membership.group
        group.members.pop(membership.token, None)
        if not group.members:
            group.cancel_scope.cancel()
            self._discard(group)

    def _discard(self, group: _Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]

    async def _produce(
        self,
        group: _Group,
        prepared: PreparedOperation,
        variables: Mapping[str, Any] | None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with group.cancel_scope:
            try:
                outcome = await self._engine.subscribe(
                    prepared, variables=variables, context=self._context
                )
            finally:
                group.ready.set()
            if isinstance(outcome, ExecutionResult):
                group.setup_errors = [format_error(error) for error in outcome.errors or ()]
                self._discard(group)
                task_status.started()
                return
            task_status.started()
            await self._pump(group, outcome)
        self._discard(group)

    async def _pump(self, group: _Group, stream: Any) -> None:
        try:
            async for result in stream:
                payload = dumps(result_to_dict(result))
                group.executions += 1
                self.executions += 1
                members = tuple(group.members.values())
                for member in members:
                    member.deliver(payload)
                self.deliveries += len(members)
        except Exception as exc:  # one broken stream must not take the hub down
            errors = [_stream_error(exc)]
            for member in tuple(group.members.values()):
                member.fail(errors)
            return
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()
        for member in tuple(group.members.values()):
            member.finish()


def _stream_error(exc: Exception) -> dict[str, Any]:
    """The `error` payload for a stream that failed after it started."""
    if isinstance(exc, GatewayError):
        return {"message": str(exc), "extensions": {**exc.extensions(), "code": exc.code}}
    log.error("subscription_failed", error=repr(exc), exc_info=exc)
    return {"message": "subscription failed", "extensions": {"code": "INTERNAL"}}


def _operation_name(prepared: PreparedOperation) -> str | None:
    name = prepared.operation.name
    return name.value if name else None

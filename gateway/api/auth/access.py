"""What a principal may do: roles, and the tier checks a resolver makes on one request.

Roles: `admin` may do everything; `viewer` may read and run the mutations in
`VIEWER_MUTATIONS`. Any other mutation from a viewer refuses the whole operation with FORBIDDEN
before anything executes (`forbidden_result`), and resolvers of admin mutations check again
(`require_admin`). `allow_admin_mutations` (GATEWAY_ALLOW_ADMIN_MUTATIONS=1) makes everyone an
admin: for local development only. `check_symbols` and `check_history` hold a request to the
tier of the running task's caller (`current_principal`, principal.py); the counted limits
(requests, subscriptions) are metering.py's.

Must never: change anything. These are decisions only (no counters, no storage, no I/O), taken
before the operation runs, so a refused operation leaves no trace.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
)

from gateway.api.auth.principal import Principal, current_principal
from gateway.api.graphql_trio import PreparedOperation
from gateway.config import Settings
from gateway.errors import Forbidden, TierLimitExceeded
from gateway.models import utc_now

__all__ = [
    "VIEWER_MUTATIONS",
    "check_history",
    "check_symbols",
    "forbidden_result",
    "require_admin",
]

# Mutations a viewer may run: they compute an answer and change no state.
VIEWER_MUTATIONS: Final = frozenset({"analyzeSentiment", "__typename"})


def check_symbols(count: int) -> None:
    """Raise TierLimitExceeded when the caller's tier allows fewer symbols per request."""
    principal = current_principal()
    maximum = principal.limits.symbols if principal is not None else None
    if maximum is not None and count > maximum:
        assert principal is not None
        raise TierLimitExceeded(
            f"the {principal.tier} tier allows at most {maximum} symbols per request, got {count}",
            limit="symbols",
            maximum=maximum,
            tier=principal.tier,
        )


def check_history(start: datetime, now: datetime | None = None) -> None:
    """Raise TierLimitExceeded when `start` is further back than the caller's tier reaches."""
    principal = current_principal()
    days = principal.limits.history_days if principal is not None else None
    if days is None:
        return
    assert principal is not None
    now = now or utc_now()
    if start < now - timedelta(days=days):
        raise TierLimitExceeded(
            f"the {principal.tier} tier reaches back at most {days} days of history",
            limit="historyDays",
            maximum=days,
            tier=principal.tier,
        )


def require_admin(principal: Principal | None, settings: Settings) -> None:
    """Raise Forbidden unless the caller may run admin operations.

    No principal means the gateway's own context; it is an admin only under
    allow_admin_mutations, as before keys existed.
    """
    allowed = settings.allow_admin_mutations if principal is None else principal.admin
    if not allowed:
        raise Forbidden("this operation needs an API key with the admin role")


def _root_fields(prepared: PreparedOperation) -> list[tuple[str, str]]:
    """(response key, field name) of every root field, fragments expanded."""
    fragments = {
        definition.name.value: definition
        for definition in prepared.document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    found: list[tuple[str, str]] = []
    seen: set[str] = set()

    def walk(selection_set: SelectionSetNode) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                found.append((key, selection.name.value))
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in seen and name in fragments:  # validation refused cycles
                    seen.add(name)
                    walk(fragments[name].selection_set)

    walk(prepared.operation.selection_set)
    return found


def forbidden_result(
    principal: Principal | None, prepared: PreparedOperation
) -> ExecutionResult | None:
    """FORBIDDEN for a mutation holding a field the caller may not run; None if it may run.

    The whole operation is refused before any resolver runs, so nothing changes. The errors
    carry the fields' paths, as if each resolver had refused (`data` is null).
    """
    if prepared.kind is not OperationType.MUTATION or principal is None or principal.admin:
        return None
    refused = [(key, name) for key, name in _root_fields(prepared) if name not in VIEWER_MUTATIONS]
    if not refused:
        return None
    who = "anonymous clients" if principal.anonymous else f"{principal.role} keys"
    errors = [
        GraphQLError(
            f"{name} needs an API key with the admin role; {who} may not run it",
            path=[key],
            extensions={"code": Forbidden.code},
        )
        for key, name in refused
    ]
    return ExecutionResult(None, errors)

"""Who is calling and how much they may do: principals, roles, tiers and their limits.

Every HTTP request and every WebSocket connection is made by a `Principal`: the holder of an API
key (its role and tier are the key's) or, while `anonymous_access` is "read", an anonymous
client (viewer role, free tier) counted by its IP address (its /64 for IPv6, which one host
usually holds whole). A key is presented as `Authorization: Bearer gw_…` or `X-API-Key: gw_…`
over HTTP, and in the WebSocket `connection_init` payload (see `credential_from_init`).

Roles: `admin` may do everything; `viewer` may read and run the mutations in
`VIEWER_MUTATIONS`. Any other mutation from a viewer refuses the whole operation with FORBIDDEN
before anything executes (`forbidden_result`), and resolvers of admin mutations check again.
`allow_admin_mutations` (GATEWAY_ALLOW_ADMIN_MUTATIONS=1) makes everyone an admin: for local
development only.

Limits of a tier (`TierLimits`, from Settings; None is unlimited), counted per key, or per
client address for anonymous clients, in memory (`UsageMeter`):

    requests per minute   sliding window     over: RATE_LIMITED, retryAfter (HTTP 429)
    requests per UTC day  calendar counter   over: RATE_LIMITED, retryAfter to midnight UTC
    symbols per request   `check_symbols`    over: BAD_USER_INPUT with limit/maximum/tier
    days of history       `check_history`    over: BAD_USER_INPUT with limit/maximum/tier
    open subscriptions    `UsageMeter`       over: RATE_LIMITED for that subscribe only

A request is an HTTP GraphQL request or a WebSocket operation (subscription events are not
requests); a refused request is not counted. Resolvers learn the caller's tier through a
context variable set by the transport for its task (`use_principal`): shared subscription
groups run in the hub's tasks, which inherit it from the client that started them, and ws.py
keeps groups of different tiers apart.

Revocation: HTTP requests and WebSocket operations of a key check the database first, so a
revoked key fails its next request even when another process (the `gateway keys` CLI) revoked
it; `AccessControl.run` polls every `auth_revocation_poll` seconds for revoked keys among those
holding WebSockets open and closes those with 4403.

Must never: keep or log a presented key, let a refused operation change anything, or let the
number of tracked anonymous clients grow without bound.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog
import trio
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

from gateway.api.graphql_trio import PreparedOperation
from gateway.config import SECONDS, Settings
from gateway.errors import (
    ConfigError,
    Forbidden,
    RateLimited,
    StorageError,
    TierLimitExceeded,
    Unauthenticated,
)
from gateway.models import utc_now
from gateway.storage import Storage
from gateway.store.api_keys import TIER_NAMES, KeyRecord, KeyStore

__all__ = [
    "VIEWER_MUTATIONS",
    "AccessControl",
    "Principal",
    "RateLimited",
    "TierLimitExceeded",
    "TierLimits",
    "Unauthenticated",
    "UsageMeter",
    "UsageSnapshot",
    "check_history",
    "check_symbols",
    "credential_from_headers",
    "credential_from_init",
    "current_principal",
    "forbidden_result",
    "require_admin",
    "use_principal",
]

log = structlog.get_logger(__name__)

# Mutations a viewer may run: they compute an answer and change no state.
VIEWER_MUTATIONS: Final = frozenset({"analyzeSentiment", "__typename"})

# Close codes (ws.py): no key where one is required / a key that is bad or was revoked.
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403

# Memory bound for unlimited tiers: the "last minute" count shown for them stops here.
_UNLIMITED_WINDOW: Final = 10_000
_MINUTE: Final = 60 * SECONDS


# ---------------------------------------------------------------------------------------------
# principals


@dataclass(frozen=True, slots=True)
class TierLimits:
    """What one tier allows; None means unlimited."""

    tier: str
    per_minute: int | None
    per_day: int | None
    symbols: int | None
    history_days: int | None
    subscriptions: int | None

    @classmethod
    def from_settings(cls, settings: Settings, tier: str) -> TierLimits:
        if tier not in TIER_NAMES:
            raise ConfigError(f"unknown tier {tier!r} (one of {', '.join(TIER_NAMES)})")

        def get(limit: str) -> int | None:
            value = int(getattr(settings, f"tier_{tier}_{limit}"))
            if value < 0:
                raise ConfigError(f"tier_{tier}_{limit} must be 0 (unlimited) or more")
            return value or None

        return cls(
            tier=tier,
            per_minute=get("per_minute"),
            per_day=get("per_day"),
            symbols=get("symbols"),
            history_days=get("history_days"),
            subscriptions=get("subscriptions"),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: a key holder or an anonymous client.

    `client` names the usage bucket ("key:<id>" or "ip:<address>"); `admin` says whether admin
    operations are allowed (the key's role, or allow_admin_mutations).
    """

    client: str
    role: str
    limits: TierLimits
    admin: bool
    key_id: int | None = None
    key_name: str | None = None

    @property
    def tier(self) -> str:
        return self.limits.tier

    @property
    def anonymous(self) -> bool:
        return self.key_id is None


_current: ContextVar[Principal | None] = ContextVar("gateway_principal", default=None)


def use_principal(principal: Principal | None) -> None:
    """Make `principal` the caller for this task (and the tasks it starts from now on).

    Trio tasks copy their parent's context when spawned, so setting it in a request's own task
    never leaks into another request.
    """
    _current.set(principal)


def current_principal() -> Principal | None:
    """The caller of the running request; None inside the gateway's own work (no limits)."""
    return _current.get()


def check_symbols(count: int) -> None:
    """Raise TierLimitExceeded when the caller's tier allows fewer symbols per request."""
    principal = _current.get()
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
    principal = _current.get()
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


# ---------------------------------------------------------------------------------------------
# credentials


def _bearer(value: Any) -> str | None:
    """The key in an Authorization value: "Bearer <key>" (any case), or a bare gw_ key."""
    if not isinstance(value, str):
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if value.strip().startswith("gw_") and not rest:
        return value.strip()
    return None  # another scheme (Basic, …): not ours, ignored


def credential_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key of an HTTP request or WebSocket handshake, from ASGI headers, if any.

    An empty string means a credential header was sent but holds nothing usable; that is a bad
    key, not an anonymous request.
    """
    bearer: str | None = None
    api_key: str | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            text = value.decode("latin-1")
            found = _bearer(text)
            if found is not None:
                bearer = found
            elif text.strip().lower() == "bearer":
                bearer = ""
        elif lowered == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    return bearer if bearer is not None else api_key


def credential_from_init(payload: Mapping[str, Any]) -> str | None:
    """The API key in a WebSocket connection_init payload, if any.

    Accepted (names in any case): {"authorization": "Bearer <key>"}, {"x-api-key": "<key>"}
    (or "apiKey", "api_key"), and the same inside {"headers": {...}}, as GraphiQL and
    graphql-ws clients send them. A value of the wrong type, or an Authorization of another
    scheme, is returned as "" (a bad key), never ignored.
    """
    sources: list[Mapping[str, Any]] = [payload]
    for name, value in payload.items():
        if isinstance(name, str) and name.lower() == "headers" and isinstance(value, Mapping):
            sources.append(value)
    for source in sources:
        for name, value in source.items():
            if not isinstance(name, str):
                continue
            lowered = name.lower()
            if lowered == "authorization":
                return _bearer(value) or ""
            if lowered in {"x-api-key", "apikey", "api_key"}:
                return value.strip() if isinstance(value, str) else ""
    return None


# ---------------------------------------------------------------------------------------------
# operations a principal may run


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


# ---------------------------------------------------------------------------------------------
# usage


def _utc_day() -> str:
    return utc_now().date().isoformat()


def _seconds_to_midnight() -> float:
    now = utc_now()
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (tomorrow - now).total_seconds()


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """One client's usage as counted now."""

    requests_today: int
    requests_last_minute: int
    refused_today: int
    subscriptions: int


class _Usage:
    __slots__ = ("day", "minute", "refused", "saved", "subscriptions", "today")

    def __init__(self, day: str, per_minute: int | None) -> None:
        # trio-clock times of the requests admitted in the last minute, oldest first
        self.minute: deque[float] = deque(maxlen=per_minute or _UNLIMITED_WINDOW)
        self.day = day
        self.today = 0
        self.refused = 0
        self.saved = 0  # `today` as last saved (keys only)
        self.subscriptions = 0

    def roll(self, day: str) -> None:
        if day != self.day:
            self.day = day
            self.today = self.refused = self.saved = 0


class UsageMeter:
    """Request and subscription counters per client, in memory.

    Keys are tracked for as long as the process runs (there are few); anonymous clients in an
    LRU of at most `max_anonymous`, so a flood of addresses costs bounded memory (a forgotten
    client starts afresh, which only ever errs in its favour).
    """

    def __init__(self, *, max_anonymous: int = 10_000) -> None:
        self._max_anonymous = max(1, max_anonymous)
        self._keys: dict[str, _Usage] = {}
        self._anonymous: OrderedDict[str, _Usage] = OrderedDict()

    def _usage(self, principal: Principal, day: str) -> _Usage:
        client = principal.client
        if principal.anonymous:
            usage = self._anonymous.get(client)
            if usage is None:
                usage = self._anonymous[client] = _Usage(day, principal.limits.per_minute)
                if len(self._anonymous) > self._max_anonymous:
                    self._anonymous.popitem(last=False)
            else:
                self._anonymous.move_to_end(client)
        else:
            usage = self._keys.get(client)
            if usage is None:
                usage = self._keys[client] = _Usage(day, principal.limits.per_minute)
        usage.roll(day)
        return usage

    def admit(self, principal: Principal) -> None:
        """Count one request, or raise RateLimited (counting it as refused) when over a limit."""
        limits = principal.limits
        usage = self._usage(principal, _utc_day())
        now = trio.current_time()
        minute = usage.minute
        while minute and minute[0] <= now - _MINUTE:
            minute.popleft()
        if limits.per_minute is not None and len(minute) >= limits.per_minute:
            usage.refused += 1
            raise RateLimited(
                f"the {limits.tier} tier allows {limits.per_minute} requests per minute",
                limit="perMinute",
                maximum=limits.per_minute,
                tier=limits.tier,
                retry_after=minute[0] + _MINUTE - now,
            )
        if limits.per_day is not None and usage.today >= limits.per_day:
            usage.refused += 1
            raise RateLimited(
                f"the {limits.tier} tier allows {limits.per_day} requests per day (UTC)",
                limit="perDay",
                maximum=limits.per_day,
                tier=limits.tier,
                retry_after=_seconds_to_midnight(),
            )
        minute.append(now)
        usage.today += 1

    def open_subscription(self, principal: Principal) -> None:
        """Count one more open subscription, or raise RateLimited when the tier's are all open."""
        maximum = principal.limits.subscriptions
        usage = self._usage(principal, _utc_day())
        if maximum is not None and usage.subscriptions >= maximum:
            raise RateLimited(
                f"the {principal.tier} tier allows {maximum} subscriptions open at once:"
                " complete one before starting another",
                limit="subscriptions",
                maximum=maximum,
                tier=principal.tier,
                retry_after=None,
            )
        usage.subscriptions += 1

    def close_subscription(self, principal: Principal) -> None:
        table = self._anonymous if principal.anonymous else self._keys
        usage = table.get(principal.client)
        if usage is not None and usage.subscriptions > 0:
            usage.subscriptions -= 1

    def snapshot(self, client: str) -> UsageSnapshot:
        usage = self._keys.get(client) or self._anonymous.get(client)
        if usage is None:
            return UsageSnapshot(0, 0, 0, 0)
        usage.roll(_utc_day())
        now = trio.current_time()
        last_minute = sum(1 for t in usage.minute if t > now - _MINUTE)
        return UsageSnapshot(usage.today, last_minute, usage.refused, usage.subscriptions)

    @property
    def anonymous_clients(self) -> int:
        return len(self._anonymous)

    def restore(self, day: str, counts: Mapping[int, int]) -> None:
        """Start keys' daily counts from what was saved earlier today (after a restart)."""
        for key_id, count in counts.items():
            usage = self._keys.setdefault(f"key:{key_id}", _Usage(day, None))
            usage.roll(day)
            usage.today = max(usage.today, count)
            usage.saved = usage.today

    def unsaved(self) -> list[tuple[int, str, int]]:
        """(key id, day, requests) of the keys counted since they were last saved."""
        return [
            (int(client.removeprefix("key:")), usage.day, usage.today)
            for client, usage in self._keys.items()
            if usage.today != usage.saved
        ]

    def mark_saved(self, rows: Iterable[tuple[int, str, int]]) -> None:
        for key_id, day, count in rows:
            usage = self._keys.get(f"key:{key_id}")
            if usage is not None and usage.day == day:
                usage.saved = max(usage.saved, count)


# ---------------------------------------------------------------------------------------------
# the front door


def _bucket(address: str) -> str:
    """What anonymous limits count: the address, or its /64 for IPv6 (one host's usual share)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Closeable(Protocol):
    """A live connection that can be told to close (ws.py's connections)."""

    def close(self, code: int, reason: str) -> None: ...


class AccessControl:
    """Authentication, limits and revocation for one gateway.

    Start `run` in a nursery (the app does, in its ASGI lifespan) to restore today's counts,
    save them periodically and close the WebSockets of revoked keys.
    """

    def __init__(self, settings: Settings, storage: Storage) -> None:
        if settings.anonymous_access not in {"read", "off"}:
            raise ConfigError(
                f"anonymous_access must be read or off, got {settings.anonymous_access!r}"
            )
        self.settings = settings
        self.keys = KeyStore(storage)
        self.meter = UsageMeter(max_anonymous=settings.auth_max_anonymous_clients)
        self.limits = {tier: TierLimits.from_settings(settings, tier) for tier in TIER_NAMES}
        self._connections: dict[int, set[Closeable]] = {}
        self._touched: dict[int, float] = {}  # key id → trio time of the last last_used write

    # -- who ----------------------------------------------------------------------------------

    def anonymous(self, client_address: str) -> Principal:
        return Principal(
            client=f"ip:{_bucket(client_address)}",
            role="viewer",
            limits=self.limits["free"],
            admin=self.settings.allow_admin_mutations,
        )

    def principal_for(self, record: KeyRecord) -> Principal:
        return Principal(
            client=f"key:{record.id}",
            role=record.role,
            limits=self.limits.get(record.tier, self.limits["free"]),
            admin=record.role == "admin" or self.settings.allow_admin_mutations,
            key_id=record.id,
            key_name=record.name,
        )

    async def authenticate(self, credential: str | None, client_address: str) -> Principal:
        """The principal for a request's credential (None: none was sent).

        Raises Unauthenticated for a bad, unknown or revoked key, and for no key while
        anonymous access is off.
        """
        if credential is None:
            if self.settings.anonymous_access == "off":
                raise Unauthenticated(
                    "an API key is required: send Authorization: Bearer <key>", presented=False
                )
            return self.anonymous(client_address)
        record = await self.keys.verify(credential) if credential else None
        if record is None:
            raise Unauthenticated("the API key is not valid (unknown or revoked)", presented=True)
        self._touch(record.id)
        return self.principal_for(record)

    async def still_valid(self, principal: Principal) -> bool:
        """For a key: whether it is still live (one indexed read). Anonymous: always."""
        if principal.key_id is None:
            return True
        live = await self.keys.is_live(principal.key_id)
        if live:
            self._touch(principal.key_id)
        return live

    def _touch(self, key_id: int) -> None:
        now = trio.current_time()
        last = self._touched.get(key_id)
        if last is None or now - last >= self.settings.auth_last_used_interval:
            self._touched[key_id] = now
            self.keys.touch(key_id, utc_now())

    # -- how much -----------------------------------------------------------------------------

    def admit(self, principal: Principal) -> None:
        """Count a request against the principal's limits; raises RateLimited when over."""
        self.meter.admit(principal)

    def open_subscription(self, principal: Principal) -> None:
        self.meter.open_subscription(principal)

    def close_subscription(self, principal: Principal) -> None:
        self.meter.close_subscription(principal)

    # -- live connections and revocation ------------------------------------------------------

    def register(self, principal: Principal, connection: Closeable) -> None:
        if principal.key_id is not None:
            self._connections.setdefault(principal.key_id, set()).add(connection)

    def unregister(self, principal: Principal, connection: Closeable) -> None:
        if principal.key_id is None:
            return
        connections = self._connections.get(principal.key_id)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._connections[principal.key_id]

    def connection_count(self, key_id: int) -> int:
        return len(self._connections.get(key_id, ()))

    def _close_revoked(self, key_ids: Iterable[int]) -> None:
        for key_id in key_ids:
            for connection in self._connections.pop(key_id, set()):
                connection.close(CLOSE_FORBIDDEN, "API key revoked")
            log.info("auth.key_revoked_connections_closed", key_id=key_id)

    async def revoke(self, key_id: int) -> KeyRecord | None:
        """Revoke a key now, and close its WebSockets at once (in-process revocation)."""
        record = await self.keys.revoke(key_id)
        if record is not None:
            self._close_revoked([key_id])
        return record

    async def poll_revocations(self) -> None:
        """Close the WebSockets of keys revoked since (by anyone, any process)."""
        if not self._connections:
            return
        revoked = await self.keys.revoked_among(list(self._connections))
        self._close_revoked(revoked)

    async def save_usage(self) -> None:
        rows = self.meter.unsaved()
        if rows:
            await self.keys.save_usage(rows)
            self.meter.mark_saved(rows)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore today's counts, then poll revocations and save usage until cancelled.

        Storage trouble is logged and retried on the next tick; it never ends this task. On
        cancellation the counts are saved once more (bounded, shielded).
        """
        day = _utc_day()
        try:
            self.meter.restore(day, await self.keys.usage_on(day))
        except StorageError as exc:
            log.warning("auth.usage_restore_failed", error=str(exc))
        task_status.started()
        next_save = trio.current_time() + self.settings.auth_usage_flush
        try:
            while True:
                await trio.sleep(self.settings.auth_revocation_poll)
                try:
                    await self.poll_revocations()
                    if trio.current_time() >= next_save:
                        next_save = trio.current_time() + self.settings.auth_usage_flush
                        await self.save_usage()
                except StorageError as exc:
                    log.warning("auth.poll_failed", error=str(exc))
                except Exception as exc:  # a bug here must not stop revocations for good
                    log.error("auth.poll_crashed", error=repr(exc), exc_info=exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2 * SECONDS):
                try:
                    await self.save_usage()
                except StorageError as exc:
                    log.warning("auth.usage_save_failed", error=str(exc))

"""GraphQL for providers, pools and health: the resilience half of the contract.

Queries read the registry (live state) and the provider store (history). Mutations change
pools, acknowledge alerts and run provider checks; they are admin operations, refused with
FORBIDDEN unless the caller's API key has the admin role (gateway.api.auth.access; for local
development GATEWAY_ALLOW_ADMIN_MUTATIONS=1 makes everyone an admin). `apiKeyUsage` (admin)
shows each API key's usage. Subscriptions stream state changes, rotations and alerts from the
event bus.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import cast

import strawberry
from strawberry.types import Info

from gateway.api.auth import TierLimits as TierLimitsRecord
from gateway.api.auth import current_principal, require_admin
from gateway.api.context import RequestContext
from gateway.config import ProviderConfig
from gateway.errors import BadUserInput, GatewayError
from gateway.models import AlertRecord
from gateway.models import ProviderStateChange as StateChangeRecord
from gateway.providers.registry import ProviderRegistry
from gateway.storage import RotationRecord as StoredRotation
from gateway.upstream.pool import Pool as PoolObject
from gateway.upstream.pool import RotationEvent as RotationRecord
from gateway.vocabulary import Category, ProviderState, RotationStrategy

__all__ = ["ProviderMutation", "ProviderQuery", "ProviderSubscription"]

MAX_LIMIT = 1000


# The vocabulary's own enums are the schema's (registered here, defined once in
# gateway.vocabulary), so the API offers exactly the words providers.toml and the pools know.
strawberry.enum(Category, description="What kind of data a provider serves.")
strawberry.enum(ProviderState, description="A provider's health, from its recent requests.")
strawberry.enum(RotationStrategy, description="How a pool orders its members for each request.")


@strawberry.enum(description="A provider's circuit breaker.")
class CircuitState(enum.Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@strawberry.enum(description="How urgent an alert is.")
class Severity(enum.Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


@strawberry.type(description="One rate-limit window of a provider and how much of it is used.")
class RateLimitWindow:
    window: str = strawberry.field(description="second, minute, hour, day, week or month.")
    limit: int
    used: int
    resets_at: datetime = strawberry.field(
        description="When the oldest counted request leaves the window (now if none counts)."
    )


@strawberry.type(description="An upstream data service and what the gateway sees of it.")
class Provider:
    id: strawberry.ID
    name: str
    category: Category = strawberry.field(description="The provider's main category.")
    categories: list[Category] = strawberry.field(description="Every category it serves.")
    tier: str = strawberry.field(description="A: collector; B: health check; C: listed, disabled.")
    state: ProviderState
    state_reason: str | None = strawberry.field(
        description="Why it is in that state, e.g. 'connected', 'silent for 30 s, reconnecting'."
    )
    circuit: CircuitState
    priority: int
    requires_key: bool
    key_configured: bool = strawberry.field(description="Whether its key is set (never the key).")
    enabled: bool
    disabled_reason: str | None
    docs_url: str | None
    rate_limits: list[RateLimitWindow]
    last_checked_at: datetime | None
    last_success_at: datetime | None = strawberry.field(
        description="The last successful request (for a stream: the last message received)."
    )
    last_error: str | None = strawberry.field(description="The last failure, secrets masked.")
    avg_response_ms: float | None = strawberry.field(description="Moving average of successes.")
    success_rate: float | None = strawberry.field(description="Share of requests that succeeded.")
    outliers: int = strawberry.field(
        description="Ticks left out of the consensus price for deviating from the others."
    )
    quarantined: int = strawberry.field(
        description="Ticks refused as implausible (see `quarantinedTicks`): never stored, "
        "published, or used in candles or the consensus."
    )

    @classmethod
    def build(cls, registry: ProviderRegistry, config: ProviderConfig) -> Provider:
        record = registry.board.records.get(config.id)
        limiter = registry.client.limiter(config.id)
        usage = limiter.usage() if limiter is not None else []
        return cls(
            id=strawberry.ID(config.id),
            name=config.name,
            category=Category(config.categories[0]),
            categories=[Category(c) for c in config.categories],
            tier=config.tier,
            state=ProviderState(registry.state(config.id)),
            state_reason=record.reason if record else None,
            circuit=CircuitState(registry.circuit(config.id)),
            priority=config.priority,
            requires_key=config.requires_key,
            key_configured=registry.secrets.key_set(config),
            enabled=config.enabled,
            disabled_reason=config.disabled_reason,
            docs_url=config.docs_url,
            rate_limits=[
                RateLimitWindow(window=u.name, limit=u.limit, used=u.used, resets_at=u.resets_at)
                for u in usage
            ]
            or [
                RateLimitWindow(window=w.name, limit=w.limit, used=0, resets_at=datetime.now(UTC))
                for w in config.rate_limits
            ],
            last_checked_at=record.last_checked_at if record else None,
            last_success_at=record.last_success_at if record else None,
            last_error=record.last_error if record else None,
            avg_response_ms=record.latency_ms_ewma if record else None,
            success_rate=record.success_rate if record else None,
            outliers=record.outliers if record else 0,
            quarantined=record.quarantined if record else 0,
        )


@strawberry.type(description="A provider's place in a pool, with what the pool has seen of it.")
class PoolMember:
    provider: Provider
    priority: int
    weight: float
    uses: int
    successes: int
    failures: int


@strawberry.type(description="Interchangeable providers of one category, and how to pick one.")
class Pool:
    id: strawberry.ID
    name: str
    category: Category
    strategy: RotationStrategy
    current: Provider | None = strawberry.field(description="The provider that served last.")
    members: list[PoolMember]

    @classmethod
    def build(cls, registry: ProviderRegistry, pool: PoolObject) -> Pool:
        current = registry.provider(pool.current) if pool.current else None
        return cls(
            id=strawberry.ID(pool.id),
            name=pool.name,
            category=Category(pool.category),
            strategy=RotationStrategy(pool.strategy.value),
            current=Provider.build(registry, current) if current else None,
            members=[
                PoolMember(
                    provider=Provider.build(registry, m.provider),
                    priority=int(m.priority or 0),
                    weight=float(m.weight or 0.0),
                    uses=m.uses,
                    successes=m.successes,
                    failures=m.failures,
                )
                for m in pool.members
            ],
        )


@strawberry.type(description="A pool's serving provider changed.")
class RotationEvent:
    pool: str
    from_provider: str | None
    to_provider: str
    reason: str = strawberry.field(
        description="failure, rate_limit, circuit_open, manual or scheduled."
    )
    at: datetime


@strawberry.type(description="A provider moved from one state to another.")
class ProviderStateChange:
    provider: str
    old_state: ProviderState
    new_state: ProviderState
    reason: str
    at: datetime

    @classmethod
    def build(cls, change: StateChangeRecord) -> ProviderStateChange:
        return cls(
            provider=change.provider,
            old_state=ProviderState(change.old_state),
            new_state=ProviderState(change.new_state),
            reason=change.reason,
            at=change.at,
        )


@strawberry.type(description="One failed upstream request.")
class Failure:
    provider: str
    error_type: str
    message: str
    http_status: int | None
    at: datetime


@strawberry.type(description="Something an operator should look at.")
class Alert:
    id: strawberry.ID
    severity: Severity
    kind: str
    message: str
    provider: str | None
    at: datetime
    acknowledged: bool

    @classmethod
    def build(cls, alert: AlertRecord) -> Alert:
        return cls(
            id=strawberry.ID(str(alert.id)),
            severity=Severity(alert.severity),
            kind=alert.kind,
            message=alert.message,
            provider=alert.provider,
            at=alert.at,
            acknowledged=alert.acknowledged,
        )


def _rotation(event: RotationRecord | StoredRotation) -> RotationEvent:
    """From a live rotation (the pool's event) or a stored one: the same five fields."""
    return RotationEvent(
        pool=event.pool,
        from_provider=event.from_provider,
        to_provider=event.to_provider,
        reason=event.reason,
        at=event.at,
    )


def _registry(info: Info) -> ProviderRegistry:
    registry = cast(RequestContext, info.context).services.registry
    if registry is None:
        raise GatewayError("the provider registry is not running")
    return registry


def _require_admin(info: Info) -> RequestContext:
    """The context, once the caller is known to be an admin (else Forbidden, nothing done)."""
    context = cast(RequestContext, info.context)
    require_admin(context.principal or current_principal(), context.services.settings)
    return context


def _admin(info: Info) -> ProviderRegistry:
    _require_admin(info)
    return _registry(info)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadUserInput(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@strawberry.enum(description="What an API key may do.")
class ApiKeyRole(enum.Enum):
    VIEWER = "viewer"
    ADMIN = "admin"


@strawberry.enum(description="An API key's plan: it sets the key's limits.")
class ApiTier(enum.Enum):
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


@strawberry.type(name="TierLimits", description="What a tier allows; null means unlimited.")
class TierLimitsView:
    tier: ApiTier
    requests_per_minute: int | None
    requests_per_day: int | None = strawberry.field(description="Per UTC day.")
    symbols_per_request: int | None
    history_days: int | None = strawberry.field(
        description="How far back a history query or replay may reach."
    )
    subscriptions: int | None = strawberry.field(description="Open at once, over all sockets.")

    @classmethod
    def build(cls, limits: TierLimitsRecord) -> TierLimitsView:
        return cls(
            tier=ApiTier(limits.tier),
            requests_per_minute=limits.per_minute,
            requests_per_day=limits.per_day,
            symbols_per_request=limits.symbols,
            history_days=limits.history_days,
            subscriptions=limits.subscriptions,
        )


@strawberry.type(description="An API key (never the key itself) and its use of this gateway.")
class ApiKeyUsage:
    id: strawberry.ID
    name: str
    role: ApiKeyRole
    tier: ApiTier
    prefix: str = strawberry.field(description="The key's public start, gw_xxxxxxxx.")
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(description="Updated once a minute at most.")
    revoked_at: datetime | None
    requests_today: int = strawberry.field(description="Requests admitted this UTC day.")
    requests_last_minute: int
    refused_today: int = strawberry.field(
        description="Requests refused as over a rate limit this UTC day (since this start)."
    )
    open_subscriptions: int
    open_connections: int = strawberry.field(description="WebSockets open with this key.")
    limits: TierLimitsView


@strawberry.type
class ProviderQuery:
    @strawberry.field(description="Every provider in providers.toml, optionally of one category.")
    def providers(self, info: Info, category: Category | None = None) -> list[Provider]:
        registry = _registry(info)
        return [
            Provider.build(registry, p)
            for p in registry.providers.providers
            if category is None or category.value in p.categories
        ]

    @strawberry.field(description="One provider by id, or null if there is none.")
    def provider(self, info: Info, id: strawberry.ID) -> Provider | None:
        registry = _registry(info)
        config = registry.provider(str(id))
        return Provider.build(registry, config) if config else None

    @strawberry.field(description="Every pool with its members and their statistics.")
    def pools(self, info: Info) -> list[Pool]:
        registry = _registry(info)
        return [Pool.build(registry, pool) for pool in registry.pools.values()]

    @strawberry.field(description="Pool rotations, newest first.")
    async def rotation_history(
        self, info: Info, pool: str | None = None, limit: int = 50
    ) -> list[RotationEvent]:
        records = await _registry(info).store.rotations(pool, _limit(limit))
        return [_rotation(r) for r in records]

    @strawberry.field(description="Failed upstream requests, newest first.")
    async def failures(
        self,
        info: Info,
        provider: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[Failure]:
        records = await _registry(info).store.failures(provider, _aware(since), _limit(limit))
        return [
            Failure(
                provider=r.provider,
                error_type=r.error_type,
                message=r.message,
                http_status=r.http_status,
                at=r.at,
            )
            for r in records
        ]

    @strawberry.field(description="Alerts, newest first.")
    async def alerts(self, info: Info, unacknowledged_only: bool = False) -> list[Alert]:
        records = await _registry(info).store.alerts(unacknowledged_only=unacknowledged_only)
        return [Alert.build(r) for r in records]

    @strawberry.field(
        description="Every API key with its usage today, oldest first (admin). Keys are made "
        "and revoked with the `gateway keys` command."
    )
    async def api_key_usage(self, info: Info, include_revoked: bool = False) -> list[ApiKeyUsage]:
        access = _require_admin(info).services.access
        if access is None:
            raise GatewayError("access control is not running")
        result = []
        for record in await access.keys.records(include_revoked=include_revoked):
            usage = access.meter.snapshot(f"key:{record.id}")
            limits = access.limits.get(record.tier, access.limits["free"])
            result.append(
                ApiKeyUsage(
                    id=strawberry.ID(str(record.id)),
                    name=record.name,
                    role=ApiKeyRole(record.role),
                    tier=ApiTier(limits.tier),
                    prefix=record.display_prefix,
                    created_at=record.created_at,
                    last_used_at=record.last_used_at,
                    revoked_at=record.revoked_at,
                    requests_today=usage.requests_today,
                    requests_last_minute=usage.requests_last_minute,
                    refused_today=usage.refused_today,
                    open_subscriptions=usage.subscriptions,
                    open_connections=access.connection_count(record.id),
                    limits=TierLimitsView.build(limits),
                )
            )
        return result


@strawberry.type
class ProviderMutation:
    @strawberry.mutation(description="Run a provider's health check now (admin).")
    async def check_provider(self, info: Info, id: strawberry.ID) -> Provider:
        registry = _admin(info)
        await registry.check_provider(str(id))
        return Provider.build(registry, registry.require_provider(str(id)))

    @strawberry.mutation(description="Create an empty pool (admin).")
    async def create_pool(
        self, info: Info, name: str, category: Category, strategy: RotationStrategy
    ) -> Pool:
        registry = _admin(info)
        pool = await registry.create_pool(name, category.value, strategy.value)
        return Pool.build(registry, pool)

    @strawberry.mutation(description="Delete a pool; false if there was none (admin).")
    async def delete_pool(self, info: Info, id: strawberry.ID) -> bool:
        return await _admin(info).delete_pool(str(id))

    @strawberry.mutation(
        description="Add a provider to a pool (admin). The provider must be of the pool's "
        "category and, for an RPC pool, of its chain: anything else is BAD_USER_INPUT and "
        "nothing changes."
    )
    async def add_pool_member(
        self,
        info: Info,
        pool: strawberry.ID,
        provider: strawberry.ID,
        priority: int = 1,
        weight: float = 1.0,
    ) -> Pool:
        registry = _admin(info)
        updated = await registry.add_member(str(pool), str(provider), priority, weight)
        return Pool.build(registry, updated)

    @strawberry.mutation(description="Remove a provider from a pool (admin).")
    async def remove_pool_member(
        self, info: Info, pool: strawberry.ID, provider: strawberry.ID
    ) -> Pool:
        registry = _admin(info)
        return Pool.build(registry, await registry.remove_member(str(pool), str(provider)))

    @strawberry.mutation(description="Make the next member serve the pool (admin).")
    async def rotate_pool(self, info: Info, id: strawberry.ID) -> Pool:
        registry = _admin(info)
        return Pool.build(registry, await registry.rotate(str(id)))

    @strawberry.mutation(description="Mark an alert as seen (admin).")
    async def acknowledge_alert(self, info: Info, id: strawberry.ID) -> Alert:
        registry = _admin(info)
        try:
            alert_id = int(str(id))
        except ValueError:
            raise BadUserInput(f"alert ids are integers, got {id!r}") from None
        alert = await registry.alerts.acknowledge(alert_id)
        if alert is None:
            raise BadUserInput(f"no alert {alert_id}")
        return Alert.build(alert)


@strawberry.type
class ProviderSubscription:
    @strawberry.subscription(description="Every provider state change, as it happens.")
    async def provider_states(self, info: Info) -> AsyncGenerator[ProviderStateChange, None]:
        with _registry(info).bus.provider_states.subscribe() as changes:
            async for change in changes:
                yield ProviderStateChange.build(change)

    @strawberry.subscription(description="Every pool rotation, as it happens.")
    async def rotations(self, info: Info) -> AsyncGenerator[RotationEvent, None]:
        with _registry(info).bus.rotations.subscribe() as events:
            async for event in events:
                yield _rotation(event)

    @strawberry.subscription(description="Every new alert, as it is raised.")
    async def alerts(self, info: Info) -> AsyncGenerator[Alert, None]:
        with _registry(info).bus.alerts.subscribe() as alerts:
            async for alert in alerts:
                yield Alert.build(alert)

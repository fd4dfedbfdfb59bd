"""The provider registry: every upstream as a managed, observable resource.

This is where the pieces of provider resilience meet: the providers file and its secrets, the
shared upstream client (rate limiters, breakers), the status board, the health checker, the
pools, the alert center and the persisted records. GraphQL resolvers and the supervisor talk
to this one object; nothing else needs to know how the pieces are wired.

Hooks from the client, the board and the pools are synchronous and must not block, so they
only put an event on a bounded channel (`_events`); `run()` takes events off it and does the
slow part (persist, publish, alert). If the channel is full the event is dropped and counted
(`events_dropped`) — bookkeeping never stalls a request.

Must never: call a provider that is disabled or whose key is missing, or expose a key.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from gateway.config import CATEGORIES, PoolConfig, ProviderConfig, ProvidersFile, default_pool_id
from gateway.errors import BadUserInput, UpstreamError
from gateway.models import ProviderStateChange, utc_now
from gateway.providers.alerts import AlertCenter
from gateway.providers.health import HealthChecker, ProbeResult
from gateway.providers.status import ProviderStatusBoard
from gateway.providers.upstream_keys import Secrets
from gateway.pubsub import EventBus
from gateway.storage import PoolRecord, ProviderStore
from gateway.upstream.attempts import Attempt
from gateway.upstream.client import UpstreamClient
from gateway.upstream.pool import Pool, PoolMember, RotationEvent
from gateway.vocabulary import ProviderState, RotationStrategy

__all__ = ["ProviderRegistry", "make_probe"]

log = structlog.get_logger(__name__)

USAGE_SAVE_EVERY = 60.0  # seconds between rate-limit usage snapshots
# Attempts and failures are pruned by the one retention task (gateway.nursery.prune_forever,
# Settings.attempt_retention_days), with every other growing table.
EVENT_BUFFER = 1024


def make_probe(
    client: UpstreamClient, secrets: Secrets
) -> Callable[[ProviderConfig], Awaitable[ProbeResult]]:
    """The health check of a provider, as its providers.toml `health` entry describes it."""

    async def probe(provider: ProviderConfig) -> ProbeResult:
        spec = provider.health
        if spec is None:
            return ProbeResult(False, None, error="no health check configured")
        key = secrets.key_for(provider)
        started = trio.current_time()
        try:
            if spec.expect_json_key is None and spec.method == "GET":
                await client.request_text(provider, spec.path, params=dict(spec.params), key=key)
            else:
                body = await client.request_json(
                    provider,
                    spec.path,
                    method=spec.method,
                    params=dict(spec.params),
                    json=spec.json_body,
                    idempotent=True,
                    key=key,
                )
                if spec.expect_json_key is not None and (
                    not isinstance(body, dict) or spec.expect_json_key not in body
                ):
                    return ProbeResult(
                        False,
                        (trio.current_time() - started) * 1000,
                        200,
                        f"response has no {spec.expect_json_key!r}",
                    )
        except UpstreamError as exc:
            return ProbeResult(False, None, exc.status, str(exc))
        return ProbeResult(True, (trio.current_time() - started) * 1000, 200)

    return probe


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # state | rotation | threshold | breaker
    data: Any


async def restore_usage(
    store: ProviderStore,
    client: UpstreamClient,
    lookup: Callable[[str], ProviderConfig | None],
) -> None:
    """Prime the client's rate limiters with the usage last saved in the database, so a
    restart (or the backfill CLI) does not spend a window's budget a second time."""
    for (provider_id, _window), snapshot in (await store.usage()).items():
        provider = lookup(provider_id)
        if provider is not None and isinstance(snapshot, list):
            client.limiter_for(provider).restore(snapshot)


class ProviderRegistry:
    """Providers, pools and their observed behaviour; see the module docstring."""

    def __init__(
        self,
        providers: ProvidersFile,
        secrets: Secrets,
        client: UpstreamClient,
        store: ProviderStore,
        bus: EventBus,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.providers = providers
        self.secrets = secrets
        self.client = client
        self.store = store
        self.bus = bus
        self.alerts = AlertCenter(store, bus)
        self.events_dropped = 0
        self._rng = rng or random.Random()
        self._send, self._receive = trio.open_memory_channel[_Event](EVENT_BUFFER)
        self.board = ProviderStatusBoard(
            providers, is_configured=secrets.is_configured, on_change=self._state_changed
        )
        self.health = HealthChecker(
            providers,
            make_probe(client, secrets),
            is_configured=secrets.is_configured,
            rng=self._rng,
        )
        self.pools: dict[str, Pool] = {}
        # Providers pools must not use now, with why (an RPC node lagging behind its chain).
        self.benched: dict[str, str] = {}
        client.on_attempt = self._attempted
        client.on_rate_threshold = lambda pid, window, used, limit: self._emit(
            "threshold", (pid, window, used, limit)
        )
        client.on_breaker_change = self._breaker_changed

    # -- lookups ------------------------------------------------------------------------------

    def provider(self, provider_id: str) -> ProviderConfig | None:
        return self.providers.get(provider_id)

    def require_provider(self, provider_id: str) -> ProviderConfig:
        provider = self.providers.get(provider_id)
        if provider is None:
            raise BadUserInput(f"unknown provider {provider_id!r}")
        return provider

    def require_pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise BadUserInput(f"unknown pool {pool_id!r}")
        return pool

    def circuit(self, provider_id: str) -> str:
        breaker = self.client.breaker(provider_id)
        return breaker.state.value if breaker is not None else "CLOSED"

    def state(self, provider_id: str) -> str:
        return self.board.state(provider_id)

    def pool_for(self, category: str) -> Pool | None:
        """The pool that serves a category: the default one (its id is the category in lower
        case with '-') if it exists, else the first pool of that category."""
        pool = self.pools.get(default_pool_id(category))
        if pool is not None:
            return pool
        return next((p for p in self.pools.values() if p.category == category), None)

    def available_providers(self, category: str) -> list[ProviderConfig]:
        """The providers of a category's pool that a call could use now, in pool order."""
        pool = self.pool_for(category)
        return [member.provider for member in pool.available()] if pool is not None else []

    # -- pools --------------------------------------------------------------------------------

    def _make_pool(self, config: PoolConfig | PoolRecord) -> Pool:
        pool = Pool(
            config.id,
            config.name,
            config.category,
            config.strategy,
            guards=self.client,
            is_configured=self.secrets.is_configured,
            on_rotation=lambda event: self._emit("rotation", event),
            rng=self._rng,
            excluded=self.bench_reason,
        )
        if isinstance(config, PoolRecord):
            chain = self._declared_chain(config.id)
            for provider_id, priority, weight in config.members:
                provider = self.providers.get(provider_id)
                if provider is None:
                    continue
                if pool.category == "RPC":
                    # A member of another chain (saved before that was refused) would make the
                    # pool's chain ambiguous: it is dropped, and the rest of the pool kept.
                    chain = chain or provider.chain
                    if provider.chain != chain:
                        log.warning(
                            "pool.member_dropped",
                            pool=config.id,
                            provider=provider_id,
                            chain=provider.chain,
                            pool_chain=chain,
                        )
                        continue
                pool.add_member(PoolMember(provider, priority=priority, weight=weight))
            pool.current = config.current
        else:
            for provider_id in config.members:
                provider = self.providers.get(provider_id)
                if provider is not None:
                    pool.add_member(provider)
        return pool

    async def load_pools(self) -> None:
        """Pools from providers.toml, then those created or changed at runtime (persisted)."""
        for config in self.providers.all_pools():
            self.pools[config.id] = self._make_pool(config)
        for record in await self.store.pools():
            self.pools[record.id] = self._make_pool(record)

    def _record(self, pool: Pool) -> PoolRecord:
        return PoolRecord(
            pool.id,
            pool.name,
            pool.category,
            pool.strategy.value,
            tuple((m.id, int(m.priority or 0), float(m.weight or 0.0)) for m in pool.members),
            pool.current,
        )

    async def create_pool(self, name: str, category: str, strategy: str) -> Pool:
        if category not in CATEGORIES:
            raise BadUserInput(f"unknown category {category!r}")
        if not name.strip():
            raise BadUserInput("a pool needs a name")
        base = "-".join(name.lower().split())
        pool_id, n = base, 1
        while pool_id in self.pools:
            n += 1
            pool_id = f"{base}-{n}"
        pool = Pool(
            pool_id,
            name.strip(),
            category,
            RotationStrategy(strategy),
            guards=self.client,
            is_configured=self.secrets.is_configured,
            on_rotation=lambda event: self._emit("rotation", event),
            rng=self._rng,
            excluded=self.bench_reason,
        )
        await self.store.save_pool(self._record(pool))
        self.pools[pool_id] = pool
        return pool

    async def delete_pool(self, pool_id: str) -> bool:
        existed = self.pools.pop(pool_id, None) is not None
        deleted = await self.store.delete_pool(pool_id)
        return existed or deleted

    async def add_member(
        self, pool_id: str, provider_id: str, priority: int, weight: float
    ) -> Pool:
        pool = self.require_pool(pool_id)
        provider = self.require_provider(provider_id)
        if pool.category not in provider.categories:
            raise BadUserInput(
                f"provider {provider_id!r} is not in category {pool.category} "
                f"(it is {', '.join(provider.categories)})"
            )
        chain = self.pool_chain(pool)
        if pool.category == "RPC" and chain is not None and provider.chain != chain:
            # Nodes of another chain answer other blocks: the pool's chain would become
            # ambiguous and drop out of chainHeads. Refused, with nothing changed.
            raise BadUserInput(
                f"provider {provider_id!r} serves chain {provider.chain}, but pool {pool_id!r}"
                f" serves {chain}: an RPC pool only takes nodes of its own chain"
                " (nothing was changed)"
            )
        if weight <= 0:
            raise BadUserInput("weight must be positive")
        pool.add_member(PoolMember(provider, priority=priority, weight=weight))
        await self.store.save_pool(self._record(pool))
        return pool

    def _declared_chain(self, pool_id: str) -> str | None:
        """The chain of the providers.toml (or default) pool with this id, if it is one."""
        for config in self.providers.all_pools():
            if config.id == pool_id:
                chains = {
                    p.chain for m in config.members if (p := self.providers.get(m)) is not None
                }
                return chains.pop() if len(chains) == 1 else None
        return None

    def pool_chain(self, pool: Pool) -> str | None:
        """The chain an RPC pool serves: its members' (they share one), else the chain of the
        providers.toml pool of that id; None for an empty runtime pool (its first member
        decides) and for every pool of another category."""
        if pool.category != "RPC":
            return None
        chains = {m.provider.chain for m in pool.members if m.provider.chain is not None}
        if len(chains) == 1:
            return chains.pop()
        return self._declared_chain(pool.id)

    def rpc_pools(self) -> dict[str, Pool]:
        """chain -> its RPC pool (the default `rpc-<chain>` one first, else the first found)."""
        found: dict[str, Pool] = {}
        for pool in sorted(
            self.pools.values(), key=lambda p: p.id != default_pool_id("RPC", self.pool_chain(p))
        ):
            chain = self.pool_chain(pool)
            if chain is not None and pool.members:
                found.setdefault(chain, pool)
        return found

    # -- benched providers --------------------------------------------------------------------

    def bench_reason(self, provider: ProviderConfig) -> str | None:
        """Why pools must not use this provider now (None: they may)."""
        return self.benched.get(provider.id)

    def bench(self, provider_id: str, reason: str, *, state: str = ProviderState.DEGRADED) -> None:
        """Keep every pool from using a provider (skipped like a disabled one) and show it as
        `state` with `reason` on the status board, until `unbench`. For an RPC node lagging
        behind its chain's head (gateway/chains/heads.py)."""
        self.benched[provider_id] = reason
        self.board.report(provider_id, state, reason, at=utc_now())

    def unbench(self, provider_id: str, reason: str) -> None:
        """Let pools use the provider again; its state is derived from its requests again."""
        if self.benched.pop(provider_id, None) is not None:
            self.board.clear_report(provider_id, reason)

    async def remove_member(self, pool_id: str, provider_id: str) -> Pool:
        pool = self.require_pool(pool_id)
        if pool.remove_member(provider_id) is None:
            raise BadUserInput(f"provider {provider_id!r} is not in pool {pool_id!r}")
        await self.store.save_pool(self._record(pool))
        return pool

    async def rotate(self, pool_id: str) -> Pool:
        pool = self.require_pool(pool_id)
        if not pool.members:
            raise BadUserInput(f"pool {pool_id!r} has no members to rotate to")
        pool.rotate("manual")
        return pool

    async def check_provider(self, provider_id: str) -> ProbeResult:
        return await self.health.check_now(self.require_provider(provider_id))

    # -- events -------------------------------------------------------------------------------

    def _emit(self, kind: str, data: Any) -> None:
        try:
            self._send.send_nowait(_Event(kind, data))
        except trio.WouldBlock:
            self.events_dropped += 1

    def _attempted(self, attempt: Attempt) -> None:
        self.board.record(
            attempt.provider,
            ok=attempt.ok,
            at=attempt.at,
            latency_ms=attempt.latency_ms,
            error=attempt.error_type,
        )
        self.store.record_attempt(
            provider=attempt.provider,
            endpoint=attempt.endpoint,
            status=attempt.status,
            latency_ms=attempt.latency_ms,
            error_type=attempt.error_type,
            message=attempt.message,
            at=attempt.at,
        )

    def _breaker_changed(self, provider_id: str, old: Any, new: Any) -> None:
        self.board.set_circuit_open(provider_id, new.value == "OPEN")
        self._emit("breaker", (provider_id, old, new))

    def _state_changed(self, provider_id: str, old: str, new: str, reason: str) -> None:
        change = ProviderStateChange(provider_id, old, new, reason, utc_now())
        self.bus.provider_states.publish(change)
        self._emit("state", change)

    async def _handle(self, event: _Event) -> None:
        if event.kind == "state":
            change: ProviderStateChange = event.data
            record = self.board.records.get(change.provider)
            await self.store.save_state(
                change.provider,
                change.new_state,
                record.last_checked_at if record else None,
                record.last_error if record else None,
            )
            if change.new_state == ProviderState.OFFLINE:
                await self.alerts.raise_alert(
                    "HIGH",
                    "provider_offline",
                    f"{change.provider} is offline: {change.reason}",
                    change.provider,
                )
            elif change.old_state == ProviderState.OFFLINE and change.new_state in {
                ProviderState.ONLINE,
                ProviderState.DEGRADED,
            }:
                await self.alerts.raise_alert(
                    "LOW", "provider_recovered", f"{change.provider} answers again", change.provider
                )
        elif event.kind == "rotation":
            rotation: RotationEvent = event.data
            await self.store.record_rotation(
                rotation.pool,
                rotation.from_provider,
                rotation.to_provider,
                rotation.reason,
                rotation.at,
            )
            self.bus.rotations.publish(rotation)
        elif event.kind == "threshold":
            provider_id, window, used, limit = event.data
            await self.alerts.raise_alert(
                "MEDIUM",
                "rate_limit_80",
                f"{provider_id} has used {used} of {limit} requests in its {window} window",
                provider_id,
            )
        elif event.kind == "breaker":
            provider_id, _old, new = event.data
            if new.value == "OPEN":
                await self.alerts.raise_alert(
                    "MEDIUM",
                    "circuit_open",
                    f"{provider_id}: circuit opened after repeated failures",
                    provider_id,
                )

    async def _process_events(self) -> None:
        async for event in self._receive:
            try:
                await self._handle(event)
            except Exception as exc:  # bookkeeping must never take the registry down
                log.error("registry.event_failed", kind=event.kind, error=repr(exc), exc_info=exc)

    async def _save_usage_periodically(self) -> None:
        while True:
            await trio.sleep(USAGE_SAVE_EVERY)
            await self.save_usage()

    async def save_usage(self) -> None:
        for provider in self.providers.providers:
            limiter = self.client.limiter(provider.id)
            if limiter is not None:
                await self.store.save_usage(provider.id, "all", limiter.snapshot())

    async def restore_usage(self) -> None:
        await restore_usage(self.store, self.client, self.providers.get)

    async def run(
        self,
        *,
        checks: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load pools and usage, then process events, check health and save usage, forever.

        `checks=False`: no health checks here (several replicas: only the collector leader runs
        `health.run`, gateway/nursery.py)."""
        await self.load_pools()
        await self.restore_usage()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._process_events)
                nursery.start_soon(self._save_usage_periodically)
                if checks:
                    await nursery.start(self.health.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.save_usage()

"""Provider pools: several providers that can answer the same question, with failover.

A `Pool` holds members (providers plus running statistics) and a `RotationStrategy` that orders
them for each call. `await pool.call(fn)` tries members in that order, calling `fn(provider)`, and
fails over to the next member *within the same call* when one raises an `UpstreamError`::

    ROUND_ROBIN       each call starts one member further along (config order)
    PRIORITY          lowest `priority` number first; ties in config order
    WEIGHTED_RANDOM   a weighted shuffle by `weight` (seeded `random.Random` injectable)
    LEAST_USED        fewest `uses` first; ties in config order
    FASTEST_RESPONSE  lowest latency EWMA first; members never measured come first, so that
                      every member gets measured

Members are skipped, not called, when their provider is disabled, its API key is not configured
(`is_configured(provider)`, injected), it is benched (`excluded(provider)` gives a reason, e.g.
an RPC node lagging behind its chain's head), its circuit is open (or its half-open probe is
taken), or it told us to back off (a Retry-After still running). A member whose rate limiter has no
budget right now is skipped too, without waiting; only when no other member could be used (all
lacked budget, or the others failed) does the pool wait for budget on the first such member.

When the provider that serves a call differs from the pool's `current` one, a `RotationEvent`
goes to `on_rotation` with why the previous one was left: `failure`, `rate_limit`,
`circuit_open`, `manual` (`rotate()`, or the provider was disabled/unconfigured/removed) or
`scheduled` (the strategy simply chose another, e.g. round robin).

When every member fails or is skipped, `PoolExhausted` lists each provider's last error.

Rate limiting and circuit breaking live in the `UpstreamClient` that `fn` normally calls; the pool
only *peeks* at them (through `guards`) to choose, so a request is counted once, by the client.
This module never sleeps itself and never retries a member within a call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Generic, Literal, Protocol, TypeVar

import trio

from gateway.config import ProviderConfig
from gateway.errors import (
    CircuitOpenError,
    PoolExhausted,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnconfigured,
)
from gateway.models import utc_now
from gateway.upstream.breaker import CircuitBreaker
from gateway.upstream.ratelimit import RateLimiter
from gateway.vocabulary import RotationStrategy

__all__ = [
    "LATENCY_EWMA_ALPHA",
    "Guards",
    "Pool",
    "PoolMember",
    "RotationEvent",
    "RotationReason",
]

T = TypeVar("T")

# Weight of the newest latency sample in a member's moving average.
LATENCY_EWMA_ALPHA: Final = 0.3
# A Retry-After longer than this is remembered as this long (a bogus far-future date must not
# bench a provider forever).
MAX_BACKOFF_REMEMBERED: Final = 3600.0

RotationReason = Literal["failure", "rate_limit", "circuit_open", "manual", "scheduled"]


class Guards(Protocol):
    """Where the pool finds each provider's limiter and breaker (`UpstreamClient` is one)."""

    def limiter_for(self, provider: ProviderConfig) -> RateLimiter: ...

    def breaker_for(self, provider: ProviderConfig) -> CircuitBreaker: ...


@dataclass
class PoolMember:
    """A provider in a pool, with what the pool has seen of it.

    `priority` and `weight` default to the provider's own. `uses` counts calls of `fn` for this
    member; `latency_ms_ewma` is the moving average of successful calls' durations.
    """

    provider: ProviderConfig
    priority: int | None = None
    weight: float | None = None
    uses: int = 0
    successes: int = 0
    failures: int = 0
    latency_ms_ewma: float | None = None
    last_error: UpstreamError | None = None
    backoff_until: float | None = None  # trio clock: honour the provider's Retry-After

    def __post_init__(self) -> None:
        if self.priority is None:
            self.priority = self.provider.priority
        if self.weight is None:
            self.weight = self.provider.weight

    @property
    def id(self) -> str:
        return self.provider.id


@dataclass(frozen=True, slots=True)
class RotationEvent:
    """The provider serving `pool` changed from `from_provider` to `to_provider`."""

    pool: str
    from_provider: str | None
    to_provider: str
    reason: RotationReason
    at: datetime = field(default_factory=utc_now)


@dataclass
class _Skip:
    """Why a member was passed over in a call: a message, and the rotation reason it implies."""

    message: str
    reason: RotationReason
    status: int | None = None


class Pool:
    """A set of interchangeable providers for one `category`; see the module docstring.

    `guards` gives access to each provider's limiter and breaker (normally the shared
    `UpstreamClient`; None: no such checks). `is_configured(provider)` says whether its API key
    is available (default: always); `excluded(provider)` why it must not be used now, or None
    (default: never excluded). `rng` drives WEIGHTED_RANDOM. `on_rotation` is called
    synchronously; it must be quick and must not raise.
    """

    def __init__(
        self,
        id: str,
        name: str,
        category: str,
        strategy: RotationStrategy | str,
        members: Iterable[PoolMember | ProviderConfig] = (),
        *,
        guards: Guards | None = None,
        is_configured: Callable[[ProviderConfig], bool] | None = None,
        on_rotation: Callable[[RotationEvent], None] | None = None,
        rng: random.Random | None = None,
        excluded: Callable[[ProviderConfig], str | None] | None = None,
    ) -> None:
        self.id = id
        self.name = name
        self.category = category
        self.strategy = RotationStrategy(strategy)
        self.guards = guards
        self.is_configured = is_configured or (lambda provider: True)
        self.excluded = excluded or (lambda provider: None)
        self.on_rotation = on_rotation
        self.rng = rng or random.Random()
        self.members: list[PoolMember] = []
        self.current: str | None = None  # the provider that served last (or was rotated to)
        self.rotations = 0
        self._cursor = 0  # ROUND_ROBIN: index the next call starts at
        self._preferred: str | None = None  # set by rotate(): tried first on the next call
        for member in members:
            self.add_member(member)

    # -- membership -------------------------------------------------------------------------

    def add_member(self, member: PoolMember | ProviderConfig) -> PoolMember:
        """Append a member (config order = insertion order). Replaces one with the same id."""
        if isinstance(member, ProviderConfig):
            member = PoolMember(member)
        for index, existing in enumerate(self.members):
            if existing.id == member.id:
                self.members[index] = member
                return member
        self.members.append(member)
        return member

    def remove_member(self, provider_id: str) -> PoolMember | None:
        """Remove and return a member (None if absent). A call in progress is not affected."""
        for index, member in enumerate(self.members):
            if member.id == provider_id:
                del self.members[index]
                if self._preferred == provider_id:
                    self._preferred = None
                return member
        return None

    def member(self, provider_id: str) -> PoolMember | None:
        return next((m for m in self.members if m.id == provider_id), None)

    # -- ordering ---------------------------------------------------------------------------

    def order(self) -> list[PoolMember]:
        """Members in the order the strategy would try them now (eligibility not applied).

        ROUND_ROBIN and WEIGHTED_RANDOM change state/draw randomness: each call of `order()`
        is one pick. A member chosen with `rotate()` comes first, once.
        """
        members = list(self.members)
        if not members:
            return []
        strategy = self.strategy
        if strategy is RotationStrategy.ROUND_ROBIN:
            start = self._cursor % len(members)
            self._cursor = start + 1
            ordered = members[start:] + members[:start]
        elif strategy is RotationStrategy.PRIORITY:
            ordered = sorted(members, key=lambda m: m.priority or 0)  # stable: config order
        elif strategy is RotationStrategy.WEIGHTED_RANDOM:
            ordered = self._weighted_shuffle(members)
        elif strategy is RotationStrategy.LEAST_USED:
            ordered = sorted(members, key=lambda m: m.uses)
        else:  # FASTEST_RESPONSE: unmeasured first (config order), then fastest
            ordered = sorted(
                members,
                key=lambda m: (
                    m.latency_ms_ewma is not None,
                    m.latency_ms_ewma if m.latency_ms_ewma is not None else 0.0,
                ),
            )
        preferred, self._preferred = self._preferred, None
        if preferred is not None:
            ordered.sort(key=lambda m: m.id != preferred)
        return ordered

    def available(self) -> list[PoolMember]:
        """Members in strategy order that a call could use now (enabled, configured, breaker
        allowing, not backing off), for callers that walk the pool themselves because a
        provider's answer may be partial rather than failed (candle gap filling)."""
        return [member for member in self.order() if self._ineligible(member) is None]

    def _weighted_shuffle(self, members: Sequence[PoolMember]) -> list[PoolMember]:
        """Weighted sampling without replacement (Efraimidis-Spirakis): key u**(1/w)."""
        keyed = []
        for index, member in enumerate(members):
            weight = member.weight or 0.0
            u = self.rng.random()
            key = u ** (1.0 / weight) if weight > 0 and math.isfinite(weight) else -1.0
            keyed.append((key, -index, member))
        keyed.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [member for _, _, member in keyed]

    def rotate(self, reason: RotationReason = "manual") -> str | None:
        """Move `current` to the next member (config order) and make it the next call's first
        choice (once: later calls follow the strategy again); emits a RotationEvent unless the
        pool has a single member. Returns the new current provider id (None if empty)."""
        if not self.members:
            return None
        ids = [m.id for m in self.members]
        if self.current is None:  # nothing served yet: the first member counts as current
            self.current = ids[0]
        index = (ids.index(self.current) + 1) % len(ids) if self.current in ids else 0
        target = ids[index]
        self._preferred = target
        self._cursor = index
        self._switch(target, reason)
        return target

    # -- calling ----------------------------------------------------------------------------

    async def call(self, fn: Callable[[ProviderConfig], Awaitable[T]]) -> T:
        """`fn(provider)` on the first eligible member in strategy order, failing over to the
        next on `UpstreamError`; raises `PoolExhausted` when none succeeds.

        Exceptions that are not `UpstreamError` (bugs, bad user input) propagate at once.
        """
        outcomes: dict[str, _Skip] = {}
        waiting_for_budget: list[PoolMember] = []
        ordered = self.order()
        for member in ordered:
            skip = self._ineligible(member)
            if skip is not None:
                outcomes[member.id] = skip
                continue
            if not self._has_budget(member):
                outcomes[member.id] = _Skip("no rate-limit budget left", "rate_limit")
                waiting_for_budget.append(member)
                continue
            served = await self._try(member, fn, outcomes)
            if served is not None:
                return served.value
        # Nobody with budget could answer: wait for budget (in the client) on the first member
        # that lacked it, then the next.
        for member in waiting_for_budget:
            if member not in self.members or self._ineligible(member) is not None:
                continue
            served = await self._try(member, fn, outcomes)
            if served is not None:
                return served.value
        raise PoolExhausted(
            self.id,
            [
                (m.id, outcomes[m.id].message, outcomes[m.id].status)
                for m in ordered
                if m.id in outcomes
            ],
        )

    async def _try(
        self,
        member: PoolMember,
        fn: Callable[[ProviderConfig], Awaitable[T]],
        outcomes: dict[str, _Skip],
    ) -> _Served[T] | None:
        """Call `fn` on one member: its result, or None (recorded in `outcomes`) if it failed."""
        member.uses += 1
        started = trio.current_time()
        try:
            result = await fn(member.provider)
        except UpstreamError as exc:
            member.failures += 1
            member.last_error = exc
            if isinstance(exc, UpstreamRateLimited) and exc.retry_after:
                member.backoff_until = trio.current_time() + min(
                    exc.retry_after, MAX_BACKOFF_REMEMBERED
                )
            outcomes[member.id] = _Skip(_message(exc), _reason_for(exc), exc.status)
            return None
        elapsed_ms = (trio.current_time() - started) * 1000.0
        member.successes += 1
        member.backoff_until = None
        previous = member.latency_ms_ewma
        member.latency_ms_ewma = (
            elapsed_ms
            if previous is None
            else (1 - LATENCY_EWMA_ALPHA) * previous + LATENCY_EWMA_ALPHA * elapsed_ms
        )
        if self.current != member.id:
            self._switch(member.id, self._why_left(outcomes))
        return _Served(result)

    def _why_left(self, outcomes: dict[str, _Skip]) -> RotationReason:
        """Why this call is not served by `current`: what happened to it in this call, or the
        strategy's choice when it was not reached, or `manual` when it left the pool."""
        if self.current is None:
            return "scheduled"
        skipped = outcomes.get(self.current)
        if skipped is not None:
            return skipped.reason
        if self.member(self.current) is None:
            return "manual"
        return "scheduled"

    def _ineligible(self, member: PoolMember) -> _Skip | None:
        provider = member.provider
        if not provider.enabled:
            return _Skip("provider is disabled", "manual")
        if not self.is_configured(provider):
            return _Skip("API key not configured", "manual")
        benched = self.excluded(provider)
        if benched is not None:
            return _Skip(benched, "failure")
        if self.guards is not None:
            breaker = self.guards.breaker_for(provider)
            if not breaker.would_allow():
                error = CircuitOpenError(provider=provider.id, retry_in=breaker.retry_in())
                return _Skip(_message(error), "circuit_open")
        if member.backoff_until is not None:
            left = member.backoff_until - trio.current_time()
            if left > 0:
                return _Skip(f"rate limited by the provider; retry in {left:.3g}s", "rate_limit")
        return None

    def _has_budget(self, member: PoolMember) -> bool:
        if self.guards is None:
            return True
        return self.guards.limiter_for(member.provider).available()

    def _switch(self, to_provider: str, reason: RotationReason) -> None:
        previous, self.current = self.current, to_provider
        if previous is None or previous == to_provider:
            return
        self.rotations += 1
        if self.on_rotation is not None:
            self.on_rotation(RotationEvent(self.id, previous, to_provider, reason))


@dataclass(frozen=True, slots=True)
class _Served(Generic[T]):
    value: T


def _reason_for(error: UpstreamError) -> RotationReason:
    if isinstance(error, UpstreamUnconfigured):
        return "manual"  # disabled, or its key is missing: a configuration matter
    if isinstance(error, CircuitOpenError):
        return "circuit_open"
    if isinstance(error, UpstreamRateLimited):
        return "rate_limit"
    return "failure"


def _message(error: UpstreamError) -> str:
    """The error's message without the "provider: " prefix UpstreamError adds."""
    text = str(error)
    prefix = f"{error.provider}: "
    return text[len(prefix) :] if text.startswith(prefix) else text

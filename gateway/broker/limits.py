"""One set of upstream rate limits and circuit breakers for every replica, kept in Redis.

Used only with a broker (several replicas). The leader's collectors and every replica's
on-demand calls (gap fills, trending, pools) then spend one shared budget per provider, and
a provider one replica found failing is left alone by the others for the cool-down too.

`SharedRateLimiter` is a `RateLimiter` (same interface): `acquire()` first takes the local
grant (FIFO among this replica's callers, as before), then reserves the request in every
window in Redis with one Lua script: a sorted set of grant times per window (Redis's own
clock, `TIME`), trimmed to the window, so "never exceeded" holds across replicas. A full window
answers how long until its oldest grant leaves, and the caller sleeps that long and asks again.
`try_acquire`, `available` and `usage` stay local (they must not wait for a network): pool
eligibility may then try a provider whose shared budget is spent, and `acquire` waits for it.

`SharedCircuitBreaker` is a `CircuitBreaker`: when its circuit opens here, the opening is
written to Redis (`<prefix>:breaker:<provider>`, expiring with the cool-down); `SharedBreakers.run`
reads every provider's key each second, and a breaker whose provider is open elsewhere refuses
requests (reports OPEN) until that expires, or until a probe anywhere succeeds (the key is
deleted).

Redis down: both fall back to the local limiter and breaker alone, with one warning per
outage (`limits.fail_open`): an upstream call is never blocked by the broker being away.

Must never: wait for Redis without a time limit, or refuse a request because Redis failed.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

import structlog
import trio

from gateway.broker.client import BrokerClient
from gateway.config import BreakerSpec, RateLimitWindow
from gateway.errors import BrokerUnavailable
from gateway.upstream.breaker import BreakerState, ChangeCallback, CircuitBreaker
from gateway.upstream.ratelimit import RateLimiter, ThresholdCallback

__all__ = ["SharedBreakers", "SharedCircuitBreaker", "SharedRateLimiter"]

log = structlog.get_logger(__name__)

RESERVE_SCRIPT: Final = """
-- KEYS: one sorted set per window. ARGV: limit and span (ms) per window, then a unique id.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit, span = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + span - now)
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[#ARGV])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i]))
end
return 0
"""
# The longest single sleep between two reservations (a month's window can say "days").
MAX_WAIT: Final = 5.0
# How often a replica reads the breakers the others opened.
BREAKER_POLL: Final = 1.0


class _FailOpen:
    """One warning per outage when a shared limit falls back to the local one."""

    def __init__(self) -> None:
        self.warned = False

    def note(self, what: str, provider: str, reason: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("limits.fail_open", shared=what, provider=provider, reason=reason)

    def clear(self) -> None:
        self.warned = False


class SharedRateLimiter(RateLimiter):
    """A provider's rate limits, counted across every replica (see the module docstring)."""

    def __init__(
        self,
        provider_id: str,
        windows: Sequence[RateLimitWindow],
        *,
        client: BrokerClient,
        on_threshold: ThresholdCallback | None = None,
    ) -> None:
        super().__init__(provider_id, windows, on_threshold=on_threshold)
        self.client = client
        self._script = client.redis.register_script(RESERVE_SCRIPT)
        self._keys = [client.key("ratelimit", provider_id, w.name) for w in windows]
        self._limits: list[str | int] = []
        for window in windows:
            self._limits += [window.limit, max(1, int(window.seconds * 1000))]
        self._ids = (f"{uuid.uuid4().hex}:{n}" for n in itertools.count())
        self._fail_open = _FailOpen()
        self.shared_waits = 0  # reservations that had to wait for another replica's grants

    async def acquire(self) -> float:
        granted = await super().acquire()
        if self._keys:
            await self._reserve()
        return granted

    async def _reserve(self) -> None:
        member = next(self._ids)
        while True:
            try:
                wait_ms: Any = await self.client.call(
                    partial(self._script, keys=self._keys, args=[*self._limits, member])
                )
            except BrokerUnavailable as exc:
                self._fail_open.note("rate limit", self.provider_id, exc.reason)
                return
            self._fail_open.clear()
            if not wait_ms:
                return
            self.shared_waits += 1
            await trio.sleep(min(int(wait_ms) / 1000, MAX_WAIT))


class SharedBreakers:
    """What every replica's breakers know about the others: provider -> open until (Unix s).
    `run` (a supervised task) writes this replica's openings and reads everyone's."""

    def __init__(self, client: BrokerClient) -> None:
        self.client = client
        self.open_until: dict[str, float] = {}
        self._providers: set[str] = set()
        self._send: list[tuple[str, float | None]] = []  # (provider, until) or None: closed
        self._wake = trio.Event()
        self._fail_open = _FailOpen()

    def track(self, provider_id: str) -> None:
        self._providers.add(provider_id)

    def open_for(self, provider_id: str) -> float:
        """Seconds until the provider's circuit, opened by any replica, may be probed (0: not
        open anywhere else, or Redis unknown)."""
        return max(0.0, self.open_until.get(provider_id, 0.0) - time.time())

    def note(self, provider_id: str, until: float | None) -> None:
        """This replica opened (until: when its cool-down ends) or closed the circuit."""
        if len(self._send) < 1000:  # bounded: a flood of transitions keeps the first
            self._send.append((provider_id, until))
        if until is None:
            self.open_until.pop(provider_id, None)
        self._wake.set()

    def _key(self, provider_id: str) -> str:
        return self.client.key("breaker", provider_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(BREAKER_POLL):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self._sync()
            except BrokerUnavailable as exc:
                self._fail_open.note("breakers", "*", exc.reason)
                self.open_until.clear()  # fail open: the local breakers decide alone
                continue
            self._fail_open.clear()

    async def _sync(self) -> None:
        redis = self.client.redis
        sending, self._send = self._send, []
        for provider_id, until in sending:
            key = self._key(provider_id)
            if until is None:
                await self.client.call(partial(redis.delete, [key]))
            else:
                ms = max(1, int((until - time.time()) * 1000))
                await self.client.call(partial(redis.set, key, str(until), px=ms))
        providers = sorted(self._providers)
        if not providers:
            return
        values = await self.client.call(partial(redis.mget, [self._key(p) for p in providers]))
        self.open_until = {p: float(v) for p, v in zip(providers, values, strict=True) if v}


class SharedCircuitBreaker(CircuitBreaker):
    """A provider's breaker that also honours an opening by another replica."""

    def __init__(
        self,
        spec: BreakerSpec | None,
        *,
        shared: SharedBreakers,
        provider_id: str,
        on_change: ChangeCallback | None = None,
    ) -> None:
        def changed(old: BreakerState, new: BreakerState) -> None:
            if new is BreakerState.OPEN:
                shared.note(provider_id, time.time() + self.spec.cooldown_seconds)
            elif new is BreakerState.CLOSED:
                shared.note(provider_id, None)
            if on_change is not None:
                on_change(old, new)

        super().__init__(spec, provider_id=provider_id, on_change=changed)
        self.shared = shared
        shared.track(provider_id)

    def _open_elsewhere(self) -> bool:
        return super().state is BreakerState.CLOSED and self.shared.open_for(self.provider_id) > 0

    @property
    def state(self) -> BreakerState:
        return BreakerState.OPEN if self._open_elsewhere() else super().state

    def retry_in(self) -> float:
        return max(super().retry_in(), self.shared.open_for(self.provider_id))

    def would_allow(self) -> bool:
        return not self._open_elsewhere() and super().would_allow()

    def allow(self) -> bool:
        return not self._open_elsewhere() and super().allow()

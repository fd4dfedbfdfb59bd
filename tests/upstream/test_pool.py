"""Pool: strategy ordering, in-call failover, skipping, rotation events, PoolExhausted.

No I/O here: `fn` is a fake provider call, and time runs under `autojump_clock` where it matters.
Failover against real sockets (the simulator) is in test_upstream_resilience.py.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
import trio

from gateway.config import BreakerSpec, ProviderConfig, RateLimitWindow
from gateway.errors import (
    CircuitOpenError,
    PoolExhausted,
    UnknownSymbol,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnconfigured,
)
from gateway.upstream import pool as pool_module
from gateway.upstream.breaker import CircuitBreaker
from gateway.upstream.pool import Pool, PoolMember, RotationEvent, RotationStrategy
from gateway.upstream.ratelimit import RateLimiter


def provider(pid: str, **overrides: Any) -> ProviderConfig:
    config = ProviderConfig(
        id=pid, name=pid.upper(), categories=("MARKET_DATA",), base_url=f"https://{pid}.test"
    )
    return replace(config, **overrides)


A, B, C, D = (provider(p) for p in "abcd")


class FakeGuards:
    """Limiters and breakers per provider, as UpstreamClient keeps them."""

    def __init__(self) -> None:
        self.limiters: dict[str, RateLimiter] = {}
        self.breakers: dict[str, CircuitBreaker] = {}

    def limiter_for(self, provider: ProviderConfig) -> RateLimiter:
        return self.limiters.setdefault(provider.id, RateLimiter(provider.id, provider.rate_limits))

    def breaker_for(self, provider: ProviderConfig) -> CircuitBreaker:
        return self.breakers.setdefault(provider.id, CircuitBreaker(provider.breaker))


class Upstreams:
    """A fake `fn`: each provider answers its id, or raises what it was told to."""

    def __init__(self, guards: FakeGuards | None = None) -> None:
        self.calls: list[str] = []
        self.errors: dict[str, UpstreamError] = {}
        self.latency: dict[str, float] = {}
        self.guards = guards

    async def __call__(self, provider: ProviderConfig) -> str:
        self.calls.append(provider.id)
        if self.guards is not None:  # what the client does before each attempt
            await self.guards.limiter_for(provider).acquire()
        await trio.sleep(self.latency.get(provider.id, 0.0))
        error = self.errors.get(provider.id)
        if error is not None:
            raise error
        return provider.id


def fail(pid: str, status: int | None = 500) -> UpstreamError:
    return UpstreamError(f"HTTP {status}", provider=pid, status=status)


def make_pool(
    strategy: RotationStrategy, *members: ProviderConfig | PoolMember, **kwargs: Any
) -> tuple[Pool, list[RotationEvent]]:
    events: list[RotationEvent] = []
    pool = Pool(
        "prices", "Prices", "MARKET_DATA", strategy, members, on_rotation=events.append, **kwargs
    )
    return pool, events


def test_all_is_explicit() -> None:
    for name in pool_module.__all__:
        assert hasattr(pool_module, name), name


def test_member_defaults_come_from_the_provider() -> None:
    member = PoolMember(provider("x", priority=3, weight=2.5))
    assert (member.priority, member.weight, member.uses, member.latency_ms_ewma) == (
        3,
        2.5,
        0,
        None,
    )
    assert PoolMember(provider("x", priority=3), priority=1).priority == 1


# -- strategies --------------------------------------------------------------------------------


async def test_priority_lowest_number_first_ties_in_config_order() -> None:
    pool, _ = make_pool(
        RotationStrategy.PRIORITY,
        provider("a", priority=3),
        provider("b", priority=1),
        provider("c", priority=2),
        provider("d", priority=1),
    )
    assert [m.id for m in pool.order()] == ["b", "d", "c", "a"]
    upstreams = Upstreams()
    assert await pool.call(upstreams) == "b"
    upstreams.errors["b"] = fail("b")
    assert await pool.call(upstreams) == "d"
    assert upstreams.calls == ["b", "b", "d"]


async def test_round_robin_takes_turns_and_reports_scheduled_rotations() -> None:
    pool, events = make_pool(RotationStrategy.ROUND_ROBIN, A, B, C)
    upstreams = Upstreams()
    served = [await pool.call(upstreams) for _ in range(5)]
    assert served == ["a", "b", "c", "a", "b"]
    assert [(e.from_provider, e.to_provider, e.reason) for e in events] == [
        ("a", "b", "scheduled"),
        ("b", "c", "scheduled"),
        ("c", "a", "scheduled"),
        ("a", "b", "scheduled"),
    ]
    assert all(e.pool == "prices" and e.at.tzinfo is not None for e in events)


async def test_weighted_random_follows_weights_with_an_injected_rng() -> None:
    members = [provider("a", weight=1), provider("b", weight=3), provider("c", weight=0)]
    pool, _ = make_pool(RotationStrategy.WEIGHTED_RANDOM, *members, rng=random.Random(7))
    firsts = collections.Counter(pool.order()[0].id for _ in range(4000))
    assert firsts["c"] == 0  # weight 0: only as a last resort
    assert 0.70 < firsts["b"] / 4000 < 0.80
    assert 0.20 < firsts["a"] / 4000 < 0.30
    # Same seed, same choices: tests (and incidents) can be replayed.
    again, _ = make_pool(RotationStrategy.WEIGHTED_RANDOM, *members, rng=random.Random(7))
    replay = collections.Counter(again.order()[0].id for _ in range(4000))
    assert replay == firsts
    # A zero-weight member is still tried when the others fail.
    upstreams = Upstreams()
    upstreams.errors = {"a": fail("a"), "b": fail("b")}
    assert await pool.call(upstreams) == "c"


async def test_least_used_prefers_the_fewest_uses() -> None:
    pool, _ = make_pool(
        RotationStrategy.LEAST_USED,
        PoolMember(A, uses=5),
        PoolMember(B, uses=2),
        PoolMember(C, uses=5),
    )
    assert [m.id for m in pool.order()] == ["b", "a", "c"]
    upstreams = Upstreams()
    served = [await pool.call(upstreams) for _ in range(8)]
    assert served == ["b", "b", "b", "a", "b", "c", "a", "b"]  # ties: config order
    assert {m.id: m.uses for m in pool.members} == {"a": 7, "b": 7, "c": 6}


async def test_fastest_response_measures_unknowns_first(autojump_clock: trio.abc.Clock) -> None:
    pool, _ = make_pool(
        RotationStrategy.FASTEST_RESPONSE, PoolMember(A, latency_ms_ewma=100.0), B, C, D
    )
    upstreams = Upstreams()
    upstreams.latency = {"a": 0.1, "b": 0.3, "c": 0.05, "d": 0.2}
    assert [m.id for m in pool.order()] == ["b", "c", "d", "a"]  # never measured come first
    assert [await pool.call(upstreams) for _ in range(3)] == ["b", "c", "d"]
    latencies = {m.id: m.latency_ms_ewma for m in pool.members}
    assert latencies["b"] == pytest.approx(300.0)
    assert latencies["c"] == pytest.approx(50.0)
    assert [m.id for m in pool.order()] == ["c", "a", "d", "b"]
    assert await pool.call(upstreams) == "c"
    # c slows down: its moving average rises past a's, and a takes over.
    upstreams.latency["c"] = 1.0
    for _ in range(3):
        await pool.call(upstreams)
    assert pool.order()[0].id == "a"


# -- failover and rotation reasons -------------------------------------------------------------


async def test_failover_within_the_call_and_failure_rotation() -> None:
    pool, events = make_pool(RotationStrategy.PRIORITY, A, B, C)
    upstreams = Upstreams()
    assert await pool.call(upstreams) == "a"
    assert events == []  # the first choice is not a rotation
    upstreams.errors["a"] = fail("a")
    upstreams.errors["b"] = fail("b", 502)
    assert await pool.call(upstreams) == "c"
    assert upstreams.calls == ["a", "a", "b", "c"]
    (event,) = events
    assert (event.from_provider, event.to_provider, event.reason) == ("a", "c", "failure")
    member = pool.member("a")
    assert member is not None and member.failures == 1 and member.last_error is not None
    # a recovers: the priority strategy goes back to it.
    upstreams.errors.clear()
    assert await pool.call(upstreams) == "a"
    assert events[-1].reason == "scheduled"
    assert pool.current == "a"


async def test_rate_limited_member_rotates_with_reason_and_is_benched(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool, events = make_pool(RotationStrategy.PRIORITY, A, B)
    upstreams = Upstreams()
    await pool.call(upstreams)
    upstreams.errors["a"] = UpstreamRateLimited("429", provider="a", retry_after=30)
    assert await pool.call(upstreams) == "b"
    assert events[-1].reason == "rate_limit"
    del upstreams.errors["a"]
    await trio.sleep(29)
    assert await pool.call(upstreams) == "b"  # a asked for 30 s of quiet
    assert upstreams.calls == ["a", "a", "b", "b"]
    await trio.sleep(1)
    assert await pool.call(upstreams) == "a"


async def test_open_circuits_are_skipped_without_a_call(autojump_clock: trio.abc.Clock) -> None:
    guards = FakeGuards()
    a = provider("a", breaker=BreakerSpec(failure_threshold=1, cooldown_seconds=60))
    pool, events = make_pool(RotationStrategy.PRIORITY, a, B, guards=guards)
    upstreams = Upstreams()
    await pool.call(upstreams)
    guards.breaker_for(a).record_failure()
    assert await pool.call(upstreams) == "b"
    assert upstreams.calls == ["a", "b"]
    assert events[-1].reason == "circuit_open"
    await trio.sleep(60)  # half-open: a gets its probe
    assert await pool.call(upstreams) == "a"


async def test_circuit_open_raised_by_fn_counts_as_circuit_open() -> None:
    pool, events = make_pool(RotationStrategy.PRIORITY, A, B)
    upstreams = Upstreams()
    await pool.call(upstreams)
    upstreams.errors["a"] = CircuitOpenError(provider="a", retry_in=5)
    await pool.call(upstreams)
    assert events[-1].reason == "circuit_open"


async def test_unconfigured_and_disabled_members_are_never_called() -> None:
    keyed = provider("keyed")
    off = provider("off", enabled=False)
    pool, _ = make_pool(
        RotationStrategy.PRIORITY, keyed, off, A, is_configured=lambda p: p.id != "keyed"
    )
    upstreams = Upstreams()
    assert await pool.call(upstreams) == "a"
    assert upstreams.calls == ["a"]


async def test_members_without_budget_are_skipped_without_waiting(
    autojump_clock: trio.abc.Clock,
) -> None:
    guards = FakeGuards()
    window = (RateLimitWindow(1, 60.0, "minute"),)
    a, b = provider("a", rate_limits=window), provider("b", rate_limits=window)
    pool, events = make_pool(RotationStrategy.PRIORITY, a, b, guards=guards)
    upstreams = Upstreams(guards)
    start = trio.current_time()
    assert await pool.call(upstreams) == "a"
    assert await pool.call(upstreams) == "b"  # a has no budget: skipped, not waited for
    assert trio.current_time() == start
    assert events[-1].reason == "rate_limit"
    # Now nobody has budget: the pool waits on the first member in strategy order.
    assert await pool.call(upstreams) == "a"
    assert trio.current_time() - start == pytest.approx(60.0)
    assert guards.limiters["a"].usage()[0].used == 1  # counted once, by the "client"


async def test_waits_for_budget_when_the_members_with_budget_failed(
    autojump_clock: trio.abc.Clock,
) -> None:
    guards = FakeGuards()
    a = provider("a", rate_limits=(RateLimitWindow(1, 10.0, "w"),))
    pool, _ = make_pool(RotationStrategy.PRIORITY, a, B, guards=guards)
    upstreams = Upstreams(guards)
    await pool.call(upstreams)
    upstreams.errors["b"] = fail("b")
    start = trio.current_time()
    assert await pool.call(upstreams) == "a"
    assert trio.current_time() - start == pytest.approx(10.0)


async def test_exhausted_pool_lists_every_providers_last_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    guards = FakeGuards()
    broken = provider("broken", breaker=BreakerSpec(failure_threshold=1))
    guards.breaker_for(broken).record_failure()
    pool, _ = make_pool(
        RotationStrategy.PRIORITY,
        A,
        B,
        C,
        provider("keyed"),
        broken,
        provider("off", enabled=False),
        guards=guards,
        is_configured=lambda p: p.id != "keyed",
    )
    upstreams = Upstreams()
    upstreams.errors = {
        "a": fail("a", 500),
        "b": UpstreamRateLimited("rate limited (HTTP 429)", provider="b", retry_after=None),
        "c": UpstreamError("timed out after 10s", provider="c"),
    }
    with pytest.raises(PoolExhausted) as info:
        await pool.call(upstreams)
    error = info.value
    assert error.code == "UPSTREAM_UNAVAILABLE"
    assert isinstance(error, UpstreamError)
    extensions = error.extensions()
    assert extensions["pool"] == "prices"
    assert extensions["providers"] == [
        {"provider": "a", "error": "HTTP 500", "httpStatus": 500},
        {"provider": "b", "error": "rate limited (HTTP 429)", "httpStatus": 429},
        {"provider": "c", "error": "timed out after 10s", "httpStatus": None},
        {"provider": "keyed", "error": "API key not configured", "httpStatus": None},
        {"provider": "broken", "error": "circuit open; next probe in 60s", "httpStatus": None},
        {"provider": "off", "error": "provider is disabled", "httpStatus": None},
    ]
    assert "a: HTTP 500" in str(error) and "c: timed out after 10s" in str(error)


async def test_empty_pool_is_exhausted() -> None:
    pool, _ = make_pool(RotationStrategy.ROUND_ROBIN)
    with pytest.raises(PoolExhausted, match="no providers") as info:
        await pool.call(Upstreams())
    assert info.value.extensions()["providers"] == []


async def test_other_exceptions_propagate_without_failover() -> None:
    pool, _ = make_pool(RotationStrategy.PRIORITY, A, B)
    calls: list[str] = []

    async def fn(p: ProviderConfig) -> str:
        calls.append(p.id)
        raise UnknownSymbol("NOPE")

    with pytest.raises(UnknownSymbol):
        await pool.call(fn)
    assert calls == ["a"]


# -- manual rotation and membership ------------------------------------------------------------


async def test_manual_rotation() -> None:
    pool, events = make_pool(RotationStrategy.PRIORITY, A, B, C)
    upstreams = Upstreams()
    assert await pool.call(upstreams) == "a"
    assert pool.rotate() == "b"
    assert pool.current == "b"
    assert (events[-1].from_provider, events[-1].to_provider, events[-1].reason) == (
        "a",
        "b",
        "manual",
    )
    assert await pool.call(upstreams) == "b"  # the rotated-to member goes first, once
    assert len(events) == 1
    assert await pool.call(upstreams) == "a"  # then the strategy again
    assert events[-1].reason == "scheduled"
    pool.rotate()
    pool.rotate()
    assert pool.current == "c"
    assert pool.rotate(reason="scheduled") == "a"  # wraps around
    assert events[-1].reason == "scheduled"


async def test_rotate_before_any_call_and_round_robin_cursor() -> None:
    pool, events = make_pool(RotationStrategy.ROUND_ROBIN, A, B, C)
    assert pool.rotate() == "b"
    assert (events[0].from_provider, events[0].to_provider) == ("a", "b")
    upstreams = Upstreams()
    assert [await pool.call(upstreams) for _ in range(3)] == ["b", "c", "a"]
    empty, _ = make_pool(RotationStrategy.PRIORITY)
    assert empty.rotate() is None


async def test_members_can_be_added_and_removed_at_runtime() -> None:
    pool, events = make_pool(RotationStrategy.PRIORITY, A)
    upstreams = Upstreams()
    assert await pool.call(upstreams) == "a"
    added = pool.add_member(provider("z", priority=0))
    assert isinstance(added, PoolMember)
    assert await pool.call(upstreams) == "z"
    assert events[-1].reason == "scheduled"
    removed = pool.remove_member("z")
    assert removed is added
    assert pool.remove_member("z") is None
    assert await pool.call(upstreams) == "a"
    assert events[-1].reason == "manual"  # z left the pool
    # Adding a member with an existing id replaces it (a config reload).
    pool.add_member(PoolMember(A, uses=42))
    assert [m.uses for m in pool.members] == [42]


async def test_concurrent_calls_each_fail_over(autojump_clock: trio.abc.Clock) -> None:
    pool, _ = make_pool(RotationStrategy.ROUND_ROBIN, A, B, C)
    upstreams = Upstreams()
    upstreams.errors["b"] = fail("b")
    upstreams.latency = {"a": 0.1, "c": 0.1}
    results: list[str] = []

    async def one(fn: Callable[[ProviderConfig], Awaitable[str]]) -> None:
        results.append(await pool.call(fn))

    async with trio.open_nursery() as nursery:
        for _ in range(9):
            nursery.start_soon(one, upstreams)
    assert sorted(results) == ["a"] * 3 + ["c"] * 6  # b's turns fell through to c


async def test_a_provider_the_client_refuses_rotates_as_manual() -> None:
    pool, events = make_pool(RotationStrategy.PRIORITY, A, B)
    upstreams = Upstreams()
    await pool.call(upstreams)
    upstreams.errors["a"] = UpstreamUnconfigured("API key not configured", provider="a")
    assert await pool.call(upstreams) == "b"
    assert events[-1].reason == "manual"

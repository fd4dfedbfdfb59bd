"""The health checker's schedule and failure isolation, on a virtual clock."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import trio

from gateway.config import AuthSpec, HealthCheckSpec, ProviderConfig, ProvidersFile
from gateway.models import utc_now
from gateway.providers.health import HealthChecker, ProbeResult
from gateway.providers.status import ProviderStatusBoard


def provider(pid: str, **overrides: object) -> ProviderConfig:
    base = ProviderConfig(
        id=pid,
        name=pid,
        categories=("MARKET_DATA",),
        base_url=f"https://{pid}.example",
        health=HealthCheckSpec(path="/ping", interval_seconds=60),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


async def test_checks_are_spread_and_repeat_on_their_interval(autojump_clock: object) -> None:
    providers = ProvidersFile(tuple(provider(f"p{n}") for n in range(10)))
    calls: dict[str, list[float]] = {}

    async def probe(p: ProviderConfig) -> ProbeResult:
        calls.setdefault(p.id, []).append(trio.current_time())
        return ProbeResult(True, 5.0)

    checker = HealthChecker(providers, probe, is_configured=lambda p: True, rng=random.Random(1))
    with trio.move_on_after(60 * 5 + 1):
        await checker.run()
    firsts = sorted(times[0] for times in calls.values())
    assert len(set(round(t) for t in firsts)) >= 8  # not all at once
    assert all(0 <= t <= 60 for t in firsts)
    for times in calls.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps and all(54 <= gap <= 66 for gap in gaps)


async def test_unconfigured_and_disabled_providers_are_never_called(autojump_clock: object) -> None:
    keyed = provider("keyed", auth=AuthSpec(kind="query", name="key", env="NOPE_KEY"))
    disabled = provider("off", enabled=False, disabled_reason="paid")
    plain = provider("plain")
    called: list[str] = []

    async def probe(p: ProviderConfig) -> ProbeResult:
        called.append(p.id)
        return ProbeResult(True, 1.0)

    checker = HealthChecker(
        ProvidersFile((keyed, disabled, plain)), probe, is_configured=lambda p: p.id != "keyed"
    )
    assert [p.id for p in checker.checkable()] == ["plain"]
    with trio.move_on_after(200):
        await checker.run()
    assert set(called) == {"plain"}
    assert (await checker.check_now(keyed)).ok is False
    assert "keyed" not in called


async def test_a_crashing_probe_is_a_failed_check_and_others_continue(
    autojump_clock: object,
) -> None:
    calls: list[str] = []

    async def probe(p: ProviderConfig) -> ProbeResult:
        calls.append(p.id)
        if p.id == "bad":
            raise RuntimeError("boom")
        return ProbeResult(True, 1.0)

    checker = HealthChecker(
        ProvidersFile((provider("bad"), provider("good"))), probe, is_configured=lambda p: True
    )
    with trio.move_on_after(200):
        await checker.run()
    assert calls.count("bad") >= 3 and calls.count("good") >= 3
    assert checker.last_results["bad"].ok is False


def test_status_board_states_and_changes() -> None:
    changes: list[tuple[str, str, str]] = []
    slow = provider("s", health=HealthCheckSpec(path="/", degraded_after_ms=100))
    board = ProviderStatusBoard(
        ProvidersFile((slow,)), on_change=lambda p, old, new, why: changes.append((old, new, why))
    )
    assert board.state("s") == "UNKNOWN"
    board.record("s", ok=True, at=utc_now(), latency_ms=50)
    assert board.state("s") == "ONLINE"
    board.record("s", ok=True, at=utc_now(), latency_ms=500)
    assert board.state("s") == "DEGRADED"
    for _ in range(3):
        board.record("s", ok=False, at=utc_now(), latency_ms=None, error="timeout")
    assert board.state("s") == "OFFLINE"
    assert [(old, new) for old, new, _ in changes] == [
        ("UNKNOWN", "ONLINE"),
        ("ONLINE", "DEGRADED"),
        ("DEGRADED", "OFFLINE"),
    ]
    assert changes[-1][2] == "timeout"
    unconfigured = ProviderStatusBoard(ProvidersFile((slow,)), is_configured=lambda p: False)
    assert unconfigured.state("s") == "UNCONFIGURED"

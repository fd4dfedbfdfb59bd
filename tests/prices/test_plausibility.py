"""The plausibility gate (gateway/prices/plausibility.py): which prices are believed at ingest."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from gateway.models import PriceTick
from gateway.prices.plausibility import GateLimits, PlausibilityGate

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def tick(provider: str, usd: float, seconds: float = 0.0, symbol: str = "BTC") -> PriceTick:
    return PriceTick(symbol, usd, provider, T0 + timedelta(seconds=seconds))


def believe(gate: PlausibilityGate, *ticks: PriceTick) -> list[bool]:
    """Judge each tick in turn, remembering the accepted ones, as ingest does."""
    verdicts = []
    for t in ticks:
        verdict = gate.judge(t)
        if verdict.accepted:
            gate.accept(t)
        verdicts.append(verdict.accepted)
    return verdicts


@pytest.mark.parametrize("bad", [1e300, 1e9, 1e12, 0.0, -5.0, math.inf])
def test_a_wild_value_against_two_agreeing_providers_is_refused(bad: float) -> None:
    gate = PlausibilityGate()
    assert believe(gate, tick("kraken", 67_000), tick("coinbase", 67_050)) == [True, True]
    verdict = gate.judge(tick("binance", bad, 1))
    assert not verdict.accepted and verdict.reason
    if bad > 0 and math.isfinite(bad):
        assert verdict.reference_usd in (67_000, 67_050)


def test_a_price_near_the_others_is_believed_and_real_moves_pass() -> None:
    gate = PlausibilityGate()
    believe(gate, tick("kraken", 67_000), tick("coinbase", 67_050))
    assert believe(gate, tick("binance", 67_600, 1)) == [True]  # 0.9 % off: an outlier at most
    # A 6 % crash reported by everyone within a minute is real, not refused.
    assert believe(
        gate, tick("kraken", 63_000, 30), tick("coinbase", 63_100, 31), tick("binance", 62_900, 32)
    ) == [True, True, True]


def test_a_refused_value_never_becomes_a_reference() -> None:
    gate = PlausibilityGate()
    believe(gate, tick("kraken", 67_000), tick("coinbase", 67_050))
    assert believe(gate, tick("binance", 1e12, 1)) == [False]
    # binance's next, sane price is judged against the others, not against its own 1e12
    assert believe(gate, tick("binance", 67_020, 2)) == [True]


def test_alone_a_provider_is_held_to_its_own_recent_history() -> None:
    gate = PlausibilityGate(GateLimits(step_pct=10, max_step_pct=50))
    assert believe(gate, tick("binance", 67_000)) == [True]  # nothing to compare: the anchor
    assert believe(gate, tick("binance", 80_000, 30)) == [False]  # +19 % in 30 s
    assert believe(gate, tick("binance", 72_000, 60)) == [True]  # +7.5 % in a minute
    assert believe(gate, tick("binance", 110_000, 600)) == [False]  # +53 %: over the 50 % cap
    # After a silence longer than the history window there is nothing to hold it to.
    assert believe(gate, tick("binance", 110_000, 600 + 3601)) == [True]


def test_a_newcomer_contradicting_an_established_source_is_refused() -> None:
    gate = PlausibilityGate(GateLimits(establish_seconds=120))
    believe(gate, tick("coingecko", 67_000), tick("coingecko", 67_010, 30))
    assert believe(gate, tick("binance", 1e12, 31)) == [True]  # both new: cannot tell yet
    gate = PlausibilityGate(GateLimits(establish_seconds=120))
    believe(gate, *(tick("coingecko", 67_000 + i, 30 * i) for i in range(6)))  # 150 s believed
    assert believe(gate, tick("binance", 1e12, 151)) == [False]


def test_two_new_sources_that_disagree_are_both_kept_for_prices_to_refuse() -> None:
    # A cold start: neither is established, so the gate cannot say which one is wrong.
    gate = PlausibilityGate()
    assert believe(gate, tick("coingecko", 67_000), tick("binance", 1e12, 1)) == [True, True]
    # A third source settles it: the one that agrees with nobody is refused from then on.
    assert believe(gate, tick("kraken", 67_100, 2)) == [True]
    assert believe(gate, tick("binance", 1e12, 3)) == [False]


def test_prime_keeps_only_what_the_gate_would_believe() -> None:
    gate = PlausibilityGate()
    stored = [tick("kraken", 67_000), tick("coinbase", 67_050, 1), tick("binance", 1e300, 2)]
    assert gate.prime(stored) == 2
    assert not gate.judge(tick("binance", 1e300, 3)).accepted


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="band_pct"):
        GateLimits(band_pct=math.nan)

"""The plausibility gate: which incoming prices are believable enough to store and publish.

A single bad upstream value (a decimal-point slip, a unit mix-up, `1e300` from a broken feed)
must never reach the store, a candle, the consensus or a subscriber. Ingest asks this gate
about every tick before anything else happens; a tick it refuses is quarantined instead (kept
in a table of its own for inspection, counted on its provider, never published).

How a tick of provider P for symbol S is judged, against what the gateway already believes:

1. **Not a positive finite number**: refused.
2. **Other providers**: the latest accepted price of every *other* provider for S observed
   within `fresh_seconds` of the tick. A tick *agrees* with one of them when it lies within
   `band_pct` percent of it. With two or more others, the tick is refused when none agrees
   or more disagree than agree. With exactly one other that disagrees, the gate cannot tell
   which of the two is wrong from their prices alone, so it asks who is established: the tick
   is refused when the other provider has been believed for `establish_seconds` and P has no
   recent history (a newcomer contradicting an established source); otherwise (both new, as
   after a cold start, or both established) it is kept, and `prices` says the two disagree
   instead of averaging them.
3. **Its own history** (only when no other provider is fresh): P's last accepted price for S,
   if it is at most `history_seconds` older than the tick. The tick may move from it by at
   most `step_pct` percent per minute elapsed (a minute at least), and never more than
   `max_step_pct`: a real market moves fast, but not from 67,000 to 1e12.
4. **Nothing to compare with** (the first price ever seen, or after a long silence): accepted;
   it becomes the reference the next ticks are judged against. `prime()` seeds the gate from
   the store at start, so a restart is not such a blind spot.

Only accepted ticks become references, so a refused value can never drag the reference
towards itself. Pure computation: no I/O, no clock of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gateway.models import PriceTick

__all__ = ["GateLimits", "PlausibilityGate", "Verdict"]

SECONDS_PER_MINUTE: Final = 60.0


@dataclass(frozen=True, slots=True)
class GateLimits:
    """How far a price may stray (percent), and how long a reference counts (seconds)."""

    band_pct: float = 10.0  # from another provider's price, to agree with it
    step_pct: float = 10.0  # per minute from the provider's own last accepted price
    max_step_pct: float = 50.0  # however long ago that was (within history_seconds)
    fresh_seconds: float = 600.0  # another provider's price counts while this recent
    history_seconds: float = 3600.0  # the provider's own last price counts while this recent
    establish_seconds: float = 120.0  # believed this long without a gap: an established source

    def __post_init__(self) -> None:
        for name in (
            "band_pct",
            "step_pct",
            "max_step_pct",
            "fresh_seconds",
            "history_seconds",
            "establish_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer for one tick: `reason` and `reference` say why it was refused."""

    accepted: bool
    reason: str | None = None
    reference_usd: float | None = None


ACCEPTED: Final = Verdict(True)


def _deviation_pct(price: float, reference: float) -> float:
    return abs(price - reference) / reference * 100.0


class PlausibilityGate:
    """Judges ticks (`judge`) and remembers the accepted ones (`accept`) as references."""

    def __init__(self, limits: GateLimits | None = None) -> None:
        self.limits = limits or GateLimits()
        # symbol -> provider -> its latest accepted tick, and when its current run of believed
        # ticks (no gap longer than history_seconds) began
        self._latest: dict[str, dict[str, PriceTick]] = {}
        self._since: dict[str, dict[str, datetime]] = {}

    def prime(self, ticks: Iterable[PriceTick]) -> int:
        """Seed the references from stored ticks (oldest first), keeping only those the gate
        itself would accept; returns how many were kept."""
        kept = 0
        for tick in sorted(ticks, key=lambda t: t.observed_at):
            if self.judge(tick).accepted:
                self.accept(tick)
                kept += 1
        return kept

    def accept(self, tick: PriceTick) -> None:
        """Remember `tick` as its provider's latest believed price (unless an older one)."""
        by_provider = self._latest.setdefault(tick.symbol, {})
        since = self._since.setdefault(tick.symbol, {})
        held = by_provider.get(tick.provider)
        if held is None or held.observed_at <= tick.observed_at:
            by_provider[tick.provider] = tick
            gap = None if held is None else (tick.observed_at - held.observed_at).total_seconds()
            if gap is None or gap > self.limits.history_seconds:
                since[tick.provider] = tick.observed_at

    def judge(self, tick: PriceTick) -> Verdict:
        """Whether `tick` is plausible; see the module docstring for the rules."""
        price = tick.usd
        if not (math.isfinite(price) and price > 0):
            return Verdict(False, f"price {price!r} is not a positive number")
        limits = self.limits
        by_provider = self._latest.get(tick.symbol, {})
        others = [
            other
            for provider, other in by_provider.items()
            if provider != tick.provider
            and abs((tick.observed_at - other.observed_at).total_seconds()) <= limits.fresh_seconds
        ]
        own = by_provider.get(tick.provider)
        if own is not None and (
            abs((tick.observed_at - own.observed_at).total_seconds()) > limits.history_seconds
        ):
            own = None  # too long ago to vouch for anything
        step = self._step(tick, own) if own is not None else None
        if others:
            agree = sum(1 for o in others if _deviation_pct(price, o.usd) <= limits.band_pct)
            disagree = len(others) - agree
            if len(others) == 1 and agree == 0:
                refuse = step is None and self._established(others[0], tick.observed_at)
                if step is not None and not step.accepted:
                    return step
            else:
                refuse = agree == 0 or disagree > agree
            if refuse:
                reference = sorted(o.usd for o in others)[len(others) // 2]
                whom = "another provider" if len(others) == 1 else f"{len(others)} other providers"
                return Verdict(
                    False,
                    f"{_deviation_pct(price, reference):.1f}% from the price of {whom} "
                    f"({disagree} of {len(others)} more than {limits.band_pct:g}% away)",
                    reference,
                )
            return ACCEPTED
        return step if step is not None else ACCEPTED

    def _established(self, tick: PriceTick, now: datetime) -> bool:
        """Whether `tick`'s provider has been believed without a gap for establish_seconds."""
        began = self._since.get(tick.symbol, {}).get(tick.provider)
        return began is not None and (now - began).total_seconds() >= self.limits.establish_seconds

    def _step(self, tick: PriceTick, own: PriceTick) -> Verdict:
        limits = self.limits
        minutes = abs((tick.observed_at - own.observed_at).total_seconds()) / SECONDS_PER_MINUTE
        allowed = min(limits.max_step_pct, limits.step_pct * max(1.0, minutes))
        moved = _deviation_pct(tick.usd, own.usd)
        if moved <= allowed:
            return ACCEPTED
        return Verdict(
            False,
            f"moved {moved:.1f}% in {minutes * SECONDS_PER_MINUTE:.0f} s from its own last "
            f"price (at most {allowed:g}% allowed)",
            own.usd,
        )

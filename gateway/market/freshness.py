"""How old an answer may be: each category's freshness limit and hard age limit.

Every answer the gateway serves from data it did not just observe (the market answers, the
latest prices) is judged the same way, by the age of its *data*: the upstream's own timestamp
where it gives one (a global overview's `updated_at`, a TVL series' newest day, a price's
observation time), else the moment the gateway fetched it. Up to `fresh_<category>` seconds
old it is served as it is; older, it is served with a `STALE_DATA` warning that names its age;
past `max_age_<category>` it is refused with the `StaleData` error (code STALE_DATA). The
limits are settings (`Settings.fresh_*`, `Settings.max_age_*`, from GATEWAY_FRESH_* and
GATEWAY_MAX_AGE_*).

Pure rules: no I/O, no clock of its own (callers pass `now`). Must never serve, or decide to
serve, data past its hard limit: `check` raises instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.config import Settings
from gateway.config.settings import FRESHNESS_CATEGORIES
from gateway.errors import StaleData

__all__ = ["STALE_DATA", "Freshness", "Warn", "age_seconds"]

# The warning (and error) code of data older than its category's limits.
STALE_DATA = "STALE_DATA"


class Warn(Protocol):
    """Where a warning goes (`RequestContext.warn`): a code, a message, extra fields."""

    def __call__(self, code: str, message: str, **fields: Any) -> None: ...


def age_seconds(observed_at: datetime, now: datetime) -> float:
    """Seconds from `observed_at` to `now`; 0 for a time in the future (an upstream's clock
    a little ahead of ours does not make its data younger than new)."""
    return max(0.0, (now - observed_at).total_seconds())


@dataclass(frozen=True, slots=True)
class Freshness:
    """The limits of one category: served plainly up to `fresh_seconds`, with a warning up to
    `max_age_seconds`, refused beyond."""

    category: str
    fresh_seconds: float
    max_age_seconds: float

    @classmethod
    def of(cls, settings: Settings, category: str) -> Freshness:
        """The limits `settings` give `category` (one of FRESHNESS_CATEGORIES)."""
        if category not in FRESHNESS_CATEGORIES:
            raise ValueError(f"no freshness limits for {category!r}")
        return cls(
            category,
            float(getattr(settings, f"fresh_{category}")),
            float(getattr(settings, f"max_age_{category}")),
        )

    def too_old(self, observed_at: datetime, now: datetime) -> bool:
        """Past the hard limit: must not be served."""
        return age_seconds(observed_at, now) > self.max_age_seconds

    def refusal(
        self, what: str, observed_at: datetime, now: datetime, *, provider: str
    ) -> StaleData:
        """The StaleData error for data past the hard limit (`what`: "the market overview")."""
        age = age_seconds(observed_at, now)
        return StaleData(
            f"{what} is {_duration(age)} old (observed {observed_at.isoformat()}), past the"
            f" {_duration(self.max_age_seconds)} age limit for {self.category}; refused",
            provider=provider,
            age_seconds=age,
            max_age_seconds=self.max_age_seconds,
        )

    def check(
        self,
        what: str,
        observed_at: datetime,
        now: datetime,
        warn: Warn,
        *,
        provider: str,
        **fields: Any,
    ) -> None:
        """Raise StaleData past the hard limit; past the freshness limit, warn STALE_DATA with
        the age (`fields` are added to the warning, e.g. the symbol). Fresh data: nothing."""
        if self.too_old(observed_at, now):
            raise self.refusal(what, observed_at, now, provider=provider)
        age = age_seconds(observed_at, now)
        if age > self.fresh_seconds:
            warn(
                STALE_DATA,
                f"{what} is {_duration(age)} old (observed {observed_at.isoformat()}), over"
                f" the {_duration(self.fresh_seconds)} freshness limit for {self.category}",
                category=self.category,
                provider=provider,
                observedAt=observed_at.isoformat(),
                ageSeconds=round(age, 3),
                freshSeconds=self.fresh_seconds,
                maxAgeSeconds=self.max_age_seconds,
                **fields,
            )


def _duration(seconds: float) -> str:
    """A readable length of time: `42 s`, `17 min`, `5.2 h`, `982 days`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"

"""A provider's observed state, derived from what its collector's requests actually did.

This is the minimal board the core needs for `status` and /metrics: every upstream attempt is
recorded here (by the upstream client's observer hook) and the state follows from the recent
outcomes. The full health checker, circuit breakers and pools build on the same records.

States: UNKNOWN (never tried), ONLINE (last attempt succeeded), DEGRADED (succeeded recently but
some of the last attempts failed), OFFLINE (the last `offline_after` attempts all failed),
UNCONFIGURED (disabled in providers.toml; never called).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from gateway.config import ProvidersFile

__all__ = ["ProviderRecord", "ProviderStatusBoard"]


@dataclass
class ProviderRecord:
    """What is known about one provider's recent behaviour."""

    provider_id: str
    enabled: bool
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=10))
    last_checked_at: datetime | None = None
    last_error: str | None = None
    latency_ms_ewma: float | None = None
    successes: int = 0
    failures: int = 0

    def state(self, offline_after: int = 3) -> str:
        if not self.enabled:
            return "UNCONFIGURED"
        if not self.recent:
            return "UNKNOWN"
        tail = list(self.recent)[-offline_after:]
        if len(tail) == offline_after and not any(tail):
            return "OFFLINE"
        if self.recent[-1] and all(self.recent):
            return "ONLINE"
        return "DEGRADED" if any(self.recent) else "OFFLINE"


class ProviderStatusBoard:
    """Per-provider records, fed by every upstream attempt."""

    def __init__(self, providers: ProvidersFile) -> None:
        self.records = {
            p.id: ProviderRecord(p.id, enabled=p.enabled) for p in providers.providers
        }

    def record(
        self,
        provider_id: str,
        *,
        ok: bool,
        at: datetime,
        latency_ms: float | None,
        error: str | None = None,
    ) -> None:
        record = self.records.get(provider_id)
        if record is None:
            return
        record.recent.append(ok)
        record.last_checked_at = at
        if ok:
            record.successes += 1
        else:
            record.failures += 1
            record.last_error = error
        if latency_ms is not None:
            previous = record.latency_ms_ewma
            record.latency_ms_ewma = (
                latency_ms if previous is None else 0.8 * previous + 0.2 * latency_ms
            )

    def counts(self) -> dict[str, int]:
        states = [record.state() for record in self.records.values()]
        return {
            "total": len(states),
            "online": states.count("ONLINE"),
            "degraded": states.count("DEGRADED"),
            "offline": states.count("OFFLINE"),
            "unconfigured": states.count("UNCONFIGURED"),
        }

"""The health checker: every enabled, configured provider probed on its own jittered schedule.

Each provider's check is the request its providers.toml entry names (`health`), sent through
the shared upstream client — so it is rate-limited and recorded like any other request, and
its outcome reaches the status board through the client's attempt hook. What counts as
healthy: the expected status and, when named, a key present in the JSON body; slower than the
entry's `degraded_after_ms` makes the provider DEGRADED rather than ONLINE.

Schedules are spread out: the first check of each provider waits a random share of its
interval, and each later one waits the interval ±10 %, so checks never fire together.
Providers that need a key they do not have are never probed (UNCONFIGURED).

Must never: let one provider's check (however it fails) stop the others, or call an
unconfigured provider.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import trio

from gateway.config import ProviderConfig, ProvidersFile

__all__ = ["HealthChecker", "ProbeResult"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one health check."""

    ok: bool
    latency_ms: float | None
    status: int | None = None
    error: str | None = None


Probe = Callable[[ProviderConfig], Awaitable[ProbeResult]]


class HealthChecker:
    """Runs `probe` for each checkable provider on its schedule; `check_now` on demand."""

    def __init__(
        self,
        providers: ProvidersFile,
        probe: Probe,
        *,
        is_configured: Callable[[ProviderConfig], bool],
        rng: random.Random | None = None,
        jitter: float = 0.1,
    ) -> None:
        self._providers = providers
        self._probe = probe
        self._is_configured = is_configured
        self._rng = rng or random.Random()
        self._jitter = jitter
        self.checks = 0
        self.last_results: dict[str, ProbeResult] = {}

    def checkable(self) -> list[ProviderConfig]:
        return [
            p
            for p in self._providers.providers
            if p.enabled and p.health is not None and self._is_configured(p)
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for provider in self.checkable():
                nursery.start_soon(self._loop, provider)
            task_status.started()

    async def _loop(self, provider: ProviderConfig) -> None:
        assert provider.health is not None
        interval = provider.health.interval_seconds
        await trio.sleep(self._rng.uniform(0, interval))
        while True:
            await self.check_now(provider)
            await trio.sleep(interval * self._rng.uniform(1 - self._jitter, 1 + self._jitter))

    async def check_now(self, provider: ProviderConfig) -> ProbeResult:
        """Probe once, now; any failure of the probe itself is a failed check, not a crash."""
        if not provider.enabled or not self._is_configured(provider):
            result = ProbeResult(False, None, error="not configured: never called")
            self.last_results[provider.id] = result
            return result
        try:
            result = await self._probe(provider)
        except Exception as exc:  # a broken probe is an unhealthy provider, not a dead checker
            log.warning("health.probe_crashed", provider=provider.id, error=repr(exc))
            result = ProbeResult(False, None, error=f"probe failed: {type(exc).__name__}")
        self.checks += 1
        self.last_results[provider.id] = result
        return result

"""The loop every chain-data collector runs: do one round, sleep, repeat; back off on trouble.

`poll_forever(name, interval, round_)` calls `round_()` every `interval` seconds (the first
time after `first_delay`, for a slow collector that need not add to the start-up burst). An
`UpstreamError` or `StorageError` is logged and the next round waits `interval * 2**n` (at most
10 intervals; a provider's Retry-After when longer, as `gateway.sources.base.backoff_delay`
says); anything else is a bug and escapes, so the supervisor restarts the task with its own
backoff. Must never let upstream trouble end the task, or poll faster than `interval`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
import trio

from gateway.errors import StorageError, UpstreamError, UpstreamRateLimited
from gateway.sources.base import backoff_delay
from gateway.sources.schedule import JobClock

__all__ = ["poll_forever"]

log = structlog.get_logger(__name__)


async def poll_forever(
    name: str,
    interval: float,
    round_: Callable[[], Awaitable[object]],
    *,
    first_delay: float = 0.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    await trio.sleep(first_delay)
    failures = 0
    clock = JobClock(name, interval)
    while True:
        await clock.begin()
        retry_after: float | None = None
        error: Exception | None = None
        try:
            await round_()
        except (UpstreamError, StorageError) as exc:
            error = exc
            failures += 1
            if isinstance(exc, UpstreamRateLimited):
                retry_after = exc.retry_after
            log.warning("chain_data.round_failed", task=name, error=str(exc), failures=failures)
        else:
            if failures:
                log.info("chain_data.recovered", task=name, after_failures=failures)
            failures = 0
        delay = backoff_delay(interval, failures, retry_after)
        await clock.plan(delay, error)
        await trio.sleep(delay)

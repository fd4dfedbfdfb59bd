"""RateLimiter: every window enforced at once, FIFO waiting, thresholds, usage, persistence.

All timing here runs under `autojump_clock` with no I/O; the real-socket check (hits counted at
the simulator) is in test_upstream_resilience.py.
"""

from __future__ import annotations

import bisect
import time
from datetime import UTC, datetime

import pytest
import trio

from gateway.config import RateLimitWindow
from gateway.upstream import ratelimit as ratelimit_module
from gateway.upstream.ratelimit import RateLimiter, WindowUsage

SECOND = RateLimitWindow(5, 1.0, "second")
MINUTE = RateLimitWindow(100, 60.0, "minute")
HOUR = RateLimitWindow(900, 3600.0, "hour")


def max_in_any_window(times: list[float], seconds: float) -> int:
    """The most grants in any half-open interval [t, t + seconds) (it suffices to start at a
    grant). Times must be sorted."""
    return max(
        (bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times)),
        default=0,
    )


def test_all_is_explicit() -> None:
    for name in ratelimit_module.__all__:
        assert hasattr(ratelimit_module, name), name


async def test_burst_of_1000_never_exceeds_any_window_and_is_fifo(
    autojump_clock: trio.abc.Clock,
) -> None:
    limiter = RateLimiter("p", [SECOND, MINUTE, HOUR])
    arrivals: list[int] = []
    granted: list[tuple[int, float]] = []

    async def acquirer() -> None:
        ticket = len(arrivals)
        arrivals.append(ticket)  # nothing yields between this and joining the queue
        await limiter.acquire()
        granted.append((ticket, trio.current_time()))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(1000):
            nursery.start_soon(acquirer)

    assert len(granted) == 1000
    assert [ticket for ticket, _ in granted] == sorted(ticket for ticket, _ in granted)  # FIFO
    times = [t - start for _, t in granted]
    assert times == sorted(times)
    for window in (SECOND, MINUTE, HOUR):
        assert max_in_any_window(times, window.seconds) <= window.limit, window
    # ... and it is not needlessly slow: the hour window is the binding one at the end, so the
    # 901st grant comes exactly when the first leaves the hour.
    assert times[900] == pytest.approx(3600.0)
    assert limiter.granted == 1000


async def test_waits_instead_of_failing(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter("p", [RateLimitWindow(2, 10.0, "ten-seconds")])
    start = trio.current_time()
    for _ in range(2):
        await limiter.acquire()
    assert trio.current_time() == start
    await limiter.acquire()  # waits for the first grant to leave the window
    assert trio.current_time() - start == pytest.approx(10.0)
    await limiter.acquire()
    assert trio.current_time() - start == pytest.approx(10.0)
    await limiter.acquire()
    assert trio.current_time() - start == pytest.approx(20.0)


async def test_every_window_applies_at_once(autojump_clock: trio.abc.Clock) -> None:
    """2/second and 3/10 seconds: the 4th request waits for the 10-second window."""
    limiter = RateLimiter("p", [RateLimitWindow(2, 1.0, "second"), RateLimitWindow(3, 10.0, "ten")])
    start = trio.current_time()
    stamps = []
    for _ in range(5):
        await limiter.acquire()
        stamps.append(trio.current_time() - start)
    assert stamps == pytest.approx([0.0, 0.0, 1.0, 10.0, 10.0])


async def test_cancelled_waiter_counts_nothing(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter("p", [RateLimitWindow(1, 5.0, "w")])
    await limiter.acquire()
    with trio.move_on_after(1):
        await limiter.acquire()
    assert limiter.usage()[0].used == 1
    await trio.sleep(4)
    assert limiter.try_acquire()


async def test_try_acquire_never_waits_and_never_overtakes(
    autojump_clock: trio.abc.Clock,
) -> None:
    limiter = RateLimiter("p", [RateLimitWindow(2, 1.0, "second")])
    assert limiter.available()
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.available()
    assert not limiter.try_acquire()  # no budget: refused at once
    assert limiter.next_available_in() == pytest.approx(1.0)

    order: list[str] = []

    async def queued() -> None:
        await limiter.acquire()
        order.append("queued")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queued)
        await trio.sleep(0.5)
        assert not limiter.try_acquire()  # someone is queued: wait your turn
        await trio.sleep(0.6)
        assert order == ["queued"]
    assert limiter.try_acquire()  # the second slot freed at t=1 is still there
    assert not limiter.try_acquire()


async def test_no_windows_means_no_limit() -> None:
    limiter = RateLimiter("p", [])
    for _ in range(100):
        await limiter.acquire()
        assert limiter.try_acquire()
    assert limiter.usage() == []
    assert limiter.granted == 200


async def test_threshold_fires_once_per_crossing(autojump_clock: trio.abc.Clock) -> None:
    fired: list[tuple[str, str, int, int]] = []
    limiter = RateLimiter(
        "coingecko",
        [RateLimitWindow(10, 60.0, "minute"), RateLimitWindow(1000, 86400.0, "day")],
        on_threshold=lambda *args: fired.append(args),
    )
    for _ in range(7):
        await limiter.acquire()
    assert fired == []
    await limiter.acquire()  # 8 of 10: 80 %
    assert fired == [("coingecko", "minute", 8, 10)]
    await limiter.acquire()
    await limiter.acquire()
    assert len(fired) == 1  # once, not on every grant above the threshold

    await trio.sleep(61)  # the window empties: re-armed
    for _ in range(7):
        await limiter.acquire()
    assert len(fired) == 1
    await limiter.acquire()
    assert fired[-1] == ("coingecko", "minute", 8, 10)
    assert len(fired) == 2


async def test_threshold_rearms_only_below_the_line(autojump_clock: trio.abc.Clock) -> None:
    fired: list[int] = []
    limiter = RateLimiter(
        "p",
        [RateLimitWindow(5, 10.0, "w")],
        on_threshold=lambda p, w, used, limit: fired.append(used),
    )
    for _ in range(4):  # 4 of 5 = 80 %
        await limiter.acquire()
        await trio.sleep(1)
    assert fired == [4]
    await trio.sleep(6.5)  # t=10.5: the first grant (t=0) left; 3 remain -> below, re-armed
    await limiter.acquire()  # back to 4
    assert fired == [4, 4]


async def test_usage_reports_wall_clock_resets(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter("p", [RateLimitWindow(3, 60.0, "minute"), HOUR])
    await trio.sleep(1000)  # the trio clock runs far ahead of the wall clock here
    await limiter.acquire()
    await trio.sleep(20)
    await limiter.acquire()
    minute, hour = limiter.usage()
    assert isinstance(minute, WindowUsage)
    assert (minute.name, minute.limit, minute.used, minute.remaining) == ("minute", 3, 2, 1)
    assert minute.seconds == 60.0
    # The oldest grant was 20 s ago: it leaves the minute window in 40 s of wall-clock time.
    expected = time.time() + 40
    assert minute.resets_at.tzinfo is UTC
    assert abs(minute.resets_at.timestamp() - expected) < 1
    assert abs(hour.resets_at.timestamp() - (time.time() + 3580)) < 1
    await trio.sleep(3600)
    minute, hour = limiter.usage()
    assert minute.used == hour.used == 0
    assert abs(minute.resets_at.timestamp() - time.time()) < 1
    assert isinstance(minute.resets_at, datetime)


async def test_snapshot_and_restore_survive_a_restart(autojump_clock: trio.abc.Clock) -> None:
    windows = [RateLimitWindow(5, 60.0, "minute"), RateLimitWindow(8, 3600.0, "hour")]
    before = RateLimiter("p", windows)
    for _ in range(5):
        await before.acquire()
        await trio.sleep(1)
    snapshot = before.snapshot()
    assert len(snapshot) == 5
    assert snapshot == sorted(snapshot)
    # Wall-clock Unix timestamps, the newest 1 s ago: fit for a database column.
    assert abs(snapshot[-1] - (time.time() - 1)) < 1

    fired: list[str] = []
    after = RateLimiter("p", windows, on_threshold=lambda p, w, used, limit: fired.append(w))
    after.restore(snapshot)
    assert fired == ["minute"]  # 5 of 5 restored: over 80 % at once
    assert [u.used for u in after.usage()] == [5, 5]
    assert not after.try_acquire()
    start = trio.current_time()
    await after.acquire()  # the oldest restored grant was 5 s ago: 55 s to wait
    assert trio.current_time() - start == pytest.approx(55.0, abs=0.01)
    assert [u.used for u in after.usage()] == [5, 6]


async def test_restore_ignores_grants_too_old_or_in_excess(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter("p", [RateLimitWindow(3, 60.0, "minute"), HOUR])
    now = time.time()
    limiter.restore([now - 7200, now - 120, now - 30, now - 20, now - 10, now - 5, float("nan")])
    minute, hour = limiter.usage()
    assert minute.used == 3  # four fall in the last minute; the window keeps the newest three
    assert hour.used == 5  # the one from two hours ago counts nowhere
    assert len(limiter.snapshot()) == 5


@pytest.mark.parametrize(
    "window",
    [RateLimitWindow(0, 1.0, "zero"), RateLimitWindow(1, 0.0, "instant")],
)
def test_bad_windows_are_rejected(window: RateLimitWindow) -> None:
    with pytest.raises(ValueError, match=window.name):
        RateLimiter("p", [window])


class WallClockFollowingTrio:
    """Stands in for the `time` module: under autojump_clock the trio clock leaps while the
    real wall clock does not, which no real deployment sees; this wall clock leaps along."""

    def __init__(self) -> None:
        self.base = time.time() - trio.current_time()

    def time(self) -> float:
        return self.base + trio.current_time()


async def test_restore_is_a_union_not_a_sum(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same-instant grants all survive a snapshot; restoring overlapping snapshots (one stored
    per window, say, or the same one twice) counts each grant once."""
    monkeypatch.setattr(ratelimit_module, "time", WallClockFollowingTrio())
    windows = [RateLimitWindow(10, 60.0, "minute"), RateLimitWindow(100, 3600.0, "hour")]
    before = RateLimiter("p", windows)
    for _ in range(4):
        await before.acquire()  # all at the same instant
    older = before.snapshot()
    await trio.sleep(90)
    for _ in range(3):
        await before.acquire()
    newer = before.snapshot()
    assert len(older) == 4 and len(newer) == 7

    after = RateLimiter("p", windows)
    after.restore(newer)
    after.restore(older)
    after.restore(newer)
    assert [u.used for u in after.usage()] == [3, 7]
    await after.acquire()  # grants made since start-up merge with the restored ones
    after.restore(newer)
    assert [u.used for u in after.usage()] == [4, 8]


@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_a_tiny_window_never_calls_its_threshold(
    autojump_clock: trio.abc.Clock, limit: int
) -> None:
    """"used 1 of 1" / "2 of 2" is how a one-request budget is meant to be used: no
    rate_limit_80 alert for windows under MIN_ALERTED_LIMIT requests (issue 13)."""
    fired: list[int] = []
    limiter = RateLimiter(
        "kraken",
        [RateLimitWindow(limit, 1.0, "second")],
        on_threshold=lambda p, w, used, n: fired.append(used),
    )
    for _ in range(3 * limit):
        await limiter.acquire()
    assert fired == []
    assert ratelimit_module.MIN_ALERTED_LIMIT == 5

"""What a stream asked for and what the exchange refused: pure book-keeping, on a fake clock."""

from __future__ import annotations

import math

import pytest

from gateway.sources.stream_requests import PendingRequests, RefusalMemory

REASON = "Failed to subscribe: ADA-USD is not a valid product"


def test_a_refusal_is_remembered_until_its_time_runs_out() -> None:
    memory = RefusalMemory(ttl=60, limit=8)
    assert memory.seconds_to_expiry(0) == math.inf and memory.describe(0) is None
    memory.add("ADA-USD", "ADA", REASON, now=100)
    assert memory.active(100).keys() == {"ADA-USD"} and memory.symbols(159.9) == {"ADA"}
    assert memory.seconds_to_expiry(130) == 30
    assert memory.describe(130) == f"ADA ({REASON})"
    assert memory.active(160) == {} and memory.seconds_to_expiry(160) == math.inf


def test_refusals_are_bounded_and_the_oldest_goes_first() -> None:
    memory = RefusalMemory(ttl=60, limit=3)
    for n in range(10):
        memory.add(f"X{n}-USD", f"X{n}", "refused", now=n)
    assert list(memory.active(10)) == ["X7-USD", "X8-USD", "X9-USD"]
    memory.add("X7-USD", "X7", "refused again", now=11)  # refreshed: now the newest
    memory.add("Y-USD", "Y", "refused", now=12)
    assert list(memory.active(12)) == ["X9-USD", "X7-USD", "Y-USD"]


def test_a_long_list_of_refusals_is_summed_up_in_a_reason() -> None:
    memory = RefusalMemory(ttl=60, limit=100)
    for n in range(8):
        memory.add(f"X{n}-USD", f"X{n}", "not listed", now=0)
    text = memory.describe(1)
    assert text is not None and text.endswith("X4 (not listed) and 3 more")


@pytest.mark.parametrize(("ttl", "limit"), [(-1, 5), (60, 0), (math.nan, 5)])
def test_a_memory_needs_sane_bounds(ttl: float, limit: int) -> None:
    with pytest.raises(ValueError):
        RefusalMemory(ttl=ttl, limit=limit)


def test_pending_requests_are_answered_once_and_bounded() -> None:
    pending = PendingRequests(limit=2)
    first = pending.track(["BTC-USD"])
    ping = pending.next_id()
    second, third = pending.track(["ETH-USD"]), pending.track(["SOL-USD"])
    assert len({first, ping, second, third}) == 4
    assert pending.answered(first) == ()  # forgotten: only the newest two are kept
    assert pending.answered(second) == ("ETH-USD",) and pending.answered(second) == ()
    pending.clear()
    assert pending.answered(third) == () and pending.track([]) > third  # ids keep counting

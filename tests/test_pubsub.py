"""The event bus: fan-out, bounded buffers that drop the oldest, clean ends of stream."""

from __future__ import annotations

import tracemalloc

import pytest
import trio

from gateway.pubsub import EventBus, Topic


async def test_every_subscriber_gets_every_event_in_order() -> None:
    topic: Topic[int] = Topic("t", buffer=10)
    with topic.subscribe() as a, topic.subscribe() as b:
        for n in range(3):
            topic.publish(n)
        assert [await a.receive() for _ in range(3)] == [0, 1, 2]
        assert b.drain() == [0, 1, 2]
    assert topic.subscriber_count == 0


async def test_a_slow_subscriber_loses_the_oldest_and_it_is_counted() -> None:
    topic: Topic[int] = Topic("t", buffer=3)
    with topic.subscribe() as slow, topic.subscribe() as fast:
        for n in range(5):
            topic.publish(n)
            assert await fast.receive() == n  # the fast one is unaffected
        assert slow.drain() == [2, 3, 4]
        assert slow.dropped == 2
    assert topic.dropped == 2 and topic.published == 5


async def test_receive_waits_and_wakes_on_publish() -> None:
    topic: Topic[str] = Topic("t", buffer=4)
    got: list[str] = []
    with topic.subscribe() as sub:
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                got.append(await sub.receive())

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            topic.publish("x")
        assert got == ["x"]


async def test_close_ends_iteration_after_draining() -> None:
    bus = EventBus(buffer=4)
    with bus.prices.subscribe() as sub:
        bus.prices.publish("tick")  # type: ignore[arg-type]
        bus.close()
        with trio.fail_after(1):
            assert [event async for event in sub] == ["tick"]


def test_memory_is_flat_with_many_idle_subscribers() -> None:
    """1,000 subscribers that never read: memory is bounded by their buffers, not by traffic."""
    topic: Topic[bytes] = Topic("t", buffer=16)
    subs = [topic.subscribe() for _ in range(1000)]
    for sub in subs:
        sub.__enter__()
    payload = b"x" * 100
    for _ in range(100):
        topic.publish(payload)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(500):
        topic.publish(payload)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 64 * 1024, growth
    for sub in subs:
        sub.__exit__(None, None, None)


def test_buffer_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Topic("t", buffer=0)

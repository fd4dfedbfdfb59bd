"""The collector lease (gateway/broker/lease.py) against a real redis-server on loopback.

One replica leads at a time; a leader that dies without a word is replaced within the lease
(plus one acquisition poll); a leader whose lease was taken over, or that cannot reach Redis,
stops its work by itself; every election has a larger fencing token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from gateway.broker import BrokerClient, LeaderLease
from gateway.config.broker import BrokerSettings
from gateway.errors import StorageError
from tests.redis_server import RedisServer

LEASE = 0.6


class Work:
    """The leader's work: records its tokens and whether it is running."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.running = False
        self.stopped_at: float | None = None

    async def __call__(self, token: int) -> None:
        self.tokens.append(token)
        self.running = True
        try:
            await trio.sleep_forever()
        finally:
            self.running = False
            self.stopped_at = trio.current_time()


@asynccontextmanager
async def lease(server: RedisServer) -> AsyncIterator[LeaderLease]:
    settings = BrokerSettings(server.url, lease=LEASE, timeout=0.3)
    async with BrokerClient(settings) as client:
        yield LeaderLease(client)


async def until(condition: object, timeout: float) -> float:
    """Wait for `condition()` (bounded); returns how long it took."""
    began = trio.current_time()
    with trio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.01)
    return trio.current_time() - began


async def test_one_leader_and_a_silent_death_is_replaced_within_the_lease(
    redis_server: RedisServer,
) -> None:
    async with lease(redis_server) as a, lease(redis_server) as b, trio.open_nursery() as nursery:
        work_a, work_b = Work(), Work()
        a_scope = trio.CancelScope()

        async def run_a() -> None:
            with a_scope:
                await a.lead(work_a)

        async def silent(token: int) -> None:  # a process killed with -9 releases nothing
            return None

        a._give_up = silent  # type: ignore[method-assign]
        nursery.start_soon(run_a)
        await until(lambda: work_a.running, 3)
        nursery.start_soon(b.lead, work_b)
        await trio.sleep(LEASE * 2)
        assert work_a.running and not work_b.running  # only one leads
        a_scope.cancel()  # the leader dies
        taken = await until(lambda: work_b.running, LEASE * 3)
        assert taken <= LEASE + LEASE / 5 + 0.3, taken
        assert work_b.tokens[0] > work_a.tokens[0]  # a newer fencing token
        nursery.cancel_scope.cancel()


async def test_a_leader_whose_lease_was_taken_stops_at_once(redis_server: RedisServer) -> None:
    async with lease(redis_server) as a, trio.open_nursery() as nursery:
        work = Work()
        nursery.start_soon(a.lead, work)
        await until(lambda: work.running, 3)
        assert a.holds()
        await a.client.redis.set(a.key, "999")  # someone else holds it now (a partition healed)
        took = await until(lambda: not work.running, LEASE)
        assert took <= LEASE / 3 + 0.2 and a.current() is None
        nursery.cancel_scope.cancel()


async def test_a_leader_cut_off_from_redis_stops_before_its_lease_ends(
    redis_server: RedisServer,
) -> None:
    async with lease(redis_server) as a, trio.open_nursery() as nursery:
        work = Work()
        nursery.start_soon(a.lead, work)
        await until(lambda: work.running, 3)
        redis_server.pause()
        cut_at = trio.current_time()
        await until(lambda: not work.running, LEASE * 2)
        assert work.stopped_at is not None and work.stopped_at - cut_at <= LEASE
        assert not a.holds()
        redis_server.resume()  # and it leads again once Redis is back (its keys are gone)
        await until(lambda: work.running, LEASE * 5)
        nursery.cancel_scope.cancel()


async def test_the_write_guard_fails_commits_once_the_lease_is_lost(
    redis_server: RedisServer,
) -> None:
    async with lease(redis_server) as a, trio.open_nursery() as nursery:
        work = Work()
        nursery.start_soon(a.lead, work)
        await until(lambda: work.running, 3)
        guard = a.write_guard(work.tokens[0])
        guard()  # leading: the commit may go
        await a.client.redis.set(a.key, "999")
        await until(lambda: not work.running, LEASE)
        with pytest.raises(StorageError, match="not the collector leader"):
            guard()
        nursery.cancel_scope.cancel()

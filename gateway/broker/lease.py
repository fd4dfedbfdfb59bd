"""The collector lease: one replica at a time runs the collectors, streams and health checks.

The lease is a Redis key holding a *fencing token*. Acquiring it is one Lua script: if the key
is absent, INCR the token counter and SET the key to the new token with PX = lease (a SET NX PX
that cannot hand out a token without taking the lease). The holder renews it every third of
the lease with a compare-and-set script (PEXPIRE only if the key still holds *its* token) and
releases it the same way when it stops. Every fenced publish carries the token and Redis
checks it (gateway/broker/bus.py); the store can check it too (`Storage.fence`, where the
store has one).

The leader's work runs inside a cancel scope whose *deadline* is the lease's expiry as the
leader last confirmed it (taken before the renewal was sent, less a tenth for clock drift), so a
leader cut off from Redis stops by itself before anyone else can be elected: no renewal task has
to be scheduled for that to happen. A renewal answered "not yours" (or a publish refused as
FENCED) cancels the scope at once.

A follower tries to acquire every fifth of the lease, so a dead leader is replaced at most
`lease + lease/5` after its last renewal.

Must never: run the work without holding the lease, or keep running it past the confirmed
expiry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import structlog
import trio

from gateway.broker.client import BrokerClient
from gateway.errors import BrokerUnavailable, StorageError

__all__ = ["LeaderLease"]

log = structlog.get_logger(__name__)

ACQUIRE_SCRIPT: Final = """
-- KEYS[1]: the lease; KEYS[2]: the fencing token counter. ARGV[1]: the lease in ms.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""
RENEW_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The share of the lease a leader trusts: the rest allows for clock drift between machines.
TRUSTED: Final = 0.9


class LeaderLease:
    """`await nursery.start(lease.lead, work)`: run `work(token)` whenever this replica leads."""

    def __init__(self, client: BrokerClient) -> None:
        self.client = client
        self.seconds = client.settings.lease
        self.key = client.key("leader")
        self._counter = client.key("leader", "token")
        self._acquire = client.redis.register_script(ACQUIRE_SCRIPT)
        self._renew = client.redis.register_script(RENEW_SCRIPT)
        self._release = client.redis.register_script(RELEASE_SCRIPT)
        self.token: int | None = None
        self.elections = 0
        self._scope: trio.CancelScope | None = None

    def current(self) -> int | None:
        """The fencing token while this replica leads (and its lease is confirmed), else None."""
        if self._scope is None or trio.current_time() >= self._scope.deadline:
            return None
        return self.token

    def holds(self) -> bool:
        return self.current() is not None

    def write_guard(self, token: int) -> Callable[[], None]:
        """For `Storage.set_write_guard`: checked before each commit, it fails the commit once
        this replica no longer holds the lease under `token` (the leader-side half of fencing;
        the store's own fence is the other)."""

        def guard() -> None:
            if self.current() != token:
                raise StorageError(f"not the collector leader any more (lease token {token})")

        return guard

    def lost(self) -> None:
        """Redis refused our token: stop the leader's work now."""
        if self._scope is not None:
            log.warning("leader.fenced", token=self.token)
            self.token = None
            self._scope.cancel()

    async def lead(
        self,
        work: Callable[[int], Awaitable[object]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Forever: wait for the lease, run `work(token)` while it is held, then wait again."""
        task_status.started()
        while True:
            token, confirmed_at = await self._wait_for_lease()
            self.elections += 1
            log.info("leader.elected", token=token, lease_s=self.seconds)
            try:
                with trio.CancelScope(deadline=confirmed_at + TRUSTED * self.seconds) as scope:
                    self._scope, self.token = scope, token
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._keep, token, scope)
                        await work(token)
                        await trio.sleep_forever()
            finally:
                self._scope, self.token = None, None
                with trio.CancelScope(shield=True):
                    await self._give_up(token)
            log.warning("leader.deposed", token=token)

    async def _wait_for_lease(self) -> tuple[int, float]:
        poll = self.seconds / 5
        while True:
            sent_at = trio.current_time()
            try:
                token: object = await self.client.call(
                    partial(
                        self._acquire,
                        keys=[self.key, self._counter],
                        args=[int(self.seconds * 1000)],
                    )
                )
            except BrokerUnavailable:
                token = 0
            if isinstance(token, int) and token > 0:
                return token, sent_at
            await trio.sleep(poll)

    async def _keep(self, token: int, scope: trio.CancelScope) -> None:
        """Renew every third of the lease; each confirmed renewal moves the deadline on."""
        while True:
            await trio.sleep(self.seconds / 3)
            sent_at = trio.current_time()
            try:
                renewed: object = await self.client.call(
                    partial(self._renew, keys=[self.key], args=[token, int(self.seconds * 1000)]),
                    limit=self.seconds / 3,
                )
            except BrokerUnavailable as exc:
                # Not fatal yet: the deadline set by the last confirmed renewal decides.
                log.warning("leader.renewal_failed", token=token, reason=exc.reason)
                continue
            if not renewed:
                log.warning("leader.lease_lost", token=token)
                scope.cancel()
                return
            scope.deadline = sent_at + TRUSTED * self.seconds

    async def _give_up(self, token: int) -> None:
        """Release the lease if it is still ours, so a successor need not wait for expiry."""
        with contextlib.suppress(BrokerUnavailable):  # 1 s at most: shutdown stays within 5 s
            release = partial(self._release, keys=[self.key], args=[token])
            await self.client.call(release, limit=min(self.client.settings.timeout, 1.0))

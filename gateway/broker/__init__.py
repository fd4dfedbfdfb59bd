"""Several replicas of one gateway, through Redis: the broker-backed event bus (`bus`), the
collector lease (`lease`), upstream rate limits and breakers shared by every replica
(`limits`), the client that knows whether Redis is reachable (`client`) and the codec of events
(`codec`). `replication` builds them all from the settings, or nothing when no
broker is configured, which is the default: one process, the in-memory bus of gateway.pubsub.

It sits above `gateway.pubsub` and `gateway.upstream` (it extends the bus, and carries the
upstream's events) and below the store and the sources: it must never import the store, the
API or the supervisor; the supervisor (gateway/nursery.py) decides what runs under the lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gateway.broker.bus import BrokerBus
from gateway.broker.client import BrokerClient
from gateway.broker.lease import LeaderLease
from gateway.broker.limits import SharedBreakers, SharedCircuitBreaker, SharedRateLimiter
from gateway.config.broker import BrokerSettings

__all__ = ["BrokerBus", "BrokerClient", "LeaderLease", "Replication", "replication"]


@dataclass(frozen=True)
class Replication:
    """What a replica shares with the others: Redis, the bus over it, the collector lease."""

    client: BrokerClient
    bus: BrokerBus
    lease: LeaderLease
    breakers: SharedBreakers = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "breakers", SharedBreakers(self.client))

    def upstream_limits(self) -> dict[str, Any]:
        """UpstreamClient's `limiters` and `breakers`: one set for every replica, in Redis
        (run `breakers.run` too)."""
        return {
            "limiters": partial(SharedRateLimiter, client=self.client),
            "breakers": partial(SharedCircuitBreaker, shared=self.breakers),
        }


@asynccontextmanager
async def replication(
    settings: BrokerSettings | None, bus_buffer: int
) -> AsyncIterator[Replication | None]:
    """The replica's broker parts (not yet running: start `bus.run` and `lease.lead`), or None
    without a broker. Connecting is lazy: a Redis that is down at start is used once it is up."""
    if settings is None:
        yield None
        return
    async with BrokerClient(settings) as client:
        lease = LeaderLease(client)
        bus = BrokerBus(bus_buffer, client, fence=lease.current, on_fenced=lease.lost)
        yield Replication(client, bus, lease)

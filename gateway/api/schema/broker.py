"""`status { broker }`: this replica's view of the Redis broker (several replicas, README
"Running several replicas"); null in one process.

Must never: call Redis from a resolver (it reports what the replica already knows, so `status`
answers at once while Redis is down).
"""

from __future__ import annotations

from datetime import datetime

import strawberry

from gateway.api.context import Services

__all__ = ["BrokerState", "broker_state"]


@strawberry.type(description="This replica's view of the Redis broker (several replicas).")
class BrokerState:
    url: str = strawberry.field(description="Redis, without its password.")
    available: bool = strawberry.field(
        description="False while Redis cannot be reached: queries are answered from the "
        "database, subscriptions fail with BROKER_UNAVAILABLE and nobody collects."
    )
    reason: str | None = strawberry.field(description="Why it is unavailable.")
    since: datetime = strawberry.field(description="When it became available or unavailable.")
    leader: bool = strawberry.field(
        description="Whether this replica holds the collector lease (runs the collectors)."
    )


def broker_state(services: Services) -> BrokerState | None:
    if services.replication is None:
        return None
    client, lease = services.replication.client, services.replication.lease
    return BrokerState(
        url=client.url,
        available=client.up,
        reason=client.reason,
        since=client.since,
        leader=lease.holds(),
    )

"""The quarantine in the schema: `quarantinedTicks`, the prices the plausibility gate refused.

For whoever wonders why a provider's `quarantined` count grows, or why a price they saw on an
exchange is not in the gateway: each refused tick with what it was compared with and why.
These values are evidence, never data: nothing else in the schema reads them.

Must never build the schema itself (`gateway.schema` does).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from strawberry.types import Info

from gateway.api.context import RequestContext
from gateway.errors import BadUserInput
from gateway.storage import QuarantinedTick as QuarantineRecord
from gateway.storage import QuarantineStore
from gateway.symbols import normalize_symbol

__all__ = ["QuarantineQuery"]

MAX_LIMIT = 500


@strawberry.type(description="A price refused at ingest as implausible; never served as data.")
class QuarantinedTick:
    symbol: str
    provider: str
    usd: float | None = strawberry.field(description="The refused price (null if not a number).")
    observed_at: datetime = strawberry.field(description="When the provider said it was valid.")
    reference_usd: float | None = strawberry.field(
        description="What it was compared with: the other providers' or its own last price."
    )
    reason: str = strawberry.field(description="Why it was refused.")
    quarantined_at: datetime

    @classmethod
    def from_record(cls, record: QuarantineRecord) -> QuarantinedTick:
        tick = record.tick
        return cls(
            symbol=tick.symbol,
            provider=tick.provider,
            usd=tick.usd if tick.usd == tick.usd else None,
            observed_at=tick.observed_at,
            reference_usd=record.reference_usd,
            reason=record.reason,
            quarantined_at=record.quarantined_at,
        )


@strawberry.type
class QuarantineQuery:
    @strawberry.field(
        description="Prices the plausibility gate refused at ingest, newest first (kept 7 days)."
    )
    async def quarantined_ticks(
        self,
        info: Info,
        symbol: str | None = None,
        provider: str | None = None,
        limit: int = 50,
    ) -> list[QuarantinedTick]:
        if not 1 <= limit <= MAX_LIMIT:
            raise BadUserInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        context = cast(RequestContext, info.context)
        records = await QuarantineStore(context.services.storage).recent(
            symbol=normalize_symbol(symbol) if symbol is not None else None,
            provider=provider,
            limit=limit,
        )
        return [QuarantinedTick.from_record(record) for record in records]

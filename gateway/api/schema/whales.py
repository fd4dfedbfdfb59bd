"""GraphQL for whale transactions: the `whaleTransactions` query and subscription.

The query reads what whale tracking stored (gateway/chains/whales.py, bitcoin_whales.py,
whale_apis.py: the gateway's own scan of new blocks, free; Whale Alert and Bitquery when keyed),
newest first, leaving out transfers a reorg withdrew. The subscription streams the `whales`
topic: each new transfer once, and a withdrawal (`removed: true`) when a reorg replaced the
block it was in, so a client can take back what it was shown.

Must never compute or value a transfer itself (gateway.chains does), or serve a withdrawn one
as standing.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Final, cast

import strawberry
from strawberry.types import Info

from gateway.api.context import RequestContext
from gateway.errors import BadUserInput
from gateway.models import utc_now
from gateway.onchain_models import NATIVE_INDEX, WhaleTransfer
from gateway.storage import WhaleStore

__all__ = ["WhaleQuery", "WhaleSubscription", "WhaleTransaction"]

MAX_WHALES: Final = 500
DEFAULT_WINDOW: Final = timedelta(hours=24)
MAX_CHAIN_CHARS: Final = 40


@strawberry.type(
    description="A large transfer: a native coin or a major token (USDT, USDC, WETH, WBTC, "
    "DAI...) moved on chain, worth at least the whale threshold when it happened."
)
class WhaleTransaction:
    chain: str
    hash: str = strawberry.field(description="The transaction's hash (Bitcoin: its txid).")
    from_address: str
    to_address: str
    from_label: str | None = strawberry.field(
        description='A known owner, e.g. "Binance 14" (gateway/data/labels.json) or the whale '
        "API's own name for it; null when unknown."
    )
    to_label: str | None
    asset: str = strawberry.field(description="What moved: ETH, BNB, POL, BTC, USDT, WETH...")
    amount: float = strawberry.field(description="In whole units of the asset.")
    amount_usd: float = strawberry.field(
        description="Its value when it happened: `amount` x `priceUsd` (the gateway's consensus "
        "price at the block's time) for transfers the gateway found; the whale API's own "
        "valuation for those it reported (priceUsd null)."
    )
    at: datetime = strawberry.field(description="The time of the block it is in.")
    provider: str = strawberry.field(
        description='"chain-scan" when the gateway found it in a block itself; else the whale '
        "API that reported it (whale-alert, bitquery)."
    )
    price_usd: float | None = strawberry.field(
        description="The unit price amountUsd was computed with; null when an API valued it."
    )
    block_number: int | None
    block_hash: str | None = strawberry.field(description="The block it was seen in.")
    log_index: int | None = strawberry.field(
        description="The ERC-20 Transfer log's index in its block; null for a native transfer "
        "(or one an API reported without it)."
    )
    removed: bool = strawberry.field(
        description="True when a reorg replaced its block: it is no longer on the chain. Only "
        "the subscription sends such withdrawals; the query leaves them out."
    )

    @classmethod
    def build(cls, t: WhaleTransfer) -> WhaleTransaction:
        return cls(
            chain=t.chain,
            hash=t.hash,
            from_address=t.from_address,
            to_address=t.to_address,
            from_label=t.from_label,
            to_label=t.to_label,
            asset=t.asset,
            amount=t.amount,
            amount_usd=t.amount_usd,
            at=t.at,
            provider=t.provider,
            price_usd=t.price_usd,
            block_number=t.block_number,
            block_hash=t.block_hash,
            log_index=None if t.log_index == NATIVE_INDEX else t.log_index,
            removed=t.removed,
        )


def _context(info: Info) -> RequestContext:
    return cast(RequestContext, info.context)


def _min_usd(info: Info, min_usd: float | None, *, warn: bool = True) -> float:
    threshold = _context(info).services.settings.whale_min_usd
    if min_usd is None:
        return threshold
    if not math.isfinite(min_usd) or min_usd < 0:
        raise BadUserInput("minUsd must be a finite number of USD, 0 or more")
    if min_usd < threshold and warn:
        _context(info).warn(
            "BELOW_THRESHOLD",
            f"transfers are tracked from {threshold:,.0f} USD: smaller ones are not stored",
            thresholdUsd=threshold,
        )
    return min_usd


def _chain(chain: str | None) -> str | None:
    if chain is None:
        return None
    if len(chain) > MAX_CHAIN_CHARS or not chain.strip():
        raise BadUserInput(
            f"chain must be a chain name such as ethereum (at most {MAX_CHAIN_CHARS} characters)"
        )
    return chain.strip().lower()


@strawberry.type
class WhaleQuery:
    @strawberry.field(
        description="Large transfers, newest first: found by the gateway in new blocks of "
        "Ethereum, BSC, Polygon (native coins and USDT, USDC, WETH, WBTC, DAI...) and Bitcoin, "
        "valued at its own consensus price when they happened, plus those Whale Alert and "
        "Bitquery report when keyed. `minUsd` defaults to the tracking threshold "
        "(GATEWAY_WHALE_MIN_USD, 1,000,000), `since` to 24 hours ago. Transfers a reorg "
        "withdrew are left out."
    )
    async def whale_transactions(
        self,
        info: Info,
        min_usd: float | None = None,
        chain: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[WhaleTransaction]:
        if not 1 <= limit <= MAX_WHALES:
            raise BadUserInput(f"limit must be between 1 and {MAX_WHALES}")
        threshold = _min_usd(info, min_usd)
        start = utc_now() - DEFAULT_WINDOW if since is None else _utc(since)
        services = _context(info).services
        if not services.settings.whale_tracking:
            _context(info).warn(
                "WHALE_TRACKING_OFF", "whale tracking is off (GATEWAY_WHALE_TRACKING=0)"
            )
        found = await WhaleStore(services.storage).recent(
            since=start, chain=_chain(chain), min_usd=threshold, limit=limit
        )
        return [WhaleTransaction.build(t) for t in found]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@strawberry.type
class WhaleSubscription:
    @strawberry.subscription(
        description="Each large transfer as it is found (at least `minUsd`, default the "
        "tracking threshold), and each withdrawal (`removed: true`) when a reorg replaced the "
        "block of one sent before."
    )
    def whale_transactions(
        self, info: Info, min_usd: float | None = None
    ) -> AsyncGenerator[WhaleTransaction, None]:
        # Checked before the stream exists: a bad argument is an error of the subscribe request.
        # (No warning here: a shared subscription's context is not one client's response.)
        threshold = _min_usd(info, min_usd, warn=False)
        return _whales(_context(info), threshold)


async def _whales(
    context: RequestContext, threshold: float
) -> AsyncGenerator[WhaleTransaction, None]:
    with context.services.bus.whales.subscribe() as transfers:
        async for transfer in transfers:
            if transfer.amount_usd >= threshold:
                yield WhaleTransaction.build(transfer)

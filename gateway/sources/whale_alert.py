"""Whale Alert (keyed): large transactions it has seen on many chains.

`GET /v1/transactions?api_key=…&min_value=…&start=<unix>[&cursor=…]` (https://docs.whale-alert.io,
the v1 REST API; the free plan covers the last hour, `min_value` >= 500,000 USD) answers::

    {"result": "success", "cursor": "2bc7e46-2bc7e46-5c66c0a7", "count": 1,
     "transactions": [{"blockchain": "ethereum", "symbol": "usdt", "id": "710406265",
       "transaction_type": "transfer", "hash": "d1e52138…62b4",
       "from": {"address": "46705dff…23b8", "owner": "huobi", "owner_type": "exchange"},
       "to": {"address": "c1b5915f…45af", "owner": "", "owner_type": "unknown"},
       "timestamp": 1591028741, "amount": 1000000, "amount_usd": 997749.6,
       "transaction_count": 1}]}

EVM hashes and addresses come without "0x"; they are given it (lower-cased) so a transfer Whale
Alert reports and one the gateway found itself are the same row. `amount_usd` is Whale Alert's
own valuation (`price_usd` stays None); `owner` becomes the label. An error answers
`{"result": "error", "message": "…"}`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError
from gateway.onchain_models import NATIVE_INDEX, WhaleTransfer, chain_name
from gateway.sources.base import number_or_none
from gateway.sources.chain_stats import fetch_parsed, payload_fail
from gateway.upstream.client import UpstreamClient

__all__ = ["TRANSACTIONS_ENDPOINT", "WhaleAlertPage", "fetch_transactions", "parse_transactions"]

TRANSACTIONS_ENDPOINT: Final = "/transactions"
_EVM_CHAINS: Final = frozenset({"ethereum", "bsc", "polygon"})


class WhaleAlertPage:
    """One answer: the transfers and the cursor to continue from."""

    def __init__(self, transfers: list[WhaleTransfer], cursor: str | None) -> None:
        self.transfers = transfers
        self.cursor = cursor


def _evm(value: str, chain: str) -> str:
    if chain in _EVM_CHAINS:
        return "0x" + value.lower().removeprefix("0x")
    return value


def _party(item: Any, side: str, chain: str, fail: Any) -> tuple[str, str | None]:
    party = item.get(side)
    if not isinstance(party, dict) or not isinstance(party.get("address"), str):
        raise fail(f"{side}: expected an object with an address")
    owner = party.get("owner")
    label = owner.strip() if isinstance(owner, str) and owner.strip() else None
    return _evm(party["address"], chain), label


def parse_transactions(payload: Any, *, provider: str = "whale-alert") -> WhaleAlertPage:
    fail = payload_fail(provider, TRANSACTIONS_ENDPOINT)
    if not isinstance(payload, dict):
        raise fail("expected an object")
    if payload.get("result") != "success":
        message = payload.get("message") or "error"
        raise UpstreamError(
            f"Whale Alert: {message}", provider=provider, endpoint=TRANSACTIONS_ENDPOINT
        )
    items = payload.get("transactions") or []
    if not isinstance(items, list):
        raise fail("transactions is not a list")
    transfers: list[WhaleTransfer] = []
    for item in items:
        if not isinstance(item, dict):
            raise fail("a transaction is not an object")
        chain = chain_name(str(item.get("blockchain", "")))
        tx_hash, symbol = item.get("hash"), item.get("symbol")
        amount = number_or_none(item.get("amount"))
        amount_usd = number_or_none(item.get("amount_usd"))
        stamp = number_or_none(item.get("timestamp"))
        if not chain or not isinstance(tx_hash, str) or not isinstance(symbol, str):
            raise fail("a transaction without blockchain, hash or symbol")
        if amount is None or amount_usd is None or stamp is None:
            raise fail(f"{tx_hash}: amount, amount_usd and timestamp must be numbers")
        if not all(math.isfinite(v) and v >= 0 for v in (amount, amount_usd, stamp)):
            raise fail(f"{tx_hash}: a figure is not a finite, non-negative number")
        from_address, from_label = _party(item, "from", chain, fail)
        to_address, to_label = _party(item, "to", chain, fail)
        transfers.append(
            WhaleTransfer(
                chain=chain,
                hash=_evm(tx_hash, chain),
                log_index=NATIVE_INDEX,
                from_address=from_address,
                to_address=to_address,
                asset=symbol.upper(),
                amount=amount,
                amount_usd=amount_usd,
                at=datetime.fromtimestamp(stamp, UTC),
                provider=provider,
                from_label=from_label,
                to_label=to_label,
            )
        )
    cursor = payload.get("cursor")
    return WhaleAlertPage(transfers, cursor if isinstance(cursor, str) and cursor else None)


async def fetch_transactions(
    client: UpstreamClient,
    provider: ProviderConfig,
    key: str | None,
    *,
    min_usd: float,
    start: datetime,
    cursor: str | None = None,
) -> WhaleAlertPage:
    params = {"min_value": str(int(min_usd)), "start": str(int(start.timestamp()))}
    if cursor:
        params["cursor"] = cursor
    provider_id = provider.id
    page: WhaleAlertPage = await fetch_parsed(
        client,
        provider,
        TRANSACTIONS_ENDPOINT,
        lambda p: parse_transactions(p, provider=provider_id),
        key=key,
        params=params,
    )
    return page

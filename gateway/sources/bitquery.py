"""Bitquery (keyed): large EVM token and coin transfers, from its GraphQL streaming API (v2).

`POST https://streaming.bitquery.io/graphql` with `Authorization: Bearer <token>` and the query
below (EVM cube `Transfers`, fields as documented at
https://docs.bitquery.io/docs/graphql-reference/objects/evm-transfer-fields-transfer/:
`Transfer.Amount` and `AmountInUSD` decimal strings, `Sender`, `Receiver`, `Success`,
`Currency.Symbol`; `Block.Time/Number/Hash`; `Transaction.Hash`) answers::

    {"data": {"EVM": {"Transfers": [{"Block": {"Time": "2024-03-25T08:45:11Z",
      "Number": "19512345", "Hash": "0x…"}, "Transaction": {"Hash": "0x…"},
      "Transfer": {"Amount": "2000000", "AmountInUSD": "2000400.1", "Sender": "0x…",
      "Receiver": "0x…", "Currency": {"Symbol": "USDT", "SmartContract": "0x…"}}}]}}}

or `{"errors": [{"message": "…"}]}`. `AmountInUSD` is Bitquery's own valuation (`price_usd`
stays None). Bitquery does not say which log a transfer is, so each is keyed by its transaction
and asset (`NATIVE_INDEX`), as a whale API's report is.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError
from gateway.onchain_models import NATIVE_INDEX, WhaleTransfer
from gateway.sources.base import number_or_none
from gateway.sources.chain_stats import fetch_parsed, payload_fail
from gateway.upstream.client import UpstreamClient

__all__ = ["NETWORKS", "TRANSFERS_QUERY", "fetch_transfers", "parse_transfers"]

# Our chain name -> Bitquery's EVM network.
NETWORKS: Final = {"ethereum": "eth", "bsc": "bsc", "polygon": "matic"}

TRANSFERS_QUERY: Final = """
query ($network: evm_network!, $min: String!, $since: DateTime!) {
  EVM(network: $network, dataset: realtime) {
    Transfers(
      where: {Block: {Time: {since: $since}},
              Transfer: {AmountInUSD: {ge: $min}, Success: true}}
      orderBy: {descending: Block_Time}
      limit: {count: 100}
    ) {
      Block { Time Number Hash }
      Transaction { Hash }
      Transfer { Amount AmountInUSD Sender Receiver Currency { Symbol SmartContract } }
    }
  }
}
"""


def _text(section: Any, key: str, where: str, fail: Any) -> str:
    value = section.get(key) if isinstance(section, dict) else None
    if not isinstance(value, str) or not value:
        raise fail(f"{where}: missing {key}")
    return value


def parse_transfers(payload: Any, *, chain: str, provider: str = "bitquery") -> list[WhaleTransfer]:
    fail = payload_fail(provider, "EVM.Transfers")
    if not isinstance(payload, dict):
        raise fail("expected an object")
    errors = payload.get("errors")
    if errors:
        first = errors[0] if isinstance(errors, list) and errors else errors
        message = first.get("message") if isinstance(first, dict) else str(first)
        raise UpstreamError(f"Bitquery: {message}", provider=provider, endpoint="EVM.Transfers")
    data = payload.get("data")
    evm = data.get("EVM") if isinstance(data, dict) else None
    rows = evm.get("Transfers") if isinstance(evm, dict) else None
    if not isinstance(rows, list):
        raise fail("expected data.EVM.Transfers to be a list")
    transfers: list[WhaleTransfer] = []
    for row in rows:
        if not isinstance(row, dict):
            raise fail("a transfer is not an object")
        block, transfer = row.get("Block"), row.get("Transfer")
        tx_hash = _text(row.get("Transaction"), "Hash", "Transaction", fail)
        amount = number_or_none(_text(transfer, "Amount", tx_hash, fail), strings=True)
        amount_usd = number_or_none(_text(transfer, "AmountInUSD", tx_hash, fail), strings=True)
        if (
            amount is None
            or amount_usd is None
            or not (math.isfinite(amount) and math.isfinite(amount_usd) and amount_usd >= 0)
        ):
            raise fail(f"{tx_hash}: Amount and AmountInUSD must be numbers")
        try:
            at = datetime.fromisoformat(_text(block, "Time", tx_hash, fail).replace("Z", "+00:00"))
        except ValueError:
            raise fail(f"{tx_hash}: Block.Time is not a time") from None
        number = number_or_none(
            block.get("Number") if isinstance(block, dict) else None, strings=True
        )
        block_hash = block.get("Hash") if isinstance(block, dict) else None
        currency = transfer.get("Currency") if isinstance(transfer, dict) else None
        transfers.append(
            WhaleTransfer(
                chain=chain,
                hash=tx_hash.lower(),
                log_index=NATIVE_INDEX,
                from_address=_text(transfer, "Sender", tx_hash, fail).lower(),
                to_address=_text(transfer, "Receiver", tx_hash, fail).lower(),
                asset=_text(currency, "Symbol", tx_hash, fail).upper(),
                amount=amount,
                amount_usd=amount_usd,
                at=at if at.tzinfo else at.replace(tzinfo=UTC),
                provider=provider,
                block_number=int(number) if number is not None else None,
                block_hash=block_hash.lower() if isinstance(block_hash, str) else None,
            )
        )
    return transfers


async def fetch_transfers(
    client: UpstreamClient,
    provider: ProviderConfig,
    key: str | None,
    *,
    chain: str,
    min_usd: float,
    since: datetime,
) -> list[WhaleTransfer]:
    body = {
        "query": TRANSFERS_QUERY,
        "variables": {
            "network": NETWORKS[chain],
            "min": str(min_usd),
            "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    provider_id = provider.id
    transfers: list[WhaleTransfer] = await fetch_parsed(
        client,
        provider,
        "",
        lambda p: parse_transfers(p, chain=chain, provider=provider_id),
        key=key,
        method="POST",
        json=body,
    )
    return transfers

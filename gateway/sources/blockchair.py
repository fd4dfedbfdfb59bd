"""Blockchair: network statistics of Bitcoin and Ethereum (free: 30 requests a minute).

`GET /{chain}/stats` (https://blockchair.com/api/docs#link_001) answers
`{"data": {...}, "context": {"code": 200, "state": 840000, "cache": {...}, ...}}`; `data` holds
the chain's counters, as numbers or (for big ones such as `hashrate_24h`) decimal strings::

    {"blocks": 840001, "transactions": 1001234567, "blocks_24h": 144,
     "transactions_24h": 612345, "mempool_transactions": 45678, "mempool_size": 98765432,
     "mempool_tps": 4.2, "difficulty": 86388558925171.02, "hashrate_24h": "6.1e+20",
     "best_block_height": 840000, "nodes": 17712, "volume_24h": 123456789012345,
     "average_transaction_fee_24h": 12345, "suggested_transaction_fee_per_byte_sat": 21, ...}

Amounts are in the chain's base unit (satoshi, wei), as Blockchair gives them; the metric keeps
Blockchair's name. USD figures (`market_price_usd`, `*_usd`) are not read: prices are the
gateway's own. An error answers `context.code` >= 400 with `context.error`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError
from gateway.models import utc_now
from gateway.onchain_models import NetworkStat
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stats_from
from gateway.upstream.client import UpstreamClient

__all__ = ["CHAINS", "fetch_stats", "parse_stats", "stats_path"]

# Our chain name -> Blockchair's, for the chains whose statistics are collected.
CHAINS: Final = {"bitcoin": "bitcoin", "ethereum": "ethereum"}
_FIELDS: Final = (
    "blocks", "transactions", "blocks_24h", "transactions_24h", "mempool_transactions",
    "mempool_size", "mempool_tps", "difficulty", "hashrate_24h", "best_block_height", "nodes",
    "volume_24h", "average_transaction_fee_24h", "suggested_transaction_fee_per_byte_sat",
)  # fmt: skip
_METRICS: Final = {name: (name, 1.0) for name in _FIELDS}


def stats_path(chain: str) -> str:
    return f"/{CHAINS[chain]}/stats"


def parse_stats(
    payload: Any, observed_at: datetime, *, chain: str, provider: str = "blockchair"
) -> list[NetworkStat]:
    """The counters of a `/{chain}/stats` answer; UpstreamError for an error answer."""
    endpoint = stats_path(chain)
    fail = payload_fail(provider, endpoint)
    if not isinstance(payload, dict):
        raise fail("expected an object")
    context = payload.get("context")
    code = context.get("code") if isinstance(context, dict) else None
    if isinstance(code, int) and code >= 400:
        message = (context or {}).get("error") or f"code {code}"
        raise UpstreamError(f"Blockchair: {message}", provider=provider, endpoint=endpoint)
    return stats_from(
        payload.get("data"),
        _METRICS,
        chain=chain,
        provider=provider,
        observed_at=observed_at,
        fail=fail,
    )


async def fetch_stats(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[NetworkStat]:
    """Both chains' statistics (two requests)."""
    stats: list[NetworkStat] = []
    provider_id = provider.id
    for chain in CHAINS:

        def parse(payload: Any, chain: str = chain) -> list[NetworkStat]:
            return parse_stats(payload, utc_now(), chain=chain, provider=provider_id)

        stats += await fetch_parsed(client, provider, stats_path(chain), parse, key=key)
    return stats

"""Blockscout: network statistics of an EVM chain, free, no key.

`GET /api/v2/stats` (Blockscout's REST API v2, https://docs.blockscout.com/devs/apis/rest)
answers one object of counters, most as decimal strings::

    {"total_blocks": "19512345", "total_addresses": "321456789",
     "total_transactions": "2345678901", "transactions_today": "1187654",
     "gas_used_today": "108392837283", "average_block_time": 12096.0,
     "network_utilization_percentage": 49.7, "coin_price": "3412.5",
     "gas_prices": {"slow": 11.2, "average": 12.5, "fast": 14.1}, ...}

`average_block_time` is in milliseconds (stored in seconds). The coin price and market cap are
not read (prices are the gateway's own consensus), nor the gas prices (`gas` is served from
the RPC nodes and gas oracles).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.models import utc_now
from gateway.onchain_models import NetworkStat
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stats_from
from gateway.upstream.client import UpstreamClient

__all__ = ["STATS_ENDPOINT", "fetch_stats", "parse_stats"]

STATS_ENDPOINT: Final = "/stats"
_METRICS: Final = {
    "total_blocks": ("total_blocks", 1.0),
    "total_addresses": ("total_addresses", 1.0),
    "total_transactions": ("total_transactions", 1.0),
    "transactions_today": ("transactions_today", 1.0),
    "gas_used_today": ("gas_used_today", 1.0),
    "average_block_time": ("average_block_time_seconds", 0.001),
    "network_utilization_percentage": ("network_utilization_pct", 1.0),
}


def parse_stats(
    payload: Any, observed_at: datetime, *, chain: str, provider: str = "blockscout"
) -> list[NetworkStat]:
    """The counters of a `/stats` answer; UpstreamPayloadError for a wrong shape."""
    return stats_from(
        payload,
        _METRICS,
        chain=chain,
        provider=provider,
        observed_at=observed_at,
        fail=payload_fail(provider, STATS_ENDPOINT),
    )


async def fetch_stats(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[NetworkStat]:
    chain, provider_id = provider.chain or "ethereum", provider.id
    stats: list[NetworkStat] = await fetch_parsed(
        client,
        provider,
        STATS_ENDPOINT,
        lambda p: parse_stats(p, utc_now(), chain=chain, provider=provider_id),
        key=key,
    )
    return stats

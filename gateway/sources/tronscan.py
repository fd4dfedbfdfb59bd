"""TronScan (keyed): the Tron network's newest and confirmed block, and its sync state.

`GET /api/system/status` with header `TRON-PRO-API-KEY` answers (shape recorded from a 2023
answer quoted in public code; TronScan's reference at https://docs.tronscan.org/ could not be
read here)::

    {"database": {"block": 56095588, "confirmedBlock": 56095570},
     "sync": {"progress": 99.99999732599234}, "network": {"type": "mainnet"},
     "full": {"block": 56095588}, "solidity": {"block": 56095570}}

`full.block` is the newest block, `solidity.block` the newest irreversible one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.models import utc_now
from gateway.onchain_models import NetworkStat
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stat_value
from gateway.upstream.client import UpstreamClient

__all__ = ["STATUS_ENDPOINT", "fetch_stats", "parse_status"]

STATUS_ENDPOINT: Final = "/system/status"
_FIGURES: Final = (
    ("full", "block", "latest_block"),
    ("solidity", "block", "confirmed_block"),
    ("sync", "progress", "sync_progress_pct"),
)


def parse_status(
    payload: Any, observed_at: datetime, *, chain: str = "tron", provider: str = "tronscan"
) -> list[NetworkStat]:
    fail = payload_fail(provider, STATUS_ENDPOINT)
    if not isinstance(payload, dict):
        raise fail("expected an object")
    stats: list[NetworkStat] = []
    for section, field, metric in _FIGURES:
        part = payload.get(section)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise fail(f"{section}: expected an object")
        value = stat_value(part.get(field), f"{section}.{field}", fail)
        if value is not None:
            stats.append(NetworkStat(chain, provider, metric, value, observed_at))
    if not stats:
        raise fail("no block height in the answer")
    return stats


async def fetch_stats(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[NetworkStat]:
    chain, provider_id = provider.chain or "tron", provider.id
    stats: list[NetworkStat] = await fetch_parsed(
        client,
        provider,
        STATUS_ENDPOINT,
        lambda p: parse_status(p, utc_now(), chain=chain, provider=provider_id),
        key=key,
    )
    return stats

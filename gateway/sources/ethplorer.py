"""Ethplorer: Ethereum's newest block as Ethplorer's index has it (free with "freekey").

`GET /getLastBlock?apiKey=…` (https://github.com/EverexIO/Ethplorer/wiki/Ethplorer-API)
answers `{"lastBlock": 19512345}`. It is the one network-wide figure Ethplorer's API offers
(its other endpoints are per token or address); an error comes as
`{"error": {"code": 1, "message": "Invalid API key"}}` with HTTP 200 or 4xx.
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

__all__ = ["LAST_BLOCK_ENDPOINT", "fetch_stats", "parse_last_block"]

LAST_BLOCK_ENDPOINT: Final = "/getLastBlock"


def parse_last_block(
    payload: Any, observed_at: datetime, *, chain: str = "ethereum", provider: str = "ethplorer"
) -> list[NetworkStat]:
    """`last_block` from a `/getLastBlock` answer; an error object raises UpstreamError."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message", "error")
        raise UpstreamError(
            f"Ethplorer: {message}", provider=provider, endpoint=LAST_BLOCK_ENDPOINT
        )
    return stats_from(
        payload,
        {"lastBlock": ("last_block", 1.0)},
        chain=chain,
        provider=provider,
        observed_at=observed_at,
        fail=payload_fail(provider, LAST_BLOCK_ENDPOINT),
    )


async def fetch_stats(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[NetworkStat]:
    chain, provider_id = provider.chain or "ethereum", provider.id
    stats: list[NetworkStat] = await fetch_parsed(
        client,
        provider,
        LAST_BLOCK_ENDPOINT,
        lambda p: parse_last_block(p, utc_now(), chain=chain, provider=provider_id),
        key=key,
    )
    return stats

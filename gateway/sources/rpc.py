"""Ethereum-style JSON-RPC nodes (Ethereum, BSC, Polygon): chain heads through the RPC pools.

`parse_block_number` is the pure part (tested against fixture payloads); `fetch_block_number`
sends `eth_blockNumber` to one node through the shared client, as a pool's `fn`. The request
is a POST but a read, so it is marked idempotent (coalesced); it is not retried on the same
node, because failing over to the pool's next node is the faster retry.
"""

from __future__ import annotations

from typing import Any

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.upstream.client import NO_RETRY, UpstreamClient

__all__ = ["BLOCK_NUMBER_CALL", "fetch_block_number", "parse_block_number"]

BLOCK_NUMBER_CALL = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


def parse_block_number(payload: Any, *, provider: str) -> int:
    """The block number of a JSON-RPC `eth_blockNumber` answer ("0x…" quantity)."""
    if not isinstance(payload, dict):
        raise UpstreamPayloadError("JSON-RPC answer is not an object", provider=provider)
    if "error" in payload:
        error = payload["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamError(f"JSON-RPC error: {message}", provider=provider)
    result = payload.get("result")
    if not isinstance(result, str) or not result.startswith("0x"):
        raise UpstreamPayloadError(
            f"eth_blockNumber result {result!r} is not a quantity", provider=provider
        )
    try:
        number = int(result, 16)
    except ValueError:
        raise UpstreamPayloadError(
            f"eth_blockNumber result {result!r} is not hex", provider=provider
        ) from None
    if number <= 0:
        raise UpstreamPayloadError(
            f"eth_blockNumber result {number} is not a block", provider=provider
        )
    return number


async def fetch_block_number(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> int:
    """Ask one node for its head block (parsed inside the attempt, so bad bodies count)."""
    provider_id = provider.id
    number: int = await client.request_parsed(
        provider,
        "",
        lambda payload: parse_block_number(payload, provider=provider_id),
        method="POST",
        json=BLOCK_NUMBER_CALL,
        idempotent=True,
        key=key,
        retry=NO_RETRY,  # the pool's failover to the next node is the retry
    )
    return number

"""Chain tips from the non-EVM sources: Bitcoin (mempool.space, Blockchair) and Tron (TronGrid).

The EVM chains' heads come from their JSON-RPC nodes (`gateway.sources.jsonrpc`); these are the
other chains' equivalents, each a pure `parse_…` (tested against fixture payloads shaped like
the documented responses) and a fetch through the shared upstream client:

    mempool.space  GET  /blocks/tip/height     plain text: "840000"
    Blockchair     GET  /bitcoin/stats         {"data": {"best_block_height": 840000, …}, …}
    TronGrid       POST /wallet/getblock {"detail": false}
                                               {"blockID": "…", "block_header": {"raw_data":
                                                 {"number": 61234567, "timestamp": …}, …}}

(TronGrid's getblock without `id_or_num` answers the newest block; `detail: false` leaves out
its transactions, so a poll costs a few hundred bytes instead of the whole block.)
TronScan needs a key and its status endpoint's shape could not be verified, so it is not read.

`TIP_READERS` maps a provider (by `collector`, else `id`) to its reader and the chain it
serves. Must never return a height that did not parse as a positive integer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.upstream.client import NO_RETRY, UpstreamClient

__all__ = [
    "TIP_READERS",
    "TipReader",
    "parse_blockchair_stats_height",
    "parse_mempool_tip_height",
    "parse_trongrid_block_number",
    "tip_reader_for",
]

TipFetch = Callable[[UpstreamClient, ProviderConfig, str | None], Awaitable[int]]


def _height(value: Any, what: str, provider: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UpstreamPayloadError(f"{what} {value!r:.60} is not a block height", provider=provider)
    return value


def parse_mempool_tip_height(text: str, *, provider: str = "mempool") -> int:
    """mempool.space `/blocks/tip/height`: the height as plain decimal text."""
    stripped = text.strip()
    if not stripped.isdigit() or len(stripped) > 12:
        raise UpstreamPayloadError(
            f"tip height {stripped[:40]!r} is not a number", provider=provider
        )
    return _height(int(stripped), "tip height", provider)


def parse_blockchair_stats_height(payload: Any, *, provider: str = "blockchair") -> int:
    """Blockchair `/bitcoin/stats`: `data.best_block_height`."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise UpstreamPayloadError("stats answer has no data object", provider=provider)
    return _height(data.get("best_block_height"), "best_block_height", provider)


def parse_trongrid_block_number(payload: Any, *, provider: str = "trongrid") -> int:
    """TronGrid `/wallet/getblock`: `block_header.raw_data.number`."""
    header = payload.get("block_header") if isinstance(payload, dict) else None
    raw = header.get("raw_data") if isinstance(header, dict) else None
    if not isinstance(raw, dict):
        raise UpstreamPayloadError("block answer has no block_header.raw_data", provider=provider)
    return _height(raw.get("number"), "block number", provider)


async def _mempool_tip(client: UpstreamClient, provider: ProviderConfig, key: str | None) -> int:
    text = await client.request_text(provider, "/blocks/tip/height", key=key, retry=NO_RETRY)
    try:
        return parse_mempool_tip_height(text, provider=provider.id)
    except UpstreamPayloadError as exc:
        client.report_payload_error(provider, exc)
        raise


async def _blockchair_tip(client: UpstreamClient, provider: ProviderConfig, key: str | None) -> int:
    provider_id = provider.id
    height: int = await client.request_parsed(
        provider,
        "/bitcoin/stats",
        lambda payload: parse_blockchair_stats_height(payload, provider=provider_id),
        key=key,
        retry=NO_RETRY,
    )
    return height


async def _trongrid_tip(client: UpstreamClient, provider: ProviderConfig, key: str | None) -> int:
    provider_id = provider.id
    number: int = await client.request_parsed(
        provider,
        "/wallet/getblock",
        lambda payload: parse_trongrid_block_number(payload, provider=provider_id),
        method="POST",
        json={"detail": False},
        idempotent=True,
        key=key,
        retry=NO_RETRY,
    )
    return number


@dataclass(frozen=True, slots=True)
class TipReader:
    """How to read one provider's tip height, and the chain it is the tip of."""

    chain: str
    fetch: TipFetch


TIP_READERS: Final[Mapping[str, TipReader]] = {
    "mempool": TipReader("bitcoin", _mempool_tip),
    "blockchair": TipReader("bitcoin", _blockchair_tip),
    "trongrid": TipReader("tron", _trongrid_tip),
}


def tip_reader_for(provider: ProviderConfig) -> TipReader | None:
    """The tip reader of a provider (matched by `collector`, else `id`), if it has one."""
    return TIP_READERS.get(provider.collector or provider.id)

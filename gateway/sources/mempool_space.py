"""mempool.space (free, no key): Bitcoin network statistics, recent blocks, block transactions.

Documented at https://mempool.space/docs/api/rest (Esplora-compatible). Read here:

* `GET /mempool` -> `{"count": 45678, "vsize": 98765432, "total_fee": 123456789,
  "fee_histogram": [...]}`: `mempool_transactions`, `mempool_vsize`, `mempool_total_fee_sat`;
* `GET /v1/difficulty-adjustment` -> `{"progressPercent": 44.4, "difficultyChange": 1.2,
  "remainingBlocks": 1121, "timeAvg": 589000, ...}`: `difficulty_progress_pct`,
  `difficulty_change_pct`, `blocks_to_retarget`, `average_block_time_seconds` (timeAvg is ms);
* `GET /blocks` -> the 10 newest blocks, newest first: `[{"id": hash, "height": 840000,
  "timestamp": 1713571767, "tx_count": 3050, "previousblockhash": hash, ...}]`;
* `GET /block/{hash}/txs/{start}` -> up to 25 transactions of the block from index `start` (a
  multiple of 25): `[{"txid", "vin": [{"is_coinbase", "prevout": {"scriptpubkey_address",
  "value"}}], "vout": [{"scriptpubkey_address", "value"}], "status": {...}}]`, values in sats.

`btc_transfer(tx)` reads what a transaction moves to others: the outputs to addresses that are
not among its inputs' (change goes back to an input address), their sum, the largest output's
address as the recipient and the input address that contributed most as the sender. A coinbase
transaction, or one that only pays its own addresses, moves nothing to anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.models import utc_now
from gateway.onchain_models import NetworkStat
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stats_from
from gateway.upstream.client import UpstreamClient

__all__ = [
    "BLOCKS_ENDPOINT",
    "PAGE_SIZE",
    "BtcBlock",
    "BtcTransfer",
    "btc_transfer",
    "fetch_block_txs",
    "fetch_blocks",
    "fetch_stats",
    "parse_block_txs",
    "parse_blocks",
    "parse_difficulty",
    "parse_mempool",
]

BLOCKS_ENDPOINT: Final = "/blocks"
PAGE_SIZE: Final = 25  # transactions per /block/{hash}/txs page
SATS: Final = 100_000_000


@dataclass(frozen=True, slots=True)
class BtcBlock:
    height: int
    hash: str
    previous: str | None
    at: datetime
    tx_count: int


@dataclass(frozen=True, slots=True)
class BtcTransfer:
    """What one transaction moved to others (sats), from whom, to whom."""

    txid: str
    from_address: str
    to_address: str
    sats: int


def parse_mempool(payload: Any, observed_at: datetime, *, provider: str) -> list[NetworkStat]:
    return stats_from(
        payload,
        {
            "count": ("mempool_transactions", 1.0),
            "vsize": ("mempool_vsize", 1.0),
            "total_fee": ("mempool_total_fee_sat", 1.0),
        },
        chain="bitcoin",
        provider=provider,
        observed_at=observed_at,
        fail=payload_fail(provider, "/mempool"),
    )


def parse_difficulty(payload: Any, observed_at: datetime, *, provider: str) -> list[NetworkStat]:
    return stats_from(
        payload,
        {
            "progressPercent": ("difficulty_progress_pct", 1.0),
            "difficultyChange": ("difficulty_change_pct", 1.0),
            "remainingBlocks": ("blocks_to_retarget", 1.0),
            "timeAvg": ("average_block_time_seconds", 0.001),
        },
        chain="bitcoin",
        provider=provider,
        observed_at=observed_at,
        fail=payload_fail(provider, "/v1/difficulty-adjustment"),
    )


def _int(value: Any, where: str, provider: str, endpoint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise payload_fail(provider, endpoint)(f"{where}: {value!r:.40} is not a count")
    return value


def _hash(value: Any, where: str, provider: str, endpoint: str) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise payload_fail(provider, endpoint)(f"{where}: {value!r:.70} is not a hash")
    return value.lower()


def parse_blocks(payload: Any, *, provider: str) -> list[BtcBlock]:
    """The blocks of a `/blocks` answer, oldest first."""
    if not isinstance(payload, list):
        raise payload_fail(provider, BLOCKS_ENDPOINT)("expected an array of blocks")
    blocks: list[BtcBlock] = []
    for item in payload:
        if not isinstance(item, dict):
            raise payload_fail(provider, BLOCKS_ENDPOINT)("a block is not an object")
        previous = item.get("previousblockhash")
        blocks.append(
            BtcBlock(
                height=_int(item.get("height"), "height", provider, BLOCKS_ENDPOINT),
                hash=_hash(item.get("id"), "id", provider, BLOCKS_ENDPOINT),
                previous=None
                if previous is None
                else _hash(previous, "previousblockhash", provider, BLOCKS_ENDPOINT),
                at=datetime.fromtimestamp(
                    _int(item.get("timestamp"), "timestamp", provider, BLOCKS_ENDPOINT), UTC
                ),
                tx_count=_int(item.get("tx_count"), "tx_count", provider, BLOCKS_ENDPOINT),
            )
        )
    return sorted(blocks, key=lambda b: b.height)


def parse_block_txs(payload: Any, *, provider: str, endpoint: str) -> list[dict[str, Any]]:
    """A page of transactions, each checked for what `btc_transfer` reads."""
    fail = payload_fail(provider, endpoint)
    if not isinstance(payload, list):
        raise fail("expected an array of transactions")
    for tx in payload:
        if not isinstance(tx, dict) or not isinstance(tx.get("txid"), str):
            raise fail("a transaction without a txid")
        for side in ("vin", "vout"):
            if not isinstance(tx.get(side), list) or not all(isinstance(x, dict) for x in tx[side]):
                raise fail(f"{tx['txid']}: {side} is not a list of objects")
        for out in tx["vout"]:
            _int(out.get("value"), "vout value", provider, endpoint)
        for vin in tx["vin"]:
            prevout = vin.get("prevout")
            if not vin.get("is_coinbase") and not isinstance(prevout, dict):
                raise fail(f"{tx['txid']}: an input without its prevout")
            if isinstance(prevout, dict):
                _int(prevout.get("value"), "prevout value", provider, endpoint)
    return payload


def btc_transfer(tx: dict[str, Any]) -> BtcTransfer | None:
    """What `tx` (as `parse_block_txs` checked it) moved to others; None for nothing."""
    inputs: dict[str, int] = {}
    for vin in tx["vin"]:
        if vin.get("is_coinbase"):
            return None
        prevout = vin["prevout"]
        address = prevout.get("scriptpubkey_address")
        if isinstance(address, str):
            inputs[address] = inputs.get(address, 0) + prevout["value"]
    outputs = [
        (out["scriptpubkey_address"], out["value"])
        for out in tx["vout"]
        if isinstance(out.get("scriptpubkey_address"), str)
        and out["scriptpubkey_address"] not in inputs
    ]
    if not outputs or not inputs:
        return None
    to_address = max(outputs, key=lambda o: o[1])[0]
    from_address = max(inputs.items(), key=lambda i: i[1])[0]
    return BtcTransfer(tx["txid"], from_address, to_address, sum(v for _, v in outputs))


async def fetch_stats(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[NetworkStat]:
    provider_id = provider.id
    stats: list[NetworkStat] = await fetch_parsed(
        client,
        provider,
        "/mempool",
        lambda p: parse_mempool(p, utc_now(), provider=provider_id),
        key=key,
    )
    stats += await fetch_parsed(
        client,
        provider,
        "/v1/difficulty-adjustment",
        lambda p: parse_difficulty(p, utc_now(), provider=provider_id),
        key=key,
    )
    return stats


async def fetch_blocks(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[BtcBlock]:
    provider_id = provider.id
    blocks: list[BtcBlock] = await fetch_parsed(
        client,
        provider,
        BLOCKS_ENDPOINT,
        lambda p: parse_blocks(p, provider=provider_id),
        key=key,
    )
    return blocks


async def fetch_block_txs(
    client: UpstreamClient, provider: ProviderConfig, key: str | None, block: str, start: int
) -> list[dict[str, Any]]:
    provider_id, path = provider.id, f"/block/{block}/txs/{start}"
    txs: list[dict[str, Any]] = await fetch_parsed(
        client,
        provider,
        path,
        lambda p: parse_block_txs(p, provider=provider_id, endpoint=path),
        key=key,
    )
    return txs

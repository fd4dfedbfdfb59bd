"""Normalized on-chain records: whale transfers, explorer network statistics, DEX pools and
volumes, as the chain sources parse them and the store keeps them.

Like `gateway.models`, every record is a frozen dataclass built only from what an upstream (or
a chain, through its nodes) said: an optional figure nobody gave is None, never a guess. Times
are aware UTC datetimes; money is USD. Chains are the gateway's own lower-case names
("ethereum", "bsc", "polygon", "bitcoin", "tron"; `chain_name` maps an upstream's spelling).
These records never flow through the price bus.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

__all__ = [
    "NATIVE_INDEX",
    "DexPool",
    "DexVolume",
    "NetworkStat",
    "WhaleTransfer",
    "chain_name",
]

# `log_index` of a transfer that is not one ERC-20 log: a native transfer (the transaction's
# own value), or one reported by a whale API that does not say which log it was.
NATIVE_INDEX: Final = -1

# Upstream spellings of chain names -> ours (DefiLlama "Ethereum", Bitquery "eth", WhaleAlert
# "ethereum", Covalent "eth-mainnet", ...). Unknown names are lower-cased as they are.
_CHAIN_NAMES: Final = {
    "eth": "ethereum",
    "eth-mainnet": "ethereum",
    "mainnet": "ethereum",
    "binance": "bsc",
    "binance-smart-chain": "bsc",
    "bnb": "bsc",
    "bnb smart chain": "bsc",
    "bsc-mainnet": "bsc",
    "matic": "polygon",
    "matic-mainnet": "polygon",
    "polygon pos": "polygon",
    "btc": "bitcoin",
    "btc-mainnet": "bitcoin",
    "trx": "tron",
}


def chain_name(upstream: str) -> str:
    """Our name for an upstream's chain name ("Ethereum" -> "ethereum", "eth" -> "ethereum")."""
    lowered = upstream.strip().lower()
    return _CHAIN_NAMES.get(lowered, lowered)


@dataclass(frozen=True, slots=True)
class WhaleTransfer:
    """One large transfer: a native transfer or one ERC-20 `Transfer` log (or one a whale API
    reported), with its USD value at the time.

    `(chain, hash, log_index)` identifies it; `log_index` is `NATIVE_INDEX` for a transaction's
    own value. `block_hash` is the block it was seen in (None when an API did not say): a reorg
    that replaces that block withdraws the transfer (`removed`). `price_usd` is the unit price
    `amount_usd` was computed with (the gateway's consensus at `at`), None when the upstream
    gave the USD value itself.
    """

    chain: str
    hash: str
    log_index: int
    from_address: str
    to_address: str
    asset: str
    amount: float
    amount_usd: float
    at: datetime
    provider: str
    block_number: int | None = None
    block_hash: str | None = None
    from_label: str | None = None
    to_label: str | None = None
    price_usd: float | None = None
    removed: bool = False

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.chain, self.hash, self.log_index)

    def withdrawn(self) -> WhaleTransfer:
        return replace(self, removed=True)


@dataclass(frozen=True, slots=True)
class NetworkStat:
    """One figure an explorer gives about a chain (`metric`, e.g. "total_transactions",
    "mempool_transactions", "average_block_time_seconds"), as that explorer gave it."""

    chain: str
    provider: str
    metric: str
    value: float
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class DexPool:
    """One DEX liquidity pool: `pair` as the upstream writes it ("USDC-WETH"), `dex` the
    exchange (DefiLlama project slug, "uniswap-v3"), `pool_id` the upstream's id for it (an
    address or a DefiLlama pool id). TVL and 24 h volume are the upstream's figures."""

    chain: str
    dex: str
    pair: str
    pool_id: str
    tvl_usd: float | None
    volume_24h_usd: float | None
    provider: str
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class DexVolume:
    """One DEX's traded volume over the last 24 h, across the chains it runs on (DefiLlama)."""

    dex: str
    name: str
    chains: tuple[str, ...]
    volume_24h_usd: float | None
    change_1d_pct: float | None
    provider: str
    observed_at: datetime

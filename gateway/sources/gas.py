"""Fee tiers: Etherscan-family gas oracles, eth_feeHistory the way wallets read it, and
mempool.space's Bitcoin fee recommendation.

Pure parts (tested against fixture payloads and a hand-computed eth_feeHistory):

* `fee_history_tiers(history)`: eth_feeHistory asked with three ascending reward percentiles
  (e.g. [10, 50, 90]) over the last N blocks. For each percentile, the priority fee is the mean
  of that percentile's reward over the blocks that held transactions (an empty block reports 0
  for every percentile, which says nothing about what inclusion costs); a tier is the next
  block's base fee (the last `baseFeePerGas` entry) plus that priority fee. This is what
  MetaMask-style wallets show as low / market / aggressive. With no non-empty block the
  priority fees are 0 and every tier is the base fee.
* `parse_etherscan_gas_oracle(payload)`: Etherscan API v2 `module=gastracker&action=gasoracle`
  (`SafeGasPrice`, `ProposeGasPrice`, `FastGasPrice`, `suggestBaseFee`, in gwei as decimal
  strings; errors come as HTTP 200 with `status` "0").
* `parse_mempool_fees(payload)`: mempool.space `/v1/fees/recommended` (`fastestFee`,
  `halfHourFee`, `hourFee`, `economyFee`, `minimumFee`, sat/vB).

Must never turn an upstream's missing or malformed figure into a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.sources.jsonrpc_results import FeeHistory
from gateway.upstream.client import NO_RETRY, UpstreamClient

__all__ = [
    "ETHERSCAN_FAMILY",
    "GWEI",
    "GasTiers",
    "MempoolFees",
    "OracleGas",
    "fee_history_tiers",
    "fetch_etherscan_gas_oracle",
    "fetch_mempool_fees",
    "parse_etherscan_gas_oracle",
    "parse_mempool_fees",
]

GWEI: Final = 1_000_000_000
# The explorers that answer Etherscan API v2 (matched by `collector`, else `id`).
ETHERSCAN_FAMILY: Final = frozenset({"etherscan", "bscscan", "polygonscan"})


@dataclass(frozen=True, slots=True)
class GasTiers:
    """Total prices per gas (base fee + priority fee), in wei, and the next base fee."""

    slow: float
    standard: float
    fast: float
    base_fee: float


def fee_history_tiers(history: FeeHistory) -> GasTiers:
    """Slow, standard and fast from an eth_feeHistory asked with three ascending percentiles
    (see the module docstring for the arithmetic)."""
    if not history.rewards or any(len(row) != 3 for row in history.rewards):
        raise ValueError("fee history must hold three reward percentiles per block")
    used = [
        row
        for row, ratio in zip(history.rewards, history.gas_used_ratios, strict=True)
        if ratio > 0
    ]
    count = len(used) or 1  # no transactions at all: no priority fee to add
    tips = [sum(row[j] for row in used) / count for j in range(3)]
    base = float(history.next_base_fee)
    return GasTiers(base + tips[0], base + tips[1], base + tips[2], base)


@dataclass(frozen=True, slots=True)
class OracleGas:
    """An Etherscan-family gas oracle's answer, in gwei."""

    safe: float
    propose: float
    fast: float
    base_fee: float | None
    last_block: int | None


def _gwei(value: Any, what: str, provider: str) -> float:
    try:
        number = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number >= 0):
        raise UpstreamPayloadError(f"{what} {value!r:.40} is not a gas price", provider=provider)
    return number


def parse_etherscan_gas_oracle(payload: Any, *, provider: str = "etherscan") -> OracleGas:
    """`status` "1" with the three prices; "0" is the API's error (rate limit, bad key, …)."""
    if not isinstance(payload, dict):
        raise UpstreamPayloadError("gas oracle answer is not an object", provider=provider)
    result = payload.get("result")
    if payload.get("status") != "1":
        detail = result if isinstance(result, str) else payload.get("message")
        text = str(detail)[:200]
        if "rate limit" in text.lower():
            raise UpstreamRateLimited(f"gas oracle: {text}", provider=provider, status=None)
        raise UpstreamError(f"gas oracle refused: {text}", provider=provider)
    if not isinstance(result, dict):
        raise UpstreamPayloadError("gas oracle result is not an object", provider=provider)
    safe = _gwei(result.get("SafeGasPrice"), "SafeGasPrice", provider)
    propose = _gwei(result.get("ProposeGasPrice"), "ProposeGasPrice", provider)
    fast = _gwei(result.get("FastGasPrice"), "FastGasPrice", provider)
    if not safe <= propose <= fast:
        raise UpstreamPayloadError(
            f"gas oracle tiers are out of order ({safe}, {propose}, {fast})", provider=provider
        )
    base = result.get("suggestBaseFee")
    block = result.get("LastBlock")
    last_block = int(block) if isinstance(block, str) and block.isdigit() else None
    return OracleGas(
        safe,
        propose,
        fast,
        _gwei(base, "suggestBaseFee", provider) if base not in (None, "") else None,
        last_block,
    )


@dataclass(frozen=True, slots=True)
class MempoolFees:
    """mempool.space's recommended fee rates, sat/vB."""

    fastest: float
    half_hour: float
    hour: float
    economy: float
    minimum: float


def parse_mempool_fees(payload: Any, *, provider: str = "mempool") -> MempoolFees:
    """`/v1/fees/recommended`: five positive rates, fastest >= half hour >= hour."""
    if not isinstance(payload, dict):
        raise UpstreamPayloadError("fee answer is not an object", provider=provider)
    names = ("fastestFee", "halfHourFee", "hourFee", "economyFee", "minimumFee")
    rates = []
    for name in names:
        value = payload.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UpstreamPayloadError(f"{name} {value!r:.40} is not a number", provider=provider)
        if not (math.isfinite(value) and value > 0):
            raise UpstreamPayloadError(f"{name} {value!r} is not a fee rate", provider=provider)
        rates.append(float(value))
    fees = MempoolFees(*rates)
    if not fees.fastest >= fees.half_hour >= fees.hour:
        raise UpstreamPayloadError("fee rates are out of order", provider=provider)
    return fees


async def fetch_etherscan_gas_oracle(
    client: UpstreamClient, provider: ProviderConfig, key: str | None, chain_id: int
) -> OracleGas:
    """Ask an Etherscan v2 explorer for a chain's gas oracle (`chainid` selects the chain)."""
    provider_id = provider.id
    gas: OracleGas = await client.request_parsed(
        provider,
        "",
        lambda payload: parse_etherscan_gas_oracle(payload, provider=provider_id),
        params={"chainid": str(chain_id), "module": "gastracker", "action": "gasoracle"},
        key=key,
        retry=NO_RETRY,
    )
    return gas


async def fetch_mempool_fees(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> MempoolFees:
    """mempool.space's recommended Bitcoin fee rates."""
    provider_id = provider.id
    fees: MempoolFees = await client.request_parsed(
        provider,
        "/v1/fees/recommended",
        lambda payload: parse_mempool_fees(payload, provider=provider_id),
        key=key,
        retry=NO_RETRY,
    )
    return fees

"""Normalized chain records: block heads and fee tiers, as the chain collectors build them.

Like `gateway.models`, every record is a frozen dataclass built only from what an upstream
sent: a figure the upstream did not give is None, never a guess. Times are aware UTC datetimes.
These records flow from `gateway.chains` to the store (`gateway.store.chains`), the event bus
(`EventBus.chain_heads`, `EventBus.gas`) and the API (`gateway.api.schema.chains`).

Must never import anything above `gateway.models`' layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

__all__ = [
    "EVM_CHAIN_IDS",
    "GAS_METHODS",
    "GAS_UNITS",
    "ChainHead",
    "GasPrice",
    "NodeHead",
]

# The EVM chains the gateway knows, with the chain id their nodes must answer to eth_chainId
# (chainlist.org). A node that answers another id serves another chain and is never used.
EVM_CHAIN_IDS: Final = {"ethereum": 1, "bsc": 56, "polygon": 137}

# How a GasPrice's tiers were obtained, and in what unit they are.
GAS_METHODS: Final = ("ORACLE", "FEE_HISTORY", "GAS_PRICE", "MEMPOOL")
GAS_UNITS: Final = ("gwei", "sat/vB")


@dataclass(frozen=True, slots=True)
class NodeHead:
    """What one node (or tip source) of a chain reported in one polling round.

    `block_number` is None when the node failed this round (`error` says why). `lag_blocks` is
    how far it is behind the highest block any node of the chain reported recently; `lagging`
    says it is past the threshold, so it is DEGRADED and not used for reads.
    """

    chain: str
    provider: str
    block_number: int | None
    lag_blocks: int | None
    lagging: bool
    error: str | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A chain's newest block: the highest any of its nodes reported (ties: pool order).

    `lag_blocks` is how far that block is behind the highest one seen on the chain recently
    (0 unless every node that answered is behind an earlier round). `nodes` is each node's
    report from the same round.
    """

    chain: str
    block_number: int
    provider: str
    lag_blocks: int
    observed_at: datetime
    nodes: tuple[NodeHead, ...] = ()


@dataclass(frozen=True, slots=True)
class GasPrice:
    """Fee tiers for a chain's next block: what to pay per unit to be included slow, soon, now.

    EVM chains: total gas prices in gwei (`base_fee` + a priority fee), `base_fee` the next
    block's base fee (None where the source gives none). Bitcoin: sat/vB (`unit` says which),
    `base_fee` None. `method`: ORACLE (an Etherscan-family gas oracle), FEE_HISTORY (computed
    from eth_feeHistory), GAS_PRICE (eth_gasPrice: one price for all three tiers) or MEMPOOL
    (mempool.space's recommendation). `block_number`: the newest block it was computed from,
    when the source says.
    """

    chain: str
    slow: float
    standard: float
    fast: float
    base_fee: float | None
    unit: str
    method: str
    provider: str
    observed_at: datetime
    block_number: int | None = None

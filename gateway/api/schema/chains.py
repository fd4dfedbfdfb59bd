"""GraphQL for chain data: `chainHeads` and `gas`, as queries and subscriptions.

Queries read what the chain collectors (gateway/chains/) keep: the newest head of every chain
and each node's report from the same round, the newest fee tiers of a chain. Subscriptions
stream the `chain_heads` and `gas` topics of the event bus. Errors keep the resilience contract:
a chain whose every node failed its last round is left out of `chainHeads` and named in
`extensions.warnings` (if every chain failed, the error lists each provider's); `gas` answers
from the last good observation with an UPSTREAM_FALLBACK warning when the last one failed.

Must never compute chain data itself (that is gateway.chains) or serve a figure no upstream gave.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import cast

import strawberry
from strawberry.types import Info

from gateway.api.context import RequestContext
from gateway.chain_models import ChainHead as ChainHeadRecord
from gateway.chain_models import GasPrice as GasRecord
from gateway.chain_models import NodeHead as NodeHeadRecord
from gateway.chains.data import ChainData
from gateway.errors import BadUserInput, GatewayError
from gateway.models import utc_now

__all__ = ["ChainQuery", "ChainSubscription"]

# The warning on gas served from the last good observation because the last one failed.
UPSTREAM_FALLBACK = "UPSTREAM_FALLBACK"


@strawberry.type(description="What one node (or tip source) of a chain reported in a round.")
class NodeHead:
    provider: str
    block_number: int | None = strawberry.field(description="Null when the node failed.")
    lag_blocks: int | None = strawberry.field(
        description="How far it is behind the highest block seen on the chain recently."
    )
    lagging: bool = strawberry.field(
        description="Past the lag threshold: DEGRADED, and not used by the pool for reads."
    )
    error: str | None = strawberry.field(description="Why it gave no head this round.")
    observed_at: datetime

    @classmethod
    def build(cls, node: NodeHeadRecord) -> NodeHead:
        return cls(
            provider=node.provider,
            block_number=node.block_number,
            lag_blocks=node.lag_blocks,
            lagging=node.lagging,
            error=node.error,
            observed_at=node.observed_at,
        )


@strawberry.type(
    description="A chain's newest block: the highest any of its RPC nodes (or, for Bitcoin "
    "and Tron, its tip sources) reported."
)
class ChainHead:
    chain: str
    block_number: int
    provider: str = strawberry.field(description="The node that reported it (ties: pool order).")
    lag_blocks: int = strawberry.field(
        description="How far that node is behind the highest block seen on the chain recently."
    )
    observed_at: datetime
    nodes: list[NodeHead] = strawberry.field(
        description="Every node's report from the same polling round."
    )

    @classmethod
    def build(cls, head: ChainHeadRecord) -> ChainHead:
        return cls(
            chain=head.chain,
            block_number=head.block_number,
            provider=head.provider,
            lag_blocks=head.lag_blocks,
            observed_at=head.observed_at,
            nodes=[NodeHead.build(node) for node in head.nodes],
        )


@strawberry.type(
    description="Fee tiers for a chain's next block. EVM chains: total gas prices in gwei "
    "(base fee + priority fee). Bitcoin: sat/vB in the same fields (`unit` says which)."
)
class GasPrice:
    chain: str
    slow_gwei: float = strawberry.field(description="Cheap, included within minutes.")
    standard_gwei: float = strawberry.field(description="Included in the next few blocks.")
    fast_gwei: float = strawberry.field(description="Included in the next block.")
    base_fee_gwei: float | None = strawberry.field(
        description="The next block's base fee; null where the source gives none."
    )
    unit: str = strawberry.field(description='"gwei", or "sat/vB" for Bitcoin.')
    method: str = strawberry.field(
        description="ORACLE (an Etherscan-family gas oracle), FEE_HISTORY (computed from "
        "eth_feeHistory reward percentiles), GAS_PRICE (eth_gasPrice: one price for all "
        "tiers) or MEMPOOL (mempool.space's recommendation)."
    )
    block_number: int | None = strawberry.field(
        description="The newest block it was computed from, when the source says."
    )
    provider: str
    observed_at: datetime

    @classmethod
    def build(cls, gas: GasRecord) -> GasPrice:
        return cls(
            chain=gas.chain,
            slow_gwei=gas.slow,
            standard_gwei=gas.standard,
            fast_gwei=gas.fast,
            base_fee_gwei=gas.base_fee,
            unit=gas.unit,
            method=gas.method,
            block_number=gas.block_number,
            provider=gas.provider,
            observed_at=gas.observed_at,
        )


def _chains(info: Info) -> ChainData:
    chains = cast(RequestContext, info.context).services.chains
    if chains is None:
        raise GatewayError("chain data is not available")
    return chains


def _gas_chain(chains: ChainData, chain: str) -> str:
    name = chain.strip().lower()
    served = chains.gas.chains()
    if name not in served:
        known = ", ".join(served) or "none configured"
        raise BadUserInput(f"no gas data for chain {chain[:40]!r}; chains with gas: {known}")
    return name


@strawberry.type
class ChainQuery:
    @strawberry.field(
        description="Each chain's head block, the highest its nodes report (polled from every "
        "node of the chain's RPC pool; Bitcoin and Tron from their tip sources). Chains whose "
        "every node failed the last round are left out and named in extensions.warnings; if "
        "every chain failed, the error lists each provider's last error."
    )
    async def chain_heads(self, info: Info) -> list[ChainHead]:
        context = cast(RequestContext, info.context)
        heads, errors = await _chains(info).heads.heads()
        if errors and not heads:
            raise errors[0]
        for error in errors:
            context.warn(error.code, str(error), **error.extensions())
        return [ChainHead.build(head) for head in heads]

    @strawberry.field(
        description="A chain's newest fee tiers (ethereum, bsc, polygon, bitcoin): from an "
        "Etherscan-family gas oracle when keyed, else computed from eth_feeHistory, else "
        "eth_gasPrice; Bitcoin from mempool.space. When the last observation failed, the last "
        "good one comes with an UPSTREAM_FALLBACK warning; with none, the error lists each "
        "source's failure."
    )
    async def gas(self, info: Info, chain: str) -> GasPrice | None:
        chains = _chains(info)
        name = _gas_chain(chains, chain)
        gas = await chains.gas.current(name)
        failure = chains.gas.failure(name)
        if failure is not None:
            age = (utc_now() - gas.observed_at).total_seconds()
            cast(RequestContext, info.context).warn(
                UPSTREAM_FALLBACK,
                f"the last gas observation of {name} failed ({failure}); serving the one of"
                f" {gas.provider}, {age:.0f} s old",
                provider=gas.provider,
                ageSeconds=round(age, 3),
            )
        return GasPrice.build(gas)


@strawberry.type
class ChainSubscription:
    @strawberry.subscription(description="Every chain's head, each time it advances.")
    async def chain_heads(self, info: Info) -> AsyncGenerator[ChainHead, None]:
        chains = cast(RequestContext, info.context).services
        with chains.bus.chain_heads.subscribe() as heads:
            async for head in heads:
                yield ChainHead.build(head)

    @strawberry.subscription(description="A chain's fee tiers, each time they are observed.")
    async def gas(self, info: Info, chain: str) -> AsyncGenerator[GasPrice, None]:
        services = cast(RequestContext, info.context).services
        name = _gas_chain(_chains(info), chain)
        with services.bus.gas.subscribe() as observations:
            async for gas in observations:
                if gas.chain == name:
                    yield GasPrice.build(gas)

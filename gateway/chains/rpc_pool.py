"""The whale detector's `ChainRpc`, over a chain's RPC pool and the shared `JsonRpcClient`.

Every batch goes to one node of the pool (`JsonRpcClient.batch_via`: the pool's strategy picks
it, a node that fails is failed over within the call, a lagging node is benched by the chain
heads and skipped), so the block and its logs of one batch describe the same chain state. Each
result is checked by `gateway.sources.jsonrpc_results` (a node that answers garbage is a
failure, not data) and handed on as the node sent it; `gateway.chains.transfers` reads it.

Must never send anything but the read methods the follower asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.chains.follower import RpcAnswer, RpcCall
from gateway.sources.jsonrpc import JsonRpcClient, Validator
from gateway.sources.jsonrpc_results import parse_block, parse_block_number, parse_logs
from gateway.upstream import Pool

__all__ = ["PoolRpc"]


def _kept(check: Validator) -> Validator:
    """Validate with `check`, hand on the raw value."""

    def validate(value: Any) -> Any:
        check(value)
        return value

    return validate


def _validator(method: str, params: list[Any]) -> Validator | None:
    if method == "eth_blockNumber":
        return _kept(parse_block_number)
    if method == "eth_getBlockByNumber":
        full = bool(params[1]) if len(params) > 1 else False
        return _kept(lambda value: parse_block(value, full_transactions=full))
    if method == "eth_getLogs":
        return _kept(parse_logs)
    return None  # receipts: checked where they are read


class PoolRpc:
    """`ChainRpc` for one chain: batches through its RPC pool."""

    def __init__(self, rpc: JsonRpcClient, pool: Pool) -> None:
        self.rpc = rpc
        self.pool = pool

    async def batch(self, calls: Sequence[RpcCall]) -> RpcAnswer:
        checks = [_validator(method, list(params)) for method, params in calls]
        values, served = await self.rpc.batch_via(self.pool, list(calls), results=checks)
        return RpcAnswer(served, values)

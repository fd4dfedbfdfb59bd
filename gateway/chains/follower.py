"""Following an EVM chain block by block over JSON-RPC, noticing when blocks are replaced.

`BlockFollower.step()` asks the chain's head (`eth_blockNumber`), then fetches every block it
has not seen yet, each with its ERC-20 Transfer logs of the followed tokens, two calls per
block in one JSON-RPC batch (`eth_getBlockByNumber(n, true)`, `eth_getLogs` for block n), so
one node answers both and they describe the same block. It remembers the hash of the newest
`depth` blocks it has seen; a block whose parent hash is not the remembered hash of the block
below it means the chain reorganised: the follower walks back (`eth_getBlockByNumber(k,
false)`, newest first) to the highest block whose hash it remembers unchanged, reports every
replaced block's hash (their transfers must be withdrawn) and fetches the new branch. With no
new block, it checks that the newest block it saw still stands (one call), so a tip replaced
at the same height is noticed too. Blocks are fetched `batch_blocks` (4) to a batch: a busy
block with full transactions and its logs is a few hundred kilobytes, and a batch must stay
well inside the upstream client's response cap (5 MiB by default).

A step is computed on a copy of the follower's memory and applied by `commit(step)` once the
caller has stored what it found, so a failure half-way (a node error, a store error) loses
nothing: the next step fetches the same blocks again (storage deduplicates). A follower more
than `max_blocks` behind skips ahead to the newest `max_blocks` and says how many it skipped.

Must never call a node outside the `ChainRpc` it is given (limits, breakers and failover are
the RPC pool's), and never report a block as new twice within one step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.chains.tokens import TRANSFER_TOPIC, ChainTokens
from gateway.chains.transfers import Block, hex_int, parse_block
from gateway.errors import UpstreamError, UpstreamPayloadError

__all__ = ["MAX_REWINDS", "BlockFollower", "ChainRpc", "FollowStep", "RpcAnswer", "RpcCall"]

RpcCall = tuple[str, list[Any]]  # (method, params)

# A step that has to walk back more often than this (nodes flipping between branches) gives
# up; the next step starts again from what was committed.
MAX_REWINDS: Final = 4


@dataclass(frozen=True, slots=True)
class RpcAnswer:
    """The results of one JSON-RPC batch, in the order asked, and the node that answered."""

    provider: str
    results: list[Any]


class ChainRpc(Protocol):
    """One chain's JSON-RPC, through its pool: every call of a batch goes to one node, results
    come back in order, and a failure (transport, error object, garbage) raises UpstreamError
    after the pool has tried its nodes."""

    async def batch(self, calls: Sequence[RpcCall]) -> RpcAnswer: ...


@dataclass
class FollowStep:
    """What one step found: new blocks (oldest first, each with its Transfer logs), the hashes
    of blocks that are no longer on the chain, how many blocks were skipped, the calls made."""

    blocks: list[tuple[Block, list[Any]]] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: int = 0
    calls: int = 0
    head: int | None = None
    hashes: dict[int, str] = field(default_factory=dict)  # the memory to commit
    rewinds: int = 0


class BlockFollower:
    """Follows one chain; see the module docstring."""

    def __init__(
        self,
        chain: str,
        rpc: ChainRpc,
        tokens: ChainTokens,
        *,
        depth: int = 64,
        max_blocks: int = 50,
        batch_blocks: int = 4,
    ) -> None:
        if depth < 2 or max_blocks < 1 or batch_blocks < 1:
            raise ValueError("depth must be at least 2, max_blocks and batch_blocks at least 1")
        self.chain = chain
        self.rpc = rpc
        self.tokens = tokens
        self.depth = depth
        self.max_blocks = max_blocks
        self.batch_blocks = batch_blocks
        self._hashes: dict[int, str] = {}
        self.head: int | None = None

    @property
    def newest(self) -> int | None:
        """The newest block committed, if any."""
        return max(self._hashes) if self._hashes else None

    def commit(self, step: FollowStep) -> None:
        """Remember what `step` saw (call once its blocks are stored)."""
        self._hashes = step.hashes
        if step.head is not None:
            self.head = step.head

    def logs_call(self, number: int) -> RpcCall:
        tag = hex(number)
        query = {
            "fromBlock": tag,
            "toBlock": tag,
            "address": self.tokens.addresses,
            "topics": [TRANSFER_TOPIC],
        }
        return ("eth_getLogs", [query])

    async def step(self) -> FollowStep:
        """Fetch what is new since the last commit; raises UpstreamError when the pool fails."""
        step = FollowStep(hashes=dict(self._hashes))
        answer = await self._ask(step, [("eth_blockNumber", [])])
        head = step.head = hex_int(answer.results[0], "eth_blockNumber", answer.provider)
        hashes = step.hashes
        if not hashes:
            start = head
        else:
            last = max(hashes)
            if head <= last:
                await self._rewind(step, last)
                if not step.replaced:
                    return step
                start = (max(hashes) if hashes else last) + 1
            else:
                start = last + 1
        if head - start + 1 > self.max_blocks:
            step.skipped = head - self.max_blocks + 1 - start
            start = head - self.max_blocks + 1
        number = start
        while number <= head:
            number = await self._fetch_chunk(
                step, number, min(head, number + self.batch_blocks - 1)
            )
        return step

    async def _fetch_chunk(self, step: FollowStep, first: int, last: int) -> int:
        """Fetch blocks first..last; returns the next number to fetch (lower after a reorg)."""
        calls: list[RpcCall] = []
        for number in range(first, last + 1):
            calls += [("eth_getBlockByNumber", [hex(number), True]), self.logs_call(number)]
        answer = await self._ask(step, calls)
        hashes = step.hashes
        for offset, number in enumerate(range(first, last + 1)):
            block = parse_block(answer.results[2 * offset], self.chain, answer.provider)
            if block.number != number:
                raise UpstreamPayloadError(
                    f"asked for block {number}, got {block.number}", provider=answer.provider
                )
            below = hashes.get(number - 1)
            if below is not None and block.parent_hash != below:
                fork = await self._rewind(step, number - 1)
                return fork + 1
            hashes[number] = block.hash
            for old in [n for n in hashes if n <= number - self.depth]:
                del hashes[old]
            step.blocks.append((block, answer.results[2 * offset + 1]))
        return last + 1

    async def _rewind(self, step: FollowStep, top: int) -> int:
        """Walk back from `top` while the remembered hash differs from the chain's; returns the
        highest block still standing (or the lowest remembered minus one)."""
        hashes = step.hashes
        step.rewinds += 1
        if step.rewinds > MAX_REWINDS:
            raise UpstreamError(
                f"{self.chain}: the chain changed under {MAX_REWINDS} walks back in one step",
                provider=self.chain,
            )
        number = top
        while number in hashes:
            answer = await self._ask(step, [("eth_getBlockByNumber", [hex(number), False])])
            header = answer.results[0]
            if header is None:
                break  # this node has not got that block (it is behind): nothing to learn
            if not isinstance(header, dict) or not isinstance(header.get("hash"), str):
                raise UpstreamPayloadError("block header without a hash", provider=answer.provider)
            if header["hash"].lower() == hashes[number]:
                break
            step.replaced.append(hashes.pop(number))
            number -= 1
        gone = set(step.replaced)
        step.blocks = [(b, logs) for b, logs in step.blocks if b.hash not in gone]
        return number

    async def _ask(self, step: FollowStep, calls: list[RpcCall]) -> RpcAnswer:
        step.calls += len(calls)
        answer = await self.rpc.batch(calls)
        if len(answer.results) != len(calls):
            raise UpstreamPayloadError(
                f"{len(calls)} calls answered with {len(answer.results)} results",
                provider=answer.provider,
            )
        return answer

"""A scripted EVM chain for tests and the bench: blocks, transactions and Transfer logs in the
shapes Ethereum JSON-RPC nodes answer (ethereum.org "JSON-RPC API": eth_getBlockByNumber with
full transactions, eth_getLogs, eth_getTransactionReceipt), mined and reorganised on demand.

`ScriptedChain.answer(method, params)` answers one call as a node would (a result, or raises
`RpcFault` for a JSON-RPC error object); `InProcessRpc` puts it behind the detector's
`ChainRpc` protocol without any HTTP, and counts the calls. Hashes are deterministic (SHA-256
of a description), so a re-mined block at the same height has another hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.chains.follower import RpcAnswer, RpcCall
from gateway.chains.tokens import TRANSFER_TOPIC

USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
BINANCE_14 = "0x28c6c06298d514db089934071355e5743bf21d60"
COINBASE_10 = "0xa9d1e08c7793af67e9d92fe308d5697fb81d3e43"


def h32(*parts: object) -> str:
    """A deterministic 32-byte hex hash of the parts."""
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


def address(n: int) -> str:
    return "0x" + hashlib.sha256(f"address {n}".encode()).hexdigest()[:40]


def word(value: int) -> str:
    return "0x" + f"{value:064x}"


def topic_address(addr: str) -> str:
    return "0x" + "0" * 24 + addr.removeprefix("0x").lower()


class RpcFault(Exception):
    """A JSON-RPC error object (code, message) the scripted node answers."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Tx:
    """A transaction to mine: native `value` (wei) and/or ERC-20 transfers it emits."""

    sender: str
    to: str | None
    value: int = 0
    transfers: list[tuple[str, str, str, int]] = field(default_factory=list)  # token, from, to, raw
    succeeded: bool = True
    extra_logs: int = 0  # unrelated logs (other contracts' events) the tx also emits


@dataclass
class MinedBlock:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    transactions: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    receipts: dict[str, dict[str, Any]]


class ScriptedChain:
    """Blocks by number on the canonical branch; `mine` appends, `reorg` replaces the top."""

    def __init__(self, start: int = 21_000_000, start_time: int = 1_711_356_300) -> None:
        self.blocks: dict[int, MinedBlock] = {}
        self.head = start
        self.time = start_time
        self.salt = 0
        genesis = MinedBlock(start, h32("block", start, 0), h32("parent", start), start_time,
                             [], [], {})  # fmt: skip
        self.blocks[start] = genesis

    def mine(self, txs: Sequence[Tx] = (), *, seconds: int = 12) -> MinedBlock:
        number = self.head + 1
        self.time += seconds
        parent = self.blocks[self.head].hash
        block_hash = h32("block", number, self.salt, parent)
        transactions: list[dict[str, Any]] = []
        logs: list[dict[str, Any]] = []
        receipts: dict[str, dict[str, Any]] = {}
        for index, tx in enumerate(txs):
            tx_hash = h32("tx", number, self.salt, index)
            transactions.append(
                {
                    "hash": tx_hash,
                    "from": tx.sender,
                    "to": tx.to,
                    "value": hex(tx.value),
                    "blockNumber": hex(number),
                    "blockHash": block_hash,
                    "transactionIndex": hex(index),
                    "input": "0x",
                    "gas": hex(21_000),
                    "nonce": hex(index),
                }
            )
            receipts[tx_hash] = {
                "transactionHash": tx_hash,
                "blockHash": block_hash,
                "blockNumber": hex(number),
                "status": "0x1" if tx.succeeded else "0x0",
            }
            if not tx.succeeded:
                continue  # a reverted transaction emits no logs
            for token, sender, receiver, raw in tx.transfers:
                logs.append(self._log(token, [TRANSFER_TOPIC, topic_address(sender),
                                              topic_address(receiver)], word(raw),
                                      number, block_hash, tx_hash, index, len(logs)))  # fmt: skip
            for extra in range(tx.extra_logs):
                other = address(10_000 + extra)
                logs.append(self._log(other, [h32("event", extra)], word(extra), number,
                                      block_hash, tx_hash, index, len(logs)))  # fmt: skip
        block = MinedBlock(number, block_hash, parent, self.time, transactions, logs, receipts)
        self.blocks[number] = block
        self.head = number
        return block

    @staticmethod
    def _log(
        contract: str,
        topics: list[str],
        data: str,
        number: int,
        block_hash: str,
        tx_hash: str,
        tx_index: int,
        log_index: int,
    ) -> dict[str, Any]:
        return {
            "address": contract,
            "topics": topics,
            "data": data,
            "blockNumber": hex(number),
            "blockHash": block_hash,
            "transactionHash": tx_hash,
            "transactionIndex": hex(tx_index),
            "logIndex": hex(log_index),
            "removed": False,
        }

    def reorg(self, depth: int, replacement: Sequence[Sequence[Tx]] = ()) -> None:
        """Drop the top `depth` blocks and mine `replacement` blocks (default: as many empty
        ones) in their place, with new hashes."""
        for number in range(self.head - depth + 1, self.head + 1):
            del self.blocks[number]
        self.head -= depth
        self.salt += 1
        for txs in replacement or [() for _ in range(depth)]:
            self.mine(txs)

    # -- answering as a node ----------------------------------------------------------------

    def answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_chainId":
            return "0x1"
        if method == "eth_getBlockByNumber":
            number = self.head if params[0] == "latest" else int(params[0], 16)
            block = self.blocks.get(number)
            if block is None:
                return None
            return {
                "number": hex(block.number),
                "hash": block.hash,
                "parentHash": block.parent_hash,
                "timestamp": hex(block.timestamp),
                "transactions": block.transactions
                if params[1]
                else [tx["hash"] for tx in block.transactions],
            }
        if method == "eth_getLogs":
            query = params[0]
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            addresses = {a.lower() for a in query.get("address", [])}
            topic0 = (query.get("topics") or [None])[0]
            found = []
            for number in range(first, last + 1):
                block = self.blocks.get(number)
                for log in block.logs if block else []:
                    if addresses and log["address"].lower() not in addresses:
                        continue
                    if topic0 is not None and log["topics"][:1] != [topic0]:
                        continue
                    found.append(log)
            return found
        if method == "eth_getTransactionReceipt":
            for block in self.blocks.values():
                if params[0] in block.receipts:
                    return block.receipts[params[0]]
            return None
        raise RpcFault(-32601, f"the method {method} does not exist/is not available")


class InProcessRpc:
    """`ChainRpc` over a ScriptedChain, no HTTP; counts calls and batches."""

    def __init__(self, chain: ScriptedChain, provider: str = "scripted-node") -> None:
        self.chain = chain
        self.provider = provider
        self.calls = 0
        self.batches = 0

    async def batch(self, calls: Sequence[RpcCall]) -> RpcAnswer:
        self.calls += len(calls)
        self.batches += 1
        return RpcAnswer(self.provider, [self.chain.answer(m, list(p)) for m, p in calls])

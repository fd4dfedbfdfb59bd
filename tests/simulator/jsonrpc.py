"""The simulator's JSON-RPC 2.0 upstream: EVM chains whose blocks tests script, and nodes serving
them over HTTP (single calls and batches), lagging, pinned, or answering error objects.

Shapes follow ethereum.org's "JSON-RPC API" reference (fixtures/SOURCES.md): quantities and data
as hex, blocks with transaction hashes or full transaction objects, logs placed by block,
transaction and log index, eth_feeHistory's `baseFeePerGas` one longer than its block range.

A chain (`SimChain`) starts with `history` blocks up to `head`, each holding a few priced
transactions at the gas target (so the base fee holds steady and eth_feeHistory has real
percentiles to report). Script more::

    chain = sim.evm.chain("ethereum")
    block = chain.add_block(
        transactions=[{"from": A, "to": USDT, "value": 0, "priority_fee": 2 * GWEI}],
        logs=[transfer_log(USDT, A, B, 2_000_000 * 10**6)],   # emitted by transactions[0]
    )
    chain.reorg(2, [{"transactions": [...], "logs": [...]}, {}])   # replace the top 2 blocks
    chain.add_blocks(3)                                             # filler blocks

A log names the transaction that emitted it with `"transaction": index` (default: the block's
last transaction); everything else a node would add (hashes, indexes, block fields) is filled
in. Nodes (`SimNode`) see their chain up to `head - lag` (or a pinned block): `sim.evm.lag(
"rpc-b", 20)` plays a node 20 blocks behind; `node.fail("eth_getLogs", -32005, "limit
exceeded")` queues error objects; `node.unsupported` answers methods with -32601. HTTP-level
faults (status codes, hangs, garbage bodies) are the simulator's `inject` as for any provider.

`ChainNode`'s `answer(method, params)` is the whole node logic, so a test may also call it in
process. Methods: eth_blockNumber, eth_chainId, net_version, eth_gasPrice,
eth_maxPriorityFeePerGas, eth_getBlockByNumber, eth_getBlockByHash, eth_getLogs,
eth_getTransactionReceipt, eth_getBlockReceipts, eth_feeHistory.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "GWEI",
    "TRANSFER_TOPIC",
    "JsonRpcUpstream",
    "RpcError",
    "SimBlock",
    "SimChain",
    "SimNode",
    "address",
    "h32",
    "next_base_fee",
    "reward_percentiles",
    "topic_address",
    "transfer_log",
    "word",
]

GWEI: Final = 10**9
# keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC: Final = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
GAS_LIMIT: Final = 30_000_000
# A filler block's transactions: (priority fee in gwei, gas), 15M gas in all: the gas target.
FILLER: Final = ((1.0, 3_000_000), (1.5, 3_000_000), (2.0, 3_000_000), (3.0, 3_000_000),
                 (5.0, 3_000_000))  # fmt: skip


def h32(*parts: object) -> str:
    """A deterministic 32-byte hex hash of the parts."""
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


def address(n: int | str) -> str:
    """A deterministic 20-byte address."""
    return "0x" + hashlib.sha256(f"address {n}".encode()).hexdigest()[:40]


def word(value: int) -> str:
    """A 32-byte big-endian word (an ERC-20 amount as log data)."""
    return "0x" + f"{value:064x}"


def topic_address(addr: str) -> str:
    """An address as an indexed topic (left-padded to 32 bytes)."""
    return "0x" + "0" * 24 + addr.removeprefix("0x").lower()


def transfer_log(
    token: str, sender: str, recipient: str, amount: int, **extra: Any
) -> dict[str, Any]:
    """An ERC-20 Transfer(from, to, value) log of `token` (amount in the token's base units)."""
    return {
        "address": token.lower(),
        "topics": [TRANSFER_TOPIC, topic_address(sender), topic_address(recipient)],
        "data": word(amount),
        **extra,
    }


class RpcError(Exception):
    """A JSON-RPC error object a node answers instead of a result."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SimBlock:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    base_fee: int
    transactions: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    gas_limit: int = GAS_LIMIT

    @property
    def gas_used(self) -> int:
        return sum(int(tx["gas"], 16) for tx in self.transactions)

    def tips(self) -> list[tuple[int, int]]:
        """(effective priority fee, gas used) of each transaction."""
        return [
            (int(tx["maxPriorityFeePerGas"], 16), int(tx["gas"], 16)) for tx in self.transactions
        ]

    def as_json(self, full: bool) -> dict[str, Any]:
        return {
            "number": hex(self.number),
            "hash": self.hash,
            "parentHash": self.parent_hash,
            "timestamp": hex(self.timestamp),
            "baseFeePerGas": hex(self.base_fee),
            "gasLimit": hex(self.gas_limit),
            "gasUsed": hex(self.gas_used),
            "miner": address("miner"),
            "transactions": self.transactions if full else [tx["hash"] for tx in self.transactions],
        }


def next_base_fee(block: SimBlock) -> int:
    """EIP-1559: the base fee of the block after `block`."""
    target = block.gas_limit // 2
    used = block.gas_used
    if used == target:
        return block.base_fee
    if used > target:
        return block.base_fee + max(1, block.base_fee * (used - target) // target // 8)
    return block.base_fee - block.base_fee * (target - used) // target // 8


def reward_percentiles(block: SimBlock, percentiles: Sequence[float]) -> list[int]:
    """geth's eth_feeHistory reward: the priority fee of the transaction at which the block's
    gas, walked in ascending fee order, reaches each percentile (0 for an empty block)."""
    tips = sorted(block.tips())
    if not tips:
        return [0 for _ in percentiles]
    used = sum(gas for _, gas in tips)
    rewards = []
    for percentile in percentiles:
        threshold = used * percentile / 100
        total, index = tips[0][1], 0
        while total < threshold and index < len(tips) - 1:
            index += 1
            total += tips[index][1]
        rewards.append(tips[index][0])
    return rewards


class SimChain:
    """One EVM chain's canonical blocks, scriptable; see the module docstring."""

    def __init__(
        self,
        name: str,
        chain_id: int,
        *,
        head: int = 21_000_000,
        history: int = 64,
        block_time: int = 12,
        base_fee_gwei: float = 20.0,
    ) -> None:
        self.name = name
        self.chain_id = chain_id
        self.block_time = block_time
        self.blocks: dict[int, SimBlock] = {}
        self.salt = 0  # changes at each reorg, so replacement blocks get new hashes
        first = head - history + 1
        now = int(time.time())
        self.head = first - 1
        self._time = now - history * block_time
        self._base_fee = int(base_fee_gwei * GWEI)
        self._parent = h32(name, "parent", first)
        for _ in range(history):
            self.add_filler()

    # -- scripting ------------------------------------------------------------------------------

    def add_block(
        self,
        transactions: Sequence[Mapping[str, Any]] = (),
        logs: Sequence[Mapping[str, Any]] = (),
        *,
        timestamp: int | None = None,
    ) -> SimBlock:
        """Mine the next block with these transactions and logs (see the module docstring)."""
        number = self.head + 1
        self._time = timestamp if timestamp is not None else self._time + self.block_time
        parent = self.blocks.get(self.head)
        parent_hash = parent.hash if parent is not None else self._parent
        base_fee = next_base_fee(parent) if parent is not None else self._base_fee
        block_hash = h32(self.name, "block", number, self.salt, parent_hash)
        txs = [self._transaction(tx, n, number, block_hash, base_fee)
               for n, tx in enumerate(transactions)]  # fmt: skip
        placed = []
        for n, log in enumerate(logs):
            index = int(log.get("transaction", len(txs) - 1))
            if not 0 <= index < len(txs):
                raise ValueError(f"log {n} names transaction {index}; the block has {len(txs)}")
            entry = {k: v for k, v in log.items() if k != "transaction"}
            placed.append({
                "address": str(entry.pop("address")).lower(),
                "topics": list(entry.pop("topics", [])),
                "data": entry.pop("data", "0x"),
                "blockNumber": hex(number),
                "blockHash": block_hash,
                "transactionHash": txs[index]["hash"],
                "transactionIndex": hex(index),
                "logIndex": hex(n),
                "removed": False,
                **entry,
            })  # fmt: skip
        block = SimBlock(number, block_hash, parent_hash, self._time, base_fee, txs, placed)
        self.blocks[number] = block
        self.head = number
        return block

    def add_filler(self) -> SimBlock:
        """A block of ordinary transactions at the gas target (steady base fee)."""
        return self.add_block(
            [
                {"from": address(f"user {self.head} {n}"), "to": address(f"shop {n}"),
                 "value": 10**16 * (n + 1), "gas": gas, "priority_fee": int(tip * GWEI)}
                for n, (tip, gas) in enumerate(FILLER)
            ]
        )  # fmt: skip

    def add_blocks(self, count: int) -> None:
        for _ in range(count):
            self.add_filler()

    def extend_to(self, number: int) -> None:
        """Mine filler blocks until the head is at least `number`."""
        while self.head < number:
            self.add_filler()

    def reorg(
        self, depth: int, new_blocks: Sequence[Mapping[str, Any]] | int | None = None
    ) -> list[SimBlock]:
        """Replace the top `depth` blocks: `new_blocks` is a list of add_block keyword dicts
        ({"transactions": [...], "logs": [...]}), a count of filler blocks, or None (as many
        filler blocks as were dropped). The new branch's blocks all have new hashes."""
        if not 1 <= depth <= len(self.blocks) - 1:
            raise ValueError(f"cannot reorganise {depth} blocks of {len(self.blocks)}")
        for number in range(self.head - depth + 1, self.head + 1):
            del self.blocks[number]
        self.head -= depth
        self._time = self.blocks[self.head].timestamp
        self.salt += 1
        if new_blocks is None:
            new_blocks = depth
        if isinstance(new_blocks, int):
            return [self.add_filler() for _ in range(new_blocks)]
        return [self.add_block(**spec) for spec in new_blocks]

    def _transaction(
        self, spec: Mapping[str, Any], index: int, number: int, block_hash: str, base_fee: int
    ) -> dict[str, Any]:
        tip = int(spec.get("priority_fee", 2 * GWEI))
        value = spec.get("value", 0)
        return {
            "hash": spec.get("hash") or h32(self.name, "tx", number, self.salt, index),
            "from": str(spec.get("from", address("sender"))).lower(),
            "to": None if spec.get("to") is None else str(spec["to"]).lower(),
            "value": value if isinstance(value, str) else hex(int(value)),
            "input": spec.get("input", "0x"),
            "gas": hex(int(spec.get("gas", 21_000))),
            "nonce": hex(index),
            "type": "0x2",
            "chainId": hex(self.chain_id),
            "maxPriorityFeePerGas": hex(tip),
            "maxFeePerGas": hex(2 * base_fee + tip),
            "gasPrice": hex(base_fee + tip),
            "blockNumber": hex(number),
            "blockHash": block_hash,
            "transactionIndex": hex(index),
        }

    # -- answering ------------------------------------------------------------------------------

    def block_at(self, tag: Any, head: int) -> SimBlock | None:
        if tag in ("latest", "pending", "safe", "finalized"):
            number = head
        elif tag == "earliest":
            number = min(self.blocks)
        else:
            number = int(str(tag), 16)
        return self.blocks.get(number) if number <= head else None

    def answer(self, method: str, params: list[Any], head: int) -> Any:
        """One call as a node whose head is `head` answers it; RpcError for an error object."""
        if method == "eth_blockNumber":
            return hex(head)
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "net_version":
            return str(self.chain_id)
        if method in ("eth_gasPrice", "eth_maxPriorityFeePerGas"):
            latest = self.blocks[head]
            tip = reward_percentiles(latest, [50])[0]
            return hex(tip if method == "eth_maxPriorityFeePerGas" else next_base_fee(latest) + tip)
        if method == "eth_getBlockByNumber":
            block = self.block_at(params[0], head)
            return block.as_json(bool(params[1])) if block else None
        if method == "eth_getBlockByHash":
            found = next((b for b in self.blocks.values() if b.hash == params[0]), None)
            return found.as_json(bool(params[1])) if found and found.number <= head else None
        if method == "eth_getLogs":
            return self._logs(params[0], head)
        if method == "eth_getTransactionReceipt":
            for block in self.blocks.values():
                for tx in block.transactions:
                    if tx["hash"] == params[0] and block.number <= head:
                        return self._receipt(block, tx)
            return None
        if method == "eth_getBlockReceipts":
            block = self.block_at(params[0], head)
            return [self._receipt(block, tx) for tx in block.transactions] if block else None
        if method == "eth_feeHistory":
            return self._fee_history(params, head)
        raise RpcError(-32601, f"the method {method} does not exist/is not available")

    def _logs(self, query: Mapping[str, Any], head: int) -> list[dict[str, Any]]:
        if "blockHash" in query:
            blocks = [b for b in self.blocks.values() if b.hash == query["blockHash"]]
        else:
            first = self.block_at(query.get("fromBlock", "latest"), head)
            last = self.block_at(query.get("toBlock", "latest"), head)
            low = first.number if first else head + 1
            high = last.number if last else head
            blocks = [self.blocks[n] for n in range(low, high + 1) if n in self.blocks]
        wanted = query.get("address")
        addresses = (
            {wanted.lower()} if isinstance(wanted, str) else {a.lower() for a in wanted or []}
        )
        topics = query.get("topics") or []
        found = []
        for block in blocks:
            for log in block.logs:
                if addresses and log["address"] not in addresses:
                    continue
                if all(_topic_matches(want, log["topics"], n) for n, want in enumerate(topics)):
                    found.append(log)
        return found

    def _receipt(self, block: SimBlock, tx: dict[str, Any]) -> dict[str, Any]:
        return {
            "transactionHash": tx["hash"],
            "transactionIndex": tx["transactionIndex"],
            "blockHash": block.hash,
            "blockNumber": hex(block.number),
            "from": tx["from"],
            "to": tx["to"],
            "gasUsed": tx["gas"],
            "effectiveGasPrice": hex(block.base_fee + int(tx["maxPriorityFeePerGas"], 16)),
            "status": tx.get("status", "0x1"),
            "logs": [log for log in block.logs if log["transactionHash"] == tx["hash"]],
        }

    def _fee_history(self, params: list[Any], head: int) -> dict[str, Any]:
        count = int(params[0], 16) if isinstance(params[0], str) else int(params[0])
        newest_block = self.block_at(params[1], head)
        if newest_block is None:
            raise RpcError(-32000, "request beyond head block")
        percentiles = list(params[2]) if len(params) > 2 else []
        if percentiles != sorted(percentiles) or any(not 0 <= p <= 100 for p in percentiles):
            raise RpcError(-32602, "invalid reward percentiles")
        newest = newest_block.number
        oldest = max(min(self.blocks), newest - count + 1)
        blocks = [self.blocks[n] for n in range(oldest, newest + 1)]
        return {
            "oldestBlock": hex(oldest),
            "baseFeePerGas": [hex(b.base_fee) for b in blocks] + [hex(next_base_fee(blocks[-1]))],
            "gasUsedRatio": [b.gas_used / b.gas_limit for b in blocks],
            "reward": [[hex(r) for r in reward_percentiles(b, percentiles)] for b in blocks],
        }


def _topic_matches(want: Any, topics: list[str], position: int) -> bool:
    if want is None:
        return True
    have = topics[position].lower() if position < len(topics) else None
    options = [want] if isinstance(want, str) else list(want)
    return have in {o.lower() for o in options}


@dataclass
class SimNode:
    """One node serving a chain: its view ends `lag` blocks below the head (or at `pinned`)."""

    id: str
    chain: SimChain
    lag: int = 0
    pinned: int | None = None
    unsupported: set[str] = field(default_factory=set)
    max_batch: int | None = None  # a larger batch is refused with one error object
    errors: dict[str, collections.deque[tuple[int, str]]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque)
    )
    calls: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def head(self) -> int:
        if self.pinned is not None:
            return min(self.pinned, self.chain.head)
        return self.chain.head - self.lag

    def fail(self, method: str, code: int, message: str, times: int = 1) -> None:
        """Answer the next `times` calls of `method` ("*": any) with this error object."""
        for _ in range(times):
            self.errors[method].append((code, message))

    def answer(self, method: str, params: list[Any]) -> Any:
        self.calls[method] += 1
        for key in (method, "*"):
            if self.errors.get(key):
                code, message = self.errors[key].popleft()
                raise RpcError(code, message)
        if method in self.unsupported:
            raise RpcError(-32601, f"the method {method} does not exist/is not available")
        return self.chain.answer(method, params, self.head)

    def respond(self, body: bytes) -> Any:
        """The JSON answer to one HTTP body (a call or a batch), as a node gives it."""
        try:
            message = json.loads(body)
        except ValueError:
            return _error(None, -32700, "Parse error")
        if isinstance(message, list):
            if not message:
                return _error(None, -32600, "empty batch")
            if self.max_batch is not None and len(message) > self.max_batch:
                return _error(None, -32600, f"batch of {len(message)} exceeds {self.max_batch}")
            return [self._one(call) for call in message]
        return self._one(message)

    def _one(self, call: Any) -> dict[str, Any]:
        if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or "method" not in call:
            return _error(None, -32600, "Invalid Request")
        try:
            result = self.answer(call["method"], list(call.get("params") or []))
        except RpcError as exc:
            return _error(call.get("id"), exc.code, exc.message)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            return _error(call.get("id"), -32602, f"invalid params: {exc}")
        return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}


def _error(call_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "error": {"code": code, "message": message}}


class JsonRpcUpstream:
    """The chains and nodes the simulator serves: ethereum (chain id 1), bsc (56) and polygon
    (137), and the nodes rpc-a and rpc-b on ethereum; tests add more with `add_node`."""

    def __init__(self) -> None:
        self.chains = {
            "ethereum": SimChain("ethereum", 1),
            "bsc": SimChain("bsc", 56, head=45_000_000, block_time=3, base_fee_gwei=0.0),
            "polygon": SimChain("polygon", 137, head=68_000_000, block_time=2, base_fee_gwei=30.0),
        }
        self.nodes: dict[str, SimNode] = {}
        for node in ("rpc-a", "rpc-b"):
            self.add_node(node, "ethereum")

    def chain(self, name: str) -> SimChain:
        return self.chains[name]

    def add_node(self, node_id: str, chain: str, *, lag: int = 0) -> SimNode:
        """A node of `chain`, served at /rpc/<node_id> (rpc-a and rpc-b at /rpc-a, /rpc-b)."""
        node = SimNode(node_id, self.chains[chain], lag=lag)
        self.nodes[node_id] = node
        return node

    def node(self, node_id: str) -> SimNode:
        return self.nodes[node_id]

    def lag(self, node_id: str, blocks: int) -> None:
        """Make a node answer `blocks` behind its chain's head (0: caught up)."""
        node = self.nodes[node_id]
        node.lag, node.pinned = blocks, None

    def pin(self, node_id: str, number: int) -> None:
        """Make a node report `number` as its head (the chain is extended to it if need be)."""
        node = self.nodes[node_id]
        node.chain.extend_to(number)
        node.pinned = number

    @staticmethod
    def prefix(node_id: str) -> str:
        return f"/{node_id}" if node_id in ("rpc-a", "rpc-b") else f"/rpc/{node_id}"

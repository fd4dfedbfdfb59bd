"""Ethereum JSON-RPC values: hex quantities and data, and validators for the results we read.

A node that answers garbage is a failure, not data: every result the gateway reads goes through
one of these pure functions, which return the value (ints for quantities) or raise `ValueError`
naming what is wrong. `gateway.sources.jsonrpc` runs them inside the request's attempt and turns
the ValueError into `UpstreamPayloadError`, so a bad body counts against the node's breaker and
a pool moves on to the next node.

Encoding (ethereum.org, "JSON-RPC API", hex value encoding): a QUANTITY is "0x" and at least
one hex digit ("0x0" is zero; we also accept leading zeros, which some nodes send); DATA is
"0x" and an even number of hex digits (a 20-byte address, a 32-byte hash or topic).

Must never do I/O or raise anything but ValueError for a bad value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "FeeHistory",
    "block_tag",
    "is_data",
    "parse_block",
    "parse_block_number",
    "parse_data",
    "parse_fee_history",
    "parse_logs",
    "parse_quantity",
    "to_quantity",
]

# At most 256 bits: 64 hex digits.
_QUANTITY: Final = re.compile(r"0x[0-9a-fA-F]{1,64}")
_DATA: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
BLOCK_TAGS: Final = frozenset({"latest", "earliest", "pending", "safe", "finalized"})


def parse_quantity(value: Any, what: str = "quantity") -> int:
    """The int of a hex QUANTITY ("0x1b4" -> 436); ValueError for anything else."""
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise ValueError(f"{what} {value!r:.80} is not a hex quantity")
    return int(value, 16)


def to_quantity(number: int) -> str:
    """An int as a hex QUANTITY (436 -> "0x1b4"); a block number for a request's params."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"{number!r} is not a non-negative integer")
    return hex(number)


def block_tag(block: int | str) -> str:
    """A block parameter: a number as a quantity, or one of the tags ("latest", …)."""
    if isinstance(block, str):
        if block not in BLOCK_TAGS:
            raise ValueError(f"block tag {block!r} is not one of {', '.join(sorted(BLOCK_TAGS))}")
        return block
    return to_quantity(block)


def is_data(value: Any, size: int | None = None) -> bool:
    """Whether `value` is hex DATA (of `size` bytes, when given)."""
    if not isinstance(value, str) or not _DATA.fullmatch(value):
        return False
    return size is None or len(value) == 2 + 2 * size


def parse_data(value: Any, what: str = "data", size: int | None = None) -> str:
    """Hex DATA, lower-cased (addresses and hashes compare equal however a node cases them)."""
    if not is_data(value, size):
        expected = f"{size}-byte hex data" if size is not None else "hex data"
        raise ValueError(f"{what} {value!r:.80} is not {expected}")
    lowered: str = value.lower()
    return lowered


def parse_block_number(result: Any) -> int:
    """eth_blockNumber: a positive quantity (a node at block 0 is not synced: not a head)."""
    number = parse_quantity(result, "block number")
    if number <= 0:
        raise ValueError(f"block number {number} is not a block")
    return number


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


def parse_block(result: Any, *, full_transactions: bool) -> dict[str, Any] | None:
    """eth_getBlockByNumber / eth_getBlockByHash: None (no such block yet), or the block.

    Checked: number, hash, parentHash and timestamp; `transactions` is a list of 32-byte hashes,
    or (with `full_transactions`) of objects with a hash, a `from` address, a `to` address or
    null (contract creation), a value quantity and the block's number. The block is returned
    as the node sent it; the checked fields can be trusted.
    """
    if result is None:
        return None
    block = _object(result, "block")
    number = parse_quantity(block.get("number"), "block number")
    parse_data(block.get("hash"), "block hash", 32)
    parse_data(block.get("parentHash"), "parent hash", 32)
    parse_quantity(block.get("timestamp"), "block timestamp")
    transactions = block.get("transactions")
    if not isinstance(transactions, list):
        raise ValueError("block transactions is not a list")
    for tx in transactions:
        if not full_transactions:
            parse_data(tx, "transaction hash", 32)
            continue
        tx = _object(tx, "transaction")
        parse_data(tx.get("hash"), "transaction hash", 32)
        parse_data(tx.get("from"), "transaction from", 20)
        if tx.get("to") is not None:
            parse_data(tx.get("to"), "transaction to", 20)
        parse_quantity(tx.get("value"), "transaction value")
        if parse_quantity(tx.get("blockNumber"), "transaction block") != number:
            raise ValueError(f"transaction {tx.get('hash')} is not of block {number}")
    return block


def parse_logs(result: Any) -> list[dict[str, Any]]:
    """eth_getLogs: a list of logs, each with an address, 0-4 32-byte topics, data, and the
    block number, block hash, transaction hash and log index that place it."""
    if not isinstance(result, list):
        raise ValueError("logs is not a list")
    for log in result:
        log = _object(log, "log")
        parse_data(log.get("address"), "log address", 20)
        topics = log.get("topics")
        if not isinstance(topics, list) or len(topics) > 4:
            raise ValueError("log topics is not a list of at most 4")
        for topic in topics:
            parse_data(topic, "log topic", 32)
        parse_data(log.get("data"), "log data")
        parse_quantity(log.get("blockNumber"), "log block number")
        parse_data(log.get("blockHash"), "log block hash", 32)
        parse_data(log.get("transactionHash"), "log transaction hash", 32)
        parse_quantity(log.get("logIndex"), "log index")
        if not isinstance(log.get("removed", False), bool):
            raise ValueError("log removed is not a boolean")
    return result


@dataclass(frozen=True, slots=True)
class FeeHistory:
    """eth_feeHistory, decoded: wei amounts as ints.

    `base_fees` has one entry per block of the range plus one: the last is the base fee of the
    block after the newest (what the next transaction pays). `rewards[i][j]` is block i's
    priority fee at the j-th requested percentile of its gas (0 for an empty block).
    """

    oldest_block: int
    base_fees: tuple[int, ...]
    gas_used_ratios: tuple[float, ...]
    rewards: tuple[tuple[int, ...], ...]

    @property
    def newest_block(self) -> int:
        return self.oldest_block + len(self.gas_used_ratios) - 1

    @property
    def next_base_fee(self) -> int:
        return self.base_fees[-1]


def parse_fee_history(result: Any, percentiles: Sequence[float]) -> FeeHistory:
    """eth_feeHistory asked with `percentiles`: every list the right length, every number real."""
    history = _object(result, "fee history")
    oldest = parse_quantity(history.get("oldestBlock"), "oldestBlock")
    ratios = history.get("gasUsedRatio")
    if not isinstance(ratios, list) or not ratios:
        raise ValueError("gasUsedRatio is not a non-empty list")
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise ValueError(f"gasUsedRatio {ratio!r:.40} is not a number")
        if not (math.isfinite(ratio) and 0 <= ratio <= 1):
            raise ValueError(f"gasUsedRatio {ratio!r} is not between 0 and 1")
    base_fees = history.get("baseFeePerGas")
    if not isinstance(base_fees, list) or len(base_fees) != len(ratios) + 1:
        raise ValueError(f"baseFeePerGas does not hold {len(ratios) + 1} entries (blocks + 1)")
    rewards = history.get("reward")
    if not isinstance(rewards, list) or len(rewards) != len(ratios):
        raise ValueError(f"reward does not hold {len(ratios)} entries (one per block)")
    decoded = []
    for row in rewards:
        if not isinstance(row, list) or len(row) != len(percentiles):
            raise ValueError(f"a reward entry does not hold {len(percentiles)} percentiles")
        decoded.append(tuple(parse_quantity(value, "reward") for value in row))
    return FeeHistory(
        oldest_block=oldest,
        base_fees=tuple(parse_quantity(fee, "baseFeePerGas") for fee in base_fees),
        gas_used_ratios=tuple(float(ratio) for ratio in ratios),
        rewards=tuple(decoded),
    )

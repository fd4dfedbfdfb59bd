"""Transfers in one EVM block: the pure reading of JSON-RPC block and log payloads.

`parse_block` reads an `eth_getBlockByNumber(n, true)` answer (header and full transactions);
`native_transfers` finds the transactions that move the native coin, `token_transfers` the
ERC-20 `Transfer` logs (from `eth_getLogs` filtered by the followed contracts and the Transfer
topic) of the followed tokens. Each is a `Candidate`: what moved, between whom, in which block,
its exact raw amount and its amount in whole units; pricing and the threshold are
`gateway.chains.whales`'.

A node that answers garbage is a failure, not data: a header without a 32-byte hash, a
transaction or log of the wrong shape, or a log that belongs to another block raises
`UpstreamPayloadError` (the caller fails that node and asks again). A log of another shape that
is not a Transfer the detector follows (an ERC-721 Transfer has four topics, its tokenId
indexed) is skipped. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.chains.tokens import TRANSFER_TOPIC, ChainTokens
from gateway.errors import UpstreamPayloadError
from gateway.onchain_models import NATIVE_INDEX

__all__ = [
    "Block",
    "Candidate",
    "hex_int",
    "native_transfers",
    "parse_block",
    "token_transfers",
]

_HASH_LEN = 66  # "0x" + 32 bytes
_WORD_ADDRESS_PREFIX = "0x000000000000000000000000"


def hex_int(value: Any, what: str, provider: str) -> int:
    """A JSON-RPC quantity ("0x1b4") as an int; UpstreamPayloadError otherwise."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise UpstreamPayloadError(f"{what} {value!r} is not a quantity", provider=provider)
    try:
        return int(value, 16)
    except ValueError:
        raise UpstreamPayloadError(f"{what} {value!r} is not hex", provider=provider) from None


def _hash(value: Any, what: str, provider: str) -> str:
    if not isinstance(value, str) or len(value) != _HASH_LEN or not value.startswith("0x"):
        raise UpstreamPayloadError(f"{what} {value!r} is not a 32-byte hash", provider=provider)
    return value.lower()


def _address(value: Any, what: str, provider: str) -> str:
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        raise UpstreamPayloadError(f"{what} {value!r} is not an address", provider=provider)
    return value.lower()


@dataclass(frozen=True, slots=True)
class Block:
    """A block's header and its full transactions (as the node sent them)."""

    chain: str
    number: int
    hash: str
    parent_hash: str
    at: datetime
    transactions: Sequence[Mapping[str, Any]]
    provider: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """One transfer of a followed coin or token in one block, not yet priced."""

    chain: str
    hash: str
    log_index: int  # NATIVE_INDEX for a transaction's own value
    from_address: str
    to_address: str
    asset: str
    price_symbol: str
    raw_amount: int
    decimals: int
    block_number: int
    block_hash: str
    at: datetime

    @property
    def amount(self) -> float:
        scale: int = 10**self.decimals
        return self.raw_amount / scale


def parse_block(payload: Any, chain: str, provider: str) -> Block:
    """The block of an `eth_getBlockByNumber(n, true)` result; raises UpstreamPayloadError.

    A null result (the node does not have that block yet) is an error too: the caller asked
    for a block at or below the head the node reported.
    """
    if not isinstance(payload, dict):
        raise UpstreamPayloadError("block is not an object (node lacks it?)", provider=provider)
    transactions = payload.get("transactions")
    if not isinstance(transactions, list):
        raise UpstreamPayloadError("block has no transaction list", provider=provider)
    seconds = hex_int(payload.get("timestamp"), "block timestamp", provider)
    return Block(
        chain=chain,
        number=hex_int(payload.get("number"), "block number", provider),
        hash=_hash(payload.get("hash"), "block hash", provider),
        parent_hash=_hash(payload.get("parentHash"), "parent hash", provider),
        at=datetime.fromtimestamp(seconds, UTC),
        transactions=transactions,
        provider=provider,
    )


def native_transfers(block: Block, coins: ChainTokens) -> list[Candidate]:
    """Transactions of `block` that send a non-zero amount of the native coin to an address.

    A contract creation (`to` null) is not a transfer. Whether the transaction succeeded is not
    in the block: the caller checks the receipts of those it keeps (a reverted transaction moved
    nothing). Value moved by contracts inside a transaction (internal transfers) is not visible
    without traces and is not reported.
    """
    provider, coin = block.provider, coins.native
    found: list[Candidate] = []
    for tx in block.transactions:
        if not isinstance(tx, dict):
            raise UpstreamPayloadError("block holds transaction hashes only", provider=provider)
        value = hex_int(tx.get("value"), "transaction value", provider)
        to = tx.get("to")
        if value == 0 or to is None:
            continue
        found.append(
            Candidate(
                chain=block.chain,
                hash=_hash(tx.get("hash"), "transaction hash", provider),
                log_index=NATIVE_INDEX,
                from_address=_address(tx.get("from"), "sender", provider),
                to_address=_address(to, "recipient", provider),
                asset=coin.symbol,
                price_symbol=coin.price_symbol,
                raw_amount=value,
                decimals=coin.decimals,
                block_number=block.number,
                block_hash=block.hash,
                at=block.at,
            )
        )
    return found


def token_transfers(block: Block, logs: Any, tokens: ChainTokens) -> list[Candidate]:
    """ERC-20 Transfer logs of the followed tokens in `block`; raises UpstreamPayloadError for a
    log list of the wrong shape or a log from another block (the node answered for a block that
    has since been replaced: the caller fetches again)."""
    provider = block.provider
    if not isinstance(logs, list):
        raise UpstreamPayloadError("eth_getLogs result is not a list", provider=provider)
    found: list[Candidate] = []
    for log in logs:
        if not isinstance(log, dict):
            raise UpstreamPayloadError("a log is not an object", provider=provider)
        if log.get("removed") is True:
            continue  # the node says this log was undone by a reorg
        topics = log.get("topics")
        if not isinstance(topics, list) or len(topics) != 3 or topics[0] != TRANSFER_TOPIC:
            continue  # not an ERC-20 Transfer (an ERC-721 one has four topics)
        token = tokens.tokens.get(str(log.get("address", "")).lower())
        if token is None:
            continue
        if _hash(log.get("blockHash"), "log block hash", provider) != block.hash:
            raise UpstreamPayloadError(
                f"log of block {log.get('blockHash')} in the answer for block {block.hash}",
                provider=provider,
            )
        data = log.get("data")
        if not isinstance(data, str) or len(data) != _HASH_LEN:
            raise UpstreamPayloadError(f"Transfer data {data!r} is not one word", provider=provider)
        raw = hex_int(data, "Transfer amount", provider)
        if raw == 0:
            continue
        found.append(
            Candidate(
                chain=block.chain,
                hash=_hash(log.get("transactionHash"), "log transaction hash", provider),
                log_index=hex_int(log.get("logIndex"), "log index", provider),
                from_address=_topic_address(topics[1], provider),
                to_address=_topic_address(topics[2], provider),
                asset=token.symbol,
                price_symbol=token.price_symbol,
                raw_amount=raw,
                decimals=token.decimals,
                block_number=block.number,
                block_hash=block.hash,
                at=block.at,
            )
        )
    return found


def _topic_address(topic: Any, provider: str) -> str:
    """The address in an indexed address topic (32 bytes, the address in the low 20)."""
    word = _hash(topic, "address topic", provider)
    if not word.startswith(_WORD_ADDRESS_PREFIX):
        raise UpstreamPayloadError(f"topic {topic!r} does not hold an address", provider=provider)
    return "0x" + word[len(_WORD_ADDRESS_PREFIX) :]

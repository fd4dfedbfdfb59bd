"""The tokens the whale detector follows and the addresses it labels, from the shipped data.

`gateway/data/tokens.json` lists, per EVM chain, the native coin and the ERC-20 contracts whose
`Transfer` logs are read (address, decimals, the gateway symbol whose consensus price values
it); `gateway/data/labels.json` names known exchange and bridge addresses. Where each entry
comes from, and how it is checked, is `gateway/data/CHAIN_DATA.md`.

Addresses are compared lower-case (EVM) or as written (Bitcoin: Bech32 is lower-case already,
Base58 is case-sensitive). Must never guess a token from its symbol or a label from a prefix:
an address is known exactly or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

__all__ = [
    "TRANSFER_TOPIC",
    "ChainTokens",
    "Labels",
    "NativeCoin",
    "Token",
    "TokenList",
    "load_labels",
    "load_tokens",
    "normalize_address",
]

# keccak256("Transfer(address,address,uint256)"): topic 0 of every ERC-20 Transfer log.
TRANSFER_TOPIC: Final = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def normalize_address(address: str) -> str:
    """The form addresses are compared in: EVM (0x…) lower-case, anything else as written."""
    return address.lower() if address.startswith(("0x", "0X")) else address


@dataclass(frozen=True, slots=True)
class Token:
    """One ERC-20 contract: what its raw amounts mean and which price values it."""

    chain: str
    symbol: str
    address: str  # lower-case
    decimals: int
    price_symbol: str


@dataclass(frozen=True, slots=True)
class NativeCoin:
    symbol: str
    decimals: int
    price_symbol: str


@dataclass(frozen=True, slots=True)
class ChainTokens:
    """One chain's native coin and its followed tokens, by lower-case contract address."""

    chain: str
    native: NativeCoin
    tokens: Mapping[str, Token]

    @property
    def addresses(self) -> list[str]:
        return sorted(self.tokens)


@dataclass(frozen=True, slots=True)
class TokenList:
    chains: Mapping[str, ChainTokens]

    def price_symbols(self) -> tuple[str, ...]:
        """Every symbol some followed coin or token is priced by (sorted)."""
        found = {c.native.price_symbol for c in self.chains.values()}
        for chain in self.chains.values():
            found.update(t.price_symbol for t in chain.tokens.values())
        return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class Labels:
    """Known addresses per chain -> label."""

    by_chain: Mapping[str, Mapping[str, str]]

    def label(self, chain: str, address: str) -> str | None:
        return self.by_chain.get(chain, {}).get(normalize_address(address))


def _read(name: str) -> Any:
    return json.loads(resources.files("gateway").joinpath("data", name).read_text("utf-8"))


def _int(entry: Mapping[str, Any], key: str, where: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 36:
        raise ValueError(f"{where}: {key} must be an integer from 0 to 36, got {value!r}")
    return value


def _str(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def parse_tokens(raw: Any) -> TokenList:
    """A TokenList from the tokens.json document; ValueError naming the bad entry."""
    chains: dict[str, ChainTokens] = {}
    for chain, body in (raw.get("chains") or {}).items():
        native = body["native"]
        where = f"tokens.json {chain}"
        coin = NativeCoin(
            _str(native, "symbol", where),
            _int(native, "decimals", where),
            _str(native, "price_symbol", where),
        )
        tokens: dict[str, Token] = {}
        for entry in body.get("tokens", []):
            address = _str(entry, "address", where).lower()
            if len(address) != 42 or not address.startswith("0x"):
                raise ValueError(f"{where}: {address!r} is not an EVM address")
            if address in tokens:
                raise ValueError(f"{where}: {address} is listed twice")
            tokens[address] = Token(
                chain,
                _str(entry, "symbol", where),
                address,
                _int(entry, "decimals", where),
                _str(entry, "price_symbol", where),
            )
        chains[chain] = ChainTokens(chain, coin, tokens)
    if raw.get("transfer_topic") != TRANSFER_TOPIC:
        raise ValueError("tokens.json: transfer_topic is not the ERC-20 Transfer topic")
    return TokenList(chains)


def parse_labels(raw: Any) -> Labels:
    by_chain: dict[str, dict[str, str]] = {}
    for index, entry in enumerate(raw.get("labels") or []):
        where = f"labels.json entry {index}"
        address = normalize_address(_str(entry, "address", where))
        label = _str(entry, "label", where)
        for chain in entry.get("chains") or []:
            by_chain.setdefault(chain, {})[address] = label
    return Labels(by_chain)


@cache
def load_tokens() -> TokenList:
    """The shipped token list (read once)."""
    return parse_tokens(_read("tokens.json"))


@cache
def load_labels() -> Labels:
    """The shipped address labels (read once)."""
    return parse_labels(_read("labels.json"))

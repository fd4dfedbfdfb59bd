"""The canonical asset table: which symbol is which coin at each upstream.

The gateway speaks in canonical ticker symbols (`BTC`, `ETH`, ...). Every upstream names coins
its own way: CoinGecko by an API id (`bitcoin`, `avalanche-2`), Binance by a trading pair
(`BTCUSDT`). This module is the one place those names are translated, in both directions, so a
source never guesses an id from a symbol.

A symbol with no entry for a provider is simply not collected from that provider; this module
never derives a name by rule (for example "symbol + USDT"), because a guessed pair that the
exchange has delisted makes Binance reject the whole batch request.

For now the table is a literal in this module; it is meant to move to a shipped data file with
many more assets, behind the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Asset",
    "asset",
    "binance_pair",
    "coingecko_id",
    "known_symbols",
    "normalize_symbol",
    "symbol_for_binance_pair",
    "symbol_for_coingecko_id",
]


@dataclass(frozen=True, slots=True)
class Asset:
    """One asset: its canonical symbol and its name at each upstream (None: not listed there)."""

    symbol: str
    name: str
    coingecko_id: str | None
    binance_pair: str | None


# Binance pairs are all against USDT, which the Binance source treats as USD.
# MATIC: Polygon migrated MATIC to POL in September 2024 and Binance delisted MATICUSDT, so MATIC
# keeps its CoinGecko id (`matic-network`, still served) but has no Binance pair; POL is listed
# separately under its own id and pair.
_ASSETS: tuple[Asset, ...] = (
    Asset("BTC", "Bitcoin", "bitcoin", "BTCUSDT"),
    Asset("ETH", "Ethereum", "ethereum", "ETHUSDT"),
    Asset("SOL", "Solana", "solana", "SOLUSDT"),
    Asset("BNB", "BNB", "binancecoin", "BNBUSDT"),
    Asset("XRP", "XRP", "ripple", "XRPUSDT"),
    Asset("ADA", "Cardano", "cardano", "ADAUSDT"),
    Asset("DOGE", "Dogecoin", "dogecoin", "DOGEUSDT"),
    Asset("USDT", "Tether", "tether", None),
    Asset("USDC", "USD Coin", "usd-coin", "USDCUSDT"),
    Asset("TRX", "TRON", "tron", "TRXUSDT"),
    Asset("DOT", "Polkadot", "polkadot", "DOTUSDT"),
    Asset("LINK", "Chainlink", "chainlink", "LINKUSDT"),
    Asset("MATIC", "Polygon (MATIC)", "matic-network", None),
    Asset("POL", "Polygon Ecosystem Token", "polygon-ecosystem-token", "POLUSDT"),
    Asset("LTC", "Litecoin", "litecoin", "LTCUSDT"),
    Asset("AVAX", "Avalanche", "avalanche-2", "AVAXUSDT"),
)

_BY_SYMBOL: dict[str, Asset] = {asset.symbol: asset for asset in _ASSETS}
_BY_COINGECKO_ID: dict[str, Asset] = {a.coingecko_id: a for a in _ASSETS if a.coingecko_id}
_BY_BINANCE_PAIR: dict[str, Asset] = {a.binance_pair: a for a in _ASSETS if a.binance_pair}
_KNOWN = frozenset(_BY_SYMBOL)


def normalize_symbol(symbol: str) -> str:
    """The canonical spelling of a user-supplied symbol: surrounding blanks removed, upper case."""
    return symbol.strip().upper()


def known_symbols() -> frozenset[str]:
    """Every canonical symbol the gateway knows."""
    return _KNOWN


def asset(symbol: str) -> Asset | None:
    """The table entry for a symbol (any case), or None if unknown."""
    return _BY_SYMBOL.get(normalize_symbol(symbol))


def coingecko_id(symbol: str) -> str | None:
    """CoinGecko's API id for a symbol (any case), or None if unknown or not on CoinGecko."""
    entry = asset(symbol)
    return entry.coingecko_id if entry else None


def symbol_for_coingecko_id(coin_id: str) -> str | None:
    """The canonical symbol for a CoinGecko API id (any case), or None if not in the table."""
    entry = _BY_COINGECKO_ID.get(coin_id.strip().lower())
    return entry.symbol if entry else None


def binance_pair(symbol: str) -> str | None:
    """The Binance USDT pair for a symbol (any case), or None if unknown or not traded there."""
    entry = asset(symbol)
    return entry.binance_pair if entry else None


def symbol_for_binance_pair(pair: str) -> str | None:
    """The canonical symbol for a Binance pair (any case), or None if not in the table."""
    entry = _BY_BINANCE_PAIR.get(normalize_symbol(pair))
    return entry.symbol if entry else None

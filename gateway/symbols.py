"""The canonical asset table: which symbol is which coin at each upstream.

The gateway speaks in canonical ticker symbols (`BTC`, `ETH`, ...). Every upstream names coins
its own way: CoinGecko by an API id (`bitcoin`, `avalanche-2`), Binance by a trading pair
(`BTCUSDT`), Kraken by a pair whose REST answer may use another spelling (`XBTUSD` is answered
as `XXBTZUSD`), Coinbase by a product (`BTC-USD`), CoinPaprika, CoinCap and Messari by their own
ids. This module is the one place those names are translated, in both directions, so a source
never guesses an id from a symbol.

A symbol with no entry for a provider is simply not collected from that provider; this module
never derives a name by rule (for example "symbol + USDT"), because a guessed pair that the
exchange has delisted makes Binance (and Kraken) reject the whole batch request. The one derived
name is DefiLlama's `coingecko:<id>`, which is DefiLlama's own documented addressing scheme.

The table is the shipped data file `gateway/data/assets.json`, read once at import through
`importlib.resources` and validated (`load_table`): a malformed table is a packaging bug and
fails the import loudly rather than mis-routing prices. Every lookup is case-insensitive.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

__all__ = [
    "DATA_FILE",
    "Asset",
    "AssetTableError",
    "all_assets",
    "asset",
    "binance_pair",
    "coinbase_product",
    "coincap_id",
    "coingecko_id",
    "coinpaprika_id",
    "defillama_coin",
    "is_stablecoin",
    "known_symbols",
    "kraken_pair",
    "kraken_ws_symbol",
    "load_table",
    "messari_slug",
    "normalize_symbol",
    "suggest",
    "symbol_for_binance_pair",
    "symbol_for_coinbase_product",
    "symbol_for_coincap_id",
    "symbol_for_coingecko_id",
    "symbol_for_coinpaprika_id",
    "symbol_for_defillama_coin",
    "symbol_for_kraken_pair",
    "symbol_for_kraken_ws",
    "symbol_for_messari_slug",
]

DATA_FILE: Final = "data/assets.json"  # inside the `gateway` package
DEFILLAMA_PREFIX: Final = "coingecko:"


class AssetTableError(ValueError):
    """The shipped asset table is malformed; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One asset: its canonical symbol and its name at each upstream (None: not listed there).

    `kraken_pair` is the name sent to Kraken's REST API; `kraken_key` the key its answers use
    (the same for newer assets, X/Z-prefixed for the oldest: `XBTUSD` -> `XXBTZUSD`);
    `kraken_ws` the WebSocket v2 symbol (`BTC/USD`).
    """

    symbol: str
    name: str
    coingecko_id: str | None
    binance_pair: str | None
    kraken_pair: str | None = None
    kraken_key: str | None = None
    kraken_ws: str | None = None
    coinbase_product: str | None = None
    coinpaprika_id: str | None = None
    coincap_id: str | None = None
    stablecoin: bool = False
    messari_slug: str | None = None


# -- loading and validation ---------------------------------------------------------------------

_SYMBOL_RE = re.compile(r"[A-Z0-9]{1,15}")
_SLUG_RE = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
# How each provider spells its ids, so a typo (or a wrong case) fails the load, not a request.
_FORMATS: Final[dict[str, re.Pattern[str]]] = {
    "coingecko": _SLUG_RE,
    "binance": re.compile(r"[A-Z0-9]{1,16}USDT"),  # only USDT pairs: the source reads them as USD
    "kraken.pair": re.compile(r"[A-Z0-9]{2,16}USD"),
    "kraken.key": re.compile(r"[A-Z0-9]{2,16}USD"),
    "kraken.ws": re.compile(r"[A-Z0-9]{1,15}/USD"),
    "coinbase": re.compile(r"[A-Z0-9]{1,15}-USD"),
    "coinpaprika": _SLUG_RE,
    "coincap": _SLUG_RE,
    "messari": _SLUG_RE,
}
_ENTRY_KEYS: Final = frozenset(
    {"symbol", "name", "stablecoin", "coingecko", "binance", "kraken", "coinbase"}
    | {"coinpaprika", "coincap"}
)
# Keys an entry may leave out (absent means null): providers added after the table was written,
# whose ids are only filled in once confirmed.
_OPTIONAL_KEYS: Final = frozenset({"messari"})
_KRAKEN_KEYS: Final = frozenset({"pair", "key", "ws"})


def load_table(data: Any) -> tuple[Asset, ...]:
    """Validate a decoded asset table and return its entries; raises AssetTableError.

    Rules: a JSON object with `"version": 1` and a list `assets`; each entry has exactly the
    known keys (an optional one, such as `messari`, may be left out: null), a unique upper-case
    `symbol`, a `name`, and for each provider either null or an id of that provider's format;
    ids are unique per provider (for Kraken, no REST name or key may stand for two assets).
    Pure: used on the shipped file and, in tests, on broken copies.
    """
    if not isinstance(data, dict) or data.get("version") != 1:
        raise AssetTableError('expected an object with "version": 1')
    entries = data.get("assets")
    if not isinstance(entries, list) or not entries:
        raise AssetTableError('"assets" must be a non-empty list')
    table = tuple(_entry(raw, index) for index, raw in enumerate(entries))
    _check_unique(table)
    return table


def _entry(raw: Any, index: int) -> Asset:
    where = f"assets[{index}]"
    if not isinstance(raw, dict):
        raise AssetTableError(f"{where}: expected an object")
    unknown = set(raw) - _ENTRY_KEYS - _OPTIONAL_KEYS
    if unknown:
        raise AssetTableError(f"{where}: unknown keys {sorted(unknown)}")
    missing = _ENTRY_KEYS - set(raw)
    if missing:
        raise AssetTableError(f"{where}: missing keys {sorted(missing)} (use null for none)")
    symbol = raw["symbol"]
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
        raise AssetTableError(f"{where}: symbol {symbol!r} is not 1-15 upper-case letters/digits")
    where = f"{where} ({symbol})"
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise AssetTableError(f"{where}: name must be a non-empty string")
    if not isinstance(raw["stablecoin"], bool):
        raise AssetTableError(f"{where}: stablecoin must be true or false")

    def provider_id(value: Any, field_name: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _FORMATS[field_name].fullmatch(value):
            raise AssetTableError(f"{where}: {field_name} {value!r} is not a valid id")
        return value

    kraken = raw["kraken"]
    pair = key = ws = None
    if kraken is not None:
        if not isinstance(kraken, dict) or set(kraken) != _KRAKEN_KEYS:
            raise AssetTableError(f"{where}: kraken must be null or {{pair, key, ws}}")
        pair = provider_id(kraken["pair"], "kraken.pair")
        key = provider_id(kraken["key"], "kraken.key")
        ws = provider_id(kraken["ws"], "kraken.ws")
        if pair is None or key is None or ws is None:
            raise AssetTableError(f"{where}: kraken pair, key and ws are all required")
    return Asset(
        symbol=symbol,
        name=name.strip(),
        coingecko_id=provider_id(raw["coingecko"], "coingecko"),
        binance_pair=provider_id(raw["binance"], "binance"),
        kraken_pair=pair,
        kraken_key=key,
        kraken_ws=ws,
        coinbase_product=provider_id(raw["coinbase"], "coinbase"),
        coinpaprika_id=provider_id(raw["coinpaprika"], "coinpaprika"),
        coincap_id=provider_id(raw["coincap"], "coincap"),
        stablecoin=raw["stablecoin"],
        messari_slug=provider_id(raw.get("messari"), "messari"),
    )


def _check_unique(table: tuple[Asset, ...]) -> None:
    def unique(label: str, values: Iterable[tuple[str, str]]) -> None:
        seen: dict[str, str] = {}
        for value, symbol in values:
            other = seen.setdefault(value.lower(), symbol)
            if other != symbol:
                raise AssetTableError(f"{label} {value!r} is used by {other} and {symbol}")

    symbols = [a.symbol for a in table]
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        raise AssetTableError(f"duplicate symbols: {duplicates}")
    for label in ("coingecko_id", "binance_pair", "coinbase_product", "coinpaprika_id"):
        unique(label, ((v, a.symbol) for a in table if (v := getattr(a, label))))
    unique("coincap_id", ((a.coincap_id, a.symbol) for a in table if a.coincap_id))
    unique("messari_slug", ((a.messari_slug, a.symbol) for a in table if a.messari_slug))
    unique("kraken_ws", ((a.kraken_ws, a.symbol) for a in table if a.kraken_ws))
    # A REST name and a key of the same asset may coincide (SOLUSD); across assets they may not.
    unique(
        "kraken pair/key",
        ((v, a.symbol) for a in table for v in {a.kraken_pair, a.kraken_key} if v),
    )


def _read_shipped() -> tuple[Asset, ...]:
    text = resources.files("gateway").joinpath(DATA_FILE).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AssetTableError(f"{DATA_FILE} is not valid JSON: {exc}") from None
    return load_table(data)


_ASSETS: Final = _read_shipped()
_BY_SYMBOL: Final[dict[str, Asset]] = {a.symbol: a for a in _ASSETS}
_KNOWN: Final = frozenset(_BY_SYMBOL)


def _index(key: Callable[[Asset], Iterable[str | None]]) -> dict[str, Asset]:
    """Reverse lookup on lower-cased names (the table guarantees they are unique)."""
    return {name.lower(): a for a in _ASSETS for name in key(a) if name}


_BY_COINGECKO: Final = _index(lambda a: (a.coingecko_id,))
_BY_BINANCE: Final = _index(lambda a: (a.binance_pair,))
_BY_KRAKEN: Final = _index(lambda a: (a.kraken_pair, a.kraken_key))
_BY_KRAKEN_WS: Final = _index(lambda a: (a.kraken_ws,))
_BY_COINBASE: Final = _index(lambda a: (a.coinbase_product,))
_BY_COINPAPRIKA: Final = _index(lambda a: (a.coinpaprika_id,))
_BY_COINCAP: Final = _index(lambda a: (a.coincap_id,))
_BY_MESSARI: Final = _index(lambda a: (a.messari_slug,))
# For suggestions: names and CoinGecko ids (what people type instead of tickers).
_BY_NAME: Final[Mapping[str, str]] = {
    **{a.name.upper(): a.symbol for a in _ASSETS},
    **{a.coingecko_id.upper(): a.symbol for a in _ASSETS if a.coingecko_id},
}


def _lookup(index: Mapping[str, Asset], name: str) -> str | None:
    entry = index.get(name.strip().lower())
    return entry.symbol if entry else None


# -- the public lookups -------------------------------------------------------------------------


def normalize_symbol(symbol: str) -> str:
    """The canonical spelling of a user-supplied symbol: surrounding blanks removed, upper case."""
    return symbol.strip().upper()


def known_symbols() -> frozenset[str]:
    """Every canonical symbol the gateway knows."""
    return _KNOWN


def all_assets() -> tuple[Asset, ...]:
    """Every entry, in the table's order (market capitalisation when it was written)."""
    return _ASSETS


def asset(symbol: str) -> Asset | None:
    """The table entry for a symbol (any case), or None if unknown."""
    return _BY_SYMBOL.get(normalize_symbol(symbol))


def is_stablecoin(symbol: str) -> bool:
    """True for a known USD stablecoin (USDT, USDC, DAI, ...)."""
    entry = asset(symbol)
    return entry.stablecoin if entry else False


def coingecko_id(symbol: str) -> str | None:
    """CoinGecko's API id for a symbol (any case), or None if unknown or not on CoinGecko."""
    entry = asset(symbol)
    return entry.coingecko_id if entry else None


def symbol_for_coingecko_id(coin_id: str) -> str | None:
    """The canonical symbol for a CoinGecko API id (any case), or None if not in the table."""
    return _lookup(_BY_COINGECKO, coin_id)


def binance_pair(symbol: str) -> str | None:
    """The Binance USDT pair for a symbol (any case), or None if unknown or not traded there."""
    entry = asset(symbol)
    return entry.binance_pair if entry else None


def symbol_for_binance_pair(pair: str) -> str | None:
    """The canonical symbol for a Binance pair (any case), or None if not in the table."""
    return _lookup(_BY_BINANCE, pair)


def kraken_pair(symbol: str) -> str | None:
    """The Kraken USD pair to request (`XBTUSD`), or None if unknown or not traded there."""
    entry = asset(symbol)
    return entry.kraken_pair if entry else None


def symbol_for_kraken_pair(name: str) -> str | None:
    """The canonical symbol for a Kraken REST pair name *or* result key (`XBTUSD`, `XXBTZUSD`)."""
    return _lookup(_BY_KRAKEN, name)


def kraken_ws_symbol(symbol: str) -> str | None:
    """The Kraken WebSocket v2 symbol (`BTC/USD`), or None if not traded there."""
    entry = asset(symbol)
    return entry.kraken_ws if entry else None


def symbol_for_kraken_ws(name: str) -> str | None:
    """The canonical symbol for a Kraken WebSocket v2 symbol (any case)."""
    return _lookup(_BY_KRAKEN_WS, name)


def coinbase_product(symbol: str) -> str | None:
    """The Coinbase Exchange USD product (`BTC-USD`), or None if not traded there."""
    entry = asset(symbol)
    return entry.coinbase_product if entry else None


def symbol_for_coinbase_product(product: str) -> str | None:
    """The canonical symbol for a Coinbase product id (any case)."""
    return _lookup(_BY_COINBASE, product)


def coinpaprika_id(symbol: str) -> str | None:
    """CoinPaprika's coin id (`btc-bitcoin`), or None if unknown or not confirmed."""
    entry = asset(symbol)
    return entry.coinpaprika_id if entry else None


def symbol_for_coinpaprika_id(coin_id: str) -> str | None:
    """The canonical symbol for a CoinPaprika coin id (any case)."""
    return _lookup(_BY_COINPAPRIKA, coin_id)


def coincap_id(symbol: str) -> str | None:
    """CoinCap's asset id (`bitcoin`), or None if unknown or not confirmed."""
    entry = asset(symbol)
    return entry.coincap_id if entry else None


def symbol_for_coincap_id(asset_id: str) -> str | None:
    """The canonical symbol for a CoinCap asset id (any case)."""
    return _lookup(_BY_COINCAP, asset_id)


def messari_slug(symbol: str) -> str | None:
    """Messari's asset slug (`bitcoin`), or None if unknown or not confirmed."""
    entry = asset(symbol)
    return entry.messari_slug if entry else None


def symbol_for_messari_slug(slug: str) -> str | None:
    """The canonical symbol for a Messari asset slug (any case)."""
    return _lookup(_BY_MESSARI, slug)


def defillama_coin(symbol: str) -> str | None:
    """DefiLlama's price key for a symbol (`coingecko:bitcoin`): its documented scheme for
    coins addressed by CoinGecko id. None where the asset has no CoinGecko id."""
    cg = coingecko_id(symbol)
    return DEFILLAMA_PREFIX + cg if cg else None


def symbol_for_defillama_coin(key: str) -> str | None:
    """The canonical symbol for a DefiLlama `coingecko:<id>` key (any case); other keys
    (`ethereum:0x...` contract addresses) are not in the table."""
    key = key.strip()
    if not key.lower().startswith(DEFILLAMA_PREFIX):
        return None
    return symbol_for_coingecko_id(key[len(DEFILLAMA_PREFIX) :])


def suggest(symbol: str, n: int = 3) -> list[str]:
    """Up to `n` known symbols a user may have meant, best first, for UNKNOWN_SYMBOL errors.

    A name or CoinGecko id typed for a symbol (`bitcoin`, `avalanche-2`) comes first, then
    symbols that are spelled alike (`BTCC` -> `BTC`), then alike names (`etherium` -> `ETH`).
    """
    wanted = normalize_symbol(symbol)
    if not wanted or n <= 0:
        return []
    found: list[str] = []
    exact = _BY_NAME.get(wanted)
    if exact:
        found.append(exact)
    found += difflib.get_close_matches(wanted, sorted(_KNOWN), n=n, cutoff=0.7)
    names = difflib.get_close_matches(wanted, list(_BY_NAME), n=n, cutoff=0.75)
    found += [_BY_NAME[name] for name in names]
    return list(dict.fromkeys(s for s in found if s != wanted))[:n]

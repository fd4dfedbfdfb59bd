"""Which coins a piece of news mentions, matched against the asset table (`gateway.symbols`).

Two kinds of mention count:

* a **ticker**, in capitals, as a whole word (`BTC`, `ETH-USD`, `$SOL`): "solution" is not SOL
  and "linked" is not LINK, because a ticker must stand alone and in upper case. Tickers that
  are also ordinary words or common abbreviations (`AMBIGUOUS_TICKERS`: ONE, LINK, DOT, OP,
  NEAR, …) count only as a cashtag (`$LINK`), since "LINK" in an all-caps headline or "the
  DOT" (a transport department) says nothing about the coin;
* a **name**, in any case, as whole words (`Bitcoin`, `chainlink`, `Shiba Inu`), plus a few
  names people use instead of the table's (`ALIASES`: "Ether", "Polygon", "Cosmos"). Names that
  are ordinary words (`AMBIGUOUS_NAMES`: "Dash", "Flow", "Maker", "Stellar", …) are not matched.
  Longer names win over names they contain ("Bitcoin Cash" is BCH, not BTC too).

Upstream coin tags (CryptoPanic's currencies, NewsData's coins) are kept when they are symbols
of the table. Pure and deterministic; the patterns are built once from the shipped table.

Must never report a symbol the asset table does not hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from gateway.symbols import all_assets, known_symbols

__all__ = ["ALIASES", "AMBIGUOUS_NAMES", "AMBIGUOUS_TICKERS", "match_coins"]

# Tickers that are English words, names or everyday abbreviations: only a cashtag counts.
AMBIGUOUS_TICKERS: Final = frozenset(
    {
        "ONE", "LINK", "DOT", "OP", "NEAR", "ATOM", "GT", "AR", "PI", "TON", "FLOW", "SAND",
        "DASH", "LEO", "COMP", "MANA", "CAKE", "HYPE", "TRUMP", "UNI", "POL", "GALA", "MINA",
        "ETC", "APT", "TAO", "RUNE", "ALGO", "NEO", "IOTA", "TIA", "SEI", "ENA", "KAS", "CRO",
        "FET", "USDS",
    }
)  # fmt: skip
# Table names that are ordinary words: never matched as names (the ticker still counts).
AMBIGUOUS_NAMES: Final = frozenset(
    {
        "dash", "flow", "maker", "compound", "quant", "render", "flare", "optimism",
        "immutable", "stellar", "mantle", "stacks", "helium", "jupiter", "avalanche", "gala",
        "mina", "neo", "iota", "the graph", "the sandbox", "sui", "sei", "pepe", "bonk",
        "ondo", "floki", "pi network", "official trump", "internet computer", "cronos",
        "kaia", "cosmos hub", "dai",
    }
)  # fmt: skip
# Names in common use that the table spells otherwise (the table has "Polygon Ecosystem Token").
ALIASES: Final[dict[str, str]] = {
    "ether": "ETH",
    "polygon": "POL",
    "cosmos": "ATOM",
    "tron": "TRX",
    "near protocol": "NEAR",
    "binance coin": "BNB",
    "ripple": "XRP",
    "toncoin": "TON",
    "avalanche avax": "AVAX",
}


def _names() -> dict[str, str]:
    names: dict[str, str] = {}
    for entry in all_assets():
        name = entry.name.lower()
        if "(" in name or name in AMBIGUOUS_NAMES or name == entry.symbol.lower():
            continue
        names.setdefault(name, entry.symbol)
    for alias, symbol in ALIASES.items():
        if symbol in known_symbols():
            names[alias] = symbol
    return names


_NAME_TO_SYMBOL: Final = _names()
# Longest first, so the alternation takes "bitcoin cash" before "bitcoin" at the same place.
_NAME_RE: Final = re.compile(
    r"(?<![\w$])("
    + "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(_NAME_TO_SYMBOL, key=len)[::-1])
    + r")(?![\w])",
    re.IGNORECASE,
)
_TICKER_RE: Final = re.compile(
    r"(?<![\w$])(\$?)("
    + "|".join(re.escape(s) for s in sorted(known_symbols(), key=len)[::-1])
    + r")(?![\w])"
)


def match_coins(*texts: str | None, tags: Iterable[str] = ()) -> tuple[str, ...]:
    """The canonical symbols `texts` mention (and `tags` name), sorted, each once."""
    found: set[str] = {tag.strip().upper() for tag in tags} & known_symbols()
    for text in texts:
        if not text:
            continue
        for match in _NAME_RE.finditer(text):
            name = " ".join(match.group(1).lower().split())
            found.add(_NAME_TO_SYMBOL[name])
        for match in _TICKER_RE.finditer(text):
            cashtag, ticker = match.group(1), match.group(2)
            if cashtag or ticker not in AMBIGUOUS_TICKERS:
                found.add(ticker)
    return tuple(sorted(found))

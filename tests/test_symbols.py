"""The canonical asset table: the shipped data file, its validation, and every lookup."""

from __future__ import annotations

import copy
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from gateway import symbols
from gateway.symbols import Asset, AssetTableError, load_table

REPO = Path(__file__).resolve().parent.parent


def shipped_data() -> dict[str, Any]:
    text = resources.files("gateway").joinpath(symbols.DATA_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


# -- the shipped table -------------------------------------------------------------------------


def test_shipped_table_covers_the_top_100_with_stablecoins() -> None:
    table = symbols.all_assets()
    assert len(table) >= 100
    assert [a.symbol for a in table[:3]] == ["BTC", "ETH", "USDT"]
    top = {"BTC", "ETH", "USDT", "XRP", "BNB", "SOL", "USDC", "DOGE", "TRX", "ADA", "LINK"}
    assert top <= symbols.known_symbols()
    stablecoins = {a.symbol for a in table if a.stablecoin}
    assert {"USDT", "USDC", "DAI", "USDE", "FDUSD", "PYUSD"} <= stablecoins
    assert "BTC" not in stablecoins and "PAXG" not in stablecoins  # gold is not a USD stablecoin
    assert symbols.is_stablecoin("usdc") and not symbols.is_stablecoin("eth")
    assert not symbols.is_stablecoin("NOPE")


def test_every_asset_has_a_coingecko_id() -> None:
    # CoinGecko lists every asset; it is the one provider no entry may lack.
    assert all(a.coingecko_id for a in symbols.all_assets())


def test_shipped_file_loads_to_the_same_table() -> None:
    assert load_table(shipped_data()) == symbols.all_assets()


def test_data_file_is_packaged() -> None:
    """The wheel ships gateway/data/* (package-data), and the module reads it as a resource."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "data/*" in pyproject["tool"]["setuptools"]["package-data"]["gateway"]
    assert resources.files("gateway").joinpath("data/assets.json").is_file()
    assert (REPO / "gateway" / "data" / "assets.json").is_file()


# -- lookups, both directions, any case --------------------------------------------------------


def test_existing_lookups_keep_working() -> None:
    assert symbols.normalize_symbol("  eth ") == "ETH"
    assert symbols.asset("btc") == symbols.asset("BTC")
    btc = symbols.asset(" Btc ")
    assert isinstance(btc, Asset) and btc.name == "Bitcoin"
    assert symbols.coingecko_id("avax") == "avalanche-2"
    assert symbols.symbol_for_coingecko_id("Avalanche-2") == "AVAX"
    assert symbols.binance_pair("eth") == "ETHUSDT"
    assert symbols.symbol_for_binance_pair("ethusdt") == "ETH"
    # MATIC was migrated to POL and delisted on Binance; USDT has no USDT pair.
    assert symbols.binance_pair("MATIC") is None and symbols.binance_pair("POL") == "POLUSDT"
    assert symbols.binance_pair("USDT") is None
    assert isinstance(symbols.known_symbols(), frozenset)


def test_kraken_names_request_key_and_websocket() -> None:
    assert symbols.kraken_pair("btc") == "XBTUSD"
    assert symbols.symbol_for_kraken_pair("XXBTZUSD") == "BTC"  # the key REST answers with
    assert symbols.symbol_for_kraken_pair("xbtusd") == "BTC"  # the name it is asked with
    assert symbols.kraken_pair("sol") == "SOLUSD"
    assert symbols.symbol_for_kraken_pair("SOLUSD") == "SOL"
    assert symbols.kraken_pair("doge") == "XDGUSD"
    assert symbols.kraken_ws_symbol("doge") == "DOGE/USD"
    assert symbols.symbol_for_kraken_ws("btc/usd") == "BTC"
    eth = symbols.asset("ETH")
    assert eth is not None and (eth.kraken_pair, eth.kraken_key) == ("ETHUSD", "XETHZUSD")
    assert symbols.kraken_pair("BNB") is None


def test_other_providers() -> None:
    assert symbols.coinbase_product("btc") == "BTC-USD"
    assert symbols.symbol_for_coinbase_product("eth-usd") == "ETH"
    assert symbols.coinbase_product("BNB") is None
    assert symbols.coinpaprika_id("BTC") == "btc-bitcoin"
    assert symbols.symbol_for_coinpaprika_id("BNB-Binance-Coin") == "BNB"
    assert symbols.coincap_id("bnb") == "binance-coin"
    assert symbols.symbol_for_coincap_id("XRP") == "XRP"
    assert symbols.defillama_coin("eth") == "coingecko:ethereum"
    assert symbols.symbol_for_defillama_coin("coingecko:Bitcoin") == "BTC"
    assert (
        symbols.symbol_for_defillama_coin("ethereum:0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2")
        is None
    )


@pytest.mark.parametrize(
    "lookup",
    [
        symbols.coingecko_id,
        symbols.binance_pair,
        symbols.kraken_pair,
        symbols.kraken_ws_symbol,
        symbols.coinbase_product,
        symbols.coinpaprika_id,
        symbols.coincap_id,
        symbols.defillama_coin,
        symbols.symbol_for_coingecko_id,
        symbols.symbol_for_binance_pair,
        symbols.symbol_for_kraken_pair,
        symbols.symbol_for_kraken_ws,
        symbols.symbol_for_coinbase_product,
        symbols.symbol_for_coinpaprika_id,
        symbols.symbol_for_coincap_id,
        symbols.symbol_for_defillama_coin,
        symbols.asset,
    ],
)
def test_unknown_names_give_none(lookup: Any) -> None:
    assert lookup("no-such-thing") is None
    assert lookup("") is None


def test_reverse_lookups_round_trip_for_every_asset() -> None:
    for a in symbols.all_assets():
        pairs = [
            (a.coingecko_id, symbols.symbol_for_coingecko_id),
            (a.binance_pair, symbols.symbol_for_binance_pair),
            (a.kraken_pair, symbols.symbol_for_kraken_pair),
            (a.kraken_key, symbols.symbol_for_kraken_pair),
            (a.kraken_ws, symbols.symbol_for_kraken_ws),
            (a.coinbase_product, symbols.symbol_for_coinbase_product),
            (a.coinpaprika_id, symbols.symbol_for_coinpaprika_id),
            (a.coincap_id, symbols.symbol_for_coincap_id),
        ]
        for name, reverse in pairs:
            if name is not None:
                assert reverse(name) == a.symbol, (a.symbol, name)
                assert reverse(name.swapcase()) == a.symbol, (a.symbol, name)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("BTCC", ["BTC"]),
        ("bitcoin", ["BTC"]),  # a name typed for a ticker
        ("avalanche-2", ["AVAX"]),  # a CoinGecko id typed for a ticker
        ("etherium", ["ETH"]),  # a misspelt name
        ("dog", ["DOGE"]),
        ("solana", ["SOL"]),
    ],
)
def test_suggest_puts_the_likely_symbol_first(typed: str, expected: list[str]) -> None:
    suggestions = symbols.suggest(typed)
    assert suggestions[: len(expected)] == expected
    assert len(suggestions) <= 3
    assert all(s in symbols.known_symbols() for s in suggestions)


def test_suggest_edge_cases() -> None:
    assert symbols.suggest("xyzzy-qwerty") == []
    assert symbols.suggest("   ") == []
    assert symbols.suggest("BTCC", n=0) == []
    assert len(symbols.suggest("bitcoin", n=1)) == 1
    assert "BTC" not in symbols.suggest("btc")  # never the symbol itself


# -- validation ------------------------------------------------------------------------------


def entry(symbol: str = "AAA", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "symbol": symbol,
        "name": f"{symbol} coin",
        "stablecoin": False,
        "coingecko": symbol.lower() + "-coin",
        "binance": None,
        "kraken": None,
        "coinbase": None,
        "coinpaprika": None,
        "coincap": None,
    }
    base.update(fields)
    return base


def table(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "assets": list(entries)}


def test_a_minimal_table_loads() -> None:
    kraken = {"pair": "XBTUSD", "key": "XXBTZUSD", "ws": "BTC/USD"}
    (btc,) = load_table(table(entry("BTC", binance="BTCUSDT", kraken=kraken, coincap="bitcoin")))
    assert btc.kraken_key == "XXBTZUSD" and btc.binance_pair == "BTCUSDT"
    assert btc.coincap_id == "bitcoin" and btc.coinbase_product is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "version"),
        ({"version": 2, "assets": [entry()]}, "version"),
        ({"version": 1, "assets": []}, "non-empty"),
        ({"version": 1}, "non-empty"),
        (table("AAA"), "expected an object"),
        (table(entry(), entry()), "duplicate symbols"),
        (table(entry("AAA"), entry("BBB", coingecko="aaa-coin")), "used by AAA and BBB"),
        (table(entry("AAA", coincap="x"), entry("BBB", coincap="x")), "coincap_id"),
        (table(entry("aaa")), "symbol"),
        (table(entry("A B")), "symbol"),
        (table(entry(name="")), "name"),
        (table(entry(stablecoin="yes")), "stablecoin"),
        (table(entry(coingecko="Bitcoin")), "coingecko"),  # ids are lower case
        (table(entry(binance="BTCBUSD")), "binance"),  # only USDT pairs
        (table(entry(coinbase="BTCUSD")), "coinbase"),
        (table(entry(coinpaprika="BTC BITCOIN")), "coinpaprika"),
        (table(entry(kraken="XBTUSD")), "kraken"),
        (table(entry(kraken={"pair": "XBTUSD", "key": "XXBTZUSD"})), "kraken"),
        (table(entry(kraken={"pair": "XBTUSD", "key": None, "ws": "BTC/USD"})), "kraken"),
        (table(entry(kraken={"pair": "XBTUSD", "key": "XXBTZUSD", "ws": "XBTUSD"})), "kraken.ws"),
        (
            table(
                entry("AAA", kraken={"pair": "AAAUSD", "key": "XAAAZUSD", "ws": "AAA/USD"}),
                entry("BBB", kraken={"pair": "XAAAZUSD", "key": "BBBUSD", "ws": "BBB/USD"}),
            ),
            "kraken pair/key",
        ),
        (table({k: v for k, v in entry().items() if k != "coincap"}), "missing keys"),
        (table({**entry(), "cmc": 1}), "unknown keys"),
    ],
)
def test_broken_tables_are_refused(data: Any, message: str) -> None:
    with pytest.raises(AssetTableError, match=message):
        load_table(data)


def test_a_duplicate_in_the_shipped_file_would_be_caught() -> None:
    data = shipped_data()
    broken = copy.deepcopy(data)
    broken["assets"][1]["binance"] = broken["assets"][0]["binance"]
    with pytest.raises(AssetTableError, match="BTCUSDT"):
        load_table(broken)

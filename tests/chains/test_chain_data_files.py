"""The shipped token list and address labels: every address intact (checksums recomputed),
the Transfer topic right, every price symbol one the gateway can price."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from gateway.chains.tokens import TRANSFER_TOPIC, load_labels, load_tokens, parse_tokens
from gateway.symbols import known_symbols
from tests.chains.keccak import base58check_ok, bech32_ok, eip55, keccak256


def data(name: str) -> Any:
    return json.loads(resources.files("gateway").joinpath("data", name).read_text("utf-8"))


def test_keccak_matches_known_digests() -> None:
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    # EIP-55's own example addresses.
    for address in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"):  # fmt: skip
        assert eip55(address) == address


def test_the_transfer_topic_is_the_hash_of_the_event_signature() -> None:
    assert "0x" + keccak256(b"Transfer(address,address,uint256)").hex() == TRANSFER_TOPIC
    assert data("tokens.json")["transfer_topic"] == TRANSFER_TOPIC


def test_every_token_address_carries_a_valid_eip55_checksum() -> None:
    for chain, body in data("tokens.json")["chains"].items():
        for token in body["tokens"]:
            assert eip55(token["address"]) == token["address"], (chain, token["symbol"])


def test_every_label_address_carries_a_valid_checksum() -> None:
    for entry in data("labels.json")["labels"]:
        address = entry["address"]
        if address.startswith("0x"):
            if address != "0x" + "0" * 40:
                assert eip55(address) == address, entry["label"]
        elif address.startswith("bc1"):
            assert bech32_ok(address), entry["label"]
        else:
            assert base58check_ok(address), entry["label"]


def test_a_mistyped_address_fails_its_checksum() -> None:
    good = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
    assert eip55(good.replace("7", "8", 1)) != good.replace("7", "8", 1)
    assert not base58check_ok("34xp4vRoCGJym3xR7yCVPFHoCNxv4Twsea")
    assert not bech32_ok("bc1qm34lsc65zpw79lxes69zkqmk6ee3ewf0j77s3x")


def test_the_required_tokens_are_followed_on_ethereum() -> None:
    symbols = {t.symbol for t in load_tokens().chains["ethereum"].tokens.values()}
    assert {"USDT", "USDC", "WETH", "WBTC", "DAI"} <= symbols


def test_every_price_symbol_is_in_the_asset_table() -> None:
    for symbol in load_tokens().price_symbols():
        assert symbol in known_symbols(), symbol


def test_labels_are_found_whatever_the_case() -> None:
    labels = load_labels()
    assert labels.label("ethereum", "0x28c6c06298d514db089934071355e5743bf21d60") == "Binance 14"
    assert labels.label("bsc", "0x28C6c06298d514Db089934071355E5743bf21d60") is None
    assert labels.label("bitcoin", "34xp4vRoCGJym3xR7yCVPFHoCNxv4Twseo") == "Binance cold wallet"


def test_a_bad_token_list_is_refused() -> None:
    raw = data("tokens.json")
    raw["chains"]["ethereum"]["tokens"][0]["decimals"] = "six"
    with pytest.raises(ValueError, match="decimals"):
        parse_tokens(raw)
    raw = data("tokens.json")
    raw["transfer_topic"] = "0x" + "00" * 32
    with pytest.raises(ValueError, match="transfer_topic"):
        parse_tokens(raw)

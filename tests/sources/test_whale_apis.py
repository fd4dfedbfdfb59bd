"""Whale Alert and Bitquery parsers against documented-shape fixtures, and their errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.onchain_models import NATIVE_INDEX
from gateway.sources import bitquery, whale_alert

FIXTURES = Path(__file__).resolve().parents[1] / "simulator" / "fixtures"


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def test_whale_alert_transactions() -> None:
    page = whale_alert.parse_transactions(load("whale_alert_transactions"))
    assert page.cursor == "2bc7e46-2bc7e46-660139ab"
    usdt, btc = page.transfers
    assert usdt.chain == "ethereum" and usdt.asset == "USDT"
    assert usdt.hash.startswith("0x") and usdt.hash == usdt.hash.lower()  # EVM hashes get 0x
    assert usdt.from_address == "0x28c6c06298d514db089934071355e5743bf21d60"
    assert (usdt.from_label, usdt.to_label) == ("binance", None)  # "" is no label
    assert usdt.amount == 25_000_000 and usdt.amount_usd == 25004950.5
    assert usdt.price_usd is None  # Whale Alert's own valuation, not our consensus
    assert usdt.log_index == NATIVE_INDEX and usdt.provider == "whale-alert"
    assert usdt.at == datetime.fromtimestamp(1711356311, UTC)
    assert btc.chain == "bitcoin" and btc.asset == "BTC" and not btc.hash.startswith("0x")


def test_whale_alert_error_and_garbage() -> None:
    with pytest.raises(UpstreamError, match="invalid api_key"):
        whale_alert.parse_transactions(load("whale_alert_error"))
    bad = load("whale_alert_transactions")
    bad["transactions"][0]["amount_usd"] = "a lot"
    with pytest.raises(UpstreamPayloadError, match="numbers"):
        whale_alert.parse_transactions(bad)


def test_bitquery_transfers() -> None:
    [transfer] = bitquery.parse_transfers(load("bitquery_transfers"), chain="ethereum")
    assert transfer.asset == "USDC" and transfer.amount == 3_500_000
    assert transfer.amount_usd == pytest.approx(3500693.12)
    assert transfer.from_address == "0x21a31ee1afc51d94c2efccaa2092ad1028285549"
    assert transfer.block_number == 19512345 and transfer.at.tzinfo is not None
    assert transfer.provider == "bitquery" and transfer.price_usd is None


def test_bitquery_errors() -> None:
    with pytest.raises(UpstreamError, match="Unauthorized"):
        bitquery.parse_transfers(load("bitquery_error"), chain="ethereum")
    with pytest.raises(UpstreamPayloadError):
        bitquery.parse_transfers({"data": {"EVM": {}}}, chain="ethereum")

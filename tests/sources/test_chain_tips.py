"""Chain tips (gateway/sources/chain_tips.py): mempool.space, Blockchair and TronGrid, parsed
from fixtures shaped like their documented answers; garbage is refused."""

from __future__ import annotations

import pytest

from gateway.errors import UpstreamPayloadError
from gateway.sources.chain_tips import (
    parse_blockchair_stats_height,
    parse_mempool_tip_height,
    parse_trongrid_block_number,
    tip_reader_for,
)
from tests.simulator import load_fixture, shipped_provider


def test_tips_parse_from_documented_answers() -> None:
    assert parse_mempool_tip_height("840000\n") == 840_000
    assert parse_blockchair_stats_height(load_fixture("blockchair_bitcoin_stats")) == 840_000
    assert parse_trongrid_block_number(load_fixture("trongrid_getblock")) == 61_265_865


@pytest.mark.parametrize("text", ["", "tip", "-5", "0", "8400001234567890", "<html>"])
def test_a_tip_that_is_not_a_height_is_refused(text: str) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_mempool_tip_height(text)


def test_wrong_shapes_are_refused() -> None:
    with pytest.raises(UpstreamPayloadError, match="no data object"):
        parse_blockchair_stats_height({"context": {"code": 402}})
    with pytest.raises(UpstreamPayloadError, match="best_block_height"):
        parse_blockchair_stats_height({"data": {"best_block_height": "840000"}})
    with pytest.raises(UpstreamPayloadError, match="raw_data"):
        parse_trongrid_block_number({"blockID": "00"})


def test_the_shipped_entries_have_tip_readers() -> None:
    readers = {
        provider: tip_reader_for(shipped_provider(provider))
        for provider in ("mempool", "blockchair", "trongrid")
    }
    assert {p: r.chain for p, r in readers.items() if r} == {
        "mempool": "bitcoin",
        "blockchair": "bitcoin",
        "trongrid": "tron",
    }
    assert tip_reader_for(shipped_provider("publicnode-eth")) is None

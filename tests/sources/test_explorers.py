"""The explorer sources' pure parsers against documented-shape fixtures, and their fault paths:
Blockscout, Ethplorer, Blockchair, mempool.space, the Etherscan family, TronScan."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.sources import (
    blockchair,
    blockscout,
    etherscan_stats,
    ethplorer,
    mempool_space,
    tronscan,
)

FIXTURES = Path(__file__).resolve().parents[1] / "simulator" / "fixtures"
NOW = datetime(2024, 3, 25, 8, 45, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def by_metric(stats: list[Any]) -> dict[str, float]:
    return {s.metric: s.value for s in stats}


def test_blockscout_stats() -> None:
    stats = blockscout.parse_stats(load("blockscout_stats"), NOW, chain="ethereum")
    assert by_metric(stats) == {
        "total_blocks": 19512345,
        "total_addresses": 321456789,
        "total_transactions": 2345678901,
        "transactions_today": 1187654,
        "gas_used_today": 108392837283,
        "average_block_time_seconds": pytest.approx(12.096),
        "network_utilization_pct": 49.71,
    }
    assert {(s.chain, s.provider, s.observed_at) for s in stats} == {
        ("ethereum", "blockscout", NOW)
    }


def test_blockscout_garbage_is_a_failure_not_data() -> None:
    payload = load("blockscout_stats") | {"total_blocks": "lots"}
    with pytest.raises(UpstreamPayloadError, match="total_blocks"):
        blockscout.parse_stats(payload, NOW, chain="ethereum")
    with pytest.raises(UpstreamPayloadError):
        blockscout.parse_stats({"unrelated": 1}, NOW, chain="ethereum")
    with pytest.raises(UpstreamPayloadError):
        blockscout.parse_stats([], NOW, chain="ethereum")


def test_a_missing_figure_is_left_out_never_zero() -> None:
    payload = load("blockscout_stats")
    del payload["transactions_today"]
    payload["network_utilization_percentage"] = None
    metrics = by_metric(blockscout.parse_stats(payload, NOW, chain="ethereum"))
    assert "transactions_today" not in metrics and "network_utilization_pct" not in metrics


def test_ethplorer_last_block_and_error() -> None:
    assert by_metric(ethplorer.parse_last_block(load("ethplorer_last_block"), NOW)) == {
        "last_block": 19512345
    }
    with pytest.raises(UpstreamError, match="Invalid API key"):
        ethplorer.parse_last_block(load("ethplorer_error"), NOW)


def test_blockchair_stats_of_both_chains() -> None:
    btc = by_metric(blockchair.parse_stats(load("blockchair_bitcoin_stats"), NOW, chain="bitcoin"))
    # (blockchair_bitcoin_stats.json is shared with the chain-tip reader.)
    assert btc["best_block_height"] == 840000 and btc["mempool_transactions"] == 118532
    assert btc["hashrate_24h"] == pytest.approx(6.24125328145396357498e20)  # a decimal string
    assert "market_price_usd" not in btc  # prices are the gateway's own
    eth = by_metric(
        blockchair.parse_stats(load("blockchair_ethereum_stats"), NOW, chain="ethereum")
    )
    assert eth["transactions_24h"] == 1187321 and eth["mempool_tps"] == 13.7


def test_blockchair_error_answer() -> None:
    with pytest.raises(UpstreamError, match="blacklisted"):
        blockchair.parse_stats(load("blockchair_error_limit"), NOW, chain="bitcoin")


def test_mempool_space_stats() -> None:
    assert by_metric(
        mempool_space.parse_mempool(load("mempool_mempool"), NOW, provider="mempool")
    ) == {
        "mempool_transactions": 45678,
        "mempool_vsize": 98765432,
        "mempool_total_fee_sat": 123456789,
    }
    difficulty = by_metric(
        mempool_space.parse_difficulty(
            load("mempool_difficulty_adjustment"), NOW, provider="mempool"
        )
    )
    assert difficulty["average_block_time_seconds"] == 589.0
    assert difficulty["blocks_to_retarget"] == 1121


def test_mempool_space_blocks_and_transfers() -> None:
    blocks = mempool_space.parse_blocks(load("mempool_blocks"), provider="mempool")
    assert [b.height for b in blocks] == [836999, 837000]  # oldest first
    assert blocks[1].previous == blocks[0].hash
    txs = mempool_space.parse_block_txs(
        load("mempool_block_txs"), provider="mempool", endpoint="/x"
    )
    transfers = [mempool_space.btc_transfer(tx) for tx in txs]
    assert transfers[0] is None  # coinbase
    whale = transfers[1]
    assert whale is not None
    assert whale.sats == 1500 * mempool_space.SATS  # the change back to the sender is not moved
    assert whale.from_address == "3M219KR5vEneNb47ewrPfWyb5jQ2DjxRP6"
    assert whale.to_address == "bc1ql49ydapnjafl5t2cp9zqpjwe6pdgmxy98859v2"
    assert transfers[2] is not None and transfers[2].sats == 4990000


def test_mempool_space_garbage_pages_are_refused() -> None:
    txs = load("mempool_block_txs")
    txs[1]["vout"][0]["value"] = "lots"
    with pytest.raises(UpstreamPayloadError, match="vout value"):
        mempool_space.parse_block_txs(txs, provider="mempool", endpoint="/x")
    with pytest.raises(UpstreamPayloadError):
        mempool_space.parse_blocks({"blocks": []}, provider="mempool")


def test_etherscan_family_stats_and_errors() -> None:
    [block] = etherscan_stats.parse_block_number(
        load("etherscan_block_number"), NOW, chain="ethereum", provider="etherscan"
    )
    assert block.metric == "latest_block" and block.value == 0x129BC39
    [supply] = etherscan_stats.parse_stats_result(
        load("etherscan_ethsupply"), NOW, action="ethsupply", chain="ethereum", provider="etherscan"
    )
    assert supply.metric == "eth_supply" and supply.value == pytest.approx(120269533.1245)
    [nodes] = etherscan_stats.parse_stats_result(
        load("etherscan_nodecount"), NOW, action="nodecount", chain="ethereum", provider="etherscan"
    )
    assert nodes.value == 6253
    with pytest.raises(UpstreamError, match="Invalid API Key"):
        etherscan_stats.parse_stats_result(
            load("etherscan_error_key"),
            NOW,
            action="ethsupply",
            chain="ethereum",
            provider="etherscan",
        )
    limited = {"status": "0", "message": "NOTOK", "result": "Max rate limit reached"}
    with pytest.raises(UpstreamRateLimited):
        etherscan_stats.parse_block_number(limited, NOW, chain="ethereum", provider="etherscan")


def test_tronscan_status() -> None:
    assert by_metric(tronscan.parse_status(load("tronscan_system_status"), NOW)) == {
        "latest_block": 60512345,
        "confirmed_block": 60512326,
        "sync_progress_pct": pytest.approx(99.99999732599234),
    }
    with pytest.raises(UpstreamPayloadError):
        tronscan.parse_status({"network": {"type": "mainnet"}}, NOW)

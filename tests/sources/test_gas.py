"""Fee tiers (gateway/sources/gas.py): eth_feeHistory turned into slow/standard/fast as wallets
do, checked against arithmetic done by hand; the Etherscan gas oracle and mempool.space's
recommendation parsed from fixtures shaped like their documented answers."""

from __future__ import annotations

import copy

import pytest

from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.sources.gas import (
    fee_history_tiers,
    parse_etherscan_gas_oracle,
    parse_mempool_fees,
)
from gateway.sources.jsonrpc_results import parse_fee_history
from tests.simulator import load_fixture

GWEI = 1_000_000_000


def test_tiers_from_fee_history_match_the_hand_computed_expectation() -> None:
    history = parse_fee_history(load_fixture("jsonrpc_fee_history")["result"], [10, 50, 90])
    tiers = fee_history_tiers(history)
    # The fixture's four blocks, rewards at the 10th/50th/90th percentile, in gwei:
    #   block 0 (gasUsedRatio 0.50): 1.0, 2.0, 5.0
    #   block 1 (gasUsedRatio 0.00): 0,   0,   0     <- empty: says nothing, left out
    #   block 2 (gasUsedRatio 0.99): 0.1, 1.0, 3.0
    #   block 3 (gasUsedRatio 0.21): 2.0, 3.0, 8.0
    # Mean priority fee over the three non-empty blocks:
    #   slow     (1.0 + 0.1 + 2.0) / 3 = 3.1 / 3 = 1.0333… gwei
    #   standard (2.0 + 1.0 + 3.0) / 3 = 6.0 / 3 = 2.0     gwei
    #   fast     (5.0 + 3.0 + 8.0) / 3 = 16  / 3 = 5.3333… gwei
    # The next block's base fee is the last baseFeePerGas entry, 0x3b9aca00 = 1.0 gwei, so:
    #   slow 2.0333… gwei, standard 3.0 gwei, fast 6.3333… gwei, base fee 1.0 gwei.
    assert tiers.base_fee == pytest.approx(1.0 * GWEI)
    assert tiers.slow == pytest.approx((1.0 + 3.1 / 3) * GWEI)
    assert tiers.standard == pytest.approx(3.0 * GWEI)
    assert tiers.fast == pytest.approx((1.0 + 16 / 3) * GWEI)
    assert history.newest_block == 0x1406F40  # the block the tiers are computed up to


def test_a_history_of_empty_blocks_is_the_base_fee_alone() -> None:
    result = copy.deepcopy(load_fixture("jsonrpc_fee_history")["result"])
    result["gasUsedRatio"] = [0, 0, 0, 0]
    result["reward"] = [["0x0", "0x0", "0x0"]] * 4
    tiers = fee_history_tiers(parse_fee_history(result, [10, 50, 90]))
    assert (tiers.slow, tiers.standard, tiers.fast) == (1.0 * GWEI, 1.0 * GWEI, 1.0 * GWEI)


def test_tiers_need_three_percentiles() -> None:
    result = copy.deepcopy(load_fixture("jsonrpc_fee_history")["result"])
    result["reward"] = [row[:2] for row in result["reward"]]
    with pytest.raises(ValueError, match="three reward percentiles"):
        fee_history_tiers(parse_fee_history(result, [10, 90]))


def test_the_etherscan_gas_oracle_is_read_in_gwei() -> None:
    gas = parse_etherscan_gas_oracle(load_fixture("etherscan_gas_oracle"))
    assert (gas.safe, gas.propose, gas.fast) == (0.496839934, 0.496840168, 0.55411917)
    assert gas.base_fee == 0.496839934 and gas.last_block == 23_467_872


def test_the_etherscan_gas_oracle_errors_are_upstream_errors() -> None:
    with pytest.raises(UpstreamError, match="Missing/Invalid API Key"):
        parse_etherscan_gas_oracle(load_fixture("etherscan_error_missing_key"))
    limited = {"status": "0", "message": "NOTOK", "result": "Max rate limit reached"}
    with pytest.raises(UpstreamRateLimited):
        parse_etherscan_gas_oracle(limited)
    swapped = copy.deepcopy(load_fixture("etherscan_gas_oracle"))
    swapped["result"]["FastGasPrice"] = "0.1"
    with pytest.raises(UpstreamPayloadError, match="out of order"):
        parse_etherscan_gas_oracle(swapped)
    garbage = copy.deepcopy(load_fixture("etherscan_gas_oracle"))
    garbage["result"]["SafeGasPrice"] = "fast"
    with pytest.raises(UpstreamPayloadError, match="SafeGasPrice"):
        parse_etherscan_gas_oracle(garbage)


def test_mempool_fees_are_read_and_garbage_refused() -> None:
    fees = parse_mempool_fees(load_fixture("mempool_fees_recommended"))
    assert (fees.fastest, fees.half_hour, fees.hour, fees.economy, fees.minimum) == (
        12,
        9,
        7,
        4,
        2,
    )
    for name, value in (("hourFee", "7"), ("fastestFee", 0), ("economyFee", None)):
        bad = {**load_fixture("mempool_fees_recommended"), name: value}
        with pytest.raises(UpstreamPayloadError, match=name):
            parse_mempool_fees(bad)
    with pytest.raises(UpstreamPayloadError, match="out of order"):
        parse_mempool_fees({**load_fixture("mempool_fees_recommended"), "fastestFee": 1})

"""Gas (gateway/chains/gas.py): the keyed Etherscan oracle first, else tiers from eth_feeHistory
through the chain's RPC pool, else eth_gasPrice; Bitcoin from mempool.space. Stored, published,
and the last good observation kept when a later one fails. Against the upstream simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from gateway.config import AuthSpec
from gateway.errors import PoolExhausted
from gateway.storage import Storage
from tests.chains.registry_rig import open_rig
from tests.simulator.rest import API_KEYS, Fault, Simulator, run_simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator() as simulator:
        yield simulator


def etherscan(sim: Simulator):  # type: ignore[no-untyped-def]
    return sim.provider(
        "etherscan",
        categories=("EXPLORER",),
        chain="ethereum",
        auth=AuthSpec(kind="query", name="apikey", env="ETHERSCAN_API_KEY"),
        timeout_seconds=1.0,
    )


async def test_without_keys_gas_is_computed_from_fee_history_of_the_chains_nodes(
    sim: Simulator, running_storage: Storage
) -> None:
    nodes = [sim.rpc_provider("rpc-a", timeout_seconds=1.0)]
    async with open_rig(running_storage, [*nodes, etherscan(sim)]) as rig:
        tracker = rig.chains.gas
        assert tracker.chains() == ["ethereum"]
        with rig.bus.gas.subscribe() as published, trio.fail_after(10):
            gas = await tracker.current("ethereum")
            seen = published.drain()
        # The simulator's blocks: base fee steady at 20 gwei; each block's transactions tip
        # 1, 1.5, 2, 3 and 5 gwei with 3M gas each, so the 10th/50th/90th percentiles of its gas
        # are 1, 2 and 5 gwei (geth walks the gas in tip order: 10 % of 15M is in the first
        # transaction, 50 % = 7.5M in the third, 90 % = 13.5M in the fifth).
        assert (gas.method, gas.unit, gas.provider) == ("FEE_HISTORY", "gwei", "rpc-a")
        assert (gas.slow, gas.standard, gas.fast, gas.base_fee) == (21.0, 22.0, 25.0, 20.0)
        assert gas.block_number == sim.evm.chain("ethereum").head
        assert sim.hits["etherscan"] == 0  # unkeyed: never called
        assert seen == [gas]
        stored = await rig.store.latest_gas()
        assert [(g.chain, g.standard, g.method) for g in stored] == [
            ("ethereum", 22.0, "FEE_HISTORY")
        ]


async def test_a_keyed_etherscan_oracle_is_asked_first(
    sim: Simulator, running_storage: Storage
) -> None:
    nodes = [sim.rpc_provider("rpc-a", timeout_seconds=1.0)]
    env = {"ETHERSCAN_API_KEY": API_KEYS["etherscan"]}
    async with open_rig(running_storage, [*nodes, etherscan(sim)], env=env) as rig:
        with trio.fail_after(10):
            gas = await rig.chains.gas.current("ethereum")
        assert (gas.method, gas.provider) == ("ORACLE", "etherscan")
        assert (gas.slow, gas.standard, gas.fast) == (0.496839934, 0.496840168, 0.55411917)
        assert gas.block_number == 23_467_872
        assert sim.evm.node("rpc-a").calls["eth_feeHistory"] == 0
        # The oracle failing, the nodes answer.
        sim.inject("etherscan", Fault.status(502))
        with trio.fail_after(10):
            gas = await rig.chains.gas.observe("ethereum")
        assert gas is not None and gas.method == "FEE_HISTORY"


async def test_nodes_without_fee_history_give_eth_gas_price_for_every_tier(
    sim: Simulator, running_storage: Storage
) -> None:
    sim.evm.node("rpc-a").unsupported.add("eth_feeHistory")
    async with open_rig(running_storage, [sim.rpc_provider("rpc-a", timeout_seconds=1.0)]) as rig:
        with trio.fail_after(10):
            gas = await rig.chains.gas.current("ethereum")
        # eth_gasPrice: the next base fee (20 gwei) plus the median tip (2 gwei), one price.
        assert (gas.method, gas.slow, gas.standard, gas.fast) == ("GAS_PRICE", 22.0, 22.0, 22.0)
        assert gas.base_fee is None


async def test_bitcoin_fees_come_from_mempool_space(
    sim: Simulator, running_storage: Storage
) -> None:
    mempool = sim.provider(
        "mempool", categories=("EXPLORER",), chain="bitcoin", timeout_seconds=1.0
    )
    async with open_rig(running_storage, [mempool]) as rig:
        assert rig.chains.gas.chains() == ["bitcoin"]
        with trio.fail_after(10):
            gas = await rig.chains.gas.current("bitcoin")
        assert (gas.slow, gas.standard, gas.fast) == (7, 9, 12)  # hour, half hour, fastest
        assert (gas.unit, gas.method, gas.base_fee) == ("sat/vB", "MEMPOOL", None)


async def test_after_a_failure_the_last_good_observation_stays_and_the_error_is_kept(
    sim: Simulator, running_storage: Storage
) -> None:
    nodes = [sim.rpc_provider("rpc-a", timeout_seconds=1.0)]
    async with open_rig(running_storage, nodes) as rig:
        tracker = rig.chains.gas
        with trio.fail_after(10):
            good = await tracker.current("ethereum")
        sim.inject("rpc-a", Fault.status(503))
        with trio.fail_after(10):
            assert await tracker.observe("ethereum") is None
        failure = tracker.failure("ethereum")
        assert isinstance(failure, PoolExhausted)
        assert {provider for provider, _, _ in failure.errors} == {"rpc-a"}
        assert await tracker.current("ethereum") is good


async def test_nothing_observable_is_an_error_naming_each_source(
    sim: Simulator, running_storage: Storage
) -> None:
    sim.inject("rpc-a", Fault.status(500))
    async with open_rig(running_storage, [sim.rpc_provider("rpc-a", timeout_seconds=1.0)]) as rig:
        with trio.fail_after(10), pytest.raises(PoolExhausted) as caught:
            await rig.chains.gas.current("ethereum")
        messages = [message for _, message, _ in caught.value.errors]
        assert len(messages) == 2 and all("500" in m for m in messages)  # feeHistory, gasPrice

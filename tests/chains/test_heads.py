"""Chain heads (gateway/chains/heads.py): every node polled, the highest head wins, a lagging
node is DEGRADED and benched (no pool reads from it), heads stored and published; Bitcoin and
Tron from their tip sources. Against the upstream simulator, one round at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from gateway.config import PoolConfig
from gateway.errors import PoolExhausted
from gateway.storage import Storage
from tests.chains.registry_rig import open_rig
from tests.simulator.rest import Fault, Simulator, run_simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator() as simulator:
        yield simulator


def eth_nodes(sim: Simulator, *ids: str) -> list:  # type: ignore[type-arg]
    for node in ids:
        if node not in sim.evm.nodes:
            sim.evm.add_node(node, "ethereum")
    return [sim.rpc_provider(node, priority=n, timeout_seconds=1.0) for n, node in enumerate(ids)]


async def test_a_lagging_node_is_degraded_benched_and_not_used_for_the_head(
    sim: Simulator, running_storage: Storage
) -> None:
    providers = eth_nodes(sim, "rpc-a", "rpc-b", "rpc-c")
    sim.evm.lag("rpc-c", 20)  # five blocks is the threshold
    chain = sim.evm.chain("ethereum")
    async with open_rig(running_storage, providers) as rig:
        with trio.fail_after(10):
            head = await rig.chains.heads.poll("ethereum")
        assert head is not None
        assert (head.block_number, head.provider, head.lag_blocks) == (chain.head, "rpc-a", 0)
        nodes = {node.provider: node for node in head.nodes}
        assert nodes["rpc-c"].block_number == chain.head - 20
        assert (nodes["rpc-c"].lag_blocks, nodes["rpc-c"].lagging) == (20, True)
        assert (nodes["rpc-b"].lag_blocks, nodes["rpc-b"].lagging) == (0, False)
        board = rig.registry.board
        assert board.state("rpc-c") == "DEGRADED"
        assert "lagging 20 blocks" in (board.records["rpc-c"].reason or "")
        assert board.state("rpc-a") == "ONLINE"

        # The pool never reads from the lagging node, even when it is the pool's first choice.
        pool = rig.registry.rpc_pools()["ethereum"]
        pool.rotate()
        pool.rotate()  # rpc-c is now preferred
        before = sim.evm.node("rpc-c").calls["eth_getBlockByNumber"]
        with trio.fail_after(5):
            block, served = await rig.chains.rpc.call_via(
                pool, "eth_getBlockByNumber", ["latest", False]
            )
        assert served != "rpc-c" and int(block["number"], 16) == chain.head
        assert sim.evm.node("rpc-c").calls["eth_getBlockByNumber"] == before

        # Caught up: used again, and its state follows its requests once more.
        sim.evm.lag("rpc-c", 0)
        with trio.fail_after(10):
            await rig.chains.heads.poll("ethereum")
        assert "rpc-c" not in rig.registry.benched
        assert board.state("rpc-c") == "ONLINE"


async def test_the_highest_head_wins_and_a_hanging_node_does_not_hold_the_round(
    sim: Simulator, running_storage: Storage
) -> None:
    providers = eth_nodes(sim, "rpc-a", "rpc-b")
    sim.set_block("rpc-a", 21_000_100)
    sim.set_block("rpc-b", 21_000_103)  # the second node is ahead: it wins
    async with open_rig(running_storage, providers) as rig:
        with trio.fail_after(10):
            head = await rig.chains.heads.poll("ethereum")
        assert head is not None and (head.block_number, head.provider) == (21_000_103, "rpc-b")
        sim.inject("rpc-b", Fault.hang())
        started = trio.current_time()
        with trio.fail_after(10):
            head = await rig.chains.heads.poll("ethereum")
        assert trio.current_time() - started < 4  # a 1 s timeout, not the hang
        assert head is not None and (head.block_number, head.provider) == (21_000_100, "rpc-a")
        # behind the head seen a round ago, and so said
        assert head.lag_blocks == 3
        failed = next(node for node in head.nodes if node.provider == "rpc-b")
        assert failed.block_number is None and "timed out" in (failed.error or "")


async def test_every_node_failing_leaves_the_chain_out_with_each_nodes_error(
    sim: Simulator, running_storage: Storage
) -> None:
    providers = eth_nodes(sim, "rpc-a", "rpc-b")
    async with open_rig(running_storage, providers) as rig:
        with trio.fail_after(10):
            assert await rig.chains.heads.poll("ethereum") is not None
        sim.inject("rpc-a", Fault.status(502))
        sim.inject("rpc-b", Fault.wrong_shape({"jsonrpc": "2.0", "id": 1, "result": "latest"}))
        with trio.fail_after(10):
            assert await rig.chains.heads.poll("ethereum") is None
            heads, errors = await rig.chains.heads.heads()
        assert heads == []
        (error,) = errors
        assert isinstance(error, PoolExhausted)
        named = {provider: (message, status) for provider, message, status in error.errors}
        assert set(named) == {"rpc-a", "rpc-b"}
        assert named["rpc-a"][1] == 502
        assert "not a hex quantity" in named["rpc-b"][0]


async def test_a_node_serving_another_chain_is_never_used(
    sim: Simulator, running_storage: Storage
) -> None:
    sim.evm.add_node("bsc-x", "bsc")
    wrong = sim.rpc_provider("bsc-x", chain="ethereum", timeout_seconds=1.0)  # a mislabelled URL
    providers = [*eth_nodes(sim, "rpc-a"), wrong]
    async with open_rig(running_storage, providers) as rig:
        with trio.fail_after(10):
            head = await rig.chains.heads.poll("ethereum")
        assert head is not None and head.provider == "rpc-a"
        assert head.block_number == sim.evm.chain("ethereum").head
        assert rig.registry.board.state("bsc-x") == "OFFLINE"
        assert "serves chain id 56" in (rig.registry.benched.get("bsc-x") or "")


async def test_a_node_without_eth_block_number_is_read_through_the_latest_block(
    sim: Simulator, running_storage: Storage
) -> None:
    providers = eth_nodes(sim, "rpc-a")
    sim.evm.node("rpc-a").unsupported.add("eth_blockNumber")  # Cloudflare's public gateway
    async with open_rig(running_storage, providers) as rig:
        for _ in range(2):
            with trio.fail_after(10):
                head = await rig.chains.heads.poll("ethereum")
            assert head is not None and head.block_number == sim.evm.chain("ethereum").head
            sim.evm.chain("ethereum").add_blocks(1)
        assert sim.evm.node("rpc-a").calls["eth_getBlockByNumber"] == 2


async def test_heads_are_stored_published_when_they_advance_and_served_after_a_restart(
    sim: Simulator, running_storage: Storage
) -> None:
    providers = eth_nodes(sim, "rpc-a")
    chain = sim.evm.chain("ethereum")
    async with open_rig(running_storage, providers) as rig:
        with rig.bus.chain_heads.subscribe() as published, trio.fail_after(10):
            await rig.chains.heads.poll("ethereum")
            await rig.chains.heads.poll("ethereum")  # the same block: not published again
            chain.add_blocks(2)
            await rig.chains.heads.poll("ethereum")
            seen = published.drain()
        assert [h.block_number for h in seen] == [chain.head - 2, chain.head]
        stored = await rig.store.latest_heads()
        assert [(h.chain, h.block_number, h.provider) for h in stored] == [
            ("ethereum", chain.head, "rpc-a")
        ]
        assert [n.provider for n in stored[0].nodes] == ["rpc-a"]
    sim.inject("rpc-a", Fault.status(503))  # down after the restart: the stored head answers
    async with open_rig(running_storage, providers) as rig:
        await rig.chains.heads._seed()  # what run() does first
        heads, errors = await rig.chains.heads.heads()
        assert errors == [] and [h.block_number for h in heads] == [chain.head]


async def test_bitcoin_and_tron_tips_come_from_their_tip_sources(
    sim: Simulator, running_storage: Storage
) -> None:
    explorer = {"categories": ("EXPLORER",), "timeout_seconds": 1.0}
    mempool = sim.provider("mempool", chain="bitcoin", priority=1, **explorer)
    blockchair = sim.provider("blockchair", priority=2, **explorer)
    trongrid = sim.provider("trongrid", categories=("RPC",), chain="tron", timeout_seconds=1.0)
    sim.chain_apis.bitcoin_height = 840_123
    sim.chain_apis.tron_height = 61_300_000
    async with open_rig(running_storage, [mempool, blockchair, trongrid]) as rig:
        assert set(rig.chains.heads.sources()) == {"bitcoin", "tron"}
        with trio.fail_after(10):
            heads, errors = await rig.chains.heads.heads()
        assert errors == []
        assert {(h.chain, h.block_number, h.provider) for h in heads} == {
            ("bitcoin", 840_123, "mempool"),
            ("tron", 61_300_000, "trongrid"),
        }
        assert sim.hits["blockchair"] == 0  # asked only when mempool.space fails
        sim.inject("mempool", Fault.status(500))
        sim.chain_apis.bitcoin_height = 840_124
        with trio.fail_after(10):
            head = await rig.chains.heads.poll("bitcoin")
        assert head is not None and (head.block_number, head.provider) == (840_124, "blockchair")


async def test_a_pool_declared_under_a_custom_id_is_polled_too(
    sim: Simulator, running_storage: Storage
) -> None:
    providers = eth_nodes(sim, "rpc-a", "rpc-b")
    pool = PoolConfig("eth-nodes", "Ethereum", "RPC", "ROUND_ROBIN", ("rpc-a", "rpc-b"))
    async with open_rig(running_storage, providers, pools=[pool]) as rig:
        sources = rig.chains.heads.sources()
        assert sources["ethereum"].pool == "eth-nodes"
        with trio.fail_after(10):
            heads, _ = await rig.chains.heads.heads()
        assert {len(h.nodes) for h in heads} == {2}

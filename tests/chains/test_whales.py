"""The whale detector over a scripted chain: detection, labels, pricing, dedup, reorgs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest
import trio

from gateway.chains.follower import BlockFollower
from gateway.chains.tokens import load_labels, load_tokens
from gateway.chains.whales import EvmWhaleWatch
from gateway.errors import UpstreamPayloadError
from gateway.onchain_models import NATIVE_INDEX, WhaleTransfer
from gateway.pubsub import Topic
from gateway.storage import Storage, WhaleStore
from tests.chains.chain_script import (
    BINANCE_14,
    COINBASE_10,
    USDC,
    USDT,
    InProcessRpc,
    ScriptedChain,
    Tx,
    address,
)

MILLION = 1_000_000
USDT_UNITS = 10**6  # USDT has 6 decimals on Ethereum


@dataclass
class Rig:
    chain: ScriptedChain
    rpc: InProcessRpc
    watch: EvmWhaleWatch
    store: WhaleStore
    topic: Topic[WhaleTransfer]
    prices: dict[str, float | None]
    asked: list[tuple[str, datetime]]


def make_watch(
    chain: ScriptedChain,
    store: WhaleStore,
    topic: Topic[WhaleTransfer],
    prices: dict[str, float | None],
    asked: list[tuple[str, datetime]],
    *,
    max_blocks: int = 50,
) -> tuple[InProcessRpc, EvmWhaleWatch]:
    rpc = InProcessRpc(chain)
    tokens = load_tokens().chains["ethereum"]

    async def price_at(symbol: str, at: datetime) -> float | None:
        asked.append((symbol, at))
        return prices.get(symbol)

    follower = BlockFollower("ethereum", rpc, tokens, depth=16, max_blocks=max_blocks)
    watch = EvmWhaleWatch(
        follower, rpc, tokens, load_labels(), price_at, store, topic.publish, min_usd=MILLION
    )
    return rpc, watch


@pytest.fixture
async def rig(running_storage: Storage) -> AsyncIterator[Rig]:
    chain = ScriptedChain()
    store = WhaleStore(running_storage)
    topic: Topic[WhaleTransfer] = Topic("whales", 64)
    prices: dict[str, float | None] = {"USDT": 1.0002, "USDC": 0.9998, "ETH": 3000.0}
    asked: list[tuple[str, datetime]] = []
    rpc, watch = make_watch(chain, store, topic, prices, asked)
    with trio.fail_after(10):
        await watch.scan_once()  # starts at the head: nothing to find there
    yield Rig(chain, rpc, watch, store, topic, prices, asked)


def usdt(amount: float) -> int:
    return int(amount * USDT_UNITS)


async def test_a_two_million_usdt_transfer_is_one_labelled_whale(rig: Rig) -> None:
    with rig.topic.subscribe() as subscriber, trio.fail_after(10):
        block = rig.chain.mine(
            [
                Tx(address(1), USDT, transfers=[(USDT, BINANCE_14, COINBASE_10, usdt(2_000_000))]),
                Tx(address(2), USDT, transfers=[(USDT, address(3), address(4), usdt(999_000))]),
                Tx(address(5), address(6), value=10**18),  # 1 ETH: 3,000 USD
            ]
        )
        published = await rig.watch.scan_once()
        assert len(published) == 1
        whale = await subscriber.receive()
        assert subscriber.pending == 0
    assert whale == published[0]
    assert whale.chain == "ethereum" and whale.asset == "USDT" and not whale.removed
    assert whale.amount == 2_000_000
    assert whale.amount_usd == pytest.approx(2_000_000 * 1.0002)
    assert whale.price_usd == 1.0002
    assert (whale.from_label, whale.to_label) == ("Binance 14", "Coinbase 10")
    assert (whale.from_address, whale.to_address) == (BINANCE_14, COINBASE_10)
    assert whale.block_hash == block.hash and whale.block_number == block.number
    assert whale.hash == block.transactions[0]["hash"] and whale.log_index == 0
    assert whale.at.timestamp() == block.timestamp
    assert whale.provider == "chain-scan"
    # Priced by the symbol's own consensus at the block's time, once per symbol.
    assert sorted(s for s, _ in rig.asked) == ["ETH", "USDT"]
    assert {at.timestamp() for _, at in rig.asked} == {block.timestamp}
    stored = await rig.store.recent(since=whale.at)
    assert stored == [whale]


async def test_replaying_the_same_block_publishes_and_stores_nothing_twice(
    rig: Rig, running_storage: Storage
) -> None:
    rig.chain.mine([Tx(address(1), USDT, transfers=[(USDT, address(2), address(3), usdt(3e6))])])
    with trio.fail_after(10):
        assert len(await rig.watch.scan_once()) == 1
        assert await rig.watch.scan_once() == []  # no new block
        # A second detector (a restart) that starts one block back reads the same block again.
        rig.chain.head -= 1
        _rpc, again = make_watch(rig.chain, rig.store, rig.topic, rig.prices, [])
        await again.scan_once()
        rig.chain.head += 1
        with rig.topic.subscribe() as subscriber:
            assert await again.scan_once() == []
            assert subscriber.pending == 0
        assert again.counters.duplicates == 1 and again.counters.whales == 0
        rows = await running_storage.read(
            lambda db: db.execute("SELECT count(*) FROM whale_transactions").fetchone()[0]
        )
    assert rows == 1


async def test_a_reorged_blocks_transfer_is_withdrawn(rig: Rig) -> None:
    first = rig.chain.mine(
        [Tx(address(1), USDC, transfers=[(USDC, address(2), address(3), usdt(5e6))])]
    )
    with trio.fail_after(10):
        [found] = await rig.watch.scan_once()
        assert found.block_hash == first.hash
        rig.chain.reorg(1, [[Tx(address(7), address(8), value=1)], []])  # a new branch, longer
        with rig.topic.subscribe() as subscriber:
            published = await rig.watch.scan_once()
            events = subscriber.drain()
        assert events == published
        [withdrawn] = published
        assert withdrawn.removed and withdrawn.key == found.key
        assert withdrawn.block_hash == first.hash
        assert await rig.store.recent(since=found.at) == []  # not left standing as confirmed
        [kept] = await rig.store.recent(since=found.at, include_removed=True)
        assert kept.removed
        assert rig.watch.counters.replaced_blocks == 1 and rig.watch.counters.withdrawn == 1


async def test_a_tip_replaced_at_the_same_height_is_noticed(rig: Rig) -> None:
    rig.chain.mine([Tx(address(1), USDC, transfers=[(USDC, address(2), address(3), usdt(5e6))])])
    with trio.fail_after(10):
        [found] = await rig.watch.scan_once()
        # The same transfer lands in the replacing block: withdrawn from the old block, then
        # back (revived, in the new block) — never two rows, never left in the dead block.
        rig.chain.reorg(
            1, [[Tx(address(1), USDC, transfers=[(USDC, address(2), address(3), usdt(5e6))])]]
        )
        rig.chain.blocks[rig.chain.head].transactions[0]["hash"] = found.hash
        for log in rig.chain.blocks[rig.chain.head].logs:
            log["transactionHash"] = found.hash
        published = await rig.watch.scan_once()
    assert [t.removed for t in published] == [True, False]
    assert published[1].block_hash == rig.chain.blocks[rig.chain.head].hash
    [standing] = await rig.store.recent(since=found.at)
    assert standing.block_hash == rig.chain.blocks[rig.chain.head].hash


async def test_without_a_consensus_price_a_transfer_is_skipped_and_counted(rig: Rig) -> None:
    rig.prices["USDT"] = None  # no fresh USDT ticks, or the providers disagree
    rig.chain.mine([Tx(address(1), USDT, transfers=[(USDT, address(2), address(3), usdt(9e6))])])
    with trio.fail_after(10):
        assert await rig.watch.scan_once() == []
    assert rig.watch.counters.unpriced["USDT"] == 1
    assert await rig.store.recent(since=datetime.fromtimestamp(0).astimezone()) == []


async def test_native_transfers_count_only_when_their_transaction_succeeded(rig: Rig) -> None:
    eth = 10**18
    rig.chain.mine(
        [
            Tx(BINANCE_14, address(9), value=500 * eth),  # 1.5 M USD
            Tx(address(10), address(11), value=900 * eth, succeeded=False),  # reverted
            Tx(address(12), None, value=800 * eth),  # contract creation: not a transfer
        ]
    )
    with trio.fail_after(10):
        [whale] = await rig.watch.scan_once()
    assert whale.asset == "ETH" and whale.log_index == NATIVE_INDEX
    assert whale.amount == 500 and whale.amount_usd == pytest.approx(1_500_000)
    assert whale.from_label == "Binance 14" and whale.to_label is None
    assert rig.watch.counters.reverted == 1


async def test_a_log_of_another_block_fails_the_scan_and_nothing_is_committed(rig: Rig) -> None:
    block = rig.chain.mine(
        [Tx(address(1), USDT, transfers=[(USDT, address(2), address(3), usdt(2e6))])]
    )
    good = block.logs[0]["blockHash"]
    block.logs[0]["blockHash"] = "0x" + "ab" * 32  # the node answered logs of another block
    with trio.fail_after(10):
        with pytest.raises(UpstreamPayloadError, match="log of block"):
            await rig.watch.scan_once()
        block.logs[0]["blockHash"] = good
        [whale] = await rig.watch.scan_once()  # the same block again, now consistent
    assert whale.block_hash == block.hash


async def test_a_follower_far_behind_skips_ahead_and_says_so(running_storage: Storage) -> None:
    chain = ScriptedChain()
    topic: Topic[WhaleTransfer] = Topic("whales", 8)
    _rpc, watch = make_watch(chain, WhaleStore(running_storage), topic, {}, [], max_blocks=5)
    with trio.fail_after(10):
        await watch.scan_once()
        for _ in range(12):
            chain.mine()
        await watch.scan_once()
    assert watch.counters.skipped_blocks == 7 and watch.counters.blocks == 1 + 5  # head, then 5
    assert watch.follower.newest == chain.head


async def test_rpc_calls_per_block(rig: Rig) -> None:
    for _ in range(10):
        rig.chain.mine([Tx(address(1), USDT, transfers=[(USDT, address(2), address(3), 5)])])
    before = rig.rpc.calls
    with trio.fail_after(10):
        await rig.watch.scan_once()
    # eth_blockNumber once per scan, then eth_getBlockByNumber + eth_getLogs per block, batched.
    assert rig.rpc.calls - before == 1 + 2 * 10

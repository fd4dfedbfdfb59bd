"""The on-chain collectors against the simulator: explorer statistics (free and keyed), DEX
pools and volumes, stored TVL, the whale APIs, and Bitcoin blocks with a reorg."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import trio

from gateway.chains.bitcoin_whales import BitcoinWhaleWatch
from gateway.chains.dex import POOL_READERS, collect_pools, collect_tvl, collect_volumes
from gateway.chains.explorers import collect_stats, stat_reader_for
from gateway.chains.tokens import load_labels
from gateway.chains.whale_apis import BitqueryFeed, WhaleAlertFeed
from gateway.config import ProviderConfig
from gateway.errors import UpstreamError
from gateway.models import utc_now
from gateway.onchain_models import WhaleTransfer
from gateway.pubsub import Topic
from gateway.storage import DexStore, NetworkStatStore, Storage, TvlStore, WhaleStore
from gateway.upstream import UpstreamClient
from tests.simulator.onchain import btc_tx
from tests.simulator.rest import Simulator, run_simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator() as simulator:
        yield simulator


def entry(sim: Simulator, provider_id: str, **overrides: object) -> ProviderConfig:
    return sim.provider(provider_id, timeout_seconds=2.0, **overrides)  # type: ignore[arg-type]


async def stats_of(
    client: UpstreamClient, store: NetworkStatStore, provider: ProviderConfig, key: str | None
) -> dict[tuple[str, str], float]:
    reader = stat_reader_for(provider)
    assert reader is not None
    await collect_stats(client, provider, key, store, reader)
    return {(s.chain, s.metric): s.value for s in await store.latest() if s.provider == provider.id}


async def test_explorer_statistics_free_and_keyed(sim: Simulator, running_storage: Storage) -> None:
    store = NetworkStatStore(running_storage)
    async with UpstreamClient() as client:
        with trio.fail_after(10):
            blockscout = await stats_of(
                client, store, entry(sim, "blockscout", chain="ethereum"), None
            )
            assert blockscout[("ethereum", "total_blocks")] == 19512345
            ethplorer = await stats_of(client, store, entry(sim, "ethplorer"), None)
            assert ethplorer == {("ethereum", "last_block"): 19512345}  # with the public freekey
            blockchair = await stats_of(client, store, entry(sim, "blockchair"), None)
            assert {chain for chain, _ in blockchair} == {"bitcoin", "ethereum"}
            mempool = await stats_of(client, store, entry(sim, "mempool", chain="bitcoin"), None)
            assert mempool[("bitcoin", "blocks_to_retarget")] == 1121
            tron = entry(sim, "tronscan", chain="tron")
            assert (await stats_of(client, store, tron, sim.api_keys["tronscan"]))[
                ("tron", "latest_block")
            ] == 60512345
            ether = entry(sim, "etherscan", chain="ethereum")
            etherscan = await stats_of(client, store, ether, sim.api_keys["etherscan"])
            assert etherscan[("ethereum", "node_count")] == 6253
            # A wrong key: the provider's own error, nothing stored for it.
            with pytest.raises(UpstreamError):
                await stats_of(
                    client,
                    store,
                    entry(sim, "tronscan", id="tronscan-2", collector="tronscan"),
                    "wrong",
                )
    assert not [s for s in await store.latest() if s.provider == "tronscan-2"]


async def test_dex_pools_are_a_snapshot_per_provider(
    sim: Simulator, running_storage: Storage
) -> None:
    store = DexStore(running_storage)
    async with UpstreamClient() as client:
        with trio.fail_after(10):
            yields = entry(sim, "defillama-yields")
            await collect_pools(client, yields, None, store, POOL_READERS["defillama-yields"])
            await collect_pools(client, yields, None, store, POOL_READERS["defillama-yields"])
            graph = entry(sim, "thegraph")
            await collect_pools(
                client, graph, sim.api_keys["thegraph"], store, POOL_READERS["thegraph"]
            )
            covalent = entry(sim, "covalent")
            await collect_pools(
                client, covalent, sim.api_keys["covalent"], store, POOL_READERS["covalent"]
            )
            with pytest.raises(UpstreamError, match="payment required"):
                await collect_pools(client, graph, "wrong", store, POOL_READERS["thegraph"])
            assert await collect_volumes(client, entry(sim, "defillama-dexs"), None, store) == 3
    pools = await store.top_pools(limit=50)
    assert len(pools) == 3 + 2 + 1  # a second round replaced the first; a failed one kept it
    # The same pool as two providers report it: two records, never one merged figure.
    assert {(p.provider, p.pair) for p in pools[:2]} == {
        ("defillama-yields", "USDC-WETH"),
        ("thegraph", "USDC-WETH"),
    }
    assert {p.chain for p in await store.top_pools(chain="bsc")} == {"bsc"}
    volumes = await store.volumes()
    assert volumes[0].dex == "uniswap-v3" and volumes[-1].volume_24h_usd is None


async def test_tvl_is_stored_one_value_per_day(sim: Simulator, running_storage: Storage) -> None:
    store = TvlStore(running_storage)
    provider = entry(sim, "defillama", categories=("DEFI",))
    async with UpstreamClient() as client:
        with trio.fail_after(10):
            days = await collect_tvl(client, provider, None, store)
            await collect_tvl(client, provider, None, store)  # again: the same days, replaced
    series = await store.series("all", utc_now() - timedelta(days=3650))
    assert len(series) == days > 1
    assert [p.date for p, _, _ in series] == sorted({p.date for p, _, _ in series})
    protocols = await store.latest_protocols()
    assert protocols and protocols[0][2] >= protocols[-1][2]


async def test_whale_apis_are_stored_once_and_agree_with_the_scan(
    sim: Simulator, running_storage: Storage
) -> None:
    store = WhaleStore(running_storage)
    topic: Topic[WhaleTransfer] = Topic("whales", 16)
    now = int(time.time())
    for row in sim.onchain.whale_alert:
        row["timestamp"] = now - 60
    async with UpstreamClient() as client:
        alert = WhaleAlertFeed(
            client, entry(sim, "whale-alert"), sim.api_keys["whale-alert"], load_labels(), store,
            topic.publish, min_usd=1_000_000,
        )  # fmt: skip
        bitquery = BitqueryFeed(
            client, entry(sim, "bitquery"), sim.api_keys["bitquery"], load_labels(), store,
            topic.publish, min_usd=1_000_000,
        )  # fmt: skip
        with topic.subscribe() as subscriber, trio.fail_after(10):
            first = await alert.round()
            assert await alert.round() == []  # the same answer again: nothing new
            found = await bitquery.round()
            published = subscriber.drain()
    assert published == first + found
    usdt = next(t for t in first if t.asset == "USDT")
    assert usdt.from_label == "binance"  # Whale Alert's own name wins over ours
    assert usdt.provider == "whale-alert" and usdt.price_usd is None
    # Bitquery answers for each chain it is asked about: stored once (chain, hash, asset).
    assert {t.chain for t in found} == {"ethereum", "bsc", "polygon"}
    rows = await store.recent(since=datetime(2020, 1, 1, tzinfo=UTC), limit=100)
    assert len(rows) == len(first) + len(found)
    # The gateway's own scan finding Whale Alert's transfer (with its log index) is the same one.
    own = replace(usdt, log_index=7, provider="chain-scan", block_hash="0x" + "ab" * 32)
    assert await store.record([own]) == []
    # ...and now it knows its block, so a reorg of that block withdraws it.
    assert [t.key for t in await store.withdraw("ethereum", [own.block_hash or ""])] == [usdt.key]


async def test_bitcoin_blocks_whales_and_a_reorg(sim: Simulator, running_storage: Storage) -> None:
    store = WhaleStore(running_storage)
    topic: Topic[WhaleTransfer] = Topic("whales", 16)
    prices: list[tuple[str, datetime]] = []

    async def price_at(symbol: str, at: datetime) -> float | None:
        prices.append((symbol, at))
        return 60_000.0

    chain = sim.onchain.bitcoin
    async with UpstreamClient() as client:
        watch = BitcoinWhaleWatch(
            client, entry(sim, "mempool", chain="bitcoin"), None, load_labels(), price_at, store,
            topic.publish, min_usd=1_000_000,
        )  # fmt: skip
        whale = btc_tx(
            "big",
            [("3M219KR5vEneNb47ewrPfWyb5jQ2DjxRP6", 50 * 10**8)],
            [("bc1ql49ydapnjafl5t2cp9zqpjwe6pdgmxy98859v2", 20 * 10**8),
             ("3M219KR5vEneNb47ewrPfWyb5jQ2DjxRP6", 29 * 10**8)],
        )  # fmt: skip
        small = btc_tx("small", [("bc1qsmall", 10**8)], [("bc1qother", 10**8 - 500)])
        with topic.subscribe() as subscriber, trio.fail_after(10):
            assert await watch.scan_once() == []  # starts at the newest block
            block = chain.add_block([small, *[small] * 30, whale])  # two pages
            [found] = await watch.scan_once()
            assert found.amount == 20 and found.amount_usd == 1_200_000
            assert (found.from_label, found.to_label) == ("Binance", "Robinhood")
            assert found.block_hash == block.hash and found.block_number == block.height
            assert watch.counters.pages == 2
            chain.reorg(1, [[small], []])
            [withdrawn] = await watch.scan_once()
            assert withdrawn.removed and withdrawn.hash == found.hash
            assert subscriber.drain() == [found, withdrawn]
    assert await store.recent(since=found.at) == []

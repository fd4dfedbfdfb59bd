"""The chain tables (migration 8, gateway/store/chains.py): heads, nodes' reports, gas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.chain_models import ChainHead, GasPrice, NodeHead
from gateway.storage import ChainStore, Storage

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def head(chain: str, number: int, at: datetime, nodes: tuple[NodeHead, ...] = ()) -> ChainHead:
    return ChainHead(chain, number, f"{chain}-node", 0, at, nodes)


def gas(chain: str, standard: float, at: datetime) -> GasPrice:
    return GasPrice(chain, standard - 1, standard, standard + 1, 20.0, "gwei", "FEE_HISTORY",
                    "node", at, 21_000_000)  # fmt: skip


async def test_the_newest_head_of_each_chain_comes_back_with_its_nodes(
    running_storage: Storage,
) -> None:
    store = ChainStore(running_storage)
    node = NodeHead("ethereum", "a", 101, 0, False, None, T0)
    lagging = NodeHead("ethereum", "b", 90, 11, True, None, T0)
    failed = NodeHead("ethereum", "c", None, None, False, "HTTP 502", T0)
    await store.record_round(head("ethereum", 100, T0), [])
    await store.record_round(head("ethereum", 101, T0 + timedelta(seconds=30)), [node, lagging])
    await store.record_round(None, [failed])  # a round with no new head: nodes only
    await store.record_round(head("bsc", 45_000_000, T0), [])
    heads = await store.latest_heads()
    assert [(h.chain, h.block_number) for h in heads] == [("bsc", 45_000_000), ("ethereum", 101)]
    assert heads[1].observed_at == T0 + timedelta(seconds=30)
    assert list(heads[1].nodes) == [node, lagging, failed]


async def test_gas_is_kept_per_observation_and_pruned_with_heads(
    running_storage: Storage,
) -> None:
    store = ChainStore(running_storage)
    for minutes, standard in ((0, 20.0), (1, 22.0), (2, 21.0)):
        await store.record_gas(gas("ethereum", standard, T0 + timedelta(minutes=minutes)))
    await store.record_gas(gas("polygon", 30.0, T0))
    latest = {g.chain: g for g in await store.latest_gas()}
    assert latest["ethereum"] == gas("ethereum", 21.0, T0 + timedelta(minutes=2))
    assert latest["polygon"].standard == 30.0
    history = await store.gas_history("ethereum", T0 + timedelta(minutes=1))
    assert [g.standard for g in history] == [21.0, 22.0]
    await store.record_round(head("ethereum", 100, T0), [])
    await store.prune(T0 + timedelta(minutes=1, seconds=30))
    assert [g.standard for g in await store.gas_history("ethereum", T0)] == [21.0]
    assert await store.latest_heads() == []

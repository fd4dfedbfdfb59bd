"""Provider records survive in the store (SQLite and PostgreSQL): attempts, failures, usage, pools, rotations, alerts."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio

from gateway.config import Settings
from gateway.models import utc_now
from gateway.storage import Storage
from gateway.store.provider_records import PoolRecord, ProviderStore

FAST = Settings(storage_batch_seconds=0.01)


@pytest.fixture
async def store(running_storage: Storage) -> ProviderStore:
    """On each engine (tests/conftest.py: running_storage)."""
    return ProviderStore(running_storage)


async def settle(store: ProviderStore) -> None:
    """Wait until best-effort writes have been committed."""
    with trio.fail_after(5):
        while store.storage.queued_rows:
            await trio.sleep(0.01)


async def test_attempts_and_failures(store: ProviderStore) -> None:
    now = utc_now()
    for n, (error, status) in enumerate([(None, 200), ("timeout", None), ("http_error", 503)]):
        store.record_attempt(
            provider="coingecko" if n < 2 else "binance",
            endpoint="/simple/price",
            status=status,
            latency_ms=10.0 * (n + 1),
            error_type=error,
            message=f"m{n}" if error else None,
            at=now + timedelta(seconds=n),
        )
    await settle(store)
    failures = await store.failures()
    assert [(f.provider, f.error_type, f.http_status) for f in failures] == [
        ("binance", "http_error", 503),
        ("coingecko", "timeout", None),
    ]
    assert [f.provider for f in await store.failures(provider="coingecko")] == ["coingecko"]
    assert await store.failures(since=now + timedelta(seconds=5)) == []
    stats = await store.attempt_stats(now - timedelta(minutes=1))
    assert stats["coingecko"] == (2, 1, 10.0)
    await store.prune(timedelta(seconds=-60))  # everything is "old"
    assert await store.failures() == []


async def test_pools_round_trip_and_delete(store: ProviderStore) -> None:
    pool = PoolRecord("p", "Prices", "MARKET_DATA", "PRIORITY", (("a", 1, 1.0), ("b", 2, 0.5)))
    await store.save_pool(pool)
    await store.save_pool(PoolRecord("p", "Prices", "MARKET_DATA", "ROUND_ROBIN", (("b", 1, 2.0),)))
    (saved,) = await store.pools()
    assert saved.strategy == "ROUND_ROBIN" and saved.members == (("b", 1, 2.0),)
    await store.record_rotation("p", None, "b", "manual", utc_now())
    (saved,) = await store.pools()
    assert saved.current == "b"
    assert await store.delete_pool("p") is True
    assert await store.delete_pool("p") is False
    assert await store.pools() == []


async def test_rotation_history_newest_first(store: ProviderStore) -> None:
    now = utc_now()
    await store.record_rotation("p", None, "a", "scheduled", now)
    await store.record_rotation("p", "a", "b", "failure", now + timedelta(seconds=1))
    await store.record_rotation("q", None, "c", "manual", now + timedelta(seconds=2))
    assert [(r.to_provider, r.reason) for r in await store.rotations("p")] == [
        ("b", "failure"),
        ("a", "scheduled"),
    ]
    assert len(await store.rotations(limit=2)) == 2


async def test_alerts_and_acknowledgement(store: ProviderStore) -> None:
    first = await store.create_alert("HIGH", "provider_offline", "x is offline", "x", utc_now())
    second = await store.create_alert("LOW", "rate_limit", "y at 80%", "y", utc_now())
    assert first.id != second.id
    acknowledged = await store.acknowledge_alert(first.id)
    assert acknowledged is not None and acknowledged.acknowledged
    assert [a.id for a in await store.alerts(unacknowledged_only=True)] == [second.id]
    assert await store.acknowledge_alert(9999) is None


async def test_states_and_usage(store: ProviderStore) -> None:
    now = utc_now()
    await store.save_state("x", "OFFLINE", now, "timed out")
    await store.save_state("x", "ONLINE", now, None)
    assert (await store.states())["x"][0] == "ONLINE"
    await store.save_usage("x", "minute", [1.0, 2.0])
    assert await store.usage() == {("x", "minute"): [1.0, 2.0]}

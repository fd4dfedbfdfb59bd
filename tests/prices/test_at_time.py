"""The consensus price at a past moment, from stored ticks (what values a whale transfer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio

from gateway.models import PriceTick
from gateway.prices.at_time import ConsensusAt
from gateway.storage import Storage

BLOCK_TIME = datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return BLOCK_TIME + timedelta(seconds=seconds)


async def test_a_stablecoin_is_priced_by_its_own_ticks(running_storage: Storage) -> None:
    await running_storage.write_ticks(
        [
            PriceTick("USDT", 0.9990, "kraken", at(-300)),  # older tick of the same provider
            PriceTick("USDT", 1.0004, "kraken", at(-40)),
            PriceTick("USDT", 1.0002, "coingecko", at(-20)),
            PriceTick("USDT", 1.0003, "coinbase", at(30)),  # polled just after the block
            PriceTick("USDT", 0.5000, "coinpaprika", at(-900)),  # outside the window
            PriceTick("USDC", 0.9000, "kraken", at(0)),  # another symbol
        ]
    )
    price_at = ConsensusAt(running_storage)
    with trio.fail_after(10):
        assert await price_at("USDT", BLOCK_TIME) == pytest.approx(1.0003)  # median of 3
        assert await price_at("USDT", BLOCK_TIME) == pytest.approx(1.0003)
    assert price_at.lookups == 1  # the second answer came from the cache


async def test_no_tick_in_the_window_gives_no_price(running_storage: Storage) -> None:
    await running_storage.write_ticks([PriceTick("DAI", 1.0, "kraken", at(-3600))])
    with trio.fail_after(10):
        assert await ConsensusAt(running_storage)("DAI", BLOCK_TIME) is None
        assert await ConsensusAt(running_storage)("USDC", BLOCK_TIME) is None


async def test_two_providers_that_disagree_give_no_price(running_storage: Storage) -> None:
    await running_storage.write_ticks(
        [PriceTick("ETH", 3000.0, "kraken", at(-10)), PriceTick("ETH", 3300.0, "binance", at(-5))]
    )
    with trio.fail_after(10):
        assert await ConsensusAt(running_storage)("ETH", BLOCK_TIME) is None

"""DEX sources against documented-shape fixtures: DefiLlama volumes and pools, The Graph,
Covalent; and their errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.sources import covalent, defillama_dexs, thegraph

FIXTURES = Path(__file__).resolve().parents[1] / "simulator" / "fixtures"
NOW = datetime(2024, 3, 25, 8, 45, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def test_defillama_dex_volumes() -> None:
    volumes = defillama_dexs.parse_volumes(load("defillama_dexs_overview"), NOW)
    uniswap = volumes[0]
    assert (uniswap.dex, uniswap.name) == ("uniswap-v3", "Uniswap V3")
    assert uniswap.chains == ("ethereum", "arbitrum", "polygon", "bsc", "base")
    assert uniswap.volume_24h_usd == 2345678901.2 and uniswap.change_1d_pct == 10.47
    assert volumes[2].volume_24h_usd is None  # no figure stays no figure


def test_defillama_pools_keep_only_dex_pools_largest_first() -> None:
    pools = defillama_dexs.parse_pools(load("defillama_yields_pools"), NOW)
    assert [p.pair for p in pools] == ["USDC-WETH", "USDT-WBNB", "WMATIC-USDC"]  # no lending
    first = pools[0]
    assert (first.chain, first.dex, first.tvl_usd, first.volume_24h_usd) == (
        "ethereum", "uniswap-v3", 312345678, 456789012,
    )  # fmt: skip
    assert pools[1].chain == "bsc"


def test_defillama_garbage() -> None:
    with pytest.raises(UpstreamPayloadError):
        defillama_dexs.parse_pools({"status": "success"}, NOW)
    with pytest.raises(UpstreamPayloadError):
        defillama_dexs.parse_volumes({"protocols": [{"name": "x", "total24h": "many"}]}, NOW)


def test_thegraph_pools_use_the_last_complete_day() -> None:
    pools = thegraph.parse_pools(load("thegraph_pools"), NOW)
    assert pools[0].pair == "USDC-WETH" and pools[0].tvl_usd == pytest.approx(312345678.901234)
    assert pools[0].volume_24h_usd == pytest.approx(456789012.345)  # not today's partial day
    assert pools[1].volume_24h_usd is None
    with pytest.raises(UpstreamError, match="payment required"):
        thegraph.parse_pools(load("thegraph_error"), NOW)


def test_covalent_pools_and_error() -> None:
    [pool] = covalent.parse_pools(
        load("covalent_xyk_pools"), NOW, chain="eth-mainnet", dex="uniswap_v2"
    )
    assert (pool.chain, pool.dex, pool.pair) == ("ethereum", "uniswap-v2", "USDC-WETH")
    assert pool.tvl_usd == 123456789.12 and pool.volume_24h_usd == 34567890.12
    with pytest.raises(UpstreamError, match="Invalid or missing API key"):
        covalent.parse_pools(load("covalent_error"), NOW, chain="eth-mainnet", dex="uniswap_v2")

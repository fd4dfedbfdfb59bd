"""The shipped providers.toml against the upstream inventory (shared/providers-inventory.md).

Every row of the inventory must be an entry here, with the tier, categories and key variable
the inventory gives it. Parsing only: nothing here sends a request.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.config import KEY_PLACEHOLDER, ProviderConfig, ProvidersFile, load_providers
from gateway.providers.upstream_keys import Secrets
from gateway.sources.registry import collector_for

REPO = Path(__file__).resolve().parents[2]

MD, EX, RPC, NEWS, SENT, WHALE, ON, DEFI = (
    "MARKET_DATA",
    "EXPLORER",
    "RPC",
    "NEWS",
    "SENTIMENT",
    "WHALE_TRACKING",
    "ONCHAIN",
    "DEFI",
)

# id: (tier, categories, key variable or None), transcribed from providers-inventory.md.
# The live streams have no tier in the inventory; they are public and planned, so A.
INVENTORY: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    # market data
    "coingecko": ("A", (MD,), "COINGECKO_API_KEY"),
    "binance": ("A", (MD,), None),
    "kraken": ("A", (MD,), None),
    "coinbase": ("A", (MD,), None),
    "coinpaprika": ("A", (MD,), None),
    "coincap": ("B", (MD,), "COINCAP_API_KEY"),
    "coinmarketcap": ("B", (MD,), "COINMARKETCAP_API_KEY"),
    "cryptocompare": ("B", (MD,), "CRYPTOCOMPARE_API_KEY"),
    "messari": ("B", (MD,), "MESSARI_API_KEY"),
    "defillama": ("A", (MD, DEFI), None),
    "binance-stream": ("A", (MD,), None),
    "coinbase-stream": ("A", (MD,), None),
    "kraken-stream": ("A", (MD,), None),
    # explorers and gas
    "etherscan": ("B", (EX,), "ETHERSCAN_API_KEY"),
    "bscscan": ("B", (EX,), "BSCSCAN_API_KEY"),
    "tronscan": ("B", (EX,), "TRONSCAN_API_KEY"),
    "blockchair": ("A", (EX,), "BLOCKCHAIR_API_KEY"),
    "blockscout": ("A", (EX,), None),
    "ethplorer": ("A", (EX,), "ETHPLORER_API_KEY"),
    "mempool": ("A", (EX,), None),
    # RPC nodes
    "publicnode-eth": ("A", (RPC,), None),
    "llamarpc-eth": ("A", (RPC,), None),
    "cloudflare-eth": ("A", (RPC,), None),
    "ankr-eth": ("A", (RPC,), "ANKR_API_KEY"),
    "infura-eth": ("B", (RPC,), "INFURA_API_KEY"),
    "alchemy-eth": ("B", (RPC,), "ALCHEMY_API_KEY"),
    "bsc-dataseed": ("A", (RPC,), None),
    "publicnode-bsc": ("A", (RPC,), None),
    "polygon-rpc": ("A", (RPC,), None),
    "publicnode-polygon": ("A", (RPC,), None),
    "trongrid": ("B", (RPC,), "TRONGRID_API_KEY"),
    # news
    "coindesk": ("A", (NEWS,), None),
    "cointelegraph": ("A", (NEWS,), None),
    "decrypt": ("A", (NEWS,), None),
    "bitcoinmagazine": ("A", (NEWS,), None),
    "theblock": ("A", (NEWS,), None),
    "cryptoslate": ("A", (NEWS,), None),
    "beincrypto": ("A", (NEWS,), None),
    "cryptobriefing": ("A", (NEWS,), None),
    "reddit-cryptocurrency": ("A", (NEWS,), None),
    "cryptopanic": ("B", (NEWS,), "CRYPTOPANIC_API_KEY"),
    "newsdata": ("B", (NEWS,), "NEWSDATA_API_KEY"),
    "twitter": ("C", (NEWS,), "TWITTER_BEARER_TOKEN"),
    # sentiment (the local model is in process, not an entry)
    "alternative-me": ("A", (SENT,), None),
    "santiment": ("B", (SENT,), "SANTIMENT_API_KEY"),
    "lunarcrush": ("B", (SENT,), "LUNARCRUSH_API_KEY"),
    "cryptoquant": ("C", (SENT,), "CRYPTOQUANT_API_KEY"),
    "glassnode": ("C", (SENT,), "GLASSNODE_API_KEY"),
    # whale tracking (chain-scan and mempool-BTC are built on other entries)
    "whale-alert": ("B", (WHALE,), "WHALE_ALERT_API_KEY"),
    "bitquery": ("B", (WHALE,), "BITQUERY_API_KEY"),
    "arkham": ("C", (WHALE,), "ARKHAM_API_KEY"),
    "nansen": ("C", (WHALE,), "NANSEN_API_KEY"),
    "debank": ("C", (WHALE,), "DEBANK_API_KEY"),
    "dexcheck": ("C", (WHALE,), None),
    "whalemap": ("C", (WHALE,), None),
    "clankapp": ("C", (WHALE,), None),
    # on-chain analytics
    "thegraph": ("B", (ON,), "THEGRAPH_API_KEY"),
    "defillama-dexs": ("A", (ON,), None),
    "covalent": ("B", (ON,), "COVALENT_API_KEY"),
    "dune": ("C", (ON,), "DUNE_API_KEY"),
}

JSON_RPC_HEALTH = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
# Cloudflare's public gateway is documented (by ethers) as lacking eth_blockNumber.
CLOUDFLARE_HEALTH = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "eth_getBlockByNumber",
    "params": ["latest", False],
}


@pytest.fixture(scope="module")
def shipped() -> ProvidersFile:
    return load_providers(REPO / "providers.toml")


def by_id(shipped: ProvidersFile) -> dict[str, ProviderConfig]:
    return {p.id: p for p in shipped.providers}


def test_every_inventory_row_is_an_entry_and_nothing_else(shipped: ProvidersFile) -> None:
    ids = [p.id for p in shipped.providers]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert sorted(set(INVENTORY) - set(ids)) == [], "inventory rows missing from providers.toml"
    # DefiLlama's one inventory row spans three hosts: TVL (defillama), prices (defillama-coins)
    # and pools (defillama-yields, for dexPools).
    extras = {"defillama-coins", "defillama-yields"}
    assert sorted(set(ids) - set(INVENTORY) - extras) == [], "entries not in the inventory"


@pytest.mark.parametrize("provider_id", sorted(INVENTORY))
def test_tier_categories_and_key_variable_match_the_inventory(
    shipped: ProvidersFile, provider_id: str
) -> None:
    provider = by_id(shipped)[provider_id]
    tier, categories, env = INVENTORY[provider_id]
    assert (provider.tier, provider.categories, provider.auth.env) == (tier, categories, env)


def test_tier_c_entries_are_disabled_with_a_reason(shipped: ProvidersFile) -> None:
    tier_c = [p for p in shipped.providers if p.tier == "C"]
    assert len(tier_c) == sum(1 for tier, _, _ in INVENTORY.values() if tier == "C")
    for provider in tier_c:
        assert not provider.enabled, provider.id
        assert provider.disabled_reason and provider.disabled_reason.strip(), provider.id


def test_every_disabled_entry_says_why(shipped: ProvidersFile) -> None:
    for provider in shipped.providers:
        if not provider.enabled:
            assert provider.disabled_reason, provider.id


def test_every_keyed_provider_names_its_variable(shipped: ProvidersFile) -> None:
    for provider in shipped.providers:
        if provider.auth.kind != "none":
            assert provider.auth.env, provider.id
            assert provider.auth.env.isupper(), provider.id
        if provider.auth.kind in {"query", "header"}:
            assert provider.auth.name, provider.id


def test_no_key_is_written_in_the_file(shipped: ProvidersFile) -> None:
    # The only value the file may send in place of a key is a documented public one.
    defaults = {p.id: p.auth.default for p in shipped.providers if p.auth.default is not None}
    assert defaults == {"ethplorer": "freekey"}


def test_every_enabled_a_or_b_provider_has_a_health_check(shipped: ProvidersFile) -> None:
    # Streams are WebSockets: their health is the stream client's own state (connected,
    # silent, reconnecting), not an HTTP probe.
    missing = [
        p.id
        for p in shipped.providers
        if p.enabled and p.tier in {"A", "B"} and p.health is None and not p.id.endswith("-stream")
    ]
    assert missing == []


def test_every_enabled_provider_has_rate_limits_and_docs(shipped: ProvidersFile) -> None:
    for provider in shipped.providers:
        assert provider.docs_url and provider.docs_url.startswith("https://"), provider.id
        if provider.enabled and not provider.id.endswith("-stream"):  # streams: no requests
            assert provider.rate_limits, provider.id


def test_every_base_url_is_https_or_wss(shipped: ProvidersFile) -> None:
    for provider in shipped.providers:
        url = provider.base_url_with_key("KEY")  # a path-key placeholder is not part of the check
        parts = urlsplit(url)
        assert parts.scheme in {"https", "wss"} and parts.hostname, provider.id
        if parts.scheme == "wss":
            assert provider.id.endswith("-stream"), provider.id


def test_path_keys_and_placeholders_go_together(shipped: ProvidersFile) -> None:
    path_keyed = {p.id for p in shipped.providers if p.auth.kind == "path"}
    with_placeholder = {p.id for p in shipped.providers if KEY_PLACEHOLDER in p.base_url}
    assert path_keyed == with_placeholder == {"ankr-eth", "infura-eth", "alchemy-eth", "thegraph"}


def test_rpc_entries_name_their_chain_and_check_the_head(shipped: ProvidersFile) -> None:
    chains = {}
    for provider in shipped.providers:
        if "RPC" not in provider.categories:
            continue
        chains[provider.id] = provider.chain
        assert provider.health is not None and provider.health.method == "POST"
        if provider.id == "trongrid":  # TRON's node API is not JSON-RPC
            continue
        expected = CLOUDFLARE_HEALTH if provider.id == "cloudflare-eth" else JSON_RPC_HEALTH
        assert provider.health.json_body == expected, provider.id
        assert provider.health.expect_json_key == "result", provider.id
    assert set(chains.values()) == {"ethereum", "bsc", "polygon", "tron"}


def test_etherscan_v2_names_its_chain_in_the_health_check(shipped: ProvidersFile) -> None:
    providers = by_id(shipped)
    for provider_id, chainid in (("etherscan", "1"), ("bscscan", "56")):
        health = providers[provider_id].health
        assert health is not None and ("chainid", chainid) in health.params


def test_existing_collectors_still_find_their_entries(shipped: ProvidersFile) -> None:
    with_collector = sorted(p.id for p in shipped.providers if collector_for(p) is not None)
    assert with_collector == [
        "binance",
        "coinbase",
        "coincap",
        "coingecko",
        "coinmarketcap",
        "coinpaprika",
        "cryptocompare",
        "defillama-coins",
        "kraken",
        "messari",
    ]
    assert all(by_id(shipped)[pid].enabled for pid in with_collector)


def test_without_keys_the_keyed_providers_are_unconfigured(shipped: ProvidersFile) -> None:
    secrets = Secrets.from_environment(shipped, {}, default_env_file=REPO / "no-such.env")
    unconfigured = sorted(
        p.id for p in shipped.providers if p.enabled and not secrets.is_configured(p)
    )
    required = sorted(p.id for p in shipped.providers if p.enabled and p.requires_key)
    assert unconfigured == required
    assert "coingecko" not in unconfigured and "ethplorer" not in unconfigured
    assert "etherscan" in unconfigured and "infura-eth" in unconfigured


def test_shipped_pools(shipped: ProvidersFile) -> None:
    pools = {pool.id: pool for pool in shipped.all_pools()}
    assert pools["rpc-ethereum"].strategy == "FASTEST_RESPONSE"
    assert {"rpc-bsc", "rpc-polygon", "rpc-tron", "market-data", "news"} <= set(pools)
    assert pools["market-data"].members[:2] == ("coingecko", "binance")
    for pool in pools.values():
        for member in pool.members:
            provider = by_id(shipped)[member]
            assert pool.category in provider.categories
            assert provider.enabled or pool.line  # default pools hold enabled providers only

"""Settings and providers.toml: defaults, environment, and errors that name the problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import (
    AuthSpec,
    BreakerSpec,
    HealthCheckSpec,
    PoolConfig,
    ProvidersFile,
    RateLimitWindow,
    Settings,
    default_pools,
    load_providers,
    settings_from_env,
)
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    settings = settings_from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 7860)
    assert settings.db_path == Path("data/gateway.db")
    assert settings.providers_path == Path("providers.toml")


def test_environment_overrides_and_port_fallback() -> None:
    env = {
        "GATEWAY_HOST": "0.0.0.0",
        "PORT": "8080",
        "GATEWAY_DB": "/tmp/x.db",
        "GATEWAY_SYMBOLS": "btc, eth",
    }
    settings = settings_from_env(env)
    assert (settings.host, settings.port, settings.db_path) == ("0.0.0.0", 8080, Path("/tmp/x.db"))
    assert settings.symbols == ("BTC", "ETH")
    assert settings_from_env({"GATEWAY_PORT": "9000", "PORT": "8080"}).port == 9000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
        ({"PORT": "99999"}, "port"),
        ({"GATEWAY_LOG_FORMAT": "xml"}, "log format"),
    ],
)
def test_bad_environment_is_a_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_env(env)


def test_market_cache_ttls_come_from_the_environment() -> None:
    defaults = settings_from_env({})
    assert (defaults.ttl_trending, defaults.ttl_overview) == (300.0, 300.0)
    assert (defaults.ttl_protocols, defaults.ttl_tvl) == (3600.0, 3600.0)
    env = {
        "GATEWAY_TTL_TRENDING": "60",
        "GATEWAY_TTL_OVERVIEW": " 0.5 ",
        "GATEWAY_TTL_PROTOCOLS": "7200",
        "GATEWAY_TTL_TVL": "1e4",
    }
    settings = settings_from_env(env)
    assert (settings.ttl_trending, settings.ttl_overview) == (60.0, 0.5)
    assert (settings.ttl_protocols, settings.ttl_tvl) == (7200.0, 10_000.0)
    assert settings_from_env({"GATEWAY_TTL_TVL": ""}).ttl_tvl == 3600.0  # empty: the default


@pytest.mark.parametrize("value", ["0", "-5", "abc", "inf", "nan", "5s", "1e400"])
def test_a_bad_ttl_is_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_env({"GATEWAY_TTL_PROTOCOLS": value})
    assert str(caught.value) == (
        f"GATEWAY_TTL_PROTOCOLS must be a positive number of seconds, got {value!r}"
    )
    with pytest.raises(ConfigError, match="ttl_trending must be a positive number"):
        Settings(ttl_trending=float(-1)).validated()


def test_a_bad_ttl_stops_the_gateway_with_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "GATEWAY_PROVIDERS": str(REPO / "tests" / "data" / "no-providers.toml"),
            "GATEWAY_TTL_TRENDING": "soon",
        },
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "GATEWAY_TTL_TRENDING must be a positive number of seconds, got 'soon'" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        Settings(db_path=tmp_path).validated()


def test_shipped_providers_file_is_valid() -> None:
    providers = load_providers(REPO / "providers.toml")
    ids = [p.id for p in providers.providers]
    assert {"coingecko", "binance"} <= set(ids)
    assert all(p.base_url.startswith(("https://", "wss://")) for p in providers.providers)
    # The two collectors that exist today still find their entries, enabled, by id.
    for provider_id in ("coingecko", "binance"):
        provider = providers.get(provider_id)
        assert provider is not None and provider.enabled and provider.collector is None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


GOOD = '[[provider]]\nid = "a"\ncategory = "MARKET_DATA"\nbase_url = "https://a.example/api"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + GOOD, "providers.toml:5: duplicate provider id 'a'"),
        (GOOD + "colour = 'red'\n", "providers.toml:1: unknown key"),
        (GOOD.replace("https://a.example/api", "not a url"), "providers.toml:1: base_url"),
        (GOOD.replace("MARKET_DATA", "SHOES"), "unknown category 'SHOES'"),
        ('[[provider]]\nid = "a"\ncategory = "RPC"\n', "missing required key 'base_url'"),
        (GOOD.replace('"a"', '"A b"'), "id must be"),
        (GOOD + "interval_seconds = -1\n", "interval_seconds must be a positive, finite number"),
        ("[[provider]\n", "providers.toml"),
        ("oops = 1\n", "unknown top-level key"),
    ],
)
def test_bad_providers_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_providers(write(tmp_path, text))
    assert message in str(caught.value)


def test_missing_providers_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_providers(tmp_path / "nope.toml")


def test_rebased_points_a_provider_elsewhere(tmp_path: Path) -> None:
    providers = load_providers(write(tmp_path, GOOD)).rebased({"a": "http://127.0.0.1:1/a"})
    assert providers.providers[0].base_url == "http://127.0.0.1:1/a"


# --- the registry's fields ----------------------------------------------------------------

FULL = """\
[[provider]]
id = "gecko"
name = "Gecko"
tier = "B"
category = ["MARKET_DATA", "DEFI"]
base_url = "https://api.example.test/v3/"
docs_url = "https://docs.example.test/intro"
auth = { kind = "header", name = "x-key", prefix = "Key ", env = "GECKO_KEY", required = false }
rate_limits = { month = 10000, second = 2, minute = 30 }
timeout_seconds = 5
interval_seconds = 120
priority = 0
weight = 2.5
breaker = { failure_threshold = 3, cooldown_seconds = 30 }
chain = "ethereum"
enabled = true

[provider.health]
path = "/ping"
params = { chainid = 1, q = "x" }
expect_status = 204
expect_json_key = "ok"
degraded_after_ms = 500
interval_seconds = 60
"""


def test_every_field_is_parsed(tmp_path: Path) -> None:
    provider = load_providers(write(tmp_path, FULL)).providers[0]
    assert (provider.id, provider.name, provider.tier) == ("gecko", "Gecko", "B")
    assert provider.categories == ("MARKET_DATA", "DEFI")
    assert provider.base_url == "https://api.example.test/v3"  # trailing '/' dropped
    assert provider.docs_url == "https://docs.example.test/intro"
    assert provider.auth == AuthSpec(
        kind="header", name="x-key", prefix="Key ", env="GECKO_KEY", required=False
    )
    assert not provider.requires_key
    # Windows come shortest first, with their length in seconds.
    assert provider.rate_limits == (
        RateLimitWindow(2, 1.0, "second"),
        RateLimitWindow(30, 60.0, "minute"),
        RateLimitWindow(10000, 30 * 86400.0, "month"),
    )
    assert (provider.timeout_seconds, provider.interval_seconds) == (5.0, 120.0)
    assert (provider.priority, provider.weight, provider.chain) == (0, 2.5, "ethereum")
    assert provider.health == HealthCheckSpec(
        path="/ping",
        params=(("chainid", "1"), ("q", "x")),
        expect_status=204,
        expect_json_key="ok",
        degraded_after_ms=500.0,
        interval_seconds=60.0,
    )
    assert provider.breaker == BreakerSpec(failure_threshold=3, cooldown_seconds=30.0)
    assert provider.line == 1


def test_defaults_of_a_minimal_entry(tmp_path: Path) -> None:
    provider = load_providers(write(tmp_path, GOOD)).providers[0]
    assert provider.tier == "A" and provider.enabled
    assert provider.auth == AuthSpec() and provider.requires_key is False
    assert provider.rate_limits == () and provider.health is None
    assert provider.breaker == BreakerSpec() and (provider.priority, provider.weight) == (1, 1.0)


def test_a_provider_may_raise_its_response_size_cap(tmp_path: Path) -> None:
    assert load_providers(write(tmp_path, GOOD)).providers[0].max_response_bytes is None
    text = GOOD + "max_response_bytes = 33_554_432\n"
    assert load_providers(write(tmp_path, text)).providers[0].max_response_bytes == 32 * 1024**2
    shipped = load_providers(REPO / "providers.toml")
    # Only the two known-big endpoints: DefiLlama's /protocols and its yields /pools.
    big = [p.id for p in shipped.providers if p.max_response_bytes]
    assert big == ["defillama", "defillama-yields"]


def test_json_rpc_health_check_is_a_post(tmp_path: Path) -> None:
    text = (
        '[[provider]]\nid = "node"\ncategory = "RPC"\nchain = "ethereum"\n'
        'base_url = "https://rpc.example.test"\n'
        'health = { method = "POST", json = { jsonrpc = "2.0", id = 1, '
        'method = "eth_blockNumber", params = [] }, expect_json_key = "result" }\n'
    )
    health = load_providers(write(tmp_path, text)).providers[0].health
    assert health is not None and health.method == "POST" and health.path == ""
    assert health.json_body == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_blockNumber",
        "params": [],
    }


def test_sub_tables_may_be_written_out(tmp_path: Path) -> None:
    text = GOOD + '[provider.auth]\nkind = "query"\nname = "apikey"\nenv = "A_KEY"\n'
    text += "[provider.rate_limits]\nday = 1000\n"
    provider = load_providers(write(tmp_path, text)).providers[0]
    assert provider.auth.kind == "query" and provider.requires_key
    assert provider.rate_limits == (RateLimitWindow(1000, 86400.0, "day"),)


def test_path_key_fills_the_placeholder(tmp_path: Path) -> None:
    text = GOOD.replace("https://a.example/api", "https://node.example.test/v3/{key}")
    text += 'auth = { kind = "path", env = "NODE_KEY" }\n'
    provider = load_providers(write(tmp_path, text)).providers[0]
    assert provider.base_url == "https://node.example.test/v3/{key}"
    assert provider.base_url_with_key("s3cr/t") == "https://node.example.test/v3/s3cr%2Ft"
    assert provider.base_url_with_key(None) == "https://node.example.test/v3/"
    plain = load_providers(write(tmp_path, GOOD)).providers[0]
    assert plain.base_url_with_key("unused") == "https://a.example/api"


def provider_with(extra: str, **replacements: str) -> str:
    """GOOD plus `extra` lines, after a blank line and a comment so the header is on line 3."""
    text = "# registry\n\n" + GOOD + extra
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


RULES = [
    # unknown keys, also inside sub-tables
    (provider_with("auth = { kind = 'none', colour = 1 }\n"), "unknown key(s) in auth: colour"),
    (provider_with("health = { pth = '/x' }\n"), "unknown key(s) in health: pth"),
    (provider_with("breaker = { threshold = 3 }\n"), "unknown key(s) in breaker: threshold"),
    (provider_with("rate_limits = { fortnight = 3 }\n"), "unknown rate-limit window 'fortnight'"),
    (provider_with("auth = 'header'\n"), "auth must be a table"),
    # tiers and enabling
    (provider_with("tier = 'D'\n"), "tier must be one of A, B, C"),
    (provider_with("tier = 'C'\n"), "tier C providers must have enabled = false"),
    (provider_with("tier = 'C'\nenabled = false\n"), "needs a disabled_reason"),
    (provider_with("enabled = false\n"), "enabled = false needs a disabled_reason"),
    (provider_with("disabled_reason = 'x'\n"), "disabled_reason given but the provider is enabled"),
    # rate limits
    (
        provider_with("rate_limits = { minute = 0 }\n"),
        "rate_limits.minute must be a positive integer",
    ),
    (
        provider_with("rate_limits = { minute = 1.5 }\n"),
        "rate_limits.minute must be a positive integer",
    ),
    (provider_with("rate_limits = { day = -3 }\n"), "rate_limits.day must be a positive integer"),
    (provider_with("rate_limits = { day = true }\n"), "rate_limits.day must be a positive integer"),
    (provider_with("rate_limits = 30\n"), "rate_limits must be a table"),
    # priority and weight
    (provider_with("priority = -1\n"), "priority must be an integer of at least 0"),
    (provider_with("priority = 1.5\n"), "priority must be an integer of at least 0"),
    (provider_with("weight = 0\n"), "weight must be a finite number above 0"),
    (provider_with("weight = 'heavy'\n"), "weight must be a finite number above 0"),
    # health
    (provider_with("health = { method = 'PUT' }\n"), "health.method must be GET or POST"),
    (provider_with("health = { path = 'ping' }\n"), "health.path must be empty or start with '/'"),
    (provider_with("health = { json = { a = 1 } }\n"), 'health.json needs method = "POST"'),
    (
        provider_with("health = { expect_status = 42 }\n"),
        "health.expect_status must be an HTTP status",
    ),
    (provider_with("health = { params = { a = [1] } }\n"), "health.params must be a table"),
    (
        provider_with("health = { interval_seconds = 0 }\n"),
        "health.interval_seconds must be a positive",
    ),
    # breaker
    (provider_with("breaker = { failure_threshold = 0 }\n"), "breaker.failure_threshold must be"),
    (provider_with("breaker = { cooldown_seconds = -1 }\n"), "breaker.cooldown_seconds must be"),
    # auth
    (
        provider_with("auth = { kind = 'cookie' }\n"),
        "auth.kind must be one of none, query, header, path",
    ),
    (provider_with("auth = { kind = 'query', name = 'k' }\n"), "auth kind 'query' needs env"),
    (provider_with("auth = { kind = 'header', env = 'K' }\n"), "auth kind 'header' needs name"),
    (provider_with("auth = { kind = 'query', name = 'k', env = 'lower' }\n"), "UPPER_CASE"),
    (provider_with("auth = { kind = 'none', env = 'K' }\n"), "auth kind 'none' takes no env"),
    (
        provider_with("auth = { kind = 'query', name = 'k', env = 'K', prefix = 'Bearer ' }\n"),
        "auth.prefix applies only to kind 'header'",
    ),
    (
        provider_with("auth = { kind = 'query', name = 'k', env = 'K', default = 'free' }\n"),
        "auth.default needs required = false",
    ),
    (
        provider_with("auth = { kind = 'path', env = 'K' }\n"),
        "auth kind 'path' needs {key} in base_url",
    ),
    (
        provider_with("", **{"a.example/api": "a.example/{key}"}),
        "base_url holds {key} but auth kind is 'none'",
    ),
    (
        provider_with("auth = { kind = 'path', env = 'K', name = 'n' }\n", **{"api": "{key}"}),
        "auth kind 'path' takes no name",
    ),
    # URLs
    (provider_with("", **{"a.example/api": "a.example/{id}"}), "unknown placeholder {id}"),
    (
        provider_with("", **{"https://a.example/api": "ftp://a.example"}),
        "is not an absolute http or https or ws or wss URL",
    ),
    (
        provider_with("", **{"https://a.example/api": "https://"}),
        "is not an absolute http or https or ws or wss URL",
    ),
    (provider_with("docs_url = 'see the website'\n"), "docs_url 'see the website' is not"),
    (provider_with("docs_url = 'wss://docs.example'\n"), "is not an absolute http or https URL"),
    (
        provider_with("", **{"https://a.example/api": "https://KEYSTONE.example/{key}"}),
        "base_url holds {key} but auth kind is 'none'",
    ),
    (
        provider_with("auth = { kind = 'path', env = 'K' }\n", **{"a.example": "{key}.example"}),
        "may hold {key} only in its path",
    ),
    # chains and categories
    (
        provider_with("", **{"MARKET_DATA": "RPC"}),
        'RPC providers need chain (e.g. chain = "ethereum")',
    ),
    (provider_with("chain = 'Ethereum Mainnet'\n"), "chain must be a lowercase name"),
    (provider_with("", **{'"MARKET_DATA"': '["NEWS", "NEWS"]'}), "category lists a name twice"),
    (provider_with("name = ''\n"), "name must be a non-empty string"),
    # response-size cap
    *(
        (provider_with(f"max_response_bytes = {value}\n"), "max_response_bytes must be an integer")
        for value in ("0", "1023", "268435457", "5.5", "'32MiB'", "true")
    ),
]


@pytest.mark.parametrize(("text", "message"), RULES, ids=[message for _, message in RULES])
def test_each_rule_is_an_error_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_providers(write(tmp_path, text))
    assert "providers.toml:3: " in str(caught.value), str(caught.value)
    assert message in str(caught.value)


def test_errors_name_the_entry_too(tmp_path: Path) -> None:
    text = GOOD + GOOD.replace('"a"', '"b"') + "weight = 0\n"
    with pytest.raises(ConfigError) as caught:
        load_providers(write(tmp_path, text))
    assert str(caught.value) == (
        f"{tmp_path / 'providers.toml'}:5: weight must be a finite number above 0, got 0"
        " (in provider 'b')"
    )


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    text = GOOD + "\n" + GOOD.replace('"a"', '"b"') + "\n" + GOOD
    with pytest.raises(
        ConfigError, match=r"providers.toml:11: duplicate provider id 'a' \(first at line 1\)"
    ):
        load_providers(write(tmp_path, text))


# --- pools --------------------------------------------------------------------------------


def entry(provider_id: str, category: str, *extra: str) -> str:
    lines = [
        "[[provider]]",
        f'id = "{provider_id}"',
        f"category = {category}",
        f'base_url = "https://{provider_id}.example.test"',
        *extra,
    ]
    return "\n".join(lines) + "\n\n"


REGISTRY = (
    entry("gecko", '["MARKET_DATA"]', "priority = 2")
    + entry("paprika", '["MARKET_DATA"]', "priority = 1")
    + entry("llama", '["MARKET_DATA", "DEFI"]', "priority = 2")
    + entry("off", '["MARKET_DATA"]', "enabled = false", 'disabled_reason = "test"')
    + entry("eth-a", '"RPC"', 'chain = "ethereum"')
    + entry("eth-b", '"RPC"', 'chain = "ethereum"', "priority = 0")
    + entry("bsc-a", '"RPC"', 'chain = "bsc"')
    + entry("news", '"NEWS"')
)


def test_default_pools_one_per_category_and_rpc_chain(tmp_path: Path) -> None:
    providers = load_providers(write(tmp_path, REGISTRY))
    assert providers.pools == ()
    pools = {pool.id: pool for pool in default_pools(providers)}
    assert list(pools) == ["market-data", "defi", "rpc-ethereum", "rpc-bsc", "news"]
    # enabled members only, lowest priority first, file order on ties
    assert pools["market-data"].members == ("paprika", "gecko", "llama")
    assert pools["market-data"].strategy == "PRIORITY" and pools["market-data"].line == 0
    assert pools["market-data"].category == "MARKET_DATA"
    assert pools["defi"].members == ("llama",)
    assert pools["rpc-ethereum"].members == ("eth-b", "eth-a")
    assert pools["rpc-bsc"].members == ("bsc-a",)
    assert providers.all_pools() == default_pools(providers)


def test_a_declared_pool_replaces_the_default_of_its_category(tmp_path: Path) -> None:
    text = REGISTRY + (
        '[[pool]]\nid = "prices"\nname = "Prices"\ncategory = "MARKET_DATA"\n'
        'strategy = "WEIGHTED_RANDOM"\nmembers = ["gecko", "llama"]\n\n'
        '[[pool]]\nid = "rpc-ethereum"\ncategory = "RPC"\nstrategy = "FASTEST_RESPONSE"\n'
        'members = ["eth-a", "eth-b"]\n'
    )
    providers = load_providers(write(tmp_path, text))
    assert [p.id for p in providers.pools] == ["prices", "rpc-ethereum"]
    prices = providers.pools[0]
    assert prices == PoolConfig(
        id="prices",
        name="Prices",
        category="MARKET_DATA",
        strategy="WEIGHTED_RANDOM",
        members=("gecko", "llama"),
        line=text.splitlines().index("[[pool]]") + 1,
    )
    assert [p.id for p in default_pools(providers)] == ["defi", "rpc-bsc", "news"]
    assert [p.id for p in providers.all_pools()] == [
        "prices",
        "rpc-ethereum",
        "defi",
        "rpc-bsc",
        "news",
    ]
    # rebasing keeps the pools
    assert providers.rebased({"gecko": "http://127.0.0.1:1"}).pools == providers.pools


def test_pool_strategy_defaults_to_priority(tmp_path: Path) -> None:
    text = REGISTRY + '[[pool]]\nid = "n"\ncategory = "NEWS"\nmembers = ["news"]\n'
    pool = load_providers(write(tmp_path, text)).pools[0]
    assert (pool.strategy, pool.name) == ("PRIORITY", "n")


POOL_LINE = REGISTRY.count("\n") + 1


POOL_RULES = [
    ('id = "p"\ncategory = "NEWS"\nmembers = ["ghost"]\n', "member 'ghost' is not a provider id"),
    (
        'id = "p"\ncategory = "NEWS"\nmembers = ["gecko"]\n',
        "member 'gecko' is not in category NEWS",
    ),
    ('id = "p"\ncategory = "NEWS"\nmembers = []\n', "members must be a non-empty list"),
    ('id = "p"\ncategory = "NEWS"\nmembers = ["news", "news"]\n', "members lists a provider twice"),
    (
        'id = "p"\ncategory = "NEWS"\nmembers = ["news"]\nstrategy = "RANDOM"\n',
        "strategy must be one of",
    ),
    ('id = "p"\ncategory = "SHOES"\nmembers = ["news"]\n', "category must be one of"),
    ('id = "p"\ncategory = "NEWS"\nmembers = ["news"]\nsize = 3\n', "unknown key(s) size"),
    ('id = "p"\ncategory = "NEWS"\n', "missing required key 'members'"),
    ('id = "P Q"\ncategory = "NEWS"\nmembers = ["news"]\n', "id must be lowercase"),
    (
        'id = "p"\ncategory = "RPC"\nmembers = ["eth-a", "bsc-a"]\n',
        "must share one chain, got bsc, ethereum",
    ),
    (
        'id = "news"\ncategory = "DEFI"\nmembers = ["llama"]\n',
        "is the default pool id of category NEWS",
    ),
]


@pytest.mark.parametrize(("pool", "message"), POOL_RULES, ids=[m for _, m in POOL_RULES])
def test_bad_pools_name_the_line(tmp_path: Path, pool: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_providers(write(tmp_path, REGISTRY + "[[pool]]\n" + pool))
    assert f"providers.toml:{POOL_LINE}: " in str(caught.value)
    assert message in str(caught.value)


def test_two_pools_for_one_category_or_one_id(tmp_path: Path) -> None:
    one = '[[pool]]\nid = "p"\ncategory = "NEWS"\nmembers = ["news"]\n'
    with pytest.raises(ConfigError, match="duplicate pool id 'p'"):
        load_providers(write(tmp_path, REGISTRY + one + one))
    other = one.replace('"p"', '"q"')
    with pytest.raises(ConfigError, match="serves the same category as pool 'p'"):
        load_providers(write(tmp_path, REGISTRY + one + other))


def test_providers_file_stays_constructible_positionally() -> None:
    assert ProvidersFile(()).pools == ()
    assert ProvidersFile(()).all_pools() == ()


def test_stream_publish_interval_from_the_environment() -> None:
    assert Settings().stream_publish_interval == 1.0
    env = {"GATEWAY_STREAM_PUBLISH_INTERVAL": "0"}
    assert settings_from_env(env).stream_publish_interval == 0.0
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(ConfigError, match="GATEWAY_STREAM_PUBLISH_INTERVAL"):
            settings_from_env({"GATEWAY_STREAM_PUBLISH_INTERVAL": bad})


def test_tick_retention_from_the_environment() -> None:
    assert Settings().tick_retention_days == 30.0
    assert settings_from_env({"GATEWAY_TICK_RETENTION_DAYS": "0"}).tick_retention_days == 0.0
    assert settings_from_env({"GATEWAY_TICK_RETENTION_DAYS": "7.5"}).tick_retention_days == 7.5
    with pytest.raises(ConfigError, match="GATEWAY_TICK_RETENTION_DAYS"):
        settings_from_env({"GATEWAY_TICK_RETENTION_DAYS": "-3"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"anonymous_access": "maybe"}, "anonymous_access"),
        ({"tier_free_per_minute": -1}, "tier_free_per_minute"),
        ({"cors_origins": ("ftp://x",)}, "cors_origins"),
        ({"trusted_proxies": ("10.0.0.0/99",)}, "trusted_proxies"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
    ],
)
def test_access_settings_set_in_code_are_validated(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**overrides).validated()  # type: ignore[arg-type]


# -- issue 10, item 9: what a careless operator can write is refused, naming the place ---------

SOURCE_KINDS = {
    "binance": False,
    "coingecko": False,
    "kraken-stream": True,
    "coinbase-stream": True,
}


NOT_FINITE_AND_POSITIVE = [
    *(
        (f"{key} = {value}\n", f"{key} must be a positive, finite number, got {value.lstrip('+')}")
        for key in ("interval_seconds", "timeout_seconds")
        for value in ("nan", "inf", "-inf", "-1", "0", "-0.0")
    ),
    *(
        (f"weight = {value}\n", f"weight must be a finite number above 0, got {value.lstrip('+')}")
        for value in ("nan", "inf", "+inf")
    ),
    (
        "health = { interval_seconds = nan }\n",
        "health.interval_seconds must be a positive, finite number, got nan",
    ),
    (
        "health = { degraded_after_ms = inf }\n",
        "health.degraded_after_ms must be a positive, finite number, got inf",
    ),
    (
        "breaker = { cooldown_seconds = nan }\n",
        "breaker.cooldown_seconds must be a positive, finite number, got nan",
    ),
    ("rate_limits = { minute = nan }\n", "rate_limits.minute must be a positive integer, got nan"),
    ("rate_limits = { second = inf }\n", "rate_limits.second must be a positive integer, got inf"),
    ("rate_limits = { minute = 1.5 }\n", "rate_limits.minute must be a positive integer, got 1.5"),
]


@pytest.mark.parametrize(("extra", "message"), NOT_FINITE_AND_POSITIVE)
def test_numbers_that_are_not_finite_and_positive_are_refused(
    tmp_path: Path, extra: str, message: str
) -> None:
    # nan compares false with everything, so `value <= 0` let it through, and a collector
    # sleeping nan seconds crash-looped; inf never polls, or never times out.
    with pytest.raises(ConfigError) as caught:
        load_providers(write(tmp_path, provider_with(extra)))
    assert str(caught.value) == f"{tmp_path / 'providers.toml'}:3: {message} (in provider 'a')"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            'id = "mine"\ncollector = "nope"\ncategory = "MARKET_DATA"\nbase_url = "https://a.example"',
            "collector 'nope' is not a known collector (one of binance, coinbase-stream, coingecko,"
            " kraken-stream) (in provider 'mine')",
        ),
        (
            'id = "kraken-stream"\ncategory = "MARKET_DATA"\nbase_url = "https://ws.kraken.com/v2"',
            "base_url 'https://ws.kraken.com/v2' is not a WebSocket URL, but 'kraken-stream' is a"
            " live stream: it needs ws:// or wss://",
        ),
        (
            'id = "my-kraken"\ncollector = "kraken-stream"\ncategory = "MARKET_DATA"\n'
            'base_url = "http://127.0.0.1:9/v2"',
            "is not a WebSocket URL, but 'kraken-stream' is a live stream",
        ),
        (
            'id = "binance"\ncategory = "MARKET_DATA"\nbase_url = "wss://stream.binance.com/ws"',
            "base_url 'wss://stream.binance.com/ws' is a WebSocket URL, but 'binance' is not a"
            " live stream: it needs http:// or https://",
        ),
        (  # only health-checked and pooled: still HTTP
            'id = "watched"\ncategory = "MARKET_DATA"\nbase_url = "ws://127.0.0.1:9"',
            "'watched' is not a live stream: it needs http:// or https://",
        ),
    ],
)
def test_what_runs_an_entry_must_exist_and_fit_its_url(
    tmp_path: Path, entry: str, message: str
) -> None:
    path = write(tmp_path, "# one entry\n\n[[provider]]\n" + entry + "\n")
    load_providers(path)  # without the registry's names these are not checked
    with pytest.raises(ConfigError) as caught:
        load_providers(path, sources=SOURCE_KINDS)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)


def test_entries_that_fit_their_source_load(tmp_path: Path) -> None:
    text = (
        GOOD.replace('"a"', '"binance"')
        + '[[provider]]\nid = "kraken-stream"\ncategory = "MARKET_DATA"\n'
        + 'base_url = "wss://ws.kraken.com/v2"\n'
        + '[[provider]]\nid = "mine"\ncollector = "coinbase-stream"\ncategory = "MARKET_DATA"\n'
        + 'base_url = "ws://127.0.0.1:9/coinbase"\n'
    )
    file = load_providers(write(tmp_path, text), sources=SOURCE_KINDS)
    assert [p.id for p in file.providers] == ["binance", "kraken-stream", "mine"]


def test_the_shipped_file_fits_the_sources_registry() -> None:
    from gateway.sources.registry import SOURCES

    kinds = {name: entry.stream is not None for name, entry in SOURCES.items()}
    assert load_providers(REPO / "providers.toml", sources=kinds).providers


@pytest.mark.parametrize("text", ["", "# nothing here yet\n", "allow_empty = false\n"])
def test_a_file_without_providers_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_providers(path)
    assert str(caught.value) == (
        f"{path}: no [[provider]] entry, so the gateway would collect and serve nothing;"
        " add providers, or `allow_empty = true` to run without any"
    )


def test_an_empty_file_is_accepted_when_it_says_so(tmp_path: Path) -> None:
    assert load_providers(write(tmp_path, "allow_empty = true\n")) == ProvidersFile(())
    assert load_providers(REPO / "tests" / "data" / "no-providers.toml") == ProvidersFile(())
    with pytest.raises(ConfigError, match="allow_empty must be true or false"):
        load_providers(write(tmp_path, 'allow_empty = "yes"\n'))


def test_the_log_level_must_be_one_we_know() -> None:
    assert settings_from_env({"GATEWAY_LOG_LEVEL": " Warning "}).log_level == "warning"
    with pytest.raises(ConfigError) as caught:
        settings_from_env({"GATEWAY_LOG_LEVEL": "loud"})
    assert str(caught.value) == (
        "GATEWAY_LOG_LEVEL must be one of debug, info, warning, error, got 'loud'"
    )

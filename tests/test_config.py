"""Settings and providers.toml: defaults, environment, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings, load_providers, settings_from_env
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    settings = settings_from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 7860)
    assert settings.db_path == Path("data/gateway.db")
    assert settings.providers_path == Path("providers.toml")


def test_environment_overrides_and_port_fallback() -> None:
    env = {"GATEWAY_HOST": "0.0.0.0", "PORT": "8080", "GATEWAY_DB": "/tmp/x.db", "GATEWAY_SYMBOLS": "btc, eth"}
    settings = settings_from_env(env)
    assert (settings.host, settings.port, settings.db_path) == ("0.0.0.0", 8080, Path("/tmp/x.db"))
    assert settings.symbols == ("BTC", "ETH")
    assert settings_from_env({"GATEWAY_PORT": "9000", "PORT": "8080"}).port == 9000


@pytest.mark.parametrize(
    ("env", "message"),
    [({"GATEWAY_PORT": "http"}, "GATEWAY_PORT"), ({"PORT": "99999"}, "port"), ({"GATEWAY_LOG_FORMAT": "xml"}, "log format")],
)
def test_bad_environment_is_a_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_env(env)


def test_db_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        Settings(db_path=tmp_path).validated()


def test_shipped_providers_file_is_valid() -> None:
    providers = load_providers(REPO / "providers.toml")
    ids = [p.id for p in providers.providers]
    assert {"coingecko", "binance"} <= set(ids)
    assert all(p.base_url.startswith("https://") for p in providers.providers)


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
        (GOOD + "interval_seconds = -1\n", "interval_seconds must be a positive number"),
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

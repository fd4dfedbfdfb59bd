"""The chain-data settings (gateway/config/settings.py) and their environment variables."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.config.environment import settings_from_env
from gateway.errors import ConfigError


def test_defaults_and_the_environment() -> None:
    default = Settings()
    assert (default.chain_heads_interval, default.chain_max_lag_blocks) == (30.0, 5)
    assert (default.gas_interval, default.gas_fee_history_blocks) == (60.0, 20)
    assert default.gas_reward_percentiles == (10.0, 50.0, 90.0)
    settings = settings_from_env(
        {
            "GATEWAY_CHAIN_HEADS_INTERVAL": "12",
            "GATEWAY_CHAIN_MAX_LAG_BLOCKS": "3",
            "GATEWAY_GAS_INTERVAL": "15.5",
            "GATEWAY_GAS_FEE_HISTORY_BLOCKS": "10",
            "GATEWAY_GAS_REWARD_PERCENTILES": "5, 25, 75",
            "GATEWAY_CHAIN_RETENTION_DAYS": "7",
        }
    )
    assert settings.chain_heads_interval == 12.0 and settings.chain_max_lag_blocks == 3
    assert settings.gas_interval == 15.5 and settings.gas_fee_history_blocks == 10
    assert settings.gas_reward_percentiles == (5.0, 25.0, 75.0)
    assert settings.chain_retention_days == 7.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_CHAIN_HEADS_INTERVAL", "0"),
        ("GATEWAY_GAS_INTERVAL", "soon"),
        ("GATEWAY_CHAIN_MAX_LAG_BLOCKS", "0"),
        ("GATEWAY_GAS_FEE_HISTORY_BLOCKS", "-2"),
        ("GATEWAY_GAS_REWARD_PERCENTILES", "90,50,10"),
        ("GATEWAY_GAS_REWARD_PERCENTILES", "10,50"),
        ("GATEWAY_GAS_REWARD_PERCENTILES", "10,50,101"),
        ("GATEWAY_CHAIN_RETENTION_DAYS", "inf"),
    ],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings_from_env({name: value})


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="gas_fee_history_blocks"):
        Settings(gas_fee_history_blocks=5000).validated()
    with pytest.raises(ConfigError, match="gas_reward_percentiles"):
        Settings(gas_reward_percentiles=(50.0, 10.0, 90.0)).validated()

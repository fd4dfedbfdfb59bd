"""The sentiment settings from the environment (gateway/config/environment.py `_env_sentiment`)
and their checks (gateway/config/settings.py)."""

from __future__ import annotations

import pytest

from gateway.config import Settings, settings_from_env
from gateway.errors import ConfigError


def test_the_default_is_the_embedded_model_with_automatic_threads() -> None:
    settings = settings_from_env({})
    assert (settings.sentiment_model, settings.sentiment_threads) == ("embedded", 0)


def test_the_model_and_threads_come_from_the_environment() -> None:
    settings = settings_from_env(
        {"GATEWAY_SENTIMENT_MODEL": " /models/crypto-bert ", "GATEWAY_SENTIMENT_THREADS": "3"}
    )
    assert (settings.sentiment_model, settings.sentiment_threads) == ("/models/crypto-bert", 3)
    assert settings_from_env({"GATEWAY_SENTIMENT_MODEL": "off"}).sentiment_model == "off"


@pytest.mark.parametrize("threads", ["-1", "two", "1.5"])
def test_a_bad_thread_count_names_the_variable(threads: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_SENTIMENT_THREADS"):
        settings_from_env({"GATEWAY_SENTIMENT_THREADS": threads})


@pytest.mark.parametrize(
    "overrides",
    [
        {"sentiment_batch": 0},
        {"sentiment_queue": 0},
        {"sentiment_max_chars": 0},
        {"sentiment_threads": -1},
        {"sentiment_model": "  "},
    ],
)
def test_bad_sentiment_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="sentiment_"):
        Settings(**overrides).validated()  # type: ignore[arg-type]

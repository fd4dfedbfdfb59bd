"""The news settings from the environment: GATEWAY_NEWS_SUMMARY_CHARS and
GATEWAY_NEWS_DEDUP_WINDOW_HOURS, and the checks on every news tunable."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.config.environment import settings_from_env
from gateway.errors import ConfigError


def test_news_settings_from_the_environment() -> None:
    settings = settings_from_env(
        {"GATEWAY_NEWS_SUMMARY_CHARS": "280", "GATEWAY_NEWS_DEDUP_WINDOW_HOURS": "12.5"}
    )
    assert (settings.news_summary_chars, settings.news_dedup_window_hours) == (280, 12.5)
    defaults = settings_from_env({})
    assert (defaults.news_summary_chars, defaults.news_dedup_window_hours) == (500, 48.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_NEWS_SUMMARY_CHARS", "0"),
        ("GATEWAY_NEWS_SUMMARY_CHARS", "many"),
        ("GATEWAY_NEWS_DEDUP_WINDOW_HOURS", "-1"),
        ("GATEWAY_NEWS_DEDUP_WINDOW_HOURS", "nan"),
    ],
)
def test_a_bad_news_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings_from_env({name: value})


@pytest.mark.parametrize(
    "overrides",
    [{"news_queue": 0}, {"news_score_queue": 0}, {"news_dedup_window_hours": float("inf")}],
)
def test_news_tunables_are_checked_in_code_too(overrides: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(overrides))):
        Settings(**overrides).validated()  # type: ignore[arg-type]

"""Freshness limits: served plainly, served with a STALE_DATA warning naming the age, refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gateway.config import Settings
from gateway.config.environment import settings_from_env
from gateway.errors import ConfigError, StaleData, UpstreamError
from gateway.market.freshness import STALE_DATA, Freshness, age_seconds
from gateway.models import utc_now


class Warnings:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, code: str, message: str, **fields: Any) -> None:
        self.seen.append({"code": code, "message": message, **fields})


def test_each_category_has_a_freshness_and_a_hard_limit() -> None:
    settings = Settings()
    assert Freshness.of(settings, "trending") == Freshness("trending", 900.0, 86_400.0)
    assert Freshness.of(settings, "overview") == Freshness("overview", 900.0, 86_400.0)
    assert Freshness.of(settings, "protocols") == Freshness("protocols", 7_200.0, 604_800.0)
    assert Freshness.of(settings, "tvl") == Freshness("tvl", 172_800.0, 604_800.0)
    assert Freshness.of(settings, "prices") == Freshness("prices", 600.0, 3_600.0)
    with pytest.raises(ValueError, match="no freshness limits"):
        Freshness.of(settings, "news")


def test_fresh_data_is_served_without_a_word() -> None:
    now, warn = utc_now(), Warnings()
    Freshness("overview", 900, 86_400).check(
        "x", now - timedelta(minutes=14), now, warn, provider="p"
    )
    assert warn.seen == []


def test_older_than_fresh_is_served_with_its_age() -> None:
    now, warn = utc_now(), Warnings()
    observed = now - timedelta(minutes=20)
    Freshness("overview", 900, 86_400).check(
        "the market overview", observed, now, warn, provider="coingecko", symbol="X"
    )
    (warning,) = warn.seen
    assert warning["code"] == STALE_DATA
    assert warning["ageSeconds"] == pytest.approx(1200)
    assert warning["freshSeconds"] == 900 and warning["maxAgeSeconds"] == 86_400
    assert warning["provider"] == "coingecko" and warning["symbol"] == "X"
    assert warning["observedAt"] == observed.isoformat()
    assert "20 min old" in warning["message"]


def test_past_the_hard_limit_is_refused_with_stale_data() -> None:
    """The issue's case: an overview dated 2024-03-25, 84,830,296 s before the report."""
    now, warn = utc_now(), Warnings()
    observed = now - timedelta(seconds=84_830_296)
    limits = Freshness("overview", 900, 86_400)
    with pytest.raises(StaleData) as caught:
        limits.check("the market overview", observed, now, warn, provider="coingecko")
    error = caught.value
    assert isinstance(error, UpstreamError)  # a pool fails over on it
    assert error.code == "STALE_DATA"
    assert error.extensions()["ageSeconds"] == pytest.approx(84_830_296)
    assert error.extensions()["maxAgeSeconds"] == 86_400
    assert error.extensions()["provider"] == "coingecko"
    assert "982 days old" in str(error)
    assert warn.seen == []


def test_a_time_in_the_future_is_age_zero() -> None:
    now = utc_now()
    assert age_seconds(now + timedelta(seconds=30), now) == 0.0


def test_limits_come_from_the_environment() -> None:
    settings = settings_from_env(
        {
            "GATEWAY_FRESH_TRENDING": "60",
            "GATEWAY_MAX_AGE_TRENDING": "120",
            "GATEWAY_FRESH_PRICES": "30",
        }
    )
    assert (settings.fresh_trending, settings.max_age_trending) == (60.0, 120.0)
    assert settings.fresh_prices == 30.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_FRESH_OVERVIEW": "nan"}, "GATEWAY_FRESH_OVERVIEW must be a positive number"),
        ({"GATEWAY_MAX_AGE_TVL": "-1"}, "GATEWAY_MAX_AGE_TVL must be a positive number"),
        ({"GATEWAY_MAX_AGE_PRICES": "soon"}, "GATEWAY_MAX_AGE_PRICES must be a positive number"),
        ({"GATEWAY_FRESH_PRICES": "7200"}, "GATEWAY_FRESH_PRICES, 7200 s) must not be above"),
    ],
)
def test_bad_limits_are_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from_env(env)
    with pytest.raises(ConfigError, match="market_answer_seconds"):
        Settings(market_answer_seconds=0).validated()

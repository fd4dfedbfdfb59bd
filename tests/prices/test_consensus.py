"""The consensus price: median of the agreeing sources, outliers excluded and counted."""

from __future__ import annotations

from datetime import timedelta

from gateway.models import PriceTick, utc_now
from gateway.prices.consensus import OutlierWatch, consensus

NOW = utc_now()


def tick(provider: str, usd: float, age: float = 0.0) -> PriceTick:
    return PriceTick("BTC", usd, provider, NOW - timedelta(seconds=age))


def test_an_outlier_is_excluded_from_the_median() -> None:
    agreed = consensus([tick("a", 100), tick("b", 101), tick("c", 100.5), tick("d", 150)], NOW)
    assert agreed is not None
    assert agreed.usd == 100.5
    assert [t.provider for t in agreed.excluded] == ["d"]
    assert sorted(t.provider for t in agreed.used) == ["a", "b", "c"]


def test_two_sources_cannot_outvote_each_other() -> None:
    agreed = consensus([tick("a", 100), tick("b", 150)], NOW)
    assert agreed is not None and agreed.usd == 125 and agreed.excluded == ()


def test_stale_sources_do_not_count_unless_nothing_is_fresh() -> None:
    agreed = consensus([tick("a", 100), tick("b", 300, age=3600)], NOW)
    assert agreed is not None and agreed.usd == 100
    only_stale = consensus([tick("a", 100, age=7200), tick("b", 300, age=3600)], NOW)
    assert only_stale is not None and only_stale.usd == 300  # the newest, alone


def test_threshold_is_configurable() -> None:
    ticks = [tick("a", 100), tick("b", 100), tick("c", 103)]
    assert consensus(ticks, NOW, max_deviation_pct=2.0).excluded  # type: ignore[union-attr]
    assert not consensus(ticks, NOW, max_deviation_pct=5.0).excluded  # type: ignore[union-attr]


def test_outlier_watch_counts_each_deviating_tick_once() -> None:
    watch = OutlierWatch(max_deviation_pct=2.0)
    assert watch.observe(tick("a", 100)) is None
    assert watch.observe(tick("b", 100.4)) is None
    assert watch.observe(tick("c", 100.2)) is None
    deviation = watch.observe(tick("d", 120))
    assert deviation is not None and 19 < deviation < 20.5
    assert watch.outliers == {"d": 1}
    assert watch.observe(tick("d", 100.1)) is None
    assert watch.outliers == {"d": 1}

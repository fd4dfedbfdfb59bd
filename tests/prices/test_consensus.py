"""The consensus price: median of the agreeing sources, outliers excluded and counted."""

from __future__ import annotations

from datetime import timedelta

from gateway.models import Candle, PriceTick, utc_now
from gateway.prices.consensus import OutlierWatch, candle_consensus, consensus

NOW = utc_now()


def tick(provider: str, usd: float, age: float = 0.0) -> PriceTick:
    return PriceTick("BTC", usd, provider, NOW - timedelta(seconds=age))


def test_an_outlier_is_excluded_from_the_median() -> None:
    agreed = consensus([tick("a", 100), tick("b", 101), tick("c", 100.5), tick("d", 150)], NOW)
    assert agreed is not None
    assert agreed.usd == 100.5
    assert [t.provider for t in agreed.excluded] == ["d"]
    assert sorted(t.provider for t in agreed.used) == ["a", "b", "c"]


def test_two_sources_cannot_outvote_each_other_so_apart_they_give_no_price() -> None:
    apart = consensus([tick("a", 67_000), tick("b", 1e12)], NOW)
    assert apart is not None and apart.usd is None and apart.excluded == ()
    assert sorted(t.provider for t in apart.used) == ["a", "b"]
    close = consensus([tick("a", 100), tick("b", 103)], NOW)  # 1.5% from their median
    assert close is not None and close.usd == 101.5


def test_no_majority_no_price() -> None:
    split = consensus([tick("a", 100), tick("b", 100.5), tick("c", 150), tick("d", 151)], NOW)
    assert split is not None and split.usd is None


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


def candle(provider: str, close: float, *, complete: bool = True) -> Candle:
    return Candle(
        "BTC", 60, NOW, close - 10, close + 20, close - 30, close, None, provider, complete
    )


def test_a_candle_consensus_leaves_the_outlier_out_and_names_who_agreed() -> None:
    agreed = candle_consensus([candle("a", 67_187), candle("b", 67_190), candle("c", 70_123)])
    assert agreed is not None and agreed.provider == "consensus"
    assert agreed.close == 67_188.5 and agreed.providers == ("a", "b")
    assert (
        agreed.low
        <= min(agreed.open, agreed.close)
        <= max(agreed.open, agreed.close)
        <= agreed.high
    )


def test_candles_that_disagree_without_a_majority_give_none() -> None:
    assert candle_consensus([candle("a", 67_187), candle("b", 70_123)]) is None
    assert candle_consensus([candle("a", 100), candle("b", 200), candle("c", 300)]) is None
    assert candle_consensus([]) is None


def test_complete_candles_outvote_incomplete_ones() -> None:
    only = candle_consensus([candle("a", 67_187), candle("b", 70_123, complete=False)])
    assert only is not None and only.provider == "a" and only.providers == ()

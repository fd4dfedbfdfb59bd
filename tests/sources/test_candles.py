"""The rules shared by every candle fetcher (`gateway.sources.candles`), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import UpstreamPayloadError
from gateway.models import Candle
from gateway.sources import candles as cdl

T0 = datetime(2024, 3, 25, 8, 0, tzinfo=UTC)


def fail(message: str) -> UpstreamPayloadError:
    return UpstreamPayloadError(message, provider="test", endpoint="/x")


def candle(open_time: datetime, close: float = 10.0, *, now: datetime = T0) -> Candle:
    return cdl.make_candle(
        symbol="BTC",
        interval_seconds=60,
        open_time=open_time,
        ohlc=(9.0, 11.0, 8.0, close),
        volume_usd=None,
        provider="test",
        now=now,
        fail=fail,
        where="row",
    )


def test_check_window_aligns_and_refuses_bad_windows() -> None:
    assert cdl.check_window(T0 + timedelta(seconds=75), T0 + timedelta(hours=1), 60) == (
        T0 + timedelta(seconds=60)
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        cdl.check_window(T0.replace(tzinfo=None), T0 + timedelta(hours=1), 60)
    with pytest.raises(ValueError, match="not before"):
        cdl.check_window(T0, T0, 60)
    with pytest.raises(ValueError, match="at most"):
        cdl.check_window(T0, T0 + timedelta(minutes=cdl.MAX_CANDLES + 1), 60)
    assert cdl.check_window(T0, T0 + timedelta(minutes=cdl.MAX_CANDLES), 60) == T0


def test_check_interval_names_what_is_served() -> None:
    cdl.check_interval(60, frozenset({60, 300}), "p")
    with pytest.raises(ValueError, match="p serves candles of 60, 300 seconds, not 120"):
        cdl.check_interval(120, frozenset({300, 60}), "p")


def test_pages_cover_the_window_without_gaps() -> None:
    end = T0 + timedelta(minutes=2500, seconds=30)
    pages = list(cdl.pages(T0, end, 60, 1000))
    assert [(a - T0, b - T0) for a, b in pages] == [
        (timedelta(0), timedelta(minutes=1000)),
        (timedelta(minutes=1000), timedelta(minutes=2000)),
        (timedelta(minutes=2000), timedelta(minutes=2500, seconds=30)),
    ]
    assert list(cdl.pages(T0, T0 + timedelta(seconds=1), 60, 1000)) == [
        (T0, T0 + timedelta(seconds=1))
    ]


async def test_fetch_pages_asks_each_page_in_order_and_selects() -> None:
    asked: list[tuple[datetime, datetime]] = []

    async def page(start: datetime, end: datetime) -> list[Candle]:
        asked.append((start, end))
        # Like some upstreams, answer an interval either side of the page as well.
        return [candle(start - timedelta(minutes=1)), candle(start), candle(end)]

    minute = timedelta(minutes=1)
    found = await cdl.fetch_pages(page, T0, T0 + 5 * minute, 60, 2)
    assert asked == [
        (T0, T0 + 2 * minute),
        (T0 + 2 * minute, T0 + 4 * minute),
        (T0 + 4 * minute, T0 + 5 * minute),
    ]
    # Edges shared by two pages appear once; what lies outside [T0, T0 + 5 min) is dropped.
    assert [c.open_time for c in found] == [T0 + i * minute for i in range(5)]


def test_make_candle_complete_only_once_the_interval_ended() -> None:
    assert candle(T0 - timedelta(minutes=1)).complete
    assert not candle(T0 - timedelta(seconds=60), now=T0 - timedelta(seconds=1)).complete
    assert not candle(T0).complete


@pytest.mark.parametrize(
    ("open_time", "ohlc", "message"),
    [
        (T0 + timedelta(seconds=30), (9.0, 11.0, 8.0, 10.0), "grid"),
        (T0 + timedelta(microseconds=5), (9.0, 11.0, 8.0, 10.0), "grid"),
        (T0, (9.0, 9.5, 8.0, 10.0), "inconsistent"),  # close above high
        (T0, (9.0, 11.0, 9.5, 10.0), "inconsistent"),  # open below low
    ],
)
def test_make_candle_rejects_impossible_rows(
    open_time: datetime, ohlc: tuple[float, float, float, float], message: str
) -> None:
    with pytest.raises(UpstreamPayloadError, match=message):
        cdl.make_candle(
            symbol="BTC",
            interval_seconds=60,
            open_time=open_time,
            ohlc=ohlc,
            volume_usd=None,
            provider="test",
            now=T0,
            fail=fail,
            where="row",
        )


def test_select_keeps_the_window_sorted_and_deduplicated() -> None:
    a, b, c = (T0 + timedelta(minutes=i) for i in range(3))
    chosen = cdl.select(
        [candle(c), candle(a, 10.0), candle(b), candle(a, 10.5), candle(T0 - timedelta(minutes=1))],
        T0,
        c,
    )
    assert [x.open_time for x in chosen] == [a, b]
    assert chosen[0].close == 10.5  # the later copy of a repeated interval wins


@pytest.mark.parametrize("value", [None, "abc", "0", 0, -1, float("nan"), float("inf"), True])
def test_price_must_be_positive_and_finite(value: object) -> None:
    with pytest.raises(UpstreamPayloadError, match="invalid price"):
        cdl.price(value, fail, "row")


def test_numbers_times_and_strings() -> None:
    assert cdl.price("67187.30", fail, "r") == 67187.3
    with pytest.raises(UpstreamPayloadError):
        cdl.price("67187.30", fail, "r", strings=False)
    assert cdl.volume(0, fail, "r") == 0.0
    with pytest.raises(UpstreamPayloadError):
        cdl.volume("-1", fail, "r")
    assert cdl.iso_time("2024-03-25T08:44:59.5Z", fail, "r") == datetime(
        2024, 3, 25, 8, 44, 59, 500000, tzinfo=UTC
    )
    for bad in ("2024-03-25T08:44:59", "yesterday", 1711356300):
        with pytest.raises(UpstreamPayloadError):
            cdl.iso_time(bad, fail, "r")
    assert cdl.iso_z(datetime(2024, 3, 25, 8, 45, 1, 999, tzinfo=UTC)) == "2024-03-25T08:45:01Z"
    assert cdl.from_epoch(1711356300, fail, "r") == datetime(2024, 3, 25, 8, 45, tzinfo=UTC)
    for bad_seconds in (0.0, -5.0, 1e20, float("nan")):
        with pytest.raises(UpstreamPayloadError):
            cdl.from_epoch(bad_seconds, fail, "r")

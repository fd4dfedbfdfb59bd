"""The JSON news and Fear & Greed sources: Reddit's listing, CryptoPanic, NewsData.io and
alternative.me — parsers against the fixtures (fixtures/SOURCES.md says where each shape comes
from), collectors against the simulator (keys, conditional GET, the one-time history backfill).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamUnconfigured
from gateway.news_models import FearGreedPoint, NewsItem
from gateway.sources.alternative_me import FearAndGreedCollector, history_limit, parse_fng
from gateway.sources.cryptopanic import CryptoPanicCollector, parse_iso_time, parse_posts
from gateway.sources.news_base import RecordContext
from gateway.sources.newsdata import NewsDataCollector, parse_latest
from gateway.sources.reddit import RedditCollector, parse_listing
from gateway.upstream import UpstreamClient
from tests.news.support import Recorder, news_provider
from tests.simulator import load_fixture
from tests.simulator.rest import API_KEYS, run_simulator

NOW = datetime(2024, 3, 25, 12, 0, tzinfo=UTC)


# -- Reddit --------------------------------------------------------------------------------------


def test_reddit_listing() -> None:
    items = parse_listing(load_fixture("reddit_new"), provider="reddit-cryptocurrency")
    assert [i.title for i in items] == [  # the stickied daily thread is left out
        "Bitcoin ETFs log record inflows as BTC nears its high",
        "What is your plan for the halving?",
        "Monero delisted from another exchange",
    ]
    link_post, self_post, _ = items
    assert link_post.url.startswith("https://www.coindesk.com/markets/2024/03/25/bitcoin-etfs")
    assert link_post.published_at == datetime(2024, 3, 25, 9, 10, tzinfo=UTC)
    assert link_post.summary is None
    assert self_post.url == (
        "https://www.reddit.com/r/CryptoCurrency/comments/1bnb9cd/what_is_your_plan_for_the_halving/"
    )
    assert self_post.summary is not None and "stacking sats" in self_post.summary


@pytest.mark.parametrize(
    "payload",
    [None, [], {"kind": "t3"}, {"kind": "Listing", "data": {}}, {"data": {"children": []}}],
)
def test_reddit_rejects_what_is_not_a_listing(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_listing(payload, provider="reddit")


def test_reddit_drops_posts_without_a_time_or_title() -> None:
    listing = copy.deepcopy(load_fixture("reddit_new"))
    children = listing["data"]["children"]
    children[1]["data"]["created_utc"] = None
    children[2]["data"]["title"] = "  "
    assert [i.title for i in parse_listing(listing, provider="r")] == [
        "Monero delisted from another exchange"
    ]


# -- CryptoPanic ---------------------------------------------------------------------------------


def test_cryptopanic_posts() -> None:
    items = parse_posts(load_fixture("cryptopanic_posts"), provider="cryptopanic")
    assert [(i.title, i.coins) for i in items] == [
        ("Bitcoin ETFs Log Record $1.1B Inflows as BTC Nears All-Time High", ("BTC",)),
        ("Arbitrum DAO approves gaming catalyst grants", ("ARB", "ETH")),
        ("Shiba Inu burn rate spikes 900%", ("SHIB",)),
    ]
    assert items[0].published_at == datetime(2024, 3, 25, 8, 47, 12, tzinfo=UTC)
    assert items[0].url.startswith("https://cryptopanic.com/news/19302115/")


def test_iso_times() -> None:
    assert parse_iso_time("2024-03-25T08:47:12.575689Z") == datetime(
        2024, 3, 25, 8, 47, 12, 575689, tzinfo=UTC
    )
    assert parse_iso_time("2024-03-25T10:47:12+02:00") == datetime(
        2024, 3, 25, 8, 47, 12, tzinfo=UTC
    )
    assert parse_iso_time("yesterday") is None and parse_iso_time(5) is None


def test_cryptopanic_without_results_is_a_payload_error() -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_posts({"status": "Incomplete", "info": "Missing auth_token"}, provider="cp")


# -- NewsData ------------------------------------------------------------------------------------


def test_newsdata_latest() -> None:
    items = parse_latest(load_fixture("newsdata_latest"), provider="newsdata")
    assert [i.title for i in items] == [
        "Ethereum staking deposits climb ahead of upgrade",
        "Crypto funds see fifth week of inflows, CoinShares says",
    ]
    assert items[0].published_at == datetime(2024, 3, 25, 8, 12, tzinfo=UTC)
    assert items[0].summary == "Deposits to the Ethereum beacon chain rose for a fourth week."
    assert items[1].summary is None


def test_newsdata_time_in_another_zone_is_not_guessed() -> None:
    payload = copy.deepcopy(load_fixture("newsdata_latest"))
    payload["results"][0]["pubDateTZ"] = "Asia/Kolkata"
    assert parse_latest(payload, provider="n")[0].published_at is None


def test_newsdata_error_answer() -> None:
    error = {
        "status": "error",
        "results": {"message": "API key is invalid", "code": "Unauthorized"},
    }
    with pytest.raises(UpstreamPayloadError, match="API key is invalid"):
        parse_latest(error, provider="newsdata")


# -- alternative.me ------------------------------------------------------------------------------


def test_fear_and_greed_answer() -> None:
    points, until = parse_fng(load_fixture("alternative_me_fng"), provider="alternative-me")
    assert points[0] == FearGreedPoint(
        79, "Extreme Greed", datetime(2024, 3, 25, tzinfo=UTC), "alternative-me"
    )
    assert [p.value for p in points] == [79, 74, 76]
    assert until == 44231


@pytest.mark.parametrize(
    "entry",
    [
        {"value": "101", "value_classification": "x", "timestamp": "1711324800"},
        {"value": "-1", "value_classification": "x", "timestamp": "1711324800"},
        {"value": "4.5", "value_classification": "x", "timestamp": "1711324800"},
        {"value": "40", "value_classification": "Fear", "timestamp": "soon"},
        {"value": "40", "value_classification": "", "timestamp": "1711324800"},
        {"value_classification": "Fear", "timestamp": "1711324800"},
    ],
)
def test_fear_and_greed_refuses_bad_values(entry: dict[str, Any]) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_fng({"data": [entry], "metadata": {"error": None}}, provider="a")


def test_fear_and_greed_error_metadata() -> None:
    with pytest.raises(UpstreamPayloadError, match="Invalid limit"):
        parse_fng({"data": [], "metadata": {"error": "Invalid limit"}}, provider="a")


def test_history_is_asked_for_once() -> None:
    assert history_limit(None, NOW) == 0  # nothing stored: the whole history
    assert history_limit(NOW - timedelta(hours=12), NOW) == 2  # today and yesterday
    assert history_limit(NOW - timedelta(days=10), NOW) == 11


# -- collectors against the simulator ------------------------------------------------------------


async def test_keyed_news_sources_send_their_key_and_parse() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            panic = news_provider(sim, "cryptopanic")
            data = news_provider(sim, "newsdata")
            key = API_KEYS["cryptopanic"]
            posts = await CryptoPanicCollector(RecordContext(panic, client, Recorder(), key)).poll()
            data_key = API_KEYS["newsdata"]
            latest = await NewsDataCollector(
                RecordContext(data, client, Recorder(), data_key)
            ).poll()
            assert len(posts) == 3 and len(latest) == 2
            _, _, params, _ = sim.requests[0]
            assert params["auth_token"] == key and params["public"] == "true"
            with pytest.raises(UpstreamUnconfigured):  # never called without its key
                await CryptoPanicCollector(RecordContext(panic, client, Recorder())).poll()
            with pytest.raises(UpstreamError) as caught:  # a wrong key: the API's 401
                await NewsDataCollector(RecordContext(data, client, Recorder(), "wrong")).poll()
            assert caught.value.status == 401


async def test_reddit_collector_polls_the_listing_conditionally() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = news_provider(sim, "reddit-cryptocurrency")
            collector = RedditCollector(RecordContext(provider, client, Recorder[NewsItem]()))
            assert len(await collector.poll()) == 3
            assert await collector.poll() == []
            _, _, params, _ = sim.requests[-1]
            assert params == {"limit": "100", "raw_json": "1"}
            assert sim.news.not_modified["reddit-cryptocurrency"] == 1


async def test_fear_and_greed_backfills_once_then_asks_for_recent_days() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = news_provider(sim, "alternative-me")
            collector = FearAndGreedCollector(RecordContext(provider, client, Recorder()))
            history = await collector.poll()
            assert len(history) == sim.news.fng_days
            assert sim.requests[-1][2] == {"limit": "0", "format": "json"}
            assert collector.next_delay(None) == sim.news.fng_until_update  # polite: next value
            sim.news.set_fear_greed(12)
            recent = await collector.poll()
            assert sim.requests[-1][2]["limit"] == "2"
            assert recent[0].value == 12 and recent[0].classification == "Extreme Fear"
            stored = RecordContext(provider, client, Recorder[FearGreedPoint](), newest=NOW)
            restarted = FearAndGreedCollector(stored)
            await restarted.poll()
            assert sim.requests[-1][2]["limit"] != "0"  # a restart does not fetch it all again

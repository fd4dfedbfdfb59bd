"""RSS/Atom news feeds: `parse_feed` against the fixtures (encodings, HTML, missing dates, broken
documents, Atom), and `FeedCollector` against the simulator (conditional GET, a hanging feed,
a broken one), plus the registry's map of every news and sentiment provider.

Fixture shapes: RSS 2.0 as each site's WordPress/Arc feed writes it (fixtures/SOURCES.md).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
import trio

from gateway.config import load_providers
from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.news.normalise import plain_text
from gateway.news_models import NewsItem
from gateway.sources.feeds import FeedCollector, parse_feed
from gateway.sources.news_base import RecordContext
from gateway.sources.registry import (
    COLLECTORS,
    FEAR_GREED_COLLECTORS,
    NEWS_COLLECTORS,
    fear_greed_collector_for,
    news_collector_for,
)
from gateway.upstream import UpstreamClient
from tests.news.support import Recorder, news_provider
from tests.simulator import FIXTURES, SHIPPED_PROVIDERS, shipped_provider
from tests.simulator.news import FEEDS, Story
from tests.simulator.rest import Fault, run_simulator


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(name: str, provider: str = "feed") -> list[NewsItem]:
    return parse_feed(fixture(name), "application/rss+xml", provider=provider)


# -- parser ------------------------------------------------------------------------------------


def test_an_rss_feed_gives_title_link_utc_time_and_summary() -> None:
    items = parse("news_coindesk.xml", "coindesk")
    assert [i.title for i in items] == [
        "Bitcoin ETFs Log Record $1.1B Inflows as BTC Nears All-Time High",
        "Solana Meme Coin Frenzy Sends DEX Volumes to Record",
        "Ethereum Developers Set Date for Next Testnet Upgrade",
    ]
    first = items[0]
    assert first.source == "coindesk"
    assert first.url.startswith("https://www.coindesk.com/markets/2024/03/25/bitcoin-etfs-log")
    assert "utm_source=rss" in first.url  # as sent: canonical URLs are the news layer's job
    assert first.published_at == datetime(2024, 3, 25, 8, 45, tzinfo=UTC)
    assert first.summary is not None and "Grayscale outflows slowed" in first.summary


def test_a_feed_in_windows_1252_reads_right() -> None:
    items = parse("news_beincrypto.xml")
    assert items[0].title == "Litecoin \u2013 Analysts Eye “Breakout” as Café Merchants Adopt LTC"
    assert items[0].summary is not None and "São Paulo" in items[0].summary


def test_entries_without_a_date_keep_none() -> None:
    items = parse("news_cryptoslate.xml")
    assert len(items) == 2 and all(i.published_at is None for i in items)


def test_zoned_and_named_zone_dates_become_utc() -> None:
    items = parse("news_theblock.xml")
    assert items[0].published_at == datetime(2024, 3, 25, 8, 15, tzinfo=UTC)  # 03:15 EST


def test_scripts_and_styles_never_reach_a_summary() -> None:
    (first, second) = parse("news_cryptobriefing.xml")
    text = plain_text(first.summary, 500)
    assert text is not None
    assert text.startswith("Analysts at Crypto Briefing say Ethereum fees fell 40% & blob")
    for leaked in ("__ads", "color:red", "<", "&amp;", "&nbsp;"):
        assert leaked not in text
    assert plain_text(second.summary, 500) == "UNI holders approved the proposal."


def test_a_truncated_feed_keeps_the_entries_before_the_cut() -> None:
    items = parse("news_broken.xml")
    assert [i.title for i in items] == [
        "Bitcoin ETFs log record $1.1B inflows as BTC nears all-time high"
    ]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html><body><h1>502 Bad Gateway</h1></body></html>", id="html-page"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"items": []}', id="json"),
        pytest.param(b"<?xml version='1.0'?><rss><channel><item><title>A", id="cut-first-item"),
    ],
)
def test_what_is_not_a_feed_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(UpstreamPayloadError) as caught:
        parse_feed(body, "text/html", provider="decrypt")
    assert caught.value.provider == "decrypt"


def test_an_empty_feed_is_no_news_not_an_error() -> None:
    body = b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title></channel></rss>"
    assert parse_feed(body, None, provider="x") == []


def test_atom_entries_read_like_rss_ones() -> None:
    (first, second) = parse("news_atom.xml")
    assert first.title == "Bitcoin &amp; Ether rally"  # type="html": markup, as sent
    assert plain_text(first.title, 100) == "Bitcoin & Ether rally"
    assert first.url == "https://example.org/2024/03/25/bitcoin-ether-rally?utm_source=atom"
    assert first.published_at == datetime(2024, 3, 25, 9, 45, tzinfo=UTC)  # 11:45+02:00
    assert second.published_at == datetime(2024, 3, 24, 8, 0, tzinfo=UTC)  # only <updated>
    assert plain_text(second.summary, 100) == "Body text"


# -- collector ---------------------------------------------------------------------------------


async def test_polls_are_conditional_and_a_304_publishes_nothing() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = news_provider(sim, "coindesk")
            collector = FeedCollector(RecordContext(provider, client, Recorder[NewsItem]()))
            first = await collector.poll()
            assert len(first) == 3
            assert await collector.poll() == []  # nothing changed: 304, no body
            assert sim.news.not_modified["coindesk"] == 1 and collector.not_modified == 1
            _, _, _, headers = sim.requests[-1]
            assert headers["if-none-match"].startswith('"')
            published = datetime(2024, 3, 25, 11, 0, tzinfo=UTC)
            story = Story("Ripple wins appeal", "https://www.coindesk.com/x/ripple", published)
            sim.news.publish("coindesk", story)
            third = await collector.poll()
            assert [i.title for i in third][:1] == ["Ripple wins appeal"] and len(third) == 4


async def test_a_feed_in_another_encoding_over_http() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = news_provider(sim, "beincrypto")
            items = await FeedCollector(RecordContext(provider, client, Recorder())).poll()
    assert items[0].title.startswith("Litecoin \u2013 Analysts Eye “Breakout” as Café")


async def test_a_hanging_feed_fails_within_its_timeout() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("decrypt", Fault.hang())
            provider = news_provider(sim, "decrypt", timeout_seconds=0.5)
            collector = FeedCollector(RecordContext(provider, client, Recorder()))
            began = trio.current_time()
            with pytest.raises(UpstreamError, match="timed out"):
                await collector.poll()
            assert trio.current_time() - began < 2


async def test_a_document_that_is_not_a_feed_counts_against_the_provider() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.news.serve_raw("theblock", b"<html><body>Just a moment...</body></html>")
            provider = news_provider(sim, "theblock")
            with pytest.raises(UpstreamPayloadError):
                await FeedCollector(RecordContext(provider, client, Recorder())).poll()
            assert client.payload_errors["theblock"] == 1


# -- the registry ------------------------------------------------------------------------------


def test_every_news_and_sentiment_provider_has_its_collector() -> None:
    shipped = load_providers(SHIPPED_PROVIDERS).providers
    news = [p for p in shipped if "NEWS" in p.categories and p.enabled]
    assert {p.id for p in news} == set(FEEDS) | {
        "reddit-cryptocurrency",
        "cryptopanic",
        "newsdata",
    }
    assert all(news_collector_for(p) is not None for p in news)
    assert all(news_collector_for(p) is FeedCollector for p in news if p.id in FEEDS)
    # every feed's polled path (its health path) is one the simulator serves
    assert {p.id: p.health.path for p in news if p.id in FEEDS and p.health} == FEEDS
    alternative = next(p for p in shipped if p.id == "alternative-me")
    assert fear_greed_collector_for(alternative) is not None
    assert set(FEAR_GREED_COLLECTORS) == {"alternative-me"}
    assert "rss" in NEWS_COLLECTORS  # any other feed: `collector = "rss"`
    assert not set(NEWS_COLLECTORS) & set(COLLECTORS)  # no price collector was displaced


async def test_feed_polls_keep_to_the_shipped_rate_limit(autojump_clock: trio.abc.Clock) -> None:
    sent: list[float] = []

    async def feed(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        return httpx.Response(200, content=fixture("news_decrypt.xml"))

    provider = replace(shipped_provider("decrypt"), base_url="https://decrypt.example.test")
    assert [(w.limit, w.seconds) for w in provider.rate_limits] == [(2, 60)]
    async with UpstreamClient(transport=httpx.MockTransport(feed)) as client:
        collector = FeedCollector(RecordContext(provider, client, Recorder()))
        for _ in range(3):
            await collector.poll()
    assert sent[1] - sent[0] < 1 and sent[2] - sent[0] >= 60  # a third waits for the window

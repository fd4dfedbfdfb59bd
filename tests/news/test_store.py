"""The news tables (migration 7) through `NewsStore`: one row per story with every source,
full-text search that no input can break, keyset pages that hold still while stories arrive,
and the daily Fear & Greed values."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import trio

from gateway.models import epoch_ms
from gateway.news.dedup import story_matcher
from gateway.news.normalise import normalise
from gateway.news_models import Article, FearGreedPoint, NewsItem, StoredSentiment
from gateway.storage import NewsStore, PageQuery, Storage, fts_query

T0 = datetime(2024, 3, 25, 8, 0, tzinfo=UTC)
WINDOW_MS = 48 * 3600 * 1000


def article(source: str, title: str, url: str, minutes: float = 0, summary: str = "") -> Article:
    item = NewsItem(source, title, url, T0 + timedelta(minutes=minutes), summary or None)
    normalised = normalise(item, T0 + timedelta(days=30), 500)
    assert normalised is not None
    return normalised


async def add(store: NewsStore, *articles: Article) -> list[tuple[int, bool]]:
    added = await store.add_articles(articles, story_matcher, WINDOW_MS)
    return [(a.id, a.new) for a in added]


async def test_one_story_from_three_sources_is_stored_once_with_three_sources(
    running_storage: Storage,
) -> None:
    store = NewsStore(running_storage)
    title = "Bitcoin ETFs Log Record $1.1B Inflows as BTC Nears All-Time High"
    added = await add(
        store,
        article(
            "coindesk", title, "https://www.coindesk.com/m/etf/?utm_source=rss", 0, "Grayscale"
        ),
        article("cointelegraph", title.lower() + "!", "https://cointelegraph.com/news/etf", 25),
        article("decrypt", title, "https://decrypt.co/223187/etf", 77),
        # a link to the first one's article, by another route: the same canonical URL
        article(
            "reddit-cryptocurrency",
            "BTC ETF news",
            "https://www.coindesk.com/m/etf?utm_source=reddit",
            90,
        ),
        article("coindesk", title, "https://www.coindesk.com/m/etf", 0),  # the next poll
    )
    (first, _), *others = added
    assert [new for _, new in added] == [True, False, False, False, False]
    assert {i for i, _ in others} == {first}
    assert await store.count() == 1
    (stored,) = await store.articles([first])
    assert [s.source for s in stored.sources] == [
        "coindesk",
        "cointelegraph",
        "decrypt",
        "reddit-cryptocurrency",
    ]
    assert stored.url == "https://www.coindesk.com/m/etf" and stored.source == "coindesk"
    assert stored.coins == ("BTC",)
    found = await store.page(PageQuery(10, search=fts_query("grayscale")))
    assert [a.id for a in found] == [first]


async def test_an_article_that_ties_two_stored_stories_together_makes_them_one(
    running_storage: Storage,
) -> None:
    store = NewsStore(running_storage)
    title = "Bitcoin ETFs Log Record $1.1B Inflows as BTC Nears All-Time High"
    link = "https://www.coindesk.com/m/etf"
    ((reddit, _), (decrypt, _)) = await add(
        store,
        article("reddit-cryptocurrency", "BTC ETFs see record money", link + "?utm_source=r", 5),
        article("decrypt", title, "https://decrypt.co/223187/etf", 77, "Grayscale dwindled"),
    )
    assert reddit != decrypt  # nothing yet says they are one story
    await store.set_sentiment([(decrypt, StoredSentiment("BULLISH", 0.5, 0.7, "m"))])
    ((story, new),) = await add(store, replace(article("coindesk", title, link, 0), rank=0))
    assert (story, new) == (reddit, False)
    (stored,) = await store.page(PageQuery(10))
    assert stored.id == reddit and stored.title == title and stored.source == "coindesk"
    assert {s.source for s in stored.sources} == {"reddit-cryptocurrency", "decrypt", "coindesk"}
    assert stored.sentiment == StoredSentiment("BULLISH", 0.5, 0.7, "m")
    assert stored.published_at == T0 + timedelta(minutes=5)  # its place in pages never moves
    found = await store.page(PageQuery(10, search=fts_query("dwindled")))
    assert [a.id for a in found] == [reddit]  # its summary came along; the absorbed one is gone
    assert [a.id for a in await store.page(PageQuery(10, coin="BTC"))] == [reddit]


async def test_the_same_title_outside_the_window_is_another_story(running_storage: Storage) -> None:
    store = NewsStore(running_storage)
    title = "Weekly crypto market wrap for traders"
    added = await add(
        store,
        article("a", title, "https://a.com/1", 0),
        article("b", title, "https://b.com/1", 3 * 24 * 60),
    )
    assert [new for _, new in added] == [True, True]


@pytest.mark.parametrize(
    "search",
    ['"', 'bitcoin"', "AND", "OR NOT", "NEAR(bitcoin", "bit*", "-etf", "title:etf", "^x",
     "a:b:c", "'", "(", "{col}", "x" * 200, "ETF; DROP TABLE news_articles;--", "\u0000"],
)  # fmt: skip
async def test_no_search_input_is_query_syntax(running_storage: Storage, search: str) -> None:
    store = NewsStore(running_storage)
    await add(store, article("a", "Bitcoin ETF inflows AND outflows", "https://a.com/1"))
    query = fts_query(search)
    if query is not None:
        await store.page(PageQuery(5, search=query))  # never an SQLite syntax error
    assert await store.count() == 1


def test_search_terms_are_quoted_phrases() -> None:
    assert fts_query('  bitcoin  "etf  ') == '"bitcoin" """etf"'
    assert fts_query("*** ---") is None
    assert fts_query(" ".join(f"w{i}" for i in range(40))).count('"') == 32  # 16 terms


async def test_search_coin_and_sentiment_filters(running_storage: Storage) -> None:
    store = NewsStore(running_storage)
    ids = [
        i
        for i, _ in await add(
            store,
            article("a", "Solana DEX volumes hit a record high", "https://a.com/1", 1),
            article("a", "Ethereum developers set an upgrade date", "https://a.com/2", 2),
            article("a", "Solana outage halts block production", "https://a.com/3", 3, "halted"),
        )
    ]
    await store.set_sentiment([(ids[0], StoredSentiment("BULLISH", 0.8, 0.9, "m"))])
    sol = await store.page(PageQuery(10, coin="SOL"))
    assert [a.id for a in sol] == [ids[2], ids[0]]
    bullish = await store.page(PageQuery(10, coin="SOL", label="BULLISH"))
    assert [(a.id, a.sentiment) for a in bullish] == [
        (ids[0], StoredSentiment("BULLISH", 0.8, 0.9, "m"))
    ]
    halted = await store.page(PageQuery(10, search=fts_query("halted solana")))
    assert [a.id for a in halted] == [ids[2]]


async def test_keyset_pages_walk_every_story_once_while_new_ones_arrive(
    running_storage: Storage,
) -> None:
    store = NewsStore(running_storage)
    rng = random.Random(11)
    minutes = [rng.randrange(0, 5_000) for _ in range(500)]  # many stories share a minute
    batch = [
        article("feed", f"Story number {n} about markets {n * 7919}", f"https://x.com/{n}", m)
        for n, m in enumerate(minutes)
    ]
    existing = {i for i, _ in await add(store, *batch)}
    assert len(existing) == 500
    seen: list[int] = []
    after: tuple[int, int] | None = None
    arrivals = 0
    with trio.fail_after(20):
        for _ in range(100):
            page = await store.page(PageQuery(23, after=after))
            if not page:
                break
            seen += [a.id for a in page]
            after = (epoch_ms(page[-1].published_at), page[-1].id)
            # between pages: newer stories, and late ones dated inside the range already walked
            await add(
                store,
                article("late", f"Fresh story {arrivals} lands now", f"https://y.com/{arrivals}", 6_000),
                article("late", f"Old story {arrivals} turns up late", f"https://z.com/{arrivals}",
                        rng.randrange(0, 5_000)),
            )  # fmt: skip
            arrivals += 1
    assert len(seen) == len(set(seen))  # no repeat
    assert existing <= set(seen)  # no gap
    order = [(a.published_at, a.id) for a in await store.articles(seen)]
    assert order == sorted(order, reverse=True)


async def test_fear_and_greed_values_by_day(running_storage: Storage) -> None:
    store = NewsStore(running_storage)
    day = datetime(2024, 3, 25, tzinfo=UTC)
    points = [
        FearGreedPoint(70 + n, "Greed", day - timedelta(days=n), "alternative-me") for n in range(5)
    ]
    await store.add_fear_greed(points)
    await store.add_fear_greed([FearGreedPoint(81, "Extreme Greed", day, "alternative-me")])
    latest = await store.latest_fear_greed()
    assert latest == FearGreedPoint(81, "Extreme Greed", day, "alternative-me")  # revised
    since = await store.fear_greed_since(day - timedelta(days=2))
    assert [p.value for p in since] == [72, 71, 81]  # oldest first
    assert await store.latest_fear_greed("other") is None

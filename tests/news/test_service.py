"""The news side against the simulator, collectors and all, as the supervisor runs it: the same
story from three feeds stored once with three sources and found by a word of its summary; a
broken or hanging feed never stops the others; Fear & Greed backfilled once, then kept current.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from gateway.config import ProviderConfig, Settings
from gateway.news.service import NewsService
from gateway.nursery import supervise
from gateway.pubsub import EventBus
from gateway.storage import PageQuery, Storage, fts_query
from gateway.upstream import UpstreamClient
from tests.news.support import FakeScorer, news_provider
from tests.simulator.news import Story
from tests.simulator.rest import Fault, Simulator, run_simulator

ETF = "Bitcoin ETFs Log Record $1.1B Inflows as BTC Nears All-Time High"


@asynccontextmanager
async def news_side(
    storage: Storage, providers: list[ProviderConfig], scorer: FakeScorer | None = None
) -> AsyncIterator[NewsService]:
    """A NewsService and its collectors, each supervised as the gateway does."""
    service = NewsService(storage, EventBus(256), Settings(), scorer)
    restarts: dict[str, int] = {}
    async with UpstreamClient() as client, trio.open_nursery() as nursery:
        await nursery.start(service.run)
        for name, runner in service.runners(providers, client, lambda p: None, lambda p: True):
            nursery.start_soon(
                lambda n=name, r=runner: supervise(
                    n, r, initial_backoff=0.1, max_backoff=1, restarts=restarts
                )
            )
        yield service
        nursery.cancel_scope.cancel()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while not await check():
            await trio.sleep(0.05)


async def titles(service: NewsService) -> set[str]:
    return {a.title for a in await service.store.page(PageQuery(200))}


async def test_the_same_story_from_three_feeds_is_one_story_with_three_sources(
    running_storage: Storage,
) -> None:
    async with run_simulator() as sim:
        feeds = [news_provider(sim, f) for f in ("coindesk", "cointelegraph", "decrypt")]
        feeds.append(news_provider(sim, "reddit-cryptocurrency"))
        async with news_side(running_storage, feeds, FakeScorer()) as news:

            async def etf_has_every_source() -> bool:
                found = await news.store.page(PageQuery(5, search=fts_query("grayscale")))
                return len(found) == 1 and len(found[0].sources) == 4

            await until(etf_has_every_source)
            (story,) = await news.store.page(PageQuery(5, search=fts_query("grayscale")))
            everything = await news.store.page(PageQuery(200))
    assert [a.id for a in everything].count(story.id) == 1
    assert sum(1 for a in everything if "ETFs" in a.title and "1.1B" in a.title) == 1
    assert {s.source for s in story.sources} == {
        "coindesk",
        "cointelegraph",
        "decrypt",
        "reddit-cryptocurrency",  # its link post points at CoinDesk's article: the same URL
    }
    assert story.coins == ("BTC",)
    assert story.sentiment is not None and story.sentiment.label == "BULLISH"
    assert len(everything) == 3 + 2 + 1 + 2  # CoinDesk 3, Cointelegraph +2, Decrypt +1, Reddit +2


async def test_a_broken_or_hanging_feed_never_stops_the_others(running_storage: Storage) -> None:
    async with run_simulator() as sim:
        sim.inject("coindesk", Fault.hang())  # hangs until the client gives up, every time
        sim.news.serve_raw("cointelegraph", b"<html><body>Attention Required!</body></html>")
        sim.news.serve_raw("decrypt", "news_broken.xml")  # cut off mid-document
        providers = [
            news_provider(sim, "coindesk", timeout_seconds=0.5, interval_seconds=0.3),
            news_provider(sim, "cointelegraph"),
            news_provider(sim, "decrypt"),
            news_provider(sim, "theblock"),
            news_provider(sim, "beincrypto"),
        ]
        async with news_side(running_storage, providers) as news:

            async def others_are_in() -> bool:
                got = await titles(news)
                return {
                    "Cardano foundation publishes roadmap update",  # The Block
                    "Toncoin rallies after Telegram ad revenue news",  # BeInCrypto
                    "Bitcoin ETFs log record $1.1B inflows as BTC nears all-time high",  # cut doc
                } <= got

            await until(others_are_in)
            assert sim.hits["coindesk"] >= 1  # it was asked, and is still hanging or retrying
            sim.clear_faults("coindesk")
            published = datetime.now(UTC) - timedelta(minutes=1)
            story = Story("Kraken lists a new token", "https://www.coindesk.com/new", published)
            sim.news.publish("coindesk", story)

            async def coindesk_recovered() -> bool:
                return "Kraken lists a new token" in await titles(news)

            await until(coindesk_recovered, 15)  # after its backoff, the feed is back


async def test_fear_and_greed_is_backfilled_once_then_kept_current(
    running_storage: Storage,
) -> None:
    async with run_simulator() as sim:
        provider = news_provider(sim, "alternative-me", interval_seconds=0.2)
        sim.news.fng_until_update = 0  # do not sleep until tomorrow's value in a test
        async with news_side(running_storage, [provider]) as news:
            with news.fear_greed.bus.fear_greed.subscribe() as values:
                await until(lambda: _has_history(news, sim))
                first = await _next(values)
                sim.news.set_fear_greed(9)
                revised = await _next(values, lambda v: v.value == 9)
        asked = [params.get("limit") for p, _, params, _ in sim.requests if p == "alternative-me"]
    assert first.provider == "alternative-me"
    assert revised.classification == "Extreme Fear" and revised.at == first.at
    assert asked[0] == "0" and set(asked[1:]) == {"2"}  # the whole history once, then 2 days


async def _has_history(news: NewsService, sim: Simulator) -> bool:
    since = datetime.now(UTC) - timedelta(days=sim.news.fng_days + 1)
    return len(await news.store.fear_greed_since(since)) == sim.news.fng_days


async def _next(values: Any, check: Callable[[Any], bool] = lambda v: True) -> Any:
    with trio.fail_after(10):
        while True:
            value = await values.receive()
            if check(value):
                return value

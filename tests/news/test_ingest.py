"""The news path without the network: new stories stored once, scored in batches, published;
no model means `sentiment: null`, never a made-up score; a full scoring queue never holds up a
collector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from gateway.news.ingest import NewsIngest
from gateway.news_models import NewsItem, StoredArticle, StoredSentiment
from gateway.pubsub import EventBus
from gateway.storage import NewsStore, Storage
from tests.news.support import FakeScorer, FakeVerdict

NOW = datetime.now(UTC).replace(microsecond=0)


def item(n: int, title: str, source: str = "feed", minutes: int = 0) -> NewsItem:
    published = NOW - timedelta(minutes=60 - minutes)
    return NewsItem(source, title, f"https://news.example/{n}", published, f"Summary {n}.")


def ingest(storage: Storage, scorer: FakeScorer | None, score_queue: int = 8) -> NewsIngest:
    return NewsIngest(
        NewsStore(storage),
        EventBus(64),
        scorer,
        queue=4,
        score_queue=score_queue,
        summary_chars=500,
        window_seconds=48 * 3600,
    )


async def received(subscriber: object, count: int) -> list[StoredArticle]:
    got: list[StoredArticle] = []
    with trio.fail_after(5):
        while len(got) < count:
            got.append(await subscriber.receive())  # type: ignore[attr-defined]
    return got


async def test_new_stories_are_scored_stored_and_published(running_storage: Storage) -> None:
    scorer = FakeScorer()
    news = ingest(running_storage, scorer)
    async with trio.open_nursery() as nursery:
        await nursery.start(news.run)
        with news.bus.news.subscribe() as published:
            await news.publish(
                [
                    item(1, "Bitcoin ETFs see record inflows", minutes=1),
                    item(2, "Exchange drained in hack, funds fall", minutes=2),
                    item(3, "Bitcoin ETFs see record inflows", "other", 3),  # same story
                    item(4, "Developers meet on Thursday", minutes=4),
                ]
            )
            got = await received(published, 3)
        nursery.cancel_scope.cancel()
    assert [(a.title, a.sentiment.label if a.sentiment else None) for a in got] == [
        ("Bitcoin ETFs see record inflows", "BULLISH"),
        ("Exchange drained in hack, funds fall", "BEARISH"),
        ("Developers meet on Thursday", "NEUTRAL"),
    ]
    assert scorer.calls == [
        [
            "Bitcoin ETFs see record inflows. Summary 1.",
            "Exchange drained in hack, funds fall. Summary 2.",
            "Developers meet on Thursday. Summary 4.",
        ]
    ]  # one batch, title then summary
    stored = await news.store.articles([a.id for a in got])
    assert {a.sentiment for a in stored} == {a.sentiment for a in got}  # what went out is stored
    assert [s.source for s in stored[0].sources + stored[1].sources + stored[2].sources].count(
        "other"
    ) == 1
    assert news.counts["new"] == 3 and news.counts["merged"] == 1


async def test_without_a_model_stories_go_out_unscored_and_say_nothing_made_up(
    running_storage: Storage,
) -> None:
    scorer = FakeScorer(available=False, reason="model files missing")
    news = ingest(running_storage, scorer)
    async with trio.open_nursery() as nursery:
        await nursery.start(news.run)
        with news.bus.news.subscribe() as published:
            await news.publish([item(1, "Solana rallies on record volume")])
            (got,) = await received(published, 1)
        nursery.cancel_scope.cancel()
    assert got.sentiment is None
    (stored,) = await news.store.articles([got.id])
    assert stored.sentiment is None


async def test_a_verdict_out_of_range_is_not_kept(running_storage: Storage) -> None:
    class Broken(FakeScorer):
        async def score(self, texts: object) -> list[FakeVerdict | None]:  # type: ignore[override]
            return [FakeVerdict("MOON", 0.5, 0.9, "m"), FakeVerdict("BULLISH", 3.0, 0.9, "m")]

    news = ingest(running_storage, Broken())
    new = await news.ingest([item(1, "First headline here"), item(2, "Second headline there")])
    scored = await news.score(await news.store.articles(new))
    assert [a.sentiment for a in scored] == [None, None]


async def test_a_full_scoring_queue_never_holds_up_collectors(running_storage: Storage) -> None:
    class Stuck(FakeScorer):
        def __init__(self) -> None:
            super().__init__()
            self.release = trio.Event()

        async def score(self, texts: object) -> list[FakeVerdict | None]:  # type: ignore[override]
            await self.release.wait()
            return await super().score(texts)  # type: ignore[arg-type]

    scorer = Stuck()
    news = ingest(running_storage, scorer, score_queue=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(news.run)
        with news.bus.news.subscribe() as published:
            with trio.fail_after(5):  # the model answers nothing, yet every batch goes in
                for n in range(6):
                    await news.publish([item(n, f"Headline {n} about the market today")])
                while news.counts["new"] < 6:
                    await trio.sleep(0.01)
            # one batch with the model, one waiting for it: the others went out unscored
            early = published.drain()
            assert len(early) == 4 and all(a.sentiment is None for a in early)
            scorer.release.set()
            late = await received(published, 2)
        assert all(a.sentiment is not None for a in late)
        assert await news.rescore_backlog(10) == 4  # the ones that went out unscored
        nursery.cancel_scope.cancel()
    assert len({a.id for a in early + late}) == 6
    stored = await news.store.articles([a.id for a in early + late])
    assert all(isinstance(a.sentiment, StoredSentiment) for a in stored)

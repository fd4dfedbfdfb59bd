"""The path of a new article: normalise -> store once, with every source -> score -> publish.

Two tasks, joined by bounded channels, so that no stage can make memory grow and the model can
never hold up a collector:

    collectors --(news_queue batches)--> ingest task: normalise, store (dedup), new ones on
                                                      --(news_score_queue)--> scoring task:
                                                      score in batches, store the verdicts,
                                                      publish on bus.news

* `publish(items)` is what every news collector is given. It waits only while `news_queue`
  batches are already waiting to be stored (the database, not the model, is the only thing a
  collector can wait on).
* The ingest task stores each batch in one transaction (`NewsStore.add_articles` with
  `gateway.news.dedup.story_matcher`): a story already stored gains a source and is not news
  again.
  New stories go to the scoring task with `send_nowait`; when `news_score_queue` batches already
  wait for the model, or when there is no scorer at all, they are published at once with
  `sentiment` null (never a made-up score) and left for `rescore_backlog`.
* The scoring task hands the texts (title, ". ", summary) to the scorer (which batches them in
  its worker thread and makes the task wait while its own queue is full), stores each verdict,
  and publishes the scored stories.

Must never publish a story that is not committed (a subscriber may query it at once), invent a
sentiment, or let an unbounded queue form anywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Final, Protocol

import structlog
import trio

from gateway.errors import StorageError
from gateway.models import utc_now
from gateway.news.dedup import story_matcher
from gateway.news.normalise import normalise
from gateway.news_models import NewsItem, StoredArticle, StoredSentiment
from gateway.pubsub import EventBus
from gateway.storage import NewsStore
from gateway.vocabulary import SentimentLabel

__all__ = ["NewsIngest", "Scorer", "Verdict", "article_text"]

log = structlog.get_logger(__name__)

SENTIMENT_LABELS: Final = frozenset(SentimentLabel)
RESCORE_BATCH: Final = 32
DEFAULT_RANK: Final = 1


class Verdict(Protocol):
    """What the scorer says of one text (`gateway.news.sentiment.ArticleSentiment`)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def confidence(self) -> float: ...
    @property
    def model(self) -> str: ...


class Scorer(Protocol):
    """The sentiment model as the news path uses it (`gateway.news.sentiment.SentimentScorer`).

    `score` returns one verdict per text, None where it could not score one; it batches in a
    worker thread and waits for room in its own bounded queue.
    """

    @property
    def available(self) -> bool: ...
    @property
    def unavailable_reason(self) -> str | None: ...
    async def score(self, texts: Sequence[str]) -> Sequence[Verdict | None]: ...


def article_text(article: StoredArticle) -> str:
    """What the model reads of an article: its title, then its summary."""
    return f"{article.title}. {article.summary}" if article.summary else article.title


def _checked(verdict: Verdict | None) -> StoredSentiment | None:
    """A verdict as stored, or None when it is not a sane one (a label outside the three, a
    score outside -1..1): nothing questionable is kept as if the model had said it."""
    if verdict is None or verdict.label not in SENTIMENT_LABELS:
        return None
    score, confidence = float(verdict.score), float(verdict.confidence)
    if not (math.isfinite(score) and -1.0 <= score <= 1.0):
        return None
    if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        return None
    return StoredSentiment(verdict.label, score, confidence, verdict.model)


class NewsIngest:
    """The news path; start `run` in a nursery, give collectors `publish`."""

    def __init__(
        self,
        store: NewsStore,
        bus: EventBus,
        scorer: Scorer | None,
        *,
        queue: int,
        score_queue: int,
        summary_chars: int,
        window_seconds: float,
    ) -> None:
        self.store = store
        self.bus = bus
        self.scorer = scorer
        self.summary_chars = summary_chars
        self.window_ms = int(window_seconds * 1000)
        self.counts: Counter[str] = Counter()  # received, invalid, new, merged, scored, unscored
        # Each source's provider priority (lower: its title and link are a story's face).
        self.ranks: dict[str, int] = {}
        self._send, self._receive = trio.open_memory_channel[list[NewsItem]](queue)
        self._score_send, self._score_receive = trio.open_memory_channel[list[int]](score_queue)

    @property
    def scoring(self) -> bool:
        """Whether new articles go to the scorer: there is one, loaded or still loading (its
        `score` waits for the load, and answers None at once if none could be loaded)."""
        return self.scorer is not None

    async def publish(self, items: Sequence[NewsItem]) -> None:
        """Queue a collector's batch; waits only while `queue` batches are waiting already."""
        if items:
            await self._send.send(list(items))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Store and score forever (the two tasks of the module docstring)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._score_forever)
            task_status.started()
            async for batch in self._receive:
                try:
                    await self.ingest(batch)
                except StorageError as exc:  # a full disk loses this batch, not the path
                    self.counts["failed"] += len(batch)
                    log.error("news.store_failed", error=str(exc), articles=len(batch))
                except Exception as exc:  # a bug on one odd batch must not end the news path
                    self.counts["failed"] += len(batch)
                    log.error("news.ingest_failed", error=repr(exc), exc_info=exc)

    async def ingest(self, batch: Sequence[NewsItem]) -> list[int]:
        """Normalise and store one batch; hand on its new stories. Returns their ids."""
        seen_at = utc_now()
        self.counts["received"] += len(batch)
        articles = [
            replace(a, rank=self.ranks.get(a.source, DEFAULT_RANK))
            for item in batch
            if (a := normalise(item, seen_at, self.summary_chars))
        ]
        self.counts["invalid"] += len(batch) - len(articles)
        added = await self.store.add_articles(articles, story_matcher, self.window_ms)
        new = list(dict.fromkeys(a.id for a in added if a.new))
        self.counts["new"] += len(new)
        self.counts["merged"] += len(added) - len(new)
        if not new:
            return new
        if self.scoring:
            try:
                self._score_send.send_nowait(new)
                return new
            except trio.WouldBlock:
                log.warning("news.scoring_backlog_full", articles=len(new))
        await self._publish(await self.store.articles(new))
        return new

    async def _publish(self, articles: Sequence[StoredArticle]) -> None:
        """On the bus oldest first, so a subscriber sees the stream in publication order."""
        for article in sorted(articles, key=lambda a: (a.published_at, a.id)):
            if article.sentiment is None:
                self.counts["unscored"] += 1
            self.bus.news.publish(article)

    async def _score_forever(self) -> None:
        async for ids in self._score_receive:
            try:
                articles = await self.store.articles(ids)
            except StorageError as exc:  # stored but unreadable now: left for the backlog
                log.error("news.read_failed", error=str(exc), articles=len(ids))
                continue
            try:
                articles = await self.score(articles)
            except Exception as exc:  # the model or the store failed: the news still goes out
                log.error("news.scoring_failed", error=repr(exc), articles=len(ids))
            await self._publish(articles)

    async def score(self, articles: Sequence[StoredArticle]) -> list[StoredArticle]:
        """Score `articles` with the model and store each verdict; returns them with it."""
        if not articles or self.scorer is None:
            return list(articles)
        articles = sorted(articles, key=lambda a: (a.published_at, a.id))
        verdicts = await self.scorer.score([article_text(a) for a in articles])
        scored = [(a, _checked(v)) for a, v in zip(articles, verdicts, strict=False)]
        kept = [(a.id, s) for a, s in scored if s is not None]
        await self.store.set_sentiment(kept)
        self.counts["scored"] += len(kept)
        by_id = dict(kept)
        return [replace(a, sentiment=by_id.get(a.id, a.sentiment)) for a in articles]

    async def rescore_backlog(self, limit: int) -> int:
        """Score up to `limit` of the newest stored stories no model has scored (after a start
        without a model, or a full backlog); returns how many were scored."""
        if self.scorer is None:
            return 0
        backlog, done = await self.store.unscored(limit), 0
        for start in range(0, len(backlog), RESCORE_BATCH):
            scored = await self.score(backlog[start : start + RESCORE_BATCH])
            done += sum(1 for a in scored if a.sentiment is not None)
            if not self.scorer.available:  # the first batch waited for the load: it failed
                break
        return done

"""The news side of a running gateway: its store, ingest, Fear & Greed feed and collectors.

The supervisor (`gateway.nursery`) builds one `NewsService`, starts `run` (the ingest's tasks,
and once the model is up, scoring the stories stored while it was not), and starts each of
`runners()` under its restart policy: one per enabled, configured provider that
`gateway.sources.registry` gives a news or a Fear & Greed collector. A runner builds a fresh
collector per (re)start; a Fear & Greed collector is told the newest day already stored, so the
index's history is fetched once.

`model_status` is what the API reports when no sentiment model is loaded (`MODEL_UNAVAILABLE`
with the reason).

Must never start a collector for an UNCONFIGURED provider (its key is missing: it is never
called), or import the API or the supervisor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Final

import structlog
import trio

from gateway.config import ProviderConfig, Settings
from gateway.news.fear_greed import FearGreedFeed
from gateway.news.ingest import NewsIngest, Scorer
from gateway.news_models import FearGreedPoint, NewsItem
from gateway.pubsub import EventBus
from gateway.sources.news_base import FearGreedCollector, NewsCollector, RecordContext
from gateway.sources.registry import fear_greed_collector_for, news_collector_for
from gateway.storage import NewsStore, Storage
from gateway.upstream import UpstreamClient

__all__ = ["BACKLOG_RESCORED", "NO_MODEL", "NewsService", "Runner"]

log = structlog.get_logger(__name__)

Runner = tuple[str, Callable[[], Awaitable[object]]]
# Stories stored without a sentiment that are scored once a model is up (newest first).
BACKLOG_RESCORED: Final = 2_000
NO_MODEL: Final = "no sentiment model is configured"


class NewsService:
    """Everything news for one gateway: see the module docstring."""

    def __init__(
        self, storage: Storage, bus: EventBus, settings: Settings, scorer: Scorer | None = None
    ) -> None:
        self.store = NewsStore(storage)
        self.scorer = scorer
        self.ingest = NewsIngest(
            self.store,
            bus,
            scorer,
            queue=settings.news_queue,
            score_queue=settings.news_score_queue,
            summary_chars=settings.news_summary_chars,
            window_seconds=settings.news_dedup_window_hours * 3600,
        )
        self.fear_greed = FearGreedFeed(self.store, bus)

    @property
    def model_status(self) -> tuple[bool, str | None]:
        """(True, None) while a model scores articles, else (False, why not)."""
        if self.scorer is None:
            return False, NO_MODEL
        if not self.scorer.available:
            return False, self.scorer.unavailable_reason or "the sentiment model is not loaded"
        return True, None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The ingest's tasks, and the backlog of unscored stories once; until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.ingest.run)
            nursery.start_soon(self._rescore_backlog)
            task_status.started()

    async def _rescore_backlog(self) -> None:
        """Score what was stored without a model, once; a failure is logged, never fatal."""
        try:
            scored = await self.ingest.rescore_backlog(BACKLOG_RESCORED)
        except Exception as exc:
            log.error("news.rescore_failed", error=repr(exc), exc_info=exc)
        else:
            if scored:
                log.info("news.backlog_scored", articles=scored)

    def runners(
        self,
        providers: Iterable[ProviderConfig],
        client: UpstreamClient,
        key_for: Callable[[ProviderConfig], str | None],
        is_configured: Callable[[ProviderConfig], bool],
    ) -> list[Runner]:
        """(task name, runner) for each provider with a news or Fear & Greed collector."""
        runners: list[Runner] = []
        for provider in providers:
            if not provider.enabled or not is_configured(provider):
                continue  # UNCONFIGURED: never called
            key = key_for(provider)
            news_class = news_collector_for(provider)
            if news_class is not None:
                self.ingest.ranks[provider.id] = provider.priority
                runner = partial(self._run_news, news_class, provider, client, key)
                runners.append((f"news:{provider.id}", runner))
            index_class = fear_greed_collector_for(provider)
            if index_class is not None:
                runner = partial(self._run_fear_greed, index_class, provider, client, key)
                runners.append((f"fear-greed:{provider.id}", runner))
        return runners

    async def _run_news(
        self,
        collector_class: type[NewsCollector],
        provider: ProviderConfig,
        client: UpstreamClient,
        key: str | None,
    ) -> None:
        context = RecordContext[NewsItem](provider, client, self.ingest.publish, key)
        await collector_class(context).run()

    async def _run_fear_greed(
        self,
        collector_class: type[FearGreedCollector],
        provider: ProviderConfig,
        client: UpstreamClient,
        key: str | None,
    ) -> None:
        newest = await self.fear_greed.newest(provider.id)
        context = RecordContext[FearGreedPoint](
            provider, client, self.fear_greed.publish, key, newest=newest
        )
        await collector_class(context).run()

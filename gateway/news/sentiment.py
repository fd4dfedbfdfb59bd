"""Sentiment scoring for the running gateway: a transformer model behind a bounded queue, scored
in batches in a worker thread, so the event loop never waits on it.

`SentimentScorer.run` is owned by the service nursery (`await nursery.start(scorer.run)`): it
reports started at once, loads the model in a worker thread (seconds; `available` stays False
with the reason "still loading" meanwhile), then serves `score` forever:

    score(texts) --(jobs of <= batch texts; queue of `queue` jobs: a full queue makes callers
                    wait, never memory grow)--> run: one batch at a time (jobs merged up to
                    `batch` texts) in a worker thread --> each caller's results

When no model can be loaded (`sentiment_model` "off", missing files, a hub id not cached while
offline, labels it cannot map), `available` is False for good, `unavailable_reason` says why,
and `score` answers None for every text: articles keep `sentiment: null` and the API says
MODEL_UNAVAILABLE with the reason. A batch the model fails on is answered None too (and
logged); the next batch is tried afresh.

Must never: block the event loop (loading and inference run in a worker thread, one batch at a
time, torch limited to `threads` threads), let its queue grow without bound, or return a
verdict the model did not give.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import structlog
import trio

from gateway.news.sentiment_model import (
    EMBEDDED,
    OFF,
    ArticleSentiment,
    ModelLoadError,
    SentimentModel,
    default_threads,
    load_model,
)

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["LOADING", "ArticleSentiment", "SentimentScorer"]

log = structlog.get_logger(__name__)

LOADING: Final = "the sentiment model is still loading"

Loader = Callable[[str, int], SentimentModel]


@dataclass(eq=False)
class _Job:
    """Up to `batch` texts of one caller, and where their verdicts go."""

    texts: list[str]
    done: trio.Event = field(default_factory=trio.Event)
    results: list[ArticleSentiment | None] = field(default_factory=list)


class SentimentScorer:
    """Scores texts with the configured model; see the module docstring.

    `available`: a model is loaded and scoring. `unavailable_reason`: why not (None when
    available). `state`: "loading", "ready" or "unavailable", for readiness and logs.
    `scored`, `failed`, `batches`: counts since start.
    """

    def __init__(
        self,
        model: str = EMBEDDED,
        *,
        batch: int = 32,
        queue: int = 64,
        threads: int = 0,
        max_chars: int = 2000,
        loader: Loader = load_model,
    ) -> None:
        if batch < 1 or queue < 1 or max_chars < 1:
            raise ValueError("batch, queue and max_chars must be at least 1")
        self.spec = model.strip() or EMBEDDED
        self.batch = batch
        self.threads = threads if threads > 0 else default_threads()
        self.max_chars = max_chars
        self.available = False
        self.unavailable_reason: str | None = LOADING
        self.model_name: str | None = None
        self.loaded = trio.Event()  # set when loading ended, with a model or without
        self.load_seconds: float | None = None
        self.scored = self.failed = self.batches = 0
        self._loader = loader
        self._model: SentimentModel | None = None
        self._send, self._receive = trio.open_memory_channel[_Job](queue)
        self._worker = trio.CapacityLimiter(1)

    @classmethod
    def from_settings(cls, settings: Settings, loader: Loader = load_model) -> SentimentScorer:
        return cls(
            settings.sentiment_model,
            batch=settings.sentiment_batch,
            queue=settings.sentiment_queue,
            threads=settings.sentiment_threads,
            max_chars=settings.sentiment_max_chars,
            loader=loader,
        )

    @property
    def enabled(self) -> bool:
        """False when sentiment is configured off (then it is never available)."""
        return self.spec != OFF

    @property
    def state(self) -> str:
        if self.available:
            return "ready"
        return "loading" if not self.loaded.is_set() else "unavailable"

    async def score(self, texts: Sequence[str]) -> list[ArticleSentiment | None]:
        """One verdict per text (each cut to `max_chars`), None where none could be given.

        Waits while the queue is full (backpressure) and while the model loads; answers at
        once, all None, when no model could be loaded.
        """
        if not texts:
            return []
        if self.loaded.is_set() and not self.available:
            return [None] * len(texts)
        jobs = [
            _Job([text[: self.max_chars] for text in texts[start : start + self.batch]])
            for start in range(0, len(texts), self.batch)
        ]
        for job in jobs:
            await self._send.send(job)
        results: list[ArticleSentiment | None] = []
        for job in jobs:
            await job.done.wait()
            results += job.results
        return results

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the model, then score queued jobs one batch at a time, until cancelled."""
        task_status.started()
        await self._load()
        async with self._receive:
            async for first in self._receive:
                jobs, size = [first], len(first.texts)
                while size < self.batch:  # merge what is already waiting, up to one batch
                    try:
                        job = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    jobs.append(job)
                    size += len(job.texts)
                await self._score_jobs(jobs)

    async def _load(self) -> None:
        began = time.monotonic()
        try:
            self._model = await trio.to_thread.run_sync(
                self._loader, self.spec, self.threads, abandon_on_cancel=True
            )
        except ModelLoadError as exc:
            self.unavailable_reason = str(exc)
            log.warning("sentiment.unavailable", model=self.spec, reason=self.unavailable_reason)
        except Exception as exc:
            self.unavailable_reason = f"the sentiment model failed to load: {exc!r}"
            log.error("sentiment.load_failed", model=self.spec, error=repr(exc), exc_info=exc)
        else:
            self.available = True
            self.unavailable_reason = None
            self.model_name = self._model.name
        self.load_seconds = time.monotonic() - began
        if self.available:
            log.info(
                "sentiment.ready",
                model=self.model_name,
                threads=self.threads,
                seconds=round(self.load_seconds, 2),
            )
        self.loaded.set()

    async def _score_jobs(self, jobs: list[_Job]) -> None:
        """One batch in the worker thread; every job is answered, whatever happens."""
        texts = [text for job in jobs for text in job.texts]
        verdicts: list[ArticleSentiment | None] = [None] * len(texts)
        try:
            if self._model is not None:
                model = self._model
                # Abandoned on cancel: a shutdown need not wait for the batch in flight.
                given = await trio.to_thread.run_sync(
                    model.predict, texts, abandon_on_cancel=True, limiter=self._worker
                )
                if len(given) != len(texts):
                    raise ValueError(f"{len(given)} verdicts for {len(texts)} texts")
                verdicts = list(given)
                self.scored += len(texts)
                self.batches += 1
        except Exception as exc:
            self.failed += len(texts)
            log.error("sentiment.batch_failed", texts=len(texts), error=repr(exc), exc_info=exc)
        finally:
            position = 0
            for job in jobs:
                job.results = verdicts[position : position + len(job.texts)]
                position += len(job.texts)
                job.done.set()

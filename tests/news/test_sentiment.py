"""The sentiment scorer of a running gateway (gateway/news/sentiment.py).

Most tests hand the scorer a fake model through its `loader`, so they are quick and can hold
a batch in the worker thread as long as they like: what is tested is the queue, the batching,
the worker thread and the unavailable path. The real embedded model is loaded once per test
process (gateway.news.sentiment_model caches it) for the tests of what it says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from gateway.config import Settings
from gateway.news.sentiment import LOADING, ArticleSentiment, SentimentScorer
from gateway.news.sentiment_model import EMBEDDED, ModelLoadError, SentimentModel

OBVIOUS = [
    ("Bitcoin soars to a new all-time high as ETF buyers rush in", "BULLISH"),
    ("Ether rallies 15% after landmark approval", "BULLISH"),
    ("Solana plunges 20% after hackers drain a major DeFi protocol", "BEARISH"),
    ("Exchange collapses into bankruptcy, customer withdrawals frozen", "BEARISH"),
    ("What is a crypto wallet? A beginner's guide", "NEUTRAL"),
    ("Blockchain foundation announces the dates of its annual developer conference", "NEUTRAL"),
]


class FakeModel:
    """Says BULLISH with score 0.5 for every text; `gate` (if given) holds each batch in the
    worker thread until set; `sleep` makes each batch take that long; `fail` raises."""

    name = "fake"

    def __init__(
        self, gate: threading.Event | None = None, sleep: float = 0.0, fail: bool = False
    ) -> None:
        self.gate = gate
        self.sleep = sleep
        self.fail = fail
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()

    def predict(self, texts: Sequence[str]) -> list[ArticleSentiment]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(texts))
        if self.gate is not None:
            assert self.gate.wait(10), "the test never released the batch"
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("the model broke")
        return [ArticleSentiment("BULLISH", 0.5, 0.75, self.name) for _ in texts]


def loader_of(model: SentimentModel) -> object:
    return lambda spec, threads: model


async def test_scores_in_a_worker_thread_and_answers_each_caller_in_order() -> None:
    model = FakeModel()
    scorer = SentimentScorer(batch=4, queue=4, loader=loader_of(model))  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.loaded.wait()
            assert scorer.available and scorer.state == "ready" and scorer.model_name == "fake"
            verdicts = await scorer.score([f"headline {i}" for i in range(10)])
            nursery.cancel_scope.cancel()
    assert [v.label if v else None for v in verdicts] == ["BULLISH"] * 10
    assert all(len(batch) <= 4 for batch in model.batches)
    assert [t for batch in model.batches for t in batch] == [f"headline {i}" for i in range(10)]
    assert threading.get_ident() not in model.threads  # never on the event loop's thread


async def test_concurrent_callers_share_batches() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    scorer = SentimentScorer(batch=8, queue=16, loader=loader_of(model))  # type: ignore[arg-type]
    results: dict[int, list[ArticleSentiment | None]] = {}

    async def caller(i: int) -> None:
        results[i] = await scorer.score([f"story {i}"])

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.loaded.wait()
            nursery.start_soon(caller, 0)
            while not model.batches:  # the first batch is in the worker thread, held
                await trio.sleep(0.01)
            for i in range(1, 9):
                nursery.start_soon(caller, i)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
            while len(results) < 9:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    # The eight that queued behind the first batch went to the model as one batch.
    assert [len(batch) for batch in model.batches] == [1, 8]
    assert all(r[0] is not None for r in results.values())


async def test_a_full_queue_makes_callers_wait_instead_of_growing() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    scorer = SentimentScorer(batch=1, queue=2, loader=loader_of(model))  # type: ignore[arg-type]
    done: list[int] = []

    async def caller(i: int) -> None:
        await scorer.score([f"story {i}"])
        done.append(i)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.loaded.wait()
            for i in range(10):
                nursery.start_soon(caller, i)
            while not model.batches:
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()
            stats = scorer._send.statistics()
            # One batch in the model, two queued, the other seven callers waiting to send.
            assert (stats.current_buffer_used, stats.tasks_waiting_send) == (2, 7)
            assert done == []
            gate.set()
            while len(done) < 10:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert len(model.batches) == 10


async def test_scoring_never_stalls_the_event_loop() -> None:
    """Each batch takes 0.3 s in the model; a task that sleeps 1 ms in a loop never waits
    anywhere near that long (run on the event loop, each batch would stall it 0.3 s)."""
    model = FakeModel(sleep=0.3)
    scorer = SentimentScorer(batch=2, queue=2, loader=loader_of(model))  # type: ignore[arg-type]
    worst = 0.0
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.loaded.wait()

            async def ticker() -> None:
                nonlocal worst
                while True:
                    before = time.perf_counter()
                    await trio.sleep(0.001)
                    worst = max(worst, time.perf_counter() - before)

            nursery.start_soon(ticker)
            await scorer.score([f"story {i}" for i in range(8)])
            nursery.cancel_scope.cancel()
    assert len(model.batches) == 4
    assert worst < 0.15


async def test_texts_are_cut_to_max_chars() -> None:
    model = FakeModel()
    scorer = SentimentScorer(max_chars=10, loader=loader_of(model))  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.score(["x" * 50, "short"])
            nursery.cancel_scope.cancel()
    assert model.batches == [["x" * 10, "short"]]


async def test_a_failing_batch_is_answered_none_and_the_next_is_scored() -> None:
    model = FakeModel(fail=True)
    scorer = SentimentScorer(batch=2, loader=loader_of(model))  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            assert await scorer.score(["a", "b"]) == [None, None]
            model.fail = False
            again = await scorer.score(["c"])
            nursery.cancel_scope.cancel()
    assert again[0] is not None and again[0].label == "BULLISH"
    assert scorer.failed == 2 and scorer.scored == 1


async def test_while_loading_it_is_unavailable_and_callers_wait_for_the_model() -> None:
    release = threading.Event()
    model = FakeModel()

    def slow_loader(spec: str, threads: int) -> SentimentModel:
        assert release.wait(10)
        return model

    scorer = SentimentScorer(loader=slow_loader)
    answer: list[ArticleSentiment | None] = []

    async def caller() -> None:
        answer.extend(await scorer.score(["early story"]))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            assert (scorer.available, scorer.state, scorer.unavailable_reason) == (
                False,
                "loading",
                LOADING,
            )
            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            assert answer == []
            release.set()
            await scorer.loaded.wait()
            while not answer:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert scorer.available and answer[0] is not None


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("off", "sentiment scoring is off"),
        ("/nonexistent/model/dir", "cannot load the sentiment model '/nonexistent/model/dir'"),
    ],
)
async def test_no_model_means_unavailable_with_the_reason_and_no_scores(
    spec: str, reason: str
) -> None:
    scorer = SentimentScorer.from_settings(Settings(sentiment_model=spec, sentiment_threads=1))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.loaded.wait()
            verdicts = await scorer.score(["Bitcoin soars to a record"])
            nursery.cancel_scope.cancel()
    assert not scorer.available and scorer.state == "unavailable"
    assert scorer.unavailable_reason is not None and reason in scorer.unavailable_reason
    assert verdicts == [None]


async def test_a_loader_that_raises_anything_is_a_reason_not_a_crash() -> None:
    def broken(spec: str, threads: int) -> SentimentModel:
        raise ModelLoadError("the head does not fit")

    scorer = SentimentScorer(loader=broken)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.loaded.wait()
            assert await scorer.score(["x"]) == [None]
            nursery.cancel_scope.cancel()
    assert scorer.unavailable_reason == "the head does not fit"


async def test_the_embedded_model_scores_obvious_headlines_right() -> None:
    scorer = SentimentScorer(EMBEDDED, threads=1)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(scorer.run)
            await scorer.loaded.wait()
            assert scorer.available, scorer.unavailable_reason
            verdicts = await scorer.score([text for text, _ in OBVIOUS])
            nursery.cancel_scope.cancel()
    assert [v.label if v else None for v in verdicts] == [label for _, label in OBVIOUS]
    for verdict in verdicts:
        assert verdict is not None and verdict.model == "all-MiniLM-L6-v2+head"
        assert -1.0 <= verdict.score <= 1.0 and 1 / 3 <= verdict.confidence <= 1.0
    assert verdicts[0] is not None and verdicts[0].score > 0.3
    assert verdicts[2] is not None and verdicts[2].score < -0.3

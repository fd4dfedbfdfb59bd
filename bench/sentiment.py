"""Sentiment scoring end to end inside a running gateway: headlines per second, the event loop's
longest stall while scoring, and the gateway's RSS with the model loaded.

One process runs the real gateway as `gateway serve` does (`gateway.nursery.run_gateway`:
temporary database, no providers, HTTP on a loopback port, the sentiment model as configured:
the embedded default unless `--model`) and waits until its model is loaded. Then:

* a ticker task on the gateway's event loop sleeps 1 ms in a loop and records how long each
  sleep really took, first for `--idle` seconds with nothing to do (the machine's own noise),
  then while scoring;
* `--callers` tasks hand the scorer (`services.sentiment.score`, the call the news ingest
  makes) chunks of 32 headlines until `--headlines` are scored: the labelled headlines of
  gateway/data/sentiment/, repeated and shuffled. Throughput is headlines / wall time from the
  first chunk handed over to the last verdict back (queue, batching, worker thread, tokenizer,
  encoder, head);
* every cyclic GC collection while scoring is timed (a collection stops the event loop too);
* RSS (VmRSS) is read before the gateway starts, once it serves with the model loaded, and
  the peak (VmHWM) after scoring.

The machine's other load shows in both figures: the idle ticker line says how much.

    .venv/bin/python bench/sentiment.py                    # the embedded model, default threads
    .venv/bin/python bench/sentiment.py --threads 2        # torch on both cores
    .venv/bin/python bench/sentiment.py --model off        # the gateway's RSS without a model
    .venv/bin/python bench/sentiment.py --switch-interval 0.001   # the GIL handed over sooner

Targets (issue 11): >= 200 headlines/s on 2 cores, longest stall < 20 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import ProvidersFile, Settings
from gateway.nursery import run_gateway

DATA = Path(__file__).resolve().parents[1] / "gateway" / "data" / "sentiment"
CHUNK = 32


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def headlines(count: int, seed: int = 11) -> list[str]:
    texts = [
        json.loads(line)["text"]
        for name in ("train.jsonl", "heldout.jsonl")
        for line in (DATA / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rng = random.Random(seed)
    picked = []
    while len(picked) < count:
        rng.shuffle(texts)
        picked += texts
    return picked[:count]


class GcWatch:
    """Every cyclic collection while scoring: (generation, ms). A collection stops every
    thread, the event loop's included, so a long one is a stall the ticker sees."""

    def __init__(self) -> None:
        self.collections: list[tuple[int, float]] = []
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.collections.append(
                (info["generation"], (time.perf_counter() - self._began) * 1000)
            )

    def take(self) -> str:
        found, self.collections = self.collections, []
        per = [sum(1 for g, _ in found if g == gen) for gen in range(3)]
        longest = max((ms for _, ms in found), default=0.0)
        return f"{per[0]}/{per[1]}/{per[2]} collections (gen 0/1/2), longest {longest:.1f} ms"


class Ticker:
    """Sleeps 1 ms in a loop and keeps how long each sleep took (ms)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await trio.sleep(0.001)
            self.gaps.append((time.perf_counter() - before) * 1000)

    def take(self) -> list[float]:
        gaps, self.gaps = self.gaps, []
        return gaps


def describe(gaps: list[float]) -> str:
    if not gaps:
        return "no samples"
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"longest {max(gaps):.1f} ms, p99 {p99:.1f} ms, median {statistics.median(gaps):.2f} ms"
        f" ({len(gaps)} sleeps of 1 ms)"
    )


async def bench(args: argparse.Namespace) -> None:
    print(f"cores: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})")
    before = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            port=0,
            db_path=Path(tmp) / "bench.db",
            log_level="warning",
            sentiment_model=args.model,
            sentiment_threads=args.threads,
        ).validated()
        async with trio.open_nursery() as nursery:
            # As `gateway serve` runs it: run_gateway also applies the GC policy, and freezes
            # the model once it is loaded (gateway/gc_tuning.py).
            running = await nursery.start(run_gateway, settings, ProvidersFile(()))
            gateway = running.gateway
            scorer = running.services.sentiment
            assert scorer is not None
            began = time.monotonic()
            with trio.fail_after(300):
                await scorer.loaded.wait()
            print(
                f"model: {scorer.model_name or args.model} ({scorer.state}"
                f"{': ' + scorer.unavailable_reason if scorer.unavailable_reason else ''}),"
                f" torch threads {scorer.threads}, loaded in {time.monotonic() - began:.1f} s"
            )
            loaded = rss_mib()
            what = "with the model loaded" if scorer.available else "without a model"
            print(f"RSS: {before:.0f} MiB before the gateway; {loaded:.0f} MiB serving {what}")
            await trio.sleep(0.1)  # the freeze task runs once the model is loaded
            if scorer.available:
                await score(scorer, args, nursery)
                print(f"RSS peak (VmHWM) after scoring: {rss_mib('VmHWM'):.0f} MiB")
            gateway.shutdown.set()
            with trio.fail_after(10):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


async def score(scorer: object, args: argparse.Namespace, nursery: trio.Nursery) -> None:
    from gateway.news.sentiment import SentimentScorer

    assert isinstance(scorer, SentimentScorer)
    texts = headlines(args.headlines)
    await scorer.score(texts[:CHUNK])  # warm-up: first-call allocations
    ticker, collector = Ticker(), GcWatch()
    nursery.start_soon(ticker.run)
    await trio.sleep(args.idle)
    idle = ticker.take()
    collector.take()
    chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
    labels: dict[str, int] = {}

    async def caller(mine: list[list[str]]) -> None:
        for chunk in mine:
            for verdict in await scorer.score(chunk):
                key = verdict.label if verdict else "unscored"
                labels[key] = labels.get(key, 0) + 1

    cpu0, began = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as callers:
        for k in range(args.callers):
            callers.start_soon(caller, chunks[k :: args.callers])
    took, cpu = time.perf_counter() - began, time.process_time() - cpu0
    busy = ticker.take()
    rate = len(texts) / took
    print(
        f"scored {len(texts)} headlines in {took:.2f} s: {rate:.0f} headlines/s end to end"
        f" ({args.callers} callers, chunks of {CHUNK}, batches of {scorer.batch});"
        f" process CPU {cpu / took:.2f} cores; labels {dict(sorted(labels.items()))}"
    )
    print(f"event loop idle:         {describe(idle)}")
    print(f"event loop while scoring: {describe(busy)}")
    print(f"GC while scoring: {collector.take()}; still tracked: {len(gc.get_objects())} objects")
    stall = max(busy) - 1.0 if busy else float("nan")
    print(
        f"targets: >= 200 headlines/s: {'met' if rate >= 200 else 'NOT met'}"
        f" ({rate:.0f}); longest stall < 20 ms: {'met' if stall < 20 else 'NOT met'}"
        f" ({stall:.1f} ms beyond the 1 ms sleep)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="embedded | off | id | directory")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: automatic)")
    parser.add_argument("--headlines", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle ticker first")
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval (default: Python's 5 ms)"
    )
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    trio.run(bench, args)


if __name__ == "__main__":
    main()

"""How long a big DefiLlama /protocols body stops the event loop, decoded three ways.

    python bench/large_body.py [--protocols 6000] [--runs 15] [--gc product|default]

Builds `--protocols` synthetic protocols shaped like tests/simulator/fixtures/
defillama_protocols.json (DefiLlama's /protocols listed ~6,000 protocols, 5-10 MB, in 2025),
then, inside `trio.run`, decodes + parses (`parse_protocols`) it while a ticker task sleeps
1 ms at a time and records the longest gap between its wake-ups (the loop stall):

    inline             json.loads + parse on the event loop (the old path)
    thread             json.loads + parse in trio.to_thread (json.loads keeps the GIL)
    thread, in pieces  what the upstream client does for bodies >= LARGE_BODY_BYTES: the
                       array decoded element by element, then parsed, in a worker thread

Prints, per way, the median total time and the median and worst loop stall (ms). `--gc
product` applies gateway.gc_tuning.tune_gc() first, as `gateway serve` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.gc_tuning import tune_gc  # noqa: E402
from gateway.sources.defillama import parse_protocols  # noqa: E402
from gateway.upstream.decoding import decode_in_pieces  # noqa: E402
from tests.simulator import synthetic_protocols_body  # noqa: E402


async def measure(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(total ms, longest ticker gap ms) while `work` runs."""
    gaps: list[float] = []
    done = trio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await trio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now - last) * 1000)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.05)
        began = time.perf_counter()
        await work()
        took = (time.perf_counter() - began) * 1000
        done.set()
    return took, max(gaps)


async def main(body: bytes, runs: int) -> None:
    async def inline() -> object:
        return parse_protocols(json.loads(body))

    async def thread() -> object:
        return await trio.to_thread.run_sync(lambda: parse_protocols(json.loads(body)))

    async def pieces() -> object:
        return await trio.to_thread.run_sync(lambda: parse_protocols(decode_in_pieces(body)))

    for name, work in (("inline", inline), ("thread", thread), ("thread, in pieces", pieces)):
        results = [await measure(work) for _ in range(runs)]
        totals = [r[0] for r in results]
        stalls = [r[1] for r in results]
        print(
            f"{name:18s} total {statistics.median(totals):6.1f} ms   loop stall median "
            f"{statistics.median(stalls):6.1f} ms, worst {max(stalls):6.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocols", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--gc", choices=("product", "default"), default="product")
    args = parser.parse_args()
    body = synthetic_protocols_body(args.protocols)
    if args.gc == "product":
        tune_gc()
    print(f"{args.protocols} protocols, {len(body) / 1e6:.2f} MB, gc {args.gc}")
    trio.run(main, body, args.runs)

"""The GC policy of a served gateway (gateway/gc_tuning.py, applied by gateway.nursery.run_gateway).

The sentiment model loads after start-up, in a worker thread, and brings ~380,000 objects with
torch and transformers; unfrozen, each full collection walks them all with the event loop
stopped (~150 ms). The test runs `run_gateway` as `gateway serve` does, in its own interpreter
(the policy is process-wide), and counts what the collector still sees once the model is up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import gc, sys, tempfile
    from pathlib import Path
    import trio
    from gateway.config import ProvidersFile, Settings
    from gateway.nursery import run_gateway

    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                port=0, db_path=Path(tmp) / "g.db", sentiment_model="embedded",
                sentiment_threads=1,
            ).validated()
            async with trio.open_nursery() as nursery:
                running = await nursery.start(run_gateway, settings, ProvidersFile(()))
                scorer = running.services.sentiment
                with trio.fail_after(120):
                    await scorer.loaded.wait()
                assert scorer.available, scorer.unavailable_reason
                await trio.sleep(0.2)
                print("tracked", len(gc.get_objects()), "frozen", gc.get_freeze_count())
                running.gateway.shutdown.set()
                with trio.fail_after(10):
                    await running.gateway.stopped.wait()
                nursery.cancel_scope.cancel()

    trio.run(main)
    """
)


def test_the_loaded_model_is_frozen_out_of_the_collectors_sight() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GATEWAY_LOG_LEVEL": "warning"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    tracked, frozen = int(words[words.index("tracked") + 1]), int(words[words.index("frozen") + 1])
    assert frozen > 300_000  # the model's objects
    assert tracked < 100_000  # what a full collection still walks

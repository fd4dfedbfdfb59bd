"""`gateway backfill` (gateway/prices/backfill.py, gateway/cli.py) against the upstream simulator: the
core in-process, and the real command in a subprocess."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from gateway.config import load_providers
from gateway.prices.backfill import (
    BackfillResult,
    ProgressBar,
    backfill,
    market_providers,
    nothing_stored_reason,
    open_history,
)
from gateway.prices.history import CandleHistory
from gateway.providers.upstream_keys import Secrets
from gateway.storage import Storage
from gateway.store.candles import CandleStore
from gateway.upstream import UpstreamClient
from tests.simulator.rest import API_KEYS, Fault, Simulator, run_simulator

REPO = Path(__file__).resolve().parents[2]
# A fixed end in the past, so two runs cover exactly the same closed range.
UNTIL = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 3600 * 3600 - 3600, UTC)


@pytest.fixture
def storage(running_storage: Storage) -> Storage:
    return running_storage


def klines(sim: Simulator) -> int:
    return sum(1 for p, path, _, _ in sim.requests if p == "binance" and path.endswith("/klines"))


async def test_backfill_twice_stores_nothing_twice(storage: Storage) -> None:
    async with run_simulator() as sim, UpstreamClient() as client:
        history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
        start = UNTIL - timedelta(days=2)
        with trio.fail_after(20):
            first = await backfill(history, "BTC", 60, start, UNTIL)
        assert first.inserted == 2 * 24 * 60 and first.missing == [] and not first.errors
        assert first.slices == 3 and first.requests == 3  # 1,000 minutes a slice and request
        rows = await CandleStore(storage).count()
        asked = klines(sim)

        with trio.fail_after(10):
            second = await backfill(history, "BTC", 60, start, UNTIL)
        assert second.inserted == 0 and second.requests == 0 and second.slices_held == 3
        assert await CandleStore(storage).count() == rows
        assert klines(sim) == asked


async def test_an_interrupted_backfill_resumes_where_it_stopped(storage: Storage) -> None:
    async with run_simulator() as sim, UpstreamClient() as client:
        history = CandleHistory(storage, client, lambda: [sim.provider("binance")])
        start = UNTIL - timedelta(days=2)
        with trio.fail_after(20):
            # the first slice succeeds, then the provider fails: what was stored stays
            sim.inject("binance", Fault.latency(0, times=1))
            sim.inject("binance", Fault.status(500))
            broken = await backfill(history, "BTC", 60, start, UNTIL)
        assert broken.inserted == 1000 and broken.errors and broken.missing
        sim.clear_faults("binance")
        # a rerun is a new process: a fresh client, whose breaker has not seen the failures
        async with UpstreamClient() as fresh:
            again = CandleHistory(storage, fresh, lambda: [sim.provider("binance")])
            with trio.fail_after(20):
                resumed = await backfill(again, "BTC", 60, start, UNTIL)
        assert resumed.inserted == 2 * 24 * 60 - 1000 and resumed.missing == []
        assert resumed.slices_held == 1  # the slice stored before the failure is not asked again


async def test_open_history_hands_each_fetcher_its_configured_key(storage: Storage) -> None:
    secrets = Secrets({"CRYPTOCOMPARE_API_KEY": API_KEYS["cryptocompare"]})
    async with run_simulator() as sim, UpstreamClient() as client:
        providers = [sim.provider("cryptocompare")]
        history = await open_history(storage, client, providers, key_for=secrets.key_for)
        with trio.fail_after(10):
            result = await backfill(history, "BTC", 3600, UNTIL - timedelta(days=1), UNTIL)
        assert result.inserted == 24 and not result.errors and result.missing == []


def test_the_progress_bar_prints_the_first_step_and_each_tenth_on_a_pipe() -> None:
    out = io.StringIO()
    bar = ProgressBar("BTC M1", 20, stream=out)
    for done in range(1, 21):
        bar.update(done, "x")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("BTC M1 [" + "#" * 30 + "] 100% 20/20")


def test_market_providers_follow_pool_order_and_skip_unconfigured() -> None:
    file = load_providers(REPO / "providers.toml")
    ids = [p.id for p in market_providers(file, Secrets({}))]
    assert ids[:2] == ["coingecko", "binance"] and "coinmarketcap" not in ids  # key needed


# -- the command ----------------------------------------------------------------------------------


def providers_toml(sim: Simulator, path: Path) -> Path:
    path.write_text(
        f'[[provider]]\nid = "binance"\ncategory = "MARKET_DATA"\n'
        f'base_url = "{sim.base_url("binance")}"\ntimeout_seconds = 2\n'
    )
    return path


async def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "gateway", *args],
            cwd=REPO,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "GATEWAY_LOG_FORMAT": "json"},
        )


async def test_the_backfill_command_twice_leaves_the_same_row_count(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    async with run_simulator() as sim:
        providers = providers_toml(sim, tmp_path / "providers.toml")
        common = ["--db", str(db), "--providers", str(providers), "--until", UNTIL.isoformat()]
        first = await gateway("backfill", "--symbol", "eth", "--days", "3", *common, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert b"stored 72 candles in 1 requests" in first.stdout
        assert b"ETH H1 [" + b"#" * 30 + b"] 100%" in first.stderr
        rows = sqlite3.connect(db).execute("SELECT count(*) FROM upstream_candles").fetchone()[0]
        assert rows == 72

        again = await gateway("backfill", "--symbol", "ETH", "--days", "3", *common, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert b"stored 0 candles in 0 requests; 1 of 1 slices were already held" in again.stdout
        # The bar reaches 100 % of slices checked; the next line says plainly why none was
        # stored (issue 13).
        assert (
            b"ETH H1: nothing was stored: every candle in the range is already stored"
            in again.stderr
        )
        assert sqlite3.connect(db).execute("SELECT count(*) FROM upstream_candles").fetchone() == (
            rows,
        )

        status = await gateway(
            "backfill", "--symbol", "ETH", "--status", "--db", str(db), cwd=tmp_path
        )
        assert status.returncode == 0 and b"ETH 3600s binance:" in status.stdout
        assert b"72 candles" in status.stdout

        sim.inject("binance", Fault.status(500))
        failed = await gateway("backfill", "--symbol", "BTC", "--days", "1", *common, cwd=tmp_path)
        assert failed.returncode == 1 and b"run again to resume" in failed.stderr
        assert b"BTC H1: nothing was stored: binance failed (last error: binance:" in failed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbol", "NOPE"], b"NOPE"),
        (["--symbol", "BTC", "--days", "0"], b"--days"),
        (["--symbol", "BTC", "--until", "2024-01-01T00:00:00"], b"UTC offset"),
        (["--symbol", "BTC", "--interval", "M2"], b"--interval"),
    ],
)
async def test_bad_backfill_arguments_exit_2(
    tmp_path: Path, args: list[str], message: bytes
) -> None:
    done = await gateway("backfill", *args, "--db", str(tmp_path / "g.db"), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "g.db").exists()


def test_a_run_that_stores_nothing_says_why() -> None:
    held = BackfillResult(slices=2, slices_held=2)
    assert nothing_stored_reason(held) == "every candle in the range is already stored"
    empty = BackfillResult(slices=1, requests=1)
    assert "answered with no candles" in (nothing_stored_reason(empty) or "")
    assert "no closed candle" in (nothing_stored_reason(BackfillResult()) or "")
    failed = BackfillResult(slices=1, requests=1, errors=[("kraken", "HTTP 500")])
    assert nothing_stored_reason(failed) == "kraken failed (last error: kraken: HTTP 500)"
    assert nothing_stored_reason(BackfillResult(slices=1, inserted=3)) is None

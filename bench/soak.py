"""Soak: the real gateway under a mixed hostile load while a well-behaved client uses it.

    python bench/soak.py [--duration 300] [--quick]

The bench process runs the upstream simulator (tests/simulator/rest.py) and starts

* the gateway, `python -m gateway serve --port 0 --db DB --providers TOML --log-format json`,
  fed by four REST market-data providers (coingecko, binance, kraken, coinbase) polling the
  simulator every 0.5 s for BTC and ETH, its database on a 64 MiB tmpfs this bench mounts
  (as root; if it cannot, the disk-full phase is skipped and the database lives in /tmp);
* the hostile clients (bench/soak_hostile.py, a process of its own so its CPU does not
  distort the well-behaved client's clock): slow request bodies from 127.0.0.3… and a
  WebSocket flood from 127.0.0.2.

For `--duration` seconds (60 with `--quick`), besides that load:

* bad upstream values: every `--bad-every` s one provider's BTC or ETH jumps to a wild value
  (1e300, 1e12, 1e9, 0.0001x the true price) for `--bad-hold` s, then comes back;
* disk full: in the middle, for `--disk-full` s, a filler file takes the tmpfs but a few KiB;
* a well-behaved client on 127.0.0.1 (an enterprise API key, so the tier's limits are not
  what it measures) asks `prices(symbols: ["BTC","ETH"])` and `ohlcv(symbol: "BTC",
  interval: M1, limit: 5)` every `--interval` s and holds a `priceTicks(symbols: ["BTC",
  "ETH"])` subscription; a probe asks `/readyz` every 0.5 s;
* the gateway's descriptors (/proc/PID/fd) and memory (VmRSS, VmHWM) are sampled every second.

Then the gateway is stopped with SIGTERM (the hostile sockets still open) and its database is
opened read-only: price_ticks and candles_1m rows outside the plausible band (`--band-pct`
around the simulator's true price) are bad values that reached storage; quarantined_ticks rows
are what the plausibility gate kept aside. The report (bench/soak_report.py) ends with one
PASS/FAIL line per target: p99 < 100 ms and zero errors for the well-behaved client; zero bad
values stored, streamed or served; /readyz 503 within 3 s of a commit failing while the disk
is full, and 200 on a new connection otherwise; shutdown within 5 s. The exit status is 0 only
when every target passes.

Loopback only; every loop is bounded, every wait has a timeout, every subprocess is stopped
in a `finally` (SIGTERM, then SIGKILL) and the tmpfs is unmounted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from load_client import raise_fd_limit  # noqa: E402
from soak_client import (  # noqa: E402
    SYMBOLS,
    Band,
    Client,
    Readiness,
    loop_lag,
    scrape_metrics,
    warm_up,
)
from soak_report import CpuShares, Sampler, print_report, stored_bad  # noqa: E402

from tests.simulator.rest import Simulator, run_simulator  # noqa: E402

PROVIDERS = ("coingecko", "binance", "kraken", "coinbase")
WILD = (1e300, 1e12, 1e9, 1e-4)  # the last is a factor of the true price


# -- the gateway process -------------------------------------------------------------------------


class Gateway:
    """`python -m gateway serve` with JSON logs on stderr: its URL, and counts of what it logs."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.url = ""
        self.events: Counter[str] = Counter()
        self.levels: Counter[str] = Counter()
        self.other_lines = 0  # not JSON: printed around the logger (a traceback, hypercorn)
        self.other_samples: list[str] = []
        self.samples: dict[str, str] = {}  # the first error line of each event, for the report
        self.commit_failures: list[float] = []  # trio clock when each was read
        self.exit_code: int | None = None
        self.shutdown_s = math.nan
        self._buffer = b""

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, db: Path, providers: Path, args: argparse.Namespace
    ) -> Gateway:
        command = [sys.executable, "-m", "gateway", "serve", "--port", "0", "--db", str(db)]
        command += ["--providers", str(providers), "--log-format", "json"]
        nofile = args.gateway_nofile

        def limit_descriptors() -> None:  # in the child, before exec: soft = hard = nofile
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        process = await trio.lowlevel.open_process(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "GATEWAY_LOG_LEVEL": args.log_level, **args.gateway_env},
            preexec_fn=limit_descriptors if nofile else None,
        )
        gateway = cls(process)
        ready = trio.Event()
        nursery.start_soon(gateway._read_logs, ready)
        with trio.move_on_after(30):
            await ready.wait()
        if not gateway.url:
            gateway.process.kill()
            raise RuntimeError(f"the gateway did not start: {gateway.other_samples}")
        return gateway

    async def _read_logs(self, ready: trio.Event) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:  # ends when the process closes stderr
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for raw in lines:
                self._line(raw, ready)

    def _line(self, raw: bytes, ready: trio.Event) -> None:
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if raw.strip():
                self.other_lines += 1
                if len(self.other_samples) < 3:
                    self.other_samples.append(raw[:200].decode("utf-8", "replace"))
            return
        event = str(record.get("event"))
        level = str(record.get("level"))
        self.events[event] += 1
        self.levels[level] += 1
        if level in ("error", "critical") and event not in self.samples and len(self.samples) < 5:
            self.samples[event] = raw[:300].decode("utf-8", "replace")
        if event == "storage.commit_failed" and len(self.commit_failures) < 100_000:
            self.commit_failures.append(trio.current_time())
        if event == "gateway.serving":
            self.url = record["urls"][0]
            ready.set()

    async def stop(self, grace: float = 15) -> None:
        """SIGTERM and wait (then SIGKILL): the exit code and how long it took."""
        began = trio.current_time()
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            self.exit_code = await self.process.wait()
            self.shutdown_s = trio.current_time() - began
        if self.exit_code is None:
            self.process.kill()
            with trio.move_on_after(5):
                await self.process.wait()
            self.exit_code = -9


# -- the hostile phases the driver owns ----------------------------------------------------------


@dataclass
class Market:
    """The simulated upstreams' prices. All providers agree on a slow random walk (0.05 % a
    second at most, within `drift_pct` of the start), so each answer is a new observation;
    `bad_values` makes one provider's price of one symbol wild for a while."""

    simulator: Simulator
    start: dict[str, float]
    drift_pct: float = 1.0
    now: dict[str, float] = field(default_factory=dict)
    wild: dict[tuple[str, str], float] = field(default_factory=dict)
    episodes: list[str] = field(default_factory=list)
    upstream_answers: int = 0  # requests the simulator answered with a wild value (about)

    def publish(self) -> None:
        for provider in PROVIDERS:
            for symbol in SYMBOLS:
                usd = self.wild.get((provider, symbol), self.now.get(symbol, self.start[symbol]))
                self.simulator.set_price(symbol, usd, provider=provider)

    async def walk(self, until: float) -> None:
        rng = random.Random(10)
        self.now = dict(self.start)
        for _ in range(100_000):
            if trio.current_time() >= until:
                return
            for symbol, base in self.start.items():
                moved = self.now[symbol] * (1 + rng.uniform(-5e-4, 5e-4))
                low, high = base * (1 - self.drift_pct / 100), base * (1 + self.drift_pct / 100)
                self.now[symbol] = min(high, max(low, moved))
            self.publish()
            await trio.sleep(1)

    async def bad_values(self, start: float, every: float, hold: float, until: float) -> None:
        for i in range(10_000):
            due = start + 5 + i * every
            if due + hold > until - 2:
                return
            await trio.sleep_until(due)
            provider = PROVIDERS[i % len(PROVIDERS)]
            symbol = SYMBOLS[(i // len(PROVIDERS)) % len(SYMBOLS)]
            wild = WILD[i % len(WILD)]
            value = self.now.get(symbol, self.start[symbol]) * wild if wild < 1 else wild
            hits = self.simulator.hits[provider]
            self.wild[(provider, symbol)] = value
            self.publish()
            try:
                await trio.sleep(hold)
            finally:
                del self.wild[(provider, symbol)]
                self.publish()
            self.upstream_answers += self.simulator.hits[provider] - hits
            self.episodes.append(f"{provider} {symbol}={value:.4g} at {due - start:g} s")


@dataclass
class DiskFull:
    """A filler file that leaves `leave` bytes free on the database's file system."""

    directory: Path
    leave: int = 8192
    filled_bytes: int = 0
    free_during: int = 0
    began: float = math.nan
    ended: float = math.nan

    def _fill(self) -> None:
        stat = os.statvfs(self.directory)
        target = max(0, stat.f_bavail * stat.f_frsize - self.leave)
        chunk = b"\0" * (1 << 20)
        with open(self.directory / "filler", "wb") as filler:
            for _ in range(target // len(chunk) + 1):
                size = min(len(chunk), target - self.filled_bytes)
                if size <= 0:
                    break
                try:
                    filler.write(chunk[:size])
                    filler.flush()
                except OSError:
                    break
                self.filled_bytes += size
        stat = os.statvfs(self.directory)
        self.free_during = stat.f_bavail * stat.f_frsize

    async def run(self, at: float, seconds: float) -> None:
        await trio.sleep_until(at)
        self.began = trio.current_time()
        try:
            await trio.to_thread.run_sync(self._fill)
            await trio.sleep(seconds)
        finally:
            (self.directory / "filler").unlink(missing_ok=True)
            self.ended = trio.current_time()


# -- set-up --------------------------------------------------------------------------------------


@contextmanager
def tmpfs(size_mib: int) -> Iterator[tuple[Path, bool]]:
    """A fresh tmpfs of `size_mib` (or a plain temporary directory when mounting fails)."""
    directory = Path(tempfile.mkdtemp(prefix="soak-db-"))
    mounted = False
    try:
        try:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(directory)],
                capture_output=True,
                text=True,
                timeout=10,
            )
            mounted, why = result.returncode == 0, result.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            why = str(exc)
        if not mounted:
            print(f"could not mount a tmpfs ({why}): no disk-full phase, the database in /tmp")
        yield directory, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(directory)], capture_output=True, timeout=10)
            if os.path.ismount(directory):
                subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=10)
        for leftover in directory.glob("*"):
            leftover.unlink(missing_ok=True)
        directory.rmdir()


def providers_toml(simulator: Simulator, path: Path, interval: float) -> Path:
    path.write_text(
        "".join(
            f'[[provider]]\nid = "{pid}"\ncategory = "MARKET_DATA"\n'
            f'base_url = "{simulator.base_url(pid)}"\ninterval_seconds = {interval}\n'
            f'timeout_seconds = 2\nsymbols = ["BTC", "ETH"]\n\n'
            for pid in PROVIDERS
        )
    )
    return path


async def make_key(db: Path) -> str:
    """An enterprise viewer key in the soak's database (`gateway keys create`)."""
    command = [sys.executable, "-m", "gateway", "keys", "create", "--name", "soak"]
    command += ["--role", "viewer", "--tier", "enterprise", "--db", str(db)]
    with trio.fail_after(30):
        result = await trio.run_process(command, cwd=ROOT, capture_stdout=True, capture_stderr=True)
    return result.stdout.decode().strip().splitlines()[-1]


class Hostile:
    """bench/soak_hostile.py as a subprocess; its report is its last stdout line."""

    def __init__(self) -> None:
        self.report: dict[str, Any] = {}
        self.process: trio.Process | None = None
        self.done = trio.Event()

    async def run(self, port: int, seconds: float, extra: list[str]) -> None:
        command = [sys.executable, str(HERE / "soak_hostile.py"), "--port", str(port)]
        command += ["--seconds", str(seconds), *extra]
        self.process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
        )
        assert self.process.stdout is not None
        buffer = b""
        try:
            with trio.move_on_after(seconds + 60):  # it lingers at most 30 s
                async for chunk in self.process.stdout:
                    buffer += chunk
            for line in buffer.decode().splitlines():
                if line.startswith("{") and '"report"' in line:
                    self.report = json.loads(line)
        finally:
            if self.process.returncode is None:
                self.process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):  # reaped, even on Ctrl-C
                await self.process.wait()
            self.done.set()

    async def finish(self) -> None:
        """Close its stdin: it stops and reports."""
        if self.process is not None and self.process.stdin is not None:
            with trio.move_on_after(2):
                await self.process.stdin.aclose()


# -- the run -------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> int:
    with tmpfs(64) as (db_dir, mounted), tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        db = db_dir / "soak.db"
        async with run_simulator() as simulator:
            truth = {symbol: simulator.price(symbol, "coingecko") for symbol in SYMBOLS}
            band = Band(truth, args.band_pct)
            providers = providers_toml(simulator, Path(tmp) / "providers.toml", args.poll)
            key = await make_key(db)
            disk = DiskFull(db_dir) if mounted and args.disk_full > 0 else None
            async with trio.open_nursery() as nursery:
                gateway = await Gateway.start(nursery, db, providers, args)
                try:
                    result = await drive(args, nursery, simulator, gateway, disk, key, band)
                finally:
                    if gateway.exit_code is None:  # the run failed: stop it all the same
                        with trio.CancelScope(shield=True):  # bounded: 15 s, then SIGKILL
                            await gateway.stop()
                    nursery.cancel_scope.cancel()
        result.stored = stored_bad(db, band)
        return print_report(args, result, band)


@dataclass
class Result:
    gateway: Gateway
    client: Client
    sampler: Sampler
    market: Market
    disk: DiskFull | None
    readiness: Readiness
    hostile: Hostile
    warm_up_s: float
    lags: list[float]
    metrics: dict[str, float]
    cpu: CpuShares
    stored: dict[str, Any] = field(default_factory=dict)


async def drive(
    args: argparse.Namespace,
    nursery: trio.Nursery,
    simulator: Simulator,
    gateway: Gateway,
    disk: DiskFull | None,
    key: str,
    band: Band,
) -> Result:
    """The load phase, then the gateway's shutdown with the hostile clients still connected."""
    sampler = Sampler(gateway.process.pid)
    nursery.start_soon(sampler.run, trio.current_time() + args.duration + 120)
    warm = await warm_up(gateway.url, key)
    quiet = await sampler.quiet()
    sampler.mark_baseline()
    client = Client(gateway.url, key, band)
    readiness = Readiness(gateway.url, disk)
    market = Market(simulator, band.truth)
    hostile = Hostile()
    lags: list[float] = []
    port = int(gateway.url.rsplit(":", 1)[1])
    extra = ["--slow", str(args.slow), "--ws-attempts", str(args.ws_attempts)]
    extra += ["--ws-burst-every", str(args.ws_burst_every), "--trickle", str(args.trickle)]
    if args.slow or args.ws_attempts:
        nursery.start_soon(hostile.run, port, args.duration, extra)
    else:
        hostile.done.set()
    start = trio.current_time()
    cpu = CpuShares()
    until = start + args.duration
    print(
        f"prices after {warm:.1f} s, gateway CPU quiet {quiet:.1f} s later;"
        f" soaking for {args.duration:g} s"
        f" (gateway pid {gateway.process.pid}, {gateway.url})",
        flush=True,
    )
    async with trio.open_nursery() as load:
        load.start_soon(client.query_loop, args.interval, until)
        load.start_soon(client.subscription_loop, until, args.gap)
        load.start_soon(market.walk, until)
        if args.bad_every > 0:
            load.start_soon(market.bad_values, start, args.bad_every, args.bad_hold, until)
        load.start_soon(readiness.run, until)
        load.start_soon(loop_lag, until, lags)
        load.start_soon(cpu.measure, gateway.process.pid, hostile, until)
        if disk is not None:
            seconds = min(args.disk_full, args.duration / 4)
            load.start_soon(disk.run, start + args.duration / 2 - seconds / 2, seconds)
    sampler.sample()
    sampler.end_fds = sampler.fds[-1] if sampler.fds else 0
    metrics = await scrape_metrics(gateway.url)
    await gateway.stop()
    await hostile.finish()
    with trio.move_on_after(30):
        await hostile.done.wait()
    return Result(
        gateway, client, sampler, market, disk, readiness, hostile, warm, lags, metrics, cpu
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of load")
    parser.add_argument("--quick", action="store_true", help="60 s (unless --duration is given)")
    parser.add_argument("--interval", type=float, default=0.25, help="the client's query period")
    parser.add_argument("--poll", type=float, default=0.5, help="providers' interval_seconds")
    parser.add_argument(
        "--gap", type=float, default=3.0, help="a subscription silence this long is a gap"
    )
    parser.add_argument(
        "--band-pct", type=float, default=20.0, help="plausible: within this of the truth"
    )
    parser.add_argument("--bad-every", type=float, default=20.0, help="seconds between bad values")
    parser.add_argument("--bad-hold", type=float, default=10.0, help="seconds a bad value lasts")
    parser.add_argument(
        "--disk-full", type=float, default=30.0, help="seconds (at most duration/4)"
    )
    parser.add_argument("--slow", type=int, default=300, help="slow-body sockets at once")
    parser.add_argument("--trickle", type=float, default=3.0, help="seconds between body bytes")
    parser.add_argument("--ws-attempts", type=int, default=3000, help="handshakes per burst")
    parser.add_argument("--ws-burst-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--log-level", default="info", help="the gateway's GATEWAY_LOG_LEVEL")
    parser.add_argument(
        "--gateway-nofile",
        type=int,
        default=0,
        help="start the gateway with this descriptor limit, soft and hard (0: inherited)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a GATEWAY_* setting for the gateway (repeatable), e.g. GATEWAY_WS_IDLE_TIMEOUT=20",
    )
    parser.add_argument(
        "--calm", action="store_true", help="no hostile load at all: the baseline to compare"
    )
    args = parser.parse_args()
    args.gateway_env = dict(item.partition("=")[::2] for item in args.gateway_env)
    if args.quick and "--duration" not in sys.argv:
        args.duration = 60.0
    if args.calm:
        args.slow = args.ws_attempts = 0
        args.bad_every = args.disk_full = 0
    return args


def main() -> None:
    args = parse_args()
    raise_fd_limit()
    try:
        sys.exit(trio.run(soak, args))
    except* KeyboardInterrupt:  # everything was stopped and unmounted on the way out
        sys.exit("interrupted")


if __name__ == "__main__":
    main()

"""Exchange stream -> GraphQL subscriber latency, through the real stream path, on loopback.

bench/fanout.py publishes ticks straight onto the gateway's bus; this bench makes them enter the
way production ticks do. Three processes besides this driver, all on 127.0.0.1:

    stream_upstream.py        the WebSocket exchange simulator of the tests (Binance's combined
                              stream), pushing BTC mini-tickers at --rate per second, each with
                              a price no other message has, logging when it sent each one
    serve_stream_gateway.py   the real gateway, whose only provider is `binance-stream` pointed
                              at the simulator (no REST collector), anonymous limits lifted
    stream_client.py          N graphql-transport-ws subscribers of
                                  subscription { priceTicks(symbols: ["BTC"])
                                                 { symbol usd provider observedAt } }
                              in one epoll loop, logging when each `next` frame became readable

Latency of one delivery = the instant the subscriber's frame was readable - the instant the
simulator sent the upstream message with that price, both `time.time()` on the same machine.
Once all N are subscribed the simulator ticks for --warmup + --seconds; the messages *sent* in
the last --seconds form the window, and each of their deliveries that arrives by window end +
--grace counts (later ones count as missing):

    expected / received   messages sent in the window x N / deliveries of them received
    p50 ... max           latency over those deliveries
    first p50/p99         per message, the earliest delivery: exchange -> gateway -> first
                          subscriber (parse, ingest, one GraphQL execution, and the writer
                          tasks' scheduling, which grows with N: see the README)
    sweep p50/p99         per message, latest - earliest delivery: the time the gateway takes
                          to write one event to all N connections, one after the other
    µs/msg                server CPU (/proc/PID/stat) over the window / deliveries read in it
    other cores           CPU used by processes outside the bench during the window

`--coalesce off` (default) publishes every upstream message; the product as shipped publishes
at most one tick per symbol per second (`StreamSettings.min_publish_interval`) and holds the
latest of the rest, so with `--coalesce product` at more than 1 message/s most messages are
never delivered and a delivered one may have been held back (hundreds of ms); see the README.
The stream's receive loop also waits for each published tick's storage commit, which caps
what one stream connection can take; `--storage-batch-seconds` changes that wait.

`--deflate`: every subscriber offers permessage-deflate exactly as Chromium does (see
load_client.py); the notes then give the bytes read per delivery and the servers' answers.

Run: `python bench/stream_latency.py --subscribers 100,1000` (about a minute). Every
subprocess is stopped in a `finally` (quit, then SIGTERM, then SIGKILL, each wait bounded), and
every wait on a subprocess has a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout import (
    BenchError,
    Proc,
    measure_window,
    sleep_until,
    start_load_client,
    start_profiler,
    stop_process,
    wait_quiet,
)

HERE = Path(__file__).resolve().parent
UPSTREAM = HERE / "stream_upstream.py"
SERVER = HERE / "serve_stream_gateway.py"
CLIENT = HERE / "stream_client.py"

TARGET_N = 1000
TARGET_P99_S = 0.050


@dataclass
class Point:
    n: int
    rate: float
    coalesce: str
    ok: bool = False
    error: str = ""
    subscribed: int = 0
    connect_s: float = 0.0
    window_s: float = 0.0
    sent: int = 0  # upstream messages sent in the window
    reached: int = 0  # of those, how many reached at least one subscriber
    expected: int = 0
    received: int = 0
    read_in_window: int = 0  # deliveries read during the window, whatever their send time
    lat: dict[str, float] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    sweep: dict[str, float] = field(default_factory=dict)
    server_cpu: float = 0.0
    server_sys: float = 0.0
    client_cpu: float = 0.0
    rss: int = 0
    other_cores: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def us_per_msg(self) -> float | None:
        return self.server_cpu / self.read_in_window * 1e6 if self.read_in_window else None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    return {"p50": at(50), "p90": at(90), "p99": at(99), "p99.9": at(99.9), "max": ordered[-1]}


def wait_live(server: Proc, want: int, timeout: float) -> dict[str, Any]:
    """Poll the gateway until `want` subscriptions are attached and listening (bounded)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        server.send("status")
        status = json.loads(server.expect("status", 30).split(" ", 1)[1])
        if status["members"] >= want and status["listening"]:
            return status
        time.sleep(0.2)
    raise BenchError(f"gateway: not all {want} subscriptions live after {timeout:.0f} s: {status}")


def measure(point: Point, args: argparse.Namespace, log_dir: Path) -> None:
    n = point.n
    procs: list[Proc] = []
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if args.quiet_wait > 0:
            load, waited = wait_quiet(args.quiet_below, args.quiet_wait)
            point.extra["others_before"] = round(load, 2)
            if waited > 1:
                point.extra["waited_for_quiet_s"] = round(waited, 1)
        upstream = Proc(f"upstream-{n}", [sys.executable, str(UPSTREAM)], log_dir)
        procs.append(upstream)
        upstream_port = int(upstream.expect("ready", 30).split()[2])
        server = Proc(
            f"gateway-{n}",
            [
                sys.executable,
                str(SERVER),
                "--upstream",
                f"ws://127.0.0.1:{upstream_port}/binance/stream",
                "--coalesce",
                point.coalesce,
                *(
                    ["--storage-batch-seconds", str(args.storage_batch_seconds)]
                    if args.storage_batch_seconds is not None
                    else []
                ),
            ],
            log_dir,
        )
        procs.append(server)
        _, pid_text, port_text = server.expect("ready", 60).split()
        pid, port = int(pid_text), int(port_text)
        upstream.send("wait 30")
        answer = upstream.expect("", 35)
        if not answer.startswith("subscribed"):
            raise BenchError(f"the gateway's stream never subscribed upstream ({answer})")

        client = start_load_client(
            f"client-{n}",
            CLIENT,
            port,
            n,
            args.connect_window,
            600,
            log_dir,
            procs,
            point,
            ["--deflate"] if args.deflate else [],
        )
        before = wait_live(server, point.subscribed, 30 + n / 500)["stream"]
        time.sleep(args.settle)  # let the connection burst's garbage settle
        server.send("start")  # the GC policy's "before publishing" step (gcstats.py)

        start = time.time() + 0.2
        t0 = start + args.warmup
        t1 = t0 + args.seconds
        client.send(f"window {t0!r} {t1!r} {args.grace!r}")
        upstream.send(f"start {args.rate!r} {args.warmup + args.seconds!r} {start!r}")
        sleep_until(t0)
        if args.py_spy:
            profiler = start_profiler(args.py_spy, pid, "stream", n, args.seconds, log_dir, False)
        measure_window(point, pid, client.pid, t0, t1, also_ours=(upstream.pid,))

        done = json.loads(upstream.expect("done", 60).split(" ", 1)[1])
        report = client.expect_json("report", args.grace + 60)
        server.send(f"stats {t0!r} {t1!r}")
        stats = json.loads(server.expect("stats", 60).split(" ", 1)[1])
        analyse(point, done, report, t0, t1)
        point.extra["wire"] = (
            f"{report['wire_bytes'] / max(point.received, 1):.0f} bytes read per delivery; "
            f"extensions answered: {report['extensions']}"
        )
        after = stats["stream"]
        published = after["ticks"] - before["ticks"]
        point.extra["upstream"] = (
            f"{len(done['sent'])}/{done['scheduled']} sent, schedule lag p99 "
            f"{(done['lag_p99'] or 0) * 1000:.1f} ms"
        )
        point.extra["stream"] = (
            f"{published} ticks published by the stream client, "
            f"reconnects {after['reconnects'] - before['reconnects']}, "
            f"malformed {after['malformed']}, min_publish_interval "
            f"{after['min_publish_interval']:g} s"
        )
        if point.coalesce == "off" and published < len(done["sent"]):
            point.extra["BEHIND"] = (
                f"the stream client published {published} of {len(done['sent'])} messages by "
                "window end + grace: it cannot keep up with the upstream rate"
            )
        if after["reconnects"] != before["reconnects"] or done["connects"] != 1:
            point.extra["WARNING"] = f"the stream reconnected ({done['connects']} connections)"
        for key in ("dropped", "slow_consumer_closes", "bus_dropped"):
            if stats[key]:
                point.extra[key] = stats[key]
        gc_seconds = sum(stats["gc"]["seconds"])
        point.extra["GC"] = f"{gc_seconds / point.window_s * 100:.1f}% of the window"
        point.extra["client"] = (
            f"per-subscriber deliveries {report['conn_min']}..{report['conn_max']}, "
            f"{report['live']} live, {report['closed']} closed"
        )
        if report["not_recorded"]:
            point.extra["not_recorded"] = report["not_recorded"]
        if report["other_messages"]:
            point.extra["other_messages"] = report["other_messages"]
        point.ok = True
    except (BenchError, OSError, ValueError, KeyError) as exc:
        point.error = f"{exc.__class__.__name__}: {exc}"
    finally:
        if profiler is not None:
            stop_process(profiler, 30)
        for proc in reversed(procs):
            proc.stop()


def analyse(
    point: Point, done: dict[str, Any], report: dict[str, Any], t0: float, t1: float
) -> None:
    """Match deliveries to upstream sends by price; latency = read instant - send instant."""
    sent_at = {float(price): at for price, at in done["sent"]}
    window = {price: at for price, at in sent_at.items() if t0 <= at < t1}
    base = report["t0"]
    arrivals = {float(k): [base + t for t in v] for k, v in report["arrivals"].items()}
    latencies: list[float] = []
    first: list[float] = []
    sweep: list[float] = []
    for price, at in window.items():
        times = arrivals.get(price)
        if not times:
            continue
        point.reached += 1
        latencies.extend(t - at for t in times)
        first.append(min(times) - at)
        sweep.append(max(times) - min(times))
    point.sent = len(window)
    point.expected = point.sent * point.subscribed
    point.received = len(latencies)
    point.read_in_window = sum(1 for v in arrivals.values() for t in v if t0 <= t < t1)
    unmatched = sum(len(v) for k, v in arrivals.items() if k not in sent_at)
    if unmatched:
        point.extra["unmatched"] = unmatched  # e.g. idle keep-alive ticks read after T0
    point.lat, point.first, point.sweep = (
        percentiles(latencies),
        percentiles(first),
        percentiles(sweep),
    )


# -- the table ------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


COLUMNS = (
    ("N", 6),
    ("rate/s", 6),
    ("sent", 5),
    ("expected", 9),
    ("received", 9),
    ("p50 ms", 7),
    ("p90 ms", 7),
    ("p99 ms", 7),
    ("p99.9 ms", 9),
    ("max ms", 7),
    ("first p50/p99", 14),
    ("sweep p50/p99", 14),
    ("µs/msg", 7),
    ("srv CPU%", 9),
    ("cli CPU%", 9),
    ("other cores", 12),
)


def header() -> str:
    return "  ".join(name.rjust(width) for name, width in COLUMNS)


def row(p: Point) -> str:
    if not p.ok:
        return f"{p.n:>6}  FAILED: {p.error}"
    cells = (
        f"{p.n}",
        f"{p.rate:g}",
        f"{p.sent}",
        f"{p.expected:,}",
        f"{p.received:,}",
        ms(p.lat.get("p50")),
        ms(p.lat.get("p90")),
        ms(p.lat.get("p99")),
        ms(p.lat.get("p99.9")),
        ms(p.lat.get("max")),
        f"{ms(p.first.get('p50'))}/{ms(p.first.get('p99'))}",
        f"{ms(p.sweep.get('p50'))}/{ms(p.sweep.get('p99'))}",
        "-" if p.us_per_msg is None else f"{p.us_per_msg:.0f}",
        f"{p.server_cpu / p.window_s * 100:.0f}",
        f"{p.client_cpu / p.window_s * 100:.0f}",
        "-" if p.other_cores is None else f"{p.other_cores:.2f}",
    )
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def notes(p: Point) -> str:
    bits = [f"subscribed {p.subscribed}/{p.n} in {p.connect_s:.1f} s"]
    if p.ok:
        bits.append(f"{p.reached}/{p.sent} window messages reached a subscriber")
        if p.reached < p.sent and p.coalesce == "product":
            bits.append(
                f"{p.sent - p.reached} superseded by the 1 s coalescing (by design); "
                f"{p.received:,}/{p.reached * p.subscribed:,} deliveries of the rest"
            )
        bits.append(f"RSS {p.rss / 2**20:.0f} MiB")
    bits.extend(f"{k}: {v}" for k, v in p.extra.items())
    return "; ".join(bits)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Exchange stream message -> GraphQL subscriber latency, N subscribers."
    )
    parser.add_argument(
        "--subscribers", default="1000", help="comma-separated N values (default 1000)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="upstream messages/s (10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window, s (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="ticking before the window, s")
    parser.add_argument(
        "--grace", type=float, default=2.0, help="wait after the window for late deliveries, s"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="pause after all subscribed, s")
    parser.add_argument(
        "--coalesce",
        choices=("off", "product"),
        default="off",
        help="off: every upstream message is published; product: the shipped 1 s coalescing",
    )
    parser.add_argument(
        "--storage-batch-seconds",
        type=float,
        help="override the gateway's Settings.storage_batch_seconds (0.25): the stream's receive "
        "loop waits for each tick's commit, so this bounds the messages/s one stream can take",
    )
    parser.add_argument("--connect-window", type=int, default=100, help="handshakes in flight")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each point, wait up to this long for other processes to go quiet (0: off)",
    )
    parser.add_argument(
        "--quiet-below", type=float, default=0.15, help="quiet: others use < this many cores"
    )
    parser.add_argument(
        "--contended",
        type=float,
        default=0.3,
        help="a window where other processes used more cores than this is measured again",
    )
    parser.add_argument("--retries", type=int, default=1, help="re-measurements per point")
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="record a py-spy profile (raw) of the gateway over each window into this folder "
        "(stream-N.txt; summarise with bench/pyspy_layers.py); adds load, numbers move",
    )
    parser.add_argument("--json", type=Path, help="also write every point as JSON here")
    parser.add_argument(
        "--deflate", action="store_true", help="subscribers offer permessage-deflate (Chromium's)"
    )
    args = parser.parse_args()
    ns = [int(x) for x in args.subscribers.split(",") if x.strip()]
    if not ns or min(ns) < 1 or args.rate <= 0 or args.seconds <= 0 or args.rate > 1000:
        parser.error("need N >= 1, 0 < rate <= 1000, seconds > 0")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    print("$ " + shlex.join([sys.executable, *sys.argv]))
    print(
        f"# {os.cpu_count()} CPUs, python {sys.version.split()[0]}, upstream {args.rate:g} msg/s,"
        f" window {args.seconds:g} s after {args.warmup:g} s warm-up, grace {args.grace:g} s,"
        f" coalesce {args.coalesce}"
    )
    results: list[Point] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        log_dir = Path(tmp)
        for n in ns:
            print(f"... N={n:<5}", end="", flush=True)
            point = Point(n, args.rate, args.coalesce)
            measure(point, args, log_dir)
            for _ in range(args.retries):  # bounded: re-measure a point the machine disturbed
                if not (point.ok and (point.other_cores or 0) > args.contended):
                    break
                print(
                    f" contended (others used {point.other_cores:.2f} cores); again ...",
                    end="",
                    flush=True,
                )
                again = Point(n, args.rate, args.coalesce)
                measure(again, args, log_dir)
                if again.ok and (again.other_cores or 0) < (point.other_cores or 0):
                    point = again  # keep the less disturbed of the two
            results.append(point)
            if point.ok:
                print(
                    f" received {point.received:,}/{point.expected:,},"
                    f" p50 {ms(point.lat.get('p50'))} ms, p99 {ms(point.lat.get('p99'))} ms",
                    flush=True,
                )
            else:
                print(f" FAILED: {point.error}", flush=True)
    print(f"\n# total {time.monotonic() - began:.0f} s")
    print(header())
    for point in results:
        print(row(point))
    for point in results:
        print(f"   N={point.n}: {notes(point)}")
    for point in results:
        if point.n == TARGET_N and point.ok and "p99" in point.lat:
            verdict = "PASS" if point.lat["p99"] < TARGET_P99_S else "FAIL"
            print(
                f"# target (N={TARGET_N}): p99 {ms(point.lat['p99'])} ms"
                f" < {TARGET_P99_S * 1000:.0f} ms {verdict}"
            )
    if args.json:
        args.json.write_text(json.dumps([vars(p) for p in results], indent=2, default=str) + "\n")
    return 0 if all(p.ok for p in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""One replica vs two replicas behind nginx: the cost of live events through Redis Streams.

Side by side, in one run, at N subscribers (default 2,000) x E events/s (default 10):

    one   bench/serve_gateway.py alone (the in-process bus); the load client connects to it
    two   two serve_gateway.py --broker replicas on one redis-server, nginx in front of them
          (least_conn, WebSocket upgrade); the load client connects to nginx, which spreads
          the N subscribers over both. The leader publishes; every replica reads the stream.

Each point measures one steady window of --duration seconds after a warm-up:

    delivered/s   `next` messages received in the window / window length (offered: N x E)
    p50/p99       end-to-end: client receive time - the tick's publish instant (same clock)
    µs/msg        CPU of the gateway processes (utime+stime, both replicas for "two") per
                  delivered message; Redis and nginx CPU per message apart
    bus p50/p99   publish instant -> delivery on the publishing replica's own bus: with a
                  broker the Redis round trip (XADD, XREAD), in one process ~0 (the broker's
                  share of the end-to-end latency)
    other cores   CPU used by processes outside the bench in the window (noise)

Then a paper estimate, with its arithmetic, of the replicas, Redis and PostgreSQL needed for
100,000 subscribers, from the measured µs/msg.

Run: `python bench/replicas.py` (about a minute; needs redis-server and nginx: Debian's
`redis-server` and `nginx-light`); `--subscribers`, `--rate`, `--duration` change the point.
Everything binds 127.0.0.1; every subprocess is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout import BenchError, Proc, cpu_seconds, machine_busy_seconds, sleep_until

HERE = Path(__file__).resolve().parent
SERVER = HERE / "serve_gateway.py"
CLIENT = HERE / "load_client.py"
WARM_UP = 2.0
GRACE = 2.0

NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx.error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    upstream replicas {{ least_conn; server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass
class Point:
    label: str
    n: int
    rate: float
    window_s: float = 0.0
    delivered: int = 0
    p50: float | None = None
    p99: float | None = None
    gateway_cpu: float = 0.0
    extra_cpu: dict[str, float] = field(default_factory=dict)
    bus_p50: float | None = None
    bus_p99: float | None = None
    other_cores: float = 0.0
    members: list[int] = field(default_factory=list)

    def per_msg(self, seconds: float) -> str:
        return f"{seconds / self.delivered * 1e6:.1f}" if self.delivered else "-"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (nginx's workers do the proxying)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == pid or int(fields[1]) == pid:
                total += cpu_seconds(int(stat.parent.name))
    return total


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def start_server(
    name: str, log_dir: Path, procs: list[Proc], broker: str | None
) -> tuple[Proc, int]:
    """A serve_gateway.py process, and its port once it says `ready PID PORT`."""
    argv = [sys.executable, str(SERVER), *(["--broker", broker] if broker else [])]
    server = Proc(name, argv, log_dir)
    procs.append(server)
    return server, int(server.expect("ready ", 60).split()[2])


def measure(
    point: Point,
    servers: list[Proc],
    entry_port: int,
    log_dir: Path,
    procs: list[Proc],
    extra: dict[str, int],
    duration: float,
) -> None:
    client = Proc(
        f"client-{point.label}",
        [sys.executable, str(CLIENT), "--url", f"ws://127.0.0.1:{entry_port}/graphql",
         "--subscribers", str(point.n), "--window", "100", "--max-seconds", "300"],
        log_dir,
    )  # fmt: skip
    procs.append(client)
    ready = client.expect_json("ready", 120)
    if ready["subscribed"] < point.n:
        raise BenchError(f"{point.label}: only {ready['subscribed']} of {point.n} subscribed")
    for server in servers:
        server.send("count")
        point.members.append(int(server.expect("count ", 10).split()[1]))
    leader = servers[0]
    leader.send(f"start {point.rate} {WARM_UP + duration + GRACE + 2}")
    t0 = time.time() + WARM_UP
    t1 = t0 + duration
    client.send(f"window {t0} {t1} {GRACE}")
    sleep_until(t0)
    pids = [s.pid for s in servers]
    cpu0 = sum(map(cpu_seconds, pids))
    extra0 = {name: tree_cpu(pid) for name, pid in extra.items()}
    client0, busy0 = cpu_seconds(client.pid), machine_busy_seconds()
    sleep_until(t1)
    point.gateway_cpu = sum(map(cpu_seconds, pids)) - cpu0
    point.extra_cpu = {name: tree_cpu(pid) - extra0[name] for name, pid in extra.items()}
    ours = point.gateway_cpu + sum(point.extra_cpu.values()) + cpu_seconds(client.pid) - client0
    point.other_cores = max(0.0, machine_busy_seconds() - busy0 - ours) / duration
    report = client.expect_json("report", duration + GRACE + 60)
    point.window_s = report["window_s"]
    point.delivered = report["window_count"]
    point.p50, point.p99 = report["lat_p50"], report["lat_p99"]
    leader.send(f"stats {t0} {t1}")
    stats: dict[str, Any] = json.loads(leader.expect("stats ", 10)[6:])
    point.bus_p50, point.bus_p99 = stats.get("bus_p50"), stats.get("bus_p99")
    client.stop()


def table(points: list[Point]) -> str:
    lines = [
        f"{'':6} {'subs':>6} {'offered/s':>10} {'delivered/s':>12} {'p50':>10} {'p99':>10} "
        f"{'gw µs/msg':>10} {'redis µs':>9} {'nginx µs':>9} {'bus p50':>9} {'bus p99':>9} "
        f"{'other':>6}  spread"
    ]
    for p in points:
        delivered = p.delivered / p.window_s if p.window_s else 0.0
        lines.append(
            f"{p.label:6} {p.n:>6} {p.n * p.rate:>10,.0f} {delivered:>12,.0f} {ms(p.p50):>10} "
            f"{ms(p.p99):>10} {p.per_msg(p.gateway_cpu):>10} "
            f"{p.per_msg(p.extra_cpu.get('redis', 0.0)):>9} "
            f"{p.per_msg(p.extra_cpu.get('nginx', 0.0)):>9} {ms(p.bus_p50):>9} "
            f"{ms(p.bus_p99):>9} {p.other_cores:>6.2f}  {'/'.join(map(str, p.members))}"
        )
    return "\n".join(lines)


def paper_estimate(one: Point, two: Point, rate: float) -> str:
    """100,000 subscribers, from the measured CPU per message (the arithmetic is printed)."""
    subs, core_budget = 100_000, 0.7  # keep a replica's loop at 70 % of its one core
    messages = subs * rate
    us_one = one.gateway_cpu / one.delivered * 1e6 if one.delivered else 30.0
    us_two = two.gateway_cpu / two.delivered * 1e6 if two.delivered else us_one
    per_replica = core_budget * 1e6 / us_two
    replicas = max(2, -(-int(messages) // int(per_replica)) + 1)  # +1: survive losing one
    kb_per_sub = 25  # idle memory per subscriber (issue 16's target, bench/fanout.py measures)
    events = 20  # ticks/s from all collectors (7 symbols x a few providers), all topics ~25/s
    event_bytes = 300  # one encoded tick in a stream entry, with Redis's per-entry overhead
    retention = 100_000  # GATEWAY_BROKER_RETENTION per stream
    rows_day = events * 86_400
    return "\n".join(
        [
            f"Paper estimate for {subs:,} subscribers x {rate:g} events/s = {messages:,.0f} "
            "messages/s:",
            f"  replicas: measured {us_two:.1f} µs/msg behind the broker ({us_one:.1f} in one "
            f"process); at {core_budget:.0%} of one core a replica delivers "
            f"{core_budget:.1f} s / {us_two:.1f} µs = {per_replica:,.0f} msg/s, so "
            f"{messages:,.0f} / {per_replica:,.0f} -> {replicas - 1} replicas, +1 to lose one "
            f"= {replicas} (one core each; memory {subs:,} x {kb_per_sub} KB / {replicas - 1} = "
            f"{subs * kb_per_sub / (replicas - 1) / 1e6:.2f} GB per replica).",
            f"  Redis: its work grows with events x replicas, not subscribers: {events} XADD/s "
            f"and {replicas} readers x {events} entries/s = {events * (replicas + 1):,} "
            f"entries/s (a core does >100,000); memory {retention:,} entries x {event_bytes} B "
            f"= {retention * event_bytes / 1e6:.0f} MB per busy stream (prices), the lease and "
            "limits a few KB: one small instance (1 core, 256 MB), a replica for failover.",
            f"  PostgreSQL: written by the leader only: {events} ticks/s = {rows_day:,} rows/day "
            f"x ~120 B with indexes = {rows_day * 120 / 1e9:.1f} GB/day, 30 days of raw ticks "
            f"= {rows_day * 120 * 30 / 1e9:.0f} GB plus 1-minute candles; reads are queries "
            f"and `since:` replays (a reconnect wave of {subs:,} clients is {subs:,} short "
            "index range scans): 2-4 cores, 8 GB RAM, 100 GB disk; independent of subscribers "
            "except for that replay burst.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    args = parser.parse_args()
    for binary in ("redis-server", "nginx"):
        if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
            print(f"{binary} is not installed (apt-get install redis-server nginx-light)")
            return 2
    procs: list[Proc] = []
    others: list[subprocess.Popen[bytes]] = []
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        log_dir = Path(tmp)
        try:
            one = Point("one", args.subscribers, args.rate)
            server, port = start_server("one", log_dir, procs, None)
            points.append(one)
            measure(one, [server], port, log_dir, procs, {}, args.duration)
            server.stop()

            redis_port = free_port()
            redis = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save",
                 "", "--appendonly", "no", "--dir", tmp],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            others.append(redis)
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{redis_port}/0"
            a, a_port = start_server("replica-a", log_dir, procs, url)
            time.sleep(1.0)  # a takes the collector lease first: it publishes
            b, b_port = start_server("replica-b", log_dir, procs, url)
            lb_port = free_port()
            conf = log_dir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=tmp, a=a_port, b=b_port, port=lb_port))
            nginx = subprocess.Popen(
                [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", tmp,
                 "-g", "daemon off;"],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            others.append(nginx)
            time.sleep(0.5)
            two = Point("two", args.subscribers, args.rate)
            points.append(two)
            extra = {"redis": redis.pid, "nginx": nginx.pid}
            measure(two, [a, b], lb_port, log_dir, procs, extra, args.duration)
        except BenchError as exc:
            print(f"bench failed: {exc}")
            return 1
        finally:
            for proc in reversed(procs):
                proc.stop()
            for other in others:
                other.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    other.wait(5)
                if other.poll() is None:
                    other.kill()
        print(
            f"{args.subscribers} subscribers x {args.rate:g} events/s, {args.duration:g} s "
            "windows (other: cores used by processes outside the bench; spread: subscribers "
            "per replica)"
        )
        print(table(points))
        if len(points) == 2:
            print()
            print(paper_estimate(points[0], points[1], args.rate))
    return 0



if __name__ == "__main__":
    sys.exit(main())

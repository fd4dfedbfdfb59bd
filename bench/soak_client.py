"""The well-behaved side of bench/soak.py: one client that only wants its answers, and the
readiness probe an orchestrator would run, both from 127.0.0.1.

`Client.query_loop` asks `prices` and `ohlcv` on a fixed schedule and records each request's
latency and what went wrong, by kind: a transport error, a status other than 200, a GraphQL
`errors` entry (by `extensions.code`). `Client.subscription_loop` holds one `priceTicks`
subscription and counts its messages and silences. Every price in an answer or a message is
checked against a `Band` around the simulator's true price: one outside it is a bad value
that got through. `Readiness` asks /readyz twice a second. `loop_lag` says how late this
process's own event loop runs, which is part of every latency measured here.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

SYMBOLS = ("BTC", "ETH")
Q_PRICES = '{ prices(symbols: ["BTC", "ETH"]) { symbol usd sources } }'
Q_OHLCV = '{ ohlcv(symbol: "BTC", interval: M1, limit: 5) { open high low close provider } }'
SUBSCRIPTION = 'subscription { priceTicks(symbols: ["BTC", "ETH"]) { symbol usd provider } }'
REQUEST_TIMEOUT = 5.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Band:
    """The plausible prices of each symbol: within `pct` percent of the simulator's price."""

    def __init__(self, truth: dict[str, float], pct: float) -> None:
        self.truth = truth
        self.factor = 1 + pct / 100

    def bad(self, symbol: str, usd: Any) -> bool:
        true = self.truth.get(symbol)
        if true is None:
            return False
        if not isinstance(usd, int | float) or not math.isfinite(usd):
            return True
        return not (true / self.factor <= usd <= true * self.factor)

    def sql(self, column: str) -> tuple[str, list[str | float]]:
        """A WHERE clause matching rows whose `column` is outside the band (or NULL, or NaN),
        and its parameters."""
        parts: list[str] = []
        params: list[str | float] = []
        for symbol, true in self.truth.items():
            parts.append(f"(symbol = ? AND NOT coalesce({column} BETWEEN ? AND ?, 0))")
            params += [symbol, true / self.factor, true * self.factor]
        return " OR ".join(parts), params


@dataclass
class Client:
    """Queries and a subscription from 127.0.0.1, with what went wrong counted by kind."""

    url: str
    key: str
    band: Band
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"prices": [], "ohlcv": []})
    errors: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    served_bad: int = 0
    late_ticks: int = 0  # schedule slots skipped because the previous round ran long
    slowest: list[tuple[float, float, str]] = field(default_factory=list)  # (ms, at, query)
    started: float = 0.0  # trio clock at the first request
    messages: int = 0
    streamed_bad: int = 0
    gaps: list[float] = field(default_factory=list)
    longest_gap: float = 0.0
    reconnects: int = 0
    by_provider: Counter[str] = field(default_factory=Counter)

    async def query_loop(self, interval: float, until: float) -> None:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(
            transport=transport, headers=headers, timeout=REQUEST_TIMEOUT
        ) as http:
            start = self.started = trio.current_time()
            for i in range(1_000_000):
                due = start + i * interval
                if due >= until:
                    return
                if trio.current_time() > due + interval:
                    self.late_ticks += 1
                    continue
                await trio.sleep_until(due)
                await self.ask(http, "prices", Q_PRICES)
                await self.ask(http, "ohlcv", Q_OHLCV)

    async def ask(self, http: httpx.AsyncClient, name: str, query: str) -> None:
        began, at = time.perf_counter(), trio.current_time() - self.started
        try:
            with trio.fail_after(REQUEST_TIMEOUT + 1):
                response = await http.post(f"{self.url}/graphql", json={"query": query})
        except (httpx.HTTPError, trio.TooSlowError, OSError) as exc:
            self._took(name, at, (time.perf_counter() - began) * 1000)
            self.errors[f"{name}: transport {type(exc).__name__}"] += 1
            return
        self._took(name, at, (time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            self.errors[f"{name}: HTTP {response.status_code}"] += 1
            return
        try:
            body = response.json()
        except ValueError:
            self.errors[f"{name}: body not JSON"] += 1
            return
        for error in body.get("errors") or ():
            code = (error.get("extensions") or {}).get("code", "no code")
            self.errors[f"{name}: GraphQL {code}"] += 1
        for warning in (body.get("extensions") or {}).get("warnings") or ():
            code = warning.get("code", "?") if isinstance(warning, dict) else "?"
            self.warnings[f"{name}: {code}"] += 1
        data = body.get("data") or {}
        if name == "prices":
            for price in data.get("prices") or ():
                if price and self.band.bad(price["symbol"], price["usd"]):
                    self.served_bad += 1
        else:
            for candle in data.get("ohlcv") or ():
                if any(self.band.bad("BTC", candle[k]) for k in ("open", "high", "low", "close")):
                    self.served_bad += 1

    def _took(self, name: str, at: float, took_ms: float) -> None:
        self.latencies[name].append(took_ms)
        self.slowest = sorted([*self.slowest, (took_ms, at, name)], reverse=True)[:5]

    async def subscription_loop(self, until: float, gap_s: float) -> None:
        ws_url = self.url.replace("http://", "ws://") + "/graphql"
        for attempt in range(20):  # reconnects, bounded
            if trio.current_time() >= until - 1:
                return
            if attempt:
                self.reconnects += 1
                await trio.sleep(1)
            try:
                await self._subscribe(ws_url, until, gap_s)
            except (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError) as exc:
                self.errors[f"priceTicks: {type(exc).__name__}"] += 1

    async def _subscribe(self, ws_url: str, until: float, gap_s: float) -> None:
        async with open_websocket_url(
            ws_url, subprotocols=["graphql-transport-ws"], connect_timeout=5, disconnect_timeout=2
        ) as ws:
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {self.key}"}}
            await ws.send_message(json.dumps(init))
            with trio.fail_after(5):
                ack = json.loads(await ws.get_message())
            if ack.get("type") != "connection_ack":
                self.errors[f"priceTicks: {ack.get('type')} instead of an ack"] += 1
                return
            payload = {"query": SUBSCRIPTION}
            await ws.send_message(json.dumps({"type": "subscribe", "id": "s", "payload": payload}))
            last = trio.current_time()
            for _ in range(10_000_000):
                left = until - trio.current_time()
                if left <= 0:
                    return
                with trio.move_on_after(min(left, 30)):
                    message = json.loads(await ws.get_message())
                now = trio.current_time()
                if now >= until:
                    return
                quiet = now - last
                self.longest_gap = max(self.longest_gap, quiet)
                if quiet > 30:
                    self.gaps.append(quiet)
                    self.errors["priceTicks: no message for 30 s"] += 1
                    return  # reconnect
                last = now
                kind = message.get("type")
                if kind == "next":
                    self._tick(message.get("payload") or {})
                    if quiet > gap_s:
                        self.gaps.append(quiet)
                elif kind == "ping":
                    await ws.send_message(json.dumps({"type": "pong"}))
                elif kind in ("error", "complete"):
                    self.errors[f"priceTicks: {kind}"] += 1
                    return

    def _tick(self, payload: dict[str, Any]) -> None:
        if payload.get("errors"):
            self.errors["priceTicks: GraphQL error"] += len(payload["errors"])
        tick = (payload.get("data") or {}).get("priceTicks")
        if not tick:
            return
        self.messages += 1
        self.by_provider[tick.get("provider", "?")] += 1
        if self.band.bad(tick.get("symbol", ""), tick.get("usd")):
            self.streamed_bad += 1


async def warm_up(url: str, key: str) -> float:
    """Seconds until `prices` has both symbols from at least three providers (at most 30)."""
    began = trio.current_time()
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=transport, headers=headers, timeout=3) as http:
        for _ in range(120):
            if trio.current_time() - began > 30:
                break
            with trio.move_on_after(4):
                response = await http.post(f"{url}/graphql", json={"query": Q_PRICES})
                prices = (response.json().get("data") or {}).get("prices") or []
                if len([p for p in prices if p and len(p["sources"]) >= 3]) == len(SYMBOLS):
                    return trio.current_time() - began
            await trio.sleep(0.25)
    return math.nan


@dataclass
class Readiness:
    """/readyz every 0.5 s, each on a new connection (as an orchestrator's probe: a server
    out of descriptors cannot accept it), each answer labelled with the disk phase it fell in."""

    url: str
    disk: Any  # soak.DiskFull (its began/ended), or None when there is no disk-full phase
    answers: list[tuple[float, str]] = field(default_factory=list)

    async def run(self, until: float) -> None:
        transport = httpx.AsyncHTTPTransport(
            local_address="127.0.0.1", limits=httpx.Limits(max_keepalive_connections=0)
        )
        async with httpx.AsyncClient(transport=transport, timeout=3) as http:
            for _ in range(100_000):
                if trio.current_time() >= until:
                    return
                at = trio.current_time()
                try:
                    with trio.fail_after(4):
                        status = str((await http.get(f"{self.url}/readyz")).status_code)
                except (httpx.HTTPError, trio.TooSlowError, OSError) as exc:
                    status = type(exc).__name__
                self.answers.append((at, status))
                await trio.sleep(0.5)

    def by_phase(self, recovery: float = 5.0) -> dict[str, Counter[str]]:
        """Answers by status in each phase; `recovery` s after the filler went are apart (the
        gateway is ready again after its next commit succeeds)."""
        names = ("before", "disk full", "recovering", "after")
        phases: dict[str, Counter[str]] = {name: Counter() for name in names}
        for at, status in self.answers:
            if self.disk is None or at < self.disk.began:
                phases["before"][status] += 1
            elif at < self.disk.ended:
                phases["disk full"][status] += 1
            elif at < self.disk.ended + recovery:
                phases["recovering"][status] += 1
            else:
                phases["after"][status] += 1
        return phases

    def first(self, status: str, after: float) -> float:
        """Seconds from `after` to the first answer with `status`."""
        for at, seen in self.answers:
            if at >= after and seen == status:
                return at - after
        return math.nan

    def ready_again(self, began: float, ended: float) -> int:
        """200 answers between the first 503 after `began` and `ended`: a probe that flaps
        back to ready while writes still fail."""
        flaps, seen_503 = 0, False
        for at, status in self.answers:
            if began <= at < ended:
                seen_503 = seen_503 or status == "503"
                flaps += seen_503 and status == "200"
        return flaps


METRICS = (
    "gateway_ticks_quarantined_total",
    "gateway_ws_connections_refused_total",
    "gateway_ws_connection_limit",
    "gateway_ws_idle_closes_total",
    "gateway_http_requests_total",
)


async def scrape_metrics(url: str) -> dict[str, float]:
    """The samples of `METRICS` on /metrics, by their labelled name (empty if it fails)."""
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        try:
            with trio.fail_after(6):
                text = (await http.get(f"{url}/metrics")).text
        except (httpx.HTTPError, trio.TooSlowError, OSError):
            return {}
    samples = {}
    for line in text.splitlines():
        if line.startswith(METRICS):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def loop_lag(until: float, lags: list[float]) -> None:
    """How late this process's own event loop runs (10 ms sleeps): its share in the figures."""
    for _ in range(1_000_000):
        if trio.current_time() >= until:
            return
        before = trio.current_time()
        await trio.sleep(0.01)
        lags.append((trio.current_time() - before - 0.01) * 1000)

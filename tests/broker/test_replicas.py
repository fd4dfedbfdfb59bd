"""Done when (issue 15): two `gateway serve` replicas on loopback, one Redis, one database, fed
by the upstream simulator.

- subscribers spread over both replicas receive every event of the stream exactly once;
- killing the leader (SIGKILL: no goodbye) hands collection to the other within the lease, and
  the other's subscribers miss no event of the stream across the handover;
- a subscriber of the killed replica that reconnects to the other with `since:` (its last
  observedAt) gets everything after it, then live ticks, with no duplicate.

It runs twice: on a shared SQLite file (both processes write through WAL) and on one
PostgreSQL database (`store_target`, tests/conftest.py; skipped, saying why, without one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import coredis
import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.redis_server import RedisServer
from tests.simulator.rest import Simulator, run_simulator

REPO = Path(__file__).resolve().parents[2]
LEASE = 2.0
TICKS = 'subscription($s: DateTime) { priceTicks(symbols: ["BTC", "ETH"], since: $s) ' "{ symbol usd provider observedAt } }"  # fmt: skip
Key = tuple[str, str, datetime]  # provider, symbol, observedAt


def providers_toml(simulator: Simulator, path: Path) -> Path:
    path.write_text(
        "\n".join(
            f'[[provider]]\nid = "{pid}"\ncategory = "MARKET_DATA"\n'
            f'base_url = "{simulator.base_url(pid)}"\ninterval_seconds = 0.25\n'
            'timeout_seconds = 2\nsymbols = ["BTC", "ETH"]\n'
            for pid in ("coingecko", "binance")
        )
    )
    return path


class Replica:
    """One `gateway serve --broker` process with JSON logs; learns its URL from them."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.url = ""
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, name: str, providers: Path, db: Path | str, broker: str
    ) -> Replica:
        env = {
            **os.environ,
            "GATEWAY_LOG_LEVEL": "info",
            "GATEWAY_SENTIMENT_MODEL": "off",
            "GATEWAY_LEADER_LEASE": str(LEASE),
        }
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "gateway", "serve", "--port", "0", "--db", str(db),
             "--providers", str(providers), "--log-format", "json", "--broker", broker],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        replica = cls(process, name)
        ready = trio.Event()
        nursery.start_soon(replica._read_logs, ready)
        with trio.fail_after(60):
            await ready.wait()
        return replica

    async def _read_logs(self, ready: trio.Event) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                if raw.startswith(b"{"):
                    record = json.loads(raw)
                    self.events.append(record)
                    if record.get("event") == "gateway.serving":
                        self.url = record["urls"][0]
                        ready.set()

    def logged(self, event: str) -> bool:
        return any(record.get("event") == event for record in self.events)

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            query = "{ status { status broker { available leader } } }"
            response = await client.post(f"{self.url}/graphql", json={"query": query})
        return response.json()["data"]["status"]  # type: ignore[no-any-return]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


class Subscriber:
    """A graphql-transport-ws client of `priceTicks`, recording every key it receives."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.ended: str | None = None
        self.live = trio.Event()

    async def run(self, url: str, since: str | None = None) -> None:
        ws_url = url.replace("http://", "ws://") + "/graphql"
        try:
            async with open_websocket_url(ws_url, subprotocols=["graphql-transport-ws"]) as ws:
                await self._consume(ws, since)
        except Exception as exc:  # the replica was killed: the test looks at what arrived
            self.ended = repr(exc)

    async def _consume(self, ws: WebSocketConnection, since: str | None) -> None:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        with trio.fail_after(10):
            assert json.loads(await ws.get_message())["type"] == "connection_ack"
        payload = {"query": TICKS, "variables": {"s": since}}
        await ws.send_message(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
        while True:
            message = json.loads(await ws.get_message())
            if message["type"] != "next":
                self.ended = json.dumps(message)
                return
            tick = message["payload"]["data"]["priceTicks"]
            moment = datetime.fromisoformat(tick["observedAt"].replace("Z", "+00:00"))
            self.keys.append((tick["provider"], tick["symbol"], moment))
            self.live.set()


def _key(fields: dict[bytes, bytes]) -> Key:
    tick = json.loads(fields[b"e"])
    return (tick["provider"], tick["symbol"], datetime.fromisoformat(tick["observed_at"]))


async def stream_keys(redis: coredis.Redis[bytes], after: bytes, upto: bytes) -> list[Key]:
    entries = await redis.xrange("gateway:stream:prices", b"(" + after, upto)
    return [_key(dict(entry.field_values)) for entry in entries]  # type: ignore[arg-type]


async def last_id(redis: coredis.Redis[bytes]) -> bytes:
    newest = await redis.xrevrange("gateway:stream:prices", "+", "-", count=1)
    return newest[0].identifier if newest else b"0-0"  # type: ignore[return-value]


def a_slice_of(got: list[Key], stream: list[Key]) -> bool:
    """`got` is the stream from some entry on, in order, to the stream's end (and perhaps
    beyond): every event exactly once, none missing. (A key can repeat in the stream: a
    provider answering the same observation twice; the order tells the repeats apart.)"""
    return any(
        len(got) >= len(stream) - start and got[: len(stream) - start] == stream[start:]
        for start in range(len(stream))
        if stream[start] == got[0]
    )


async def moving_prices(simulator: Simulator) -> None:
    """A new, plausible BTC price at CoinGecko every 0.2 s: a steady stream of new ticks."""
    for step in range(10_000):
        simulator.set_price("BTC", 67_000 + (step % 50) * 0.5, provider="coingecko")
        await trio.sleep(0.2)


async def until(condition: Any, timeout: float, message: str) -> None:
    with trio.move_on_after(timeout):
        while not await condition():
            await trio.sleep(0.1)
        return
    raise AssertionError(message)


async def test_two_replicas_one_leader_failover_and_replay(
    redis_server: RedisServer, store_target: Path | str, tmp_path: Path
) -> None:
    db = store_target  # the shared SQLite file, or a PostgreSQL database (tests/conftest.py)
    redis = coredis.Redis.from_url(redis_server.url, decode_responses=False)
    with trio.fail_after(150):
        async with redis, run_simulator() as simulator, trio.open_nursery() as nursery:
            providers = providers_toml(simulator, tmp_path / "providers.toml")
            start = partial(Replica.start, nursery, providers=providers, db=db)
            a = await start("a", broker=redis_server.url)
            b = await start("b", broker=redis_server.url)
            replicas = [a, b]
            try:
                nursery.start_soon(moving_prices, simulator)

                async def one_leader() -> bool:
                    leaders = [(await r.status())["broker"]["leader"] for r in replicas]
                    return leaders.count(True) == 1

                await until(one_leader, 10, "no single leader")
                leader, follower = (a, b) if (await a.status())["broker"]["leader"] else (b, a)

                # -- every event, exactly once, on both replicas --------------------------------
                on_leader = [Subscriber() for _ in range(3)]
                on_follower = [Subscriber() for _ in range(3)]
                for subscriber in on_leader:
                    nursery.start_soon(subscriber.run, leader.url)
                for subscriber in on_follower:
                    nursery.start_soon(subscriber.run, follower.url)
                with trio.fail_after(20):
                    for subscriber in on_leader + on_follower:
                        await subscriber.live.wait()
                await trio.sleep(3)
                window_end = await last_id(redis)
                stream = await stream_keys(redis, b"0-0", window_end)
                assert len(stream) >= 10, "ticks flow through the stream"

                async def all_exactly_once() -> bool:
                    return all(a_slice_of(s.keys, stream) for s in on_leader + on_follower)

                await until(all_exactly_once, 10, "not every event exactly once on each replica")

                # -- the leader dies; the follower takes over within the lease -------------------
                reconnecting = on_leader[0]
                leader.process.send_signal(signal.SIGKILL)
                killed_at = trio.current_time()
                await leader.process.wait()
                replicas.remove(leader)
                before_kill = await last_id(redis)

                async def follower_leads() -> bool:
                    return bool((await follower.status())["broker"]["leader"])

                await until(follower_leads, LEASE * 3, "the follower did not take over")
                took = trio.current_time() - killed_at
                assert took <= LEASE + LEASE / 5 + 1.5, took  # + status polling and load slack

                async def stream_moves() -> bool:
                    return await last_id(redis) > before_kill

                await until(stream_moves, 10, "collection did not resume")
                await trio.sleep(2)
                stream = await stream_keys(redis, b"0-0", await last_id(redis))

                async def followers_have_all() -> bool:
                    return all(a_slice_of(s.keys, stream) for s in on_follower)

                await until(followers_have_all, 10, "an event lost or doubled across the handover")

                # -- the killed replica's subscriber reconnects to the other with since ----------
                assert reconnecting.keys, "it had received ticks"
                last_seen = max(k[2] for k in reconnecting.keys)
                resumed = Subscriber()
                nursery.start_soon(resumed.run, follower.url, last_seen.isoformat())
                await trio.sleep(3)
                stream = await stream_keys(redis, b"0-0", await last_id(redis))
                wanted = {k for k in stream if k[2] > last_seen}

                async def caught_up() -> bool:
                    return wanted <= set(resumed.keys)

                await until(caught_up, 10, "the reconnected subscriber missed a tick")
                assert all(k[2] > last_seen for k in resumed.keys)
                # No duplicate: a key comes at most as often as the stream carried it (a
                # provider may answer one observation twice), and a key it carried once, once.
                got, carried = Counter(resumed.keys), Counter(stream)
                assert all(n <= max(carried[k], 1) for k, n in got.items()), got
                assert all(got[k] == 1 for k in wanted if carried[k] == 1)

                # -- and the leader stops as one process does: SIGTERM, exit 0 within 5 s ------
                stopping = trio.current_time()
                await follower.stop()
                assert follower.process.returncode == 0
                assert trio.current_time() - stopping < 5
            finally:
                for replica in replicas:
                    await replica.stop()
                nursery.cancel_scope.cancel()

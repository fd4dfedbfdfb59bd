"""End to end: the real `gateway serve` process against the upstream simulator.

A price changed at the simulated CoinGecko reaches a WebSocket subscriber within 2 s; the
gateway is stopped with SIGTERM, started again on the same database, and the history is
still there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.simulator.rest import Fault, Simulator, run_simulator

REPO = Path(__file__).resolve().parent.parent


def providers_toml(simulator: Simulator, path: Path) -> Path:
    path.write_text(
        "\n".join(
            f'[[provider]]\nid = "{pid}"\ncategory = "MARKET_DATA"\n'
            f'base_url = "{simulator.base_url(pid)}"\ninterval_seconds = 0.25\ntimeout_seconds = 2\n'
            f'symbols = ["BTC", "ETH"]\n'
            for pid in ("coingecko", "binance")
        )
    )
    return path


class GatewayProcess:
    """`python -m gateway serve --port 0` with JSON logs; learns its URL from the log."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.url = ""
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    @classmethod
    async def start(cls, nursery: trio.Nursery, providers: Path, db: Path) -> GatewayProcess:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--port",
                "0",
                "--db",
                str(db),
                "--providers",
                str(providers),
                "--log-format",
                "json",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,  # logs go to stderr
            env={**os.environ, "GATEWAY_LOG_LEVEL": "info"},
        )
        gateway = cls(process)
        ready = trio.Event()
        nursery.start_soon(gateway._read_logs, ready)
        with trio.fail_after(20):
            await ready.wait()
        return gateway

    async def _read_logs(self, ready: trio.Event) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for raw in lines:
                if not raw.startswith(b"{"):
                    continue
                record = json.loads(raw)
                self.lines.append(record)
                if record.get("event") == "gateway.serving":
                    self.url = record["urls"][0]
                    ready.set()

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            return await self.process.wait()


async def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            f"{url}/graphql", json={"query": query, "variables": variables}
        )
    return response.json()  # type: ignore[no-any-return]


async def test_price_flows_from_upstream_to_subscriber_and_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    async with run_simulator() as simulator, trio.open_nursery() as nursery:
        providers = providers_toml(simulator, tmp_path / "providers.toml")
        first = await GatewayProcess.start(nursery, providers, db)
        ws_url = first.url.replace("http://", "ws://") + "/graphql"
        subscription = 'subscription { priceTicks(symbols: ["BTC"]) { usd provider observedAt } }'
        async with open_websocket_url(ws_url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send_message(json.dumps({"type": "connection_init"}))
            with trio.fail_after(5):
                assert json.loads(await ws.get_message())["type"] == "connection_ack"
            await ws.send_message(
                json.dumps({"type": "subscribe", "id": "t", "payload": {"query": subscription}})
            )
            with trio.fail_after(5):  # collectors are polling: ticks flow
                assert json.loads(await ws.get_message())["type"] == "next"
            # (a plausible move: a jump to a wild value would be quarantined, never streamed)
            simulator.set_price("BTC", 67_400.5, provider="coingecko")
            changed_at = trio.current_time()
            with trio.fail_after(2):
                while True:
                    message = json.loads(await ws.get_message())
                    tick = message["payload"]["data"]["priceTicks"]
                    if tick["usd"] == 67_400.5:
                        break
            assert tick["provider"] == "coingecko"
            assert trio.current_time() - changed_at < 2

        # a failing upstream does not take the gateway down
        simulator.inject("binance", Fault.status(500, times=3))
        simulator.inject("coingecko", Fault.malformed(times=2))
        await trio.sleep(1)
        assert (await graphql(first.url, "{ status { version } }"))["data"]["status"]["version"]
        assert await first.stop() == 0

        second = await GatewayProcess.start(nursery, providers, db)
        simulator.clear_faults()
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        query = """query($from: DateTime!) {
          priceHistory(symbol: "BTC", from: $from, interval: M1) { close provider }
          prices(symbols: ["BTC"]) { usd sources }
        }"""
        response = await graphql(second.url, query, {"from": since})
        assert "errors" not in response, response
        data = response["data"]
        assert data["priceHistory"], "history written before the restart is readable after it"
        assert data["prices"][0]["usd"] > 0
        # the tick the subscriber saw is in the stored history
        replay = 'subscription($s: DateTime) { priceTicks(symbols: ["BTC"], since: $s) { usd provider } }'
        async with open_websocket_url(
            second.url.replace("http://", "ws://") + "/graphql",
            subprotocols=["graphql-transport-ws"],
        ) as ws:
            await ws.send_message(json.dumps({"type": "connection_init"}))
            await ws.get_message()
            payload = {"query": replay, "variables": {"s": since}}
            await ws.send_message(json.dumps({"type": "subscribe", "id": "r", "payload": payload}))
            seen = []
            with trio.fail_after(5):
                while 67_400.5 not in seen:
                    message = json.loads(await ws.get_message())
                    seen.append(message["payload"]["data"]["priceTicks"]["usd"])
        assert await second.stop() == 0
        nursery.cancel_scope.cancel()

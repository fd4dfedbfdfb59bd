"""A live stream's connection state on the provider board, end to end.

The gateway runs a Kraken stream against the WebSocket simulator. What it shows of the stream
(`provider(id:)`, `providerStates`, alerts) is what the status board is told by the stream
client; the finer cases (silence, counting failures) are in tests/sources/test_streams.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from gateway.config import ProviderConfig, ProvidersFile
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway, streams_live
from tests.simulator.ws import run_ws_simulator

PROVIDER = '{ provider(id: "kraken-stream") { state stateReason lastSuccessAt lastError } }'


async def graphql(running: RunningGateway, query: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
        body = (await client.post("/graphql", json={"query": query})).json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def provider_state(running: RunningGateway) -> dict[str, Any]:
    return (await graphql(running, PROVIDER))["provider"]  # type: ignore[no-any-return]


async def test_a_streams_state_follows_its_connection_and_raises_alerts(
    start_gateway: StartGateway,
) -> None:
    async with run_ws_simulator() as exchanges:
        kraken = ProviderConfig(
            id="kraken-stream",
            name="Kraken stream",
            categories=("MARKET_DATA",),
            base_url=exchanges.url("kraken"),
            timeout_seconds=2,
        )
        running = await start_gateway(providers=ProvidersFile((kraken,)), symbols=("BTC",))
        board = running.services.status_board
        with trio.fail_after(5):
            while board.state("kraken-stream") != "ONLINE":
                await trio.sleep(0.02)
        fed = await provider_state(running)
        assert fed["state"] == "ONLINE" and fed["stateReason"] == "connected"
        assert fed["lastSuccessAt"] is not None and fed["lastError"] is None

        url = running.urls[0].replace("http://", "ws://") + "/graphql"
        async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send_message(json.dumps({"type": "connection_init"}))
            await ws.get_message()
            for op, query in (
                ("s", "subscription { providerStates { provider oldState newState reason } }"),
                ("a", "subscription { alerts { kind provider message } }"),
            ):
                payload = {"query": query}
                await ws.send_message(
                    json.dumps({"type": "subscribe", "id": op, "payload": payload})
                )
            hub = running.services.hub
            assert hub is not None
            with trio.fail_after(3):
                while not (hub.member_count == 2 and streams_live(running)):
                    await trio.sleep(0.01)

            # The exchange goes away, and refuses the next two connections: the stream is
            # DEGRADED at once, OFFLINE after the third failure in a row, then back.
            exchanges.reject_connections("kraken", 2)
            await exchanges.drop("kraken", abort=True)
            with trio.fail_after(3):
                while board.state("kraken-stream") == "ONLINE":
                    await trio.sleep(0.01)
            dropped = await provider_state(running)
            assert dropped["state"] == "DEGRADED"
            assert dropped["stateReason"].startswith("disconnected: ")
            assert dropped["lastError"] == dropped["stateReason"]
            assert dropped["lastSuccessAt"] >= fed["lastSuccessAt"]

            seen: dict[str, list[dict[str, Any]]] = {"s": [], "a": []}
            with trio.fail_after(15):
                while not any(a["kind"] == "provider_recovered" for a in seen["a"]):
                    message = json.loads(await ws.get_message())
                    if message["type"] == "next":
                        (value,) = message["payload"]["data"].values()
                        seen[message["id"]].append(value)
            changes = [(c["oldState"], c["newState"]) for c in seen["s"]]
            assert changes == [
                ("ONLINE", "DEGRADED"),
                ("DEGRADED", "OFFLINE"),
                ("OFFLINE", "ONLINE"),
            ]
            assert {c["provider"] for c in seen["s"]} == {"kraken-stream"}
            offline = seen["s"][1]["reason"]
            assert offline.startswith("connect failed: ") and "3 failures in a row" in offline
            assert [a["kind"] for a in seen["a"]] == ["provider_offline", "provider_recovered"]
            assert (
                seen["a"][0]["provider"] == "kraken-stream" and offline in seen["a"][0]["message"]
            )

        back = await provider_state(running)
        assert back["state"] == "ONLINE" and back["lastSuccessAt"] > dropped["lastSuccessAt"]

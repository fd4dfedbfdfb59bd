"""Chain data through GraphQL against the upstream simulator, with no API keys at all: the
`chainHeads` and `gas` queries and subscriptions answer real-shaped data from the free paths
(public JSON-RPC nodes, mempool.space, Blockchair, TronGrid); a lagging node shows; an RPC pool
refuses another chain's node with nothing changed, at runtime and in providers.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from gateway.config import ProvidersFile
from gateway.nursery import RunningGateway
from gateway.storage import PoolRecord, ProviderStore
from tests.conftest import StartGateway, graphql, wait_members
from tests.simulator.rest import Simulator, run_simulator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator() as simulator:
        yield simulator


def free_providers(sim: Simulator) -> ProvidersFile:
    """Only what needs no key: public nodes of two chains, mempool.space, Blockchair, TronGrid."""
    if "bsc-a" not in sim.evm.nodes:
        sim.evm.add_node("bsc-a", "bsc")
    fast = {"timeout_seconds": 1.0}
    return ProvidersFile(
        (
            sim.rpc_provider("rpc-a", priority=1, **fast),
            sim.rpc_provider("rpc-b", priority=2, **fast),
            sim.rpc_provider("bsc-a", **fast),
            sim.provider("mempool", categories=("EXPLORER",), chain="bitcoin", **fast),
            sim.provider("blockchair", categories=("EXPLORER",), priority=2, **fast),
            sim.provider("trongrid", categories=("RPC",), chain="tron", **fast),
        )
    )


async def start(start_gateway: StartGateway, sim: Simulator, **settings: Any) -> RunningGateway:
    return await start_gateway(
        providers=free_providers(sim),
        chain_heads_interval=0.2,
        gas_interval=0.2,
        allow_admin_mutations=True,
        tier_free_per_minute=0,  # the tests poll
        **settings,
    )


HEADS = (
    "{ chainHeads { chain blockNumber provider lagBlocks nodes { provider lagBlocks lagging } } }"
)


async def test_without_keys_chain_heads_and_gas_answer_from_the_free_paths(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    body = await graphql(running, HEADS)
    assert "errors" not in body, body
    heads = {head["chain"]: head for head in body["data"]["chainHeads"]}
    assert set(heads) == {"bitcoin", "bsc", "ethereum", "tron"}
    assert heads["ethereum"]["blockNumber"] == sim.evm.chain("ethereum").head
    assert heads["bsc"]["blockNumber"] == sim.evm.chain("bsc").head
    assert heads["bitcoin"] == {
        "chain": "bitcoin",
        "blockNumber": sim.chain_apis.bitcoin_height,
        "provider": "mempool",
        "lagBlocks": 0,
        "nodes": [{"provider": "mempool", "lagBlocks": 0, "lagging": False}],
    }
    assert heads["tron"]["blockNumber"] == sim.chain_apis.tron_height
    assert {n["provider"] for n in heads["ethereum"]["nodes"]} == {"rpc-a", "rpc-b"}

    gas = await graphql(
        running,
        """{ eth: gas(chain: "ethereum") { chain slowGwei standardGwei fastGwei baseFeeGwei
                unit method provider observedAt }
             btc: gas(chain: "Bitcoin") { slowGwei standardGwei fastGwei unit method } }""",
    )
    assert "errors" not in gas, gas
    eth = gas["data"]["eth"]
    assert (eth["method"], eth["unit"], eth["baseFeeGwei"]) == ("FEE_HISTORY", "gwei", 20.0)
    assert eth["slowGwei"] < eth["standardGwei"] < eth["fastGwei"]
    assert gas["data"]["btc"] == {
        "slowGwei": 7.0,
        "standardGwei": 9.0,
        "fastGwei": 12.0,
        "unit": "sat/vB",
        "method": "MEMPOOL",
    }


async def test_a_lagging_node_shows_degraded_and_the_head_is_the_highest(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    sim.evm.lag("rpc-a", 12)
    running = await start(start_gateway, sim)
    with trio.fail_after(5):
        while True:
            state = (await graphql(running, '{ provider(id: "rpc-a") { state stateReason } }'))[
                "data"
            ]["provider"]
            if state["state"] == "DEGRADED":
                break
            await trio.sleep(0.05)
    assert "lagging 12 blocks" in state["stateReason"]
    body = await graphql(running, HEADS)
    eth = next(h for h in body["data"]["chainHeads"] if h["chain"] == "ethereum")
    assert (eth["blockNumber"], eth["provider"]) == (sim.evm.chain("ethereum").head, "rpc-b")
    nodes = {n["provider"]: n for n in eth["nodes"]}
    assert nodes["rpc-a"] == {"provider": "rpc-a", "lagBlocks": 12, "lagging": True}


async def test_subscriptions_stream_new_heads_and_gas(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    chain = sim.evm.chain("ethereum")
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        await ws.get_message()
        for op, query in (
            ("h", "subscription { chainHeads { chain blockNumber provider } }"),
            ("g", 'subscription { gas(chain: "ethereum") { chain method standardGwei } }'),
        ):
            await ws.send_message(
                json.dumps({"type": "subscribe", "id": op, "payload": {"query": query}})
            )
        await wait_members(running, 2)
        chain.add_blocks(3)
        seen: dict[str, list[dict[str, Any]]] = {"h": [], "g": []}
        with trio.fail_after(10):
            while not (
                any(h["blockNumber"] == chain.head for h in seen["h"] if h["chain"] == "ethereum")
                and seen["g"]
            ):
                message = json.loads(await ws.get_message())
                if message["type"] == "next":
                    (value,) = message["payload"]["data"].values()
                    seen[message["id"]].append(value)
    assert {g["chain"] for g in seen["g"]} == {"ethereum"}
    assert seen["g"][0]["method"] == "FEE_HISTORY"


async def test_gas_for_a_chain_without_gas_data_is_bad_user_input(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    body = await graphql(running, '{ gas(chain: "solana") { fastGwei } }')
    error = body["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "bitcoin, bsc, ethereum" in error["message"]


async def test_an_rpc_pool_refuses_a_node_of_another_chain_and_nothing_changes(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    body = await graphql(
        running, 'mutation { addPoolMember(pool: "rpc-bsc", provider: "rpc-a") { id } }'
    )
    error = body["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "serves chain ethereum, but pool 'rpc-bsc' serves bsc" in error["message"]
    pools = await graphql(running, "{ pools { id members { provider { id } } } }")
    members = {p["id"]: [m["provider"]["id"] for m in p["members"]] for p in pools["data"]["pools"]}
    assert members["rpc-bsc"] == ["bsc-a"]
    heads = await graphql(running, "{ chainHeads { chain } }")
    assert "bsc" in {h["chain"] for h in heads["data"]["chainHeads"]}
    # a node of the pool's own chain is still welcome
    sim.evm.add_node("bsc-b", "bsc")
    ok = await graphql(
        running, 'mutation { addPoolMember(pool: "rpc-ethereum", provider: "rpc-b") { id } }'
    )
    assert "errors" not in ok, ok


async def test_a_pool_saved_with_another_chains_node_drops_it_at_start(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    store = ProviderStore(running.services.storage)
    await store.save_pool(  # what the unchecked mutation used to persist
        PoolRecord(
            "rpc-bsc", "BNB Chain", "RPC", "PRIORITY", (("bsc-a", 1, 1.0), ("rpc-a", 1, 1.0))
        )
    )
    running.gateway.shutdown.set()
    with trio.fail_after(10):
        await running.gateway.stopped.wait()
    again = await start(start_gateway, sim)
    pools = await graphql(again, "{ pools { id members { provider { id } } } }")
    members = {p["id"]: [m["provider"]["id"] for m in p["members"]] for p in pools["data"]["pools"]}
    assert members["rpc-bsc"] == ["bsc-a"]
    heads = await graphql(again, "{ chainHeads { chain } }")
    assert "bsc" in {h["chain"] for h in heads["data"]["chainHeads"]}


PROVIDERS_TOML = """
[[provider]]
id = "eth-node"
category = ["RPC"]
chain = "ethereum"
base_url = "http://127.0.0.1:9"

[[pool]]
id = "rpc-bsc"
category = "RPC"
members = ["eth-node"]
"""


def test_a_declared_rpc_pool_of_another_chains_nodes_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(PROVIDERS_TOML)
    quiet = tmp_path / "quiet.env"
    quiet.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--db", str(tmp_path / "g.db")],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "GATEWAY_PROVIDERS": str(path), "GATEWAY_ENV_FILE": str(quiet)},
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert "pool 'rpc-bsc' is the pool of chain bsc, but its members serve ethereum" in (
        result.stderr
    )

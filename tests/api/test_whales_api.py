"""Whale tracking end to end against the simulator, with no API keys at all: a block holding a
2 M USD USDT transfer becomes exactly one WhaleTransaction (amount, labels, USD value at the
gateway's own USDT consensus) delivered to a subscriber; replaying the block adds nothing; a
reorg withdraws it; and the free explorer, DEX and Bitcoin paths answer real-shaped data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.config import ProvidersFile
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway, graphql, wait_members
from tests.simulator.jsonrpc import address, transfer_log
from tests.simulator.onchain import btc_tx
from tests.simulator.rest import Simulator, run_simulator

USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
BINANCE_14 = "0x28c6c06298d514db089934071355e5743bf21d60"
COINBASE_10 = "0xa9d1e08c7793af67e9d92fe308d5697fb81d3e43"
USDT_PRICE = 1.0003  # the simulator's USDT quote (fixtures/simulator_listings.json)
FIELDS = (
    "chain hash fromAddress toAddress fromLabel toLabel asset amount amountUsd at provider "
    "priceUsd blockNumber blockHash logIndex removed"
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator() as simulator:
        yield simulator


def free_providers(sim: Simulator) -> ProvidersFile:
    """Only what needs no key: a public node, CoinGecko prices, the free explorers and DEX data."""
    fast = {"timeout_seconds": 1.0}
    return ProvidersFile(
        (
            sim.rpc_provider("rpc-a", **fast),
            sim.provider("coingecko", interval_seconds=0.5, **fast),
            sim.provider("mempool", categories=("EXPLORER",), chain="bitcoin", **fast),
            sim.provider("blockscout", categories=("EXPLORER",), chain="ethereum", **fast),
            sim.provider("ethplorer", categories=("EXPLORER",), chain="ethereum", **fast),
            sim.provider("defillama-dexs", categories=("ONCHAIN",), **fast),
            sim.provider("defillama-yields", categories=("ONCHAIN",), **fast),
        )
    )


async def start(start_gateway: StartGateway, sim: Simulator, **settings: Any) -> RunningGateway:
    running = await start_gateway(
        providers=free_providers(sim),
        symbols=("ETH",),  # USDT is collected because whale tracking prices by it
        whale_poll_seconds=0.1,
        chain_heads_interval=0.5,
        **settings,
    )
    # Wait until the gateway has its own USDT consensus and the watch has seen the head.
    with trio.fail_after(10):
        while True:
            body = await graphql(running, '{ prices(symbols: ["USDT", "BTC"]) { symbol usd } }')
            if len((body.get("data") or {}).get("prices") or []) == 2:
                break
            await trio.sleep(0.05)
    return running


@asynccontextmanager
async def subscribed(running: RunningGateway) -> AsyncIterator[WebSocketConnection]:
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        await ws.get_message()
        query = f"subscription {{ whaleTransactions {{ {FIELDS} }} }}"
        await ws.send_message(
            json.dumps({"type": "subscribe", "id": "w", "payload": {"query": query}})
        )
        await wait_members(running, 1)
        yield ws


async def next_whale(ws: WebSocketConnection) -> dict[str, Any]:
    message = json.loads(await ws.get_message())
    assert message["type"] == "next", message
    return message["payload"]["data"]["whaleTransactions"]  # type: ignore[no-any-return]


async def nothing_more(ws: WebSocketConnection, seconds: float) -> None:
    with trio.move_on_after(seconds):
        message = await ws.get_message()
        raise AssertionError(f"unexpected message {message}")


def usdt_block(sim: Simulator, amount: int) -> Any:
    return sim.evm.chain("ethereum").add_block(
        transactions=[{"from": address("hot wallet"), "to": USDT}],
        logs=[transfer_log(USDT, BINANCE_14, COINBASE_10, amount * 10**6)],
    )


async def stored(running: RunningGateway) -> list[dict[str, Any]]:
    body = await graphql(running, f'{{ whaleTransactions(chain: "ethereum") {{ {FIELDS} }} }}')
    assert "errors" not in body, body
    return body["data"]["whaleTransactions"]  # type: ignore[no-any-return]


async def until(condition: Any) -> None:
    while not await condition():
        await trio.sleep(0.05)


async def test_a_two_million_usdt_transfer_is_one_whale_delivered_then_withdrawn_on_reorg(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    async with subscribed(running) as ws:
        block = usdt_block(sim, 2_000_000)
        with trio.fail_after(10):
            whale = await next_whale(ws)
        assert whale["chain"] == "ethereum" and whale["asset"] == "USDT"
        assert whale["amount"] == 2_000_000
        assert whale["amountUsd"] == pytest.approx(2_000_000 * USDT_PRICE)
        assert whale["priceUsd"] == pytest.approx(USDT_PRICE)
        assert (whale["fromLabel"], whale["toLabel"]) == ("Binance 14", "Coinbase 10")
        assert (whale["fromAddress"], whale["toAddress"]) == (BINANCE_14, COINBASE_10)
        assert whale["hash"] == block.transactions[0]["hash"] and whale["logIndex"] == 0
        assert (whale["blockNumber"], whale["blockHash"]) == (block.number, block.hash)
        assert whale["provider"] == "chain-scan" and whale["removed"] is False
        await nothing_more(ws, 0.5)  # exactly one
        assert await stored(running) == [whale]

    # A restart on the same database, the node one block behind: the new detector starts
    # there, and when the node catches up it reads the whale's block again, while a client
    # listens. Nothing new is published or stored.
    running.gateway.shutdown.set()
    with trio.fail_after(10):
        await running.gateway.stopped.wait()
    sim.evm.pin("rpc-a", block.number - 1)
    running = await start(start_gateway, sim)
    node = sim.evm.node("rpc-a")
    async with subscribed(running) as ws:
        reads = node.calls["eth_getLogs"]
        sim.evm.lag("rpc-a", 0)
        with trio.fail_after(10):
            while node.calls["eth_getLogs"] == reads:  # the detector read the whale's block
                await trio.sleep(0.02)
        await nothing_more(ws, 0.5)
        assert await stored(running) == [whale]

        # A reorg replaces the block (and the chain grows past it): the transfer is withdrawn.
        sim.evm.chain("ethereum").reorg(
            1, [{"transactions": [{"from": address(1), "to": address(2), "value": 1}]}, {}]
        )
        with trio.fail_after(10):
            withdrawn = await next_whale(ws)
        assert withdrawn == {**whale, "removed": True}
        with trio.fail_after(5):
            await until(lambda: _empty(running))


async def _empty(running: RunningGateway) -> bool:
    return await stored(running) == []


async def test_below_the_threshold_nothing_is_reported(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    async with subscribed(running) as ws:
        usdt_block(sim, 900_000)
        sim.evm.chain("ethereum").add_blocks(2)
        await nothing_more(ws, 1.0)
    assert await stored(running) == []
    # A lower minUsd than the tracking threshold says why it finds nothing smaller.
    body = await graphql(running, "{ whaleTransactions(minUsd: 1000) { hash } }")
    assert body["data"]["whaleTransactions"] == []
    assert body["extensions"]["warnings"][0]["code"] == "BELOW_THRESHOLD"


async def test_free_paths_answer_real_shaped_data_with_no_keys(
    start_gateway: StartGateway, sim: Simulator
) -> None:
    running = await start(start_gateway, sim)
    # A large Bitcoin transfer in a new block (mempool.space), priced by our BTC consensus.
    sim.onchain.bitcoin.add_block(
        [btc_tx("whale", [("3M219KR5vEneNb47ewrPfWyb5jQ2DjxRP6", 2_000 * 10**8)],
                [("bc1ql49ydapnjafl5t2cp9zqpjwe6pdgmxy98859v2", 1_500 * 10**8),
                 ("3M219KR5vEneNb47ewrPfWyb5jQ2DjxRP6", 499 * 10**8)])]
    )  # fmt: skip
    usdt_block(sim, 5_000_000)
    query = (
        "{ whaleTransactions { chain asset amount amountUsd fromLabel toLabel provider } "
        "dexPools(limit: 2) { chain dex pair tvlUsd volume24hUsd provider observedAt } "
        'networkStats(chain: "ethereum") { provider metric value } }'
    )
    with trio.fail_after(15):
        while True:
            body = await graphql(running, query)
            data = body.get("data") or {}
            whales = data.get("whaleTransactions") or []
            if len(whales) == 2 and data.get("dexPools") and len(data.get("networkStats", [])) > 5:
                break
            await trio.sleep(0.1)
    assert "errors" not in body, body
    by_chain = {w["chain"]: w for w in whales}
    btc = by_chain["bitcoin"]
    assert btc["asset"] == "BTC" and btc["amount"] == 1_500  # the change is not counted
    assert btc["fromLabel"] == "Binance" and btc["toLabel"] == "Robinhood"
    assert by_chain["ethereum"]["amountUsd"] == pytest.approx(5_000_000 * USDT_PRICE)
    assert {w["provider"] for w in whales} == {"chain-scan"}
    pools = data["dexPools"]
    assert pools[0]["pair"] == "USDC-WETH" and pools[0]["provider"] == "defillama-yields"
    assert pools[0]["tvlUsd"] >= pools[1]["tvlUsd"]
    metrics = {(s["provider"], s["metric"]) for s in data["networkStats"]}
    assert ("blockscout", "total_transactions") in metrics
    assert ("ethplorer", "last_block") in metrics
    eth_only = await graphql(running, '{ dexPools(chain: "Ethereum") { chain } }')
    assert {p["chain"] for p in eth_only["data"]["dexPools"]} == {"ethereum"}


async def test_bad_arguments_are_refused(start_gateway: StartGateway, sim: Simulator) -> None:
    running = await start_gateway(providers=ProvidersFile(()))
    for query in (
        "{ whaleTransactions(limit: 0) { hash } }",
        "{ whaleTransactions(minUsd: -5) { hash } }",
        "{ dexPools(limit: 1000) { pair } }",
        '{ whaleTransactions(chain: "' + "x" * 100 + '") { hash } }',
    ):
        body = await graphql(running, query)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", query
    empty = await graphql(running, "{ dexPools { pair } }")
    assert empty["data"]["dexPools"] == []
    assert empty["extensions"]["warnings"][0]["code"] == "NO_DATA"

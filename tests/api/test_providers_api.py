"""Providers, pools, health and alerts through GraphQL, against the upstream simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from gateway.config import (
    AuthSpec,
    BreakerSpec,
    HealthCheckSpec,
    ProviderConfig,
    ProvidersFile,
    RateLimitWindow,
)
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway, streams_live
from tests.simulator.rest import Fault, Simulator, run_simulator

FAST_HEALTH = 0.2


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with run_simulator() as sim:
        yield sim


def providers_for(sim: Simulator) -> ProvidersFile:
    ping = HealthCheckSpec(path="/ping", interval_seconds=FAST_HEALTH)
    rpc_health = HealthCheckSpec(
        method="POST",
        json_body={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        expect_json_key="result",
        interval_seconds=FAST_HEALTH,
    )
    coingecko = sim.provider(
        "coingecko",
        interval_seconds=60,
        health=replace(ping, expect_json_key="gecko_says"),
        # An optional key left unset (as COINGECKO_API_KEY usually is): keyless, not missing.
        auth=AuthSpec(
            kind="header", name="x-cg-demo-api-key", env="GATEWAY_TEST_NEVER_SET_KEY", required=False
        ),
    )
    binance = sim.provider(
        "binance",
        interval_seconds=60,
        health=ping,
        breaker=BreakerSpec(failure_threshold=2, cooldown_seconds=60),
        rate_limits=(RateLimitWindow(1000, 60, "minute"),),
    )
    rpc = [
        sim.provider(
            node,
            categories=("RPC",),
            chain="ethereum",
            priority=n,
            timeout_seconds=0.5,
            health=rpc_health,
        )
        for n, node in enumerate(("rpc-a", "rpc-b"), start=1)
    ]
    keyed = ProviderConfig(
        id="keyed",
        name="Needs a key",
        categories=("MARKET_DATA",),
        base_url="http://127.0.0.1:9/never-called",
        tier="B",
        auth=AuthSpec(kind="query", name="apikey", env="GATEWAY_TEST_NEVER_SET_KEY"),
        health=ping,
    )
    paid = ProviderConfig(
        id="paid",
        name="Paid only",
        categories=("SENTIMENT",),
        base_url="https://paid.example",
        tier="C",
        enabled=False,
        disabled_reason="paid only",
    )
    return ProvidersFile((coingecko, binance, *rpc, keyed, paid))


async def graphql(
    running: RunningGateway, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
        response = await client.post("/graphql", json={"query": query, "variables": variables})
    return response.json()  # type: ignore[no-any-return]


async def wait_for(predicate: Any, timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


PROVIDERS = """{ providers { id state circuit tier requiresKey keyConfigured enabled
  rateLimits { window limit used } lastCheckedAt successRate } }"""


async def test_providers_report_health_keys_and_limits(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    running = await start_gateway(providers=providers_for(simulator))
    board = running.services.status_board
    await wait_for(lambda: board.state("binance") == "ONLINE" and board.state("rpc-b") == "ONLINE")
    body = await graphql(running, PROVIDERS)
    by_id = {p["id"]: p for p in body["data"]["providers"]}
    assert by_id["binance"]["state"] == "ONLINE" and by_id["binance"]["circuit"] == "CLOSED"
    assert by_id["binance"]["rateLimits"][0]["window"] == "minute"
    assert by_id["binance"]["rateLimits"][0]["used"] >= 1
    assert by_id["keyed"]["state"] == "UNCONFIGURED"
    assert by_id["keyed"]["requiresKey"] is True and by_id["keyed"]["keyConfigured"] is False
    assert by_id["paid"]["state"] == "UNCONFIGURED" and by_id["paid"]["enabled"] is False
    # keyConfigured means "a key is set": an unset optional key is not, yet it still runs.
    assert by_id["coingecko"]["keyConfigured"] is False
    assert by_id["coingecko"]["requiresKey"] is False
    assert by_id["coingecko"]["state"] != "UNCONFIGURED"
    # an UNCONFIGURED provider is never called
    client = running.services.registry.client  # type: ignore[union-attr]
    assert not any(provider == "keyed" for provider, _ in client.counters)
    one = await graphql(
        running, '{ provider(id: "coingecko") { name tier } nope: provider(id: "x") { id } }'
    )
    assert one["data"] == {"provider": {"name": "coingecko", "tier": "A"}, "nope": None}


async def test_admin_mutations_are_forbidden_by_default(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    running = await start_gateway(providers=providers_for(simulator))
    body = await graphql(
        running, 'mutation { createPool(name: "x", category: RPC, strategy: PRIORITY) { id } }'
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] is None
    pools = await graphql(running, "{ pools { id } }")
    assert "x" not in [p["id"] for p in pools["data"]["pools"]]


async def test_pool_mutations_and_rotation_history(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    running = await start_gateway(providers=providers_for(simulator), allow_admin_mutations=True)
    created = await graphql(
        running,
        'mutation { createPool(name: "My nodes", category: RPC, strategy: ROUND_ROBIN) { id strategy members { priority } } }',
    )
    pool = created["data"]["createPool"]
    assert pool == {"id": "my-nodes", "strategy": "ROUND_ROBIN", "members": []}
    for node, priority in (("rpc-a", 1), ("rpc-b", 2)):
        added = await graphql(
            running,
            "mutation($p: ID!, $n: ID!, $prio: Int!) { addPoolMember(pool: $p, provider: $n, priority: $prio) { members { provider { id } priority } } }",
            {"p": "my-nodes", "n": node, "prio": priority},
        )
        assert "errors" not in added, added
    wrong = await graphql(
        running, 'mutation { addPoolMember(pool: "my-nodes", provider: "binance") { id } }'
    )
    assert wrong["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    rotated = await graphql(running, 'mutation { rotatePool(id: "my-nodes") { current { id } } }')
    assert rotated["data"]["rotatePool"]["current"]["id"] == "rpc-b"
    history_query = '{ rotationHistory(pool: "my-nodes") { fromProvider toProvider reason } }'
    await wait_for(lambda: True)
    with trio.fail_after(5):
        while not (history := (await graphql(running, history_query))["data"]["rotationHistory"]):
            await trio.sleep(0.05)
    assert history[0] == {"fromProvider": "rpc-a", "toProvider": "rpc-b", "reason": "manual"}
    removed = await graphql(
        running,
        'mutation { removePoolMember(pool: "my-nodes", provider: "rpc-a") { members { provider { id } } } }',
    )
    assert removed["data"]["removePoolMember"]["members"] == [{"provider": {"id": "rpc-b"}}]
    assert (await graphql(running, 'mutation { deletePool(id: "my-nodes") }'))["data"] == {
        "deletePool": True
    }
    assert (await graphql(running, 'mutation { deletePool(id: "my-nodes") }'))["data"] == {
        "deletePool": False
    }


async def test_pools_survive_a_restart(start_gateway: StartGateway, simulator: Simulator) -> None:
    providers = providers_for(simulator)
    first = await start_gateway(providers=providers, allow_admin_mutations=True)
    await graphql(
        first, 'mutation { createPool(name: "Kept", category: RPC, strategy: LEAST_USED) { id } }'
    )
    await graphql(
        first, 'mutation { addPoolMember(pool: "kept", provider: "rpc-b", weight: 2.5) { id } }'
    )
    first.gateway.shutdown.set()
    with trio.fail_after(10):
        await first.gateway.stopped.wait()
    second = await start_gateway(providers=providers)
    pools = {
        p["id"]: p
        for p in (
            await graphql(second, "{ pools { id strategy members { provider { id } weight } } }")
        )["data"]["pools"]
    }
    assert pools["kept"]["strategy"] == "LEAST_USED"
    assert pools["kept"]["members"] == [{"provider": {"id": "rpc-b"}, "weight": 2.5}]
    assert "rpc-ethereum" in pools  # the default pool of the category


CHAIN_HEADS = "{ chainHeads { chain blockNumber provider lagBlocks } }"


async def chain_heads_until(running: RunningGateway, expected: Any, timeout: float = 5) -> Any:
    """`chainHeads` as the collector has it, once it reports `expected` (data or error code).
    Asks every 50 ms: the gateway must run with `tier_free_per_minute=0`."""
    with trio.fail_after(timeout):
        while True:
            body = await graphql(running, CHAIN_HEADS)
            if body.get("data") and body["data"]["chainHeads"] == expected:
                return body
            if body.get("errors") and body["errors"][0]["extensions"]["code"] == expected:
                return body
            await trio.sleep(0.05)


async def test_chain_heads_follow_the_highest_node_and_a_hanging_one_does_not_stop_them(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # A round a second: the head of the round after the hang is shown for a whole round.
    running = await start_gateway(
        providers=providers_for(simulator), chain_heads_interval=1.0, tier_free_per_minute=0
    )
    simulator.set_block("rpc-a", 21_000_100)
    simulator.set_block("rpc-b", 21_000_090)
    await chain_heads_until(
        running,
        [{"chain": "ethereum", "blockNumber": 21_000_100, "provider": "rpc-a", "lagBlocks": 0}],
    )
    simulator.inject("rpc-a", Fault.hang())
    # A 0.5 s timeout on the hanging node; the other one's block is the head, 10 behind.
    await chain_heads_until(
        running,
        [{"chain": "ethereum", "blockNumber": 21_000_090, "provider": "rpc-b", "lagBlocks": 10}],
        timeout=6,
    )


async def test_every_node_failing_is_upstream_unavailable_naming_each(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    running = await start_gateway(
        providers=providers_for(simulator), chain_heads_interval=0.2, tier_free_per_minute=0
    )
    simulator.inject("rpc-a", Fault.status(502))
    simulator.inject("rpc-b", Fault.malformed())
    body = await chain_heads_until(running, "UPSTREAM_UNAVAILABLE")
    error = body["errors"][0]
    named = {entry["provider"]: entry for entry in error["extensions"]["providers"]}
    assert set(named) == {"rpc-a", "rpc-b"}
    # Its 502, or, once the 502s have opened its breaker (a slow machine polls later), that.
    failed = named["rpc-a"]
    assert failed["httpStatus"] == 502 or "circuit" in failed["error"].lower(), failed


async def test_an_offline_provider_raises_an_alert_and_a_state_change(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    running = await start_gateway(providers=providers_for(simulator), allow_admin_mutations=True)
    board = running.services.status_board
    await wait_for(lambda: board.state("binance") == "ONLINE")
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        await ws.get_message()
        for op, query in (
            ("s", "subscription { providerStates { provider oldState newState reason } }"),
            ("a", "subscription { alerts { kind provider severity } }"),
        ):
            await ws.send_message(
                json.dumps({"type": "subscribe", "id": op, "payload": {"query": query}})
            )
        await wait_for(lambda: running.services.hub.member_count == 2 and streams_live(running))  # type: ignore[union-attr]
        simulator.inject("binance", Fault.status(500))  # every request from now on
        seen: dict[str, list[dict[str, Any]]] = {"s": [], "a": []}
        with trio.fail_after(10):
            while not (
                any(c["provider"] == "binance" and c["newState"] == "OFFLINE" for c in seen["s"])
                and any(a["provider"] == "binance" for a in seen["a"])
            ):
                message = json.loads(await ws.get_message())
                if message["type"] == "next":
                    (value,) = message["payload"]["data"].values()
                    seen[message["id"]].append(value)
    failures = await graphql(
        running, '{ failures(provider: "binance", limit: 5) { errorType httpStatus message } }'
    )
    assert failures["data"]["failures"][0]["httpStatus"] == 500
    state = await graphql(running, '{ provider(id: "binance") { state circuit lastError } }')
    assert state["data"]["provider"]["state"] == "OFFLINE"
    assert state["data"]["provider"]["circuit"] in {"OPEN", "HALF_OPEN"}
    alerts = (await graphql(running, "{ alerts(unacknowledgedOnly: true) { id kind provider } }"))[
        "data"
    ]["alerts"]
    offline = next(a for a in alerts if a["kind"] == "provider_offline")
    acked = await graphql(
        running,
        "mutation($id: ID!) { acknowledgeAlert(id: $id) { acknowledged } }",
        {"id": offline["id"]},
    )
    assert acked["data"]["acknowledgeAlert"]["acknowledged"] is True
    remaining = (await graphql(running, "{ alerts(unacknowledgedOnly: true) { id } }"))["data"][
        "alerts"
    ]
    assert offline["id"] not in [a["id"] for a in remaining]


async def test_check_provider_runs_a_check_now(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    running = await start_gateway(providers=providers_for(simulator), allow_admin_mutations=True)
    before = simulator.hits["coingecko"]
    body = await graphql(
        running, 'mutation { checkProvider(id: "coingecko") { id state lastCheckedAt } }'
    )
    assert body["data"]["checkProvider"]["lastCheckedAt"] is not None
    assert simulator.hits["coingecko"] > before
    unknown = await graphql(running, 'mutation { checkProvider(id: "nope") { id } }')
    assert unknown["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

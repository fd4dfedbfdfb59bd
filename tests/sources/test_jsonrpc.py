"""The JSON-RPC 2.0 client (gateway/sources/jsonrpc.py) and its value checks
(jsonrpc_results.py): hex quantities, blocks, logs and fee history against fixtures shaped like
the documented answers, and calls and batches against the simulator's nodes — error objects
mapped to JsonRpcError, and garbage (wrong ids, missing results, non-hex quantities) counted as
the node's failure, never returned as data."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from gateway.config import RateLimitWindow
from gateway.errors import JsonRpcError, PoolExhausted, UpstreamPayloadError
from gateway.sources.jsonrpc import JsonRpcClient
from gateway.sources.jsonrpc_results import (
    block_tag,
    parse_block,
    parse_block_number,
    parse_data,
    parse_fee_history,
    parse_logs,
    parse_quantity,
    to_quantity,
)
from gateway.upstream.client import UpstreamClient
from gateway.upstream.pool import Pool
from tests.simulator import load_fixture
from tests.simulator.jsonrpc import TRANSFER_TOPIC, address, topic_address, transfer_log
from tests.simulator.rest import Fault, Simulator, run_simulator

# -- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"), [("0x0", 0), ("0x1b4", 436), ("0x00ff", 255), ("0xFF", 255)]
)
def test_quantities_decode(text: str, number: int) -> None:
    assert parse_quantity(text) == number


@pytest.mark.parametrize(
    "bad", ["0x", "1b4", "0xzz", "0x-1", " 0x1", 436, None, True, "0x" + "f" * 65, 1.5]
)
def test_anything_else_is_not_a_quantity(bad: Any) -> None:
    with pytest.raises(ValueError, match="not a hex quantity"):
        parse_quantity(bad)


def test_quantities_encode_and_tags_pass() -> None:
    assert to_quantity(21_000_000) == "0x1406f40"
    assert block_tag(0) == "0x0" and block_tag("latest") == "latest"
    for bad in (-1, True, "newest"):
        with pytest.raises(ValueError):
            block_tag(bad)  # type: ignore[arg-type]


def test_data_is_lower_cased_and_sized() -> None:
    assert parse_data("0xABcd", size=2) == "0xabcd"
    for bad, size in (("0xabc", None), ("0xabcd", 20), ("abcd", None)):
        with pytest.raises(ValueError):
            parse_data(bad, size=size)


def test_block_number_must_be_a_block() -> None:
    assert parse_block_number("0x1406f40") == 21_000_000
    with pytest.raises(ValueError, match="not a block"):
        parse_block_number("0x0")


def test_a_documented_block_with_full_transactions_parses() -> None:
    block = parse_block(load_fixture("jsonrpc_block")["result"], full_transactions=True)
    assert block is not None and parse_quantity(block["number"]) == 21_000_000
    creation = block["transactions"][2]
    assert creation["to"] is None  # contract creation: no `to`, still a transaction
    assert parse_block(None, full_transactions=True) is None  # not mined yet


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("hash",), "0x1234", "block hash"),
        (("transactions",), None, "not a list"),
        (("transactions", 0, "blockNumber"), "0x1", "is not of block"),
        (("transactions", 1, "value"), 12, "transaction value"),
        (("transactions", 0, "from"), "0xdead", "transaction from"),
    ],
)
def test_a_block_with_garbage_is_refused(path: tuple[Any, ...], value: Any, message: str) -> None:
    block = copy.deepcopy(load_fixture("jsonrpc_block")["result"])
    target = block
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        parse_block(block, full_transactions=True)


def test_documented_logs_parse_and_bad_ones_are_refused() -> None:
    logs = load_fixture("jsonrpc_logs")["result"]
    assert parse_logs(logs)[0]["topics"][0] == TRANSFER_TOPIC
    bad = copy.deepcopy(logs)
    bad[0]["topics"].append("0x01")
    with pytest.raises(ValueError, match="log topic"):
        parse_logs(bad)
    with pytest.raises(ValueError, match="not a list"):
        parse_logs({"logs": logs})


def test_fee_history_lengths_are_checked() -> None:
    result = load_fixture("jsonrpc_fee_history")["result"]
    history = parse_fee_history(result, [10, 50, 90])
    assert history.oldest_block == 21_000_000 - 3 and history.newest_block == 21_000_000
    assert history.next_base_fee == 1_000_000_000
    with pytest.raises(ValueError, match="does not hold 4 percentiles"):
        parse_fee_history(result, [10, 50, 90, 99])
    short = copy.deepcopy(result)
    short["baseFeePerGas"].pop()
    with pytest.raises(ValueError, match="blocks \\+ 1"):
        parse_fee_history(short, [10, 50, 90])
    odd = copy.deepcopy(result)
    odd["gasUsedRatio"][0] = 1.7
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_fee_history(odd, [10, 50, 90])


# -- calls against the simulator ----------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator() as simulator:
        yield simulator


@pytest.fixture
async def rpc() -> AsyncIterator[JsonRpcClient]:
    async with UpstreamClient() as client:
        yield JsonRpcClient(client)


async def test_single_calls_and_the_read_methods(sim: Simulator, rpc: JsonRpcClient) -> None:
    node = sim.rpc_provider("rpc-a")
    chain = sim.evm.chain("ethereum")
    token, whale, exchange = address("usdt"), address("whale"), address("exchange")
    block = chain.add_block(
        transactions=[{"from": whale, "to": token, "value": 0}],
        logs=[transfer_log(token, whale, exchange, 2_000_000 * 10**6)],
    )
    with trio.fail_after(10):
        assert await rpc.block_number(node) == block.number
        assert await rpc.chain_id(node) == 1
        fetched = await rpc.get_block(node, block.number, full_transactions=True)
        assert fetched is not None and fetched["hash"] == block.hash
        assert fetched["transactions"][0]["from"] == whale
        assert await rpc.get_block(node, block.number + 1) is None
        logs = await rpc.get_logs(
            node,
            from_block=block.number,
            to_block=block.number,
            address=token,
            topics=[TRANSFER_TOPIC, None, topic_address(exchange)],
        )
        assert [int(log["data"], 16) for log in logs] == [2_000_000 * 10**6]
        assert await rpc.get_logs(node, block_hash=block.hash, address=[address("none")]) == []
        history = await rpc.fee_history(node, 5, [10, 50, 90])
        assert history.newest_block == block.number and len(history.rewards) == 5
        assert await rpc.gas_price(node) > 0


async def test_batches_come_back_in_the_order_asked_and_cost_one_request_each(
    sim: Simulator,
) -> None:
    node = sim.rpc_provider("rpc-a", rate_limits=(RateLimitWindow(100, 60, "minute"),))
    async with UpstreamClient() as client:
        rpc = JsonRpcClient(client, max_batch=2)
        calls = [
            ("eth_chainId", []),
            ("eth_blockNumber", []),
            ("net_version", []),
            ("eth_getBlockByNumber", ["0x0", False]),
        ]
        with trio.fail_after(10):
            values = await rpc.batch(
                node, calls, results=[parse_quantity, parse_block_number, None, None]
            )
        assert values == [1, sim.evm.chain("ethereum").head, "1", None]
        assert sim.hits["rpc-a"] == 2  # split into batches of two
        used = client.limiter_for(node).usage()[0].used
        assert used == 4  # every call counted against the node's limit


async def test_error_objects_become_json_rpc_errors(sim: Simulator, rpc: JsonRpcClient) -> None:
    node = sim.rpc_provider("rpc-a")
    sim.evm.node("rpc-a").fail("eth_getLogs", -32005, "query returned more than 10000 results")
    with trio.fail_after(10), pytest.raises(JsonRpcError) as caught:
        await rpc.get_logs(node, from_block=0, to_block="latest")
    error = caught.value
    assert (error.rpc_code, error.method, error.code) == (-32005, "eth_getLogs", "RATE_LIMITED")
    assert error.extensions()["rpcMessage"] == "query returned more than 10000 results"
    with trio.fail_after(10), pytest.raises(JsonRpcError) as missing:
        await rpc.call(node, "eth_mine")
    assert missing.value.rpc_code == -32601 and missing.value.code == "UPSTREAM_UNAVAILABLE"
    # the node answered: its breaker holds no failure
    assert rpc.client.breaker_for(node).state.value == "CLOSED"


async def test_a_batch_settles_each_call_or_raises_the_first_error(
    sim: Simulator, rpc: JsonRpcClient
) -> None:
    node = sim.rpc_provider("rpc-a")
    sim.evm.node("rpc-a").fail("eth_getBlockByNumber", -32000, "header not found")
    calls = [("eth_blockNumber", []), ("eth_getBlockByNumber", ["latest", False])]
    with trio.fail_after(10):
        head, error = await rpc.batch_settled(node, calls)
    assert head == hex(sim.evm.chain("ethereum").head)
    assert isinstance(error, JsonRpcError) and error.rpc_message == "header not found"
    sim.evm.node("rpc-a").fail("eth_getBlockByNumber", -32000, "header not found")
    with trio.fail_after(10), pytest.raises(JsonRpcError, match="header not found"):
        await rpc.batch(node, calls)


async def test_a_node_refusing_batches_answers_one_error_for_all(
    sim: Simulator, rpc: JsonRpcClient
) -> None:
    sim.evm.node("rpc-a").max_batch = 1
    node = sim.rpc_provider("rpc-a")
    with trio.fail_after(10), pytest.raises(JsonRpcError, match="exceeds 1"):
        await rpc.batch(node, [("eth_blockNumber", []), ("eth_chainId", [])])


GARBAGE: list[tuple[str, Any, str]] = [
    ("wrong id", {"jsonrpc": "2.0", "id": 7, "result": "0x10"}, "not the id sent"),
    ("no result", {"jsonrpc": "2.0", "id": 1}, "neither result nor error"),
    ("not hex", {"jsonrpc": "2.0", "id": 1, "result": "21000000"}, "not a hex quantity"),
    ("not 2.0", {"id": 1, "result": "0x10"}, "not version 2.0"),
    ("a list", [{"jsonrpc": "2.0", "id": 1, "result": "0x10"}], "not a response object"),
    ("bad error", {"jsonrpc": "2.0", "id": 1, "error": "oops"}, "not an object"),
]


@pytest.mark.parametrize(("case", "body", "message"), GARBAGE, ids=[g[0] for g in GARBAGE])
async def test_garbage_is_a_failure_of_the_node_not_data(
    sim: Simulator, rpc: JsonRpcClient, case: str, body: Any, message: str
) -> None:
    node = sim.rpc_provider("rpc-a")
    sim.inject("rpc-a", Fault.wrong_shape(body, times=1))
    with trio.fail_after(10), pytest.raises(UpstreamPayloadError, match=message):
        await rpc.block_number(node)
    assert rpc.client.payload_errors["rpc-a"] == 1  # counted against the node's breaker


BATCH_GARBAGE: list[tuple[str, Any, str]] = [
    ("an id missing", [{"jsonrpc": "2.0", "id": 1, "result": "0x1"}], "lacks ids \\[2\\]"),
    (
        "an id twice",
        [
            {"jsonrpc": "2.0", "id": 1, "result": "0x1"},
            {"jsonrpc": "2.0", "id": 1, "result": "0x1"},
        ],
        "id 1 twice",
    ),
    (
        "an id not sent",
        [
            {"jsonrpc": "2.0", "id": 1, "result": "0x1"},
            {"jsonrpc": "2.0", "id": 3, "result": "0x1"},
        ],
        "id 3 was not sent",
    ),
    ("an object", {"jsonrpc": "2.0", "id": 1, "result": "0x1"}, "not a list"),
]


@pytest.mark.parametrize(
    ("case", "body", "message"), BATCH_GARBAGE, ids=[g[0] for g in BATCH_GARBAGE]
)
async def test_a_batch_answer_must_hold_each_id_once(
    sim: Simulator, rpc: JsonRpcClient, case: str, body: Any, message: str
) -> None:
    sim.inject("rpc-a", Fault.wrong_shape(body, times=1))
    node = sim.rpc_provider("rpc-a")
    with trio.fail_after(10), pytest.raises(UpstreamPayloadError, match=message):
        await rpc.batch(node, [("eth_blockNumber", []), ("eth_chainId", [])])


async def test_batch_answers_out_of_order_are_matched_by_id(
    sim: Simulator, rpc: JsonRpcClient
) -> None:
    body = [
        {"jsonrpc": "2.0", "id": 2, "result": "0x38"},
        {"jsonrpc": "2.0", "id": 1, "result": "0x5"},
    ]
    sim.inject("rpc-a", Fault.wrong_shape(body, times=1))
    with trio.fail_after(10):
        values = await rpc.batch(
            sim.rpc_provider("rpc-a"), [("eth_blockNumber", []), ("eth_chainId", [])]
        )
    assert values == ["0x5", "0x38"]


async def test_through_a_pool_an_error_object_fails_over_to_the_next_node(
    sim: Simulator, rpc: JsonRpcClient
) -> None:
    nodes = [sim.rpc_provider("rpc-a", priority=1), sim.rpc_provider("rpc-b", priority=2)]
    pool = Pool("rpc-ethereum", "Ethereum", "RPC", "PRIORITY", nodes, guards=rpc.client)
    sim.evm.node("rpc-a").fail("*", -32603, "internal error")
    with trio.fail_after(10):
        number, served = await rpc.call_via(pool, "eth_blockNumber", result=parse_block_number)
        values, batch_served = await rpc.batch_via(pool, [("eth_chainId", [])])
    assert (number, served) == (sim.evm.chain("ethereum").head, "rpc-b")
    assert (values, batch_served) == (["0x1"], "rpc-a")
    sim.evm.node("rpc-a").fail("*", -32603, "internal error")
    sim.evm.node("rpc-b").fail("*", -32603, "internal error")
    with trio.fail_after(10), pytest.raises(PoolExhausted) as caught:
        await rpc.call_via(pool, "eth_blockNumber")
    assert [provider for provider, _, _ in caught.value.errors] == ["rpc-a", "rpc-b"]

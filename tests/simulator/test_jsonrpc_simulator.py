"""The simulator's JSON-RPC upstream (tests/simulator/jsonrpc.py): scripted blocks, reorgs,
lagging nodes and error objects, in the shapes the gateway's own validators accept."""

from __future__ import annotations

import json
from typing import Any

from gateway.sources.jsonrpc_results import (
    parse_block,
    parse_fee_history,
    parse_logs,
    parse_quantity,
)
from tests.simulator.jsonrpc import (
    GWEI,
    JsonRpcUpstream,
    address,
    next_base_fee,
    transfer_log,
)


def ask(upstream: JsonRpcUpstream, node: str, *calls: tuple[str, list[Any]]) -> Any:
    body = [
        {"jsonrpc": "2.0", "id": n, "method": method, "params": params}
        for n, (method, params) in enumerate(calls, start=1)
    ]
    return upstream.node(node).respond(json.dumps(body).encode())


def test_scripted_blocks_are_what_a_node_answers() -> None:
    upstream = JsonRpcUpstream()
    chain = upstream.chain("ethereum")
    token, sender, receiver = address("token"), address("a"), address("b")
    block = chain.add_block(
        transactions=[{"from": sender, "to": token, "priority_fee": 3 * GWEI}],
        logs=[transfer_log(token, sender, receiver, 10**12)],
    )
    answers = ask(
        upstream,
        "rpc-a",
        ("eth_getBlockByNumber", [hex(block.number), True]),
        ("eth_getLogs", [{"fromBlock": hex(block.number), "toBlock": "latest", "address": token}]),
        ("eth_getTransactionReceipt", [block.transactions[0]["hash"]]),
    )
    fetched = parse_block(answers[0]["result"], full_transactions=True)
    assert fetched is not None and fetched["hash"] == block.hash
    (log,) = parse_logs(answers[1]["result"])
    assert log["transactionHash"] == block.transactions[0]["hash"] and log["logIndex"] == "0x0"
    assert answers[2]["result"]["logs"] == [log]
    assert block.base_fee == next_base_fee(chain.blocks[block.number - 1])


def test_a_reorg_replaces_the_top_blocks_with_new_hashes() -> None:
    upstream = JsonRpcUpstream()
    chain = upstream.chain("ethereum")
    old = [chain.add_block() for _ in range(3)]
    new = chain.reorg(2, [{"transactions": [{"value": 5}]}, {}, {}])
    assert chain.head == old[-1].number + 1  # two dropped, three mined
    assert new[0].number == old[1].number and new[0].hash != old[1].hash
    assert new[0].parent_hash == old[0].hash
    answer = ask(upstream, "rpc-a", ("eth_getBlockByHash", [old[1].hash, False]))
    assert answer[0]["result"] is None  # the replaced block is gone


def test_nodes_lag_fail_and_refuse_as_told() -> None:
    upstream = JsonRpcUpstream()
    head = upstream.chain("ethereum").head
    upstream.lag("rpc-b", 7)
    upstream.node("rpc-b").fail("eth_chainId", -32005, "limit exceeded")
    first, second = ask(upstream, "rpc-b", ("eth_blockNumber", []), ("eth_chainId", []))
    assert parse_quantity(first["result"]) == head - 7
    assert second["error"] == {"code": -32005, "message": "limit exceeded"}
    assert ask(upstream, "rpc-b", ("eth_getBlockByNumber", [hex(head), False]))[0]["result"] is None
    upstream.node("rpc-a").max_batch = 1
    refused = ask(upstream, "rpc-a", ("eth_blockNumber", []), ("eth_chainId", []))
    assert refused["error"]["code"] == -32600


def test_fee_history_is_what_geth_would_report() -> None:
    upstream = JsonRpcUpstream()
    (answer,) = ask(upstream, "rpc-a", ("eth_feeHistory", ["0x4", "latest", [10, 50, 90]]))
    history = parse_fee_history(answer["result"], [10, 50, 90])
    # every filler block: tips 1, 1.5, 2, 3, 5 gwei, 3M gas each; 10 % of its 15M gas falls in
    # the first transaction, 50 % (7.5M) in the third, 90 % (13.5M) in the fifth
    assert set(history.rewards) == {(1 * GWEI, 2 * GWEI, 5 * GWEI)}
    assert history.gas_used_ratios == (0.5, 0.5, 0.5, 0.5)
    assert history.next_base_fee == 20 * GWEI

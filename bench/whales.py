"""The whale detector's cost: blocks per second it can scan, and RPC calls per block.

Each block holds 300 transactions (250 paying ETH, 3 of them whales; 50 token calls) and 500
ERC-20 Transfer logs of the followed tokens (USDT, USDC, WETH, DAI, WBTC; 3 over 1 M USD): the
worst case for the detector, since eth_getLogs filters out every other log before it sees any.
Prices come from the gateway's own consensus over stored ticks (`ConsensusAt`), whales go to a
real SQLite store (`WhaleStore`), as in the gateway.

Two timed runs over the same scripted chain (tests/simulator/jsonrpc.py), after a warm-up:

* `in-process`: the node answers in process (no HTTP, no JSON): the detector alone — parsing
  blocks and logs, pricing, labelling, storing.
* `http`: the production path — `PoolRpc` over a real `Pool` and `JsonRpcClient` to the
  simulator's node on loopback: JSON-RPC batches encoded, sent, decoded and validated.

Both scan `--blocks` blocks that are already there (a detector catching up), `--per-scan` at a
time, and report blocks per second, JSON-RPC calls per block and HTTP requests per block.

    python bench/whales.py [--blocks 200] [--per-scan 5] [--whales 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.chains.follower import BlockFollower, RpcAnswer, RpcCall
from gateway.chains.rpc_pool import PoolRpc
from gateway.chains.tokens import load_labels, load_tokens
from gateway.chains.whales import EvmWhaleWatch
from gateway.config import Settings
from gateway.models import PriceTick
from gateway.onchain_models import WhaleTransfer
from gateway.prices.at_time import ConsensusAt
from gateway.pubsub import Topic
from gateway.sources.jsonrpc import JsonRpcClient
from gateway.storage import Storage, WhaleStore
from gateway.upstream import Pool, UpstreamClient
from tests.simulator.jsonrpc import SimChain, SimNode, address, transfer_log
from tests.simulator.rest import run_simulator

TOKENS = load_tokens().chains["ethereum"]
BY_SYMBOL = {t.symbol: t for t in TOKENS.tokens.values()}
PRICES = {"ETH": 3454.78, "USDT": 1.0003, "USDC": 0.9998, "DAI": 0.9997, "WBTC": 67150.12}


def busy_block(chain: SimChain, n: int, whales: int) -> None:
    """300 transactions and 500 Transfer logs of followed tokens; `whales` of the native
    transfers and `whales` of the token transfers are worth over 1 M USD, the rest far less."""
    txs: list[dict[str, Any]] = []
    for i in range(250):
        eth = 400 if i < whales else 0.05 + (i % 7) * 0.01  # 400 ETH: 1.38 M USD
        txs.append({"from": address(f"s{n}.{i}"), "to": address(f"r{i}"), "value": int(eth * 1e18)})
    for i in range(50):
        txs.append({"from": address(f"t{n}.{i}"), "to": BY_SYMBOL["USDT"].address, "value": 0})
    logs = []
    symbols = ("USDT", "USDC", "WETH", "DAI", "WBTC")
    for i in range(500):
        token = BY_SYMBOL[symbols[i % 5]]
        usd = 2_000_000 if i < whales else 1_000 + i
        price = PRICES["ETH" if token.symbol == "WETH" else token.symbol]
        raw = int(usd / price * 10**token.decimals)
        logs.append(
            transfer_log(token.address, address(f"a{i}"), address(f"b{i}"), raw,
                         transaction=250 + i % 50)
        )  # fmt: skip
    chain.add_block(txs, logs)


class InProcess:
    """ChainRpc answered by the simulator's node logic, without HTTP. Answers are remembered
    (all but eth_blockNumber), so once warmed up the timing is the detector's, not the
    simulator's search through its blocks."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.calls = 0
        self.batches = 0
        self.memo: dict[str, Any] = {}

    async def batch(self, calls: Sequence[RpcCall]) -> RpcAnswer:
        self.calls += len(calls)
        self.batches += 1
        results = []
        for method, params in calls:
            if method == "eth_blockNumber":
                results.append(self.node.answer(method, list(params)))
                continue
            key = json.dumps([method, params])
            if key not in self.memo:
                self.memo[key] = self.node.answer(method, list(params))
            results.append(self.memo[key])  # the parsers never change what they read
        return RpcAnswer(self.node.id, results)


class Counting:
    """Counts calls and batches of another ChainRpc."""

    def __init__(self, inner: PoolRpc) -> None:
        self.inner = inner
        self.calls = 0
        self.batches = 0

    async def batch(self, calls: Sequence[RpcCall]) -> RpcAnswer:
        self.calls += len(calls)
        self.batches += 1
        return await self.inner.batch(calls)


async def open_storage(folder: Path, name: str) -> Storage:
    return await Storage.open(folder / f"{name}.db", Settings(storage_batch_seconds=0.01))


async def run_case(
    name: str, rpc: Any, node: SimNode, storage: Storage, ticks: list[PriceTick], args: Any
) -> None:
    """Scan the busy blocks `per_scan` at a time: the node's head moves on between scans."""
    await storage.write_ticks(ticks)
    chain = node.chain
    first = chain.head - args.blocks  # the detector stands just before the busy blocks
    topic: Topic[WhaleTransfer] = Topic("whales", 100_000)
    price_at = ConsensusAt(storage)
    follower = BlockFollower("ethereum", rpc, TOKENS)
    watch = EvmWhaleWatch(
        follower, rpc, TOKENS, load_labels(), price_at, WhaleStore(storage), topic.publish,
        min_usd=1_000_000,
    )  # fmt: skip
    node.pinned = first
    await watch.scan_once()  # the first scan starts at the head
    calls0, batches0 = rpc.calls, rpc.batches
    with topic.subscribe(100_000) as whales:
        began = time.perf_counter()
        while (follower.newest or 0) < chain.head:
            node.pinned = min(chain.head, (follower.newest or first) + args.per_scan)
            await watch.scan_once()
        elapsed = time.perf_counter() - began
        found = whales.drain()
    node.pinned = None
    scanned = watch.counters.blocks - 1
    if name == "warm-up":
        return
    print(
        f"{name:>10}: {scanned} blocks in {elapsed:.2f} s = {scanned / elapsed:,.1f} blocks/s;"
        f" {(rpc.calls - calls0) / scanned:.2f} JSON-RPC calls/block,"
        f" {(rpc.batches - batches0) / scanned:.2f} batches (HTTP requests)/block;"
        f" {len(found)} whales ({len(found) / scanned:.0f}/block), {price_at.lookups} price"
        f" lookups, {watch.counters.transfers / (scanned + 1):.0f} transfers read per block"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        async with run_simulator() as sim:
            node = sim.evm.node("rpc-a")
            chain = node.chain
            for n in range(args.blocks):
                busy_block(chain, n, args.whales)
            start = datetime.fromtimestamp(chain.blocks[chain.head - args.blocks].timestamp, UTC)
            ticks = [
                PriceTick(symbol, usd, provider, start + timedelta(seconds=60 * m))
                for symbol, usd in PRICES.items()
                for provider in ("coingecko", "kraken")
                for m in range(args.blocks * 12 // 60 + 2)
            ]
            size = len(json.dumps(chain.blocks[chain.head].as_json(True)))
            logs = len(json.dumps(chain.blocks[chain.head].logs))
            print(
                f"block: 300 transactions ({size / 1024:.0f} KiB as JSON), 500 Transfer logs"
                f" ({logs / 1024:.0f} KiB); {args.whales} native + {args.whales} token whales per"
                f" block; {args.blocks} blocks, {args.per_scan} per scan"
            )
            memo = InProcess(node)
            for case in ("warm-up", "in-process", "http"):
                storage = await open_storage(folder, case)
                async with trio.open_nursery() as nursery:
                    await nursery.start(storage.run)
                    if case != "http":
                        await run_case(case, memo, node, storage, ticks, args)
                    else:
                        async with UpstreamClient() as client:
                            provider = sim.rpc_provider("rpc-a", timeout_seconds=30.0)
                            pool = Pool("rpc-ethereum", "bench", "RPC", "PRIORITY", [provider],
                                        guards=client)  # fmt: skip
                            rpc = Counting(PoolRpc(JsonRpcClient(client), pool))
                            await run_case(case, rpc, node, storage, ticks, args)
                    nursery.cancel_scope.cancel()
                await storage.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--per-scan", type=int, default=5)
    parser.add_argument("--whales", type=int, default=1, help="native and token whales per block")
    trio.run(main, parser.parse_args())

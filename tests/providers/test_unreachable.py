"""With no upstream reachable, the gateway says so in one line and `prices` says why (issue 13).

Every provider points at a loopback port nobody listens on, so each request is refused at
once: what a machine without network (or behind a firewall) sees.
"""

from __future__ import annotations

import socket

import trio
from structlog.testing import capture_logs

from gateway.config import ProviderConfig, ProvidersFile
from tests.conftest import StartGateway, graphql


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unreachable_providers() -> ProvidersFile:
    url = f"http://127.0.0.1:{closed_port()}"
    return ProvidersFile(
        tuple(
            ProviderConfig(
                id=provider,
                name=provider,
                categories=("MARKET_DATA",),
                base_url=url,
                interval_seconds=0.5,
                timeout_seconds=1.0,
            )
            for provider in ("coingecko", "binance", "kraken")
        )
    )


async def test_no_reachable_upstream_is_one_line_and_prices_says_check_the_network(
    start_gateway: StartGateway,
) -> None:
    with capture_logs() as logs:
        running = await start_gateway(providers=unreachable_providers())
        board = running.services.status_board
        with trio.fail_after(15):
            while not board.none_reachable():
                await trio.sleep(0.05)
        body = await graphql(running, '{ prices(symbols: ["BTC"]) { usd } }')
    (error,) = body["errors"]
    assert error["message"] == (
        "gateway: no price for BTC: no upstream has answered since start: check the network"
    )
    lines = [entry for entry in logs if entry["event"] == "upstream.none_reachable"]
    assert len(lines) == 1 and sorted(lines[0]["tried"]) == ["binance", "coingecko", "kraken"]

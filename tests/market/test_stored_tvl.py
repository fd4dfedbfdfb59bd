"""tvlHistory has a history of its own: DefiLlama's daily TVL is stored, so after a restart
during an upstream outage the gateway still answers it (with an UPSTREAM_FALLBACK warning),
and a refused answer stays refused once the stored history is too old."""

from __future__ import annotations

import trio

from gateway.config import ProvidersFile
from tests.conftest import StartGateway, graphql
from tests.simulator.rest import Fault, Simulator, run_simulator

QUERY = "{ tvlHistory(days: 3650) { at tvlUsd } }"


def defillama(sim: Simulator) -> ProvidersFile:
    return ProvidersFile(
        (sim.provider("defillama", categories=("MARKET_DATA", "DEFI"), interval_seconds=3600),)
    )


async def test_tvl_history_survives_an_outage_across_a_restart(
    start_gateway: StartGateway,
) -> None:
    async with run_simulator() as sim:
        running = await start_gateway(providers=defillama(sim), tvl_store_interval=0.2)
        live = await graphql(running, QUERY)
        assert "errors" not in live, live
        with trio.fail_after(10):  # the daily collector has stored the series
            while not await running.services.storage.read(
                lambda db: db.execute("SELECT count(*) FROM tvl_daily").fetchone()[0]
            ):
                await trio.sleep(0.05)
        running.gateway.shutdown.set()
        with trio.fail_after(10):
            await running.gateway.stopped.wait()

        sim.inject("defillama", Fault.status(503))  # DefiLlama is down from now on
        running = await start_gateway(providers=defillama(sim), tvl_store_interval=3600)
        body = await graphql(running, QUERY)
    assert "errors" not in body, body
    assert body["data"]["tvlHistory"] == live["data"]["tvlHistory"]
    [warning] = body["extensions"]["warnings"]
    assert warning["code"] == "UPSTREAM_FALLBACK" and warning["provider"] == "defillama"


async def test_without_stored_history_an_outage_is_an_error(start_gateway: StartGateway) -> None:
    async with run_simulator() as sim:
        sim.inject("defillama", Fault.status(503))
        running = await start_gateway(providers=defillama(sim), tvl_store_interval=3600)
        body = await graphql(running, QUERY)
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"

"""The supervisor: crashed tasks restart with capped backoff; nothing takes the process down."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
import trio

import gateway.nursery as nursery_module
from gateway.nursery import supervise
from tests.conftest import StartGateway


async def test_a_crashing_task_is_restarted_with_doubling_capped_backoff(
    autojump_clock: Any,
) -> None:
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        raise RuntimeError("collector bug")

    restarts: dict[str, int] = {}
    with trio.move_on_after(100):
        await supervise("flaky", flaky, initial_backoff=1, max_backoff=8, restarts=restarts)
    gaps = [round(b - a) for a, b in itertools.pairwise(starts)]
    assert gaps[:6] == [1, 2, 4, 8, 8, 8]
    assert restarts["flaky"] == len(starts)


async def test_a_task_that_stayed_up_long_restarts_quickly_again(autojump_clock: Any) -> None:
    starts: list[float] = []

    async def sometimes_long() -> None:
        starts.append(trio.current_time())
        if len(starts) == 3:
            await trio.sleep(100)  # healthy for a long time, then fails
        raise RuntimeError("boom")

    with trio.move_on_after(120):
        await supervise("t", sometimes_long, initial_backoff=1, max_backoff=8, restarts={})
    gaps = [round(b - a) for a, b in itertools.pairwise(starts)]
    assert gaps[:3] == [1, 2, 100 + 1]  # the backoff was reset by the long healthy run


async def test_the_gateway_survives_an_http_server_crash(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hypercorn dying (a bug in its protocol code) costs the connections, not the gateway."""
    real = nursery_module.serve_http
    calls = 0

    async def crash_once(app: Any, settings: Any, trigger: Any, *, task_status: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            await real(app, settings, trigger, task_status=task_status)
            return
        async with trio.open_nursery() as inner:
            urls = await inner.start(
                lambda task_status: real(app, settings, trigger, task_status=task_status)
            )
            task_status.started(urls)
            await trio.sleep(0.3)
            raise RuntimeError("a bug in hypercorn's protocol code")

    monkeypatch.setattr(nursery_module, "serve_http", crash_once)
    running = await start_gateway()
    url = running.urls[0]
    with trio.fail_after(10):
        while calls < 2:
            await trio.sleep(0.05)
        while True:
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    response = await client.get(f"{url}/healthz")
                break
            except httpx.TransportError:
                await trio.sleep(0.1)
    assert response.status_code == 200  # same port, same process, same gateway

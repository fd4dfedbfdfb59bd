"""The supervisor: crashed tasks restart with capped backoff; nothing takes the process down."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket as stdlib_socket
from typing import Any

import httpx
import pytest
import trio

import gateway.nursery as nursery_module
from gateway.models import PriceTick, utc_now
from gateway.nursery import supervise
from tests.conftest import StartGateway, wait_members


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


# -- shutdown with slow clients ---------------------------------------------------------------

TICKS = 'subscription { priceTicks(symbols: ["BTC"]) { usd } }'


def _ws_frame(message: dict[str, Any]) -> bytes:
    """A masked text frame, as a client sends it."""
    data, mask = json.dumps(message).encode(), os.urandom(4)
    assert len(data) < 126
    return (
        bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    )


async def _subscriber_that_stopped_reading(port: int) -> trio.SocketStream:
    """A graphql-transport-ws subscriber with a tiny receive buffer that never reads again."""
    sock = trio.socket.socket()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        b"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    await stream.receive_some(4096)  # 101
    await stream.send_all(_ws_frame({"type": "connection_init"}))
    await stream.receive_some(4096)  # connection_ack
    await stream.send_all(_ws_frame({"type": "subscribe", "id": "1", "payload": {"query": TICKS}}))
    return stream


async def test_slow_clients_cannot_stretch_the_shutdown_past_five_seconds(
    start_gateway: StartGateway,
) -> None:
    """Subscribers that stopped reading, a download read just fast enough never to stall, and
    uploads trickling their bodies, all connected when the shutdown begins: the gateway still
    stops within 5 s (it took 41 s: the download's writes were shielded, each 64 KiB chunk given
    its own stall timeout)."""
    running = await start_gateway()  # the default grace and stall timeouts: the promise's
    downloaded = 0
    async with trio.open_nursery() as clients:
        with trio.fail_after(10):
            subscribers = [await _subscriber_that_stopped_reading(running.port) for _ in range(3)]
            await wait_members(running, 3)
            for n in range(2_000):  # fills their windows: writes to them wait
                running.services.bus.prices.publish(PriceTick("BTC", float(n), "t", utc_now()))
                if n % 100 == 0:
                    await trio.sleep(0.01)

        async def slow_download() -> None:
            nonlocal downloaded
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            await stream.send_all(
                b"GET /graphiql/graphiql.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await stream.receive_some(16 * 1024):  # ~80 KB/s: 3.5 MB in 40 s
                    downloaded += len(chunk)
                    await trio.sleep(0.2)

        async def trickled_upload() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            await stream.send_all(
                b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\n{"
            )
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(100):
                    await trio.sleep(1)
                    await stream.send_all(b" ")

        for _ in range(3):
            clients.start_soon(slow_download)
            clients.start_soon(trickled_upload)
        await trio.sleep(1)
        began = trio.current_time()
        running.gateway.shutdown.set()
        with trio.fail_after(30):
            await running.gateway.stopped.wait()
        took = trio.current_time() - began
        clients.cancel_scope.cancel()
    for stream in subscribers:
        await stream.aclose()
    assert 0 < downloaded < 2_000_000  # the downloads were still going when the shutdown began
    assert took < 5.0


async def test_uploads_still_waiting_for_their_body_end_at_once_when_the_shutdown_starts(
    start_gateway: StartGateway,
) -> None:
    """Many POSTs trickling their bodies are connected when the shutdown begins: each is
    answered 503 with `Connection: close` at once, and the gateway stops well inside its 5 s
    promise (it took 4.0-4.7 s with 300 of them: the whole 3 s grace was spent waiting for
    bodies that would never arrive, which then answered 500)."""
    # The default grace (3 s) and body timeout (15 s); no request budget for the one address.
    running = await start_gateway(tier_free_per_minute=0, tier_free_per_day=0)
    answers: list[bytes] = []
    uploads = 60

    async def trickled_upload(connected: trio.Event) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        async with stream:
            await stream.send_all(
                b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json"
                b"\r\ncontent-length: 100000\r\n\r\n{"
            )
            connected.set()
            answer = b""
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(100):  # one byte a second, reading what the server says
                    with trio.move_on_after(1):
                        while chunk := await stream.receive_some(4096):
                            answer += chunk
                        break  # the server closed the connection
                    await stream.send_all(b" ")
            answers.append(answer)

    async with trio.open_nursery() as clients:
        with trio.fail_after(10):
            for _ in range(uploads):
                connected = trio.Event()
                clients.start_soon(trickled_upload, connected)
                await connected.wait()
        await trio.sleep(0.5)  # every body read is under way
        began = trio.current_time()
        running.gateway.shutdown.set()
        with trio.fail_after(30):
            await running.gateway.stopped.wait()
        took = trio.current_time() - began
        with trio.fail_after(5):  # every upload saw its answer, or the connection end
            while len(answers) < uploads:
                await trio.sleep(0.05)
    assert took < 2.5, took
    statuses = [answer.split(b"\r\n", 1)[0] for answer in answers]
    assert statuses == [b"HTTP/1.1 503 "] * uploads, statuses[:3]
    head, _, body = answers[0].partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower() and b"retry-after" in head.lower()
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "SHUTTING_DOWN"

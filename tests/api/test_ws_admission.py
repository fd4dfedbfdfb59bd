"""WebSocket admission (gateway/api/ws/admission.py, descriptors.py): per-client and total
connection caps, handshakes spending the request budget, idle sockets closed whatever they
send, and the descriptor limit raised at start with a reserve that keeps HTTP answering.

Issue 10, item 6: one anonymous address opened 1,500 sockets in 1.3 s, held them with pings,
and at the descriptor limit /healthz and GraphQL timed out. Each test below plays one part of
that as a client would (loopback, port 0, a time limit on all I/O) and checks what it sees:
the close code and reason, the /metrics counters, /healthz still answering.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    connect_websocket_url,
    open_websocket_url,
)

from gateway.api.auth import AccessControl, Principal, TierLimits
from gateway.api.ws import (
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN_LATER,
    Admission,
    Refusal,
    Slot,
    WebSocketStats,
    raise_descriptor_limit,
    total_connection_cap,
)
from gateway.api.ws import descriptors as descriptors_module
from gateway.cli import main as cli_main
from gateway.config import Settings, settings_from_env
from gateway.errors import ConfigError
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway

REPO = Path(__file__).resolve().parents[2]
NO_UPSTREAMS = REPO / "tests" / "data" / "no-providers.toml"
PROXY = ("127.0.0.1/32",)  # the test client is a trusted proxy: X-Forwarded-For names clients


# -- helpers ----------------------------------------------------------------------------------


def ws_url(running: RunningGateway) -> str:
    return running.urls[0].replace("http://", "ws://") + "/graphql"


def forwarded(address: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", address.encode())]


@asynccontextmanager
async def connect(
    running: RunningGateway, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(
        ws_url(running),
        subprotocols=["graphql-transport-ws"],
        extra_headers=headers,
        connect_timeout=5,
        disconnect_timeout=2,
    ) as ws:
        yield ws


async def init(ws: WebSocketConnection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send connection_init; the server's answer (the ack), or ConnectionClosed."""
    message: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    await ws.send_message(json.dumps(message))
    with trio.fail_after(3):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def closed_with(ws: WebSocketConnection, timeout: float = 3) -> tuple[int, str]:
    """Read until the server closes: its close code and reason."""
    with trio.fail_after(timeout):
        try:
            for _ in range(1000):  # bounded: a refused socket gets nothing but the close
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code, closed.reason.reason or ""
    raise AssertionError("the server never closed the socket")


async def get(running: RunningGateway, path: str) -> httpx.Response:
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=3) as client:
            return await client.get(path)


async def refused_counts(running: RunningGateway) -> dict[str, float]:
    text = (await get(running, "/metrics")).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("gateway_ws_connections_refused_total{"):
            label = line.split('"')[1]
            counts[label] = float(line.rsplit(" ", 1)[1])
    return counts


async def until(condition: Callable[[], bool], timeout: float = 3) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def admission_of(running: RunningGateway) -> Admission:
    return running.app.ws_admission


# -- per client -------------------------------------------------------------------------------


async def test_the_n_plus_first_socket_of_one_address_is_closed_4429_while_others_connect(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(tier_free_connections=2, trusted_proxies=PROXY)
    one = forwarded("203.0.113.5")
    async with connect(running, one) as first, connect(running, one) as second:
        assert await init(first) == {"type": "connection_ack"}
        assert await init(second) == {"type": "connection_ack"}
        async with connect(running, one) as third:
            code, reason = await closed_with(third)
        assert code == CLOSE_TOO_MANY == 4429
        assert "too many connections" in reason and "2" in reason
        async with connect(running, forwarded("203.0.113.6")) as other:
            assert await init(other) == {"type": "connection_ack"}  # another client: room
        assert (await refused_counts(running))["client"] == 1
        await first.aclose()
        await until(lambda: admission_of(running).held_by("ip:203.0.113.5") == 1)
        async with connect(running, one) as again:  # a slot was freed
            assert await init(again) == {"type": "connection_ack"}
    await until(lambda: admission_of(running).open == 0)  # every slot released


async def test_a_keys_sockets_count_against_the_key_at_its_tier(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(tier_pro_connections=1)
    access = running.services.access
    assert access is not None
    _record, key = await access.keys.create("dash", "viewer", "pro")
    auth = {"authorization": f"Bearer {key}"}
    async with connect(running) as first, connect(running) as second:
        assert await init(first, auth) == {"type": "connection_ack"}
        with pytest.raises(ConnectionClosed):
            await init(second, auth)  # the key holds its one connection already
        code, reason = await closed_with(second)
        assert code == 4429 and "pro tier allows 1" in reason and "API key" in reason
        # the address's anonymous sockets are counted apart from the key's
        async with connect(running) as anonymous:
            assert await init(anonymous) == {"type": "connection_ack"}


# -- in total ---------------------------------------------------------------------------------


async def test_the_total_cap_closes_1013_and_http_still_answers(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(ws_max_connections=2, tier_free_connections=0)
    async with connect(running) as first, connect(running) as second:
        assert await init(first) == {"type": "connection_ack"}
        assert await init(second) == {"type": "connection_ack"}
        async with connect(running) as third:
            code, reason = await closed_with(third)
        assert code == CLOSE_TRY_AGAIN_LATER == 1013 and "connection limit" in reason
        # At the cap, the health and metrics paths and GraphQL over HTTP still answer.
        assert (await get(running, "/healthz")).status_code == 200
        metrics = (await get(running, "/metrics")).text
        assert "gateway_ws_connection_limit 2" in metrics
        assert 'gateway_ws_connections_refused_total{limit="total"} 1' in metrics
        with trio.fail_after(5):
            async with httpx.AsyncClient(base_url=running.urls[0], timeout=3) as client:
                answer = await client.post("/graphql", json={"query": "{ __typename }"})
        assert answer.json() == {"data": {"__typename": "Query"}}
        await second.aclose()
        await until(lambda: admission_of(running).open == 1)
        async with connect(running) as fourth:
            assert await init(fourth) == {"type": "connection_ack"}


# -- the request budget -----------------------------------------------------------------------


async def test_handshakes_spend_the_per_minute_budget(start_gateway: StartGateway) -> None:
    running = await start_gateway(tier_free_per_minute=3, tier_free_connections=0)
    for _ in range(2):
        async with connect(running) as ws:
            assert await init(ws) == {"type": "connection_ack"}
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=3) as client:
            assert (
                await client.post("/graphql", json={"query": "{ __typename }"})
            ).status_code == 200
            async with connect(running) as refused:
                code, reason = await closed_with(refused)
            assert code == 4429
            assert "per minute" in reason and "retry in" in reason
            # the budget is the address's, whichever way it was spent
            limited = await client.post("/graphql", json={"query": "{ __typename }"})
            assert limited.status_code == 429
    assert (await refused_counts(running))["rate"] == 1


# -- idle sockets -----------------------------------------------------------------------------


async def test_a_socket_that_only_pings_is_closed_after_the_idle_time(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(ws_idle_timeout=0.5)
    began = trio.current_time()  # the idle time counts from the handshake
    async with connect(running) as ws:
        assert await init(ws) == {"type": "connection_ack"}
        code = None
        with trio.fail_after(5):
            for _ in range(100):  # bounded: ~0.5 s of pings is all it should take
                try:
                    await ws.send_message(json.dumps({"type": "ping"}))
                    assert json.loads(await ws.get_message()) == {"type": "pong"}
                except ConnectionClosed as closed:
                    code = closed.reason.code
                    break
                await trio.sleep(0.05)
        held = trio.current_time() - began
    assert code == 4408
    assert 0.45 <= held < 2.0, held
    assert running.services.ws_stats.idle_closes == 1


# -- units: the counts ------------------------------------------------------------------------


def _principal(client: str, connections: int | None, tier: str = "pro") -> Principal:
    limits = TierLimits(tier, None, None, None, None, None, connections)
    key_id = int(client.removeprefix("key:")) if client.startswith("key:") else None
    return Principal(client, "viewer", limits, admin=False, key_id=key_id)


class _Access:
    """The part of AccessControl that Admission uses: the anonymous principal and admit."""

    def __init__(self, connections: int | None) -> None:
        self.connections = connections
        self.admitted: list[str] = []

    def anonymous(self, address: str) -> Principal:
        return _principal(f"ip:{address}", self.connections, tier="free")

    def admit(self, principal: Principal) -> None:
        self.admitted.append(principal.client)


def test_admission_counts_claims_moves_and_releases_without_leaking() -> None:
    stats = WebSocketStats()
    access = _Access(connections=2)
    admission = Admission(3, stats, access)  # type: ignore[arg-type]
    a1, a2 = admission.at_handshake("10.0.0.1"), admission.at_handshake("10.0.0.1")
    assert isinstance(a1, Slot) and isinstance(a2, Slot)
    over = admission.at_handshake("10.0.0.1")
    assert isinstance(over, Refusal) and over.code == 4429 and over.label == "client"
    b1 = admission.at_handshake("10.0.0.2")
    assert isinstance(b1, Slot)
    full = admission.at_handshake("10.0.0.3")
    assert isinstance(full, Refusal) and full.code == 1013 and full.label == "total"
    assert access.admitted == ["ip:10.0.0.1", "ip:10.0.0.1", "ip:10.0.0.2"]  # refused: not
    # A key's init moves its socket off the address, to the key, at the key's cap.
    key = _principal("key:7", connections=1)
    assert admission.at_init(a1, key) is None
    assert admission.held_by("ip:10.0.0.1") == 1 and admission.held_by("key:7") == 1
    refused = admission.at_init(a2, key)
    assert isinstance(refused, Refusal) and refused.label == "client"
    assert admission.held_by("ip:10.0.0.1") == 1  # stays where it was until released
    for slot in (a1, a2, b1, a1):  # a1 twice: released once
        admission.release(slot)
    assert admission.open == 0
    assert [admission.held_by(c) for c in ("ip:10.0.0.1", "ip:10.0.0.2", "key:7")] == [0, 0, 0]
    assert stats.refused == {"client": 2, "total": 1}
    assert stats.max_connections == 3


async def test_admission_over_the_real_access_control_counts_handshakes(
    running_storage: Any,
) -> None:
    settings = Settings(tier_free_per_minute=2, tier_free_connections=0)
    access = AccessControl(settings, running_storage)
    admission = Admission(100, WebSocketStats(), access)
    slots = [admission.at_handshake("2001:db8::1"), admission.at_handshake("2001:db8::2")]
    assert all(isinstance(slot, Slot) for slot in slots)
    # Same /64: one client, whose two requests this minute are spent.
    refused = admission.at_handshake("2001:db8::3")
    assert isinstance(refused, Refusal) and refused.label == "rate"
    assert access.meter.snapshot("ip:2001:db8::/64").requests_last_minute == 2


# -- units: the descriptor budget -------------------------------------------------------------


def test_total_cap_is_explicit_or_the_descriptor_limit_less_the_reserve() -> None:
    assert total_connection_cap(Settings(ws_max_connections=5), limit=100) == 5
    assert total_connection_cap(Settings(fd_reserve=256), limit=1024) == 768
    assert total_connection_cap(Settings(fd_reserve=256), limit=200) == 1  # starved: still 1
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert total_connection_cap(Settings(fd_reserve=10)) == soft - 10


def test_raising_the_descriptor_limit_lifts_soft_to_hard(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    limits = [(256, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda _which: limits[-1])

    def setrlimit(_which: int, value: tuple[int, int]) -> None:
        calls.append(value)
        limits.append(value)

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert raise_descriptor_limit() == (256, 4096)
    assert calls == [(4096, 4096)]


def test_a_limit_that_cannot_be_raised_never_fails_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, 4096))

    def refuse(_which: int, _value: tuple[int, int]) -> None:
        raise ValueError("not allowed here")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_descriptor_limit() == (256, 256)
    assert descriptors_module.descriptor_limit() == 256


# -- configuration ----------------------------------------------------------------------------


def test_environment_sets_the_caps() -> None:
    settings = settings_from_env(
        {
            "GATEWAY_TIER_FREE": "connections=3",
            "GATEWAY_TIER_PRO": "per_minute=10,connections=0",
            "GATEWAY_WS_MAX_CONNECTIONS": "500",
            "GATEWAY_FD_RESERVE": "64",
            "GATEWAY_WS_IDLE_TIMEOUT": "30",
        }
    )
    assert TierLimits.from_settings(settings, "free").connections == 3
    assert TierLimits.from_settings(settings, "pro").connections is None  # 0: unlimited
    assert (settings.ws_max_connections, settings.fd_reserve) == (500, 64)
    assert settings.ws_idle_timeout == 30
    auto = settings_from_env({"GATEWAY_WS_MAX_CONNECTIONS": "auto"})
    assert auto.ws_max_connections is None and auto.fd_reserve == 256


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_WS_MAX_CONNECTIONS", "0"),
        ("GATEWAY_WS_MAX_CONNECTIONS", "lots"),
        ("GATEWAY_FD_RESERVE", "-1"),
        ("GATEWAY_WS_IDLE_TIMEOUT", "0"),
        ("GATEWAY_WS_IDLE_TIMEOUT", "nan"),
        ("GATEWAY_TIER_FREE", "connections=-2"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError):
        settings_from_env({name: value})
    monkeypatch.setenv(name, value)
    assert cli_main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err


# -- at the descriptor limit, for real --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SOFT, HARD, RESERVE = 128, 256, 128


def _low_descriptor_limit() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] < HARD
    or resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * HARD,
    reason="needs descriptors to spare on this machine",
)
async def test_at_the_descriptor_limit_health_still_answers(tmp_path: Path) -> None:
    """A real `gateway serve` started with soft/hard descriptor limits of 128/256 and a
    reserve of 128: it raises the soft limit to 256, caps WebSockets at 128, and while one
    address tries 170 sockets, /healthz and /metrics answer. Before: 1,500 sockets were held and
    at the limit /healthz timed out."""
    port = _free_port()
    env = {
        **os.environ,
        "GATEWAY_FD_RESERVE": str(RESERVE),
        "GATEWAY_TIER_FREE": "per_minute=0,per_day=0,connections=0",
    }
    log_path = tmp_path / "gateway.log"
    log_file = log_path.open("w")
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "g.db"),
            "--providers",
            str(NO_UPSTREAMS),
            "--log-format",
            "json",
        ],
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=_low_descriptor_limit,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with trio.fail_after(20):
            async with httpx.AsyncClient(base_url=base, timeout=1) as client:
                for _ in range(400):  # bounded by the time limit too
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await trio.sleep(0.05)
        held, refused = 0, 0
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(170):
                    with trio.fail_after(5):
                        ws = await connect_websocket_url(
                            nursery,
                            f"ws://127.0.0.1:{port}/graphql",
                            subprotocols=["graphql-transport-ws"],
                        )
                    try:
                        assert await init(ws) == {"type": "connection_ack"}
                        held += 1
                    except ConnectionClosed as closed:
                        assert closed.reason.code == 1013
                        refused += 1
                async with httpx.AsyncClient(base_url=base, timeout=3) as client:
                    assert (await client.get("/healthz")).status_code == 200
                    metrics = (await client.get("/metrics")).text
                nursery.cancel_scope.cancel()
        assert held == HARD - RESERVE and refused == 170 - held
        assert f"gateway_ws_connection_limit {HARD - RESERVE}" in metrics
        assert f'gateway_ws_connections_refused_total{{limit="total"}} {refused}' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10) as waited:
            await process.wait()
        if waited.cancelled_caught:
            process.kill()
            with trio.fail_after(5):
                await process.wait()
        log_file.close()
    output = log_path.read_text()
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (raised,) = [e for e in events if e["event"] == "process.descriptor_limit"]
    assert (raised["soft_before"], raised["soft_after"]) == (SOFT, HARD)

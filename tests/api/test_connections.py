"""Connection caps at accept (gateway/api/connections.py, hypercorn patch 3 in
gateway/api/hypercorn_patches.py): per client address, WebSockets apart, trusted proxies
exempt; in total, with an allowance for addresses that hold no connection.

bench/soak.py found it: with a descriptor limit of 320, 300 slow request bodies from 40
addresses used up every descriptor (only WebSockets had caps): the gateway hit EMFILE, /readyz
timed out and trio's accept loop wrote thousands of plain-text `accept returned EMFILE` lines.
Each test plays the client (loopback, port 0, every wait bounded) and checks what it sees.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from gateway.api.connections import ConnectionCaps, Ticket
from gateway.api.metrics import HttpStats
from gateway.api.ws import fresh_allowance, http_connection_cap
from gateway.cli import main as cli_main
from gateway.config import Settings, settings_from_env
from gateway.errors import ConfigError
from tests.conftest import StartGateway

REPO = Path(__file__).resolve().parents[2]
NO_UPSTREAMS = REPO / "tests" / "data" / "no-providers.toml"
NO_BUDGET = {"tier_free_per_minute": 0, "tier_free_per_day": 0, "tier_free_connections": 0}

SLOW_BODY = (
    b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: 100000\r\n\r\n{"
)


# -- client helpers ---------------------------------------------------------------------------


async def slow_body(port: int, source: str) -> trio.SocketStream:
    """A POST whose body will never be complete, from the loopback address `source`."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    with contextlib.suppress(trio.BrokenResourceError):  # closed already: `was_closed` says so
        await stream.send_all(SLOW_BODY)
    return stream


async def was_closed(stream: trio.SocketStream, wait: float = 0.3) -> bool:
    """Whether the server closed the connection (without an answer) within `wait`."""
    with trio.move_on_after(wait):
        try:
            data = await stream.receive_some(4096)
        except trio.BrokenResourceError:  # reset: closed with our bytes unread
            return True
        assert data == b"", data  # a refused connection gets no answer, only its end
        return True
    return False


def _frame(message: dict[str, object]) -> bytes:
    """A masked text frame, as a client sends it."""
    data, mask = json.dumps(message).encode(), os.urandom(4)
    assert len(data) < 126
    return (
        bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    )


async def websocket(port: int, source: str) -> trio.SocketStream:
    """A graphql-transport-ws socket from `source`, acknowledged (else AssertionError)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade"
        b"\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    answer = b""
    for _ in range(20):  # bounded: the 101 and its headers
        answer += await stream.receive_some(4096)
        if b"\r\n\r\n" in answer:
            break
    assert answer.startswith(b"HTTP/1.1 101"), answer[:40]
    await stream.send_all(_frame({"type": "connection_init"}))
    ack = await stream.receive_some(4096)
    assert b"connection_ack" in ack, ack
    return stream


async def get(base: str, path: str, source: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=base, timeout=3, transport=transport) as client:
            return await client.get(path)


def refused(metrics: str) -> dict[str, float]:
    counts = {}
    for line in metrics.splitlines():
        if line.startswith("gateway_http_connections_refused_total{"):
            counts[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    return counts


async def until(condition: object, timeout: float = 3) -> None:
    with trio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.01)


# -- per client, in process -------------------------------------------------------------------


async def test_an_address_over_its_cap_is_closed_at_once_while_others_are_served(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(http_max_connections_per_client=3, **NO_BUDGET)
    caps = running.app.connections
    with trio.fail_after(10):
        held = [await slow_body(running.port, "127.0.0.5") for _ in range(3)]
        await until(lambda: caps.held_by("127.0.0.5") == 3)
        over = await slow_body(running.port, "127.0.0.5")
        assert await was_closed(over)  # before its request was read: no answer at all
        assert not any([await was_closed(stream, 0.05) for stream in held])
        # Another address is served meanwhile, and sees the refusal counted.
        answer = await get(running.urls[0], "/metrics", source="127.0.0.6")
        assert answer.status_code == 200
        assert refused(answer.text) == {"total": 0, "client": 1}
        assert "gateway_http_connections_per_client" not in answer.text
        # One of the three goes: the address may connect again.
        await held.pop().aclose()
        await until(lambda: caps.held_by("127.0.0.5") == 2)
        again = await slow_body(running.port, "127.0.0.5")
        assert not await was_closed(again)
        for stream in [*held, over, again]:
            await stream.aclose()
        await until(lambda: caps.open == 0)  # every place released


async def test_a_trusted_proxy_is_not_held_to_the_per_client_cap(
    start_gateway: StartGateway,
) -> None:
    """Every client behind a proxy shares its address: the app counts them by X-Forwarded-For."""
    running = await start_gateway(
        http_max_connections_per_client=2, trusted_proxies=("127.0.0.7/32",), **NO_BUDGET
    )
    with trio.fail_after(10):
        streams = [await slow_body(running.port, "127.0.0.7") for _ in range(4)]
        assert not any([await was_closed(stream, 0.1) for stream in streams])
        assert running.app.connections.open == 4
        for stream in streams:
            await stream.aclose()


async def test_websockets_leave_the_count_once_admitted(start_gateway: StartGateway) -> None:
    """Sockets admitted as WebSockets are their tier's to cap (gateway.api.ws.admission), so an
    address may hold more of them than plain connections, and still make requests."""
    running = await start_gateway(http_max_connections_per_client=2, **NO_BUDGET)
    caps = running.app.connections
    with trio.fail_after(10):
        sockets = [await websocket(running.port, "127.0.0.8") for _ in range(4)]
        assert caps.held_by("127.0.0.8") == 0 and caps.open == 4
        assert (await get(running.urls[0], "/healthz", source="127.0.0.8")).status_code == 200
        for stream in sockets:
            await stream.aclose()
        await until(lambda: caps.open == 0)


# -- units ------------------------------------------------------------------------------------


def _caps(total: int, per_client: int, fresh: int = 0) -> tuple[ConnectionCaps, HttpStats]:
    stats = HttpStats()
    caps = ConnectionCaps(
        total=total,
        per_client=per_client,
        fresh=fresh,
        trusted_proxy=lambda host: host == "10.0.0.1",
        stats=stats,
    )
    return caps, stats


def test_caps_count_admit_refuse_and_release_without_leaking() -> None:
    caps, stats = _caps(total=4, per_client=2, fresh=1)
    a = [caps.admit(("192.0.2.1", port)) for port in (1, 2, 3)]
    assert isinstance(a[0], Ticket) and isinstance(a[1], Ticket) and a[2] is None  # client cap
    proxy = [caps.admit(("10.0.0.1", port)) for port in (1, 2)]  # exempt from the client cap
    assert all(isinstance(t, Ticket) for t in proxy) and caps.open == 4
    assert caps.admit(("192.0.2.2", 1)) is not None  # fresh: holds none; past the total by 1
    assert caps.admit(("192.0.2.3", 1)) is None  # the allowance is used up
    assert caps.admit(("10.0.0.1", 3)) is None  # a proxy is never "fresh"
    assert stats.connections == 5 and stats.connection_limit == 4
    assert stats.connections_refused == {"client": 1, "total": 2}
    # IPv6: one /64 is one client.
    caps6, _ = _caps(total=100, per_client=1)
    assert caps6.admit(("2001:db8::1", 1)) is not None
    assert caps6.admit(("2001:db8::2", 1)) is None
    assert caps6.admit(("2001:db8:0:1::1", 1)) is not None
    for ticket in [*a, *proxy, a[0]]:  # a[0] twice: released once
        if ticket is not None:
            caps.release(ticket)
    assert caps.open == 1 and caps.held_by("192.0.2.1") == 0 and stats.connections == 1


def test_an_upgraded_connection_leaves_its_clients_count_but_not_the_total() -> None:
    caps, _ = _caps(total=3, per_client=1)
    ticket = caps.admit(("192.0.2.1", 1000))
    assert ticket is not None and caps.admit(("192.0.2.1", 1001)) is None
    caps.upgraded(["192.0.2.1", 1000])  # an ASGI scope's "client" may be a list
    caps.upgraded(None)
    assert caps.held_by("192.0.2.1") == 0 and caps.open == 1
    second = caps.admit(("192.0.2.1", 1001))
    assert second is not None
    caps.release(ticket)
    assert caps.held_by("192.0.2.1") == 1 and caps.open == 1  # the upgraded one: total only
    caps.release(second)
    assert caps.open == 0 and caps.held_by("192.0.2.1") == 0
    unknown = caps.admit(None)  # the peer went before it could be named: the total only
    assert unknown is not None and caps.open == 1
    caps.release(unknown)


def test_the_total_is_explicit_or_the_descriptor_limit_less_three_quarters_of_the_reserve() -> None:
    assert http_connection_cap(Settings(http_max_connections=50), limit=1024) == 50
    assert http_connection_cap(Settings(fd_reserve=256), limit=1024) == 1024 - 192
    assert http_connection_cap(Settings(fd_reserve=256), limit=100) == 1  # starved: still 1
    assert fresh_allowance(Settings(fd_reserve=256)) == 64
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert http_connection_cap(Settings(fd_reserve=8)) == soft - 6


# -- configuration ----------------------------------------------------------------------------


def test_environment_sets_the_caps() -> None:
    settings = settings_from_env(
        {"GATEWAY_HTTP_MAX_CONNECTIONS": "500", "GATEWAY_HTTP_MAX_CONNECTIONS_PER_CLIENT": "0"}
    )
    assert (settings.http_max_connections, settings.http_max_connections_per_client) == (500, 0)
    auto = settings_from_env({"GATEWAY_HTTP_MAX_CONNECTIONS": "auto"})
    assert auto.http_max_connections is None and auto.http_max_connections_per_client == 64


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_HTTP_MAX_CONNECTIONS", "0"),
        ("GATEWAY_HTTP_MAX_CONNECTIONS", "many"),
        ("GATEWAY_HTTP_MAX_CONNECTIONS_PER_CLIENT", "-1"),
        ("GATEWAY_HTTP_MAX_CONNECTIONS_PER_CLIENT", "1.5"),
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


def test_settings_in_code_are_checked_too() -> None:
    for bad in ({"http_max_connections": 0}, {"http_max_connections_per_client": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings(**bad).validated()  # type: ignore[arg-type]


# -- at the descriptor limit, for real --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SOFT, HARD, RESERVE, PER_CLIENT = 128, 256, 128, 8
WS_CAP, HTTP_CAP, FRESH = HARD - RESERVE, HARD - RESERVE * 3 // 4, RESERVE // 4


def _low_descriptor_limit() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] < HARD
    or resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * HARD,
    reason="needs descriptors to spare on this machine",
)
async def test_slow_bodies_from_many_addresses_cannot_use_up_the_descriptors(
    tmp_path: Path,
) -> None:
    """A real `gateway serve` with a descriptor limit of 256 and a reserve of 128: WebSockets
    from one address at their cap (128), then slow request bodies, 8 per address from 21
    addresses. The caps close the excess at once, a health probe from a fresh address still
    answers, and stderr has no EMFILE line. Before: the bodies used up every descriptor,
    /healthz timed out and trio's accept loop logged `accept returned EMFILE` in plain text."""
    port = _free_port()
    env = {
        **os.environ,
        "GATEWAY_FD_RESERVE": str(RESERVE),
        "GATEWAY_TIER_FREE": "per_minute=0,per_day=0,connections=0",
        "GATEWAY_HTTP_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
        "GATEWAY_SENTIMENT_MODEL": "off",
    }
    log_path = tmp_path / "gateway.log"
    log_file = log_path.open("w")
    process = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "gateway", "serve", "--port", str(port)),
            *("--db", str(tmp_path / "g.db"), "--providers", str(NO_UPSTREAMS)),
            *("--log-format", "json"),
        ],
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=_low_descriptor_limit,
    )
    base = f"http://127.0.0.1:{port}"
    streams: list[trio.SocketStream] = []
    try:
        with trio.fail_after(20):
            for _ in range(400):  # bounded by the time limit too
                try:
                    if (await get(base, "/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await trio.sleep(0.05)
        with trio.fail_after(60):
            for _ in range(WS_CAP):
                streams.append(await websocket(port, "127.0.0.2"))
            # One address past its cap: its 9th and 10th are closed at once.
            first = [await slow_body(port, "127.0.0.3") for _ in range(PER_CLIENT + 2)]
            streams.extend(first)
            assert [await was_closed(s, 0.2) for s in first] == [False] * PER_CLIENT + [True] * 2
            # Twenty more addresses: the total fills (160), then each new address gets its
            # first connection from the allowance for addresses that hold none (32).
            attack = [
                await slow_body(port, f"127.0.0.{4 + n // PER_CLIENT}")
                for n in range(20 * PER_CLIENT)
            ]
            streams.extend(attack)
            closed = [await was_closed(s, 0.05) for s in attack]
            held = closed.count(False)
            assert HTTP_CAP - WS_CAP - PER_CLIENT <= held <= HTTP_CAP - WS_CAP - PER_CLIENT + 20
            # A probe from an address that holds nothing still gets in, and is answered.
            assert (await get(base, "/healthz", source="127.0.0.100")).status_code == 200
            metrics = (await get(base, "/metrics", source="127.0.0.101")).text
        counts = refused(metrics)
        assert counts["client"] == 2 and counts["total"] == closed.count(True)
        assert f"gateway_http_connection_limit {HTTP_CAP}" in metrics
    finally:
        for stream in streams:
            await stream.aclose()
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10) as waited:
            await process.wait()
        if waited.cancelled_caught:
            process.kill()
            with trio.fail_after(5):
                await process.wait()
        log_file.close()
    output = log_path.read_text()
    assert "EMFILE" not in output and "Too many open files" not in output
    events = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    assert sum(e["event"] == "http.connection_cap_reached" for e in events) >= 1
    assert sum(e["event"] == "http.client_connection_cap_reached" for e in events) == 1
    assert process.returncode == 0


def test_a_cap_reached_is_logged_once_per_episode_not_per_connection() -> None:
    """A flood keeps the total full one place at a time: that is one episode (it was 828 lines
    in a minute of bench/soak.py --gateway-nofile 320), over once a tenth of the cap is free."""
    caps, _ = _caps(total=20, per_client=0)
    with capture_logs() as logs:
        tickets = [caps.admit((f"192.0.2.{n}", 1)) for n in range(20)]
        for n in range(5):
            assert caps.admit(("198.51.100.1", n)) is None
            caps.release(tickets.pop())  # type: ignore[arg-type]
            tickets.append(caps.admit(("198.51.100.2", n)))
        for ticket in tickets[:3]:
            caps.release(ticket)  # type: ignore[arg-type]
    assert [e["event"] for e in logs] == [
        "http.connection_cap_reached",
        "http.connection_cap_cleared",
    ]
    one, _ = _caps(total=100, per_client=1)
    with capture_logs() as logs:
        first = one.admit(("192.0.2.1", 1))
        assert [one.admit(("192.0.2.1", port)) for port in (2, 3, 4)] == [None] * 3
        one.release(first)  # type: ignore[arg-type]
        assert one.admit(("192.0.2.1", 5)) is not None and one.admit(("192.0.2.1", 6)) is None
    assert [e["event"] for e in logs] == ["http.client_connection_cap_reached"] * 2

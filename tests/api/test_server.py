"""The replacement for hypercorn's `TCPServer.protocol_send` (gateway/api/hypercorn_patches.py,
installed by gateway/api/server.py), against a real socket pair: whole writes never interleave,
a full buffer falls back to the awaited path, a stalled peer is cut off, a vanished one is
reported closed, and no write outlives the shutdown's deadline. Then, against a gateway, the
header timeout that `gateway.api.server` sets."""

from __future__ import annotations

import resource
import shutil
import socket as stdlib_socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from hypercorn.events import Closed, RawData
from structlog.testing import capture_logs

from gateway.api import server
from gateway.api.hypercorn_patches import WriteDeadline, protocol_send
from gateway.api.server import hypercorn_config, kernel_backlog_cap
from gateway.config import Settings, settings_from_env
from gateway.errors import ConfigError
from tests.conftest import StartGateway


@dataclass
class _Config:
    gateway_send_stall_timeout: float = 2.0
    gateway_write_deadline: WriteDeadline | None = None


@dataclass
class _Protocol:
    events: list[Any] = field(default_factory=list)

    async def handle(self, event: Any) -> None:
        self.events.append(event)


@dataclass
class _Server:
    """The attributes of hypercorn's TCPServer that protocol_send uses."""

    stream: trio.SocketStream
    config: _Config = field(default_factory=_Config)
    protocol: _Protocol = field(default_factory=_Protocol)
    send_lock: trio.Lock = field(default_factory=trio.Lock)


async def _pair() -> tuple[_Server, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    for sock in (a, b):
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 16 * 1024)
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 16 * 1024)
    return _Server(trio.SocketStream(a)), trio.SocketStream(b)


async def _send(server: _Server, data: bytes) -> None:
    await protocol_send(server, RawData(data))  # type: ignore[arg-type]


async def test_concurrent_writes_bigger_than_the_buffer_never_interleave() -> None:
    server, peer = await _pair()
    payloads = [bytes([n]) * 300_000 for n in range(1, 5)] + [b"\x09" * 50]
    received = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for payload in payloads:
                nursery.start_soon(_send, server, payload)
            while len(received) < sum(map(len, payloads)):
                received += await peer.receive_some(7_000)
                await trio.lowlevel.checkpoint()  # a slow reader: writers fill the buffer and wait
    # each payload arrives whole, in one piece, whatever the order
    pieces, at = [], 0
    while at < len(received):
        end = at
        while end < len(received) and received[end] == received[at]:
            end += 1
        pieces.append(bytes(received[at:end]))
        at = end
    assert sorted(pieces) == sorted(payloads)
    assert server.protocol.events == []


async def test_a_peer_that_stops_reading_is_cut_off_after_the_stall_timeout() -> None:
    server, peer = await _pair()
    server.config.gateway_send_stall_timeout = 0.3
    with trio.fail_after(5):
        await _send(server, b"x" * 2_000_000)  # far more than both buffers hold
    assert [type(e) for e in server.protocol.events] == [Closed]
    await peer.aclose()


async def test_a_vanished_peer_is_reported_closed() -> None:
    server, peer = await _pair()
    await peer.aclose()
    with trio.fail_after(5):
        await _send(server, b"hello")
        await _send(server, b"again")
    assert Closed in {type(e) for e in server.protocol.events}


async def test_a_slow_reader_cannot_hold_a_write_past_the_shutdown_deadline() -> None:
    """A reader fast enough never to stall held a 3.5 MB write, and so the server's shutdown,
    for as long as the transfer took (measured: 41 s)."""
    server, peer = await _pair()
    server.config.gateway_write_deadline = WriteDeadline()
    server.config.gateway_send_stall_timeout = 1.0
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def read_slowly() -> None:
                while await peer.receive_some(4096):  # 4 KB every 20 ms: never stalled
                    await trio.sleep(0.02)

            nursery.start_soon(read_slowly)
            nursery.start_soon(_send, server, b"x" * 10_000_000)  # minutes at that pace
            await trio.sleep(0.3)
            assert server.protocol.events == []  # still writing, not stalled
            began = trio.current_time()
            assert server.config.gateway_write_deadline is not None
            server.config.gateway_write_deadline.end_all_by(began + 0.2)
            while not server.protocol.events:
                await trio.sleep(0.01)
            assert 0.15 < trio.current_time() - began < 0.6
            nursery.cancel_scope.cancel()
    assert [type(e) for e in server.protocol.events] == [Closed]
    await peer.aclose()


async def test_a_client_slow_to_send_its_headers_is_disconnected(
    start_gateway: StartGateway,
) -> None:
    """hypercorn's keep-alive timer runs until a request's headers are complete: it is the
    header timeout (30 s before it became the setting http_header_timeout)."""
    running = await start_gateway(http_header_timeout=0.5)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        began = trio.current_time()
        closed_after = None
        for byte in b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nx-pad: " + b"a" * 100:
            try:
                await stream.send_all(bytes([byte]))
                with trio.move_on_after(0.05):
                    if await stream.receive_some(4096) == b"":
                        closed_after = trio.current_time() - began
                        break
            except trio.BrokenResourceError:
                closed_after = trio.current_time() - began
                break
        await stream.aclose()
    assert closed_after is not None and 0.4 < closed_after < 1.5


async def test_a_connection_the_client_closed_after_its_response_ends_at_once(
    start_gateway: StartGateway,
) -> None:
    """The client reads its answer and closes: the server's side goes too, not after its
    keep-alive timer (hypercorn patch 4). It held the socket, and its place under the connection
    caps, for `http_header_timeout` (10 s) after every such client."""
    running = await start_gateway()  # http_header_timeout: 10 s
    caps = running.app.connections
    with trio.fail_after(5):
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while b'"alive"' not in answer:
                answer += await stream.receive_some(4096)
            await trio.sleep(0.05)  # the server is idle, waiting for the next request
            await stream.aclose()
        began = trio.current_time()
        while caps.open:
            await trio.sleep(0.01)
    assert trio.current_time() - began < 1.0


def test_the_listen_backlog_is_a_setting_carried_to_hypercorn() -> None:
    """hypercorn's default backlog (100) overflowed in a WebSocket flood: handshakes and a new
    /readyz connection waited seconds to be accepted."""
    assert hypercorn_config(Settings()).backlog == 4096
    assert hypercorn_config(Settings(http_backlog=4096)).backlog == 4096
    assert settings_from_env({"GATEWAY_HTTP_BACKLOG": "2048"}).http_backlog == 2048
    for bad in ("0", "-5", "lots", "65536"):
        with pytest.raises(ConfigError, match="GATEWAY_HTTP_BACKLOG"):
            settings_from_env({"GATEWAY_HTTP_BACKLOG": bad})
    with pytest.raises(ConfigError, match="http_backlog"):
        Settings(http_backlog=0).validated()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
async def test_the_listening_socket_has_the_configured_backlog(
    start_gateway: StartGateway,
) -> None:
    """What the kernel says of the gateway's listening socket: for a listener, `ss` shows the
    accept queue's size as its Send-Q (the kernel caps it at net.core.somaxconn)."""
    running = await start_gateway(http_backlog=77)
    with trio.fail_after(10):
        found = await trio.run_process(
            ["ss", "-ltnH", f"sport = :{running.port}"], capture_stdout=True
        )
    listing = found.stdout.decode().split()
    assert listing[0] == "LISTEN" and listing[2] == "77", listing


async def test_a_burst_of_connections_while_the_loop_is_busy_is_accepted_at_once(
    start_gateway: StartGateway,
) -> None:
    """1,500 clients connect while the event loop cannot accept (busy, as with a burst of
    WebSocket handshakes): the kernel holds them all in the listen backlog, and they are
    accepted as soon as the loop runs. With the old backlog (1024) the rest were dropped, then
    got in seconds later by retransmission, or were reset once they sent their request
    (bench/fanout.py --subscribers 10000 --connect-window 2000: 359 resets)."""
    burst = 1_500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * burst + 500:
        pytest.skip(f"needs {2 * burst + 500} descriptors, the hard limit is {hard}")
    cap = kernel_backlog_cap()
    if cap is None or cap < burst:
        pytest.skip(f"the kernel caps the listen backlog at {cap} (net.core.somaxconn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets: list[stdlib_socket.socket] = []
    try:
        running = await start_gateway(http_max_connections_per_client=0)
        caps = running.app.connections

        def connect_all() -> None:
            for _ in range(burst):
                sock = stdlib_socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", running.port))
                sockets.append(sock)

        connecting = threading.Thread(target=connect_all)
        connecting.start()
        connecting.join(timeout=20)  # blocks this thread, so the event loop accepts nothing
        assert len(sockets) == burst
        resumed = trio.current_time()
        with trio.fail_after(10):
            while caps.open < burst:
                await trio.sleep(0.01)
        assert trio.current_time() - resumed < 0.8  # not after a SYN retransmission (1 s, 3 s)
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_kernel_cap_below_the_backlog_is_read(tmp_path: Path) -> None:
    """`serve_http` warns (http.backlog_capped) when net.core.somaxconn is below the setting."""
    path = tmp_path / "somaxconn"
    path.write_text("128\n")
    assert kernel_backlog_cap(path) == 128
    path.write_text("nonsense")
    assert kernel_backlog_cap(path) is None
    assert kernel_backlog_cap(tmp_path / "missing") is None


async def test_a_kernel_cap_below_the_backlog_is_a_warning_at_start(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "somaxconn"
    path.write_text("128\n")
    monkeypatch.setattr(server, "kernel_backlog_cap", lambda: kernel_backlog_cap(path))
    with capture_logs() as logs:
        await start_gateway(http_backlog=4096)
    capped = [line for line in logs if line["event"] == "http.backlog_capped"]
    assert capped and capped[0]["somaxconn"] == 128 and capped[0]["backlog"] == 4096

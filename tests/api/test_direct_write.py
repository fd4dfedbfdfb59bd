"""The direct write of subscription frames (gateway/api/direct_write.py): what a subscriber sees
is unchanged — whole frames, in order, the slow-client policy — while a delivered event wakes no
connection task; a socket that is full, closing or gone falls back to the queue or is dropped.
"""

from __future__ import annotations

import base64
import json
import os
import socket as stdlib_socket
import struct
from typing import Any

import trio
import trio.testing
from hypercorn.events import RawData
from hypercorn.protocol.ws_stream import ASGIWebsocketState
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection, TextMessage

from gateway.api import deflate
from gateway.api.direct_write import DirectWrite
from gateway.nursery import RunningGateway
from tests.api.test_ws import TICKS, connect, init, publish, receive, send
from tests.conftest import StartGateway, wait_members

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


# -- DirectWrite on a real TCP socket ----------------------------------------------------------


class _HypercornStream:
    """What DirectWrite reads of hypercorn's WSStream."""

    def __init__(self) -> None:
        self.closed = False
        self.state = ASGIWebsocketState.CONNECTED
        self.connection = deflate.server_connection([], 1 << 20)


async def _tcp_pair(sndbuf: int = 4096) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A loopback TCP connection: (server side with a small send buffer, client side with a
    small receive buffer), so the kernel soon takes a write only in part."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    await client.connect(listener.getsockname())
    server, _ = await listener.accept()
    listener.close()
    server.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, sndbuf)
    return trio.SocketStream(server), trio.SocketStream(client)


def _direct(server: trio.SocketStream) -> tuple[DirectWrite, _HypercornStream, trio.Lock]:
    stream, lock = _HypercornStream(), trio.Lock()
    holder: list[DirectWrite] = []

    async def send_raw(event: RawData) -> None:  # what the patched protocol_send does
        async with lock:
            data, holder[0].pending = holder[0].pending + event.data, b""
            await server.send_all(data)

    direct = DirectWrite(stream, server, lock, send_raw, ASGIWebsocketState.CONNECTED)
    holder.append(direct)
    return direct, stream, lock


async def _read_messages(client: trio.SocketStream, count: int) -> list[str]:
    parser = WsConnection(ConnectionType.CLIENT)
    messages: list[str] = []
    part = ""
    for _ in range(100_000):  # bounded
        if len(messages) >= count:
            break
        data = await client.receive_some(65536)
        assert data, "the server side closed early"
        parser.receive_data(data)
        part = _texts(parser, part, messages)
    return messages


def _texts(parser: WsConnection, part: str, messages: list[str]) -> str:
    """Append each whole text message the parser has to `messages`; the unfinished rest."""
    for event in parser.events():
        assert isinstance(event, TextMessage), event
        part += event.data
        if event.message_finished:
            messages.append(part)
            part = ""
    return part


async def test_a_partial_write_is_completed_before_anything_else_and_frames_stay_whole() -> None:
    with trio.fail_after(10):
        server, client = await _tcp_pair()
        direct, _, _ = _direct(server)
        sent: list[str] = []
        for n in range(10_000):  # until the kernel takes a frame only in part
            frame = json.dumps({"n": n, "pad": "x" * 3000})
            assert direct.try_send(frame)
            sent.append(frame)
            if direct.pending:
                break
        assert direct.pending, "the kernel never took a frame in part"
        # Nothing may overtake the rest of that frame: the next one is refused, unwritten.
        later = json.dumps({"n": len(sent), "pad": ""})
        assert not direct.try_send(later)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(direct.flush)
            received = await _read_messages(client, len(sent))
        assert not direct.pending
        assert direct.try_send(later)  # all out: the direct path is open again
        received += await _read_messages(client, 1)
        assert received == [*sent, later]
        await server.aclose()
        await client.aclose()


async def test_a_closed_or_closing_socket_is_never_written_directly() -> None:
    with trio.fail_after(10):
        server, client = await _tcp_pair(sndbuf=1 << 16)
        direct, stream, lock = _direct(server)
        async with lock:  # a write under way holds the lock: nothing may interleave
            assert not direct.try_send("held")
        stream.closed = True  # hypercorn saw the peer go
        assert not direct.try_send("gone")
        stream.closed = False
        stream.state = ASGIWebsocketState.HTTPCLOSED
        assert not direct.try_send("no longer connected")
        stream.state = ASGIWebsocketState.CONNECTED
        stream.connection.send(CloseConnection(code=1000))  # our close is on its way
        assert not direct.try_send("after our close")
        stream.connection = deflate.server_connection([], 1 << 20)
        assert direct.try_send("fine")
        assert await _read_messages(client, 1) == ["fine"]
        # The peer resets the connection: writes fail, and nothing is left pending.
        client.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, _RESET)
        await client.aclose()
        await trio.sleep(0.05)
        results = [direct.try_send("to nobody") for _ in range(3)]
        assert results[-1] is False
        assert not direct.pending
        await server.aclose()  # and our own socket closed (its descriptor is -1)
        assert not direct.try_send("closed")


# -- the connection: the direct path and its queue alternate ----------------------------------


class _FakeDirect:
    """A DirectWrite whose socket takes a frame or not, as the test says."""

    def __init__(self, wire: list[str]) -> None:
        self.wire = wire
        self.open = True
        self.pending = b""

    def try_send(self, text: str) -> bool:
        if self.open:
            self.wire.append(text)
        return self.open

    async def flush(self) -> None:
        pass


async def test_frames_keep_their_order_when_the_direct_path_and_the_queue_alternate() -> None:
    from gateway.api.graphql_trio import GraphQLEngine
    from gateway.api.shared_subscriptions import SubscriptionHub
    from gateway.api.ws import Connection, ShutdownSignal, WebSocketOptions, WebSocketStats
    from gateway.schema import build_schema

    wire: list[str] = []
    inbound_send, inbound_receive = trio.open_memory_channel[dict[str, Any]](10)

    async def asgi_send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            wire.append(message["text"])

    direct = _FakeDirect(wire)
    stats = WebSocketStats()
    engine = GraphQLEngine(build_schema()._schema)
    connection = Connection(
        legacy=False,
        receive=inbound_receive.receive,
        send=asgi_send,
        engine=engine,
        hub=SubscriptionHub(engine, None),
        context=None,
        options=WebSocketOptions(send_queue=8),
        stats=stats,
        shutdown=ShutdownSignal(),
        direct=direct,  # type: ignore[arg-type]
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await trio.testing.wait_all_tasks_blocked()
            connection.queue_data("d0")  # written directly
            direct.open = False
            connection.queue_data("d1")  # the socket is full: queued
            direct.open = True
            connection.queue_data("d2")  # the socket has room, but d1 is still queued
            await trio.testing.wait_all_tasks_blocked()  # the connection's task sends d1, d2
            connection.queue_data("d3")  # nothing queued: directly again
            assert wire == ["d0", "d1", "d2", "d3"]
            assert stats.frames_sent == 4
            nursery.cancel_scope.cancel()
    await inbound_send.aclose()


# -- against a real gateway --------------------------------------------------------------------


class _WriterWakes(trio.abc.Instrument):
    """Counts wakes of the tasks that serve a WebSocket: those whose await chain runs
    `Connection.run` (one task reads, writes and keeps the deadlines)."""

    def __init__(self) -> None:
        self.wakes = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        coro: Any = task.coro
        for _ in range(50):  # the suspended task's await chain, bounded
            code = getattr(coro, "cr_code", None)
            if code is None:
                return
            if code.co_qualname == "Connection.run":
                self.wakes += 1
                return
            coro = coro.cr_await


async def test_an_event_reaches_reading_subscribers_without_waking_their_writers(
    gateway: RunningGateway,
) -> None:
    async with connect(gateway) as a, connect(gateway) as b, connect(gateway) as c:
        for op, ws in enumerate((a, b, c)):
            await init(ws)
            await send(ws, {"type": "subscribe", "id": str(op), "payload": {"query": TICKS}})
        await wait_members(gateway, 3)
        await trio.testing.wait_all_tasks_blocked(0.05)
        wakes = _WriterWakes()
        trio.lowlevel.add_instrument(wakes)
        try:
            for n in range(5):
                publish(gateway, usd=float(n))
                for ws in (a, b, c):
                    message = await receive(ws)
                    assert message["payload"]["data"]["priceTicks"]["usd"] == float(n)
        finally:
            trio.lowlevel.remove_instrument(wakes)
        assert wakes.wakes == 0
        assert gateway.services.ws_stats.frames_sent >= 3 * 5


async def test_a_socket_keeps_no_handshake_headers_once_upgraded(
    gateway: RunningGateway, monkeypatch: Any
) -> None:
    scopes: list[dict[str, Any]] = []
    original = DirectWrite.__init__

    def capture(self: DirectWrite, stream: Any, *args: Any) -> None:
        scopes.append(stream.scope)  # hypercorn's WSStream: the scope the app was given
        original(self, stream, *args)

    monkeypatch.setattr(DirectWrite, "__init__", capture)
    async with connect(gateway) as ws:
        await init(ws)
        assert len(scopes) == 1
        assert scopes[0]["headers"] == []  # read at the handshake, then let go
        assert scopes[0]["subprotocols"] == ["graphql-transport-ws"]


async def _slow_raw_subscriber(running: RunningGateway) -> tuple[trio.SocketStream, WsConnection]:
    """A graphql-transport-ws subscriber with a 4 KB receive buffer, parsed with wsproto."""
    with trio.fail_after(5):
        return await _open_slow_raw_subscriber(running)


async def _open_slow_raw_subscriber(
    running: RunningGateway,
) -> tuple[trio.SocketStream, WsConnection]:
    sock = trio.socket.socket()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", running.port))
    stream = trio.SocketStream(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            "GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    head = b""
    for _ in range(100):  # bounded: the 101 response
        head += await stream.receive_some(4096)
        if b"\r\n\r\n" in head:
            break
    _, _, rest = head.partition(b"\r\n\r\n")
    parser = WsConnection(ConnectionType.CLIENT)
    parser.receive_data(rest)
    subscribe = {"type": "subscribe", "id": "s", "payload": {"query": TICKS}}
    for message in ({"type": "connection_init"}, subscribe):
        await stream.send_all(parser.send(TextMessage(data=json.dumps(message))))
    return stream, parser


async def test_a_slow_reader_gets_whole_frames_in_order_and_the_latest_one(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(ws_send_queue=8, ws_slow_consumer_drops=1_000_000)
    stats = running.services.ws_stats
    stream, parser = await _slow_raw_subscriber(running)
    await wait_members(running, 1)
    prices: list[float] = []
    last = 2999.0
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:

            async def read_slowly() -> None:
                part = ""
                for _ in range(1_000_000):  # bounded
                    data = await stream.receive_some(512)
                    assert data
                    parser.receive_data(data)
                    messages: list[str] = []
                    part = _texts(parser, part, messages)
                    for text in messages:
                        message = json.loads(text)
                        if message.get("type") == "next":
                            prices.append(message["payload"]["data"]["priceTicks"]["usd"])
                    if prices and prices[-1] == last:
                        return
                    await trio.sleep(0.001)

            nursery.start_soon(read_slowly)
            for n in range(int(last) + 1):
                publish(running, usd=float(n))
                if n % 20 == 0:
                    await trio.sleep(0.002)
    assert prices == sorted(set(prices)), "frames arrived out of order or twice"
    assert prices[-1] == last
    assert stats.frames_dropped > 0  # the bounded queue dropped what the reader could not take
    assert stats.slow_consumer_closes == 0
    await stream.aclose()


async def test_a_subscriber_that_resets_mid_frame_is_dropped_and_others_carry_on(
    start_gateway: StartGateway, monkeypatch: Any
) -> None:
    running = await start_gateway(ws_send_queue=8, send_stall_timeout=5)
    stats = running.services.ws_stats
    partial: list[DirectWrite] = []
    original = DirectWrite.try_send

    def watching(self: DirectWrite, text: str) -> bool:
        sent = original(self, text)
        if self.pending and self not in partial:
            partial.append(self)
        return sent

    monkeypatch.setattr(DirectWrite, "try_send", watching)
    stream, _ = await _slow_raw_subscriber(running)
    async with connect(running) as reader:
        await init(reader)
        await send(reader, {"type": "subscribe", "id": "r", "payload": {"query": TICKS}})
        await wait_members(running, 2)
        with trio.fail_after(10):
            n = 0
            while not partial:  # the slow one never reads: its socket fills, a write splits
                publish(running, usd=float(n))
                n += 1
                if n % 20 == 0:
                    await trio.sleep(0.001)
                    while True:  # the reading client drains what it was sent
                        with trio.move_on_after(0):
                            await reader.get_message()
                            continue
                        break
        stream.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, _RESET)
        await stream.aclose()  # a reset, with the rest of a frame still to send
        with trio.fail_after(5):
            while stats.connections != 1:
                publish(running, usd=float(n))
                n += 1
                await trio.sleep(0.01)
                while True:
                    with trio.move_on_after(0):
                        await reader.get_message()
                        continue
                    break
        publish(running, usd=-1.0)
        with trio.fail_after(3):
            while (await receive(reader))["payload"]["data"]["priceTicks"]["usd"] != -1.0:
                pass

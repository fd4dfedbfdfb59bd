"""permessage-deflate (gateway.api.deflate and hypercorn patch 6): negotiation, shared frames
compressed once per event, bounded inflating, and the `off` setting.

The client here is wsproto's, driven over a trio socket, offering what Chromium offers; it
sends through wsproto (so its messages are compressed as a browser's are) and reads the raw
frames itself, so a test sees RSV1 and the bytes on the wire.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate

from gateway.api import deflate
from gateway.config import settings_from_env
from gateway.errors import ConfigError
from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway, wait_members

# Aliases make the payload long enough to be compressed (deflate.COMPRESS_FROM).
WIDE = (
    'subscription { priceTicks(symbols: ["BTC"]) { symbol usd '
    + " ".join(f"p{i}: provider" for i in range(30))
    + " } }"
)
CHROMIUM = b"permessage-deflate; client_max_window_bits"


class RawClient:
    """A WebSocket client: its handshake by hand, its messages sent through wsproto (compressed
    as the server agreed), the server's frames read back raw."""

    def __init__(self, stream: trio.SocketStream, ws: Connection, extensions: str) -> None:
        self.stream = stream
        self.ws = ws
        self.extensions = extensions  # the response's Sec-WebSocket-Extensions
        self.buffer = bytearray()

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def frame(self, timeout: float = 3) -> tuple[int, bool, bytes]:
        """The next frame: (opcode, rsv1, payload as sent)."""
        with trio.fail_after(timeout):
            while True:
                parsed = _parse(self.buffer)
                if parsed is not None:
                    return parsed
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("the server closed the connection")
                self.buffer += data

    async def message(self) -> dict[str, Any]:
        opcode, rsv1, payload = await self.frame()
        assert opcode == 1, f"expected a text frame, got opcode {opcode}"
        return json.loads(inflate(payload) if rsv1 else payload)  # type: ignore[no-any-return]

    async def close_code(self) -> int:
        while True:
            opcode, _, payload = await self.frame()
            if opcode == 8:
                return int(struct.unpack("!H", payload[:2])[0])


def _parse(buffer: bytearray) -> tuple[int, bool, bytes] | None:
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    assert not second & 0x80, "a server frame is never masked"
    length, start = second & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, start = struct.unpack("!H", buffer[2:4])[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, start = struct.unpack("!Q", buffer[2:10])[0], 10
    if len(buffer) < start + length:
        return None
    payload = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return first & 0x0F, bool(first & 0x40), payload


def inflate(payload: bytes) -> bytes:
    """As a client that keeps no context does (and one that does would get the same)."""
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


@asynccontextmanager
async def raw_client(
    running: RunningGateway,
    offer: bytes | None = CHROMIUM,
    protocol: str = "graphql-transport-ws",
) -> AsyncIterator[RawClient]:
    host, port = running.urls[0].removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        request = (
            f"GET /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n"
        ).encode()
        if offer:
            request += b"Sec-WebSocket-Extensions: " + offer + b"\r\n"
        await stream.send_all(request + b"\r\n")
        response = bytearray()
        with trio.fail_after(5):
            while b"\r\n\r\n" not in response:
                response += await stream.receive_some(4096)
        head, _, rest = bytes(response).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        extensions = ", ".join(
            line.split(":", 1)[1].strip()
            for line in lines[1:]
            if line.lower().startswith("sec-websocket-extensions:")
        )
        # The client's own deflate, set up from the server's answer as a browser's is.
        client = RawClient(stream, _client_connection(extensions), extensions)
        client.buffer += rest
        yield client


def _client_connection(extensions: str) -> Connection:
    if not extensions:
        return Connection(ConnectionType.CLIENT, [])
    client_deflate = PerMessageDeflate()
    client_deflate.finalize(extensions)
    return Connection(ConnectionType.CLIENT, [client_deflate])


def publish(running: RunningGateway, usd: float = 100.0) -> None:
    running.services.bus.prices.publish(PriceTick("BTC", usd, "test", utc_now()))


async def init(client: RawClient) -> None:
    await client.send({"type": "connection_init"})
    assert await client.message() == {"type": "connection_ack"}


# -- negotiation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        (CHROMIUM, b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        (
            b"permessage-deflate; client_max_window_bits=15; server_max_window_bits=10",
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            b"server_max_window_bits=10",
        ),
        # The first offer the gateway can honour wins; these cannot be honoured.
        (b"permessage-deflate; server_max_window_bits=8, x-webkit-deflate-frame", None),
        (b"permessage-deflate; unknown_parameter", None),
        (b"permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        (
            b"permessage-deflate; mystery, permessage-deflate",
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
    ],
)
def test_negotiate(offer: bytes, answer: bytes | None) -> None:
    found = deflate.negotiate([(b"Sec-WebSocket-Extensions", offer)], "shared")
    assert (found.header if found else None) == answer


def test_off_declines_every_offer() -> None:
    assert deflate.negotiate([(b"sec-websocket-extensions", CHROMIUM)], "off") is None


# -- over a socket ----------------------------------------------------------------------------


async def test_a_chromium_offer_gets_decompressible_frames(gateway: RunningGateway) -> None:
    async with raw_client(gateway) as client:
        assert client.extensions == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )
        await init(client)  # its connection_init went compressed: inflated by the gateway
        await client.send({"type": "subscribe", "id": "w", "payload": {"query": WIDE}})
        await wait_members(gateway, 1)
        publish(gateway, usd=101.5)
        opcode, rsv1, payload = await client.frame()
        assert (opcode, rsv1) == (1, True)
        message = json.loads(inflate(payload))
        assert message["id"] == "w" and message["type"] == "next"
        assert message["payload"]["data"]["priceTicks"]["usd"] == 101.5
        assert message["payload"]["data"]["priceTicks"]["p29"] == "test"
        assert len(payload) < len(inflate(payload)) / 2
        await client.send({"type": "ping"})
        assert await client.frame() == (1, False, b'{"type":"pong"}')  # short: uncompressed


async def test_two_subscribers_get_the_same_bytes_from_one_compression(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await start_gateway(tier_free_subscriptions=3, tier_free_connections=3)
    compressed: list[bytes] = []
    real = deflate.deflate_part

    def counting(data: bytes, **kwargs: Any) -> bytes:
        compressed.append(data)
        return real(data, **kwargs)

    monkeypatch.setattr(deflate, "deflate_part", counting)
    async with raw_client(running) as one, raw_client(running) as two, raw_client(running) as three:
        for client, op_id in ((one, "1"), (two, "1"), (three, "other")):
            await init(client)
            await client.send({"type": "subscribe", "id": op_id, "payload": {"query": WIDE}})
        await wait_members(running, 3)
        compressed.clear()
        publish(running, usd=7.0)
        frames = [await client.frame() for client in (one, two, three)]
    assert frames[0] == frames[1]  # byte for byte
    assert frames[0][1] and frames[2][1]
    assert len(compressed) == 1  # one compression for the event, not one per socket
    body = real(compressed[0])
    assert body in frames[0][2] and body in frames[2][2]
    assert json.loads(inflate(frames[2][2]))["id"] == "other"


async def test_legacy_protocol_works_compressed(gateway: RunningGateway) -> None:
    async with raw_client(gateway, protocol="graphql-ws") as client:
        assert client.extensions
        await init(client)
        assert await client.message() == {"type": "ka"}
        await client.send({"type": "start", "id": "7", "payload": {"query": WIDE}})
        await wait_members(gateway, 1)
        publish(gateway, usd=3.0)
        opcode, rsv1, payload = await client.frame()
        assert (opcode, rsv1) == (1, True)
        message = json.loads(inflate(payload))
        assert (message["id"], message["type"]) == ("7", "data")
        assert message["payload"]["data"]["priceTicks"]["usd"] == 3.0


async def test_compression_off_sends_plain_frames(start_gateway: StartGateway) -> None:
    running = await start_gateway(ws_compression="off")
    async with raw_client(running) as client:
        assert client.extensions == ""
        await init(client)
        await client.send({"type": "subscribe", "id": "w", "payload": {"query": WIDE}})
        await wait_members(running, 1)
        publish(running, usd=5.0)
        opcode, rsv1, payload = await client.frame()
        assert (opcode, rsv1) == (1, False)
        assert json.loads(payload)["payload"]["data"]["priceTicks"]["usd"] == 5.0


async def test_a_client_that_offers_nothing_is_unaffected(gateway: RunningGateway) -> None:
    async with raw_client(gateway, offer=None) as client:
        assert client.extensions == ""
        await init(client)
        await client.send({"type": "subscribe", "id": "w", "payload": {"query": WIDE}})
        await wait_members(gateway, 1)
        publish(gateway, usd=6.0)
        opcode, rsv1, payload = await client.frame()
        assert (opcode, rsv1) == (1, False)
        assert json.loads(payload)["payload"]["data"]["priceTicks"]["usd"] == 6.0


async def test_a_decompression_bomb_closes_1009_and_the_server_stays(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(ws_max_message_bytes=64 * 1024)
    async with raw_client(running) as client:
        await init(client)
        bomb = client.ws.send(TextMessage(data="0" * 50_000_000))  # ~50 KB, 50 MB inflated
        tracemalloc.start()
        try:
            await client.stream.send_all(bomb)
            assert await client.close_code() == 1009
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 5_000_000  # the gateway never inflated it all
    async with raw_client(running) as client:
        await init(client)  # still serving


def test_inflating_is_bounded_and_keeps_nothing_between_messages() -> None:
    connection = deflate.server_connection([b"permessage-deflate"], 1000)
    (extension,) = connection._proto.extensions
    assert isinstance(extension, deflate.MessageDeflate)
    sender = _client_connection("permessage-deflate; client_no_context_takeover")
    connection.receive_data(sender.send(TextMessage(data="x" * 1000)))
    (event,) = connection.events()
    assert isinstance(event, TextMessage) and event.data == "x" * 1000
    assert extension._inflater is None
    connection.receive_data(sender.send(TextMessage(data="x" * 1001)))
    (refused,) = connection.events()
    assert isinstance(refused, CloseConnection) and refused.code == 1009
    # The close is answered with a close frame carrying 1009 (hypercorn sends its response).
    close = connection.send(refused.response())
    assert close[0] == 0x88 and struct.unpack("!H", close[2:4]) == (1009,)


def test_the_setting_reads_gateway_ws_compression() -> None:
    assert settings_from_env({}).ws_compression == "shared"
    assert settings_from_env({"GATEWAY_WS_COMPRESSION": " Off "}).ws_compression == "off"
    with pytest.raises(ConfigError, match="ws_compression"):
        settings_from_env({"GATEWAY_WS_COMPRESSION": "always"})

"""Hypercorn's trio worker serving the app inside the supervisor's nursery.

`serve_http` reports started (with the bound URLs) only once the socket listens, so
`await nursery.start(serve_http, …)` means "clients can connect". Shutdown is hypercorn's own
graceful path: the trigger stops accepting, open connections get `graceful_timeout` to finish.

One change to hypercorn (0.18): its `TCPServer.protocol_send` writes every chunk under a
*shielded* cancel scope with no deadline, so a client that stops reading (its TCP window full)
holds that write, the connection's send lock and the task forever: nothing else can be sent to
it (not our 4413 slow-consumer close), and no cancellation reaches it, so the whole server's
shutdown waited until such a client went away (measured: still waiting after 20 s). Here each
write of up to `_STALL_CHUNK` bytes must finish within `send_stall_timeout` (Settings); a write
that does not is abandoned, and the connection is closed at once, as if the peer had gone.
A client that reads even slowly (over `_STALL_CHUNK` bytes in that time) is not affected.

While at it, the common case got cheaper: hypercorn's path costs two scheduler round trips
per write before any byte leaves (its uncontended `trio.Lock` and the socket's checkpoints),
so with 1,000 subscribers every writer ran before the first frame was sent. Here an
uncontended lock is taken without yielding and the bytes go straight into the socket buffer
(`_write_now`); only what does not fit takes the awaited path. bench/stream_latency.py at
1,000 subscribers, 2 events/s: first delivery p50 51 -> 12 ms, p99 126-181 -> 105 ms, server
CPU 136-146 -> 85 µs per delivered message.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from gateway.api.app import GatewayApp
from gateway.config import Settings

__all__ = ["hypercorn_config", "serve_http"]

log = structlog.get_logger(__name__)

# Writes are bounded per chunk of this many bytes, so a big response to a slow reader is fine.
_STALL_CHUNK: Final = 64 * 1024
_ORIGINAL_PROTOCOL_SEND: Final = TCPServer.protocol_send


async def _protocol_send(self: TCPServer, event: Event) -> None:
    """hypercorn's `protocol_send`, with a stall deadline on writes (see the module docstring)."""
    stall = getattr(self.config, "gateway_send_stall_timeout", None)
    if not isinstance(event, RawData) or stall is None:
        await _ORIGINAL_PROTOCOL_SEND(self, event)
        return
    lock = self.send_lock
    if lock.locked():
        await lock.acquire()
    else:
        lock.acquire_nowait()  # uncontended: no scheduler round trip (see _write_now)
    try:
        data = memoryview(event.data)
        try:
            written = _write_now(self.stream, data)
            if written == len(data):
                await trio.lowlevel.cancel_shielded_checkpoint()  # after the bytes are out
                return
            data = data[written:]
            for offset in range(0, max(len(data), 1), _STALL_CHUNK):
                # Shielded like hypercorn's own write (a frame half-written by a cancellation
                # would corrupt the stream), but never for longer than the stall timeout.
                with trio.CancelScope(shield=True, deadline=trio.current_time() + stall) as scope:
                    await self.stream.send_all(data[offset : offset + _STALL_CHUNK])
                if scope.cancelled_caught:
                    log.warning("http.send_stalled", seconds=stall, bytes=len(data))
                    await trio.aclose_forcefully(self.stream)
                    raise trio.ClosedResourceError("the peer stopped reading")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
    finally:
        lock.release()


def _write_now(stream: object, data: memoryview) -> int:
    """Write what the socket's buffer takes right now, without yielding; 0 when it is full or
    the stream is not a plain socket (TLS). Raises trio.BrokenResourceError if the peer is
    gone. The caller holds the send lock, so writes never interleave."""
    if not isinstance(stream, trio.SocketStream) or not data:
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [_bind(settings.host, settings.port)]
    config.graceful_timeout = settings.shutdown_grace
    config.websocket_max_message_size = settings.ws_max_message_bytes
    config.accesslog = None
    config.keep_alive_timeout = 30
    config.include_server_header = False
    config.gateway_send_stall_timeout = settings.send_stall_timeout  # type: ignore[attr-defined]
    return config


async def serve_http(
    app: GatewayApp,
    settings: Settings,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown_trigger` returns and connections have drained."""
    config = hypercorn_config(settings)
    asgi: Any = app  # hypercorn's ASGI types are stricter than any app's own signature
    await serve(asgi, config, shutdown_trigger=shutdown_trigger, task_status=task_status)

"""Writing a WebSocket frame to its socket from the fan-out loop, without waking a task.

Why: with one writer task per connection, every event a shared subscription delivers woke
every subscriber's writer — at 10,000 sockets x 1 event/s, py-spy put 47 % of the server's
time in trio scheduling those tasks, and the p99 (the time to reach the last socket) with it.
Almost always the socket's kernel buffer has room and nothing is queued before the frame: then
`DirectWrite.try_send` frames it and writes it with one non-blocking `os.write`, in the
caller's task. Anything else — a frame already queued, a write under way (the connection's send
lock held), a full kernel buffer, a closed or closing socket, TLS — returns False, and the
frame takes the connection's bounded queue and its task as before, so a slow reader meets
the same drop-oldest / 4413 policy (gateway.api.ws.queue).

A write the kernel takes only in part leaves the rest in `pending`: every later write to the
socket — ours (`flush`, the connection's task) or hypercorn's own (a pong, a close) — goes
through `gateway.api.hypercorn_patches.protocol_send`, which sends `pending` first, under the
send lock and its stall deadline, so frames never interleave.

Built by `gateway.api.hypercorn_patches` (patch 6) for a plain-TCP HTTP/1.1 WebSocket of a
server whose writes are patched (patch 2), and handed to the app in the ASGI scope under
`SCOPE_KEY`. Must never: block or await in `try_send`, write while another write holds the
send lock or before `pending` is out, write to a socket hypercorn considers closed, or write
a frame the connection's wsproto state refuses.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.events import RawData
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

__all__ = ["SCOPE_KEY", "DirectWrite"]

SCOPE_KEY: Final = "gateway.direct_write"


class DirectWrite:
    """One WebSocket's direct path to its socket (see the module docstring).

    `stream` is hypercorn's (the connection's) `WSStream`: its `closed`, `state` and wsproto
    `connection`; `socket_stream` the trio stream the bytes go to; `send_lock` the lock every
    write of the connection holds; `send_raw` the connection's patched `protocol_send`.
    """

    __slots__ = ("_connected", "_lock", "_send_raw", "_socket", "_stream", "pending")

    def __init__(
        self,
        stream: Any,
        socket_stream: trio.SocketStream,
        send_lock: trio.Lock,
        send_raw: Callable[[RawData], Awaitable[None]],
        connected: object,
    ) -> None:
        self._stream = stream
        self._socket = socket_stream.socket
        self._lock = send_lock
        self._send_raw = send_raw
        self._connected = connected  # hypercorn's ASGIWebsocketState.CONNECTED
        self.pending = b""  # the end of a frame the kernel did not take: sent before anything

    def try_send(self, text: str) -> bool:
        """Write the text message `text` now if the socket can take it without waiting.

        True: it is written, or its start is and the rest is in `pending` (the caller must then
        have `flush` awaited). False: nothing was written; send it the usual way.
        """
        stream = self._stream
        if (
            self.pending
            or self._lock.locked()
            or stream.closed
            or stream.state is not self._connected
        ):
            return False
        connection = stream.connection
        if connection.state is not ConnectionState.OPEN:
            return False
        try:
            data = connection.send(TextMessage(data=text))
        except LocalProtocolError:
            return False
        try:
            written = os.write(self._socket.fileno(), data)
        except OSError:  # full (BlockingIOError), closed (fd -1) or reset: the slow path says
            return False
        if written < len(data):
            self.pending = data[written:]
        return True

    async def flush(self) -> None:
        """Send `pending`, if any, through the connection's patched write path (its lock, its
        stall deadline; a peer that stopped reading is closed there)."""
        if self.pending:
            await self._send_raw(RawData(data=b""))

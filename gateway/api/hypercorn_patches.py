"""Every change the gateway makes to hypercorn, in one place, each written for hypercorn 0.18.

`install()` applies them (idempotent); `gateway.api.ws` calls it at import, and so does
`gateway.api.server`, so they are in place before hypercorn serves anything. It first runs
`check()`, which raises RuntimeError, naming the installed and the expected versions, when the
installed hypercorn is not the series in `WRITTEN_FOR` or when something a patch replaces or
relies on is missing or has changed shape. Upgrading hypercorn means re-reading each patch
below against the new hypercorn source (is the bug still there? does the replaced method still
do what the replacement does?), then moving `WRITTEN_FOR`.

1. `hypercorn.protocol.ws_stream.WebsocketBuffer.extend` (`buffer_extend`): make one oversized
   WebSocket message cost its connection, not the whole server. Hypercorn answers a message
   over `websocket_max_message_size` with close 1009 but leaves the partial message in the
   connection's buffer; the client's next message is then appended to it, and a binary one
   after a text one raises TypeError in hypercorn's read loop, which only expects OSError
   there: the exception escapes the listener's nursery and stops the gateway (found by
   tests/api/test_fuzz.py). Emptying the buffer when the limit trips keeps every later message
   well-typed; the client has been told 1009 either way.

2. `hypercorn.trio.tcp_server.TCPServer.protocol_send` (`protocol_send`): a stall deadline on
   writes. Hypercorn writes every chunk under a *shielded* cancel scope with no deadline, so a
   client that stops reading (its TCP window full) holds that write, the connection's send
   lock and the task forever: nothing else can be sent to it (not our 4413 slow-consumer
   close), and no cancellation reaches it, so the whole server's shutdown waited until such a
   client went away (measured: still waiting after 20 s). Here each write of up to
   `_STALL_CHUNK` bytes must finish within `send_stall_timeout` (Settings, carried on the
   hypercorn Config as `gateway_send_stall_timeout`); a write that does not is abandoned, and
   the connection is closed at once, as if the peer had gone. A client that reads even slowly
   (over `_STALL_CHUNK` bytes in that time) is not affected.

   And the shutdown: a client that reads just fast enough never to stall (a 3.5 MB GraphiQL
   script at 80 KB/s) would still hold its write, and so the shutdown, for as long as the
   response takes (measured: 41 s). A Config may carry a `WriteDeadline` as
   `gateway_write_deadline`; once the server starts to shut down, `gateway.api.server` sets it to
   the end of the grace period, and every write, those already waiting included, is abandoned
   by then like a stalled one.

   While at it, the common case got cheaper: hypercorn's path costs two scheduler round trips
   per write before any byte leaves (its uncontended `trio.Lock` and the socket's
   checkpoints), so with 1,000 subscribers every writer ran before the first frame was sent.
   Here an uncontended lock is taken without yielding and the bytes go straight into the
   socket buffer (`_write_now`); only what does not fit takes the awaited path.
   bench/stream_latency.py at 1,000 subscribers, 2 events/s: first delivery p50 51 -> 12 ms,
   p99 126-181 -> 105 ms, server CPU 136-146 -> 85 µs per delivered message. An empty write
   (h11's end of a body whose length was given) is no write at all.

3. `hypercorn.trio.tcp_server.TCPServer.run` (`tcp_server_run`): connection caps at accept.
   Hypercorn serves every connection trio's accept loop hands it, with no cap per client or in
   total, so slow request bodies from a few dozen addresses used up every descriptor: the
   gateway hit EMFILE, `/readyz` timed out and trio's accept loop logged thousands of lines.
   A Config may carry a `ConnectionGate` (gateway.api.connections.ConnectionCaps) as
   `gateway_connection_gate`: each connection is first offered to it with its peer's address,
   and one it refuses is closed at once, before its request (or TLS handshake) is read; one it
   admits is released when the connection ends, however it ends.

4. `hypercorn.trio.tcp_server.TCPServer._read_data` (`read_data`): close a connection whose
   client closed it between requests. Hypercorn's read loop ends at the client's EOF, but when
   no request is under way nothing tells the connection to close: it waits for its keep-alive
   timer (`http_header_timeout`, 10 s), socket open. Every client that closes its connection
   after a response (curl, most probes) held a descriptor, and a place under the caps of patch
   3, 10 s longer (measured: 20 of 20 such connections). Here, once the read loop is over, the
   timer is stopped, so the connection ends as soon as its last response is out. And with no
   `read_timeout` (the gateway sets none), the loop is hypercorn's without the
   `fail_after(inf)` it wraps around every read: ~1 KB per idle WebSocket (issue 16).

5. `hypercorn.trio.worker_context.TrioSingleTask` as each connection's `idle_task`
   (`gateway.api.keep_alive.IdleTimer`, set by patch 3's `tcp_server_run`): one keep-alive
   timer per connection, not one per request. Hypercorn stops its idle timer when a request
   starts and starts a new task for it when the response is out, each time under a
   `trio.Lock`, through `nursery.start` (a scheduler round trip): with `{ __typename }` over
   keep-alive connections that was about a tenth of the server's CPU (bench/http_query.py).
   Here one task per connection waits on the worker's `terminated` event under a cancel scope
   whose deadline is moved: to the keep-alive timeout when the connection goes idle, away when
   a request starts (patch 2's `protocol_send` handles hypercorn's `Updated` events: no await,
   no task). It does what hypercorn's `_idle_timeout` does (close the connection when it stays
   idle for `keep_alive_timeout`, or at once when the server terminates while it is idle) and
   ends when the connection's read loop is over (patch 4), or, parked, after
   `keep_alive_timeout` of one request (a WebSocket holds no timer task for its whole life).
   Only for a Config that carries `gateway_idle_timer = True`.

6. `hypercorn.protocol.ws_stream.WSStream._accept` (`ws_accept`): the app chooses the
   WebSocket's extensions. Hypercorn negotiates wsproto's `PerMessageDeflate` for every socket: a
   compressor and a decompressor kept per connection, each event compressed once per connection
   (issue 16: 145 KB per idle browser subscriber). Here its negotiation is skipped; the app names
   what it accepted in its `websocket.accept` headers (`sec-websocket-extensions`, sent as they
   are) and the wsproto connection is `gateway.api.deflate.server_connection`'s, inflating at
   most `websocket_max_message_size`. No such header: no extension. For every server.
   And, for a plain-TCP HTTP/1.1 socket of a server with patch 2's writes, a
   `gateway.api.direct_write.DirectWrite` in the app's scope: the fan-out loop writes a frame
   straight to the socket when it can without waiting (issue 16: waking each connection's
   writer task was 47 % of the CPU at 10,000 sockets); `protocol_send` sends what such a write
   left over (`pending`) before anything else. And patch 5's keep-alive timer is stopped at the
   upgrade, as hypercorn stops its own when a request starts: a socket's first
   `keep_alive_timeout` no longer holds a parked task (~2.5 KB a socket).

7. `hypercorn.protocol.h11.H11Protocol.stream_send` (`gateway.api.response_head`): the head of
   an HTTP/1.1 response that declares a non-zero Content-Length is held and written with its
   first body chunk, one write instead of two per small GraphQL answer (issue 16). Any other
   event sends a held head first; streamed and informational responses are untouched.

Must never: patch hypercorn anywhere but here, patch a hypercorn it was not written for
without saying so loudly, or change what hypercorn does for a server whose Config carries no
`gateway_send_stall_timeout` (hypercorn's own `protocol_send` then runs unchanged), no
`gateway_connection_gate` (its own `run`) or no `gateway_idle_timer` (its own keep-alive timer
task per request); patches 6 and 7 excepted (above).

Slow clients are bounded by hypercorn's own settings, set in `gateway.api.server`, not by a
patch: its keep-alive timer runs from a connection's start (and from the end of each response)
until a request's headers are complete, so `keep_alive_timeout` bounds the time to send headers;
`h11_max_incomplete_size` their size. The body is bounded by the app (`http_body_timeout`).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog
import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import h11, ws_stream
from hypercorn.protocol.events import Response
from hypercorn.trio import tcp_server
from hypercorn.utils import parse_socket_addr

from gateway.api import deflate, response_head
from gateway.api.direct_write import SCOPE_KEY, DirectWrite
from gateway.api.keep_alive import IdleTimer

__all__ = [
    "WRITTEN_FOR",
    "ConnectionGate",
    "WriteDeadline",
    "buffer_extend",
    "check",
    "hypercorn_version",
    "install",
    "protocol_send",
    "read_data",
    "tcp_server_run",
    "ws_accept",
]

log = structlog.get_logger(__name__)

# The hypercorn series (major.minor) the patches were written and measured against.
WRITTEN_FOR: Final = "0.18"

# Writes are bounded per chunk of this many bytes, so a big response to a slow reader is fine.
_STALL_CHUNK: Final = 64 * 1024

# hypercorn's own methods as imported, before any patch: what the replacements delegate to
# (None when missing: `check()` says so before anything is patched).
_HYPERCORN_EXTEND: Final[Any] = getattr(ws_stream.WebsocketBuffer, "extend", None)
_HYPERCORN_PROTOCOL_SEND: Final[Any] = getattr(tcp_server.TCPServer, "protocol_send", None)
_HYPERCORN_RUN: Final[Any] = getattr(tcp_server.TCPServer, "run", None)
_HYPERCORN_READ_DATA: Final[Any] = getattr(tcp_server.TCPServer, "_read_data", None)
_HYPERCORN_WS_ACCEPT: Final[Any] = getattr(ws_stream.WSStream, "_accept", None)


class ConnectionGate(Protocol):
    """What patch 3 asks about each accepted connection (gateway.api.connections)."""

    def admit(self, peer: tuple[str, int] | None) -> object | None:
        """A ticket for the connection from `peer`, or None: close it at once."""

    def release(self, ticket: Any) -> None:
        """The admitted connection is over."""


class WriteDeadline:
    """The time by which every write of one server must be over: none while it serves; set by
    `end_all_by` when it starts to shut down, which also shortens the writes already waiting, so
    no client, however slowly it reads, holds the shutdown past its grace period (patch 2)."""

    def __init__(self) -> None:
        self.at = math.inf
        self._scopes: set[trio.CancelScope] = set()

    def end_all_by(self, deadline: float) -> None:
        self.at = min(self.at, deadline)
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self.at)

    @contextmanager
    def bounding(self, scope: trio.CancelScope) -> Iterator[None]:
        """Hold `scope` (a write's) to this deadline while it is open."""
        scope.deadline = min(scope.deadline, self.at)
        self._scopes.add(scope)
        try:
            yield
        finally:
            self._scopes.discard(scope)

    @property
    def passed(self) -> bool:
        return trio.current_time() >= self.at


_NO_DEADLINE: Final = WriteDeadline()  # for a Config without one: never set


def buffer_extend(self: ws_stream.WebsocketBuffer, event: Any) -> None:
    """hypercorn's `WebsocketBuffer.extend`, emptying the buffer when a message is too big
    (patch 1 in the module docstring)."""
    try:
        _HYPERCORN_EXTEND(self, event)
    except ws_stream.FrameTooLargeError:
        self.clear()
        raise


async def protocol_send(self: tcp_server.TCPServer, event: Event) -> None:
    """hypercorn's `TCPServer.protocol_send`, with a stall deadline on writes (patch 2 in the
    module docstring)."""
    if isinstance(event, Updated) and isinstance(self.idle_task, IdleTimer):
        if event.idle:  # patch 5: no await, no task
            self.idle_task.arm(self._task_group)
        else:
            self.idle_task.disarm()
        return
    stall = getattr(self.config, "gateway_send_stall_timeout", None)
    ends: WriteDeadline = getattr(self.config, "gateway_write_deadline", None) or _NO_DEADLINE
    if not isinstance(event, RawData) or stall is None:
        await _HYPERCORN_PROTOCOL_SEND(self, event)
        return
    direct: DirectWrite | None = getattr(self, "gateway_direct", None)  # patch 6's
    if not event.data and (direct is None or not direct.pending):
        return  # h11's end of a Content-Length body: no bytes, so no write and no yield
    lock = self.send_lock
    if lock.locked():
        await lock.acquire()
    else:
        lock.acquire_nowait()  # uncontended: no scheduler round trip (see _write_now)
    try:
        data = memoryview(event.data)
        if direct is not None and direct.pending:  # the rest of a direct write goes first
            data = memoryview(direct.pending + event.data)
            direct.pending = b""
        try:
            written = _write_now(self.stream, data)
            if written == len(data):
                await trio.lowlevel.cancel_shielded_checkpoint()  # after the bytes are out
                return
            data = data[written:]
            for offset in range(0, max(len(data), 1), _STALL_CHUNK):
                # Shielded like hypercorn's own write (a frame half-written by a cancellation
                # would corrupt the stream), but never for longer than the stall timeout, nor
                # past the shutdown's deadline.
                scope = trio.CancelScope(shield=True, deadline=trio.current_time() + stall)
                with scope, ends.bounding(scope):
                    await self.stream.send_all(data[offset : offset + _STALL_CHUNK])
                if scope.cancelled_caught:
                    if ends.passed:
                        log.info("http.send_abandoned", reason="shutdown", bytes=len(data))
                    else:
                        log.warning("http.send_stalled", seconds=stall, bytes=len(data))
                    await trio.aclose_forcefully(self.stream)
                    raise trio.ClosedResourceError("the peer stopped reading")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
    finally:
        lock.release()


async def tcp_server_run(self: tcp_server.TCPServer) -> None:
    """hypercorn's `TCPServer.run`, behind the Config's connection caps (patch 3 in the module
    docstring)."""
    if getattr(self.config, "gateway_idle_timer", False):  # patch 5
        self.idle_task = IdleTimer(  # type: ignore[assignment]
            self.config.keep_alive_timeout, self.context.terminated, self._initiate_server_close
        )
    gate: ConnectionGate | None = getattr(self.config, "gateway_connection_gate", None)
    if gate is None:
        await _HYPERCORN_RUN(self)
        return
    ticket = gate.admit(_peer(self.stream))
    if ticket is None:
        await trio.aclose_forcefully(self.stream)  # before a byte of it is read
        return
    try:
        await _HYPERCORN_RUN(self)
    finally:
        gate.release(ticket)


async def read_data(self: tcp_server.TCPServer) -> None:
    """hypercorn's `TCPServer._read_data`, then no keep-alive wait: the client can send nothing
    more (patch 4 in the module docstring); without a `read_timeout`, `_read_until_eof`."""
    try:
        if self.config.read_timeout is None:
            await _read_until_eof(self)
        else:
            await _HYPERCORN_READ_DATA(self)
    finally:
        await self.idle_task.stop()  # hypercorn's timer task, or patch 5's, ends here


async def _read_until_eof(self: tcp_server.TCPServer) -> None:
    """hypercorn's `_read_data` loop for a server without `read_timeout`: the same reads and
    the same end, without the `trio.fail_after(inf)` hypercorn opens around each read (a
    cancel scope, its cancel status and a generator: ~1 KB that every idle WebSocket held for
    its whole life, issue 16). No timeout, so no TooSlowError to catch."""
    while True:
        try:
            data = await self.stream.receive_some(tcp_server.MAX_RECV)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            break
        await self.protocol.handle(RawData(bytes(data)))
        if data == b"":
            break
    await self.protocol.handle(Closed())


async def ws_accept(self: ws_stream.WSStream, message: Any) -> None:
    """hypercorn's `WSStream._accept`, with the extension the app accepted in its headers and
    none of hypercorn's own (patch 6 in the module docstring)."""
    headers = list(message.get("headers", []))
    self.state = ws_stream.ASGIWebsocketState.CONNECTED
    offers, self.handshake.extensions = self.handshake.extensions, None  # none negotiated here
    try:
        status, response, _ = self.handshake.accept(message.get("subprotocol"), headers)
    finally:
        self.handshake.extensions = offers
    accepted = [value for name, value in headers if name.lower() == b"sec-websocket-extensions"]
    # Set before the first await, as hypercorn's is: the reader feeds it from then on.
    self.connection = deflate.server_connection(accepted, self.config.websocket_max_message_size)
    server = _offer_direct_write(self)
    if server is not None and isinstance(server.idle_task, IdleTimer):
        await server.idle_task.stop()  # no keep-alive after an upgrade: no parked timer task
    await self.send(Response(stream_id=self.stream_id, status_code=status, headers=response))
    summary: Any = {"status": status, "headers": []}
    await self.config.log.access(self.scope, summary, time.time() - self.start_time)
    if self.config.websocket_ping_interval is not None:
        self.task_group.spawn(self._send_pings)


def _offer_direct_write(stream: ws_stream.WSStream) -> tcp_server.TCPServer | None:
    """Put a `DirectWrite` for this WebSocket in its ASGI scope (patch 6), when its bytes go
    through patch 2's writes to a plain TCP socket over HTTP/1.1 (not TLS, not HTTP/2); the
    connection's TCPServer, if it is one."""
    protocol = getattr(stream.send, "__self__", None)
    server = getattr(getattr(protocol, "send", None), "__self__", None)
    if not isinstance(protocol, h11.H11Protocol) or not isinstance(server, tcp_server.TCPServer):
        return None
    if (
        not isinstance(server.stream, trio.SocketStream)
        or getattr(server.config, "gateway_send_stall_timeout", None) is None
    ):
        return server
    direct = DirectWrite(
        stream,
        server.stream,
        server.send_lock,
        server.protocol_send,
        ws_stream.ASGIWebsocketState.CONNECTED,
    )
    server.gateway_direct = direct  # read by protocol_send
    stream.scope[SCOPE_KEY] = direct
    return server


def _peer(stream: object) -> tuple[str, int] | None:
    """The connection's peer as hypercorn names it (the ASGI scope's "client"); None when the
    socket cannot tell (the peer already gone, or not an IP socket)."""
    sock = getattr(stream, "socket", None) or getattr(
        getattr(stream, "transport_stream", None), "socket", None
    )
    try:
        return parse_socket_addr(sock.family, sock.getpeername())  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return None


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


@dataclass(frozen=True)
class _Method:
    """A hypercorn method a patch replaces or calls, and the shape the patch relies on."""

    owner: type
    name: str
    parameters: tuple[str, ...]
    coroutine: bool = False
    replacement: Callable[..., Any] | None = None  # set for the methods a patch replaces
    original: Any = None  # hypercorn's, as imported: what `check()` inspects once replaced

    def where(self) -> str:
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"

    def problem(self) -> str | None:
        method = getattr(self.owner, self.name, None)
        if method is not None and method is self.replacement:
            method = self.original
        if not callable(method):
            return f"{self.where()} is missing"
        try:
            parameters = tuple(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            return f"{self.where()} has no inspectable signature"
        if parameters != self.parameters:
            return (
                f"{self.where()} takes ({', '.join(parameters)}), "
                f"the patch expects ({', '.join(self.parameters)})"
            )
        if inspect.iscoroutinefunction(method) != self.coroutine:
            expected = "a coroutine function" if self.coroutine else "a plain function"
            return f"{self.where()} is no longer {expected}"
        return None


_METHODS: Final = (
    _Method(
        ws_stream.WebsocketBuffer,
        "extend",
        ("self", "event"),
        replacement=buffer_extend,
        original=_HYPERCORN_EXTEND,
    ),
    _Method(ws_stream.WebsocketBuffer, "clear", ("self",)),
    _Method(
        tcp_server.TCPServer,
        "protocol_send",
        ("self", "event"),
        coroutine=True,
        replacement=protocol_send,
        original=_HYPERCORN_PROTOCOL_SEND,
    ),
    _Method(
        tcp_server.TCPServer,
        "run",
        ("self",),
        coroutine=True,
        replacement=tcp_server_run,
        original=_HYPERCORN_RUN,
    ),
    _Method(tcp_server.TCPServer, "_initiate_server_close", ("self",), coroutine=True),  # 5
    _Method(
        tcp_server.TCPServer,
        "_read_data",
        ("self",),
        coroutine=True,
        replacement=read_data,
        original=_HYPERCORN_READ_DATA,
    ),
    _Method(
        ws_stream.WSStream,
        "_accept",
        ("self", "message"),
        coroutine=True,
        replacement=ws_accept,
        original=_HYPERCORN_WS_ACCEPT,
    ),
    _Method(ws_stream.Handshake, "accept", ("self", "subprotocol", "additional_headers")),  # 6
    _Method(
        h11.H11Protocol,
        "stream_send",
        ("self", "event"),
        coroutine=True,
        replacement=response_head.stream_send,
        original=response_head.HYPERCORN_STREAM_SEND,
    ),
)

# Instance attributes `protocol_send` and `tcp_server_run` read, set by TCPServer.__init__ or
# TCPServer.run.
_TCP_SERVER_ATTRIBUTES: Final = (
    "_task_group",  # patch 5 starts its timer task there
    "config",
    "context",
    "idle_task",
    "protocol",
    "send_lock",
    "stream",
)


def hypercorn_version() -> str:
    """The installed hypercorn's version, from its distribution metadata."""
    try:
        return importlib.metadata.version("hypercorn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check() -> None:
    """Raise RuntimeError unless the installed hypercorn is the series the patches were written
    for and everything they replace or rely on still has the expected shape."""
    installed = hypercorn_version()
    problems: list[str] = []
    if installed.split(".")[:2] != WRITTEN_FOR.split("."):
        problems.append(f"hypercorn {installed} is installed, the patches expect {WRITTEN_FOR}.x")
    problems.extend(problem for method in _METHODS if (problem := method.problem()) is not None)
    frame_too_large = getattr(ws_stream, "FrameTooLargeError", None)
    if not (isinstance(frame_too_large, type) and issubclass(frame_too_large, Exception)):
        problems.append("hypercorn.protocol.ws_stream.FrameTooLargeError is missing")
    problems.extend(
        f"hypercorn.trio.tcp_server.TCPServer's __init__ and run no longer use self.{name}"
        for name in _TCP_SERVER_ATTRIBUTES
        if name not in _names_used_by(tcp_server.TCPServer, "__init__", "run")
    )
    problems.extend(  # what patch 6 does as hypercorn's WSStream._accept and Handshake.accept do
        f"hypercorn.protocol.ws_stream.WSStream._accept or Handshake.accept no longer use .{name}"
        for name in ("_send_pings", "connection", "handshake", "send", "task_group", "extensions")
        if name not in _names_used_by(ws_stream.WSStream, "_accept")
        and name not in _names_used_by(ws_stream.Handshake, "accept")
    )
    problems.extend(  # what DirectWrite (patch 6) reads of a WSStream, as app_send reads it
        f"hypercorn.protocol.ws_stream.WSStream.app_send no longer uses .{name}"
        for name in ("closed", "state", "connection")
        if name not in _names_used_by(ws_stream.WSStream, "app_send", "_send_wsproto_event")
    )
    problems.extend(  # what patch 4's `_read_until_eof` repeats of hypercorn's read loop
        f"hypercorn.trio.tcp_server.TCPServer._read_data no longer uses {name}"
        for name in ("read_timeout", "receive_some", "MAX_RECV", "handle", "RawData", "Closed")
        if name not in _names_used_by(tcp_server.TCPServer, "_read_data")
    )
    if not isinstance(getattr(tcp_server, "MAX_RECV", None), int):
        problems.append("hypercorn.trio.tcp_server.MAX_RECV is missing")
    if "run" not in _names_used_by(tcp_server.TCPServer, "__await__"):  # how patch 3 is reached
        problems.append("hypercorn.trio.tcp_server.TCPServer no longer serves through self.run")
    if problems:
        raise RuntimeError(
            f"gateway.api.hypercorn_patches was written for hypercorn {WRITTEN_FOR} and the "
            f"installed hypercorn is {installed}: " + "; ".join(problems) + ". Re-check each "
            "patch listed in gateway/api/hypercorn_patches.py against the installed hypercorn's "
            "source (is the bug still there? does the replaced method still do what the "
            "replacement does?), then update WRITTEN_FOR, or install hypercorn "
            f"{WRITTEN_FOR}.x."
        )


def _names_used_by(owner: type, *functions: str) -> set[str]:
    """The attribute and global names the given methods' code refers to."""
    names: set[str] = set()
    for name in functions:
        method: Any = getattr(owner, name, None)
        # A method a patch replaced: hypercorn's own is the one to read.
        patched = {m.replacement: m.original for m in _METHODS if m.replacement is not None}
        code = getattr(patched.get(method, method), "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return names


def install() -> None:
    """Check hypercorn (see `check`), then apply every patch not applied yet."""
    check()
    for method in _METHODS:
        replacement = method.replacement
        if replacement is not None and getattr(method.owner, method.name) is not replacement:
            setattr(method.owner, method.name, replacement)

"""One GraphQL WebSocket connection, Trio-native, and the ASGI endpoint that accepts it.

Served over raw ASGI so that strawberry's asyncio handlers are never involved. Each connection
is a nursery; inside it a reader (the task that called `Connection.run`), a writer that owns
the socket's send side, one timer task (the init timeout, keep-alive pings, the idle timeout and
the server's shutdown: one task rather than four, as each parked task costs an idle socket
2-3 KB), and one task per operation (`gateway.api.ws.operations`) whose cancel scope
`complete`/`stop` cancels. Everything a connection will send goes through its `OutboundQueue`
(`gateway.api.ws.queue`); a client that keeps falling behind is disconnected with close code
4413 so it stops holding resources. What each message means is `gateway.api.ws.protocols`'s;
the close codes are listed there.

Limits per connection (`WebSocketOptions`): `max_message_bytes` (close 1009), `max_operations`
running at once (one more is answered with an `error` for that operation, code RATE_LIMITED,
and the connection stays), `idle_timeout` (close 4408: counted from the handshake or the end of
the last operation, and nothing the client sends resets it, pings included), `init_timeout`
(close 4408). Before any of that, `gateway.api.ws.admission` decides whether the socket may
stay at all (total and per-client caps, the handshake's request: closes 1013 and 4429).

Authentication (gateway.api.auth): the API key comes in the connection_init payload (or, for
clients that can set them, the handshake's Authorization / X-API-Key headers) and is checked
before the ack; the Origin of the handshake was checked by the app before accept.

Importing this module installs the gateway's hypercorn patches
(`gateway.api.hypercorn_patches`): one of them keeps an oversized message from stopping the
server.

Must never: run an operation before connection_ack, let a client grow server memory without
bound, send anything but through its queue's writer, or let one operation's failure end the
connection.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
import trio

from gateway.api import deflate, hypercorn_patches
from gateway.api.auth import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    AccessControl,
    Principal,
    Unauthenticated,
    credential_from_init,
)
from gateway.api.graphql_trio import GraphQLEngine, dumps
from gateway.api.query_limits import utf8_length
from gateway.api.shared_subscriptions import SubscriptionHub
from gateway.api.ws.admission import Admission, Refusal, Slot
from gateway.api.ws.operations import Operations
from gateway.api.ws.options import WebSocketOptions, WebSocketStats
from gateway.api.ws.protocols import (
    CLOSE_INTERNAL,
    GRAPHQL_WS,
    ProtocolError,
    choose_subprotocol,
    dispatch_legacy,
    dispatch_transport,
    parse,
)
from gateway.api.ws.queue import CloseFrame, OutboundQueue
from gateway.errors import StorageError

__all__ = ["Connection", "Receive", "Scope", "Send", "serve_websocket"]

log = structlog.get_logger(__name__)

hypercorn_patches.install()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Connection:
    """One WebSocket connection speaking one of the two protocols."""

    def __init__(
        self,
        *,
        legacy: bool,
        receive: Receive,
        send: Send,
        engine: GraphQLEngine,
        hub: SubscriptionHub,
        options: WebSocketOptions,
        stats: WebSocketStats,
        shutdown: trio.Event,
        context: Any = None,
        context_for: Callable[[Principal | None], Any] | None = None,
        access: AccessControl | None = None,
        client: str = "unknown",
        handshake_credential: str | None = None,
        admission: Admission | None = None,
        slot: Slot | None = None,
        deflation: deflate.Deflation | None = None,
    ) -> None:
        self.legacy = legacy
        # The permessage-deflate the handshake agreed, if any: shared frames are then sent
        # compressed once per event (gateway.api.deflate).
        self.deflation = deflation
        self._admission = admission
        self._slot = slot
        self._receive = receive
        self._send = send
        # The GraphQL context: `context` as given, or made by `context_for` once the client is
        # authenticated (it carries the principal).
        self._context_for = context_for
        self._context = context
        self._access = access
        self._client = client
        self._handshake_credential = handshake_credential
        self.principal: Principal | None = None
        self._options = options
        self._stats = stats
        self._shutdown = shutdown
        self._queue = OutboundQueue(options.send_queue, options.max_frame_age)
        self._operations = Operations(
            self, engine=engine, hub=hub, access=access, options=options, stats=stats
        )
        self._init_received = False
        self._acknowledged = False
        self._timer_wait: trio.CancelScope | None = None  # the timer task's wait, while it waits
        self._closing = False
        self._last_activity = trio.current_time()
        self.init_payload: dict[str, Any] = {}

    # -- what protocols.Session and operations.OperationHost use -------------------------------

    @property
    def acknowledged(self) -> bool:
        return self._acknowledged

    @property
    def context(self) -> Any:
        return self._context

    def is_running(self, op_id: str) -> bool:
        return op_id in self._operations

    def start_operation(self, op_id: str, payload: dict[str, Any]) -> None:
        self._operations.start(self._nursery, op_id, payload)

    def cancel_operation(self, op_id: str) -> None:
        self._operations.cancel(op_id)

    def mark_active(self) -> None:
        self._last_activity = trio.current_time()

    # -- sending ------------------------------------------------------------------------------

    def queue_control(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        if len(self._queue) >= 4 * self._options.send_queue:
            # The client keeps asking (pings, operations) without reading the answers.
            self._stats.slow_consumer_closes += 1
            self.close(4413, "slow consumer: replies are not being read")
            return
        self._queue.put(dumps(message))

    def queue_data(self, frame: str) -> None:
        if self._closing:
            return  # nothing more is delivered to a connection on its way out
        if not self._queue.put(frame, droppable=True):
            self._stats.frames_dropped += 1
            if self._queue.dropped_in_a_row >= self._options.slow_consumer_drops:
                self._stats.slow_consumer_closes += 1
                self.close(4413, "slow consumer: too many messages dropped")

    def close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            # A reason may quote the client (an operation id), and a client's JSON may spell a
            # lone surrogate, which no UTF-8 encoder takes: escape it, or the close frame itself
            # raises in the writer (found by tests/api/test_fuzz.py). wsproto truncates to 123
            # bytes.
            safe = reason.encode("utf-8", "backslashreplace").decode("utf-8")
            self._queue.put_close(CloseFrame(code, safe))

    async def _writer(self, done: trio.CancelScope) -> None:
        stats = self._stats
        while True:
            frame, expired = await self._queue.take()
            if expired:
                stats.frames_dropped += expired
            if isinstance(frame, CloseFrame):
                with trio.move_on_after(1):
                    await self._send(
                        {"type": "websocket.close", "code": frame.code, "reason": frame.reason}
                    )
                done.cancel()
                return
            await self._send({"type": "websocket.send", "text": frame})
            stats.frames_sent += 1

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._writer, nursery.cancel_scope)
            nursery.start_soon(self._timers)
            await self._read_loop()
            if not self._closing:  # the client went away: nothing more to send
                nursery.cancel_scope.cancel()

    async def _timers(self) -> None:
        """Every deadline the connection keeps, in one task: close 4408 when not acknowledged
        within `init_timeout`; once acknowledged, a keep-alive every `ping_interval`; close 4408
        after `idle_timeout` without an operation (a running one is activity, however quiet);
        close 1001 when the server shuts down. `_on_init` wakes it to start the pings."""
        options = self._options
        init_by = trio.current_time() + options.init_timeout
        ping_at = math.inf
        ping = {"type": "ka"} if self.legacy else {"type": "ping"}
        while not self._shutdown.is_set():
            now = trio.current_time()
            if self._acknowledged:
                if ping_at == math.inf:
                    ping_at = now + options.ping_interval
                elif now >= ping_at:
                    self.queue_control(ping)
                    ping_at = now + options.ping_interval
            elif now >= init_by:
                self.close(4408, "Connection initialisation timeout")
                return
            if now >= self._last_activity + options.idle_timeout:
                if not self._operations:
                    self._stats.idle_closes += 1
                    self.close(4408, "Connection idle timeout")
                    return
                self._last_activity = now
            deadline = min(ping_at, self._last_activity + options.idle_timeout)
            if not self._acknowledged:
                deadline = min(deadline, init_by)
            with trio.CancelScope(deadline=deadline) as self._timer_wait:
                await self._shutdown.wait()
            self._timer_wait = None
        self.close(1001, "server shutting down")

    async def _read_loop(self) -> None:
        while not self._closing:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            text: str | None = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    self.close(4400, "Invalid message received")
                    continue
            if utf8_length(text) > self._options.max_message_bytes:
                self.close(1009, "message too big")
                continue
            try:
                await self._dispatch(text)
            except ProtocolError as error:
                self.close(error.code, error.reason)

    # -- messages -----------------------------------------------------------------------------

    async def _dispatch(self, text: str) -> None:
        # No message resets the idle timer: only operations are use (`mark_active`), so a client
        # cannot hold an idle socket open with pings (issue 10: 1,500 sockets held that way).
        kind, message = parse(text)
        if kind == "connection_init":
            await self._on_init(message)
        elif self.legacy:
            dispatch_legacy(self, kind, message)
        else:
            dispatch_transport(self, kind, message)

    async def _on_init(self, message: dict[str, Any]) -> None:
        if self._init_received:
            raise ProtocolError(4429, "Too many initialisation requests")
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise ProtocolError(4400, "Invalid connection_init payload")
        self._init_received = True
        self.init_payload = payload or {}
        if self._access is not None:
            # Nothing else is read until this is settled: no operation can start before it.
            credential = credential_from_init(self.init_payload)
            if credential is None:
                credential = self._handshake_credential
            try:
                self.principal = await self._access.authenticate(credential, self._client)
            except Unauthenticated as refused:
                self._refuse(refused)
                return
            except StorageError as exc:  # the key store is unreadable: try again later
                log.warning("ws_authentication_failed", error=str(exc))
                self.close(CLOSE_INTERNAL, "Internal server error")
                return
            if self._admission is not None and self._slot is not None:
                # A key's socket now counts against the key, at the key's tier.
                refusal = self._admission.at_init(self._slot, self.principal)
                if refusal is not None:
                    self._refuse_connection(refusal)
                    return
            self._access.register(self.principal, self)
        if self._context_for is not None:
            self._context = self._context_for(self.principal)
        self._acknowledged = True
        if self._timer_wait is not None:
            self._timer_wait.cancel()  # the timer task starts the keep-alive pings
        self.queue_control({"type": "connection_ack"})
        if self.legacy:
            self.queue_control({"type": "ka"})

    def _refuse_connection(self, refusal: Refusal) -> None:
        if self.legacy:
            self.queue_control({"type": "connection_error", "payload": {"message": refusal.reason}})
        self.close(refusal.code, refusal.reason)

    def _refuse(self, refused: Unauthenticated) -> None:
        code = CLOSE_FORBIDDEN if refused.presented else CLOSE_UNAUTHORIZED
        if self.legacy:  # subscriptions-transport-ws clients read the reason from this message
            self.queue_control({"type": "connection_error", "payload": {"message": str(refused)}})
        self.close(code, "Forbidden" if refused.presented else "Unauthorized")


async def serve_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    engine: GraphQLEngine,
    hub: SubscriptionHub,
    context_for: Callable[[Principal | None], Any],
    options: WebSocketOptions,
    stats: WebSocketStats,
    shutdown: trio.Event,
    access: AccessControl | None = None,
    client: str = "unknown",
    handshake_credential: str | None = None,
    admission: Admission | None = None,
    on_admitted: Callable[[], object] | None = None,
) -> None:
    """The ASGI WebSocket endpoint for /graphql.

    `context_for(principal)` makes the connection's GraphQL context once the client is known;
    with `access`, the connection_init payload must authenticate (see the module docstring).
    With `admission`, a socket over a connection cap or its client's request budget is closed
    as soon as it is accepted, and costs nothing more (gateway.api.ws.admission); one admitted
    is reported to `on_admitted` (the app's connection caps stop counting it per client).
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    protocol = choose_subprotocol(list(scope.get("subprotocols") or []))
    if protocol is None or shutdown.is_set():
        # 4406 is what graphql-ws servers use for "Subprotocol not acceptable"; before accept
        # ASGI turns a close into an HTTP 403 rejection.
        await send(
            {"type": "websocket.close", "code": 4406, "reason": "Subprotocol not acceptable"}
        )
        return
    admitted = admission.at_handshake(client) if admission is not None else None
    if isinstance(admitted, Refusal):
        # Accepted, then closed at once: a close before accept is an HTTP 403 to the client,
        # which would hide the code and reason that say which limit it met.
        with trio.move_on_after(1):
            await send({"type": "websocket.accept", "subprotocol": protocol})
            close = {"type": "websocket.close", "code": admitted.code, "reason": admitted.reason}
            await send(close)
        return
    if on_admitted is not None:
        on_admitted()
    accept: dict[str, Any] = {"type": "websocket.accept", "subprotocol": protocol}
    deflation = deflate.negotiate(scope.get("headers") or (), options.compression)
    if deflation is not None:  # hypercorn_patches (patch 6) builds the socket from this header
        accept["headers"] = [(b"sec-websocket-extensions", deflation.header)]
    try:
        await send(accept)
        connection = Connection(
            legacy=protocol == GRAPHQL_WS,
            receive=receive,
            send=send,
            engine=engine,
            hub=hub,
            context_for=context_for,
            options=options,
            stats=stats,
            shutdown=shutdown,
            access=access,
            client=client,
            handshake_credential=handshake_credential,
            admission=admission,
            slot=admitted,
            deflation=deflation,
        )
        stats.connections += 1
        stats.connections_total += 1
        try:
            await connection.run()
        finally:
            stats.connections -= 1
            if access is not None and connection.principal is not None:
                access.unregister(connection.principal, connection)
    finally:
        if admission is not None and admitted is not None:
            admission.release(admitted)

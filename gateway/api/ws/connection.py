"""One GraphQL WebSocket connection, Trio-native, and the ASGI endpoint that accepts it.

Served over raw ASGI so that strawberry's asyncio handlers are never involved. Each connection
is one task (the one that called `Connection.run`, hypercorn's app task): it reads the client's
messages, sends what is queued and keeps every deadline (the init timeout, keep-alive pings, the
idle timeout), waiting for whichever comes first; the server's shutdown reaches it through
`gateway.api.ws.shutdown` (it queues the 1001 close), not through a task of its own: each
parked task costs an idle socket 2-3 KB (issue 16). An operation being started or run is a
task (`gateway.api.ws.operations`) whose cancel scope `complete`/`stop` cancels, in a nursery
the connection's task opens for them and leaves once none is left (a subscription, once
joined, needs no task): an idle subscriber holds no nursery.
Everything a connection will send goes through its `OutboundQueue` (`gateway.api.ws.queue`),
except a subscription's data frame that finds the queue empty and the socket able to take it
at once: that one is written by the fan-out loop itself (`gateway.api.direct_write`; waking
every connection's writer task for every event was half the CPU at 10,000 sockets). A client
that keeps falling behind is disconnected with close code 4413 so it stops holding resources.
What each message means is `gateway.api.ws.protocols`'s; the close codes are listed there.

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
bound, send anything but from its queue in its task or (data frames, nothing queued) its direct
write, wait for anything but under its next deadline and woken by its queue, or let one
operation's failure end the connection.
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
from gateway.api.direct_write import SCOPE_KEY, DirectWrite
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
from gateway.api.ws.queue import FLUSH, CloseFrame, OutboundQueue
from gateway.api.ws.shutdown import ShutdownSignal
from gateway.errors import StorageError

__all__ = ["Connection", "Receive", "Scope", "Send", "serve_websocket"]

log = structlog.get_logger(__name__)

hypercorn_patches.install()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Connection:
    """One WebSocket connection speaking one of the two protocols."""

    __slots__ = (  # one per socket: no instance dict
        "_access",
        "_acknowledged",
        "_admission",
        "_client",
        "_closing",
        "_context",
        "_context_for",
        "_direct",
        "_handshake_credential",
        "_init_by",
        "_init_received",
        "_last_activity",
        "_operations",
        "_options",
        "_ping_at",
        "_queue",
        "_receive",
        "_send",
        "_shutdown",
        "_slot",
        "_stats",
        "deflation",
        "init_payload",
        "legacy",
        "principal",
    )

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
        shutdown: ShutdownSignal,
        context: Any = None,
        context_for: Callable[[Principal | None], Any] | None = None,
        access: AccessControl | None = None,
        client: str = "unknown",
        handshake_credential: str | None = None,
        admission: Admission | None = None,
        slot: Slot | None = None,
        deflation: deflate.Deflation | None = None,
        direct: DirectWrite | None = None,
    ) -> None:
        self.legacy = legacy
        # The socket's direct path (gateway.api.direct_write): data frames skip the queue and
        # the connection's task while nothing is queued and the kernel takes them at once.
        self._direct = direct
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
        self._closing = False
        self._last_activity = trio.current_time()
        self._init_by = self._last_activity + options.init_timeout
        self._ping_at = math.inf  # the next keep-alive, once acknowledged
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
        self._operations.start(op_id, payload)  # its task is launched by `_serve`

    def cancel_operation(self, op_id: str) -> None:
        self._operations.cancel(op_id)

    def mark_active(self) -> None:
        self._last_activity = trio.current_time()

    def task_ended(self) -> None:
        self._queue.wake()  # `_serve` leaves the operations' nursery once it has no task

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
        queue = self._queue
        direct = self._direct
        if direct is not None and not queue and direct.try_send(frame):
            self._stats.frames_sent += 1
            queue.dropped_in_a_row = 0  # a data frame went out: the client is reading
            if direct.pending:  # the kernel took part of it: `_serve` sends the rest
                queue.put(FLUSH)
            return
        if not queue.put(frame, droppable=True):
            self._stats.frames_dropped += 1
            if self._queue.dropped_in_a_row >= self._options.slow_consumer_drops:
                self._stats.slow_consumer_closes += 1
                self.close(4413, "slow consumer: too many messages dropped")

    def close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            # A reason may quote the client (an operation id), and a client's JSON may spell a
            # lone surrogate, which no UTF-8 encoder takes: escape it, or the close frame itself
            # raises in `_serve` (found by tests/api/test_fuzz.py). wsproto truncates to 123
            # bytes.
            safe = reason.encode("utf-8", "backslashreplace").decode("utf-8")
            self._queue.put_close(CloseFrame(code, safe))

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        shutdown = self._shutdown
        shutdown.watch(self)  # its `set` queues our 1001 close, which wakes `_serve`
        try:
            # The operations' tasks need a nursery; an idle socket (its subscriptions joined,
            # so taskless) holds none: it is opened when an operation is accepted, and left
            # once no operation task is left (a nursery costs every socket ~1.3 KB, issue 16).
            while not await self._serve(None):
                if await self._serve_operations():
                    break
        finally:
            shutdown.forget(self)
            self._operations.close_all()  # joined subscriptions have no task to cancel

    async def _serve_operations(self) -> bool:
        """`_serve` with a nursery for the operations' tasks, until none is left in it (False)
        or the connection is over (True: they are cancelled). A method of its own so that the
        nursery is not kept alive, once closed, by a frame that lives on."""
        async with trio.open_nursery() as nursery:
            self._operations.launch(nursery)
            if await self._serve(nursery):
                nursery.cancel_scope.cancel()  # closed, or the client went away: they end
                return True
        return False

    async def _serve(self, nursery: trio.Nursery | None) -> bool:
        """The connection's one task: sends what is queued, keeps the deadlines (`_timers`)
        and reads the client's messages, waiting for whichever comes first — the next message,
        a frame queued (the queue cancels the wait: `OutboundQueue.waiting`; the shutdown
        queues a close; an operation's task ends), or the next deadline. One task rather than a
        reader and a writer, as each parked task costs an idle socket 2-3 KB (issue 16).

        Returns True once the close frame is sent or the client is gone; False, without
        `nursery`, when an accepted operation needs one for its task, and, in `nursery`, when
        no operation task is left in it. While a frame is being written nothing is read: a
        client that does not read its answers slows its own reading (trio-websocket's
        backpressure), and each write is bounded by the server's stall deadline (hypercorn
        patch 2)."""
        stats = self._stats
        queue = self._queue
        receive = self._receive
        while True:
            frame, expired = queue.pop()
            if expired:
                stats.frames_dropped += expired
            if frame is None:
                deadline = self._timers()
                if queue:
                    continue  # a ping or a close was queued
                if nursery is not None and not nursery.child_tasks:
                    return False  # every operation task is over: no nursery while idle
                with trio.CancelScope(deadline=deadline) as waiting:
                    queue.waiting = waiting  # `put` cancels it, then clears it
                    message = await receive()  # a memory channel's: a cancelled wait loses nothing
                queue.waiting = None
                if waiting.cancelled_caught:
                    continue
                if not await self._on_message(message):
                    return True  # the client went away: nothing more to send
                del message  # not kept (its text) while the next one is awaited
                if self._operations.to_launch:
                    if nursery is None:
                        return False
                    self._operations.launch(nursery)
            elif frame is FLUSH:
                if self._direct is not None:
                    await self._direct.flush()
            elif isinstance(frame, CloseFrame):
                with trio.move_on_after(1):
                    await self._send(
                        {"type": "websocket.close", "code": frame.code, "reason": frame.reason}
                    )
                return True
            else:
                await self._send({"type": "websocket.send", "text": frame})
                stats.frames_sent += 1

    def _timers(self) -> float:
        """Every deadline the connection keeps, checked by `_serve` whenever its queue is
        empty; returns when to check again. Close 4408 when not acknowledged within
        `init_timeout`; once acknowledged, a keep-alive every `ping_interval`; close 4408 after
        `idle_timeout` without an operation (a running one is activity, however quiet). The
        ack (`_on_init`) is queued, so `_serve` comes here again and starts the pings."""
        if self._closing:
            return math.inf  # the close frame is queued: `_serve` ends with it
        options = self._options
        now = trio.current_time()
        if self._acknowledged:
            if self._ping_at == math.inf:
                self._ping_at = now + options.ping_interval
            elif now >= self._ping_at:
                self.queue_control({"type": "ka"} if self.legacy else {"type": "ping"})
                self._ping_at = now + options.ping_interval
        elif now >= self._init_by:
            self.close(4408, "Connection initialisation timeout")
            return math.inf
        if now >= self._last_activity + options.idle_timeout:
            if not self._operations:
                self._stats.idle_closes += 1
                self.close(4408, "Connection idle timeout")
                return math.inf
            self._last_activity = now
        deadline = min(self._ping_at, self._last_activity + options.idle_timeout)
        if not self._acknowledged:
            deadline = min(deadline, self._init_by)
        return deadline

    async def _on_message(self, message: MutableMapping[str, Any]) -> bool:
        """Act on one ASGI message from the client; False when it says the client is gone."""
        kind = message["type"]
        if kind == "websocket.disconnect":
            return False
        if kind != "websocket.receive" or self._closing:
            return True  # closing: what the client still sends is not read
        text: str | None = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self.close(4400, "Invalid message received")
                return True
        if utf8_length(text) > self._options.max_message_bytes:
            self.close(1009, "message too big")
            return True
        try:
            await self._dispatch(text)
        except ProtocolError as error:
            self.close(error.code, error.reason)
        return True

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
        # Used once: not kept with the socket (a closure and a credential, issue 16).
        self._context_for = self._handshake_credential = None
        self._acknowledged = True
        self.queue_control({"type": "connection_ack"})  # `_serve` then starts the pings
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
    shutdown: ShutdownSignal,
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
    del on_admitted  # what this frame holds, every idle socket holds: only what it needs
    accept: dict[str, Any] = {"type": "websocket.accept", "subprotocol": protocol}
    deflation = deflate.negotiate(scope.get("headers") or (), options.compression)
    if deflation is not None:  # hypercorn_patches (patch 6) builds the socket from this header
        accept["headers"] = [(b"sec-websocket-extensions", deflation.header)]
    try:
        await send(accept)
        del accept
        # Everything the handshake's headers say has been read (origin, credential, protocols,
        # extensions); a browser's (cookies, user agent) would otherwise stay with the socket
        # for its whole life, in the scope hypercorn and this frame hold.
        scope["headers"] = []
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
            direct=scope.get(SCOPE_KEY),
        )
        del context_for, handshake_credential  # the connection holds them until its init
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

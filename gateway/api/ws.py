"""GraphQL over WebSocket, Trio-native: `graphql-transport-ws` and the legacy `graphql-ws`.

`graphql-transport-ws` is the protocol of the `graphql-ws` client library (GraphiQL, Apollo
Client 3.5+, urql). `graphql-ws` is the older subscriptions-transport-ws protocol that older
Apollo clients still speak. Both are served here over raw ASGI so that strawberry's asyncio
handlers are never involved.

Structure: each connection is a nursery; inside it a reader (this task), a writer that owns
the socket's send side, an init timer, a keep-alive pinger, a shutdown watcher, and one task
per operation whose cancel scope `complete`/`stop` cancels. Everything a connection will send
goes through its `OutboundQueue`, bounded: when a client reads too slowly the oldest *data*
frames are dropped (counted), control frames never are, and a client that keeps falling behind
is disconnected with close code 4413 so it stops holding resources.

Close codes (graphql-transport-ws): 4400 malformed message, 4401 subscribe before ack (or no API
key in connection_init while anonymous access is off), 4403 a bad or revoked API key (at init,
at an operation, or within `auth_revocation_poll` of a revocation), 4408 init timeout, 4409
duplicate operation id, 4429 second connection_init, 4500 the key store could not be read
(clients retry); 1001 server shutdown;
1009 message too big; 4413 slow consumer (ours: the client stopped reading); 4408 also, with
the reason "Connection idle timeout", when the client sent nothing (its pongs aside) and ran no
operation for `idle_timeout` (like the init timeout it means "too slow": graphql-ws clients
retry it, lazy ones reconnect at their next operation). The legacy protocol sees the same
codes, and 1000 after its own connection_terminate.

Limits per connection: `max_message_bytes` (close 1009), `max_operations` running at once (one
more is answered with an `error` for that operation, code RATE_LIMITED, and the connection
stays), `idle_timeout` (close 4408). Query limits (depth, cost, …) are the engine's, shared with
HTTP: a refused operation gets an `error` message and the connection stays. So do the caller's
tier limits (gateway.api.auth: requests per minute and day, open subscriptions, symbols, history)
and a mutation its role may not run (FORBIDDEN).

Authentication (gateway.api.auth): the API key comes in the connection_init payload (or, for
clients that can set them, the handshake's Authorization / X-API-Key headers) and is checked
before the ack; the Origin of the handshake was checked by the app before accept.

Must never: run an operation before connection_ack, let a client grow server memory without
bound, or let one operation's failure end the connection.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from graphql import ExecutionResult, OperationType
from hypercorn.protocol import ws_stream as _hypercorn_ws_stream
from trio.lowlevel import ParkingLot

from gateway.api.auth import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    AccessControl,
    Principal,
    RateLimited,
    Unauthenticated,
    credential_from_init,
    forbidden_result,
    use_principal,
)
from gateway.api.graphql_trio import GraphQLEngine, PreparedOperation, dumps, loads, result_to_dict
from gateway.api.query_limits import utf8_length
from gateway.api.shared_subscriptions import Membership, SubscriptionHub
from gateway.config import Settings
from gateway.errors import StorageError

__all__ = [
    "GRAPHQL_TRANSPORT_WS",
    "GRAPHQL_WS",
    "OutboundQueue",
    "WebSocketOptions",
    "serve_websocket",
]

log = structlog.get_logger(__name__)


def _guard_hypercorn_message_buffer() -> None:
    """Make one oversized WebSocket message cost its connection, not the whole server.

    Hypercorn (0.18) answers a message over `websocket_max_message_size` with close 1009 but
    leaves the partial message in the connection's buffer; the client's next message is then
    appended to it, and a binary one after a text one raises TypeError in hypercorn's read loop,
    which only expects OSError there: the exception escapes the listener's nursery and stops
    the gateway (found by tests/test_fuzz.py). Emptying the buffer when the limit trips keeps
    every later message well-typed; the client has been told 1009 either way.
    """
    buffer_class: Any = _hypercorn_ws_stream.WebsocketBuffer
    original = buffer_class.extend
    if getattr(original, "_gateway_guard", False):
        return

    def extend(self: Any, event: Any) -> None:
        try:
            original(self, event)
        except _hypercorn_ws_stream.FrameTooLargeError:
            self.clear()
            raise

    extend._gateway_guard = True  # type: ignore[attr-defined]
    buffer_class.extend = extend


_guard_hypercorn_message_buffer()

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"
CLOSE_INTERNAL = 4500  # graphql-ws's "internal server error": clients retry it

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class WebSocketOptions:
    """Per-connection limits; the defaults mirror `gateway.config.Settings`."""

    init_timeout: float = 10.0
    ping_interval: float = 20.0
    send_queue: int = 256
    slow_consumer_drops: int = 2048
    max_message_bytes: int = 256 * 1024
    max_operations: int = 100
    idle_timeout: float = 600.0
    max_frame_age: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebSocketOptions:
        return cls(
            init_timeout=settings.ws_init_timeout,
            ping_interval=settings.ws_ping_interval,
            send_queue=settings.ws_send_queue,
            slow_consumer_drops=settings.ws_slow_consumer_drops,
            max_message_bytes=settings.ws_max_message_bytes,
            max_operations=settings.ws_max_operations,
            idle_timeout=settings.ws_idle_timeout,
            max_frame_age=settings.ws_max_frame_age,
        )


class WebSocketStats:
    """Counters exported on /metrics."""

    def __init__(self) -> None:
        self.connections = 0
        self.connections_total = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self.slow_consumer_closes = 0
        self.operations = 0


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class OutboundQueue:
    """A connection's bounded send queue.

    Data frames (subscription payloads) are droppable: when the queue is full the oldest one
    goes, and a data frame still unsent `max_age` seconds after it was queued is dropped at send
    time — a client that is behind gets fresh ticks rather than an ever older backlog, so its
    latency stays bounded. Control frames (ack, pong, error, complete, close) are never
    dropped; they are few and each answers something the client did.
    """

    __slots__ = ("_items", "_limit", "_lot", "_max_age", "dropped", "dropped_in_a_row")

    def __init__(self, limit: int, max_age: float = math.inf) -> None:
        # (expires_at, frame): expires_at is None for a control frame
        self._items: deque[tuple[float | None, str | _Close]] = deque()
        self._limit = limit
        self._max_age = max_age
        self._lot = ParkingLot()
        self.dropped = 0
        self.dropped_in_a_row = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: str | _Close, *, droppable: bool = False) -> bool:
        """Queue a frame; returns False when a data frame (an older one, or this) was dropped."""
        kept = True
        if droppable and len(self._items) >= self._limit:
            self.dropped += 1
            self.dropped_in_a_row += 1
            kept = False
            if not self._drop_oldest_data():
                return False  # nothing but control frames queued: this data frame goes
        expires = trio.current_time() + self._max_age if droppable else None
        self._items.append((expires, frame))
        if self._lot:  # the writer is parked (len(lot) > 0); statistics() would allocate
            self._lot.unpark_all()
        return kept

    def put_close(self, close: _Close) -> None:
        """Queue the close frame behind pending control frames only: data can wait no more."""
        self._items = deque(item for item in self._items if item[0] is None)
        self._items.append((None, close))
        if self._lot:
            self._lot.unpark_all()

    def _drop_oldest_data(self) -> bool:
        for index, (expires, _frame) in enumerate(self._items):
            if expires is not None:
                del self._items[index]
                return True
        return False

    async def take(self) -> tuple[str | _Close, int]:
        """Wait for the next frame worth sending; returns it and how many expired data frames
        were dropped on the way (also counted in `dropped`).

        Age is checked here, just before the send, so however long the writer waited for the
        socket, a frame older than `max_age` is never sent.
        """
        expired = 0
        while True:
            while not self._items:
                await self._lot.park()
            expires, frame = self._items.popleft()
            if expires is None or expires >= trio.current_time():
                break
            expired += 1
        if expired:
            self.dropped += expired
            self.dropped_in_a_row += expired
        elif expires is not None:
            self.dropped_in_a_row = 0  # a data frame is going out: the client is reading
        return frame, expired


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _OperationSink:
    """Delivers one operation's shared-subscription payloads into its connection's queue."""

    __slots__ = ("_connection", "_prefix", "done", "errors")

    def __init__(self, connection: _Connection, prefix: str) -> None:
        self._connection = connection
        self._prefix = prefix
        self.done = trio.Event()
        self.errors: list[dict[str, Any]] | None = None

    def deliver(self, payload: str) -> None:
        self._connection.queue_data(self._prefix + payload + "}")

    def fail(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        self.done.set()

    def finish(self) -> None:
        self.done.set()


class _Connection:
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
    ) -> None:
        self.legacy = legacy
        self._receive = receive
        self._send = send
        self._engine = engine
        self._hub = hub
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
        self._operations: dict[str, trio.CancelScope] = {}
        self._init_received = False
        self._acknowledged = False
        self._acked = trio.Event()
        self._closing = False
        self._last_activity = trio.current_time()
        self.init_payload: dict[str, Any] = {}

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
            # raises in the writer (found by tests/test_fuzz.py). wsproto truncates to 123 bytes.
            safe = reason.encode("utf-8", "backslashreplace").decode("utf-8")
            self._queue.put_close(_Close(code, safe))

    async def _writer(self, done: trio.CancelScope) -> None:
        stats = self._stats
        while True:
            frame, expired = await self._queue.take()
            if expired:
                stats.frames_dropped += expired
            if isinstance(frame, _Close):
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
            nursery.start_soon(self._init_timer)
            nursery.start_soon(self._watch_shutdown)
            nursery.start_soon(self._keep_alive)
            nursery.start_soon(self._idle_timer)
            await self._read_loop()
            if not self._closing:  # the client went away: nothing more to send
                nursery.cancel_scope.cancel()

    async def _init_timer(self) -> None:
        with trio.move_on_after(self._options.init_timeout):
            await self._acked.wait()
            return
        self.close(4408, "Connection initialisation timeout")

    async def _idle_timer(self) -> None:
        timeout = self._options.idle_timeout
        while True:
            await trio.sleep_until(self._last_activity + timeout)
            if self._operations:  # a running operation is activity, however quiet
                self._last_activity = trio.current_time()
            elif trio.current_time() >= self._last_activity + timeout:
                self.close(4408, "Connection idle timeout")
                return

    async def _watch_shutdown(self) -> None:
        await self._shutdown.wait()
        self.close(1001, "server shutting down")

    async def _keep_alive(self) -> None:
        await self._acked.wait()
        message = {"type": "ka"} if self.legacy else {"type": "ping"}
        while True:
            await trio.sleep(self._options.ping_interval)
            self.queue_control(message)

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
            except _ProtocolError as error:
                self.close(error.code, error.reason)

    # -- protocol -----------------------------------------------------------------------------

    async def _dispatch(self, text: str) -> None:
        try:
            message = loads(text)
        except ValueError:
            raise _ProtocolError(4400, "Invalid message received") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise _ProtocolError(4400, "Invalid message received")
        kind = message["type"]
        if kind != "pong":  # answering our keep-alive pings is not using the connection
            self._last_activity = trio.current_time()
        if kind == "connection_init":
            await self._on_init(message)
        elif self.legacy:
            self._dispatch_legacy(kind, message)
        else:
            self._dispatch_transport(kind, message)

    async def _on_init(self, message: dict[str, Any]) -> None:
        if self._init_received:
            raise _ProtocolError(4429, "Too many initialisation requests")
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise _ProtocolError(4400, "Invalid connection_init payload")
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
            self._access.register(self.principal, self)
        if self._context_for is not None:
            self._context = self._context_for(self.principal)
        self._acknowledged = True
        self._acked.set()
        self.queue_control({"type": "connection_ack"})
        if self.legacy:
            self.queue_control({"type": "ka"})

    def _refuse(self, refused: Unauthenticated) -> None:
        code = CLOSE_FORBIDDEN if refused.presented else CLOSE_UNAUTHORIZED
        if self.legacy:  # subscriptions-transport-ws clients read the reason from this message
            self.queue_control({"type": "connection_error", "payload": {"message": str(refused)}})
        self.close(code, "Forbidden" if refused.presented else "Unauthorized")

    def _dispatch_transport(self, kind: str, message: dict[str, Any]) -> None:
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if isinstance(message.get("payload"), dict):
                pong["payload"] = message["payload"]
            self.queue_control(pong)
        elif kind == "pong":
            return
        elif kind == "subscribe":
            if not self._acknowledged:
                raise _ProtocolError(4401, "Unauthorized")
            op_id, payload = _operation_fields(message)
            if op_id in self._operations:
                raise _ProtocolError(4409, f"Subscriber for {op_id} already exists")
            self._start_operation(op_id, payload)
        elif kind == "complete":
            completed = message.get("id")
            if not isinstance(completed, str):
                raise _ProtocolError(4400, "Invalid message received")
            self._cancel_operation(completed)
        else:
            raise _ProtocolError(4400, f"Unknown message type {kind!r}")

    def _dispatch_legacy(self, kind: str, message: dict[str, Any]) -> None:
        if kind == "start":
            if not self._acknowledged:
                raise _ProtocolError(4401, "Unauthorized")
            op_id, payload = _operation_fields(message)
            if op_id in self._operations:
                self._cancel_operation(op_id)  # legacy clients restart an id by re-sending it
            self._start_operation(op_id, payload)
        elif kind == "stop":
            stopped = message.get("id")
            if isinstance(stopped, str):
                self._cancel_operation(stopped)
        elif kind == "connection_terminate":
            self.close(1000, "terminated by client")
        else:
            self.queue_control(
                {
                    "type": "error",
                    "id": message.get("id"),
                    "payload": {
                        "message": f"unknown message type {kind!r}",
                        "extensions": {"code": "BAD_USER_INPUT"},
                    },
                }
            )

    # -- operations ---------------------------------------------------------------------------

    def _start_operation(self, op_id: str, payload: dict[str, Any]) -> None:
        maximum = self._options.max_operations
        if len(self._operations) >= maximum:
            error = {
                "message": f"this connection already runs {maximum} operations: "
                "complete one before starting another",
                "extensions": {"code": "RATE_LIMITED", "limit": "operations", "maximum": maximum},
            }
            self._send_errors(op_id, [error])
            return
        if self._access is not None and self.principal is not None:
            try:
                self._access.admit(self.principal)  # every operation is a request
            except RateLimited as limited:
                self._send_errors(op_id, [_error(limited)])
                return
        scope = trio.CancelScope()
        self._operations[op_id] = scope
        self._stats.operations += 1
        self._nursery.start_soon(self._run_operation, op_id, payload, scope)

    def _cancel_operation(self, op_id: str) -> None:
        scope = self._operations.pop(op_id, None)
        if scope is not None:
            scope.cancel()

    def _send_errors(self, op_id: str, errors: list[dict[str, Any]]) -> None:
        payload: Any = errors[0] if self.legacy and errors else errors
        self.queue_control({"type": "error", "id": op_id, "payload": payload})

    def _data_prefix(self, op_id: str) -> str:
        kind = "data" if self.legacy else "next"
        return '{"id":' + json.dumps(op_id) + ',"type":"' + kind + '","payload":'

    async def _run_operation(
        self, op_id: str, payload: dict[str, Any], scope: trio.CancelScope
    ) -> None:
        use_principal(self.principal)  # this task's (resolvers check the tier's limits)
        try:
            with scope:
                completed = await self._operate(op_id, payload)
                if completed:
                    self.queue_control({"id": op_id, "type": "complete"})
        except Exception as exc:  # an operation's failure is reported, never fatal
            log.exception("ws_operation_failed", op_id=op_id, error=repr(exc))
            self._send_errors(
                op_id, [{"message": "internal error", "extensions": {"code": "INTERNAL"}}]
            )
        finally:
            if self._operations.get(op_id) is scope:
                del self._operations[op_id]
            self._last_activity = trio.current_time()

    async def _operate(self, op_id: str, payload: dict[str, Any]) -> bool:
        """Run one operation; True when a `complete` should follow."""
        query: str = payload["query"]  # a string: checked by _operation_fields
        variables = payload.get("variables")
        principal = self.principal
        # A key revoked since the init (here or by `gateway keys revoke` elsewhere) stops now.
        if (
            self._access is not None
            and principal is not None
            and not await self._access.still_valid(principal)
        ):
            self.close(CLOSE_FORBIDDEN, "API key revoked")
            return False
        if variables is not None and not isinstance(variables, dict):
            error = {"message": "'variables' must be an object"}
            self._send_errors(op_id, [{**error, "extensions": {"code": "BAD_USER_INPUT"}}])
            return False
        prepared = self._engine.prepare(query, payload.get("operationName"), variables)
        if isinstance(prepared, ExecutionResult):
            self._send_errors(op_id, result_to_dict(prepared)["errors"])
            return False
        forbidden = forbidden_result(principal, prepared)
        if forbidden is not None:
            self._send_errors(op_id, result_to_dict(forbidden)["errors"])
            return False
        if prepared.kind is not OperationType.SUBSCRIPTION:
            result = await self._engine.execute(
                prepared, variables=variables, context=self._context
            )
            self.queue_control(
                {
                    "id": op_id,
                    "type": "data" if self.legacy else "next",
                    "payload": result_to_dict(result),
                }
            )
            return True
        if self._access is None or principal is None:
            return await self._subscribe(op_id, query, prepared, variables, "")
        try:
            self._access.open_subscription(principal)
        except RateLimited as limited:
            self._send_errors(op_id, [_error(limited)])
            return False
        try:
            return await self._subscribe(op_id, query, prepared, variables, principal.tier)
        finally:
            self._access.close_subscription(principal)

    async def _subscribe(
        self,
        op_id: str,
        query: str,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        tier: str,
    ) -> bool:
        sink = _OperationSink(self, self._data_prefix(op_id))
        # The hub shares one execution among identical subscriptions and keys its groups by the
        # text it is given. Its resolvers see the tier of the client that started a group (they
        # inherit this task's context), and tiers differ in what arguments they accept: so the
        # tier is made part of the key, and clients of different tiers never share a group.
        key = f"#tier:{tier}\n{query}" if tier else query
        joined = await self._hub.join(key, prepared, variables, sink)
        if not isinstance(joined, Membership):
            self._send_errors(op_id, joined)
            return False
        try:
            await sink.done.wait()
        finally:
            self._hub.leave(joined)
        if sink.errors is not None:
            self._send_errors(op_id, sink.errors)
            return False
        return True


def _error(error: RateLimited) -> dict[str, Any]:
    extensions = {k: v for k, v in error.extensions().items() if v is not None}
    return {"message": str(error), "extensions": {**extensions, "code": error.code}}


def _operation_fields(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    op_id = message.get("id")
    payload = message.get("payload")
    if not isinstance(op_id, str) or not op_id:
        raise _ProtocolError(4400, "Invalid message received: 'id' must be a non-empty string")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise _ProtocolError(4400, "Invalid message received: 'payload.query' must be a string")
    return op_id, payload


def choose_subprotocol(offered: list[str]) -> str | None:
    """The newer protocol wins when a client offers both."""
    for protocol in (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS):
        if protocol in offered:
            return protocol
    return None


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
) -> None:
    """The ASGI WebSocket endpoint for /graphql.

    `context_for(principal)` makes the connection's GraphQL context once the client is known;
    with `access`, the connection_init payload must authenticate (see the module docstring).
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
    await send({"type": "websocket.accept", "subprotocol": protocol})
    connection = _Connection(
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
    )
    stats.connections += 1
    stats.connections_total += 1
    try:
        await connection.run()
    finally:
        stats.connections -= 1
        if access is not None and connection.principal is not None:
            access.unregister(connection.principal, connection)

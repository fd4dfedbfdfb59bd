"""The two GraphQL-over-WebSocket protocols: what a client's message means, in each.

`graphql-transport-ws` is the protocol of the `graphql-ws` client library (GraphiQL, Apollo
Client 3.5+, urql). `graphql-ws` is the older subscriptions-transport-ws protocol that older
Apollo clients still speak. `choose_subprotocol` picks one at the handshake; `parse` checks a
message's framing, and `dispatch_transport` / `dispatch_legacy` act on every message but
connection_init (which both protocols share, see `gateway.api.ws.connection`) through the
connection's `Session` interface.

Close codes (graphql-transport-ws): 4400 malformed message, 4401 subscribe before ack (or no API
key in connection_init while anonymous access is off), 4403 a bad or revoked API key (at init,
at an operation, or within `auth_revocation_poll` of a revocation), 4408 init timeout, 4409
duplicate operation id, 4429 second connection_init, 4500 the key store could not be read
(clients retry); 1001 server shutdown;
1009 message too big; 4413 slow consumer (ours: the client stopped reading); 4408 also, with
the reason "Connection idle timeout", when the connection ran no operation for `idle_timeout`
whatever the client sent meanwhile, pings included (like the init timeout it means "too slow":
graphql-ws clients retry it, lazy ones reconnect at their next operation). Right after the
handshake, or at connection_init for a key (gateway.api.ws.admission): 4429 too, with a reason
naming the limit, when the client already holds its tier's connections or its handshake is
over its requests per minute or day, and 1013 ("Try Again Later", retried by clients) when the
server holds its total of connections. The legacy protocol sees the same codes, and 1000 after
its own connection_terminate.

Must never: start an operation before connection_ack (4401), touch the socket, start tasks or
wait: a message is answered by queueing frames and calling the session, nothing more.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.api.graphql_trio import loads

__all__ = [
    "CLOSE_INTERNAL",
    "GRAPHQL_TRANSPORT_WS",
    "GRAPHQL_WS",
    "ProtocolError",
    "Session",
    "choose_subprotocol",
    "dispatch_legacy",
    "dispatch_transport",
    "operation_fields",
    "parse",
]

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"
CLOSE_INTERNAL = 4500  # graphql-ws's "internal server error": clients retry it


class ProtocolError(Exception):
    """A message the protocol does not allow: the connection closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Session(Protocol):
    """What the message handlers may do to their connection."""

    @property
    def acknowledged(self) -> bool:
        """True once connection_ack was queued: operations may start."""
        ...

    def is_running(self, op_id: str) -> bool: ...

    def start_operation(self, op_id: str, payload: dict[str, Any]) -> None: ...

    def cancel_operation(self, op_id: str) -> None: ...

    def queue_control(self, message: dict[str, Any]) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


def choose_subprotocol(offered: list[str]) -> str | None:
    """The newer protocol wins when a client offers both."""
    for protocol in (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS):
        if protocol in offered:
            return protocol
    return None


def parse(text: str) -> tuple[str, dict[str, Any]]:
    """A client message's type and the message; ProtocolError (4400) when it is not one."""
    try:
        message = loads(text)
    except ValueError:
        raise ProtocolError(4400, "Invalid message received") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(4400, "Invalid message received")
    return message["type"], message


def dispatch_transport(session: Session, kind: str, message: dict[str, Any]) -> None:
    """Act on a graphql-transport-ws message other than connection_init."""
    if kind == "ping":
        pong: dict[str, Any] = {"type": "pong"}
        if isinstance(message.get("payload"), dict):
            pong["payload"] = message["payload"]
        session.queue_control(pong)
    elif kind == "pong":
        return
    elif kind == "subscribe":
        if not session.acknowledged:
            raise ProtocolError(4401, "Unauthorized")
        op_id, payload = operation_fields(message)
        if session.is_running(op_id):
            raise ProtocolError(4409, f"Subscriber for {op_id} already exists")
        session.start_operation(op_id, payload)
    elif kind == "complete":
        completed = message.get("id")
        if not isinstance(completed, str):
            raise ProtocolError(4400, "Invalid message received")
        session.cancel_operation(completed)
    else:
        raise ProtocolError(4400, f"Unknown message type {kind!r}")


def dispatch_legacy(session: Session, kind: str, message: dict[str, Any]) -> None:
    """Act on a legacy graphql-ws message other than connection_init."""
    if kind == "start":
        if not session.acknowledged:
            raise ProtocolError(4401, "Unauthorized")
        op_id, payload = operation_fields(message)
        if session.is_running(op_id):
            session.cancel_operation(op_id)  # legacy clients restart an id by re-sending it
        session.start_operation(op_id, payload)
    elif kind == "stop":
        stopped = message.get("id")
        if isinstance(stopped, str):
            session.cancel_operation(stopped)
    elif kind == "connection_terminate":
        session.close(1000, "terminated by client")
    else:
        session.queue_control(
            {
                "type": "error",
                "id": message.get("id"),
                "payload": {
                    "message": f"unknown message type {kind!r}",
                    "extensions": {"code": "BAD_USER_INPUT"},
                },
            }
        )


def operation_fields(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A subscribe/start message's id and payload; ProtocolError (4400) when malformed."""
    op_id = message.get("id")
    payload = message.get("payload")
    if not isinstance(op_id, str) or not op_id:
        raise ProtocolError(4400, "Invalid message received: 'id' must be a non-empty string")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise ProtocolError(4400, "Invalid message received: 'payload.query' must be a string")
    return op_id, payload

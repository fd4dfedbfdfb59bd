"""GraphQL over WebSocket for /graphql, Trio-native: `graphql-transport-ws` and the legacy
`graphql-ws`. `connection` holds one connection's tasks and the ASGI endpoint
(`serve_websocket`), `protocols` what each protocol's messages mean (and the close codes),
`operations` the operations a connection runs, `queue` its bounded outbound queue, `shutdown`
the server's shutdown as its connections see it (no task per socket), `options` its limits and
the shared counters, `admission` who may hold a socket open (total and per-client caps, the
handshake's request), `descriptors` the process's descriptor limit and the total cap derived
from it. It serves the app's WebSocket route and reads the layers
below only through the GraphQL engine, the subscription hub and access control it is given;
nothing below the API may import it.
"""

from gateway.api.ws.admission import (
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN_LATER,
    Admission,
    Refusal,
    Slot,
)
from gateway.api.ws.connection import Connection, serve_websocket
from gateway.api.ws.descriptors import (
    descriptor_limit,
    fresh_allowance,
    http_connection_cap,
    raise_descriptor_limit,
    total_connection_cap,
)
from gateway.api.ws.options import WebSocketOptions, WebSocketStats
from gateway.api.ws.protocols import GRAPHQL_TRANSPORT_WS, GRAPHQL_WS, choose_subprotocol
from gateway.api.ws.queue import CloseFrame, OutboundQueue
from gateway.api.ws.shutdown import ShutdownSignal

__all__ = [
    "CLOSE_TOO_MANY",
    "CLOSE_TRY_AGAIN_LATER",
    "GRAPHQL_TRANSPORT_WS",
    "GRAPHQL_WS",
    "Admission",
    "CloseFrame",
    "Connection",
    "OutboundQueue",
    "Refusal",
    "ShutdownSignal",
    "Slot",
    "WebSocketOptions",
    "WebSocketStats",
    "choose_subprotocol",
    "descriptor_limit",
    "fresh_allowance",
    "http_connection_cap",
    "raise_descriptor_limit",
    "serve_websocket",
    "total_connection_cap",
]

"""A WebSocket connection's limits (`WebSocketOptions`) and the counters all connections share
(`WebSocketStats`, exported on /metrics).

Plain values: the limits are read once from `gateway.config.Settings`, the counters are bumped
by the connections. Must never read the environment itself, hold a reference to a connection,
or do I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gateway.config import Settings

__all__ = ["WebSocketOptions", "WebSocketStats"]


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
    compression: str = "shared"  # permessage-deflate: shared | off (gateway.api.deflate)

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
            compression=settings.ws_compression,
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
        # Sockets refused at the handshake or init, by limit ("total", "client", "rate"), the
        # total cap they were held to, and connections closed for idling (admission.py).
        self.refused: Counter[str] = Counter()
        self.max_connections = 0
        self.idle_closes = 0

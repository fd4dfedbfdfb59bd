"""Hypercorn's trio worker serving the app inside the supervisor's nursery.

`serve_http` reports started (with the bound URLs) only once the socket listens, so
`await nursery.start(serve_http, …)` means "clients can connect". Shutdown is hypercorn's own
graceful path: the trigger stops accepting, open connections get `graceful_timeout`
(`shutdown_grace`) to finish, and by then every write to a client is abandoned too, however
slowly the client reads (the Config's `gateway_write_deadline`), so no client holds the
shutdown longer.

Hypercorn runs with the gateway's patches, all in `gateway.api.hypercorn_patches` (installed
here at import, before anything is served; that module lists each one and why). One bounds the
writes to a client that stops reading by `send_stall_timeout`, which `hypercorn_config` carries
on the Config as `gateway_send_stall_timeout`. A client slow to send is bounded by hypercorn's
keep-alive timer, which runs until a request's headers are complete (`http_header_timeout`), and
by the app for the body (`http_body_timeout`), which stops waiting for bodies as soon as the
shutdown starts (503). Every connection is first offered to the app's connection caps
(gateway.api.connections, through patch 3, as the Config's `gateway_connection_gate`): one over
a cap is closed before it is read. The kernel queues up to `http_backlog` connections before
they are accepted (hypercorn's default, 100, overflowed in a WebSocket flood, and a new
`/readyz` connection waited seconds behind it; 1024 still overflowed when 2,000 handshakes came
at once, and the kernel reset hundreds of them); a kernel that caps it lower
(`net.core.somaxconn`) is a warning at start. Hypercorn's own log lines go to the stdlib
logger `hypercorn.error`, which gateway.log renders like every other line (JSON under
`--log-format json`), never to a handler of hypercorn's.

Must never: serve without the patches, or let a client hold the shutdown past the grace period.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from gateway.api import hypercorn_patches
from gateway.api.app import GatewayApp
from gateway.config import Settings

__all__ = ["hypercorn_config", "kernel_backlog_cap", "serve_http"]

log = structlog.get_logger(__name__)

hypercorn_patches.install()


# Where Linux says how long a listen backlog may be: it silently shortens any longer one.
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def kernel_backlog_cap(path: Path = SOMAXCONN) -> int | None:
    """net.core.somaxconn, or None where it cannot be read (not Linux)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [_bind(settings.host, settings.port)]
    config.graceful_timeout = settings.shutdown_grace
    config.websocket_max_message_size = settings.ws_max_message_bytes
    config.accesslog = None
    # A Logger rather than hypercorn's "-": hypercorn then adds no handler of its own, and its
    # lines propagate to the root logger, which gateway.log renders (one line each, JSON or not).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.backlog = settings.http_backlog
    # From a connection's start, or the end of its previous response, to a request's complete
    # headers: hypercorn's idle timer runs exactly then (gateway.api.hypercorn_patches).
    config.keep_alive_timeout = settings.http_header_timeout
    config.include_server_header = False
    config.gateway_send_stall_timeout = settings.send_stall_timeout  # type: ignore[attr-defined]
    config.gateway_write_deadline = hypercorn_patches.WriteDeadline()  # type: ignore[attr-defined]
    # One keep-alive timer task per connection, not one per request (hypercorn_patches, 5).
    config.gateway_idle_timer = True  # type: ignore[attr-defined]
    return config


async def serve_http(
    app: GatewayApp,
    settings: Settings,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown_trigger` returns and connections have drained (or the grace
    period is over)."""
    config = hypercorn_config(settings)
    config.gateway_connection_gate = app.connections  # type: ignore[attr-defined]
    writes: hypercorn_patches.WriteDeadline = config.gateway_write_deadline  # type: ignore[attr-defined]
    cap = kernel_backlog_cap()
    if cap is not None and cap < settings.http_backlog:
        log.warning(
            "http.backlog_capped",
            backlog=settings.http_backlog,
            somaxconn=cap,
            hint="the kernel shortens the listen backlog to net.core.somaxconn: a burst of more"
            " connections than that is dropped or reset; raise it (sysctl net.core.somaxconn)",
        )
    if settings.host.strip("[]") in {"0.0.0.0", "::"} and not settings.allowed_hosts:
        log.warning(
            "http.allowed_hosts_loopback_only",
            host=settings.host,
            hint="requests naming any other Host get 400; set GATEWAY_ALLOWED_HOSTS to the names"
            " clients use (or * behind a proxy that checks Host)",
        )

    async def trigger() -> None:
        await shutdown_trigger()
        # hypercorn now gives connections `graceful_timeout`: writes end by then too.
        writes.end_all_by(trio.current_time() + config.graceful_timeout)

    asgi: Any = app  # hypercorn's ASGI types are stricter than any app's own signature
    await serve(asgi, config, shutdown_trigger=trigger, task_status=task_status)

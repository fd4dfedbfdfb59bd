"""Hypercorn's trio worker serving the app inside the supervisor's nursery.

`serve_http` reports started (with the bound URLs) only once the socket listens, so
`await nursery.start(serve_http, …)` means "clients can connect". Shutdown is hypercorn's own
graceful path: the trigger stops accepting, open connections get `graceful_timeout` to finish.

Hypercorn runs with the gateway's patches, all in `gateway.api.hypercorn_patches` (installed
here at import, before anything is served; that module lists each one and why). One bounds the
writes to a client that stops reading by `send_stall_timeout`, which `hypercorn_config` carries
on the Config as `gateway_send_stall_timeout`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from gateway.api import hypercorn_patches
from gateway.api.app import GatewayApp
from gateway.config import Settings

__all__ = ["hypercorn_config", "serve_http"]

hypercorn_patches.install()


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

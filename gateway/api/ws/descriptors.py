"""The process's file-descriptor budget: raised at start, and split between WebSockets and the
rest.

Every open socket costs a descriptor, and a process at its limit can accept nothing, not even
the `/healthz` probe that would tell an orchestrator it is alive. So `raise_descriptor_limit`
(called once by `gateway.nursery.run_gateway`, the CLI's entry point) lifts the soft
RLIMIT_NOFILE to the hard limit, and `total_connection_cap` gives WebSockets what is left after
`Settings.fd_reserve` descriptors are kept back for the database, the upstream client and HTTP
clients (health, readiness, metrics, admin), unless `Settings.ws_max_connections` sets the cap
outright. `http_connection_cap` bounds every client connection, WebSockets included
(gateway.api.connections): the limit less three quarters of the reserve, so at the WebSocket
cap a quarter of the reserve is left for plain HTTP, another quarter (`fresh_allowance`) for
addresses holding no connection, and half for the process's own descriptors: it never runs out.

Must never: fail the start (a platform without `resource`, or a limit that cannot be raised,
is logged and lived with), lower a limit, or log anything but the numbers.
"""

from __future__ import annotations

from typing import Final

import structlog

from gateway.config import Settings

__all__ = [
    "descriptor_limit",
    "fresh_allowance",
    "http_connection_cap",
    "raise_descriptor_limit",
    "total_connection_cap",
]

log = structlog.get_logger(__name__)

# Used when a limit is "unlimited" (RLIM_INFINITY): Linux's default ceiling (fs.nr_open).
_UNLIMITED_STANDIN: Final = 1 << 20


def descriptor_limit() -> int | None:
    """The soft RLIMIT_NOFILE now; None where the platform cannot tell (no `resource`)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX platform
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED_STANDIN if soft == resource.RLIM_INFINITY else soft


def raise_descriptor_limit() -> tuple[int | None, int | None]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; returns (before, after), None unknown.

    Logged either way (`process.descriptor_limit`); a refusal is a warning, never an error.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX platform
        log.warning("process.descriptor_limit_unknown", reason="no resource module")
        return None, None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as exc:  # pragma: no cover - getrlimit does not fail on Linux
        log.warning("process.descriptor_limit_unknown", reason=str(exc))
        return None, None
    target = _UNLIMITED_STANDIN if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:  # a sandbox, or a hard limit above the OS's own
            log.warning("process.descriptor_limit_unchanged", soft=soft, hard=hard, error=str(exc))
            return soft, soft
    after = descriptor_limit()
    log.info("process.descriptor_limit", soft_before=soft, soft_after=after, hard=hard)
    return soft, after


def total_connection_cap(settings: Settings, limit: int | None = None) -> int:
    """How many WebSockets may be open at once, in total.

    `ws_max_connections` when set; otherwise the descriptor limit (`limit`, or the process's
    own now) minus `fd_reserve`, and at least 1. Without a known limit (no `resource`) the
    reserve is taken from Linux's usual 1024.
    """
    if settings.ws_max_connections is not None:
        return settings.ws_max_connections
    if limit is None:
        limit = descriptor_limit() or 1024
    cap = limit - settings.fd_reserve
    if cap < 1:
        log.warning(
            "ws.connection_cap_starved",
            descriptor_limit=limit,
            fd_reserve=settings.fd_reserve,
        )
    return max(1, cap)


def http_connection_cap(settings: Settings, limit: int | None = None) -> int:
    """How many client connections (WebSockets included) may be open at once, in total.

    `http_max_connections` when set; otherwise the descriptor limit (`limit`, or the process's
    own now) less three quarters of `fd_reserve` (see the module docstring), and at least 1.
    """
    if settings.http_max_connections is not None:
        return settings.http_max_connections
    if limit is None:
        limit = descriptor_limit() or 1024
    return max(1, limit - settings.fd_reserve + fresh_allowance(settings))


def fresh_allowance(settings: Settings) -> int:
    """Connections admitted past `http_connection_cap` from addresses holding none: a quarter
    of the reserve."""
    return settings.fd_reserve // 4

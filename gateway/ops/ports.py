"""A trial bind of the HTTP port, before any upstream is called.

hypercorn binds only once the collectors are running, so a port already in use used to be
reported after the first round of upstream requests and their warnings. The supervisor calls
`check_port_free` first, so that failure is one line and nothing else happened.

Must never keep the socket: it is closed at once and hypercorn binds its own.
"""

from __future__ import annotations

import socket

__all__ = ["check_port_free"]


def check_port_free(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE, or the resolver's error) if `host:port` cannot be bound now.

    SO_REUSEADDR is set as hypercorn sets it: a port held by a listener fails; one left in
    TIME_WAIT by a previous run does not. Port 0 (any free port) is not checked.
    """
    if port == 0:
        return
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        probe.listen(1)

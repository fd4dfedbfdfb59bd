"""What a lost live-stream connection looks like, and how it is described to people.

`CONNECTION_TROUBLE` is every exception that means "this WebSocket is gone" — trio-websocket's
refused or timed-out handshake (which includes a close that timed out: DisconnectionTimeout), a
close by either side, a broken or reset socket, a failed name resolution, and our own
`SendStalled` — so the stream client reconnects on exactly these and lets anything else escape
as a bug. `describe_trouble` turns one into the short reason that health reports and logs show.

Must never swallow an exception itself, or describe one with more than the exception says.
"""

from __future__ import annotations

from typing import Final

import trio
from trio_websocket import ConnectionClosed, HandshakeError

__all__ = ["CONNECTION_TROUBLE", "SendStalled", "describe_trouble"]


class SendStalled(Exception):
    """A send did not complete in time: the exchange stopped reading."""


CONNECTION_TROUBLE: Final = (
    SendStalled,
    HandshakeError,
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


def describe_trouble(exc: BaseException) -> str:
    """A one-line reason for a lost connection: the close code and reason when there is one."""
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        reason = f" ({exc.reason.reason})" if exc.reason.reason else ""
        return f"closed with {exc.reason.code} {exc.reason.name}{reason}"
    if isinstance(exc, HandshakeError) and exc.__cause__ is not None:
        return f"{type(exc).__name__}: {exc.__cause__!r}"
    return repr(exc)

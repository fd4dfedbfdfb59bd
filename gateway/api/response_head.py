"""Patch 7 of `gateway.api.hypercorn_patches`: an HTTP/1.1 response's head and body in one write.

Hypercorn 0.18 sends a response's status line and headers as soon as the application starts
the response, then its body as a second write: two send calls, two trips through the
connection's send lock and two checkpoints for every small GraphQL answer (a profile of
`{ __typename }` over keep-alive put a sixth of the server's CPU in that send path). A response
that declares a non-zero Content-Length has its body coming right behind its head (Starlette's
`Response` sends both back to back), so here the head of such a response is held and written
together with the first body chunk. Whatever event comes next, the held head goes out first,
in order: the end of a body suppressed for HEAD or 304, the stream's close, anything else.

Responses without a Content-Length (streamed, chunked) and informational responses keep
hypercorn's path untouched: their head must not wait for a body that may be slow to come.
This module must never change a byte of what is sent, only how many writes carry it.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Final

import h11
from hypercorn.events import RawData
from hypercorn.protocol import h11 as h11_protocol
from hypercorn.protocol.events import Body, Response

__all__ = ["HYPERCORN_STREAM_SEND", "stream_send"]

# hypercorn's own method, as imported: what the replacement delegates to.
HYPERCORN_STREAM_SEND: Final = h11_protocol.H11Protocol.stream_send
# The attribute of an H11Protocol that holds a response head not yet written.
_HELD: Final = "gateway_held_head"


def _declares_a_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


def _encode(protocol: Any, event: h11.Response | h11.Data) -> bytes | None:
    """The bytes h11 makes of `event`, or None where hypercorn's own send drops it (a local
    protocol error after the peer's: the connection is failing already)."""
    try:
        return protocol.connection.send(event)  # type: ignore[no-any-return]
    except h11.LocalProtocolError:
        if protocol.connection.their_state != h11.ERROR:
            raise
        return None


async def stream_send(self: h11_protocol.H11Protocol, event: Any) -> None:
    """`H11Protocol.stream_send`, holding a Content-Length response's head for its body."""
    held: bytes | None = getattr(self, _HELD, None)
    if held is None:
        if (
            isinstance(event, Response)
            and event.status_code >= 200
            and _declares_a_body(event.headers)
        ):
            # The headers exactly as hypercorn's stream_send builds them.
            headers = list(chain(event.headers, self.config.response_headers("h11")))
            if self.keep_alive_requests >= self.config.keep_alive_max_requests:
                headers.append((b"connection", b"close"))
            head = _encode(self, h11.Response(headers=headers, status_code=event.status_code))
            if head:
                setattr(self, _HELD, head)
            return
        await HYPERCORN_STREAM_SEND(self, event)
        return
    setattr(self, _HELD, None)
    if isinstance(event, Body):
        body = _encode(self, h11.Data(data=event.data)) or b""
        await self.send(RawData(data=held + body))
        return
    await self.send(RawData(data=held))
    await HYPERCORN_STREAM_SEND(self, event)

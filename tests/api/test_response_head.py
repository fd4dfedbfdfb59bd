"""Patch 7 (gateway/api/response_head.py): a small HTTP/1.1 response leaves in one write, with
exactly the bytes hypercorn's two writes carried; other responses keep hypercorn's path."""

from __future__ import annotations

from typing import Any

import pytest
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol

from gateway.api import hypercorn_patches, response_head


class Context:
    event_class = staticmethod(lambda: None)


def protocol(method: bytes = b"GET") -> tuple[H11Protocol, list[bytes]]:
    """An H11Protocol that has read one request, and the writes it makes."""
    writes: list[bytes] = []

    async def send(event: Any) -> None:
        assert isinstance(event, RawData)
        writes.append(bytes(event.data))

    config = Config()
    config.include_date_header = False  # the same bytes, whichever second the test runs in
    proto = H11Protocol(None, config, Context(), None, None, False, None, None, send)  # type: ignore[arg-type]
    proto.connection.receive_data(method + b" /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    proto.connection.next_event()
    proto.connection.next_event()
    return proto, writes


async def respond(proto: H11Protocol, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await proto.stream_send(Response(stream_id=1, headers=headers, status_code=200))
    if body:
        await proto.stream_send(Body(stream_id=1, data=body))
    await proto.stream_send(EndBody(stream_id=1))


JSON = [(b"content-type", b"application/json"), (b"content-length", b"30")]
BODY = b'{"data":{"__typename":"Query"}}'[:30]


async def test_a_response_with_a_length_is_one_write_of_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hypercorn_patches.install()
    proto, writes = protocol()
    await respond(proto, JSON, BODY)
    assert len([w for w in writes if w]) == 1

    # hypercorn's own method, on a fresh protocol: two writes, the same bytes in the same order
    monkeypatch.setattr(H11Protocol, "stream_send", response_head.HYPERCORN_STREAM_SEND)
    theirs, their_writes = protocol()
    await respond(theirs, JSON, BODY)
    assert len([w for w in their_writes if w]) == 2
    assert b"".join(writes) == b"".join(their_writes)
    assert writes[0].endswith(b"\r\n\r\n" + BODY)


async def test_a_head_request_still_gets_its_head_when_the_body_is_suppressed() -> None:
    hypercorn_patches.install()
    proto, writes = protocol(b"HEAD")
    await respond(proto, JSON, b"")  # hypercorn suppresses a HEAD response's body
    sent = b"".join(writes)
    assert sent.startswith(b"HTTP/1.1 200 ") and b"content-length: 30" in sent.lower()
    assert sent.endswith(b"\r\n\r\n")


async def test_a_streamed_response_sends_its_head_at_once() -> None:
    hypercorn_patches.install()
    proto, writes = protocol()
    await proto.stream_send(
        Response(stream_id=1, headers=[(b"content-type", b"text/event-stream")], status_code=200)
    )
    assert writes and writes[0].startswith(b"HTTP/1.1 200 ")  # not held for a body

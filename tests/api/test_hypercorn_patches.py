"""gateway/api/hypercorn_patches.py: the patches are installed, once, on the hypercorn they were
written for, and anything else fails loudly, naming what to re-check."""

from __future__ import annotations

import pytest
from hypercorn.protocol.ws_stream import FrameTooLargeError, WebsocketBuffer
from hypercorn.trio.tcp_server import TCPServer
from wsproto.events import BytesMessage, TextMessage

from gateway.api import hypercorn_patches


def test_the_installed_hypercorn_passes_the_check_and_is_patched_once() -> None:
    hypercorn_patches.check()
    hypercorn_patches.install()  # done at import by gateway.api.ws and gateway.api.server
    assert hypercorn_patches.hypercorn_version().startswith(hypercorn_patches.WRITTEN_FOR + ".")
    assert TCPServer.protocol_send is hypercorn_patches.protocol_send
    assert WebsocketBuffer.extend is hypercorn_patches.buffer_extend
    assert TCPServer.run is hypercorn_patches.tcp_server_run
    assert TCPServer._read_data is hypercorn_patches.read_data
    hypercorn_patches.install()  # again: nothing changes, nothing wraps twice
    assert TCPServer.protocol_send is hypercorn_patches.protocol_send
    assert WebsocketBuffer.extend is hypercorn_patches.buffer_extend
    assert TCPServer.run is hypercorn_patches.tcp_server_run


def test_a_hypercorn_that_no_longer_serves_through_run_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Patch 3 is reached through `TCPServer.__await__` calling `self.run()`."""

    def __await__(self: TCPServer) -> object:
        return self.serve().__await__()  # type: ignore[attr-defined]

    monkeypatch.setattr(TCPServer, "__await__", __await__)
    with pytest.raises(RuntimeError, match=r"no longer serves through self\.run"):
        hypercorn_patches.check()


def test_another_hypercorn_version_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hypercorn_patches, "hypercorn_version", lambda: "0.19.1")
    expected = hypercorn_patches.WRITTEN_FOR
    with pytest.raises(RuntimeError) as raised:
        hypercorn_patches.install()
    message = str(raised.value)
    assert "hypercorn 0.19.1 is installed" in message
    assert f"written for hypercorn {expected}" in message
    assert "Re-check each patch" in message


def test_a_missing_patched_attribute_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(TCPServer, "protocol_send")
    with pytest.raises(RuntimeError, match=r"TCPServer\.protocol_send is missing"):
        hypercorn_patches.check()


def test_a_patched_method_of_another_shape_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def extend(self: WebsocketBuffer, event: object, final: bool) -> None: ...

    monkeypatch.setattr(WebsocketBuffer, "extend", extend)
    with pytest.raises(RuntimeError, match=r"WebsocketBuffer\.extend takes \(self, event, final\)"):
        hypercorn_patches.check()


def test_an_oversized_message_leaves_the_buffer_empty_for_the_next_one() -> None:
    buffer = WebsocketBuffer(max_length=4)
    with pytest.raises(FrameTooLargeError):
        buffer.extend(TextMessage(data="too long"))
    buffer.extend(BytesMessage(data=b"ok"))  # a binary message after a text one: no TypeError
    assert buffer.to_message()["bytes"] == b"ok"

"""gateway/api/hypercorn_patches.py: the patches are installed, once, on the hypercorn they were
written for, and anything else fails loudly, naming what to re-check; patch 5's keep-alive timer
does what hypercorn's did, with one task per connection."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.protocol.ws_stream import FrameTooLargeError, WebsocketBuffer
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import EventWrapper
from wsproto.events import BytesMessage, TextMessage

from gateway.api import hypercorn_patches
from gateway.api.keep_alive import IdleTimer


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


# -- patch 5: one keep-alive timer per connection ------------------------------------------------


class _Connection:
    """What an IdleTimer needs of hypercorn: the worker's `terminated` event, the connection's
    task group (its `_nursery`, as hypercorn's TaskGroup has it) and the close."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.terminated = EventWrapper()
        self._nursery = nursery
        self.spawned = 0
        self.closed_at: float | None = None

    def start_soon(self, fn: Any, *args: Any) -> None:
        self.spawned += 1
        self._nursery.start_soon(fn, *args)

    async def close(self) -> None:
        self.closed_at = trio.current_time()

    def timer(self, timeout: float = 10.0) -> tuple[IdleTimer, Any]:
        group = SimpleNamespace(_nursery=self)  # spawning goes through start_soon above
        return IdleTimer(timeout, self.terminated, self.close), group


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        conn = _Connection(nursery)
        timer, group = conn.timer()
        await timer.restart(group)  # hypercorn's call as the connection starts
        await trio.sleep(9.9)
        assert conn.closed_at is None
        await trio.sleep(0.2)
        assert conn.closed_at == pytest.approx(10.0)
        assert not timer.running


async def test_requests_move_the_deadline_of_one_task_and_are_never_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Hypercorn started a task per request; here 50 requests on one connection use one, and a
    request longer than the timeout is not cut (its parked timer ends; the next idle time
    starts another)."""
    async with trio.open_nursery() as nursery:
        conn = _Connection(nursery)
        timer, group = conn.timer()
        await timer.restart(group)
        for _ in range(50):
            await trio.sleep(5)  # idle, under the timeout
            timer.disarm()  # a request starts …
            await trio.sleep(1)
            timer.arm(group)  # … its response is out
        assert conn.spawned == 1 and conn.closed_at is None
        timer.disarm()
        await trio.sleep(60)  # a long request (or a WebSocket)
        assert conn.closed_at is None and not timer.running
        timer.arm(group)
        began = trio.current_time()
        await trio.sleep(11)
        assert conn.spawned == 2 and conn.closed_at == pytest.approx(began + 10)


async def test_a_terminating_server_closes_idle_connections_at_once_and_busy_ones_when_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        idle, busy = _Connection(nursery), _Connection(nursery)
        idle_timer, idle_group = idle.timer()
        busy_timer, busy_group = busy.timer()
        await idle_timer.restart(idle_group)
        await busy_timer.restart(busy_group)
        busy_timer.disarm()
        await trio.sleep(1)
        for conn in (idle, busy):
            await conn.terminated.set()
        await trio.sleep(0.01)
        assert idle.closed_at == pytest.approx(1.0)
        assert busy.closed_at is None
        await trio.sleep(2)
        busy_timer.arm(busy_group)  # its response is out: closed now, not after the timeout
        armed = trio.current_time()
        await trio.sleep(0.01)
        assert busy.closed_at == pytest.approx(armed)


async def test_stopping_the_timer_ends_its_task_without_closing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Patch 4 stops it when the read loop is over: the connection's task group can end."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            conn = _Connection(nursery)
            timer, group = conn.timer()
            await timer.restart(group)
            await trio.sleep(1)
            await timer.stop()
        assert conn.closed_at is None and not timer.running


def test_a_read_loop_patch_4_no_longer_matches_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch 4 repeats hypercorn's read loop (without its `fail_after(inf)`): a hypercorn whose
    loop reads otherwise must be re-read before the patch serves it."""

    async def _read_data(self: TCPServer) -> None:
        async for data in self.stream:  # type: ignore[attr-defined]
            await self.protocol.handle(data)

    monkeypatch.setattr(TCPServer, "_read_data", _read_data)
    with pytest.raises(RuntimeError, match=r"_read_data no longer uses MAX_RECV"):
        hypercorn_patches.check()


class _Stream:
    """A socket stream that gives `chunks`, then EOF (or, with `broken`, raises)."""

    def __init__(self, chunks: list[bytes], broken: bool = False) -> None:
        self.chunks = chunks
        self.broken = broken
        self.deadlines: list[float] = []

    async def receive_some(self, max_bytes: int) -> bytes:
        self.deadlines.append(trio.current_effective_deadline())
        await trio.lowlevel.checkpoint()
        if self.chunks:
            return self.chunks.pop(0)
        if self.broken:
            raise trio.BrokenResourceError("reset")
        return b""


def _reading_server(stream: _Stream, read_timeout: float | None) -> tuple[Any, list[Any]]:
    handled: list[Any] = []

    async def handle(event: Any) -> None:
        handled.append(event)

    async def stop() -> None:
        handled.append("timer stopped")

    server = SimpleNamespace(
        config=SimpleNamespace(read_timeout=read_timeout),
        stream=stream,
        protocol=SimpleNamespace(handle=handle),
        idle_task=SimpleNamespace(stop=stop),
    )
    return server, handled


@pytest.mark.parametrize("broken", [False, True])
async def test_without_a_read_timeout_the_loop_reads_to_the_end_then_closes(broken: bool) -> None:
    from hypercorn.events import Closed, RawData

    stream = _Stream([b"GET", b" / HTTP/1.1\r\n"], broken=broken)
    server, handled = _reading_server(stream, read_timeout=None)
    with trio.fail_after(5):
        outer = trio.current_effective_deadline()
        await hypercorn_patches.read_data(server)
    data = [event.data for event in handled if isinstance(event, RawData)]
    assert data == ([b"GET", b" / HTTP/1.1\r\n"] + ([] if broken else [b""]))
    assert isinstance(handled[-2], Closed) and handled[-1] == "timer stopped"
    assert set(stream.deadlines) == {outer}  # no deadline of its own on the reads


async def test_with_a_read_timeout_hypercorns_own_loop_bounds_each_read() -> None:
    stream = _Stream([b"GET"])
    server, handled = _reading_server(stream, read_timeout=1.0)
    with trio.fail_after(5):
        outer = trio.current_effective_deadline()
        await hypercorn_patches.read_data(server)
    assert stream.deadlines and all(deadline < outer for deadline in stream.deadlines)
    assert handled[-1] == "timer stopped"

"""gateway/api/ws/shutdown.py: setting the shutdown closes every watched connection (1001) at
once, a connection watched after it is closed at once, and a forgotten one is not held."""

from __future__ import annotations

import trio
import trio.testing

from gateway.api.ws import ShutdownSignal


class _Connection:
    def __init__(self) -> None:
        self.closes: list[tuple[int, str]] = []

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))


def test_setting_it_closes_every_watched_connection_once() -> None:
    shutdown = ShutdownSignal()
    first, second, gone = _Connection(), _Connection(), _Connection()
    for connection in (first, second, gone):
        shutdown.watch(connection)
    shutdown.forget(gone)
    assert len(shutdown) == 2 and not shutdown.is_set()
    shutdown.set()
    shutdown.set()  # again: nothing more
    assert shutdown.is_set()
    assert first.closes == second.closes == [(1001, "server shutting down")]
    assert gone.closes == []


def test_a_connection_watched_after_the_shutdown_is_closed_at_once() -> None:
    shutdown = ShutdownSignal()
    shutdown.set()
    late = _Connection()
    shutdown.watch(late)
    assert late.closes == [(1001, "server shutting down")]
    shutdown.forget(late)
    assert len(shutdown) == 0


async def test_it_is_awaited_like_a_trio_event() -> None:
    shutdown = ShutdownSignal()
    woken: list[bool] = []

    async def waiter() -> None:
        await shutdown.wait()
        woken.append(True)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            shutdown.set()
    assert woken == [True]

"""Request coalescing: identical concurrent requests share one upstream exchange.

The first caller of a key does the work; callers arriving while it is in flight wait for it
and get its result or its exception. The shared value must be treated as read-only. If the
caller doing the work is cancelled, a waiting caller takes over; nobody else sees the
cancellation.

What counts as "identical" is the caller's key (the upstream client uses
`UpstreamRequest.coalesce_key`: provider, method, URL, params, body, headers, parser).
Must never share a non-idempotent request (the caller decides), and never keep a finished
exchange: a flight is forgotten as soon as it ends, so nothing here is a cache.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

__all__ = ["Coalescer"]

T = TypeVar("T")


class _Flight:
    """One upstream exchange that several identical concurrent requests are waiting for."""

    __slots__ = ("abandoned", "done", "error", "result", "waiters")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: Exception | None = None
        self.abandoned = False
        self.waiters = 0


class Coalescer:
    """The exchanges in flight, by key; see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[tuple[Any, ...], _Flight] = {}

    async def run(
        self,
        key: tuple[Any, ...],
        work: Callable[[], Awaitable[T]],
        on_shared: Callable[[], None],
    ) -> T:
        """`await work()`, unless an identical call is in flight: then its result (or its
        exception), after calling `on_shared()` (synchronously; for counting)."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                break
            flight.waiters += 1
            await flight.done.wait()
            if flight.abandoned:
                continue  # the caller doing the work was cancelled: one of us takes over
            on_shared()
            if flight.error is not None:
                raise flight.error
            shared: T = flight.result
            return shared
        # Registered before the first checkpoint, so concurrent identical calls find it.
        flight = self._flights[key] = _Flight()
        try:
            result = flight.result = await work()
            return result
        except Exception as exc:
            flight.error = exc
            raise
        except BaseException:
            flight.abandoned = True
            raise
        finally:
            del self._flights[key]
            flight.done.set()

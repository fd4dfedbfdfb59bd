"""Every running live stream, asked together: is anyone streaming this symbol?

`StreamGroup` is what the REST fallback, health and metrics read: `is_live(symbol)` is False
exactly when no stream serves the symbol, and `down_symbols` names what a REST collector should
poll instead.

Must never connect, subscribe or publish: it only reads the clients' state and wakes waiters
when it changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from trio.lowlevel import ParkingLot

from gateway.sources.stream_state import StreamStatus
from gateway.sources.streams import StreamClient
from gateway.symbols import normalize_symbol

__all__ = ["StreamGroup"]


class StreamGroup:
    """Every running stream, asked together: is anyone streaming this symbol?

    One client per provider: `put` replaces the previous client of the same provider (the
    supervisor makes a fresh client on every restart).
    """

    def __init__(self, clients: Iterable[StreamClient] = ()) -> None:
        self._clients: dict[str, StreamClient] = {}
        self._changed = ParkingLot()
        for client in clients:
            self.put(client)

    @property
    def clients(self) -> list[StreamClient]:
        return list(self._clients.values())

    def put(self, client: StreamClient) -> None:
        old = self._clients.get(client.provider_id)
        if old is not None:
            old.listeners.remove(self._on_change)
        self._clients[client.provider_id] = client
        client.listeners.append(self._on_change)
        self._on_change()

    def _on_change(self) -> None:
        self._changed.unpark_all()

    async def wait_changed(self) -> None:
        """Return at the next change of any stream's connection or liveness."""
        await self._changed.park()

    def is_live(self, symbol: str) -> bool:
        """True if at least one stream delivers `symbol` now."""
        return any(client.is_live(symbol) for client in self._clients.values())

    def live_providers(self, symbol: str) -> list[str]:
        return [c.provider_id for c in self._clients.values() if c.is_live(symbol)]

    def down_symbols(self, symbols: Iterable[str]) -> list[str]:
        """The symbols no stream delivers now: what a REST fallback should poll."""
        return [s for s in map(normalize_symbol, symbols) if not self.is_live(s)]

    def statuses(self) -> list[StreamStatus]:
        return [client.status() for client in self.clients]

"""How many connections each client holds, for the per-client caps of HTTP and WebSockets.

A client (an address bucket, or an API key) is remembered only while it holds something: its
entry goes at zero, so the table is bounded by the connections open, not by every client ever
seen. Used by `gateway.api.connections` (HTTP, at accept) and `gateway.api.ws.admission`.

Must never count below zero or keep an entry at zero.
"""

from __future__ import annotations

__all__ = ["ClientCounts"]


class ClientCounts:
    """A count per client; `add` and `remove` return the client's count after the change."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def held_by(self, client: str) -> int:
        return self._counts.get(client, 0)

    def add(self, client: str) -> int:
        count = self._counts.get(client, 0) + 1
        self._counts[client] = count
        return count

    def remove(self, client: str) -> int:
        count = self._counts.get(client, 0) - 1
        if count > 0:
            self._counts[client] = count
            return count
        self._counts.pop(client, None)
        return 0

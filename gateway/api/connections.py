"""Who may hold a connection to the gateway at all: every client connection is held to a cap
per client and a cap in total the moment hypercorn accepts it, before a byte of it is read
(patch 3 of gateway.api.hypercorn_patches asks `ConnectionCaps.admit`).

WebSockets had their caps (gateway.api.ws.admission); plain HTTP connections had none, so 300
slow request bodies from 40 addresses used up a descriptor limit of 320: /readyz timed out and
trio's accept loop logged `accept returned EMFILE` thousands of times (bench/soak.py). Now:

    per client  the connections of one address (its /64 for IPv6, as anonymous limits count)
                that are not WebSockets: at most `http_max_connections_per_client`. A socket
                leaves this count once admitted as a WebSocket (`upgraded`): its tier's
                `connections` caps it from then on. A trusted proxy's connections are not
                counted per client: every client behind it shares its address.
    in total    every client connection, WebSockets included, as each costs a descriptor:
                `http_connection_cap` (gateway.api.ws.descriptors). Past it, an address that
                holds no counted connection still gets one, up to `fresh_allowance` more, so a
                health probe gets through a flood from addresses that hold connections already.

A connection over a cap is closed at once, before its request is read; it is counted in
`HttpStats.connections_refused` (gateway_http_connections_refused_total{limit="total"|"client"})
and logged once per episode, not once per connection: the total's episode ends when a tenth of
the cap is free again (a flood keeps it full, one place at a time: 800 lines a minute without
that), a client's when it holds no connection.

Must never: do I/O, count a refused connection, release one twice, or keep an entry for an
address with no connection counted (memory stays bounded by the open connections).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import structlog

from gateway.api.auth import address_bucket
from gateway.api.client_counts import ClientCounts
from gateway.api.metrics import HttpStats

__all__ = ["ConnectionCaps", "Ticket"]

log = structlog.get_logger(__name__)

Peer = tuple[str, int]

_NO_CAP: Final = 0  # http_max_connections_per_client: no cap per client


class Ticket:
    """One admitted connection's place in the counts, until released."""

    __slots__ = ("client", "peer", "released")

    def __init__(self, client: str | None, peer: Peer | None) -> None:
        self.client = client  # counted per client under this bucket; None: in the total only
        self.peer = peer
        self.released = False


class ConnectionCaps:
    """Open client connections, per client and in total, held to their caps."""

    def __init__(
        self,
        *,
        total: int,
        per_client: int,
        fresh: int,
        trusted_proxy: Callable[[str], bool],
        stats: HttpStats,
    ) -> None:
        self.total = max(1, total)
        self.per_client = per_client  # 0: no cap
        self.fresh = max(0, fresh)
        self._trusted_proxy = trusted_proxy
        self._stats = stats
        self._open = 0
        self._per_client = ClientCounts()
        self._by_peer: dict[Peer, Ticket] = {}
        self._at_cap = False
        self._clear_below = self.total - max(1, self.total // 10)
        self._clients_at_cap: set[str] = set()
        stats.connection_limit = self.total

    @property
    def open(self) -> int:
        return self._open

    def held_by(self, address: str) -> int:
        """Connections counted for the client at `address` (its bucket)."""
        return self._per_client.held_by(address_bucket(address))

    def admit(self, peer: Peer | None) -> Ticket | None:
        """A place for a connection just accepted from `peer` (host, port; None when the
        socket cannot tell), or None when it must be closed at once (counted)."""
        client = None
        if peer is not None and not self._trusted_proxy(peer[0]):
            client = address_bucket(peer[0])
        held = self._per_client.held_by(client) if client is not None else 0
        if client is not None and self.per_client != _NO_CAP and held >= self.per_client:
            if client not in self._clients_at_cap:  # once per episode, not per connection
                self._clients_at_cap.add(client)
                log.warning("http.client_connection_cap_reached", client=client, cap=held)
            self._refuse("client")
            return None
        if self._open >= self.total and not (
            client is not None and held == 0 and self._open < self.total + self.fresh
        ):
            if not self._at_cap:
                self._at_cap = True
                log.warning("http.connection_cap_reached", total=self.total, fresh=self.fresh)
            self._refuse("total")
            return None
        ticket = Ticket(client, peer)
        self._open += 1
        self._stats.connections = self._open
        if client is not None:
            self._per_client.add(client)
        if peer is not None:
            self._by_peer[peer] = ticket
        return ticket

    def upgraded(self, peer: Peer | None) -> None:
        """The connection from `peer` (an ASGI scope's "client") was admitted as a WebSocket:
        it leaves its client's count (it stays in the total)."""
        if not peer:
            return
        ticket = self._by_peer.get((str(peer[0]), int(peer[1])))
        if ticket is not None and not ticket.released and ticket.client is not None:
            self._unclaim(ticket.client)
            ticket.client = None

    def release(self, ticket: Ticket) -> None:
        """The connection is gone: free its place (once)."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.client is not None:
            self._unclaim(ticket.client)
        if ticket.peer is not None and self._by_peer.get(ticket.peer) is ticket:
            del self._by_peer[ticket.peer]
        self._open -= 1
        self._stats.connections = self._open
        if self._at_cap and self._open <= self._clear_below:
            self._at_cap = False
            log.info("http.connection_cap_cleared", total=self.total, open=self._open)

    def _unclaim(self, client: str) -> None:
        if self._per_client.remove(client) == 0:
            self._clients_at_cap.discard(client)

    def _refuse(self, label: str) -> None:
        self._stats.connections_refused[label] += 1

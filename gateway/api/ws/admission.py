"""Who may hold a WebSocket open: the total and per-client connection caps, and the request
budget a handshake spends.

`Admission` is asked at every handshake (`at_handshake`, before any connection state exists)
and once more at connection_init (`at_init`, when a key has named its caller). In order:

    total open sockets   `total` (Settings.ws_max_connections, or the descriptor limit less
                         Settings.fd_reserve: descriptors.py)       over: close 1013
    the client's sockets its tier's `connections` (TierLimits)      over: close 4429
    the client's budget  one request per handshake, against the
                         tier's per-minute and per-day limits       over: close 4429

A refused socket is accepted and closed at once with that code and a reason saying which
limit (4429 is what graphql-ws clients read as "too many"; 1013 "Try Again Later" is the
standard code for an overloaded server, which they retry with backoff), so it costs the
handshake and nothing more: no connection, no task, no timer. Each refusal is counted in
`WebSocketStats.refused` (gateway_ws_connections_refused_total).

The client of a handshake is its address (`HttpPolicy.client_address`, bucketed as anonymous
limits are: its /64 for IPv6) at the free tier, since nothing else is known yet. When
connection_init authenticates a key, the socket moves to the key's count and is held to the
key's tier (and the init is one request of the key); an anonymous init costs nothing more, its
handshake was its request. So an address's cap bounds its sockets that are anonymous or not yet
initialised (those last at most `ws_init_timeout`).

Must never: let a socket that was refused hold a slot, release a slot twice, keep an entry for
a client with no open socket (memory stays bounded by the total cap), or do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import structlog

from gateway.api.auth import AccessControl, Principal, RateLimited
from gateway.api.client_counts import ClientCounts
from gateway.api.ws.options import WebSocketStats

__all__ = [
    "CLOSE_TOO_MANY",
    "CLOSE_TRY_AGAIN_LATER",
    "Admission",
    "Refusal",
    "Slot",
]

log = structlog.get_logger(__name__)

CLOSE_TOO_MANY: Final = 4429  # this client: too many sockets, or over its request budget
CLOSE_TRY_AGAIN_LATER: Final = 1013  # the server: at its total connection cap


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a socket may not stay: its close code and reason, and the metrics label."""

    code: int
    reason: str
    label: str  # "total" | "client" | "rate"


class Slot:
    """One admitted socket's place in the counts: whose it is now, until released."""

    __slots__ = ("client", "released")

    def __init__(self, client: str) -> None:
        self.client = client
        self.released = False


def _rate_refusal(limited: RateLimited) -> Refusal:
    retry = limited.retry_after_seconds
    # A close reason is at most 123 bytes: the message of a RateLimited is well inside it.
    suffix = f"; retry in {retry} s" if retry is not None else ""
    return Refusal(CLOSE_TOO_MANY, f"rate limited: {limited}{suffix}", "rate")


class Admission:
    """Open WebSockets, in total and per client, held to their caps."""

    def __init__(self, total: int, stats: WebSocketStats, access: AccessControl | None) -> None:
        self.total = max(1, total)
        self._stats = stats
        self._access = access
        self._open = 0
        self._per_client = ClientCounts()
        self._at_cap = False
        stats.max_connections = self.total

    @property
    def open(self) -> int:
        return self._open

    def held_by(self, client: str) -> int:
        """Sockets open for `client` ("ip:<address>" or "key:<id>")."""
        return self._per_client.held_by(client)

    def at_handshake(self, address: str) -> Slot | Refusal:
        """A slot for a new socket from `address`, or why not (counted)."""
        if self._open >= self.total:
            if not self._at_cap:  # once per episode, not once per refused socket
                self._at_cap = True
                log.warning("ws.connection_cap_reached", total=self.total)
            return self._refuse(
                Refusal(CLOSE_TRY_AGAIN_LATER, "server at its connection limit: try later", "total")
            )
        access = self._access
        client = f"ip:{address}"
        if access is not None:  # without access control (unit tests): the total cap only
            principal = access.anonymous(address)
            client = principal.client
            refusal = self._over_client_cap(client, principal)
            if refusal is not None:
                return self._refuse(refusal)
            try:
                access.admit(principal)
            except RateLimited as limited:
                return self._refuse(_rate_refusal(limited))
        self._open += 1
        self._claim(client)
        return Slot(client)

    def at_init(self, slot: Slot, principal: Principal) -> Refusal | None:
        """Move an initialised socket to its key's count (a key's init is one request of the
        key); None when it may stay. Anonymous sockets stay where the handshake put them."""
        if principal.anonymous or slot.released or slot.client == principal.client:
            return None
        if self._access is not None:
            try:
                self._access.admit(principal)
            except RateLimited as limited:
                return self._refuse(_rate_refusal(limited))
        refusal = self._over_client_cap(principal.client, principal)
        if refusal is not None:
            return self._refuse(refusal)
        self._unclaim(slot.client)
        slot.client = principal.client
        self._claim(slot.client)
        return None

    def release(self, slot: Slot) -> None:
        """The socket is gone: free its slot (once)."""
        if slot.released:
            return
        slot.released = True
        self._unclaim(slot.client)
        self._open -= 1
        if self._at_cap and self._open < self.total:
            self._at_cap = False
            log.info("ws.connection_cap_cleared", total=self.total, open=self._open)

    # -- counts -------------------------------------------------------------------------------

    def _over_client_cap(self, client: str, principal: Principal) -> Refusal | None:
        maximum = principal.limits.connections
        if maximum is None or self.held_by(client) < maximum:
            return None
        who = "this address" if principal.anonymous else "this API key"
        return Refusal(
            CLOSE_TOO_MANY,
            f"too many connections: the {principal.tier} tier allows {maximum} open at once"
            f" from {who}",
            "client",
        )

    def _refuse(self, refusal: Refusal) -> Refusal:
        self._stats.refused[refusal.label] += 1
        return refusal

    def _claim(self, client: str) -> None:
        self._per_client.add(client)

    def _unclaim(self, client: str) -> None:
        self._per_client.remove(client)

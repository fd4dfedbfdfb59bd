"""The front door of one gateway: `AccessControl` authenticates, meters and revokes.

It turns a presented credential (credentials.py) into a `Principal` (principal.py) by checking
it against the key store, or, while `anonymous_access` is "read", makes an anonymous one
counted by its client address; it counts requests and subscriptions with a `UsageMeter`
(metering.py) and keeps the WebSockets open per key, so a revoked key's can be closed.

Revocation: HTTP requests and WebSocket operations of a key check the database first, so a
revoked key fails its next request even when another process (the `gateway keys` CLI) revoked
it; `AccessControl.run` polls every `auth_revocation_poll` seconds for revoked keys among those
holding WebSockets open and closes those with 4403 (`CLOSE_FORBIDDEN`). It also restores
today's counts of keys at start and saves them every `auth_usage_flush` seconds.

Must never: keep or log a presented key (a verified key is known by its id from then on), let
a refused request change anything, or let storage trouble end `run`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from typing import Final, Protocol

import structlog
import trio

from gateway.api.auth.metering import UsageMeter, utc_day
from gateway.api.auth.principal import Principal, TierLimits
from gateway.config import SECONDS, Settings
from gateway.errors import ConfigError, StorageError, Unauthenticated
from gateway.models import utc_now
from gateway.storage import KeyRecord, KeyStore, Storage
from gateway.vocabulary import TIER_NAMES

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_UNAUTHORIZED", "AccessControl", "Closeable", "address_bucket"]

log = structlog.get_logger(__name__)

# Close codes (gateway.api.ws): no key where one is required / a key that is bad or was revoked.
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403


def address_bucket(address: str) -> str:
    """What anonymous limits count: the address, or its /64 for IPv6 (one host's usual share);
    the connection caps (gateway.api.connections) count by it too."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Closeable(Protocol):
    """A live connection that can be told to close (gateway.api.ws connections)."""

    def close(self, code: int, reason: str) -> None: ...


class AccessControl:
    """Authentication, limits and revocation for one gateway.

    Start `run` in a nursery (the app does, in its ASGI lifespan) to restore today's counts,
    save them periodically and close the WebSockets of revoked keys.
    """

    def __init__(self, settings: Settings, storage: Storage) -> None:
        if settings.anonymous_access not in {"read", "off"}:
            raise ConfigError(
                f"anonymous_access must be read or off, got {settings.anonymous_access!r}"
            )
        self.settings = settings
        self.keys = KeyStore(storage)
        self.meter = UsageMeter(max_anonymous=settings.auth_max_anonymous_clients)
        self.limits = {tier: TierLimits.from_settings(settings, tier) for tier in TIER_NAMES}
        self._connections: dict[int, set[Closeable]] = {}
        self._touched: dict[int, float] = {}  # key id → trio time of the last last_used write
        # Refused authentications by reason (missing_key, invalid_key), for /metrics.
        self.refusals: Counter[str] = Counter()

    # -- who ----------------------------------------------------------------------------------

    def anonymous(self, client_address: str) -> Principal:
        return Principal(
            client=f"ip:{address_bucket(client_address)}",
            role="viewer",
            limits=self.limits["free"],
            admin=self.settings.allow_admin_mutations,
        )

    def principal_for(self, record: KeyRecord) -> Principal:
        return Principal(
            client=f"key:{record.id}",
            role=record.role,
            limits=self.limits.get(record.tier, self.limits["free"]),
            admin=record.role == "admin" or self.settings.allow_admin_mutations,
            key_id=record.id,
            key_name=record.name,
        )

    async def authenticate(self, credential: str | None, client_address: str) -> Principal:
        """The principal for a request's credential (None: none was sent).

        Raises Unauthenticated for a bad, unknown or revoked key, and for no key while
        anonymous access is off.
        """
        if credential is None:
            if self.settings.anonymous_access == "off":
                self.refusals["missing_key"] += 1
                raise Unauthenticated(
                    "an API key is required: send Authorization: Bearer <key>", presented=False
                )
            return self.anonymous(client_address)
        record = await self.keys.verify(credential) if credential else None
        if record is None:
            self.refusals["invalid_key"] += 1
            raise Unauthenticated("the API key is not valid (unknown or revoked)", presented=True)
        self._touch(record.id)
        return self.principal_for(record)

    async def still_valid(self, principal: Principal) -> bool:
        """For a key: whether it is still live (one indexed read). Anonymous: always."""
        if principal.key_id is None:
            return True
        live = await self.keys.is_live(principal.key_id)
        if live:
            self._touch(principal.key_id)
        return live

    def _touch(self, key_id: int) -> None:
        now = trio.current_time()
        last = self._touched.get(key_id)
        if last is None or now - last >= self.settings.auth_last_used_interval:
            self._touched[key_id] = now
            self.keys.touch(key_id, utc_now())

    # -- how much -----------------------------------------------------------------------------

    def admit(self, principal: Principal) -> None:
        """Count a request against the principal's limits; raises RateLimited when over."""
        self.meter.admit(principal)

    def open_subscription(self, principal: Principal) -> None:
        self.meter.open_subscription(principal)

    def close_subscription(self, principal: Principal) -> None:
        self.meter.close_subscription(principal)

    # -- live connections and revocation ------------------------------------------------------

    def register(self, principal: Principal, connection: Closeable) -> None:
        if principal.key_id is not None:
            self._connections.setdefault(principal.key_id, set()).add(connection)

    def unregister(self, principal: Principal, connection: Closeable) -> None:
        if principal.key_id is None:
            return
        connections = self._connections.get(principal.key_id)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._connections[principal.key_id]

    def connection_count(self, key_id: int) -> int:
        return len(self._connections.get(key_id, ()))

    def _close_revoked(self, key_ids: Iterable[int]) -> None:
        for key_id in key_ids:
            for connection in self._connections.pop(key_id, set()):
                connection.close(CLOSE_FORBIDDEN, "API key revoked")
            log.info("auth.key_revoked_connections_closed", key_id=key_id)

    async def revoke(self, key_id: int) -> KeyRecord | None:
        """Revoke a key now, and close its WebSockets at once (in-process revocation)."""
        record = await self.keys.revoke(key_id)
        if record is not None:
            self._close_revoked([key_id])
        return record

    async def poll_revocations(self) -> None:
        """Close the WebSockets of keys revoked since (by anyone, any process)."""
        if not self._connections:
            return
        revoked = await self.keys.revoked_among(list(self._connections))
        self._close_revoked(revoked)

    async def save_usage(self) -> None:
        rows = self.meter.unsaved()
        if rows:
            await self.keys.save_usage(rows)
            self.meter.mark_saved(rows)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore today's counts, then poll revocations and save usage until cancelled.

        Storage trouble is logged and retried on the next tick; it never ends this task. On
        cancellation the counts are saved once more (bounded, shielded).
        """
        day = utc_day()
        try:
            self.meter.restore(day, await self.keys.usage_on(day))
        except StorageError as exc:
            log.warning("auth.usage_restore_failed", error=str(exc))
        task_status.started()
        next_save = trio.current_time() + self.settings.auth_usage_flush
        try:
            while True:
                await trio.sleep(self.settings.auth_revocation_poll)
                try:
                    await self.poll_revocations()
                    if trio.current_time() >= next_save:
                        next_save = trio.current_time() + self.settings.auth_usage_flush
                        await self.save_usage()
                except StorageError as exc:
                    log.warning("auth.poll_failed", error=str(exc))
                except Exception as exc:  # a bug here must not stop revocations for good
                    log.error("auth.poll_crashed", error=repr(exc), exc_info=exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2 * SECONDS):
                try:
                    await self.save_usage()
                except StorageError as exc:
                    log.warning("auth.usage_save_failed", error=str(exc))

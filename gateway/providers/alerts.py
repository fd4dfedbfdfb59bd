"""Alerts: something an operator should look at, stored, published and de-duplicated.

Raised by the health checker (a provider went OFFLINE or came back), the rate limiter (a
window crossed 80 %) and pools (every member failed). An alert of the same kind for the same
provider is not raised again while an earlier one is unacknowledged and younger than
`repeat_after`, so a flapping provider cannot flood the table or the subscribers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from gateway.models import AlertRecord, utc_now
from gateway.pubsub import EventBus
from gateway.storage import ProviderStore

__all__ = ["SEVERITIES", "AlertCenter"]

log = structlog.get_logger(__name__)

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


class AlertCenter:
    """Creates alerts (persisted, then published on `bus.alerts`)."""

    def __init__(
        self, store: ProviderStore, bus: EventBus, repeat_after: timedelta = timedelta(minutes=30)
    ) -> None:
        self._store = store
        self._bus = bus
        self._repeat_after = repeat_after
        self._last: dict[tuple[str, str | None], datetime] = {}

    async def raise_alert(
        self, severity: str, kind: str, message: str, provider: str | None = None
    ) -> AlertRecord | None:
        """Store and publish an alert; None when an identical recent one is still open."""
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        now = utc_now()
        key = (kind, provider)
        previous = self._last.get(key)
        if previous is not None and now - previous < self._repeat_after:
            return None
        self._last[key] = now
        alert = await self._store.create_alert(severity, kind, message, provider, now)
        log.warning("alert", severity=severity, kind=kind, provider=provider, message=message)
        self._bus.alerts.publish(alert)
        return alert

    async def acknowledge(self, alert_id: int) -> AlertRecord | None:
        alert = await self._store.acknowledge_alert(alert_id)
        if alert is not None:
            self._last.pop((alert.kind, alert.provider), None)
        return alert

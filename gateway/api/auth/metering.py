"""Usage counting: requests per minute and per UTC day, and open subscriptions, per client.

`UsageMeter` counts in memory, per key, or per client address for anonymous clients, against
the principal's `TierLimits` (principal.py). A request is an HTTP GraphQL request, a
WebSocket handshake (of its client address), a key's connection_init, or a WebSocket operation
(subscription events are not requests; gateway.api.ws.admission counts the first two); a
refused request is not counted against the limits, only as refused. Keys' daily counts outlive
a restart: `AccessControl.run` (control.py) restores them at start and saves what `unsaved`
lists, then calls `mark_saved`.

Must never: let the number of tracked anonymous clients grow without bound, or do I/O itself
(no storage, no network: saving is control.py's).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import trio

from gateway.api.auth.principal import Principal
from gateway.config import SECONDS
from gateway.errors import RateLimited
from gateway.models import utc_now

__all__ = ["UsageMeter", "UsageSnapshot", "utc_day"]

# Memory bound for unlimited tiers: the "last minute" count shown for them stops here.
_UNLIMITED_WINDOW: Final = 10_000
_MINUTE: Final = 60 * SECONDS


def utc_day() -> str:
    """Today's UTC date, as daily counts are kept and saved ("2024-05-31")."""
    return utc_now().date().isoformat()


def _seconds_to_midnight() -> float:
    now = utc_now()
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (tomorrow - now).total_seconds()


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """One client's usage as counted now."""

    requests_today: int
    requests_last_minute: int
    refused_today: int
    subscriptions: int


class _Usage:
    __slots__ = ("day", "minute", "refused", "saved", "subscriptions", "today")

    def __init__(self, day: str, per_minute: int | None) -> None:
        # trio-clock times of the requests admitted in the last minute, oldest first
        self.minute: deque[float] = deque(maxlen=per_minute or _UNLIMITED_WINDOW)
        self.day = day
        self.today = 0
        self.refused = 0
        self.saved = 0  # `today` as last saved (keys only)
        self.subscriptions = 0

    def roll(self, day: str) -> None:
        if day != self.day:
            self.day = day
            self.today = self.refused = self.saved = 0


class UsageMeter:
    """Request and subscription counters per client, in memory.

    Keys are tracked for as long as the process runs (there are few); anonymous clients in an
    LRU of at most `max_anonymous`, so a flood of addresses costs bounded memory (a forgotten
    client starts afresh, which only ever errs in its favour).
    """

    def __init__(self, *, max_anonymous: int = 10_000) -> None:
        self._max_anonymous = max(1, max_anonymous)
        self._keys: dict[str, _Usage] = {}
        self._anonymous: OrderedDict[str, _Usage] = OrderedDict()

    def _usage(self, principal: Principal, day: str) -> _Usage:
        client = principal.client
        if principal.anonymous:
            usage = self._anonymous.get(client)
            if usage is None:
                usage = self._anonymous[client] = _Usage(day, principal.limits.per_minute)
                if len(self._anonymous) > self._max_anonymous:
                    self._anonymous.popitem(last=False)
            else:
                self._anonymous.move_to_end(client)
        else:
            usage = self._keys.get(client)
            if usage is None:
                usage = self._keys[client] = _Usage(day, principal.limits.per_minute)
        usage.roll(day)
        return usage

    def admit(self, principal: Principal) -> None:
        """Count one request, or raise RateLimited (counting it as refused) when over a limit."""
        limits = principal.limits
        usage = self._usage(principal, utc_day())
        now = trio.current_time()
        minute = usage.minute
        while minute and minute[0] <= now - _MINUTE:
            minute.popleft()
        if limits.per_minute is not None and len(minute) >= limits.per_minute:
            usage.refused += 1
            raise RateLimited(
                f"the {limits.tier} tier allows {limits.per_minute} requests per minute",
                limit="perMinute",
                maximum=limits.per_minute,
                tier=limits.tier,
                retry_after=minute[0] + _MINUTE - now,
            )
        if limits.per_day is not None and usage.today >= limits.per_day:
            usage.refused += 1
            raise RateLimited(
                f"the {limits.tier} tier allows {limits.per_day} requests per day (UTC)",
                limit="perDay",
                maximum=limits.per_day,
                tier=limits.tier,
                retry_after=_seconds_to_midnight(),
            )
        minute.append(now)
        usage.today += 1

    def open_subscription(self, principal: Principal) -> None:
        """Count one more open subscription, or raise RateLimited when the tier's are all open."""
        maximum = principal.limits.subscriptions
        usage = self._usage(principal, utc_day())
        if maximum is not None and usage.subscriptions >= maximum:
            raise RateLimited(
                f"the {principal.tier} tier allows {maximum} subscriptions open at once:"
                " complete one before starting another",
                limit="subscriptions",
                maximum=maximum,
                tier=principal.tier,
                retry_after=None,
            )
        usage.subscriptions += 1

    def close_subscription(self, principal: Principal) -> None:
        table = self._anonymous if principal.anonymous else self._keys
        usage = table.get(principal.client)
        if usage is not None and usage.subscriptions > 0:
            usage.subscriptions -= 1

    def snapshot(self, client: str) -> UsageSnapshot:
        usage = self._keys.get(client) or self._anonymous.get(client)
        if usage is None:
            return UsageSnapshot(0, 0, 0, 0)
        usage.roll(utc_day())
        now = trio.current_time()
        last_minute = sum(1 for t in usage.minute if t > now - _MINUTE)
        return UsageSnapshot(usage.today, last_minute, usage.refused, usage.subscriptions)

    @property
    def anonymous_clients(self) -> int:
        return len(self._anonymous)

    def restore(self, day: str, counts: Mapping[int, int]) -> None:
        """Start keys' daily counts from what was saved earlier today (after a restart)."""
        for key_id, count in counts.items():
            usage = self._keys.setdefault(f"key:{key_id}", _Usage(day, None))
            usage.roll(day)
            usage.today = max(usage.today, count)
            usage.saved = usage.today

    def unsaved(self) -> list[tuple[int, str, int]]:
        """(key id, day, requests) of the keys counted since they were last saved."""
        return [
            (int(client.removeprefix("key:")), usage.day, usage.today)
            for client, usage in self._keys.items()
            if usage.today != usage.saved
        ]

    def mark_saved(self, rows: Iterable[tuple[int, str, int]]) -> None:
        for key_id, day, count in rows:
            usage = self._keys.get(f"key:{key_id}")
            if usage is not None and usage.day == day:
                usage.saved = max(usage.saved, count)

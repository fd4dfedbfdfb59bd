"""Who makes a request: the `Principal`, the `TierLimits` of its tier, and the running caller.

Every HTTP request and every WebSocket connection is made by a `Principal`: the holder of an API
key (its role and tier are the key's) or, while `anonymous_access` is "read", an anonymous
client (viewer role, free tier) counted by its IP address (its /64 for IPv6, which one host
usually holds whole).

Limits of a tier (`TierLimits`, from Settings; None is unlimited), counted per key, or per
client address for anonymous clients, in memory (`UsageMeter`, metering.py; the per-request
checks are in access.py):

    requests per minute   sliding window     over: RATE_LIMITED, retryAfter (HTTP 429)
    requests per UTC day  calendar counter   over: RATE_LIMITED, retryAfter to midnight UTC
    symbols per request   `check_symbols`    over: BAD_USER_INPUT with limit/maximum/tier
    days of history       `check_history`    over: BAD_USER_INPUT with limit/maximum/tier
    open subscriptions    `UsageMeter`       over: RATE_LIMITED for that subscribe only
    open WebSockets       gateway.api.ws     over: the socket is closed 4429 at once
                          (admission.py)     (per address until connection_init names a key)

Resolvers learn the caller's tier through a context variable set by the transport for its task
(`use_principal`): shared subscription groups run in the hub's tasks, which inherit it from the
client that started them, and gateway.api.ws keeps groups of different tiers apart.

Must never: hold a presented key (a principal names its key by id and name only), or let one
request's caller become another request's.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.vocabulary import TIER_NAMES

__all__ = ["Principal", "TierLimits", "current_principal", "use_principal"]


@dataclass(frozen=True, slots=True)
class TierLimits:
    """What one tier allows; None means unlimited."""

    tier: str
    per_minute: int | None
    per_day: int | None
    symbols: int | None
    history_days: int | None
    subscriptions: int | None
    connections: int | None = None  # WebSockets open at once (gateway.api.ws.admission)

    @classmethod
    def from_settings(cls, settings: Settings, tier: str) -> TierLimits:
        if tier not in TIER_NAMES:
            raise ConfigError(f"unknown tier {tier!r} (one of {', '.join(TIER_NAMES)})")

        def get(limit: str) -> int | None:
            value = int(getattr(settings, f"tier_{tier}_{limit}"))
            if value < 0:
                raise ConfigError(f"tier_{tier}_{limit} must be 0 (unlimited) or more")
            return value or None

        return cls(
            tier=tier,
            per_minute=get("per_minute"),
            per_day=get("per_day"),
            symbols=get("symbols"),
            history_days=get("history_days"),
            subscriptions=get("subscriptions"),
            connections=get("connections"),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: a key holder or an anonymous client.

    `client` names the usage bucket ("key:<id>" or "ip:<address>"); `admin` says whether admin
    operations are allowed (the key's role, or allow_admin_mutations).
    """

    client: str
    role: str
    limits: TierLimits
    admin: bool
    key_id: int | None = None
    key_name: str | None = None

    @property
    def tier(self) -> str:
        return self.limits.tier

    @property
    def anonymous(self) -> bool:
        return self.key_id is None


_current: ContextVar[Principal | None] = ContextVar("gateway_principal", default=None)


def use_principal(principal: Principal | None) -> None:
    """Make `principal` the caller for this task (and the tasks it starts from now on).

    Trio tasks copy their parent's context when spawned, so setting it in a request's own task
    never leaks into another request.
    """
    _current.set(principal)


def current_principal() -> Principal | None:
    """The caller of the running request; None inside the gateway's own work (no limits)."""
    return _current.get()

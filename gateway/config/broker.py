"""Settings of the Redis broker that lets several replicas serve one gateway (README: "Running
several replicas").

Without a broker (the default) the gateway is one process: its event bus is in memory and it
runs every collector itself. With `GATEWAY_BROKER=redis://…` (or `gateway serve --broker`) live
events travel through Redis Streams, one replica at a time holds the collector lease, and the
upstream rate limits are shared (gateway/broker/).

Must never: connect to anything (this is only the typed, checked configuration), or hold a
default outside `BrokerSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from gateway.config.units import SECONDS
from gateway.errors import ConfigError

__all__ = ["BrokerSettings", "broker_from_env", "redacted_url"]

SCHEMES: Final = ("redis", "rediss")


@dataclass(frozen=True)
class BrokerSettings:
    """Where Redis is and how the replicas use it. Attribute values are the defaults."""

    url: str
    # Each topic's stream keeps about this many events (XADD MAXLEN ~): the window a client can
    # reconnect within and still be replayed from the stream (older ticks come from the store).
    # At 20 ticks/s, 100,000 is well over an hour. GATEWAY_BROKER_RETENTION.
    retention: int = 100_000
    # The collector lease (GATEWAY_LEADER_LEASE, seconds): a dead or cut-off leader is replaced
    # after at most this long (plus one acquisition poll, a fifth of it). It is renewed every
    # third of it, so two lost renewals in a row are survived.
    lease: float = 5 * SECONDS
    # XREAD BLOCK: how long one read waits for new events before it asks again.
    block: float = 1 * SECONDS
    # Every other Redis command is given up after this long (the broker is then "down").
    timeout: float = 2 * SECONDS
    # Events waiting to be written to Redis; when Redis is slow or down the oldest are dropped
    # (gateway_broker_events_total{outcome="dropped"}), so a publisher never blocks.
    outbox: int = 10_000
    # Every key the gateway uses starts with this (several gateways can share one Redis).
    prefix: str = "gateway"

    def validated(self) -> BrokerSettings:
        parts = urlsplit(self.url)
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ConfigError(
                f"the broker must be a redis:// or rediss:// URL, got {redacted_url(self.url)!r}"
            )
        for name in ("retention", "outbox"):
            if getattr(self, name) < 1:
                raise ConfigError(f"broker {name} must be at least 1")
        if not self.lease >= 0.3:
            raise ConfigError(f"the leader lease must be at least 0.3 s, got {self.lease}")
        if not (self.block > 0 and self.timeout > 0):
            raise ConfigError("broker block and timeout must be positive")
        return self


def redacted_url(url: str) -> str:
    """`url` without its password, for logs, `status` and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def broker_from_env(env: dict[str, str], url: str | None = None) -> BrokerSettings | None:
    """GATEWAY_BROKER (or `url`, from --broker), GATEWAY_BROKER_RETENTION and
    GATEWAY_LEADER_LEASE; None when no broker is named (one process, in-memory bus)."""
    url = url or env.get("GATEWAY_BROKER") or None
    if url is None:
        return None
    changes: dict[str, float | int] = {}
    raw = env.get("GATEWAY_BROKER_RETENTION", "").strip()
    if raw:
        if not raw.isdigit():
            raise ConfigError(f"GATEWAY_BROKER_RETENTION must be a whole number, got {raw!r}")
        changes["retention"] = int(raw)
    raw = env.get("GATEWAY_LEADER_LEASE", "").strip()
    if raw:
        try:
            changes["lease"] = float(raw)
        except ValueError:
            raise ConfigError(f"GATEWAY_LEADER_LEASE must be seconds, got {raw!r}") from None
    return BrokerSettings(url.strip(), **changes).validated()  # type: ignore[arg-type]

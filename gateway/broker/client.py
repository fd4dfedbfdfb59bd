"""The replica's one Redis client, and what it knows about Redis: reachable or not, and why.

coredis is built on anyio and runs on trio as it is (tests/broker/test_client.py runs it under
trio against a real redis-server): its pool opens connections on demand and reconnects by
itself, so a Redis that comes back is used again without a restart. Every command here is
bounded (`timeout`, `block` for XREAD), and any failure marks the broker *down* with the
reason until a command succeeds again; `status`, `/readyz` and the subscriptions read that.

Must never: leave a command without a time limit, or raise anything but `BrokerUnavailable`
for a failed command (callers handle exactly that).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import coredis
import structlog
import trio
from coredis.exceptions import RedisError

from gateway.config.broker import BrokerSettings, redacted_url
from gateway.errors import BrokerUnavailable
from gateway.models import utc_now

__all__ = ["BrokerClient"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


class BrokerClient:
    """`async with BrokerClient(settings) as broker:` then `await broker.call(...)`."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.url = redacted_url(settings.url)
        parts = urlsplit(settings.url)
        self.redis: coredis.Redis[bytes] = coredis.Redis.from_url(
            settings.url,
            decode_responses=False,
            # Our own limits bound every call; coredis's are a backstop for a stuck socket.
            stream_timeout=settings.timeout + settings.block + 1,
            connect_timeout=settings.timeout,
        )
        self.host = parts.hostname or ""
        self.up = False
        self.reason: str | None = "not connected yet"
        self.since: datetime = utc_now()
        self.failures = 0
        self._changed = trio.Event()

    def key(self, *parts: str) -> str:
        """A Redis key under the configured prefix, e.g. key("stream", "prices")."""
        return ":".join((self.settings.prefix, *parts))

    async def __aenter__(self) -> BrokerClient:
        await self.redis.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # No cancel scope of our own around this: coredis's task group was entered outside it.
        await self.redis.__aexit__(None, None, None)

    async def call(self, command: Callable[[], Awaitable[T]], *, limit: float | None = None) -> T:
        """Run one command under a time limit; BrokerUnavailable on any failure, and Redis is
        marked down when it is unreachable, slow or refusing service (an error reply about the
        command itself, a bug, is logged and raised without marking anything down).
        """
        limit = self.settings.timeout if limit is None else limit
        try:
            with trio.fail_after(limit):
                result = await command()
        except trio.TooSlowError:
            raise self.mark_down(f"no answer from {self.host} within {limit:g} s") from None
        except (coredis.exceptions.ConnectionError, TimeoutError) as exc:
            raise self.mark_down(str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            raise self.mark_down(repr(exc)) from exc
        except RedisError as exc:
            if _is_outage(exc):
                raise self.mark_down(str(exc)) from exc
            log.error("broker.command_failed", error=repr(exc))
            raise BrokerUnavailable(f"Redis refused a command: {exc}") from exc
        self.mark_up()
        return result

    def mark_down(self, reason: str) -> BrokerUnavailable:
        """Record that Redis cannot be used, and why; returns the error to raise."""
        self.failures += 1
        if self.up or self.reason != reason:
            log.warning("broker.unavailable", url=self.url, reason=reason)
            self.since = utc_now()
            self._wake()
        self.up, self.reason = False, reason
        return BrokerUnavailable(reason)

    def mark_up(self) -> None:
        if not self.up:
            log.info("broker.available", url=self.url, after=self.reason)
            self.up, self.reason, self.since = True, None, utc_now()
            self._wake()

    def check(self) -> None:
        """Raise BrokerUnavailable when Redis is known to be down (a new subscription's test)."""
        if not self.up:
            raise BrokerUnavailable(self.reason or "not connected")

    async def changed(self) -> None:
        """Wait until `up` changes (or a new reason is recorded)."""
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def snapshot(self) -> dict[str, Any]:
        """For `/readyz` and `status`: the URL (no password), up or down, why, since when."""
        return {"url": self.url, "up": self.up, "reason": self.reason, "since": self.since}


def _is_outage(exc: RedisError) -> bool:
    """Error replies that mean "this Redis cannot serve now" rather than "your command is
    wrong": loading a dump, a read-only replica, out of memory, busy with a script."""
    text = str(exc).upper()
    return any(word in text for word in ("LOADING", "READONLY", "OOM", "BUSY", "MASTERDOWN"))

"""A provider's observed state, derived from what requests to it actually did.

Every upstream attempt (a collector's poll, a health check, a pool call) is recorded here by the
upstream client's observer hook, and the state follows from the recent outcomes:

    UNCONFIGURED  needs a key that is not set, or is disabled: never called
    UNKNOWN       enabled and configured, not tried yet
    ONLINE        the recent attempts succeeded, fast enough
    DEGRADED      answers, but slowly (beyond its health check's threshold) or with some of the
                  recent attempts failing
    OFFLINE       the last `offline_after` attempts all failed, or its circuit breaker is open
                  (then no attempt is made at all until the breaker lets a probe through)

A live stream (a WebSocket feed: no requests to count) reports its state directly instead,
through `report(provider, state, reason, ...)`: connected and receiving is ONLINE, reconnecting
or silent DEGRADED, repeated failed connections OFFLINE (gateway/sources/streams.py decides).
A reported state stands until the next report, or until `clear_report` hands the provider
back to the derivation (an RPC node reported DEGRADED while it lags behind its chain's head
is cleared once it catches up: gateway/chains/heads.py).

Reachability: an attempt that ended without any answer (a timeout, a refused or failed
connection: `TRANSPORT_FAILURES`) marks its provider unreachable; any answer, even an HTTP
error, marks it reachable. When every provider tried so far is unreachable (and enough of them
have been tried: `MIN_TRIED`), one `upstream.none_reachable` line says so, instead of one
warning per provider leaving the operator to add them up; `upstream.reachable_again` when one
answers. `none_reachable()` lets a resolver say "check the network" instead of "no data yet".

A change of state is reported through `on_change(provider, old, new, reason)` — synchronously,
so the callback must not block (the supervisor hands it to a bounded channel). Health checks,
breakers and streams all change state through this one callback, so `providerStates`
subscribers, the persisted state and the OFFLINE/recovered alerts treat them alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
import trio

from gateway.config import ProviderConfig, ProvidersFile
from gateway.errors import BrokerUnavailable
from gateway.models import ProviderStateChange
from gateway.pubsub import Topic
from gateway.vocabulary import ProviderState

__all__ = [
    "MIN_TRIED",
    "REPORTED_STATES",
    "TRANSPORT_FAILURES",
    "ProviderRecord",
    "ProviderStatusBoard",
    "mirror_states",
]

log = structlog.get_logger(__name__)

# Attempt outcomes that got no answer at all: what a missing network or a firewall produces.
TRANSPORT_FAILURES = frozenset({"timeout", "transport_error"})
# How many providers must have been tried (or every enabled, configured one, if fewer) before
# "none is reachable" is said: one refused connection at start-up is not an outage.
MIN_TRIED = 3

StateChange = Callable[[str, str, str, str], None]

# What a directly observed provider (a stream) may report; UNCONFIGURED and UNKNOWN are not
# observations.
# How many of the newest announced states a follower reads when it starts (`mirror_states`).
RECENT_STATES = 1000
REPORTED_STATES = frozenset({ProviderState.ONLINE, ProviderState.DEGRADED, ProviderState.OFFLINE})


@dataclass
class ProviderRecord:
    """What is known about one provider's recent behaviour."""

    provider_id: str
    enabled: bool
    configured: bool = True
    degraded_after_ms: float = 2000.0
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=10))
    last_checked_at: datetime | None = None
    last_error: str | None = None
    last_latency_ms: float | None = None
    latency_ms_ewma: float | None = None
    successes: int = 0
    failures: int = 0
    circuit_open: bool = False
    outliers: int = 0  # ticks left out of the consensus for deviating from the others
    quarantined: int = 0  # ticks the plausibility gate refused: never stored or published
    last_success_at: datetime | None = None
    # Why the provider is in its state: the reason given with the last change (or report).
    reason: str | None = None
    # A state reported by the provider's own observer (a stream), overriding the derivation.
    reported: str | None = None
    answered: bool = False  # it has answered at all (even with an HTTP error) since start
    unreachable: bool = False  # its last attempt got no answer (TRANSPORT_FAILURES)

    def state(self, offline_after: int = 3) -> str:
        if not self.enabled or not self.configured:
            return ProviderState.UNCONFIGURED
        if self.reported is not None:
            return self.reported
        if self.circuit_open:
            return ProviderState.OFFLINE
        if not self.recent:
            return ProviderState.UNKNOWN
        tail = list(self.recent)[-offline_after:]
        if len(tail) == offline_after and not any(tail):
            return ProviderState.OFFLINE
        if not self.recent[-1]:
            return ProviderState.DEGRADED if any(self.recent) else ProviderState.OFFLINE
        slow = self.last_latency_ms is not None and self.last_latency_ms > self.degraded_after_ms
        return ProviderState.DEGRADED if slow or not all(self.recent) else ProviderState.ONLINE

    @property
    def success_rate(self) -> float | None:
        total = self.successes + self.failures
        return self.successes / total if total else None


class ProviderStatusBoard:
    """Per-provider records, fed by every upstream attempt."""

    def __init__(
        self,
        providers: ProvidersFile,
        *,
        is_configured: Callable[[ProviderConfig], bool] = lambda provider: True,
        on_change: StateChange | None = None,
    ) -> None:
        self.records = {
            p.id: ProviderRecord(
                p.id,
                enabled=p.enabled,
                configured=is_configured(p),
                degraded_after_ms=p.health.degraded_after_ms if p.health else 2000.0,
            )
            for p in providers.providers
        }
        self.on_change = on_change
        self._none_reachable = False
        self._mirrored: set[str] = set()  # providers whose state is the leader's (`mirror`)

    def none_reachable(self) -> bool:
        """Every provider tried so far got no answer on its last attempt (at least `MIN_TRIED`
        of them tried, or every enabled, configured one)."""
        return self._none_reachable

    def answered_since_start(self) -> bool:
        """Whether any provider has answered anything since the process started."""
        return any(record.answered for record in self.records.values())

    def _reached(self, record: ProviderRecord, *, answered: bool) -> None:
        record.unreachable = not answered
        if answered:
            record.answered = True
            if self._none_reachable:
                self._none_reachable = False
                log.info("upstream.reachable_again", provider=record.provider_id)
            return
        if self._none_reachable:
            return
        usable = [r for r in self.records.values() if r.enabled and r.configured]
        tried = [r for r in usable if r.recent]
        if len(tried) < min(MIN_TRIED, len(usable)) or not tried:
            return
        if all(r.unreachable for r in tried):
            self._none_reachable = True
            log.warning(
                "upstream.none_reachable",
                message=f"no upstream answered: the last request to each of the {len(tried)} "
                "providers tried timed out or could not connect. Check the network, DNS, "
                "proxy or firewall",
                tried=sorted(r.provider_id for r in tried),
                answered_since_start=self.answered_since_start(),
            )

    def record(
        self,
        provider_id: str,
        *,
        ok: bool,
        at: datetime,
        latency_ms: float | None,
        error: str | None = None,
    ) -> None:
        record = self.records.get(provider_id)
        if record is None:
            return
        before = record.state()
        record.recent.append(ok)
        record.last_checked_at = at
        if ok:
            record.successes += 1
            record.last_success_at = at
            record.last_latency_ms = latency_ms
            if latency_ms is not None:
                previous = record.latency_ms_ewma
                record.latency_ms_ewma = (
                    latency_ms if previous is None else 0.8 * previous + 0.2 * latency_ms
                )
        else:
            record.failures += 1
            record.last_error = error
        self._reached(record, answered=ok or error not in TRANSPORT_FAILURES)
        after = record.state()
        if after != before:
            self._changed(record, before, after, _reason(record, ok, error))

    def report(
        self,
        provider_id: str,
        state: str,
        reason: str,
        *,
        at: datetime,
        last_success_at: datetime | None = None,
        failed: bool = False,
    ) -> None:
        """The state of a provider observed directly (a stream), with why and when.

        `failed`: this report is a failure (a lost or refused connection): counted, and its
        reason becomes `last_error`. Reaching ONLINE counts a success; reporting ONLINE again
        while ONLINE only refreshes the times. `last_success_at`: when it last delivered.
        """
        if state not in REPORTED_STATES:
            raise ValueError(f"cannot report state {state!r}")
        record = self.records.get(provider_id)
        if record is None:
            return
        before = record.state()
        record.reported = state
        record.last_checked_at = at
        if last_success_at is not None:
            record.last_success_at = last_success_at
        if failed:
            record.recent.append(False)
            record.failures += 1
            record.last_error = reason
            self._reached(record, answered=False)  # a lost or refused connection
        elif state == ProviderState.ONLINE and before != ProviderState.ONLINE:
            record.recent.append(True)
            record.successes += 1
            self._reached(record, answered=True)
        after = record.state()
        if after != before:
            self._changed(record, before, after, reason)
        else:
            record.reason = reason

    def clear_report(self, provider_id: str, reason: str) -> None:
        """End a reported state: the provider's state is again derived from its requests (an
        RPC node that caught up with its chain's head, after `report(…, DEGRADED, …)`)."""
        record = self.records.get(provider_id)
        if record is None or record.reported is None:
            return
        before = record.state()
        record.reported = None
        after = record.state()
        if after != before:
            self._changed(record, before, after, reason)

    def set_circuit_open(self, provider_id: str, is_open: bool) -> None:
        """The provider's breaker opened (OFFLINE until it lets a probe through) or closed."""
        record = self.records.get(provider_id)
        if record is None or record.circuit_open == is_open:
            return
        before = record.state()
        record.circuit_open = is_open
        after = record.state()
        if after != before:
            reason = "circuit breaker opened" if is_open else "circuit breaker let a probe through"
            self._changed(record, before, after, reason)

    def mirror(self, change: ProviderStateChange) -> None:
        """Show a state the collector leader observed (several replicas): a follower calls no
        upstream on a schedule, so its own records would stay UNKNOWN. Nothing is acted on (no
        event, no alert); `forget_mirrored` undoes it when this replica becomes the leader."""
        record = self.records.get(change.provider)
        if record is None:
            return
        record.reported = change.new_state if change.new_state in REPORTED_STATES else None
        record.reason = change.reason
        record.last_checked_at = change.at
        if change.new_state == ProviderState.ONLINE:
            record.last_success_at = change.at
        self._mirrored.add(change.provider)

    def forget_mirrored(self) -> None:
        for provider_id in self._mirrored:
            if provider_id in self.records:
                self.records[provider_id].reported = None
        self._mirrored.clear()

    def _changed(self, record: ProviderRecord, before: str, after: str, reason: str) -> None:
        record.reason = reason
        if self.on_change is not None:
            self.on_change(record.provider_id, before, after, reason)

    def note_outlier(self, provider_id: str) -> int:
        """Count one tick of this provider excluded from the consensus; returns the count."""
        record = self.records.get(provider_id)
        if record is None:
            return 0
        record.outliers += 1
        return record.outliers

    def note_quarantined(self, provider_id: str) -> int:
        """Count one tick of this provider refused as implausible; returns the count."""
        record = self.records.get(provider_id)
        if record is None:
            return 0
        record.quarantined += 1
        return record.quarantined

    def state(self, provider_id: str) -> str:
        record = self.records.get(provider_id)
        return record.state() if record is not None else ProviderState.UNKNOWN

    def counts(self) -> dict[str, int]:
        states = [record.state() for record in self.records.values()]
        return {
            "total": len(states),
            "online": states.count(ProviderState.ONLINE),
            "degraded": states.count(ProviderState.DEGRADED),
            "offline": states.count(ProviderState.OFFLINE),
            "unconfigured": states.count(ProviderState.UNCONFIGURED),
        }


async def mirror_states(
    board: ProviderStatusBoard, topic: Topic[ProviderStateChange], leading: Callable[[], bool]
) -> None:
    """Several replicas: while this replica is not the collector leader, mirror the leader's
    provider states on `board` (the newest announced ones first, then each change). Redis
    down: wait and start again (the states then stay as last known)."""
    while True:
        try:
            with topic.subscribe() as changes:
                for change in await topic.recent(RECENT_STATES):
                    if not leading():
                        board.mirror(change)
                async for change in changes:
                    if not leading():
                        board.mirror(change)
        except BrokerUnavailable:
            await trio.sleep(1)


def _reason(record: ProviderRecord, ok: bool, error: str | None) -> str:
    if not ok:
        return error or "request failed"
    if record.last_latency_ms is not None and record.last_latency_ms > record.degraded_after_ms:
        return (
            f"slow: {record.last_latency_ms:.0f} ms (threshold {record.degraded_after_ms:.0f} ms)"
        )
    return "requests succeed"

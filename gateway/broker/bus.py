"""The event bus over Redis Streams: every replica's subscribers see every event, once.

`BrokerBus` is a `gateway.pubsub.EventBus` whose topics are `BrokerTopic`s. Publishing never
blocks (the `EventBus` promise): the event is encoded and put in a bounded outbox, and the
*publisher* task writes batches of them with one Lua script per batch, which XADDs each to
its topic's stream (`<prefix>:stream:<topic>`, trimmed with MAXLEN ~ retention). The script
first checks the publisher's fencing token against the collector lease (gateway/broker/lease.py),
so a deposed leader's late events are refused by Redis itself, not by its own good behaviour.

The *reader* task of each replica (the leader's too: one path for all) XREADs every stream
from the last id it delivered, with BLOCK, and fans each event out to this process's
subscribers with `Topic.deliver`. A topic remembers the id of the last event it delivered
(`position`), which is what makes `priceTicks(since:)` exact on any replica: events up to the
position that the shared store may not hold yet are read back from the stream (`backlog`),
everything after it arrives live.

Which topics are fenced: the collectors' output (prices, news, Fear & Greed, chain heads, gas,
whales) and provider states (the leader's health checks and collectors are the one view of the
upstreams that followers mirror: gateway/providers/status.py `mirror_states`) may be published
only by the leaseholder; rotations and alerts may come from any replica (an admin mutation,
a pool rotated by an on-demand call there).

When Redis is down: new subscriptions are refused and current ones end with
BROKER_UNAVAILABLE (never silence); the outbox keeps the newest `outbox` events and drops the
oldest (counted); the reader retries with doubling backoff up to 2 s and carries on from where
it was once Redis answers.

Must never: block a publisher, hold more than `outbox` unsent events, deliver an event twice
on one replica, or publish a fenced event without the current lease token.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar

import structlog
import trio
from trio.lowlevel import ParkingLot

from gateway.broker.client import BrokerClient
from gateway.broker.codec import decode, encode
from gateway.errors import BrokerUnavailable
from gateway.models import epoch_ms
from gateway.pubsub import EventBus, Subscriber, Topic

__all__ = ["FENCED_TOPICS", "BrokerBus", "BrokerTopic"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

FENCED_TOPICS: Final = frozenset(
    {"prices", "provider_states", "news", "fear_greed", "chain_heads", "gas", "whales"}
)
# Events per script call; Redis runs a script alone, so a batch stays short (~1 ms).
BATCH: Final = 200
# Entries per XREAD reply and per XRANGE page.
PAGE: Final = 1000
# `backlog` reads at most this far back before the position: anything older was committed to
# the store long before (the writer commits every 0.25 s), unless the store is failing.
BACKLOG_WINDOW: Final = timedelta(seconds=60)
# observedAt is the provider's clock, a stream id Redis's: allow this much skew between them.
CLOCK_SKEW: Final = timedelta(seconds=5)
MAX_BACKOFF: Final = 2.0

PUBLISH_SCRIPT: Final = """
-- KEYS[1]: the collector lease; KEYS[2..]: the stream of each event, in order.
-- ARGV[1]: the publisher's fencing token ('' for an unfenced batch); ARGV[2]: MAXLEN ~;
-- ARGV[3..]: the events.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 'FENCED'
end
local ids = {}
for i = 2, #KEYS do
  ids[i - 1] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i + 1])
end
return ids
"""


class BrokerTopic(Topic[T]):
    """A topic whose `publish` goes through Redis; `deliver` is the local fan-out."""

    def __init__(self, name: str, buffer: int, bus: BrokerBus) -> None:
        super().__init__(name, buffer)
        self.bus = bus
        self.stream = bus.client.key("stream", name)
        self.fenced = name in FENCED_TOPICS
        self.last_id = b"0-0"

    def publish(self, event: T) -> None:
        self.bus.enqueue(self, event)

    @contextmanager
    def subscribe(self, buffer: int | None = None) -> Iterator[Subscriber[T]]:
        """As `Topic.subscribe`, but BROKER_UNAVAILABLE at once while Redis is down."""
        self.bus.client.check()
        with super().subscribe(buffer) as subscriber:
            yield subscriber

    def position(self) -> str:
        """The stream id of the last event delivered here: every later one will be, live."""
        return self.last_id.decode()

    async def backlog(self, position: str, since: datetime) -> list[T]:
        """Events up to `position` that were published after `since` (allowing for clock
        skew), at most `BACKLOG_WINDOW` before it, oldest first: what a replaying subscriber
        reads after the store, because the store may not hold them yet."""
        end_ms = int(position.split("-")[0])
        window_ms = BACKLOG_WINDOW // timedelta(milliseconds=1)
        start_ms = max(epoch_ms(since - CLOCK_SKEW), end_ms - window_ms)
        if end_ms == 0 or start_ms > end_ms:
            return []
        events: list[T] = []
        start: bytes | str = str(start_ms)
        redis = self.bus.client.redis
        for _ in range(100):  # at most 100 pages: bounded even at an absurd event rate
            page = await self.bus.client.call(
                partial(redis.xrange, self.stream, start, position, count=PAGE)
            )
            for entry in page:
                try:
                    events.append(decode(self.name, _bytes(entry.field_values[b"e"])))
                except (ValueError, KeyError):
                    continue
            if len(page) < PAGE:
                break
            start = b"(" + _bytes(page[-1].identifier)
        return events

    async def recent(self, count: int) -> list[T]:
        redis = self.bus.client.redis
        entries = await self.bus.client.call(partial(redis.xrevrange, self.stream, count=count))
        events = []
        for entry in reversed(entries):
            with contextlib.suppress(ValueError, KeyError):
                events.append(decode(self.name, _bytes(entry.field_values[b"e"])))
        return events

    def fail_all(self, error: Exception) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber.fail(error)


class BrokerBus(EventBus):
    """Every topic of the gateway, carried by Redis Streams; `run` must be started first."""

    def __init__(
        self,
        buffer: int,
        client: BrokerClient,
        *,
        fence: Callable[[], int | None] = lambda: None,
        on_fenced: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = client
        self.fence = fence  # the lease token while this replica leads, else None
        self.on_fenced = on_fenced  # Redis refused our token: we are no longer the leader
        self._outbox: deque[tuple[BrokerTopic[Any], bytes, str]] = deque()
        self._limit = client.settings.outbox
        self._lot = ParkingLot()
        self.sent = 0
        self.dropped = 0  # the outbox was full (Redis slow or down): oldest first
        self.refused = 0  # a fenced event from a replica that does not hold the lease
        self.undecodable = 0
        self._script = client.redis.register_script(PUBLISH_SCRIPT)
        self._lease_key = client.key("leader")
        # Where the reader goes on (per stream, the last id delivered); kept across restarts.
        self._read_from: dict[bytes, bytes] | None = None
        super().__init__(buffer, self._make_topic)
        self._by_stream = {topic.stream.encode(): topic for topic in self.broker_topics}

    def _make_topic(self, name: str, buffer: int) -> Topic[Any]:
        return BrokerTopic(name, buffer, self)

    @property
    def broker_topics(self) -> tuple[BrokerTopic[Any], ...]:
        return tuple(t for t in self.topics if isinstance(t, BrokerTopic))

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def enqueue(self, topic: BrokerTopic[Any], event: Any) -> None:
        """Queue `event` for Redis without waiting; the oldest is dropped when full."""
        token = ""
        if topic.fenced:
            fence = self.fence()
            if fence is None:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning("broker.publish_refused", topic=topic.name, refused=self.refused)
                return
            token = str(fence)
        if len(self._outbox) >= self._limit:
            self._outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("broker.outbox_full", dropped=self.dropped, limit=self._limit)
        self._outbox.append((topic, encode(event), token))
        if self._lot:
            self._lot.unpark_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The publisher and the reader; started at once, connected whenever Redis answers.
        Each is restarted (after a second) if it ever fails: a bug in one event's handling
        must not end live events for the whole replica."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._restarting, "publisher", self._publish_forever)
            nursery.start_soon(self._restarting, "reader", self._read_forever)
            task_status.started()

    async def _restarting(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await run()
            except Exception as exc:
                log.error("broker.task_crashed", task=name, error=repr(exc), exc_info=exc)
            await trio.sleep(1)

    # -- publishing ---------------------------------------------------------------------------

    def _take_batch(self) -> tuple[str, list[tuple[BrokerTopic[Any], bytes, str]]]:
        token = self._outbox[0][2]
        batch: list[tuple[BrokerTopic[Any], bytes, str]] = []
        while self._outbox and len(batch) < BATCH and self._outbox[0][2] == token:
            batch.append(self._outbox.popleft())
        return token, batch

    async def _publish_forever(self) -> None:
        backoff = 0.05
        while True:
            while not self._outbox:
                await self._lot.park()
            token, batch = self._take_batch()
            keys = [self._lease_key, *(topic.stream for topic, _, _ in batch)]
            args: list[str | bytes] = [token, str(self.client.settings.retention)]
            args.extend(data for _, data, _ in batch)
            try:
                reply = await self.client.call(partial(self._script, keys=keys, args=args))
            except BrokerUnavailable:
                self._requeue(batch)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if reply == b"FENCED":  # our token is not the lease's: we are no longer the leader
                self.refused += len(batch)
                log.warning("broker.fenced", token=token, events=len(batch))
                self.on_fenced()
                continue
            backoff = 0.05
            self.sent += len(batch)

    def _requeue(self, batch: Sequence[tuple[BrokerTopic[Any], bytes, str]]) -> None:
        """Put an unsent batch back in front, keeping the newest when there is no room."""
        room = max(self._limit - len(self._outbox), 0)
        kept = list(batch)[-room:] if room else []
        self.dropped += len(batch) - len(kept)
        self._outbox.extendleft(reversed(kept))

    # -- reading ------------------------------------------------------------------------------

    async def _positions(self) -> dict[bytes, bytes]:
        """Each stream's newest id now ("0-0" when empty): reading starts after it. ("$" would
        skip events added to one stream while XREAD returned another's.)"""
        positions: dict[bytes, bytes] = {}
        redis = self.client.redis
        for stream, topic in self._by_stream.items():
            newest = await self.client.call(partial(redis.xrevrange, stream, "+", "-", count=1))
            positions[stream] = _bytes(newest[0].identifier) if newest else b"0-0"
            topic.last_id = positions[stream]
        return positions

    async def _read_forever(self) -> None:
        settings = self.client.settings
        backoff = 0.05
        while True:
            try:
                if self._read_from is None:
                    self._read_from = await self._positions()
                positions = self._read_from
                read = partial(
                    self.client.redis.xread,
                    positions,
                    count=PAGE,
                    block=int(settings.block * 1000),
                )
                reply = await self.client.call(read, limit=settings.block + settings.timeout)
            except BrokerUnavailable as exc:
                for topic in self.broker_topics:
                    topic.fail_all(exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.05
            for stream, entries in (reply or {}).items():
                topic = self._by_stream[_bytes(stream)]
                for entry in entries:
                    positions[topic.stream.encode()] = topic.last_id = _bytes(entry.identifier)
                    try:
                        event = decode(topic.name, _bytes(entry.field_values[b"e"]))
                    except (ValueError, KeyError) as exc:
                        self.undecodable += 1
                        log.warning("broker.undecodable", topic=topic.name, error=repr(exc))
                        continue
                    topic.deliver(event)


def _bytes(value: str | bytes) -> bytes:
    """coredis types stream fields as str | bytes; this client asks for bytes."""
    return value if isinstance(value, bytes) else value.encode()

"""Fan-out of live events to many in-process subscribers, with a bound on every buffer.

A `Topic` is one stream of events (price ticks, provider state changes, …). Publishing never
blocks and never fails: each subscriber has its own ring buffer of `buffer` events, and when a
subscriber falls behind the oldest event in *its* buffer is dropped and counted. One slow
reader therefore costs a fixed amount of memory and slows nobody else.

The subscribers here are internal consumers (a shared GraphQL subscription, the storage feed),
not sockets: per-socket buffering is the WebSocket connection's job (api/ws/queue.py), so a
thousand clients of one subscription are still one subscriber here.

With several replicas (gateway/broker/) the same `EventBus` is built with broker-backed topics:
`publish` then hands the event to Redis, and the replica's stream reader fans it out here with
`Topic.deliver`; a subscriber is ended with an error (`Subscriber.fail`) when the broker is lost.

Must never: block a publisher, or hold more than `buffer` events for any subscriber.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar

import trio
from trio.lowlevel import ParkingLot

from gateway.chain_models import ChainHead, GasPrice
from gateway.models import AlertRecord, PriceTick, ProviderStateChange
from gateway.news_models import FearGreedPoint, StoredArticle
from gateway.onchain_models import WhaleTransfer

__all__ = ["EventBus", "Subscriber", "Topic"]

T = TypeVar("T")


class Subscriber(Generic[T]):
    """One reader of a topic: an async iterator over a bounded ring buffer."""

    __slots__ = ("_buffer", "_closed", "_error", "_lot", "dropped")

    def __init__(self, size: int) -> None:
        self._buffer: deque[T] = deque(maxlen=size)
        self._lot = ParkingLot()
        self._closed = False
        self._error: Exception | None = None
        self.dropped = 0

    def _offer(self, event: T) -> bool:
        """Append without blocking; returns False when the oldest event had to be dropped."""
        full = len(self._buffer) == self._buffer.maxlen
        if full:
            self.dropped += 1
        self._buffer.append(event)
        if self._lot:  # a reader is parked (len(lot) > 0); statistics() would allocate
            self._lot.unpark_all()
        return not full

    def close(self) -> None:
        """End the stream: a waiting reader wakes and iteration stops after the buffer drains."""
        self._closed = True
        self._lot.unpark_all()

    def fail(self, error: Exception) -> None:
        """End the stream with `error`: raised to the reader once the buffer has drained."""
        self._error = error
        self.close()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def drain(self) -> list[T]:
        """Take every buffered event at once (no waiting)."""
        events = list(self._buffer)
        self._buffer.clear()
        return events

    async def receive(self) -> T:
        """The next event, waiting for one; raises trio.EndOfChannel once closed and drained."""
        while not self._buffer:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise trio.EndOfChannel
            await self._lot.park()
        return self._buffer.popleft()

    def __aiter__(self) -> Subscriber[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Topic(Generic[T]):
    """A named stream of events fanned out to every current subscriber."""

    def __init__(self, name: str, buffer: int) -> None:
        if buffer < 1:
            raise ValueError("a topic buffer must hold at least one event")
        self.name = name
        self._buffer = buffer
        self._subscribers: set[Subscriber[T]] = set()
        self.published = 0
        self.dropped = 0

    def publish(self, event: T) -> None:
        """Hand `event` to every subscriber; never blocks."""
        self.deliver(event)

    def deliver(self, event: T) -> None:
        """Fan `event` out to this process's subscribers (what `publish` does in one process;
        a broker-backed topic's reader calls it for each event read from the broker)."""
        self.published += 1
        for subscriber in self._subscribers:
            if not subscriber._offer(event):
                self.dropped += 1

    @contextmanager
    def subscribe(self, buffer: int | None = None) -> Iterator[Subscriber[T]]:
        """Receive every event published while the block is open (bounded, drop-oldest)."""
        subscriber: Subscriber[T] = Subscriber(buffer or self._buffer)
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            subscriber.close()

    def position(self) -> str | None:
        """Where the stream of events stands, for a replaying subscriber to read its `backlog`
        up to; None in one process, where `Storage.committed()` alone closes the seam."""
        return None

    async def backlog(self, position: str, since: datetime) -> list[T]:
        """Events up to `position` published after `since` that the store may not hold yet."""
        return []

    async def recent(self, count: int) -> list[T]:
        """The last `count` events published, oldest first, where they are kept (a broker's
        stream: how a replica that starts late learns the state others announced); none here."""
        return []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every subscriber's stream (shutdown)."""
        for subscriber in self._subscribers:
            subscriber.close()


class EventBus:
    """Every topic of the gateway, named so readers can follow one event end to end."""

    def __init__(
        self, buffer: int, topic: Callable[[str, int], Topic[Any]] = Topic
    ) -> None:
        # `topic` makes each one: the in-process `Topic`, or a broker-backed one (gateway.broker).
        self.prices: Topic[PriceTick] = topic("prices", buffer)
        self.provider_states: Topic[ProviderStateChange] = topic("provider_states", buffer)
        self.rotations: Topic[Any] = topic("rotations", buffer)  # pool.RotationEvent
        self.alerts: Topic[AlertRecord] = topic("alerts", buffer)
        # News: each new story once stored (and scored, when a model is loaded); each new or
        # revised Fear & Greed value (gateway.news).
        self.news: Topic[StoredArticle] = topic("news", buffer)
        self.fear_greed: Topic[FearGreedPoint] = topic("fear_greed", buffer)
        # Chains: each chain's head when it advances, each chain's fee tiers as observed
        # (gateway.chains).
        self.chain_heads: Topic[ChainHead] = topic("chain_heads", buffer)
        self.gas: Topic[GasPrice] = topic("gas", buffer)
        # Whale transfers as found, and withdrawn (`removed`) when a reorg replaced their block.
        self.whales: Topic[WhaleTransfer] = topic("whales", buffer)

    @property
    def topics(self) -> tuple[Topic[Any], ...]:
        return (
            self.prices,
            self.provider_states,
            self.rotations,
            self.alerts,
            self.news,
            self.fear_greed,
            self.chain_heads,
            self.gas,
            self.whales,
        )

    def close(self) -> None:
        for topic in self.topics:
            topic.close()

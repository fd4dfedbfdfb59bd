"""Live price streams over WebSocket: the machinery every exchange stream shares.

A `StreamClient` keeps one WebSocket to one exchange (trio-websocket) carrying exactly the
symbols of the live interest (`SymbolInterest`): it connects, subscribes, follows interest
changes with subscribe / unsubscribe messages, turns each message into `PriceTick`s with the
exchange's **pure** parser and hands them to `publish` (the same callable collectors get).

An exchange module subclasses it with four small pieces: how a symbol is named upstream, the
subscribe and unsubscribe messages, and the parser (message -> `Frame`, with the helpers of
`gateway.sources.stream_parsing`). Everything else is here, written once:

* **Connect** with `open_websocket_url`, bounded by `connect_timeout`; every close (ours, the
  exchange's, one during shutdown) is bounded by `close_timeout`.
* **Pings**: WebSocket-level pings (Binance sends one every 20 s) are answered by
  trio-websocket itself. Exchanges with an application-level ping (Kraken v2) get one sent
  every `keepalive_interval`.
* **Silence watchdog**: no message at all (data, heartbeat, ack) within `silence_timeout` means
  the feed is dead even if TCP is not; the connection is dropped and made again.
* **Reconnect** with doubling backoff (`backoff_initial` up to `backoff_max`, `reconnect_delay`
  in `gateway.sources.stream_state`) on a lost connection (`gateway.sources.stream_trouble`
  says what counts as one); a connection that stayed up for `healthy_after` seconds and
  carried messages resets it. Every reconnect subscribes to the interest *of that moment*.
* **Malformed frames** (not JSON, wrong shape, a price that is not a positive number) are
  counted in `malformed` and skipped; the connection stays. A frame is accepted whole or not
  at all, so nothing half-parsed is published.
* **Bounded**: trio-websocket's queue of one message gives backpressure (a slow `publish` slows
  the socket); `max_message_bytes` caps a frame; `min_publish_interval` coalesces a busy
  symbol to its latest tick (one pending tick per symbol at most; `TickThrottle` in
  `gateway.sources.stream_throttle`); `max_subscriptions` caps what one connection carries.
* **Refused products**: a product the exchange refuses *by name* ("ADA-USD is not a valid
  product") is dropped, logged once by name, named in the health reason and remembered for
  `refusal_memory` (`gateway.sources.stream_requests`), so no reconnect asks for it again. An
  exchange that ignores a whole request for one bad product (`refusal_fails_request`:
  Coinbase) is asked again for the others at once. Other errors drop nothing beyond the
  request they answer, and only on that connection.
* **No interest, no connection**: while the interest set has nothing this exchange lists, the
  client stays disconnected (Coinbase drops a connection that does not subscribe within 5 s).
* **Health** (`on_health`, fed to the provider status board, kept by `StreamHealthTracker` in
  `gateway.sources.stream_health`): ONLINE once a connection delivers a tick; DEGRADED while
  reconnecting; OFFLINE after `offline_after` connections in a row without a tick. Every
  attempt is bounded (`connect_timeout`, `silence_timeout`), so "repeatedly failing" is also
  "down for a while". Each report says why ("connected", "silent for 30 s, reconnecting").

`run()` reports started at once and never raises for upstream trouble; only bugs escape, for
the supervisor to restart it. The state it exposes (`connected`, `last_message_at`,
`reconnects`, `malformed`, `is_live(symbol)`, `health_state`, `refused`, `status()`) is what health,
metrics and the REST fallback read, one client at a time or all together through
`gateway.sources.stream_group.StreamGroup`. Settings, health reports and status snapshots are
the values of `gateway.sources.stream_state`.

Must never: publish a value the exchange did not send, hold an unbounded buffer, or let an
upstream failure escape `run()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import structlog
import trio
from trio.lowlevel import ParkingLot
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick, utc_now
from gateway.sources.base import Publish
from gateway.sources.interest import SymbolInterest
from gateway.sources.stream_health import HEALTH_REFRESH, StreamHealthTracker
from gateway.sources.stream_parsing import Frame
from gateway.sources.stream_requests import PendingRequests, RefusalMemory
from gateway.sources.stream_state import (
    HealthReport,
    StreamSettings,
    StreamStatus,
    reconnect_delay,
)
from gateway.sources.stream_throttle import TickThrottle
from gateway.sources.stream_trouble import CONNECTION_TROUBLE, SendStalled, describe_trouble
from gateway.symbols import normalize_symbol

__all__ = ["HEALTH_REFRESH", "Connect", "StreamClient"]

log = structlog.get_logger(__name__)

Connect = Callable[..., AbstractAsyncContextManager[WebSocketConnection]]


class StreamClient:
    """One exchange's live stream; a subclass sets `name` and `default_url` and implements
    `upstream_id`, `subscribe_messages`, `unsubscribe_messages` and `parse`."""

    name: ClassVar[str]
    default_url: ClassVar[str]
    # Send `keepalive_message` every `keepalive_interval` (application-level ping).
    keepalive: ClassVar[bool] = False
    # The exchange ignores a whole subscribe request when it refuses one product in it.
    refusal_fails_request: ClassVar[bool] = False

    def __init__(
        self,
        interest: SymbolInterest,
        publish: Publish,
        *,
        url: str | None = None,
        settings: StreamSettings | None = None,
        symbols: Iterable[str] | None = None,
        provider_id: str | None = None,
        connect: Connect = open_websocket_url,
        on_health: HealthReport | None = None,
    ) -> None:
        self.interest = interest
        self.settings = settings or StreamSettings()
        self.url = url or self.default_url
        if urlsplit(self.url).scheme not in ("ws", "wss"):
            raise ValueError(f"a stream URL must be ws:// or wss://, got {self.url!r}")
        self.provider_id = provider_id or self.name
        # A provider entry's own `symbols` limits what this stream carries.
        self.only = frozenset(map(normalize_symbol, symbols)) if symbols else None
        self._publish = publish
        self._connect = connect
        self._log = log.bind(provider=self.provider_id)

        self.connected = False
        self.connected_since: datetime | None = None
        self.last_message_at: datetime | None = None
        self.connects = 0
        self.reconnects = 0
        self.failures = 0
        self.malformed = 0
        self.silences = 0
        self.upstream_errors = 0
        self.ticks = 0
        self.backoff = 0.0
        self.last_error: str | None = None
        self._got_tick = False

        # Per connection: upstream id -> canonical symbol, and what the exchange refused.
        self._subscribed: dict[str, str] = {}
        self._refused: set[str] = set()
        # Named by the exchange as refused: kept across connections, for a while.
        self._refusals = RefusalMemory(self.settings.refusal_memory, self.settings.max_refusals)
        self.health = StreamHealthTracker(
            self.provider_id,
            offline_after=self.settings.offline_after,
            refusals=self._refusals,
            on_health=on_health,
            last_message_at=lambda: self.last_message_at,
            notify=self._notify,
        )
        self._seen: set[str] = set()  # symbols with a tick on this connection
        self._requests = PendingRequests()  # per connection: what each request asked for
        self._got_message = False
        self._idle = False
        self._end_reason: str | None = None
        self._throttle = TickThrottle(self.settings.min_publish_interval)
        self._capped_warned = False
        self._changed = ParkingLot()
        # Called (synchronously) on every state change; StreamGroup listens this way.
        self.listeners: list[Callable[[], None]] = []

    @classmethod
    def from_provider(
        cls,
        provider: ProviderConfig,
        interest: SymbolInterest,
        publish: Publish,
        settings: StreamSettings | None = None,
        *,
        on_health: HealthReport | None = None,
    ) -> StreamClient:
        """A client for a providers.toml entry: its base_url, symbols and timeout."""
        settings = settings or StreamSettings(connect_timeout=provider.timeout_seconds)
        return cls(
            interest,
            publish,
            url=provider.base_url,
            settings=settings,
            symbols=provider.symbols,
            provider_id=provider.id,
            on_health=on_health,
        )

    # -- what an exchange module provides ---------------------------------------------------

    def upstream_id(self, symbol: str) -> str | None:
        """The exchange's name for a canonical symbol's USD market, or None if not listed."""
        raise NotImplementedError

    def subscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        raise NotImplementedError

    def unsubscribe_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        raise NotImplementedError

    def parse(self, message: str | bytes, received_at: datetime) -> Frame:
        """Pure: one message -> Frame; raises UpstreamPayloadError if it is malformed."""
        raise NotImplementedError

    def connect_url(self, ids: Sequence[str]) -> str:
        """The URL to connect to when `ids` are wanted (Binance names them in the URL)."""
        return self.url

    def initial_messages(self, ids: Sequence[str], request_id: int) -> list[str]:
        """Sent right after connecting; by default the subscribe messages for `ids`."""
        return self.subscribe_messages(ids, request_id)

    def keepalive_message(self, request_id: int) -> str | None:
        return None

    # -- state ------------------------------------------------------------------------------

    def is_live(self, symbol: str) -> bool:
        """True while connected, subscribed to `symbol`, and a tick for it has arrived on this
        connection (an exchange that accepts a subscription but never sends is not live)."""
        return self.connected and normalize_symbol(symbol) in self._seen

    @property
    def health_state(self) -> str | None:
        return self.health.state

    def live_symbols(self) -> frozenset[str]:
        return frozenset(self._seen) if self.connected else frozenset()

    @property
    def subscribed(self) -> frozenset[str]:
        """Canonical symbols subscribed on the current connection (refused ones excluded)."""
        if not self.connected:
            return frozenset()
        return frozenset(s for i, s in self._subscribed.items() if i not in self._refused)

    @property
    def refused(self) -> frozenset[str]:
        """Upstream ids refused on this connection or, by name, recently."""
        return frozenset(self._refused) | self._refusals.active(trio.current_time()).keys()

    def status(self) -> StreamStatus:
        now = trio.current_time()
        return StreamStatus(
            provider=self.provider_id,
            connected=self.connected,
            connected_since=self.connected_since,
            last_message_at=self.last_message_at,
            subscribed=tuple(sorted(self.subscribed)),
            live=tuple(sorted(self.live_symbols())),
            refused=tuple(
                sorted(
                    {self._subscribed.get(i, i) for i in self._refused}
                    | self._refusals.symbols(now)
                )
            ),
            connects=self.connects,
            reconnects=self.reconnects,
            failures=self.failures,
            malformed=self.malformed,
            silences=self.silences,
            upstream_errors=self.upstream_errors,
            ticks=self.ticks,
            last_error=self.last_error,
            state=self.health.state,
            state_reason=self.health.reason,
        )

    async def wait_changed(self) -> None:
        """Return at the next change of connection or liveness state."""
        await self._changed.park()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds (checked at once, then after each state change)."""
        while not predicate():
            await self._changed.park()

    def _notify(self) -> None:
        self._changed.unpark_all()
        for listener in self.listeners:
            listener()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stream forever; reports started at once; only unexpected exceptions escape."""
        task_status.started()
        retrying = False
        while True:
            await self._wait_for_interest()
            if retrying:
                self.reconnects += 1
            connects, silences = self.connects, self.silences
            healthy = await self._session()
            if self._idle:  # closed because nothing is wanted: not a failure
                self.failures = 0
                retrying = False
                self.health.restate("idle: no watched symbol is listed here")
                continue
            self.failures = 1 if healthy else self.failures + 1
            self.backoff = reconnect_delay(
                self.failures, self.settings.backoff_initial, self.settings.backoff_max
            )
            self._lost(up=self.connects > connects, silent=self.silences > silences)
            self._log.warning(
                "stream.disconnected",
                reason=self._end_reason,
                failures=self.failures,
                retry_in_s=round(self.backoff, 3),
            )
            retrying = True
            await trio.sleep(self.backoff)

    def _wanted(self) -> dict[str, str]:
        """Upstream id -> canonical symbol for the current interest, capped, in symbol order."""
        wanted: dict[str, str] = {}
        refused = self._refusals.active(trio.current_time())
        for symbol in sorted(self.interest.symbols):
            if self.only is not None and symbol not in self.only:
                continue
            upstream = self.upstream_id(symbol)
            if upstream is None or upstream in refused:
                continue
            if len(wanted) >= self.settings.max_subscriptions:
                if not self._capped_warned:
                    self._capped_warned = True
                    self._log.warning(
                        "stream.subscriptions_capped", limit=self.settings.max_subscriptions
                    )
                break
            wanted[upstream] = symbol
        return wanted

    async def _wait_for_interest(self) -> None:
        version = self.interest.version
        while not self._wanted():
            # A remembered refusal running out may make something wanted again.
            with trio.move_on_after(self._refusals.seconds_to_expiry(trio.current_time())):
                version = await self.interest.wait_changed(version)

    async def _session(self) -> bool:
        """One connection from connect to close; True if it was healthy (long and busy)."""
        version = self.interest.version
        wanted = self._wanted()
        self._idle = False
        self._end_reason = None
        self._got_message = False
        self._got_tick = False
        self._requests.clear()
        self._refused.clear()
        self._subscribed = dict(wanted)
        up_since: float | None = None
        try:
            async with self._connect(
                self.connect_url(list(wanted)),
                connect_timeout=self.settings.connect_timeout,
                disconnect_timeout=self.settings.close_timeout,
                max_message_size=self.settings.max_message_bytes,
            ) as ws:
                up_since = trio.current_time()
                self._up()
                async with trio.open_nursery() as nursery:
                    scope = nursery.cancel_scope
                    nursery.start_soon(self._guard, scope, self._receive, ws)
                    nursery.start_soon(self._guard, scope, self._follow_interest, ws, version)
                    if self.keepalive:
                        nursery.start_soon(self._guard, scope, self._keep_alive, ws)
                    if self.settings.min_publish_interval > 0:
                        nursery.start_soon(self._guard, scope, self._flush_pending)
        except CONNECTION_TROUBLE as exc:
            self._end(describe_trouble(exc))
        finally:
            self._down()
        if self._end_reason and not self._idle:
            self.last_error = self._end_reason
        return (
            up_since is not None
            and self._got_message
            and trio.current_time() - up_since >= self.settings.healthy_after
        )

    async def _guard(self, scope: trio.CancelScope, task: Callable[..., Any], *args: Any) -> None:
        """Run one of a connection's tasks; when it ends, for whatever upstream reason, the
        connection ends (the first reason is kept)."""
        try:
            reason = await task(*args)
        except CONNECTION_TROUBLE as exc:
            reason = describe_trouble(exc)
        self._end(str(reason))
        scope.cancel()

    def _end(self, reason: str) -> None:
        if self._end_reason is None:
            self._end_reason = reason

    # -- health -----------------------------------------------------------------------------

    def _lost(self, *, up: bool, silent: bool) -> None:
        """A connection ended (or was never made): DEGRADED, or OFFLINE when it keeps failing."""
        silence = self.settings.silence_timeout if silent else None
        detail = self._end_reason or "connection ended"
        self.health.lost(detail, up=up, silent=silence, got_tick=self._got_tick)

    def _up(self) -> None:
        self.connected = True
        self.connected_since = utc_now()
        self.connects += 1
        self._seen.clear()
        self._throttle.reset()
        self._log.info("stream.connected", symbols=sorted(self._subscribed.values()))
        self._notify()

    def _down(self) -> None:
        was = self.connected
        self.connected = False
        self.connected_since = None
        self._seen.clear()
        self._throttle.drop_pending()
        if was:
            self._notify()

    # -- a connection's tasks ---------------------------------------------------------------

    async def _receive(self, ws: WebSocketConnection) -> str:
        silence = self.settings.silence_timeout
        while True:
            with trio.move_on_after(silence) as watchdog:
                message = await ws.get_message()
            if watchdog.cancelled_caught:
                self.silences += 1
                return f"no message for {silence:g}s"
            self._got_message = True
            received = utc_now()
            self.last_message_at = received
            try:
                frame = self.parse(message, received)
            except UpstreamPayloadError as exc:
                self.malformed += 1
                if self.malformed & (self.malformed - 1) == 0:  # 1, 2, 4, 8, ...: no log flood
                    self._log.warning(
                        "stream.malformed_frame",
                        error=str(exc),
                        malformed=self.malformed,
                        frame=_excerpt(message),
                    )
                continue
            self.health.alive()  # a well-formed message
            ticks, dropped = self._apply(frame)
            if ticks:
                await self._emit(ticks)
            if dropped and not self._subscribed:
                self._idle = True  # nothing left to ask for; a reconnect would ask for nothing
                return "every wanted product was refused"
            if dropped and self.refusal_fails_request:
                await self._ask_again(ws)
            if frame.reconnect:
                return "the exchange asked clients to reconnect"

    def _apply(self, frame: Frame) -> tuple[list[PriceTick], bool]:
        """Book-keeping for a frame: its ticks for symbols subscribed here, and whether it
        dropped a product the exchange refused by name."""
        refused = set(frame.refused)
        if frame.request_id is not None:
            asked = self._requests.answered(frame.request_id)
            if frame.error is not None and not refused:
                refused.update(asked)
        if frame.error is not None:
            self.upstream_errors += 1
            self.last_error = frame.error
            self._log.warning("stream.upstream_error", error=frame.error, refused=sorted(refused))
        named = set(frame.refused) & self._subscribed.keys()
        changed = self._drop_refused(named, frame.error or "refused by the exchange")
        for upstream in (refused - named) & self._subscribed.keys():
            self._refused.add(upstream)
            self._seen.discard(self._subscribed[upstream])
            changed = True
        live = self.subscribed
        ticks = [tick for tick in frame.ticks if tick.symbol in live]
        for tick in ticks:
            if tick.symbol not in self._seen:
                self._seen.add(tick.symbol)
                changed = True
        if changed:
            self._notify()
        if ticks:
            self._got_tick = True
            self.health.delivering()
        return ticks, bool(named)

    def _drop_refused(self, named: set[str], reason: str) -> bool:
        """Products the exchange refused by name: off this connection, and remembered so that
        no reconnect asks for them while the refusal lasts."""
        now = trio.current_time()
        for upstream in sorted(named):
            symbol = self._subscribed.pop(upstream)
            self._seen.discard(symbol)
            self._refused.discard(upstream)
            self._refusals.add(upstream, symbol, reason, now)
            self._log.warning(
                "stream.product_refused",
                product=upstream,
                symbol=symbol,
                reason=reason,
                not_asked_again_for_s=self.settings.refusal_memory,
            )
        if named:
            self.health.restate()  # the reason names them now
        return bool(named)

    async def _ask_again(self, ws: WebSocketConnection) -> None:
        """The exchange ignored a whole request for a product it refused: ask again for what
        has not delivered on this connection (asking for a subscribed product is harmless)."""
        seen, refused = self._seen, self._refused
        ids = [i for i, s in self._subscribed.items() if s not in seen and i not in refused]
        if not ids:
            return
        request_id = self._requests.track(ids)
        self._log.info("stream.resubscribed", added=[self._subscribed[i] for i in ids])
        for message in self.subscribe_messages(ids, request_id):
            await self._send(ws, message)

    async def _emit(self, ticks: list[PriceTick]) -> None:
        if self.settings.min_publish_interval > 0:
            ticks = self._throttle.admit(ticks, trio.current_time())
        if ticks:
            await self._deliver(ticks)

    async def _deliver(self, ticks: list[PriceTick]) -> None:
        self.ticks += len(ticks)
        try:
            await self._publish(ticks)
        except CONNECTION_TROUBLE as exc:
            # Not the exchange's fault (storage, say): escape as a bug, not a reconnect.
            raise RuntimeError(f"publish failed: {exc!r}") from exc

    async def _flush_pending(self) -> str:
        """Publish coalesced ticks once their symbol's interval has passed."""
        while True:
            await trio.sleep(self.settings.min_publish_interval / 2)
            ticks = self._throttle.due(trio.current_time())
            if ticks:
                await self._deliver(ticks)

    async def _follow_interest(self, ws: WebSocketConnection, version: int) -> str:
        ids = list(self._subscribed)
        request_id = self._requests.track(ids)
        for message in self.initial_messages(ids, request_id):
            await self._send(ws, message)
        while True:
            await self.interest.wait_changed(version)
            # Let a burst of changes settle into one subscribe and one unsubscribe.
            await trio.sleep(self.settings.resubscribe_delay)
            version = self.interest.version
            wanted = self._wanted()
            if not wanted:
                self._idle = True
                return "no interest left"
            removed = [i for i in self._subscribed if i not in wanted]
            added = [i for i in wanted if i not in self._subscribed]
            dropped = sorted(self._subscribed[i] for i in removed)
            if removed:
                request_id = self._requests.next_id()
                for message in self.unsubscribe_messages(removed, request_id):
                    await self._send(ws, message)
                for upstream in removed:
                    self._seen.discard(self._subscribed.pop(upstream))
                    self._refused.discard(upstream)
                self._notify()
            if added:
                request_id = self._requests.track(added)
                for upstream in added:
                    self._subscribed[upstream] = wanted[upstream]
                for message in self.subscribe_messages(added, request_id):
                    await self._send(ws, message)
            if removed or added:
                self._log.info(
                    "stream.resubscribed",
                    added=[wanted[i] for i in added],
                    removed=dropped,
                )

    async def _send(self, ws: WebSocketConnection, message: str) -> None:
        # A peer that stops reading would otherwise block a send (and the interest change or
        # keepalive behind it) forever while its data keeps the watchdog happy.
        with trio.move_on_after(self.settings.connect_timeout) as scope:
            await ws.send_message(message)
        if scope.cancelled_caught:
            raise SendStalled(f"a send took over {self.settings.connect_timeout:g}s")

    async def _keep_alive(self, ws: WebSocketConnection) -> str:
        while True:
            await trio.sleep(self.settings.keepalive_interval)
            message = self.keepalive_message(self._requests.next_id())
            if message is not None:
                await self._send(ws, message)


def _excerpt(message: str | bytes, limit: int = 200) -> str:
    text = message if isinstance(message, str) else repr(message)
    return text if len(text) <= limit else text[:limit] + "…"

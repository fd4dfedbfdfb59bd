"""Live-stream interest across replicas: the leader's streams carry what any replica's clients hold.

With a broker only the collector leader runs the exchange streams (gateway/nursery.py), but a
client may subscribe to `priceTicks(symbols: ["SOL"])` on any replica. So every replica
publishes the symbols its own clients hold (`SymbolInterest.held`) to Redis, and the leader
reads every live replica's symbols and holds their union as its `SymbolInterest`'s *shared*
symbols; its streams then subscribe to them upstream, and the ticks reach the asking replica
through the bus like any other.

In Redis, two keys under the prefix, both written by one Lua script at a time:

    <prefix>:interest:expiry   sorted set: replica id -> expiry (ms, Redis's own clock)
    <prefix>:interest:symbols  hash: replica id -> its held symbols, space-separated

A replica publishes at once when its holds change and renews every third of the TTL (the
collector lease's duration); an empty set deletes its entry, and so does a clean shutdown. The
leader reads every `POLL` seconds (at most a quarter of the TTL): the script first drops the
entries whose expiry has passed, so a replica that died without a word stops counting after at
most the TTL. Expiry is reckoned on Redis's clock (TIME), never the replicas', so clock drift
between machines cannot keep a dead replica's interest alive or drop a live one's.

Bounded: a replica publishes its held symbols, which `SymbolInterest` caps (`max_symbols`, on
top of the per-request symbol cap of the API), and the leader keeps at most `max_symbols` shared
symbols, each one the asset table knows. When Redis is down, every replica's own interest works
as before (nothing here touches it); the leader keeps the shared set it last read until it
stops leading, which it does once its lease runs out.

Must never: raise out of `run` for a Redis failure, block a subscriber, or let the shared set
grow past the bound.
"""

from __future__ import annotations

import contextlib
import uuid
from functools import partial
from typing import Final

import structlog
import trio

from gateway.broker.lease import LeaderLease
from gateway.errors import BrokerUnavailable
from gateway.sources.interest import SymbolInterest
from gateway.symbols import known_symbols

__all__ = ["ReplicaInterest"]

log = structlog.get_logger(__name__)

# Redis's own clock, in ms (TIME is allowed before writes: scripts replicate their effects).
_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
PUBLISH_SCRIPT: Final = (
    _NOW
    + """
-- KEYS[1]: expiries, KEYS[2]: symbols. ARGV[1]: replica id, ARGV[2]: TTL in ms, ARGV[3]: symbols.
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
-- Both keys outlive the last live replica by a little, then go: no garbage without a leader.
redis.call('PEXPIRE', KEYS[1], 3 * tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], 3 * tonumber(ARGV[2]))
return 1
"""
)
READ_SCRIPT: Final = (
    _NOW
    + """
-- KEYS[1]: expiries, KEYS[2]: symbols. Drops the expired replicas, returns the live ones.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('HGETALL', KEYS[2])
"""
)
# The leader reads at most this often (and at least four times per TTL).
POLL: Final = 0.5


class ReplicaInterest:
    """`await ReplicaInterest(lease, interest).run()` on every replica (supervised)."""

    def __init__(
        self, lease: LeaderLease, interest: SymbolInterest, *, ttl: float | None = None
    ) -> None:
        client = lease.client
        self.client = client
        self.leads = lease.holds
        self.interest = interest
        self.ttl = client.settings.lease if ttl is None else ttl
        self.poll = min(POLL, self.ttl / 4)
        self.replica = uuid.uuid4().hex
        self.keys = [client.key("interest", "expiry"), client.key("interest", "symbols")]
        self._publish = client.redis.register_script(PUBLISH_SCRIPT)
        self._read = client.redis.register_script(READ_SCRIPT)
        self.truncated = 0  # reads whose union was cut to the bound

    async def run(self) -> None:
        """Publish this replica's holds forever; while it leads, hold every replica's too."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publish_forever)
                nursery.start_soon(self._follow_forever)
        finally:
            self.interest.set_shared(())
            with trio.CancelScope(shield=True):
                await self._withdraw()

    async def _publish_forever(self) -> None:
        published: frozenset[str] | None = None
        renew_at = 0.0
        while True:
            version = self.interest.version
            held = self.interest.held
            now = trio.current_time()
            if held != published or now >= renew_at:
                try:
                    await self.publish(held)
                except BrokerUnavailable:
                    published, renew_at = None, now + min(1.0, self.ttl / 3)
                else:
                    # Nothing held, nothing to renew: the entry is gone until the next hold.
                    published = held
                    renew_at = now + self.ttl / 3 if held else float("inf")
            with trio.move_on_at(renew_at):
                await self.interest.wait_changed(version)

    async def publish(self, held: frozenset[str]) -> None:
        """Write this replica's entry once (`run` renews it); nothing held deletes it."""
        symbols = " ".join(sorted(held)[: self.interest.max_symbols])
        ttl_ms = max(1, int(self.ttl * 1000))
        call = partial(self._publish, keys=self.keys, args=[self.replica, ttl_ms, symbols])
        await self.client.call(call)

    async def _follow_forever(self) -> None:
        while True:
            if self.leads():
                try:
                    entries: object = await self.client.call(partial(self._read, keys=self.keys))
                except BrokerUnavailable:
                    pass  # keep the last set read; a leader cut off from Redis is deposed soon
                else:
                    self._hold(entries)
            elif self.interest.shared:
                self.interest.set_shared(())  # not the leader: its streams do not run here
            await trio.sleep(self.poll)

    def _hold(self, entries: object) -> None:
        """Hold the union of the other replicas' symbols (HGETALL's flat id, symbols list)."""
        flat = list(entries) if isinstance(entries, list | tuple) else []
        union: set[str] = set()
        for replica, symbols in zip(flat[::2], flat[1::2], strict=False):
            if _text(replica) != self.replica:  # our own holds are held locally already
                union.update(_text(symbols).split())
        wanted = union & known_symbols()
        kept = self.interest.set_shared(wanted)
        if len(kept) < len(wanted):
            self.truncated += 1
            log.warning("interest.shared_truncated", wanted=len(wanted), kept=len(kept))

    async def _withdraw(self) -> None:
        """Delete this replica's entry so the leader drops its symbols now, not after the TTL
        (half a second at most: shutdown stays within its bound)."""
        with contextlib.suppress(BrokerUnavailable):
            call = partial(self._publish, keys=self.keys, args=[self.replica, 1, ""])
            await self.client.call(call, limit=min(self.client.settings.timeout, 0.5))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)

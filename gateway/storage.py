"""The store's entry point: what the rest of the gateway may use of `gateway.store`.

`Storage` is the database (WAL SQLite, one batching writer, reads off the event loop);
`CandleStore`, `ProviderStore` and the API-key functions read and write their own tables
through it. Import these names from here, not from the modules of `gateway.store`, so the
store's inner layout can change without touching its callers.
"""

from gateway.store.database import Storage

__all__ = ["Storage"]

"""The store, on SQLite or PostgreSQL: connection, migrations, the batching writer, and one
module per table group.

`database` holds `Storage`, the facade that composes `connection` (opening the file, WAL, the
reader pool; `postgres` is its PostgreSQL counterpart, and `dialect` rewrites the store's
SQLite statements for it), `migrations` (the schema, append-only), `writer` (the single
batching writer) and `ticks` (the SQL of price_ticks and candles_1m); `candles`,
`provider_records` and `api_keys` are the queries of their tables. The rest of the gateway
imports these through `gateway.storage`, the store's entry point. Must never import anything
above it (api, prices, providers, sources, upstream, ingest): the store only keeps what it is
given.
"""

"""Market-wide answers: trending coins, the global overview, DeFi protocols and TVL.

Owns how on-demand market answers are got and kept: which pool and which providers' fetchers
answer each one (`kinds`), failover, caching and the fallback to the last good answer
(`answers`, `cache`), and how old any served answer may be (`freshness`, also applied to the
latest prices by the API). Must never import the API layer (`gateway.api`, `gateway.schema`),
`gateway.ingest` or the supervisor; it is handed the pools rather than the registry.
"""

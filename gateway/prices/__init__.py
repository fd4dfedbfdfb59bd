"""Prices: consensus across providers, candle history with gap filling, live candles, backfill.

Owns every rule that turns many providers' ticks and candles into the figures a client is
served. Reads the store through `gateway.storage` and asks upstreams through `gateway.sources`
candle fetchers; it is handed the list of usable providers rather than importing the
provider registry at run time. Must never import the API layer (`gateway.api`,
`gateway.schema`), `gateway.ingest` or the supervisor.
"""

"""Sources: one module per upstream family, each turning an upstream's payload into records.

`base` holds the collector base classes and shared parsing helpers, `news_base` the polling
collector of news and Fear & Greed records (with conditional GET), `streams` the live
WebSocket client machinery (with its `stream_*` siblings: settings and status values, parsing
helpers, the publish throttle, connection trouble, the group of all streams), `candles` the
candle-fetcher contract; each other module is one upstream family (a pure `parse_…` function
tested against fixture payloads, a collector, and where the upstream has them a stream client
or a candle fetcher). `registry` is the one map
from a provider id to what runs for it.

This package imports nothing at import time, so a source module can import `base` without a
cycle. Must never import the store, the providers registry, prices or the API layer: a source
fetches and parses, and hands records to whoever runs it.
"""

"""News and sentiment: one deduplicated, searchable stream of crypto news, scored, next to the
market's Fear & Greed.

`normalise` turns what a news source parsed (`gateway.news_models.NewsItem`) into an `Article`
(canonical URL, plain-text summary, UTC time, coins from `coins`); `dedup` says when two titles
are the same story; `ingest` runs the path of a new article (normalise -> store once with every
source -> score -> publish on the bus); `fear_greed` stores and publishes the index's daily
values; `service` starts the collectors of both and the tasks between them (the supervisor
calls it). `sentiment` is the transformer model that scores articles.

Must never import the API, the schema, the supervisor or the price ingest: this is the domain
layer, below them.
"""

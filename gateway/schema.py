"""The one strawberry schema the gateway serves, assembled from its parts in `gateway.api.schema`.

Each part owns one area of the public contract (the repository's `schema.graphql`, which is
what `gateway schema` prints): `prices` (prices, history, live ticks and candles, status),
`market` (market-wide and DeFi answers), `providers` (providers, pools, alerts and the admin
mutations), `quarantine` (the prices refused at ingest), `sentiment` (analyzeSentiment,
sentimentSummary), `chains` (chain heads and gas), `whales` (whale transactions), `onchain`
(DEX pools and volumes, explorer statistics). This module only merges their Query,
Mutation and Subscription types.

Must never define a type or a resolver itself: they belong in their part.
"""

from __future__ import annotations

import strawberry
from strawberry.tools import merge_types

from gateway.api.schema.chains import ChainQuery, ChainSubscription
from gateway.api.schema.market import MarketQuery
from gateway.api.schema.news import NewsQuery, NewsSubscription
from gateway.api.schema.onchain import OnchainQuery
from gateway.api.schema.operations import OperationsQuery
from gateway.api.schema.prices import PriceQuery, PriceSubscription
from gateway.api.schema.providers import ProviderMutation, ProviderQuery, ProviderSubscription
from gateway.api.schema.quarantine import QuarantineQuery
from gateway.api.schema.sentiment import SentimentMutation, SentimentQuery
from gateway.api.schema.whales import WhaleQuery, WhaleSubscription

__all__ = ["build_schema"]


def build_schema() -> strawberry.Schema:
    """The strawberry schema; its `_schema` is the graphql-core schema our engine executes."""
    return strawberry.Schema(
        query=merge_types(
            "Query",
            (
                PriceQuery,
                ProviderQuery,
                MarketQuery,
                QuarantineQuery,
                NewsQuery,
                ChainQuery,
                SentimentQuery,
                WhaleQuery,
                OnchainQuery,
                OperationsQuery,
            ),
        ),
        mutation=merge_types("Mutation", (ProviderMutation, SentimentMutation)),
        subscription=merge_types(
            "Subscription",
            (
                PriceSubscription,
                ProviderSubscription,
                NewsSubscription,
                ChainSubscription,
                WhaleSubscription,
            ),
        ),
    )

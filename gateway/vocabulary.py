"""The gateway's fixed vocabularies, each defined once and reused by config, pools and schema.

Provider categories, provider states, pool rotation strategies, candle intervals, and the
roles and tiers of our own API keys are
words that appear in providers.toml, in the pools' logic, in the store and in the public
GraphQL enums. Each is one `StrEnum` here: a member *is* its string, so the store and the
providers file keep plain strings, validation is `value in Category`, and the schema
registers these very classes as its enums (`gateway.api.schema`), so the API cannot offer a
word the rest of the gateway does not know.

Must never import anything from the gateway: this is the bottom layer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "CATEGORY_LABELS",
    "INTERVAL_SECONDS",
    "LOG_LEVELS",
    "ROLES",
    "TIER_NAMES",
    "Category",
    "Interval",
    "ProviderState",
    "RotationStrategy",
    "SentimentLabel",
]


class Category(enum.StrEnum):
    """What kind of data a provider serves (providers.toml `category`/`categories`)."""

    MARKET_DATA = "MARKET_DATA"
    EXPLORER = "EXPLORER"
    RPC = "RPC"
    NEWS = "NEWS"
    SENTIMENT = "SENTIMENT"
    WHALE_TRACKING = "WHALE_TRACKING"
    ONCHAIN = "ONCHAIN"
    DEFI = "DEFI"


# How a category is named in a human title (the default pools' names).
CATEGORY_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        Category.MARKET_DATA: "Market data",
        Category.EXPLORER: "Explorers",
        Category.RPC: "RPC",
        Category.NEWS: "News",
        Category.SENTIMENT: "Sentiment",
        Category.WHALE_TRACKING: "Whale tracking",
        Category.ONCHAIN: "On-chain analytics",
        Category.DEFI: "DeFi",
    }
)


class ProviderState(enum.StrEnum):
    """A provider's health, from its recent requests (see gateway.providers.status)."""

    ONLINE = "ONLINE"
    DEGRADED = "DEGRADED"
    OFFLINE = "OFFLINE"
    UNCONFIGURED = "UNCONFIGURED"
    UNKNOWN = "UNKNOWN"


class RotationStrategy(enum.StrEnum):
    """How a pool orders its members for each request (see gateway.upstream.pool)."""

    ROUND_ROBIN = "ROUND_ROBIN"
    PRIORITY = "PRIORITY"
    WEIGHTED_RANDOM = "WEIGHTED_RANDOM"
    LEAST_USED = "LEAST_USED"
    FASTEST_RESPONSE = "FASTEST_RESPONSE"


class SentimentLabel(enum.StrEnum):
    """What a sentiment model says of a text (articles in the store, the public API)."""

    BULLISH = "BULLISH"
    BEARISH = "BEARISH"
    NEUTRAL = "NEUTRAL"


class Interval(enum.StrEnum):
    """A candle width of the public API."""

    M1 = "M1"
    M5 = "M5"
    M15 = "M15"
    H1 = "H1"
    H4 = "H4"
    D1 = "D1"

    @property
    def seconds(self) -> int:
        return INTERVAL_SECONDS[self]


INTERVAL_SECONDS: Final[Mapping[str, int]] = MappingProxyType(
    {
        Interval.M1: 60,
        Interval.M5: 300,
        Interval.M15: 900,
        Interval.H1: 3600,
        Interval.H4: 14_400,
        Interval.D1: 86_400,
    }
)


# The roles and tiers an API key of ours can have (gateway keys create, GATEWAY_TIER_*).
ROLES: Final = ("viewer", "admin")
TIER_NAMES: Final = ("free", "pro", "enterprise")

# The levels GATEWAY_LOG_LEVEL may name (gateway.log maps them; any other is a ConfigError).
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

"""News and Fear & Greed records, from an upstream's payload to what the store gives back.

Three stages of one article, each a frozen dataclass built only from what an upstream sent:

* `NewsItem`: what a news source parsed (`gateway.sources.feeds`, `reddit`, `cryptopanic`,
  `newsdata`): the upstream's own title, link, time (None when it gave none), summary (still
  HTML) and coin tags. Nothing is cleaned up yet.
* `Article`: the same story normalised by `gateway.news.normalise` (canonical URL, plain-text
  summary, UTC time, coins matched against the asset table): what the store is asked to keep.
* `StoredArticle`: a row of the store, with its id, every source that carried it, and its
  sentiment when a model scored it (None otherwise: never a made-up score).

`FearGreedPoint` is one daily value of a Fear & Greed index (alternative.me), as parsed and as
stored. Times are aware UTC datetimes.

Must never import anything above `gateway.models`: sources, the store and the API all use
these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "Article",
    "ArticleSource",
    "FearGreedPoint",
    "NewsItem",
    "StoredArticle",
    "StoredSentiment",
]


@dataclass(frozen=True, slots=True)
class NewsItem:
    """One entry of a news upstream, as parsed: not yet cleaned, matched or deduplicated.

    `published_at` is None when the upstream gave no usable time (the ingest then uses the
    time the gateway first saw it, which is when the story was known to exist). `coins` are
    the upstream's own tags (CryptoPanic's currencies, NewsData's coin list), upper-cased;
    most feeds have none. `summary` may hold HTML.
    """

    source: str  # the provider id that carried it
    title: str
    url: str
    published_at: datetime | None
    summary: str | None = None
    coins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Article:
    """A normalised story, ready to be stored (see `gateway.news.normalise`).

    `url` is canonical (tracking parameters and fragments stripped); `title_key` is the title
    reduced to lower-case words, which the store indexes for near-duplicate detection;
    `summary` is plain text, capped; `coins` are canonical symbols, sorted. `rank` is the
    source's provider priority (lower first): a story shows the title and link of its
    best-ranked source, so a publisher's own headline is preferred to a Reddit post's.
    """

    source: str
    title: str
    url: str
    title_key: str
    published_at: datetime
    seen_at: datetime
    summary: str | None
    coins: tuple[str, ...]
    rank: int = 1


@dataclass(frozen=True, slots=True)
class ArticleSource:
    """One source that carried a stored story, and its own (canonical) link to it."""

    source: str
    url: str
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class StoredSentiment:
    """A model's verdict on an article: label BULLISH | BEARISH | NEUTRAL, score -1..1,
    confidence 0..1, and the model that gave it."""

    label: str
    score: float
    confidence: float
    model: str


@dataclass(frozen=True, slots=True)
class StoredArticle:
    """A story as the store keeps it: the first source's title and link, every source."""

    id: int
    title: str
    url: str
    source: str  # the first source that carried it
    published_at: datetime
    summary: str | None
    coins: tuple[str, ...]
    sources: tuple[ArticleSource, ...]
    sentiment: StoredSentiment | None


@dataclass(frozen=True, slots=True)
class FearGreedPoint:
    """One value of a Fear & Greed index: 0 (extreme fear) to 100 (extreme greed).

    `at` is the start of the (UTC) day the value describes, as the upstream stamps it;
    `classification` is the upstream's own words ("Extreme Fear", "Greed", ...).
    """

    value: int
    classification: str
    at: datetime
    provider: str

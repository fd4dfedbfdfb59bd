"""GraphQL for news and Fear & Greed: `news`, `fearGreed`, `fearGreedHistory` and the `news` and
`fearGreed` subscriptions.

`news(search, coin, sentiment, first, after)` is a connection walked by keyset: each edge's
cursor is an opaque token of its article's (publication time, id), and `after` returns what
comes strictly after it, newest first. A page boundary therefore never moves while new stories
arrive (they sort before it), so walking every page sees each stored story once, with no repeat
and no gap. `search` finds every word in the title or summary (FTS5; the words are quoted, so
no input is query syntax), `coin` is a canonical symbol (UNKNOWN_SYMBOL with suggestions
otherwise), `sentiment` a label. A story's `sentiment` is null until a model scored it, and
while no model can be loaded every `news` answer carries a `MODEL_UNAVAILABLE` warning saying
why: no score is ever made up.

The types `Sentiment`, `SentimentLabel` and `FearGreed` are defined here once, for every part
of the schema that returns them (`analyzeSentiment`, `sentimentSummary`).

Must never quote user text into SQL, or serve a value the store does not hold.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, cast

import strawberry
from strawberry.types import Info

from gateway.api.context import RequestContext
from gateway.errors import BadUserInput, GatewayError, UnknownSymbol
from gateway.models import epoch_ms, utc_now
from gateway.news_models import FearGreedPoint, StoredArticle, StoredSentiment
from gateway.storage import PageQuery, fts_query
from gateway.symbols import known_symbols, normalize_symbol
from gateway.vocabulary import SentimentLabel

if TYPE_CHECKING:
    from gateway.news.service import NewsService
    from gateway.pubsub import EventBus

__all__ = [
    "FearGreed",
    "NewsArticle",
    "NewsConnection",
    "NewsQuery",
    "NewsSubscription",
    "Sentiment",
    "fear_greed",
    "sentiment",
]

MAX_FIRST: Final = 100
MAX_SEARCH_CHARS: Final = 200
MAX_COIN_CHARS: Final = 24
MAX_CURSOR_CHARS: Final = 64
MAX_HISTORY_DAYS: Final = 3650
# The index is daily: a newest value older than this is served with a STALE_DATA warning.
FEAR_GREED_FRESH: Final = timedelta(hours=48)
MODEL_UNAVAILABLE: Final = "MODEL_UNAVAILABLE"
_CURSOR_PREFIX: Final = "n1:"
_CURSOR_RE: Final = re.compile(r"n1:(\d{1,16}):(\d{1,19})")

strawberry.enum(SentimentLabel, description="What a sentiment model says of a text.")


@strawberry.type(description="A sentiment model's verdict on a text.")
class Sentiment:
    label: SentimentLabel
    score: float = strawberry.field(description="-1 (bearish) to 1 (bullish).")
    model: str = strawberry.field(description="The model that gave it (id or path).")
    confidence: float | None = strawberry.field(
        default=None, description="0 to 1: how sure the model is of its label."
    )


@strawberry.type(description="One value of a Fear & Greed index: 0 extreme fear, 100 greed.")
class FearGreed:
    value: int
    classification: str = strawberry.field(description="The index's own words, e.g. 'Fear'.")
    at: datetime = strawberry.field(description="The start of the UTC day it describes.")
    provider: str


@strawberry.type(description="A news story, stored once however many sources carried it.")
class NewsArticle:
    id: strawberry.ID
    title: str
    url: str = strawberry.field(description="The first source's link, canonical.")
    source: str = strawberry.field(description="The first source (provider id) to carry it.")
    published_at: datetime = strawberry.field(
        description="As the source dates it, in UTC; when it gave none, when first collected."
    )
    summary: str | None = strawberry.field(description="Plain text, capped.")
    coins: list[str] = strawberry.field(description="Canonical symbols it mentions.")
    sentiment: Sentiment | None = strawberry.field(
        description="Null until scored, or when no model is available (see MODEL_UNAVAILABLE)."
    )
    sources: list[str] = strawberry.field(description="Every source that carried it.")


@strawberry.type(description="One article of a page, with the cursor that follows it.")
class NewsEdge:
    cursor: str
    node: NewsArticle


@strawberry.type(description="Where a page ends and whether more follow.")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="A page of news, newest first.")
class NewsConnection:
    edges: list[NewsEdge]
    page_info: PageInfo


def sentiment(stored: StoredSentiment) -> Sentiment:
    """The API's form of a stored verdict."""
    return Sentiment(
        label=SentimentLabel(stored.label),
        score=stored.score,
        model=stored.model,
        confidence=stored.confidence,
    )


def fear_greed(point: FearGreedPoint) -> FearGreed:
    """The API's form of an index value."""
    return FearGreed(
        value=point.value, classification=point.classification, at=point.at, provider=point.provider
    )


def _article(stored: StoredArticle) -> NewsArticle:
    return NewsArticle(
        id=strawberry.ID(str(stored.id)),
        title=stored.title,
        url=stored.url,
        source=stored.source,
        published_at=stored.published_at,
        summary=stored.summary,
        coins=list(stored.coins),
        sentiment=sentiment(stored.sentiment) if stored.sentiment else None,
        sources=list(dict.fromkeys(s.source for s in stored.sources)),
    )


def encode_cursor(article: StoredArticle) -> str:
    """The opaque cursor of an article's place in the newest-first order."""
    raw = f"{_CURSOR_PREFIX}{epoch_ms(article.published_at)}:{article.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """The (published_ms, id) a cursor stands for; BAD_USER_INPUT for anything else."""
    bad = BadUserInput("after is not a cursor this API gave (use a pageInfo.endCursor)")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    match = _CURSOR_RE.fullmatch(raw)
    if match is None:
        raise bad
    return int(match.group(1)), int(match.group(2))


def _coin(raw: str) -> str:
    if len(raw) > MAX_COIN_CHARS:
        raise BadUserInput(f"a coin is at most {MAX_COIN_CHARS} characters, got {len(raw)}")
    symbol = normalize_symbol(raw)
    known = known_symbols()
    if symbol not in known:
        raise UnknownSymbol(raw, difflib.get_close_matches(symbol, sorted(known), n=3))
    return symbol


def _search(raw: str) -> str:
    if len(raw) > MAX_SEARCH_CHARS:
        raise BadUserInput(f"search is at most {MAX_SEARCH_CHARS} characters, got {len(raw)}")
    query = fts_query(raw)
    if query is None:
        raise BadUserInput("search holds no word to look for")
    return query


def _news(info: Info) -> NewsService:
    service = cast(RequestContext, info.context).services.news
    if service is None:
        raise GatewayError("the news service is not running")
    return service


@strawberry.type
class NewsQuery:
    @strawberry.field(
        description="Crypto news from every source, each story once, newest first; `first` "
        f"(1-{MAX_FIRST}) per page, `after` a pageInfo.endCursor. `search` finds stories "
        "holding every word in the title or summary; `coin` those mentioning a symbol; "
        "`sentiment` those a model labelled so."
    )
    async def news(
        self,
        info: Info,
        search: str | None = None,
        coin: str | None = None,
        sentiment: SentimentLabel | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> NewsConnection:
        if not 1 <= first <= MAX_FIRST:
            raise BadUserInput(f"first must be between 1 and {MAX_FIRST}, got {first}")
        query = PageQuery(
            limit=first + 1,
            after=decode_cursor(after) if after is not None else None,
            search=_search(search) if search is not None else None,
            coin=_coin(coin) if coin is not None else None,
            label=SentimentLabel(sentiment).value if sentiment is not None else None,
        )
        service = _news(info)
        available, reason = service.model_status
        if not available:
            cast(RequestContext, info.context).warn(
                MODEL_UNAVAILABLE,
                f"article sentiment is null: {reason}",
                reason=reason,
            )
        found = await service.store.page(query)
        page = found[:first]
        edges = [NewsEdge(cursor=encode_cursor(a), node=_article(a)) for a in page]
        return NewsConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=len(found) > first,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )

    @strawberry.field(description="The newest Fear & Greed value (null before the first one).")
    async def fear_greed(self, info: Info) -> FearGreed | None:
        point = await _news(info).store.latest_fear_greed()
        if point is None:
            return None
        age = utc_now() - point.at
        if age > FEAR_GREED_FRESH:
            cast(RequestContext, info.context).warn(
                "STALE_DATA",
                f"the newest Fear & Greed value is for {point.at.date().isoformat()}",
                ageSeconds=round(age.total_seconds()),
                provider=point.provider,
            )
        return fear_greed(point)

    @strawberry.field(
        description=f"Daily Fear & Greed values of the last `days` (1-{MAX_HISTORY_DAYS}), "
        "oldest first."
    )
    async def fear_greed_history(self, info: Info, days: int = 30) -> list[FearGreed]:
        if not 1 <= days <= MAX_HISTORY_DAYS:
            raise BadUserInput(f"days must be between 1 and {MAX_HISTORY_DAYS}, got {days}")
        since = utc_now() - timedelta(days=days)
        return [fear_greed(p) for p in await _news(info).store.fear_greed_since(since)]


async def _news_stream(bus: EventBus, coin: str | None) -> AsyncGenerator[NewsArticle, None]:
    with bus.news.subscribe() as articles:
        async for article in articles:
            if coin is None or coin in article.coins:
                yield _article(article)


async def _fear_greed_stream(bus: EventBus) -> AsyncGenerator[FearGreed, None]:
    with bus.fear_greed.subscribe() as points:
        async for point in points:
            yield fear_greed(point)


@strawberry.type
class NewsSubscription:
    @strawberry.subscription(
        description="Each new story as it is stored (and scored, when a model is loaded); "
        "with `coin`, only those mentioning it."
    )
    def news(self, info: Info, coin: str | None = None) -> AsyncGenerator[NewsArticle, None]:
        # Checked before the stream exists: a bad coin is an error for the subscribe request.
        wanted = _coin(coin) if coin is not None else None
        return _news_stream(_news(info).ingest.bus, wanted)

    @strawberry.subscription(description="Each new (or revised) daily Fear & Greed value.")
    def fear_greed(self, info: Info) -> AsyncGenerator[FearGreed, None]:
        return _fear_greed_stream(_news(info).fear_greed.bus)

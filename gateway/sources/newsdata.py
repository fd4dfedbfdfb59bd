"""NewsData.io (keyed: `apikey`), `GET /latest`: the newest articles matching a crypto query.

The free plan has 200 credits a day and 30 per 15 minutes (providers.toml), one credit per
request of up to 10 articles, so one poll is one request. The answer is `{"status": "success",
"totalResults", "results": [article, …], "nextPage"}` with each article `{"article_id", "title",
"link", "keywords", "creator", "description", "content", "pubDate" ("2024-03-25 08:45:00"),
"pubDateTZ" ("UTC"), "image_url", "source_id", "source_name", "language", "country",
"category", …}` (newsdata.io/blog/news-api-response-object and the documentation's examples);
the crypto endpoint adds `"coin": ["btc", …]`, read as coin tags when present. An error answer
is `{"status": "error", "results": {"message", "code"}}`.

Must never follow `nextPage` (credits), or read `pubDate` in a zone other than the one
`pubDateTZ` names (UTC, the only one NewsData answers with; another is refused, not guessed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from gateway.errors import UpstreamPayloadError
from gateway.news_models import NewsItem
from gateway.sources.news_base import RecordCollector

__all__ = ["LATEST_PARAMS", "NewsDataCollector", "parse_latest"]

# Crypto news in English: NewsData has no crypto category on /latest, so a query names it.
LATEST_PARAMS: Final = {"q": "crypto OR bitcoin OR ethereum", "language": "en"}
_PUB_DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


def _published(article: dict[str, Any]) -> datetime | None:
    raw, zone = article.get("pubDate"), article.get("pubDateTZ", "UTC")
    if not isinstance(raw, str) or zone not in ("UTC", None):
        return None
    try:
        return datetime.strptime(raw.strip(), _PUB_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _article(article: Any, provider: str) -> NewsItem | None:
    if not isinstance(article, dict):
        return None
    title, link = article.get("title"), article.get("link")
    if not isinstance(title, str) or not title.strip():
        return None
    if not isinstance(link, str) or not link.startswith(("http://", "https://")):
        return None
    description = article.get("description")
    summary = description if isinstance(description, str) and description.strip() else None
    coins = tuple(c.strip().upper() for c in article.get("coin") or () if isinstance(c, str))
    return NewsItem(provider, title, link, _published(article), summary, coins)


def parse_latest(payload: Any, *, provider: str) -> list[NewsItem]:
    """The articles of one `/latest` answer, in its order (newest first)."""
    if not isinstance(payload, dict):
        raise UpstreamPayloadError("answer is not an object", provider=provider)
    results = payload.get("results")
    if payload.get("status") != "success" or not isinstance(results, list):
        message = results.get("message") if isinstance(results, dict) else None
        raise UpstreamPayloadError(
            f"error answer: {message or payload.get('status')!r}", provider=provider
        )
    return [item for article in results if (item := _article(article, provider)) is not None]


class NewsDataCollector(RecordCollector[NewsItem]):
    """Polls `/latest` for crypto news (one credit per poll)."""

    name: ClassVar[str] = "newsdata"

    async def poll(self) -> list[NewsItem]:
        return await self.fetch_json(
            "/latest",
            lambda payload: parse_latest(payload, provider=self.provider.id),
            params=LATEST_PARAMS,
        )

"""CryptoPanic's news aggregator API (keyed: `auth_token`), `GET /posts/`.

One poll asks for the public news feed (`public=true`, `kind=news`: articles, not media). The
answer is paginated: `{"count", "next", "previous", "results": [post, …]}`, each post
`{"kind", "domain", "source": {"title", "region", "domain", "path"}, "title", "published_at"
(ISO 8601, UTC), "slug", "id", "url", "created_at", "votes": {…}, "currencies": [{"code",
"title", "slug", "url"}]}` (the field list of CryptoPanic's developer page as its client
libraries quote it; unverified against the page itself, which could not be read). The first
page is enough at a poll every ten minutes. `url` is CryptoPanic's own page for the story, so it
meets the publisher's feed by near-identical title in the store; `currencies` become the item's
coin tags; `description` (present on newer plans) is the summary when there is one.

Must never follow `next` (one request per poll, within the plan's limits), or keep a post
without a title, a link and a time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from gateway.errors import UpstreamPayloadError
from gateway.news_models import NewsItem
from gateway.sources.news_base import RecordCollector

__all__ = ["POSTS_PARAMS", "CryptoPanicCollector", "parse_iso_time", "parse_posts"]

POSTS_PARAMS: Final = {"public": "true", "kind": "news"}


def parse_iso_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string (`2024-03-25T08:45:00Z`, with or
    without fraction or offset), or None; a time without an offset is read as UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _post(post: Any, provider: str) -> NewsItem | None:
    if not isinstance(post, dict):
        return None
    title, url = post.get("title"), post.get("url")
    published = parse_iso_time(post.get("published_at")) or parse_iso_time(post.get("created_at"))
    if not isinstance(title, str) or not title.strip() or published is None:
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    coins = tuple(
        code.strip().upper()
        for currency in post.get("currencies") or ()
        if isinstance(currency, dict) and isinstance(code := currency.get("code"), str)
    )
    description = post.get("description")
    summary = description if isinstance(description, str) and description.strip() else None
    return NewsItem(provider, title, url, published, summary, coins)


def parse_posts(payload: Any, *, provider: str) -> list[NewsItem]:
    """The posts of one page of `/posts/`, in the answer's order (newest first)."""
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list):
        raise UpstreamPayloadError("no results list in the answer", provider=provider)
    return [item for post in results if (item := _post(post, provider)) is not None]


class CryptoPanicCollector(RecordCollector[NewsItem]):
    """Polls the first page of public news posts (conditional GET)."""

    name: ClassVar[str] = "cryptopanic"

    async def poll(self) -> list[NewsItem]:
        return await self.fetch_json(
            "/posts/",
            lambda payload: parse_posts(payload, provider=self.provider.id),
            params=POSTS_PARAMS,
        )

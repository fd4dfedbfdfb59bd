"""Reddit's public JSON listing of a subreddit (r/CryptoCurrency's newest posts).

The provider's base_url is the listing itself (`…/r/CryptoCurrency/new.json`); one GET with
`limit=100` (Reddit's maximum per page) and `raw_json=1` (titles without HTML entities) is one
poll, made conditional like every news request. A listing is `{"kind": "Listing", "data":
{"children": [{"kind": "t3", "data": {title, url, permalink, created_utc, selftext, is_self,
stickied, …}}]}}` (reddit.com/dev/api, "listings"; the t3 "link" fields as the JSON answers
carry them).

A link post points at an article elsewhere: its `url` is that article, so the story meets its
other sources by canonical URL in the store. A self post is a discussion on Reddit: its link is
the post's permalink and its text the summary. Pinned (stickied) posts are the subreddit's
standing threads, not news, and are left out.

Must never fetch another page or subreddit than the one configured, or invent a time: a post
without a sane `created_utc` is dropped (Reddit always sends one, so that is a broken answer).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from gateway.errors import UpstreamPayloadError
from gateway.news_models import NewsItem
from gateway.sources.base import number_or_none
from gateway.sources.news_base import RecordCollector

__all__ = ["LISTING_PARAMS", "REDDIT_ORIGIN", "RedditCollector", "parse_listing"]

REDDIT_ORIGIN: Final = "https://www.reddit.com"
LISTING_PARAMS: Final = {"limit": "100", "raw_json": "1"}


def _post(data: Any, provider: str) -> NewsItem | None:
    if not isinstance(data, dict) or data.get("stickied") is True:
        return None
    title, permalink = data.get("title"), data.get("permalink")
    if not isinstance(title, str) or not title.strip():
        return None
    created = number_or_none(data.get("created_utc"))
    if created is None or not math.isfinite(created) or created <= 0:
        return None
    link = data.get("url")
    if data.get("is_self") is True or not isinstance(link, str) or not link.startswith("http"):
        if not isinstance(permalink, str) or not permalink.startswith("/"):
            return None
        link = REDDIT_ORIGIN + permalink
    text = data.get("selftext")
    summary = text if isinstance(text, str) and text.strip() else None
    return NewsItem(provider, title, link, datetime.fromtimestamp(created, UTC), summary)


def parse_listing(payload: Any, *, provider: str) -> list[NewsItem]:
    """The posts of a Reddit listing, as the listing orders them (newest first for /new)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    children = data.get("children") if isinstance(data, dict) else None
    if (
        not isinstance(payload, dict)
        or payload.get("kind") != "Listing"
        or not isinstance(children, list)
    ):
        raise UpstreamPayloadError("not a Reddit listing", provider=provider)
    items = []
    for child in children:
        if isinstance(child, dict) and child.get("kind") == "t3":
            item = _post(child.get("data"), provider)
            if item is not None:
                items.append(item)
    return items


class RedditCollector(RecordCollector[NewsItem]):
    """Polls the configured listing (conditional GET)."""

    name: ClassVar[str] = "reddit"

    async def poll(self) -> list[NewsItem]:
        return await self.fetch_json(
            "",
            lambda payload: parse_listing(payload, provider=self.provider.id),
            params=LISTING_PARAMS,
        )

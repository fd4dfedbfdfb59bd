"""RSS and Atom news feeds (CoinDesk, Cointelegraph, Decrypt, Bitcoin Magazine, The Block,
CryptoSlate, BeInCrypto, Crypto Briefing, and any entry with `collector = "rss"`).

The feed is the provider's health-check path (providers.toml: "the health check is a GET of the
feed itself"; a feed URL ending in '/' keeps it there because base_url loses a trailing '/').
It is fetched with conditional GET (`RecordCollector.fetch_raw`): most polls are a 304 with no
body. A body is parsed by `feedparser`, which finds the encoding from the bytes, the XML
declaration and the Content-Type (a feed in ISO-8859-1 or windows-1252 reads right), reads every
RSS and Atom dialect and its date formats, and sanitises embedded HTML. Parsing runs in a worker
thread: a large feed takes feedparser tens of milliseconds, which the event loop must not spend.

`parse_feed` is pure: a document that is not a feed, or so broken that no entry survives, is an
`UpstreamPayloadError` (counted against the provider like any failure); a document with a flaw
feedparser recovers from keeps the entries that have a title and a link. An entry without a date
keeps `published_at` None (the ingest stamps when it was first seen). Nothing is cleaned up here:
normalisation is `gateway.news.normalise`'s.

Must never fetch anything but the provider's own feed URL (feedparser is given bytes, never a
URL, so it cannot follow one), or invent a title, link or date.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Final

import feedparser
import trio

from gateway.errors import UpstreamPayloadError
from gateway.news_models import NewsItem
from gateway.sources.news_base import RecordCollector

__all__ = ["ACCEPT", "MAX_ENTRIES", "FeedCollector", "feed_path", "parse_feed"]

# Entries read from one document at most (a feed holds 10-50; more is not a news feed).
MAX_ENTRIES: Final = 200
ACCEPT: Final = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


def _struct_time(value: Any) -> datetime | None:
    """An aware UTC datetime from feedparser's parsed date (a UTC struct_time), or None."""
    if not isinstance(value, time.struct_time):
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _entry(entry: Any, provider: str) -> NewsItem | None:
    title = _text(entry.get("title"))
    link = _text(entry.get("link"))
    if link is None:  # an RSS <guid isPermaLink="true"> is the link when <link> is missing
        guid = _text(entry.get("id"))
        link = guid if guid is not None and guid.startswith(("http://", "https://")) else None
    if title is None or link is None or not link.startswith(("http://", "https://")):
        return None
    published = _struct_time(entry.get("published_parsed")) or _struct_time(
        entry.get("updated_parsed")
    )
    summary = _text(entry.get("summary"))
    if summary is None:
        content = entry.get("content") or ()
        summary = _text(content[0].get("value")) if content else None
    return NewsItem(provider, title, link, published, summary)


def parse_feed(body: bytes, content_type: str | None, *, provider: str) -> list[NewsItem]:
    """The entries of an RSS or Atom document, newest first as the feed lists them.

    Raises `UpstreamPayloadError` for a document that is not a feed, or one so broken that no
    usable entry is left.
    """
    headers = {"content-type": content_type} if content_type else {}
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=True)
    broken = parsed.get("bozo_exception") if parsed.get("bozo") else None
    entries = parsed.get("entries") or []
    items = [item for entry in entries[:MAX_ENTRIES] if (item := _entry(entry, provider))]
    if items:
        return items
    if not parsed.get("version"):
        why = f": {broken}" if broken is not None else ""
        raise UpstreamPayloadError(f"not an RSS or Atom feed{why}", provider=provider)
    if entries:
        raise UpstreamPayloadError(
            f"none of the feed's {len(entries)} entries has a title and a link", provider=provider
        )
    if broken is not None and not isinstance(broken, feedparser.CharacterEncodingOverride):
        raise UpstreamPayloadError(f"not a well-formed feed: {broken}", provider=provider)
    return []  # a well-formed feed with no entry today


def feed_path(provider_health_path: str | None) -> str:
    """The feed's path below base_url: the provider's health-check path ("" if none)."""
    return provider_health_path or ""


class FeedCollector(RecordCollector[NewsItem]):
    """Polls one RSS/Atom feed (conditional GET) and parses it off the event loop."""

    name: ClassVar[str] = "rss"

    async def poll(self) -> list[NewsItem]:
        health = self.provider.health
        response = await self.fetch_raw(
            feed_path(health.path if health else None), headers={"Accept": ACCEPT}
        )
        if response.not_modified:
            return []
        parse = partial(parse_feed, response.body, response.content_type, provider=self.provider.id)
        try:
            items: list[NewsItem] = await trio.to_thread.run_sync(parse)
        except UpstreamPayloadError as exc:  # reported here, on the event loop's thread
            self.ctx.client.report_payload_error(self.provider, exc)
            raise
        return items

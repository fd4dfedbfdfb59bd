"""The simulator's news and Fear & Greed upstreams (mounted by `tests/simulator/rest.py`).

Every news provider of providers.toml is served under its own prefix, at the path its entry
polls (the feed path is the entry's health path)::

    /coindesk/arc/outboundfeeds/rss/, /cointelegraph/rss, /decrypt/feed,
    /bitcoinmagazine/.rss/full/, /theblock/rss.xml, /cryptoslate/feed/, /beincrypto/feed/,
    /cryptobriefing/feed/                         RSS 2.0 (fixtures/news_<feed>.xml)
    /reddit-cryptocurrency/r/CryptoCurrency/new.json    a Reddit listing (reddit_new.json)
    /cryptopanic/api/v1/posts/?auth_token=        CryptoPanic posts (cryptopanic_posts.json)
    /newsdata/api/1/latest?apikey=                NewsData.io latest (newsdata_latest.json)
    /alternative-me/fng/?limit=N                  alternative.me Fear & Greed, `fng_days` days

The fixtures hold what the issue asks the gateway to survive: the same story on three feeds
(CoinDesk, Cointelegraph, Decrypt), HTML-laden summaries (Crypto Briefing), entries without a
date (CryptoSlate), a body that is not UTF-8 (BeInCrypto, windows-1252 as its XML declaration
says), and a truncated document (`news_broken.xml`, served with `serve_raw`). A hang is the
rest simulator's `Fault.hang()`.

Every answer carries an `ETag` (a hash of the body) and a `Last-Modified`; a request whose
`If-None-Match` names the current ETag (or, without one, whose `If-Modified-Since` is not older
than Last-Modified) gets `304 Not Modified` with no body, counted in `not_modified`.
`publish(...)` puts a new story at the top of a feed (so its ETag changes), `set_fear_greed`
changes today's index value.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import AuthSpec

__all__ = [
    "FEEDS",
    "NEWS_API_KEYS",
    "NEWS_AUTH",
    "NEWS_PREFIX",
    "NEWS_PROVIDERS",
    "NewsFeeds",
    "Story",
    "news_key",
]

_FIXTURES = Path(__file__).parent / "fixtures"

# Feed provider id -> the path its providers.toml entry polls (its health path).
FEEDS: dict[str, str] = {
    "coindesk": "/arc/outboundfeeds/rss/",
    "cointelegraph": "/rss",
    "decrypt": "/feed",
    "bitcoinmagazine": "/.rss/full/",
    "theblock": "/rss.xml",
    "cryptoslate": "/feed/",
    "beincrypto": "/feed/",
    "cryptobriefing": "/feed/",
}
NEWS_PREFIX: dict[str, str] = {
    **{feed: f"/{feed}" for feed in FEEDS},
    # base_url www.reddit.com/r/CryptoCurrency/new.json: the listing is the base URL itself
    "reddit-cryptocurrency": "/reddit-cryptocurrency/r/CryptoCurrency/new.json",
    "cryptopanic": "/cryptopanic/api/v1",
    "newsdata": "/newsdata/api/1",
    "alternative-me": "/alternative-me",
}
NEWS_PROVIDERS = tuple(NEWS_PREFIX)
NEWS_AUTH: dict[str, AuthSpec] = {
    "cryptopanic": AuthSpec(kind="query", name="auth_token", env="CRYPTOPANIC_API_KEY"),
    "newsdata": AuthSpec(kind="query", name="apikey", env="NEWSDATA_API_KEY"),
}
NEWS_API_KEYS: dict[str, str] = {provider: f"sim-{provider}-key" for provider in NEWS_AUTH}

Route_ = Callable[[str, str, Callable[[Request], Response]], Route]


def news_key(provider: str, request: Request) -> str | None:
    """The key a request to a keyed news provider carries (a query parameter for both)."""
    auth = NEWS_AUTH[provider]
    return request.query_params.get(auth.name or "")


@dataclass(frozen=True)
class Story:
    """One item a test adds to the top of a feed."""

    title: str
    link: str
    published: datetime | None
    summary: str = ""


def _fixture_text(name: str) -> bytes:
    return (_FIXTURES / name).read_bytes()


def _classification(value: int) -> str:
    if value <= 24:
        return "Extreme Fear"
    if value <= 46:
        return "Fear"
    if value <= 54:
        return "Neutral"
    if value <= 75:
        return "Greed"
    return "Extreme Greed"


def _story_xml(story: Story) -> bytes:
    date = f"<pubDate>{format_datetime(story.published)}</pubDate>\n" if story.published else ""
    return (
        f"<item>\n<title>{escape(story.title)}</title>\n<link>{escape(story.link)}</link>\n"
        f"{date}<description>{escape(story.summary)}</description>\n</item>\n"
    ).encode()


class NewsFeeds:
    """State and routes of the news upstreams; `Simulator.news` is one."""

    def __init__(self) -> None:
        self.stories: dict[str, list[Story]] = {feed: [] for feed in FEEDS}
        self.raw: dict[str, bytes] = {}  # provider -> body served instead (broken documents)
        self.not_modified: collections.Counter[str] = collections.Counter()
        self.fng_days = 400
        self.fng_today: int | None = None  # None: the deterministic series' own value
        self.fng_until_update = 44_231
        self.changed_at: dict[str, float] = {}

    # -- control ----------------------------------------------------------------------------

    def publish(self, feed: str, story: Story) -> None:
        """Put `story` at the top of `feed` (its ETag and Last-Modified change)."""
        self.stories[feed].insert(0, story)
        self.changed_at[feed] = time.time()

    def serve_raw(self, provider: str, body: bytes | str | None) -> None:
        """Serve `body` (a fixture name, bytes, or None to stop) instead of the real answer."""
        if body is None:
            self.raw.pop(provider, None)
        else:
            self.raw[provider] = _fixture_text(body) if isinstance(body, str) else body
        self.changed_at[provider] = time.time()

    def set_fear_greed(self, value: int) -> None:
        """Today's index value (the history before it is unchanged)."""
        self.fng_today = value
        self.changed_at["alternative-me"] = time.time()

    def fng_value(self, days_ago: int) -> int:
        """The deterministic index of `days_ago` days before today (0 is today)."""
        if days_ago == 0 and self.fng_today is not None:
            return self.fng_today
        return int(50 + 35 * math.sin(days_ago / 9.0) + 10 * math.sin(days_ago / 2.3)) % 101

    # -- serving ----------------------------------------------------------------------------

    def routes(self, route: Route_) -> list[Route]:
        """The routes to mount, built with the rest simulator's `route(provider, path, fn)`."""
        feeds = [route(feed, path, self._feed(feed)) for feed, path in FEEDS.items()]
        return [
            *feeds,
            route("reddit-cryptocurrency", "", self._json("reddit-cryptocurrency", "reddit_new")),
            route("cryptopanic", "/posts/", self._json("cryptopanic", "cryptopanic_posts")),
            route("newsdata", "/latest", self._json("newsdata", "newsdata_latest")),
            route("alternative-me", "/fng/", self._fng),
        ]

    def _conditional(
        self, provider: str, request: Request, body: bytes, media_type: str
    ) -> Response:
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        changed = self.changed_at.get(provider, 1711357200.0)
        modified = formatdate(int(changed), usegmt=True)
        headers = {"ETag": etag, "Last-Modified": modified, "Cache-Control": "max-age=60"}
        if_none = request.headers.get("if-none-match")
        since = request.headers.get("if-modified-since")
        fresh = if_none == etag if if_none is not None else False
        if if_none is None and since is not None:
            try:
                fresh = parsedate_to_datetime(since).timestamp() >= int(changed)
            except (TypeError, ValueError):
                fresh = False
        if fresh:
            self.not_modified[provider] += 1
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers, media_type=media_type)

    def _feed(self, feed: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            body = self.raw.get(feed)
            if body is None:
                body = _fixture_text(f"news_{feed}.xml")
                if self.stories[feed]:
                    at = body.index(b"<item>")
                    added = b"".join(_story_xml(s) for s in self.stories[feed])
                    body = body[:at] + added + body[at:]
            kind = "application/rss+xml"
            return self._conditional(feed, request, body, kind)

        return serve

    def _json(self, provider: str, fixture: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if provider in NEWS_AUTH and news_key(provider, request) != NEWS_API_KEYS[provider]:
                return _key_missing(provider)
            body = self.raw.get(provider) or _fixture_text(f"{fixture}.json")
            return self._conditional(provider, request, body, "application/json")

        return serve

    def _fng(self, request: Request) -> Response:
        raw = request.query_params.get("limit", "1")
        if not raw.isdigit():
            return Response(json.dumps({"data": [], "metadata": {"error": "Invalid limit"}}))
        limit = int(raw)
        count = self.fng_days if limit == 0 else min(limit, self.fng_days)
        today = int(time.time()) // 86400 * 86400
        data: list[dict[str, Any]] = []
        for days_ago in range(count):
            value = self.fng_value(days_ago)
            entry = {
                "value": str(value),
                "value_classification": _classification(value),
                "timestamp": str(today - days_ago * 86400),
            }
            if days_ago == 0:
                entry["time_until_update"] = str(self.fng_until_update)
            data.append(entry)
        payload = {"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}
        body = self.raw.get("alternative-me") or json.dumps(payload).encode()
        return self._conditional("alternative-me", request, body, "application/json")


def _key_missing(provider: str) -> Response:
    """The APIs' answers without a valid key (unverified: see fixtures/SOURCES.md)."""
    if provider == "cryptopanic":
        body = {"status": "Incomplete", "info": "Missing auth_token"}
    else:
        body = {
            "status": "error",
            "results": {"message": "API key is invalid", "code": "Unauthorized"},
        }
    return Response(json.dumps(body), status_code=401, media_type="application/json")

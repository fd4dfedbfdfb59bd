"""From what a news source parsed to an `Article` the store can keep: `normalise`.

* **Canonical URL** (`canonical_url`): scheme and host lower-cased, `www.` kept as sent (two
  hosts may differ), default ports, the fragment and tracking parameters (`utm_*`, `fbclid`,
  `gclid`, `mc_cid`, `ref`, … in `TRACKING_PARAMETERS`) dropped, the remaining parameters
  sorted, a trailing '/' dropped from the path, so the same article linked from a feed, from
  Reddit and from a newsletter is one URL.
* **Plain text** (`plain_text`): HTML tags dropped (the contents of script, style and similar
  elements with them), entities decoded, whitespace collapsed, capped at a word boundary with
  an ellipsis.
* **Time**: UTC; a time in the future (a publisher's clock or zone error) is brought back to
  when the gateway saw the story, and a story with no time at all is dated when it was first
  seen — it existed then, which is all anyone knows.
* **Title key** (`title_key`): lower-case words of the title, for near-duplicate detection
  (`gateway.news.dedup`).
* **Coins**: `gateway.news.coins.match_coins` over the title and summary, plus the upstream's
  tags.

Pure functions; must never drop a story for a cosmetic flaw or keep one without a title or an
http(s) link.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.news.coins import match_coins
from gateway.news_models import Article, NewsItem

__all__ = [
    "MAX_TITLE_CHARS",
    "TRACKING_PARAMETERS",
    "canonical_url",
    "normalise",
    "plain_text",
    "title_key",
]

MAX_TITLE_CHARS: Final = 300
MAX_URL_CHARS: Final = 2048
TRACKING_PARAMETERS: Final = frozenset(
    {
        "fbclid", "gclid", "dclid", "msclkid", "yclid", "mc_cid", "mc_eid", "ref", "ref_src",
        "ref_url", "referrer", "source", "cmpid", "ito", "_hsenc", "_hsmi", "igshid", "si",
        "guccounter", "spm", "smid",
    }
)  # fmt: skip
_TRACKING_PREFIXES: Final = ("utm_", "pk_", "mtm_", "at_", "oly_")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SKIPPED_ELEMENTS: Final = frozenset({"script", "style", "noscript", "template", "iframe"})
_BLOCK_ELEMENTS: Final = frozenset(
    {"p", "br", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "blockquote"}
)
_WORD_RE: Final = re.compile(r"\w+")


def canonical_url(url: str) -> str | None:
    """The canonical form of an http(s) URL (see the module docstring), or None if it is not
    one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    query = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name.lower() not in TRACKING_PARAMETERS
        and not name.lower().startswith(_TRACKING_PREFIXES)
    ]
    path = parts.path.rstrip("/") if parts.path not in ("", "/") else ""
    canonical = urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))
    return canonical if len(canonical) <= MAX_URL_CHARS else None


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_ELEMENTS:
            self.skipping += 1
        elif tag in _BLOCK_ELEMENTS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_ELEMENTS and self.skipping:
            self.skipping -= 1
        elif tag in _BLOCK_ELEMENTS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def plain_text(text: str | None, limit: int) -> str | None:
    """`text` without HTML, entities decoded, whitespace collapsed, at most `limit` characters
    (cut at a word boundary, with '…'); None when nothing is left."""
    if not text:
        return None
    if "<" in text:
        extractor = _TextExtractor()
        extractor.feed(text)
        extractor.close()
        text = "".join(extractor.parts)
    text = " ".join(html.unescape(text).split())
    if not text:
        return None
    if len(text) > limit:
        cut = text[: max(1, limit - 1)]
        if text[len(cut)] != " ":  # the cut is mid-word: back to the word's start
            space = cut.rfind(" ")
            cut = cut[:space] if space > limit // 2 else cut
        text = cut.rstrip(" ,.;:") + "…"
    return text


def title_key(title: str) -> str:
    """The title as lower-case words, punctuation and spacing ignored."""
    return " ".join(_WORD_RE.findall(title.lower()))


def normalise(item: NewsItem, seen_at: datetime, summary_chars: int) -> Article | None:
    """The story `item` tells, ready to store; None when it has no title or no http(s) link."""
    url = canonical_url(item.url)
    title = plain_text(item.title, MAX_TITLE_CHARS)
    if url is None or title is None or not title_key(title):
        return None
    seen_at = seen_at.astimezone(UTC)
    published = item.published_at.astimezone(UTC) if item.published_at else seen_at
    summary = plain_text(item.summary, summary_chars)
    return Article(
        source=item.source,
        title=title,
        url=url,
        title_key=title_key(title),
        published_at=min(published, seen_at),
        seen_at=seen_at,
        summary=summary,
        coins=match_coins(title, summary, tags=item.coins),
    )

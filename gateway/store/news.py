"""News articles and Fear & Greed values in the database (migration 7): `NewsStore`.

Articles are added in one writer transaction per batch (`add_articles`), each checked against
what is stored first: a canonical URL any source already carried it under, or a source's title a
caller-supplied rule (`gateway.news.dedup.story_matcher`) calls the same story, among those
published within the window (candidates come from an index on the title key's length, since
similar titles have similar lengths; every source's title is kept, so a story is found by any
of them). A known story gains a source row, and its coins; when the new source ranks better
(a lower provider priority), the story takes its title, link and summary, but never its
publication time, which is the story's place in every page. When one article ties two stored
stories together (its link is one's, its title the other's: they were one story all along), the
older story takes the newer one in, and the newer one is deleted. Only a new story is inserted, with
its coins and, through triggers, its full-text index entry. Because the check and the insert
share the transaction, two sources delivering a story at the same moment store it once.

Pages are read by keyset (`page`): newest first by (published_ms, id), strictly after the
position the caller gives, never by offset, so a page boundary does not move while stories
arrive. Search terms reach FTS5 only as quoted phrases (`fts_query`): a user's `"`, `*`, `-`,
`AND` or `NEAR(` is text to find, never query syntax, so no input can make the query fail.

Fear & Greed values are one row per (provider, day), upserted: the day's value may be revised
until the day ends.

Must never run SQL on the event loop (every call goes through `Storage`), or splice user text
into SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gateway.models import epoch_ms, from_epoch_ms, utc_now
from gateway.news_models import (
    Article,
    ArticleSource,
    FearGreedPoint,
    StoredArticle,
    StoredSentiment,
)
from gateway.store.database import Storage

__all__ = [
    "MAX_SEARCH_TERMS",
    "AddedArticle",
    "NewsStore",
    "PageQuery",
    "fts_query",
]

MAX_SEARCH_TERMS: Final = 16
# Title-similarity candidates read per new article at most (newest first within the window).
_MAX_CANDIDATES: Final = 500
_LENGTH_SLACK: Final = 0.12  # similar titles' keys differ in length by at most ~12 %

_ARTICLE_COLUMNS: Final = (
    "id, title, url, source, published_ms, summary, coins, sentiment_label, sentiment_score,"
    " sentiment_confidence, sentiment_model"
)
_BY_URL_SQL: Final = "SELECT article_id FROM news_article_sources WHERE url = ? LIMIT 1"
_CARRIED_SQL: Final = (
    "SELECT article_id FROM news_article_sources WHERE url = ? AND source = ? LIMIT 1"
)
_CANDIDATES_SQL: Final = f"""
SELECT article_id, title_key FROM news_article_sources
WHERE length(title_key) BETWEEN ? AND ? AND published_ms BETWEEN ? AND ?
ORDER BY published_ms DESC LIMIT {_MAX_CANDIDATES}
"""
_INSERT_ARTICLE_SQL: Final = """
INSERT INTO news_articles (url, title, summary, source, rank, published_ms, seen_ms, coins)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_SOURCE_SQL: Final = """
INSERT OR IGNORE INTO news_article_sources
    (article_id, source, url, title_key, published_ms, seen_ms)
VALUES (?, ?, ?, ?, ?, ?)
"""
_STORY_SQL: Final = "SELECT rank, coins, published_ms FROM news_articles WHERE id = ?"
_FACE_SQL: Final = """
UPDATE news_articles SET url = ?, title = ?, summary = coalesce(?, summary), source = ?, rank = ?
WHERE id = ?
"""
_COINS_SQL: Final = "UPDATE news_articles SET coins = ? WHERE id = ?"
_ABSORBED_SQL: Final = (
    "SELECT url, title, summary, source, rank, id, coins FROM news_articles WHERE id = ?"
)
_MOVE_SQL: Final = (
    """INSERT OR IGNORE INTO news_article_sources
        SELECT :story, source, url, title_key, published_ms, seen_ms
        FROM news_article_sources WHERE article_id = :other""",
    "DELETE FROM news_article_sources WHERE article_id = :other",
    """INSERT OR IGNORE INTO news_article_coins
        SELECT coin, :published, :story FROM news_article_coins WHERE article_id = :other""",
    "DELETE FROM news_article_coins WHERE article_id = :other",
    """UPDATE news_articles SET
        (sentiment_label, sentiment_score, sentiment_confidence, sentiment_model, scored_ms) =
        (SELECT sentiment_label, sentiment_score, sentiment_confidence, sentiment_model, scored_ms
         FROM news_articles WHERE id = :other)
    WHERE id = :story AND sentiment_label IS NULL""",
)
_DELETE_STORY_SQL: Final = "DELETE FROM news_articles WHERE id = ?"
_FILL_SUMMARY_SQL: Final = "UPDATE news_articles SET summary = ? WHERE id = ? AND summary IS NULL"
_INSERT_COIN_SQL: Final = """
INSERT OR IGNORE INTO news_article_coins (coin, published_ms, article_id) VALUES (?, ?, ?)
"""
_SENTIMENT_SQL: Final = """
UPDATE news_articles SET sentiment_label = ?, sentiment_score = ?, sentiment_confidence = ?,
    sentiment_model = ?, scored_ms = ?
WHERE id = ?
"""
_SOURCES_SQL: Final = """
SELECT article_id, source, url, seen_ms FROM news_article_sources
WHERE article_id IN (SELECT CAST(value AS INTEGER) FROM json_each(?)) ORDER BY seen_ms, source
"""
_FG_UPSERT_SQL: Final = """
INSERT INTO fear_greed (provider, day_ms, value, classification, updated_ms)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (provider, day_ms) DO UPDATE SET
    value = excluded.value, classification = excluded.classification,
    updated_ms = excluded.updated_ms
"""
_FG_COLUMNS: Final = "value, classification, day_ms, provider"


def fts_query(search: str) -> str | None:
    """An FTS5 query matching every word of `search` (each a quoted phrase, so nothing the user
    typed is syntax), or None when it holds no word. At most `MAX_SEARCH_TERMS` words."""
    terms = [word for word in search.split() if any(ch.isalnum() for ch in word)]
    if not terms:
        return None
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms[:MAX_SEARCH_TERMS])


@dataclass(frozen=True, slots=True)
class AddedArticle:
    """What became of one article offered to `add_articles`: its story's id, and whether it is
    a new story (False: a source was added to a stored one, or it was already known)."""

    id: int
    new: bool
    article: Article


@dataclass(frozen=True, slots=True)
class PageQuery:
    """One page of `news`: `after` is the (published_ms, id) of the last article already seen
    (None: from the newest); `search` an `fts_query` result; `coin` a canonical symbol;
    `label` a sentiment label."""

    limit: int
    after: tuple[int, int] | None = None
    search: str | None = None
    coin: str | None = None
    label: str | None = None


def _sentiment(row: Sequence[Any]) -> StoredSentiment | None:
    label, score, confidence, model = row
    if label is None or score is None or model is None:
        return None
    return StoredSentiment(label, score, confidence if confidence is not None else 0.0, model)


def _articles(db: Any, rows: Sequence[Sequence[Any]]) -> list[StoredArticle]:
    ids = [row[0] for row in rows]
    sources: dict[int, list[ArticleSource]] = {}
    if ids:
        for article_id, source, url, seen in db.execute(_SOURCES_SQL, [_json_ids(ids)]):
            sources.setdefault(article_id, []).append(
                ArticleSource(source, url, from_epoch_ms(seen))
            )
    return [
        StoredArticle(
            id=row[0],
            title=row[1],
            url=row[2],
            source=row[3],
            published_at=from_epoch_ms(row[4]),
            summary=row[5],
            coins=tuple(row[6].split()) if row[6] else (),
            sources=tuple(sources.get(row[0], ())),
            sentiment=_sentiment(row[7:11]),
        )
        for row in rows
    ]


def _json_ids(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _page_sql(query: PageQuery) -> tuple[str, dict[str, Any]]:
    where = ["(published_ms, id) < (:p, :i)"]
    params: dict[str, Any] = {"limit": query.limit}
    params["p"], params["i"] = query.after if query.after else (2**62, 2**62)
    if query.search is not None:
        where.append("id IN (SELECT rowid FROM news_fts WHERE news_fts MATCH :search)")
        params["search"] = query.search
    if query.coin is not None:
        where.append("id IN (SELECT article_id FROM news_article_coins WHERE coin = :coin)")
        params["coin"] = query.coin
    if query.label is not None:
        where.append("sentiment_label = :label")
        params["label"] = query.label
    sql = (
        f"SELECT {_ARTICLE_COLUMNS} FROM news_articles WHERE {' AND '.join(where)}"
        " ORDER BY published_ms DESC, id DESC LIMIT :limit"
    )
    return sql, params


class NewsStore:
    """Reads and writes the news and Fear & Greed tables through `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def add_articles(
        self,
        articles: Sequence[Article],
        matcher_for: Callable[[str], Callable[[str], bool]],
        window_ms: int,
    ) -> list[AddedArticle]:
        """Store each article once per story (see the module docstring), in one transaction;
        returns what became of each, in order."""

        def work(conn: sqlite3.Connection) -> list[AddedArticle]:
            return [self._add(conn, article, matcher_for, window_ms) for article in articles]

        if not articles:
            return []
        return await self.storage.transact(work)

    @staticmethod
    def _add(
        conn: sqlite3.Connection,
        article: Article,
        matcher_for: Callable[[str], Callable[[str], bool]],
        window_ms: int,
    ) -> AddedArticle:
        seen, published = epoch_ms(article.seen_at), epoch_ms(article.published_at)
        known = conn.execute(_CARRIED_SQL, [article.url, article.source]).fetchone()
        if known is not None:  # this source carried it under this link before: a re-poll
            return AddedArticle(known[0], False, article)
        matches = [row[0] for row in conn.execute(_BY_URL_SQL, [article.url])]
        size = len(article.title_key)
        slack = max(2, int(size * _LENGTH_SLACK))
        bounds = [size - slack, size + slack, published - window_ms, published + window_ms]
        same_story = matcher_for(article.title_key)
        for candidate, key in conn.execute(_CANDIDATES_SQL, bounds).fetchall():
            if candidate not in matches and same_story(key):
                matches.append(candidate)
        source_row = [article.source, article.url, article.title_key, published, seen]
        if matches:
            # The story may have been stored twice before this source tied them together (a
            # link found by URL, a title by title): the oldest takes the others in.
            story = min(matches)
            for other in sorted(set(matches) - {story}):
                NewsStore._absorb(conn, story, other)
            conn.execute(_INSERT_SOURCE_SQL, [story, *source_row])
            NewsStore._merge(conn, story, article)
            return AddedArticle(story, False, article)
        row = [
            article.url,
            article.title,
            article.summary,
            article.source,
            article.rank,
            published,
            seen,
            " ".join(article.coins),
        ]
        new_id = conn.execute(_INSERT_ARTICLE_SQL, row).lastrowid
        assert new_id is not None
        conn.execute(_INSERT_SOURCE_SQL, [new_id, *source_row])
        conn.executemany(_INSERT_COIN_SQL, [(coin, published, new_id) for coin in article.coins])
        return AddedArticle(new_id, True, article)

    @staticmethod
    def _merge(conn: sqlite3.Connection, article_id: int, article: Article) -> None:
        """A stored story heard again: its coins gain the new source's, a better-ranked source
        becomes its face (title, link, summary; never its time), and a story without a summary
        takes this source's."""
        rank, coins, published = conn.execute(_STORY_SQL, [article_id]).fetchone()
        known = coins.split()
        added = [coin for coin in article.coins if coin not in known]
        if added:
            conn.execute(_COINS_SQL, [" ".join(sorted({*known, *added})), article_id])
            conn.executemany(_INSERT_COIN_SQL, [(c, published, article_id) for c in added])
        if article.rank < rank:
            face = [article.url, article.title, article.summary, article.source, article.rank]
            conn.execute(_FACE_SQL, [*face, article_id])
        elif article.summary is not None:  # a story told without a summary gains this one
            conn.execute(_FILL_SUMMARY_SQL, [article.summary, article_id])

    @staticmethod
    def _absorb(conn: sqlite3.Connection, story: int, other: int) -> None:
        """Fold story `other` into `story`: its sources, its coins, its face when it ranks
        better, its sentiment when `story` has none; then delete it (and its index entry)."""
        rank, coins, published = conn.execute(_STORY_SQL, [story]).fetchone()
        face = conn.execute(_ABSORBED_SQL, [other]).fetchone()
        if face is None:
            return
        for sql in _MOVE_SQL:
            conn.execute(sql, {"story": story, "other": other, "published": published})
        merged = sorted({*coins.split(), *face[6].split()})
        conn.execute(_COINS_SQL, [" ".join(merged), story])
        if face[4] < rank:
            conn.execute(_FACE_SQL, [*face[:5], story])
        elif face[2] is not None:
            conn.execute(_FILL_SUMMARY_SQL, [face[2], story])
        conn.execute(_DELETE_STORY_SQL, [other])

    async def set_sentiment(self, scored: Sequence[tuple[int, StoredSentiment]]) -> None:
        """Record the model's verdict on each (article id, sentiment); returns once committed."""
        now = epoch_ms(utc_now())
        rows = [
            (s.label, s.score, s.confidence, s.model, now, article_id) for article_id, s in scored
        ]
        if rows:
            await self.storage.write(_SENTIMENT_SQL, rows)

    async def page(self, query: PageQuery) -> list[StoredArticle]:
        """Up to `query.limit` articles after `query.after`, newest first."""
        sql, params = _page_sql(query)
        return await self.storage.read(lambda db: _articles(db, db.execute(sql, params).fetchall()))

    async def articles(self, ids: Sequence[int]) -> list[StoredArticle]:
        """The stored articles with these ids, newest first (unknown ids are left out)."""
        sql = (
            f"SELECT {_ARTICLE_COLUMNS} FROM news_articles"
            " WHERE id IN (SELECT CAST(value AS INTEGER) FROM json_each(?))"
            " ORDER BY published_ms DESC, id DESC"
        )
        return await self.storage.read(
            lambda db: _articles(db, db.execute(sql, [_json_ids(ids)]).fetchall())
        )

    async def unscored(self, limit: int) -> list[StoredArticle]:
        """The newest articles no model has scored yet (for a scorer that came up later)."""
        sql = (
            f"SELECT {_ARTICLE_COLUMNS} FROM news_articles WHERE sentiment_label IS NULL"
            " ORDER BY published_ms DESC, id DESC LIMIT ?"
        )
        return await self.storage.read(
            lambda db: _articles(db, db.execute(sql, [limit]).fetchall())
        )

    async def count(self) -> int:
        """How many stories are stored."""
        count: int = await self.storage.read(
            lambda db: db.execute("SELECT count(*) FROM news_articles").fetchone()[0]
        )
        return count

    # -- Fear & Greed -----------------------------------------------------------------------

    async def add_fear_greed(self, points: Sequence[FearGreedPoint]) -> None:
        """Store each day's value (a later value of the same day replaces it)."""
        now = epoch_ms(utc_now())
        rows = [(p.provider, epoch_ms(p.at), p.value, p.classification, now) for p in points]
        if rows:
            await self.storage.write(_FG_UPSERT_SQL, rows)

    async def latest_fear_greed(self, provider: str | None = None) -> FearGreedPoint | None:
        """The newest day's value (of one provider, or of any; ties go to the first id)."""
        sql = (
            f"SELECT {_FG_COLUMNS} FROM fear_greed WHERE (:p IS NULL OR provider = :p)"
            " ORDER BY day_ms DESC, provider LIMIT 1"
        )
        rows = await self.storage.read(lambda db: db.execute(sql, {"p": provider}).fetchall())
        return _fg_points(rows)[0] if rows else None

    async def fear_greed_since(
        self, since: datetime, provider: str | None = None
    ) -> list[FearGreedPoint]:
        """Every day's value from `since` on, oldest first (per day, every provider's)."""
        sql = (
            f"SELECT {_FG_COLUMNS} FROM fear_greed"
            " WHERE day_ms >= :since AND (:p IS NULL OR provider = :p) ORDER BY day_ms, provider"
        )
        params = {"since": epoch_ms(since), "p": provider}
        return _fg_points(await self.storage.read(lambda db: db.execute(sql, params).fetchall()))


def _fg_points(rows: Sequence[Sequence[Any]]) -> list[FearGreedPoint]:
    return [
        FearGreedPoint(value, label, from_epoch_ms(day), provider)
        for value, label, day, provider in rows
    ]

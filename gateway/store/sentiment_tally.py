"""How the stored articles of a window were labelled: `sentiment_tally` (for `sentimentSummary`).

Reads the news tables of migration 7 (written by `gateway.store.news`): the stories published
since a moment, all of them or those mentioning one coin (through `news_article_coins`, whose
key starts with (coin, published_ms), so the window is a range scan), counted per sentiment
label, with the sum of their scores. Stories no model has scored are counted apart, so a
caller can say how much of the window the figures cover.

Must never run SQL on the event loop (it goes through `Storage.read`), or count an unscored
story as any label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gateway.models import epoch_ms
from gateway.store.database import Storage

__all__ = ["SentimentTally", "sentiment_tally"]

_ALL_SQL: Final = """
SELECT sentiment_label, count(*), sum(sentiment_score) FROM news_articles
WHERE published_ms >= :since
GROUP BY sentiment_label
"""
_COIN_SQL: Final = """
SELECT sentiment_label, count(*), sum(sentiment_score) FROM news_articles
WHERE id IN (
    SELECT article_id FROM news_article_coins WHERE coin = :coin AND published_ms >= :since
)
GROUP BY sentiment_label
"""


@dataclass(frozen=True, slots=True)
class SentimentTally:
    """Stories of a window: how many in all, per label, unscored, and the sum of the scores."""

    articles: int
    bullish: int
    bearish: int
    neutral: int
    unscored: int
    score_sum: float

    @property
    def scored(self) -> int:
        return self.bullish + self.bearish + self.neutral

    @property
    def mean_score(self) -> float | None:
        """The mean score of the scored stories; None when none was scored."""
        return self.score_sum / self.scored if self.scored else None


async def sentiment_tally(storage: Storage, coin: str | None, since: datetime) -> SentimentTally:
    """The stories published at or after `since` (mentioning `coin`, a canonical symbol, when
    given), counted by the label a model gave them."""
    params: dict[str, Any] = {"since": epoch_ms(since), "coin": coin}
    sql = _ALL_SQL if coin is None else _COIN_SQL
    rows = await storage.read(lambda db: db.execute(sql, params).fetchall())
    counts = {"BULLISH": 0, "BEARISH": 0, "NEUTRAL": 0}
    unscored, score_sum = 0, 0.0
    for label, count, total in rows:
        if label in counts:
            counts[label] += int(count)
            score_sum += float(total or 0.0)
        else:  # NULL (never scored), or a label no model of ours gives
            unscored += int(count)
    return SentimentTally(
        articles=sum(counts.values()) + unscored,
        bullish=counts["BULLISH"],
        bearish=counts["BEARISH"],
        neutral=counts["NEUTRAL"],
        unscored=unscored,
        score_sum=score_sum,
    )

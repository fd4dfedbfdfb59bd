"""GraphQL for sentiment: the `analyzeSentiment` mutation and the `sentimentSummary` query.

* `analyzeSentiment(text)` scores one text with the configured model (gateway.news.sentiment:
  the same bounded queue and worker thread the news path uses). Text longer than
  `sentiment_max_chars` (or blank) is BAD_USER_INPUT; like every operation it is one request
  against the caller's tier (counted before it runs), and viewers may run it (it changes
  nothing: gateway.api.auth.access.VIEWER_MUTATIONS). With no model loaded (configured off,
  missing, still loading) or when the queue stays full past `ANSWER_SECONDS`, it is the error
  MODEL_UNAVAILABLE with the reason.
* `sentimentSummary(coin, windowHours)`: the stored stories of the last `windowHours` (about
  `coin`, a canonical symbol, when given) counted by the label a model gave them, their mean
  score, and the newest Fear & Greed value. Stories no model has scored count in `articles`
  but in no label; the answer then carries a warning (MODEL_UNAVAILABLE while no model is
  loaded, SENTIMENT_PENDING while the loaded one catches up). `meanScore` is null when none
  was scored. The window reaches back no further than the caller's tier allows.

The types `Sentiment`, `SentimentLabel` and `FearGreed` are gateway.api.schema.news's.

Must never return a score the model did not give, or a count the store does not hold.
"""

from __future__ import annotations

import difflib
from datetime import timedelta
from typing import Final, cast

import strawberry
import trio
from strawberry.types import Info

from gateway.api.auth import check_history
from gateway.api.context import RequestContext, Services
from gateway.api.schema.news import FearGreed, Sentiment, fear_greed
from gateway.errors import BadUserInput, GatewayError, ModelUnavailable, UnknownSymbol
from gateway.models import utc_now
from gateway.storage import sentiment_tally
from gateway.symbols import known_symbols, normalize_symbol
from gateway.vocabulary import SentimentLabel

__all__ = ["SentimentMutation", "SentimentQuery", "SentimentSummary"]

# A request waits at most this long for its turn at the model (behind the news backlog).
ANSWER_SECONDS: Final = 10.0
MAX_WINDOW_HOURS: Final = 24 * 365
MAX_COIN_CHARS: Final = 24
NO_SCORER: Final = "no sentiment model is configured"


@strawberry.type(description="Article sentiment over a window, next to the market's Fear & Greed.")
class SentimentSummary:
    coin: str | None = strawberry.field(description="The symbol asked for; null: every story.")
    window_hours: int
    articles: int = strawberry.field(description="Stories published in the window (scored or not).")
    bullish: int
    bearish: int
    neutral: int
    mean_score: float | None = strawberry.field(
        description="Mean score (-1 bearish to 1 bullish) of the scored stories; null if none."
    )
    fear_greed: FearGreed | None = strawberry.field(
        description="The newest Fear & Greed value (null before the first one)."
    )


def _services(info: Info) -> Services:
    return cast(RequestContext, info.context).services


def _coin(raw: str) -> str:
    if len(raw) > MAX_COIN_CHARS:
        raise BadUserInput(f"a coin is at most {MAX_COIN_CHARS} characters, got {len(raw)}")
    symbol = normalize_symbol(raw)
    known = known_symbols()
    if symbol not in known:
        raise UnknownSymbol(raw, difflib.get_close_matches(symbol, sorted(known), n=3))
    return symbol


@strawberry.type
class SentimentQuery:
    @strawberry.field(
        description="Stored stories of the last `windowHours` (1-8760; about `coin` when "
        "given) counted by sentiment label, their mean score, and the newest Fear & Greed."
    )
    async def sentiment_summary(
        self, info: Info, coin: str | None = None, window_hours: int = 24
    ) -> SentimentSummary:
        if not 1 <= window_hours <= MAX_WINDOW_HOURS:
            raise BadUserInput(
                f"windowHours must be between 1 and {MAX_WINDOW_HOURS}, got {window_hours}"
            )
        symbol = _coin(coin) if coin is not None else None
        since = utc_now() - timedelta(hours=window_hours)
        check_history(since)
        services = _services(info)
        if services.news is None:
            raise GatewayError("the news service is not running")
        tally = await sentiment_tally(services.storage, symbol, since)
        latest = await services.news.store.latest_fear_greed()
        if tally.unscored:
            scorer = services.sentiment
            context = cast(RequestContext, info.context)
            if scorer is None or not scorer.available:
                reason = scorer.unavailable_reason if scorer is not None else NO_SCORER
                context.warn(
                    ModelUnavailable.code,
                    f"{tally.unscored} of {tally.articles} stories are not scored: {reason}",
                    reason=reason,
                    unscored=tally.unscored,
                )
            else:
                context.warn(
                    "SENTIMENT_PENDING",
                    f"{tally.unscored} of {tally.articles} stories are not scored yet",
                    unscored=tally.unscored,
                )
        return SentimentSummary(
            coin=symbol,
            window_hours=window_hours,
            articles=tally.articles,
            bullish=tally.bullish,
            bearish=tally.bearish,
            neutral=tally.neutral,
            mean_score=tally.mean_score,
            fear_greed=fear_greed(latest) if latest is not None else None,
        )


@strawberry.type
class SentimentMutation:
    @strawberry.mutation(
        description="Score one text (at most 2000 characters unless configured otherwise) "
        "with the sentiment model; MODEL_UNAVAILABLE when none is loaded. Changes nothing."
    )
    async def analyze_sentiment(self, info: Info, text: str) -> Sentiment:
        services = _services(info)
        cap = services.settings.sentiment_max_chars
        if len(text) > cap:
            raise BadUserInput(f"text is at most {cap} characters, got {len(text)}")
        if not text.strip():
            raise BadUserInput("text is empty")
        scorer = services.sentiment
        if scorer is None:
            raise ModelUnavailable(NO_SCORER)
        if not scorer.available:
            raise ModelUnavailable(scorer.unavailable_reason or "the model is not loaded")
        verdicts = None
        with trio.move_on_after(ANSWER_SECONDS):
            verdicts = await scorer.score([text])
        if verdicts is None:
            raise ModelUnavailable(f"the model is busy (no turn within {ANSWER_SECONDS:g} s)")
        verdict = verdicts[0]
        if verdict is None:
            raise ModelUnavailable("the model could not score this text (see the gateway's log)")
        return Sentiment(
            label=SentimentLabel(verdict.label),
            score=verdict.score,
            model=verdict.model,
            confidence=verdict.confidence,
        )

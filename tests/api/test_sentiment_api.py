"""`analyzeSentiment` and `sentimentSummary` against a running gateway (gateway/api/schema/
sentiment.py), as a client sees them: the embedded model's verdicts, the input caps, the
caller's tier, MODEL_UNAVAILABLE when no model is loaded, and summaries of stored stories next
to the newest Fear & Greed value.

Stories and index values are put in the gateway's own store (as the news path does), so the
counts are known exactly. The embedded model is loaded once per test process.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import trio

from gateway.models import utc_now
from gateway.news.normalise import title_key
from gateway.news_models import Article, FearGreedPoint, NewsItem, StoredSentiment
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway, graphql

ANALYZE = (
    "mutation($text: String!) { analyzeSentiment(text: $text) { label score model confidence } }"
)
SUMMARY = "query($coin: String, $hours: Int!) { sentimentSummary(coin: $coin, windowHours: $hours) { coin windowHours articles bullish bearish neutral meanScore fearGreed { value classification provider } } }"


def code(answer: dict[str, Any]) -> str | None:
    errors = answer.get("errors")
    return errors[0]["extensions"]["code"] if errors else None


async def ready_model(running: RunningGateway) -> None:
    scorer = running.services.sentiment
    assert scorer is not None
    with trio.fail_after(120):
        await scorer.loaded.wait()
    assert scorer.available, scorer.unavailable_reason


async def test_analyze_sentiment_scores_with_the_embedded_model(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(sentiment_model="embedded", sentiment_threads=1)
    await ready_model(running)
    bullish = await graphql(running, ANALYZE, {"text": "Bitcoin rockets to record high"})
    bearish = await graphql(
        running, ANALYZE, {"text": "Exchange hacked, $300 million in user funds stolen"}
    )
    assert bullish["data"]["analyzeSentiment"]["label"] == "BULLISH"
    assert bullish["data"]["analyzeSentiment"]["score"] > 0
    assert bullish["data"]["analyzeSentiment"]["model"] == "all-MiniLM-L6-v2+head"
    assert 0 < bullish["data"]["analyzeSentiment"]["confidence"] <= 1
    assert bearish["data"]["analyzeSentiment"]["label"] == "BEARISH"
    assert bearish["data"]["analyzeSentiment"]["score"] < 0
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
        ready = (await client.get("/readyz")).json()
    assert ready == {"status": "ready", "sentiment": {"state": "ready", "reason": None}}


async def test_analyze_sentiment_caps_its_input(start_gateway: StartGateway) -> None:
    running = await start_gateway(sentiment_model="embedded", sentiment_max_chars=50)
    too_long = await graphql(running, ANALYZE, {"text": "a" * 51})
    assert code(too_long) == "BAD_USER_INPUT"
    assert "at most 50 characters" in too_long["errors"][0]["message"]
    assert code(await graphql(running, ANALYZE, {"text": "   "})) == "BAD_USER_INPUT"


async def test_without_a_model_analyze_sentiment_says_why(start_gateway: StartGateway) -> None:
    running = await start_gateway(sentiment_model="off")
    answer = await graphql(running, ANALYZE, {"text": "Bitcoin rockets to record high"})
    assert code(answer) == "MODEL_UNAVAILABLE"
    assert answer["data"] is None
    assert "off" in answer["errors"][0]["extensions"]["reason"]


async def test_while_the_model_loads_analyze_sentiment_says_so(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(sentiment_model="embedded")
    scorer = running.services.sentiment
    assert scorer is not None
    scorer.available, scorer.unavailable_reason = False, "the sentiment model is still loading"
    scorer.loaded = trio.Event()  # as before the worker thread finished
    answer = await graphql(running, ANALYZE, {"text": "Bitcoin rockets"})
    assert code(answer) == "MODEL_UNAVAILABLE"
    assert answer["errors"][0]["extensions"]["reason"] == "the sentiment model is still loading"


async def test_analyze_sentiment_counts_against_the_callers_tier(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(sentiment_model="off", tier_free_per_minute=2)
    first = await graphql(running, ANALYZE, {"text": "one"})
    second = await graphql(running, ANALYZE, {"text": "two"})
    third = await graphql(running, ANALYZE, {"text": "three"})
    assert [code(first), code(second)] == ["MODEL_UNAVAILABLE", "MODEL_UNAVAILABLE"]
    assert code(third) == "RATE_LIMITED"


def story(n: int, coins: tuple[str, ...], hours_ago: float) -> Article:
    now = utc_now()
    title = f"Story number {n} about {' and '.join(coins) or 'crypto'} markets today"
    return Article(
        source="coindesk",
        title=title,
        url=f"https://news.example/{n}",
        title_key=title_key(title),
        published_at=now - timedelta(hours=hours_ago),
        seen_at=now,
        summary=None,
        coins=coins,
    )


async def store_stories(running: RunningGateway) -> None:
    news = running.services.news
    assert news is not None
    articles = [
        story(1, ("BTC",), 1),  # BULLISH 0.8
        story(2, ("BTC", "ETH"), 2),  # BEARISH -0.6
        story(3, ("BTC",), 3),  # NEUTRAL 0.1
        story(4, ("BTC",), 4),  # never scored
        story(5, ("ETH",), 5),  # BULLISH 0.4
        story(6, ("BTC",), 30),  # outside a 24 h window
    ]
    added = await news.store.add_articles(articles, lambda _title: lambda _other: False, 1)
    ids = [a.id for a in added]
    await news.store.set_sentiment(
        [
            (ids[0], StoredSentiment("BULLISH", 0.8, 0.9, "m")),
            (ids[1], StoredSentiment("BEARISH", -0.6, 0.7, "m")),
            (ids[2], StoredSentiment("NEUTRAL", 0.1, 0.6, "m")),
            (ids[4], StoredSentiment("BULLISH", 0.4, 0.6, "m")),
            (ids[5], StoredSentiment("BEARISH", -0.9, 0.9, "m")),
        ]
    )
    day = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
    await news.store.add_fear_greed(
        [
            FearGreedPoint(40, "Fear", day - timedelta(days=1), "alternative_me"),
            FearGreedPoint(72, "Greed", day, "alternative_me"),
        ]
    )


async def test_sentiment_summary_counts_the_window_and_adds_fear_greed(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(sentiment_model="off")
    await store_stories(running)
    btc = await graphql(running, SUMMARY, {"coin": "btc", "hours": 24})
    summary = btc["data"]["sentimentSummary"]
    assert {k: summary[k] for k in ("coin", "windowHours", "articles")} == {
        "coin": "BTC",
        "windowHours": 24,
        "articles": 4,
    }
    assert (summary["bullish"], summary["bearish"], summary["neutral"]) == (1, 1, 1)
    assert abs(summary["meanScore"] - (0.8 - 0.6 + 0.1) / 3) < 1e-9
    assert summary["fearGreed"] == {
        "value": 72,
        "classification": "Greed",
        "provider": "alternative_me",
    }
    # One BTC story is unscored, and no model is loaded: the answer says so.
    warnings = btc["extensions"]["warnings"]
    assert [w["code"] for w in warnings] == ["MODEL_UNAVAILABLE"]
    assert warnings[0]["unscored"] == 1 and "off" in warnings[0]["reason"]

    everything = (await graphql(running, SUMMARY, {"coin": None, "hours": 48}))["data"]
    assert everything["sentimentSummary"]["coin"] is None
    assert everything["sentimentSummary"]["articles"] == 6
    assert everything["sentimentSummary"]["bearish"] == 2
    eth = (await graphql(running, SUMMARY, {"coin": "ETH", "hours": 24}))["data"]
    assert eth["sentimentSummary"]["articles"] == 2
    assert abs(eth["sentimentSummary"]["meanScore"] - (-0.6 + 0.4) / 2) < 1e-9


async def test_an_empty_window_has_no_mean_and_no_fear_greed(start_gateway: StartGateway) -> None:
    running = await start_gateway(sentiment_model="off")
    answer = await graphql(running, SUMMARY, {"coin": "SOL", "hours": 24})
    summary = answer["data"]["sentimentSummary"]
    assert (summary["articles"], summary["meanScore"], summary["fearGreed"]) == (0, None, None)
    assert "warnings" not in (answer.get("extensions") or {})


async def test_sentiment_summary_checks_its_arguments(start_gateway: StartGateway) -> None:
    running = await start_gateway(sentiment_model="off")
    assert code(await graphql(running, SUMMARY, {"coin": "BTC", "hours": 0})) == "BAD_USER_INPUT"
    unknown = await graphql(running, SUMMARY, {"coin": "BTCC", "hours": 24})
    assert code(unknown) == "UNKNOWN_SYMBOL"
    # The free tier reaches back 7 days: a 10-day window is refused, naming the limit.
    too_far = await graphql(running, SUMMARY, {"coin": "BTC", "hours": 240})
    assert code(too_far) == "BAD_USER_INPUT"
    assert too_far["errors"][0]["extensions"]["limit"] == "historyDays"


async def test_a_new_article_is_scored_on_ingest_and_counted(start_gateway: StartGateway) -> None:
    """The news path hands a new story to the real scorer; its verdict is stored and counted."""
    running = await start_gateway(sentiment_model="embedded", sentiment_threads=1)
    await ready_model(running)
    news = running.services.news
    assert news is not None
    item = NewsItem(
        source="coindesk",
        title="Bitcoin soars to a record high as ETF inflows surge",
        url="https://news.example/btc-record?utm_source=feed",
        published_at=utc_now() - timedelta(minutes=5),
        summary="Buyers piled in.",
        coins=("BTC",),
    )
    await news.ingest.publish([item])
    with trio.fail_after(30):
        while True:
            answer = await graphql(running, SUMMARY, {"coin": "BTC", "hours": 1})
            summary = answer["data"]["sentimentSummary"]
            if summary["bullish"]:
                break
            await trio.sleep(0.05)
    assert (summary["articles"], summary["bullish"], summary["bearish"]) == (1, 1, 0)
    assert summary["meanScore"] > 0.3
    assert "warnings" not in (answer.get("extensions") or {})

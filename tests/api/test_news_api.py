"""`news`, `fearGreed`, `fearGreedHistory` and the `news` / `fearGreed` subscriptions, served by a
gateway whose news and sentiment providers are the simulator's.

The gateway runs with `sentiment_model="off"` (loading a transformer in every test would take
seconds): stories are then unscored and every `news` answer says MODEL_UNAVAILABLE, which is
itself under test; where a verdict matters, the fake scorer stands in for the model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from gateway.config import ProvidersFile
from gateway.models import utc_now
from gateway.news_models import NewsItem, StoredSentiment
from gateway.nursery import RunningGateway
from tests.api.test_ws import connect, init, receive, send
from tests.conftest import StartGateway, graphql, wait_members
from tests.news.support import FakeScorer, news_provider
from tests.simulator.news import Story
from tests.simulator.rest import Simulator, run_simulator

FEEDS = ("coindesk", "cointelegraph", "decrypt")
NODE = "id title url source publishedAt summary coins sentiment { label score model } sources"
PAGE = "{ news(%s) { edges { cursor node { " + NODE + " } } pageInfo { hasNextPage endCursor } } }"


@pytest.fixture
async def newsroom(start_gateway: StartGateway) -> AsyncIterator[tuple[RunningGateway, Simulator]]:
    async with run_simulator() as sim:
        sim.news.fng_until_update = 0  # no day-long sleep between index polls in a test
        providers = ProvidersFile(
            (
                *(news_provider(sim, feed) for feed in FEEDS),
                news_provider(sim, "alternative-me", interval_seconds=0.2),
            )
        )
        running = await start_gateway(providers=providers, sentiment_model="off")
        yield running, sim


def page(**arguments: Any) -> str:
    """The `news` query with these arguments (`sentiment`, an enum, goes unquoted)."""
    return PAGE % ", ".join(
        f"{k}: {v if k == 'sentiment' else json.dumps(v)}" for k, v in arguments.items()
    )


async def stored(running: RunningGateway, count: int) -> None:
    news = running.services.news
    assert news is not None
    with trio.fail_after(10):
        while await news.store.count() < count:
            await trio.sleep(0.05)


def error_code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def test_news_is_a_connection_with_every_source_and_says_why_sentiment_is_null(
    newsroom: tuple[RunningGateway, Simulator],
) -> None:
    running, _ = newsroom
    await stored(running, 6)  # CoinDesk 3 + Cointelegraph 2 new + Decrypt 1 new
    body = await graphql(running, page(first=2))
    assert "errors" not in body, body
    connection = body["data"]["news"]
    assert len(connection["edges"]) == 2 and connection["pageInfo"]["hasNextPage"] is True
    assert connection["pageInfo"]["endCursor"] == connection["edges"][-1]["cursor"]
    (warning,) = body["extensions"]["warnings"]
    assert (
        warning["code"] == "MODEL_UNAVAILABLE"
        and "GATEWAY_SENTIMENT_MODEL=off" in warning["reason"]
    )
    etf = await graphql(running, page(search="Grayscale"))
    (edge,) = etf["data"]["news"]["edges"]
    node = edge["node"]
    # the title of whichever feed told it first (all three rank alike)
    assert (
        node["title"].lower() == "bitcoin etfs log record $1.1b inflows as btc nears all-time high"
    )
    assert sorted(node["sources"]) == sorted(FEEDS)
    assert node["url"].startswith("https://") and "utm_" not in node["url"]
    assert node["coins"] == ["BTC"] and node["sentiment"] is None
    assert "<" not in node["summary"]


async def test_bad_arguments_are_bad_user_input_never_internal(
    newsroom: tuple[RunningGateway, Simulator],
) -> None:
    running, _ = newsroom
    cases = {
        page(first=0): "BAD_USER_INPUT",
        page(first=101): "BAD_USER_INPUT",
        page(after="not-a-cursor"): "BAD_USER_INPUT",
        page(after="bjE6MToy" + "A" * 80): "BAD_USER_INPUT",
        page(search="x" * 201): "BAD_USER_INPUT",
        page(search='"*()'): "BAD_USER_INPUT",  # no word to look for
        page(coin="BTCC"): "UNKNOWN_SYMBOL",
        "{ fearGreedHistory(days: 0) { value } }": "BAD_USER_INPUT",
    }
    for query, code in cases.items():
        body = await graphql(running, query)
        assert error_code(body) == code, (query, body)
    unknown = await graphql(running, page(coin="ETHH"))
    assert "ETH" in unknown["errors"][0]["extensions"]["suggestions"]
    for search in ['"bitcoin', "NEAR(etf", "etf AND", "title:etf", "bit*", "-(x)", "\\u0000"]:
        body = await graphql(running, page(search=search))
        assert "errors" not in body, (search, body)  # FTS syntax never reaches SQLite


async def test_pages_walk_500_stories_with_no_repeat_and_no_gap_while_news_arrives(
    newsroom: tuple[RunningGateway, Simulator],
) -> None:
    running, _ = newsroom
    news = running.services.news
    assert news is not None
    await stored(running, 6)
    base = utc_now() - timedelta(days=1)

    def story(n: int, minutes: float, kind: str = "Story") -> NewsItem:
        title = f"{kind} {n}: markets report number {n * 31}"
        return NewsItem(
            "walk", title, f"https://walk.example/{kind}/{n}", base + timedelta(minutes=minutes)
        )

    for start in range(0, 500, 100):
        await news.ingest.ingest([story(n, (n * 37) % 900) for n in range(start, start + 100)])
    total = await news.store.count()
    seen: list[str] = []
    after: str | None = None
    with trio.fail_after(30):
        for n in range(100):
            arguments: dict[str, Any] = {"first": 37}
            if after is not None:
                arguments["after"] = after
            body = await graphql(running, page(**arguments))
            assert "errors" not in body, body
            connection = body["data"]["news"]
            seen += [edge["node"]["id"] for edge in connection["edges"]]
            # news arrives between pages: fresh stories, and late ones dated in walked ground
            await news.ingest.ingest([story(n, 2_000, "Fresh"), story(n, (n * 53) % 900, "Late")])
            if not connection["pageInfo"]["hasNextPage"]:
                break
            after = connection["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen))  # no repeat
    assert len(seen) >= total  # every story stored when the walk began (and no gap among them)


async def test_the_sentiment_filter_and_a_scored_story(
    newsroom: tuple[RunningGateway, Simulator],
) -> None:
    running, _ = newsroom
    news = running.services.news
    assert news is not None
    await stored(running, 6)
    edges = (await graphql(running, page(first=3)))["data"]["news"]["edges"]
    ids = [int(edge["node"]["id"]) for edge in edges]
    await news.store.set_sentiment([(ids[1], StoredSentiment("BEARISH", -0.6, 0.8, "finbert"))])
    body = await graphql(running, page(sentiment="BEARISH"))
    (edge,) = body["data"]["news"]["edges"]
    assert edge["node"]["id"] == str(ids[1])
    assert edge["node"]["sentiment"] == {"label": "BEARISH", "score": -0.6, "model": "finbert"}
    assert body["data"]["news"]["pageInfo"] == {"hasNextPage": False, "endCursor": edge["cursor"]}


async def test_fear_and_greed_now_and_its_history(
    newsroom: tuple[RunningGateway, Simulator],
) -> None:
    running, sim = newsroom
    news = running.services.news
    assert news is not None
    with trio.fail_after(10):
        while len(await news.store.fear_greed_since(utc_now() - timedelta(days=500))) < 400:
            await trio.sleep(0.05)
    body = await graphql(
        running,
        "{ fearGreed { value classification at provider }"
        " fearGreedHistory(days: 30) { value classification at provider } }",
    )
    assert "errors" not in body, body
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    now = body["data"]["fearGreed"]
    assert now["value"] == sim.news.fng_value(0) and now["provider"] == "alternative-me"
    assert datetime.fromisoformat(now["at"]) == today
    history = body["data"]["fearGreedHistory"]
    assert len(history) == 30  # days after the cut-off, oldest first, ending today
    assert [datetime.fromisoformat(p["at"]) for p in history] == [
        today - timedelta(days=29 - n) for n in range(30)
    ]
    assert [p["value"] for p in history] == [sim.news.fng_value(29 - n) for n in range(30)]


async def test_subscriptions_deliver_new_stories_for_a_coin_and_new_index_values(
    newsroom: tuple[RunningGateway, Simulator],
) -> None:
    running, sim = newsroom
    await stored(running, 6)
    async with connect(running) as ws:
        await init(ws)
        coin = 'subscription { news(coin: "XRP") { title coins sources } }'
        await send(ws, {"type": "subscribe", "id": "xrp", "payload": {"query": coin}})
        index = "subscription { fearGreed { value classification provider } }"
        await send(ws, {"type": "subscribe", "id": "fg", "payload": {"query": index}})
        await wait_members(running, 2)
        now = datetime.now(UTC)
        sim.news.publish("decrypt", Story("Solana rallies again", "https://decrypt.co/9/sol", now))
        sim.news.publish(
            "coindesk", Story("XRP jumps on court win", "https://coindesk.com/9/xrp", now)
        )
        sim.news.set_fear_greed(3)
        got: dict[str, Any] = {}
        with trio.fail_after(10):  # the index may first send the value it had: wait for 3
            while "xrp" not in got or got["fg"]["fearGreed"]["value"] != 3:
                message = await receive(ws, 10)
                assert message["type"] == "next", message
                got.setdefault("fg", {"fearGreed": {"value": None}})
                if message["id"] == "xrp":
                    assert "xrp" not in got  # the Solana story is not for this subscriber
                got[message["id"]] = message["payload"]["data"]
        assert got["xrp"] == {
            "news": {"title": "XRP jumps on court win", "coins": ["XRP"], "sources": ["coindesk"]}
        }
        assert got["fg"]["fearGreed"] == {
            "value": 3,
            "classification": "Extreme Fear",
            "provider": "alternative-me",
        }
        bad = 'subscription { news(coin: "NOTACOIN") { title } }'
        await send(ws, {"type": "subscribe", "id": "bad", "payload": {"query": bad}})
        with trio.fail_after(5):
            while (message := await receive(ws, 5))["id"] != "bad":
                pass
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "UNKNOWN_SYMBOL"


async def test_a_model_scores_stories_before_they_are_streamed(
    newsroom: tuple[RunningGateway, Simulator],
) -> None:
    running, sim = newsroom
    news = running.services.news
    assert news is not None
    await stored(running, 6)
    scorer = FakeScorer()
    news.scorer = news.ingest.scorer = scorer  # the model, loaded after all
    async with connect(running) as ws:
        await init(ws)
        query = "subscription { news { title sentiment { label model } } }"
        await send(ws, {"type": "subscribe", "id": "all", "payload": {"query": query}})
        await wait_members(running, 1)
        story = Story("Bitcoin surges past record", "https://decrypt.co/10/btc", datetime.now(UTC))
        sim.news.publish("decrypt", story)
        message = await receive(ws, 10)
    assert message["payload"]["data"]["news"] == {
        "title": "Bitcoin surges past record",
        "sentiment": {"label": "BULLISH", "model": "fake-model"},
    }
    body = await graphql(running, page(first=1))
    assert "warnings" not in (body.get("extensions") or {})  # a model is loaded now

"""Normalising a parsed story: canonical URLs, plain text, UTC times, coins without false hits,
and the near-duplicate rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.news.coins import match_coins
from gateway.news.dedup import same_story
from gateway.news.normalise import canonical_url, normalise, plain_text, title_key
from gateway.news_models import NewsItem
from gateway.symbols import known_symbols

SEEN = datetime(2024, 3, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        (
            "https://www.coindesk.com/markets/2024/03/25/etf/?utm_medium=referral&utm_source=rss"
            "&utm_campaign=headlines",
            "https://www.coindesk.com/markets/2024/03/25/etf",
        ),
        ("HTTPS://Decrypt.CO:443/223187/x#comments", "https://decrypt.co/223187/x"),
        ("http://example.com:80/?b=2&fbclid=zz&a=1&gclid=q", "http://example.com?a=1&b=2"),
        ("https://example.com/a?id=7&ref=twitter&mc_cid=1&_hsenc=x", "https://example.com/a?id=7"),
        ("https://example.com:8443/a/", "https://example.com:8443/a"),
    ],
)
def test_canonical_urls(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


@pytest.mark.parametrize(
    "url", ["ftp://x.com/a", "javascript:alert(1)", "/relative", "https://", "http://[::1"]
)
def test_what_is_not_an_http_url_has_no_canonical_form(url: str) -> None:
    assert canonical_url(url) is None


def test_plain_text_strips_html_and_caps_at_a_word() -> None:
    html = "<p>One &amp; two</p><script>var x = 1;</script><style>p{}</style><br>three&nbsp;four"
    assert plain_text(html, 100) == "One & two three four"
    capped = plain_text("alpha beta gamma delta epsilon", 17)
    assert capped == "alpha beta gamma…" and len(capped) <= 17
    assert plain_text("<img src=x>", 10) is None and plain_text(None, 10) is None


@pytest.mark.parametrize(
    ("text", "coins"),
    [
        ("Bitcoin tops $70K as ETH rallies", ("BTC", "ETH")),
        ("Linked wallets drained; one solution is proposed", ()),  # linked, solution, one
        ("ONE MORE LINK TO THE SOLUTION", ()),  # an all-caps headline
        ("$LINK and $ONE-style cashtags", ("LINK",)),  # ONE is not in the asset table
        ("Chainlink and Solana rally", ("LINK", "SOL")),
        ("Bitcoin Cash forks again", ("BCH",)),  # the longer name wins, not BTC too
        ("Wrapped Bitcoin and Ethereum Classic", ("ETC", "WBTC")),
        ("An avalanche of liquidations hit the DOT", ()),
        ("ether and shiba  inu", ("ETH", "SHIB")),
        ("BTC-USD, ETH/BTC and (XRP)", ("BTC", "ETH", "XRP")),
        ("BTCUSDT and xrp in lower case", ()),
    ],
)
def test_coins_are_matched_without_false_hits(text: str, coins: tuple[str, ...]) -> None:
    assert match_coins(text) == coins


def test_upstream_tags_count_when_the_table_knows_them() -> None:
    assert match_coins("Markets", tags=("btc", "NOTACOIN", " eth ")) == ("BTC", "ETH")
    assert set(match_coins("Bitcoin", tags=known_symbols())) == known_symbols()


def test_normalise_a_story() -> None:
    item = NewsItem(
        "cointelegraph",
        "  Bitcoin <b>ETFs</b> log record inflows ",
        "https://cointelegraph.com/news/etf?utm_source=rss",
        datetime(2024, 3, 25, 11, 10, tzinfo=timezone(timedelta(hours=2))),
        "<p>Spot Bitcoin ETFs saw a record day &amp; Grayscale outflows slowed.</p>",
        ("SOL",),
    )
    article = normalise(item, SEEN, 40)
    assert article is not None
    assert article.title == "Bitcoin ETFs log record inflows"
    assert article.url == "https://cointelegraph.com/news/etf"
    assert article.published_at == datetime(2024, 3, 25, 9, 10, tzinfo=UTC)
    assert article.summary == "Spot Bitcoin ETFs saw a record day &…"
    assert article.coins == ("BTC", "SOL")
    assert article.title_key == "bitcoin etfs log record inflows"


def test_a_story_without_a_date_is_dated_when_seen_and_never_in_the_future() -> None:
    undated = NewsItem("cryptoslate", "Polkadot auction", "https://cryptoslate.com/a", None)
    article = normalise(undated, SEEN, 500)
    assert article is not None and article.published_at == SEEN
    future = NewsItem("x", "Tomorrow's news", "https://x.com/a", SEEN + timedelta(days=1))
    article = normalise(future, SEEN, 500)
    assert article is not None and article.published_at == SEEN


def test_a_story_without_a_title_or_a_web_link_is_dropped() -> None:
    assert normalise(NewsItem("x", "<p></p>", "https://x.com/a", SEEN), SEEN, 500) is None
    assert normalise(NewsItem("x", "Title", "mailto:a@b.c", SEEN), SEEN, 500) is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Bitcoin ETFs Log Record $1.1B Inflows as BTC Nears All-Time High",
         "Bitcoin ETFs log record $1.1B inflows as BTC nears all-time high!", True),
        ("Bitcoin ETFs log record inflows as BTC nears all time high",
         "Bitcoin ETFs log record inflows as BTC nears its all time high", True),
        ("Bitcoin ETFs log record inflows as BTC nears all-time high",
         "Ethereum ETFs log record outflows as ETH nears yearly low", False),
        ("Bitcoin price", "Bitcoin prices", False),  # short titles: only when equal
        ("Bitcoin price", "bitcoin PRICE", True),
        ("Bitcoin tops $67,000 as ETF demand grows", "Bitcoin tops $68,000 as ETF demand grows",
         False),  # a templated headline on two days
    ],
)  # fmt: skip
def test_near_identical_titles(a: str, b: str, same: bool) -> None:
    assert same_story(title_key(a), title_key(b)) is same

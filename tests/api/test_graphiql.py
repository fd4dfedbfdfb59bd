"""GraphiQL is served entirely by the gateway: the page, and the React/GraphiQL assets it loads.

The page must work air-gapped, so it may reference no other host, and every asset it references
must be served here with the right content type. Asset URLs carry `?v=<content hash>` and are
cached as immutable, so the hash in the page must match the file (scripts/vendor-graphiql.sh
keeps them in step). A browser test drives Debian's Chromium through Python playwright
(tests/browser.py; both installed in CI by `.ci/run` and the `test` extra).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio

from gateway.api.static_assets import CONTENT_TYPES
from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from tests.browser import SCREENSHOTS, Browser, missing_browser
from tests.services import missing_service

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
STATIC = resources.files("gateway").joinpath("static")
VENDORED = ("react.production.min.js", "react-dom.production.min.js", "graphiql.min.js",
            "graphiql.min.css")


class _References(HTMLParser):
    """Every src/href in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


def _base(gateway: RunningGateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


async def _get_page(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/graphql", headers={"Accept": BROWSER_ACCEPT})


async def test_browsers_get_the_graphiql_page(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=_base(gateway)) as client:
            response = await _get_page(client)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "GraphiQL.createFetcher" in page
    assert "subscriptionUrl" in page
    assert "subscription Ticks" in page
    assert sorted(urlsplit(url).path for url in _references(page)) == sorted(
        f"/graphiql/{name}" for name in VENDORED
    )


async def test_the_page_references_no_other_host(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=_base(gateway)) as client:
            page = (await _get_page(client)).text
    for url in _references(page):
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        assert parts.path.startswith("/graphiql/"), url
    assert not re.search(r"\b(?:https?|wss?)://", page), "an absolute URL in the page"
    assert not re.search(r"""["'(=]\s*//[\w.-]""", page), "a protocol-relative URL in the page"
    for cdn in ("unpkg", "jsdelivr", "cdnjs", "esm.sh", "googleapis"):
        assert cdn not in page


async def test_every_referenced_asset_is_served_with_its_type(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=_base(gateway)) as client:
            page = (await _get_page(client)).text
            for url in _references(page):
                response = await client.get(url)
                name = urlsplit(url).path.rsplit("/", 1)[1]
                suffix = "." + name.rsplit(".", 1)[1]
                assert response.status_code == 200, url
                assert response.headers["content-type"] == CONTENT_TYPES[suffix], url
                assert response.headers["x-content-type-options"] == "nosniff"
                body = STATIC.joinpath("graphiql", name).read_bytes()
                assert response.content == body, url
                # The cache-busting hash in the page is the file's, so immutable caching is safe.
                (version,) = parse_qs(urlsplit(url).query)["v"]
                assert version == hashlib.sha256(body).hexdigest()[:12], url
                assert "immutable" in response.headers["cache-control"]
                assert "max-age=31536000" in response.headers["cache-control"]


async def test_assets_compress_and_revalidate(gateway: RunningGateway) -> None:
    body = STATIC.joinpath("graphiql", "graphiql.min.js").read_bytes()
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=_base(gateway)) as client:
            plain = await client.get(
                "/graphiql/graphiql.min.js", headers={"Accept-Encoding": "identity"}
            )
            zipped = await client.get(
                "/graphiql/graphiql.min.js", headers={"Accept-Encoding": "gzip, deflate"}
            )
            again = await client.get(
                "/graphiql/graphiql.min.js", headers={"If-None-Match": plain.headers["etag"]}
            )
            head = await client.head("/graphiql/graphiql.min.css")
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    assert int(plain.headers["content-length"]) == len(body)
    assert plain.headers["cache-control"] == "no-cache"  # no ?v=: revalidate every time
    assert plain.headers["vary"] == "Accept-Encoding"
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(body) / 3
    assert zipped.content == body  # httpx decoded it
    assert again.status_code == 304
    assert again.content == b""
    assert head.status_code == 200
    assert head.headers["content-type"] == CONTENT_TYPES[".css"]


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/nope.js",
        "/graphiql/__init__.py",
        "/graphiql/graphiql.min.js.map",
        "/graphiql/../app.py",
        "/graphiql/%2e%2e%2fapp.py",
        "/graphiql/..%2Fgraphiql.html",
        "/graphiql/.hidden.js",
        "/graphiql/",
    ],
)
async def test_only_vendored_files_are_served(gateway: RunningGateway, path: str) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=_base(gateway)) as client:
            response = await client.get(httpx.URL(_base(gateway) + path))
    assert response.status_code == 404, path


async def test_json_get_without_a_query_is_not_the_page(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=_base(gateway)) as client:
            json_response = await client.get("/graphql", headers={"Accept": "application/json"})
            with_query = await client.get(
                "/graphql", params={"query": "{ __typename }"}, headers={"Accept": BROWSER_ACCEPT}
            )
    for response in (json_response, with_query):
        assert not response.headers["content-type"].startswith("text/html")
        assert "<html" not in response.text.lower()
    assert json_response.headers["content-type"].startswith("application/json")
    assert "errors" in json_response.json()
    assert with_query.json() == {"data": {"__typename": "Query"}}


def test_vendored_files_match_their_manifest() -> None:
    """VENDORED.txt (written by scripts/vendor-graphiql.sh) lists a sha256 for every file."""
    folder = STATIC.joinpath("graphiql")
    manifest = folder.joinpath("VENDORED.txt").read_text("utf-8")
    lines = re.findall(r"^\s+([0-9a-f]{64})\s+(\S+)$", manifest, re.MULTILINE)
    listed = {name: digest for digest, name in lines}
    on_disk = {entry.name for entry in folder.iterdir()} - {"VENDORED.txt"}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest() == digest, name
    for name in ("LICENSE.react.txt", "LICENSE.react-dom.txt", "LICENSE.graphiql.txt"):
        assert "MIT License" in folder.joinpath(name).read_text("utf-8")


# -- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Browser:
    reason = missing_browser()
    if reason:
        missing_service(reason)
    return Browser(tmp_path)


def _graphiql_scenario(url: str) -> Callable[[Any], dict[str, Any]]:
    def scenario(page: Any) -> dict[str, Any]:
        host = urlsplit(url).netloc
        report: dict[str, Any] = {"offHost": [], "errors": [], "ws": []}
        page.on("request", lambda r: report["offHost"].append(r.url) if urlsplit(r.url).netloc != host else None)
        page.on("pageerror", lambda e: report["errors"].append(str(e)))
        page.on("requestfailed", lambda r: report["errors"].append(f"{r.url}: {r.failure}"))
        page.on("websocket", lambda ws: report["ws"].append(ws.url))
        page.goto(url, wait_until="load")
        page.wait_for_selector(".graphiql-query-editor .CodeMirror", timeout=10_000)
        page.click('button[aria-label="Show Documentation Explorer"]')
        # Functions, not expressions: the page's CSP forbids eval, which an expression needs.
        page.wait_for_function(
            "() => /subscription:\\s*Subscription/.test("
            "document.querySelector('.graphiql-doc-explorer')?.innerText || '')",
            timeout=10_000,
        )
        report["docs"] = page.inner_text(".graphiql-doc-explorer")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "graphiql-docs.png"))
        page.click("button.graphiql-execute-button")  # two operations: a menu opens
        page.locator('[role="menuitem"]', has_text="Ticks").first.click()
        result = "() => document.querySelector('.graphiql-response')?.innerText || ''"
        page.wait_for_function(
            "() => (document.querySelector('.graphiql-response')?.innerText || '')"
            ".includes('\"priceTicks\"')",
            timeout=10_000,
        )
        report["first"] = page.evaluate(result)
        page.wait_for_function(
            "first => (document.querySelector('.graphiql-response')?.innerText || '') !== first",
            arg=report["first"],
            timeout=10_000,
        )
        report["later"] = page.evaluate(result)
        page.screenshot(path=str(SCREENSHOTS / "graphiql-subscription.png"))
        return report

    return scenario


async def test_graphiql_in_a_real_browser(gateway: RunningGateway, browser: Browser) -> None:
    bus = gateway.services.bus

    async def publish_ticks() -> None:
        usd = 60_000.0
        while True:
            usd += 1.25
            bus.prices.publish(PriceTick("BTC", usd, "demo", utc_now()))
            await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_ticks)
        report = await browser.run(_graphiql_scenario(f"{_base(gateway)}/graphql"), limit=60)
        nursery.cancel_scope.cancel()
    assert report["offHost"] == []
    assert report["errors"] == []
    assert "subscription: Subscription" in report["docs"]
    assert report["ws"] == [f"ws://127.0.0.1:{gateway.port}/graphql"]
    # The result pane is an editor, its text not quite JSON (non-breaking spaces): pick fields.
    first, later = _tick_shown(report["first"]), _tick_shown(report["later"])
    assert first[0] == later[0] == "BTC"
    assert later[1] > first[1]  # a newer tick replaced the first one


def _tick_shown(text: str) -> tuple[str, float]:
    text = " ".join(text.split())
    symbol = re.search(r'"symbol": "(\w+)"', text)
    usd = re.search(r'"usd": ([0-9.]+)', text)
    assert symbol and usd, text
    return symbol.group(1), float(usd.group(1))

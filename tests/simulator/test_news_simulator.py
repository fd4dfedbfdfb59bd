"""The simulator's news upstreams: every feed and API at the path its providers.toml entry polls,
conditional GET (ETag and Last-Modified, 304), the keyed APIs' refusals, and the faults."""

from __future__ import annotations

import httpx
import trio

from tests.simulator.news import FEEDS, Story
from tests.simulator.rest import API_KEYS, Fault, Simulator, run_simulator


def urls(sim: Simulator) -> dict[str, str]:
    paths = {
        **FEEDS,
        "reddit-cryptocurrency": "",
        "cryptopanic": "/posts/?auth_token=" + API_KEYS["cryptopanic"],
        "newsdata": "/latest?apikey=" + API_KEYS["newsdata"],
        "alternative-me": "/fng/?limit=10&format=json",
    }
    return {provider: sim.base_url(provider) + path for provider, path in paths.items()}


async def test_every_news_upstream_answers_with_validators_and_304s() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient() as http:
            for provider, url in urls(sim).items():
                first = await http.get(url)
                assert first.status_code == 200, provider
                assert first.headers["etag"] and first.headers["last-modified"], provider
                again = await http.get(url, headers={"If-None-Match": first.headers["etag"]})
                assert (again.status_code, again.content) == (304, b""), provider
                since = {"If-Modified-Since": first.headers["last-modified"]}
                assert (await http.get(url, headers=since)).status_code == 304, provider
                assert sim.news.not_modified[provider] == 2
            # a new story changes the feed, so the old validator no longer matches
            etag = (await http.get(urls(sim)["decrypt"])).headers["etag"]
            sim.news.publish("decrypt", Story("New", "https://decrypt.co/new", None))
            changed = await http.get(urls(sim)["decrypt"], headers={"If-None-Match": etag})
            assert changed.status_code == 200 and b"<title>New</title>" in changed.content


async def test_keyed_news_apis_refuse_a_missing_key() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient() as http:
            for provider, path in (("cryptopanic", "/posts/"), ("newsdata", "/latest")):
                answer = await http.get(sim.base_url(provider) + path)
                assert answer.status_code == 401, provider


async def test_feed_faults_broken_documents_encodings_and_hangs() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=0.5) as http:
            beincrypto = await http.get(urls(sim)["beincrypto"])
            assert b'encoding="windows-1252"' in beincrypto.content
            assert "\u2013".encode("cp1252") in beincrypto.content  # not UTF-8 bytes
            sim.news.serve_raw("theblock", "news_broken.xml")
            broken = await http.get(urls(sim)["theblock"])
            assert not broken.content.rstrip().endswith(b"</rss>")
            sim.inject("coindesk", Fault.hang(times=1))
            try:
                await http.get(urls(sim)["coindesk"])
            except httpx.TimeoutException:
                pass
            else:
                raise AssertionError("a hanging feed answered")
            assert (await http.get(urls(sim)["coindesk"])).status_code == 200  # only once

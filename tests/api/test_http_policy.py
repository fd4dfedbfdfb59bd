"""HTTP hygiene: client addresses behind proxies, security headers, CORS, Origin checks, body size.

Unit tests call `HttpPolicy` with hand-made ASGI scopes; the rest ask a real gateway on loopback.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import HandshakeError, open_websocket_url

from gateway.api.http_policy import HttpPolicy, inline_script_hashes, page_csp
from gateway.config import Settings, settings_from_env
from gateway.errors import ConfigError
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway

QUERY = {"query": "{ __typename }"}
EVIL = "https://evil.example"
APP = "https://app.example.com"


def scope(peer: str = "203.0.113.9", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 5555),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def policy(**overrides: Any) -> HttpPolicy:
    return HttpPolicy(Settings(**overrides))


# -- client addresses -------------------------------------------------------------------------


def test_forwarding_headers_are_ignored_without_trusted_proxies() -> None:
    plain = policy()
    assert plain.client_address(scope(x_forwarded_for="1.1.1.1")) == "203.0.113.9"
    assert plain.client_address(scope(forwarded="for=1.1.1.1")) == "203.0.113.9"


def test_forwarding_headers_are_ignored_from_untrusted_peers() -> None:
    behind = policy(trusted_proxies=("10.0.0.0/8",))
    assert behind.client_address(scope(x_forwarded_for="1.1.1.1")) == "203.0.113.9"


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        ({"x_forwarded_for": "198.51.100.7"}, "198.51.100.7"),
        # a client may send its own X-Forwarded-For: only the rightmost untrusted hop counts
        ({"x_forwarded_for": "6.6.6.6, 198.51.100.7"}, "198.51.100.7"),
        ({"x_forwarded_for": "6.6.6.6, 198.51.100.7, 10.1.2.3"}, "198.51.100.7"),
        ({"x_forwarded_for": "10.9.9.9, 10.1.2.3"}, "10.9.9.9"),  # all trusted: the first
        ({"x_forwarded_for": "198.51.100.7:4711"}, "198.51.100.7"),
        ({"x_forwarded_for": "2001:db8::1"}, "2001:db8::1"),
        ({"x_forwarded_for": "garbage, 10.1.2.3"}, "unknown"),
        ({"forwarded": 'for=6.6.6.6, for="[2001:db8::7]:4711";proto=https'}, "2001:db8::7"),
        (
            {"forwarded": "for=198.51.100.7;by=10.0.0.1", "x_forwarded_for": "6.6.6.6"},
            "198.51.100.7",
        ),
        ({}, "10.0.0.5"),  # nothing forwarded: the proxy itself
    ],
)
def test_trusted_proxies_name_the_rightmost_untrusted_hop(
    headers: dict[str, str], client: str
) -> None:
    behind = policy(trusted_proxies=("10.0.0.0/8",))
    assert behind.client_address(scope("10.0.0.5", **headers)) == client


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_TRUSTED_PROXIES"):
        settings_from_env({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, nonsense"})
    with pytest.raises(ConfigError, match="GATEWAY_CORS_ORIGINS"):
        settings_from_env({"GATEWAY_CORS_ORIGINS": "https://ok.example, app.example.com/path"})
    with pytest.raises(ConfigError, match="GATEWAY_ANONYMOUS"):
        settings_from_env({"GATEWAY_ANONYMOUS": "maybe"})
    with pytest.raises(ConfigError, match="GATEWAY_TIER_FREE"):
        settings_from_env({"GATEWAY_TIER_FREE": "per_minute=-1"})
    with pytest.raises(ConfigError, match="GATEWAY_TIER_PRO"):
        settings_from_env({"GATEWAY_TIER_PRO": "speed=3"})
    with pytest.raises(ConfigError, match="GATEWAY_MAX_BODY_BYTES"):
        settings_from_env({"GATEWAY_MAX_BODY_BYTES": "lots"})
    settings = settings_from_env(
        {
            "GATEWAY_ANONYMOUS": "off",
            "GATEWAY_CORS_ORIGINS": "https://App.example.com, *",
            "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,::1",
            "GATEWAY_TIER_FREE": "per_minute=10, symbols=0",
            "GATEWAY_MAX_BODY_BYTES": "2048",
        }
    )
    assert settings.anonymous_access == "off"
    assert settings.cors_origins == ("https://app.example.com", "*")
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1")
    assert (settings.tier_free_per_minute, settings.tier_free_symbols) == (10, 0)
    assert settings.tier_free_per_day == 1_000 and settings.max_body_bytes == 2048


# -- origins ------------------------------------------------------------------------------------


def test_origin_verdicts() -> None:
    cors = policy(cors_origins=(APP,))
    host = {"host": "gw.example.com"}
    assert cors.origin_verdict(scope(**host)) == "none"
    assert cors.origin_verdict(scope(origin="https://gw.example.com", **host)) == "same"
    assert cors.origin_verdict(scope(origin="https://gw.example.com:443", **host)) == "same"
    assert cors.origin_verdict(scope(origin=APP, **host)) == "allowed"
    assert cors.origin_verdict(scope(origin=APP.upper(), **host)) == "allowed"
    assert cors.origin_verdict(scope(origin=EVIL, **host)) == "denied"
    assert cors.origin_verdict(scope(origin="null", **host)) == "denied"
    anyone = policy(cors_origins=("*",))
    assert anyone.origin_verdict(scope(origin=EVIL, **host)) == "allowed"
    assert anyone.origin_verdict(scope(origin="null", **host)) == "denied"


def test_the_graphiql_page_csp_admits_exactly_its_inline_script() -> None:
    html = resources.files("gateway").joinpath("static/graphiql.html").read_text("utf-8")
    (digest,) = inline_script_hashes(html)
    csp = page_csp([digest], "127.0.0.1:7860")
    assert f"script-src 'self' {digest}" in csp
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert "connect-src 'self' ws://127.0.0.1:7860 wss://127.0.0.1:7860" in csp
    assert "ws://" not in page_csp([digest], "evil; script-src *")  # a hostile Host is dropped


# -- against a gateway --------------------------------------------------------------------------


async def request(running: RunningGateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=5) as client:
            return await client.request(method, path, **kwargs)


SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/graphql", {"json": QUERY}),
        ("POST", "/graphql", {"content": b"{"}),
        ("GET", "/healthz", {}),
        ("GET", "/metrics", {}),
        ("GET", "/nope", {}),
        ("GET", "/graphiql/graphiql.min.css", {}),
        ("GET", "/graphql", {"headers": {"Accept": "text/html"}}),
    ],
)
async def test_security_headers_on_every_response(
    gateway: RunningGateway, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = await request(gateway, method, path, **kwargs)
    for name, value in SECURITY.items():
        assert response.headers.get_list(name) == [value], name
    (csp,) = response.headers.get_list("content-security-policy")
    assert "frame-ancestors 'none'" in csp
    if response.headers["content-type"].startswith("text/html"):
        page = response.text
        assert inline_script_hashes(page)[0] in csp and "connect-src 'self' ws://" in csp
    else:
        assert csp.startswith("default-src 'none'")


async def test_cors_is_closed_by_default(gateway: RunningGateway) -> None:
    foreign = await request(gateway, "POST", "/graphql", json=QUERY, headers={"Origin": EVIL})
    assert foreign.status_code == 403
    assert foreign.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "access-control-allow-origin" not in foreign.headers
    own = f"http://127.0.0.1:{gateway.port}"
    same = await request(gateway, "POST", "/graphql", json=QUERY, headers={"Origin": own})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers
    plain = await request(gateway, "POST", "/graphql", json=QUERY)  # curl, servers: no Origin
    assert plain.status_code == 200
    preflight = await request(
        gateway,
        "OPTIONS",
        "/graphql",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_allowlist(start_gateway: StartGateway) -> None:
    running = await start_gateway(cors_origins=(APP,))
    allowed = await request(running, "POST", "/graphql", json=QUERY, headers={"Origin": APP})
    assert allowed.status_code == 200 and allowed.json() == {"data": {"__typename": "Query"}}
    assert allowed.headers["access-control-allow-origin"] == APP
    assert "Origin" in allowed.headers.get_list("vary")
    assert "Retry-After" in allowed.headers["access-control-expose-headers"]
    preflight = await request(
        running,
        "OPTIONS",
        "/graphql",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, x-evil",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert preflight.headers["access-control-allow-headers"] == "content-type, authorization"
    assert preflight.headers["access-control-max-age"] == "600"
    denied = await request(running, "POST", "/graphql", json=QUERY, headers={"Origin": EVIL})
    assert denied.status_code == 403 and "access-control-allow-origin" not in denied.headers
    health = await request(running, "GET", "/healthz", headers={"Origin": EVIL})
    assert health.status_code == 200 and "access-control-allow-origin" not in health.headers


async def test_websocket_handshakes_check_the_origin(start_gateway: StartGateway) -> None:
    running = await start_gateway(cors_origins=(APP,))
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    own = f"http://127.0.0.1:{running.port}"
    for origin in (None, own, APP):
        headers = [(b"origin", origin.encode())] if origin else None
        with trio.fail_after(5):
            async with open_websocket_url(
                url, subprotocols=["graphql-transport-ws"], extra_headers=headers
            ) as ws:
                await ws.send_message('{"type": "connection_init"}')
                assert "connection_ack" in await ws.get_message()
    with pytest.raises(HandshakeError) as refused, trio.fail_after(5):
        async with open_websocket_url(
            url, subprotocols=["graphql-transport-ws"], extra_headers=[(b"origin", EVIL.encode())]
        ):
            pass
    assert re.search(r"\b403\b", repr(refused.value))


async def test_trusted_proxy_is_honoured_only_from_trusted_peers(
    start_gateway: StartGateway,
) -> None:
    """Anonymous limits count per client: behind a trusted proxy, per forwarded address."""
    behind = await start_gateway(tier_free_per_minute=2, trusted_proxies=("127.0.0.1/32",))
    for client in ("198.51.100.1", "198.51.100.2"):
        headers = {"X-Forwarded-For": f"6.6.6.6, {client}"}  # the left part is forged
        for _ in range(2):
            response = await request(behind, "POST", "/graphql", json=QUERY, headers=headers)
            assert response.status_code == 200
        over = await request(behind, "POST", "/graphql", json=QUERY, headers=headers)
        assert over.status_code == 429


async def test_forwarded_headers_from_untrusted_peers_change_nothing(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(tier_free_per_minute=2, trusted_proxies=("10.0.0.0/8",))
    statuses = []
    for n in range(3):  # a new forged address each time: still one client, the TCP peer
        headers = {"X-Forwarded-For": f"198.51.100.{n}"}
        response = await request(running, "POST", "/graphql", json=QUERY, headers=headers)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]


async def test_the_body_size_limit_is_a_setting(start_gateway: StartGateway) -> None:
    running = await start_gateway(max_body_bytes=200)
    small = await request(running, "POST", "/graphql", json=QUERY)
    assert small.status_code == 200
    big = await request(running, "POST", "/graphql", json={"query": "{ __typename }" + " " * 300})
    assert big.status_code == 413
    assert big.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

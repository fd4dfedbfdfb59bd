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
    cors = policy(cors_origins=(APP,), allowed_hosts=("gw.example.com",))
    host = {"host": "gw.example.com"}
    assert cors.origin_verdict(scope(**host)) == "none"
    assert cors.origin_verdict(scope(origin="https://gw.example.com", **host)) == "same"
    assert cors.origin_verdict(scope(origin="https://gw.example.com:443", **host)) == "same"
    assert cors.origin_verdict(scope(origin=APP, **host)) == "allowed"
    assert cors.origin_verdict(scope(origin=APP.upper(), **host)) == "allowed"
    assert cors.origin_verdict(scope(origin=EVIL, **host)) == "denied"
    assert cors.origin_verdict(scope(origin="null", **host)) == "denied"
    anyone = policy(cors_origins=("*",), allowed_hosts=("gw.example.com",))
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


# -- allowed hosts (DNS rebinding) ------------------------------------------------------------


def test_allowed_hosts_are_the_loopback_names_the_bind_address_and_the_setting() -> None:
    def allowed(policy: HttpPolicy, *hosts: str) -> bool:
        return policy.host_allowed(scope(**({"host": hosts[0]} if hosts else {})))

    local = policy()
    for host in ("localhost", "LOCALHOST:7860", "127.0.0.1:7860", "[::1]:7860", "[0:0::1]"):
        assert allowed(local, host), host
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil", "[::2]", ""):
        assert not allowed(local, host), host
    assert not allowed(local)  # no Host at all
    assert not local.host_allowed({"headers": [(b"host", b"localhost"), (b"host", b"evil")]})
    # binding to a named address allows it; a wildcard bind adds nothing
    assert allowed(policy(host="10.1.2.3"), "10.1.2.3:7860")
    assert not allowed(policy(host="0.0.0.0"), "10.1.2.3:7860")
    named = policy(host="0.0.0.0", allowed_hosts=("gw.example.com", "*.example.org"))
    assert allowed(named, "GW.example.com:443") and allowed(named, "api.example.org")
    assert not allowed(named, "example.org") and not allowed(named, "evil.example")
    assert allowed(policy(allowed_hosts=("*",)), "anything.example")


def test_allowed_hosts_and_slow_client_settings() -> None:
    settings = settings_from_env(
        {
            "GATEWAY_ALLOWED_HOSTS": "Gw.Example.com, ::1, *.example.org",
            "GATEWAY_HTTP_HEADER_TIMEOUT": "2.5",
            "GATEWAY_HTTP_BODY_TIMEOUT": "30",
        }
    )
    assert settings.allowed_hosts == ("gw.example.com", "[::1]", "*.example.org")
    assert (settings.http_header_timeout, settings.http_body_timeout) == (2.5, 30.0)
    for name in ("GATEWAY_HTTP_HEADER_TIMEOUT", "GATEWAY_HTTP_BODY_TIMEOUT"):
        for bad in ("0", "-1", "nan", "soon"):
            with pytest.raises(ConfigError, match=name):
                settings_from_env({name: bad})
    for bad in ("https://gw.example.com", "gw.example.com:443", "gw example", "a/b"):
        with pytest.raises(ConfigError, match="GATEWAY_ALLOWED_HOSTS"):
            settings_from_env({"GATEWAY_ALLOWED_HOSTS": bad})
    with pytest.raises(ConfigError, match="allowed_hosts"):
        Settings(allowed_hosts=("gw.example.com:443",)).validated()


def test_same_origin_is_judged_only_from_an_allowed_host() -> None:
    rebound = {"host": "evil.example", "origin": "http://evil.example"}
    assert policy().origin_verdict(scope(**rebound)) == "denied"
    # a forwarded host from a trusted proxy counts only when it is allowed, too
    behind = policy(trusted_proxies=("203.0.113.0/24",), allowed_hosts=("gw.example.com",))
    forwarded = {"host": "localhost", "x_forwarded_host": "evil.example"}
    assert behind.origin_verdict(scope(origin="http://evil.example", **forwarded)) == "denied"
    forwarded = {"host": "localhost", "x_forwarded_host": "gw.example.com"}
    assert behind.origin_verdict(scope(origin="http://gw.example.com", **forwarded)) == "same"


CREATE_POOL = 'mutation { createPool(name: "p", category: RPC, strategy: PRIORITY) { id } }'


async def test_a_dns_rebound_host_is_refused_before_the_app_sees_it(
    start_gateway: StartGateway,
) -> None:
    """A page on evil.example, its name rebound to 127.0.0.1, is same-origin with itself: it sent
    `Host: evil.example` and `Origin: http://evil.example` and got 200, and on a development
    gateway (GATEWAY_ALLOW_ADMIN_MUTATIONS=1) created a pool."""
    running = await start_gateway(allow_admin_mutations=True)
    rebound = {"Host": "evil.example", "Origin": "http://evil.example"}
    for body in (QUERY, {"query": CREATE_POOL}):
        refused = await request(running, "POST", "/graphql", json=body, headers=rebound)
        assert refused.status_code == 400
        assert "GATEWAY_ALLOWED_HOSTS" in refused.json()["errors"][0]["message"]
    assert running.services.registry is not None and "p" not in running.services.registry.pools
    for path in ("/healthz", "/graphql?query={__typename}"):
        assert (await request(running, "GET", path, headers=rebound)).status_code == 400
    # the names a visitor really uses still work, the port or not
    for host in (f"localhost:{running.port}", f"127.0.0.1:{running.port}", "localhost"):
        origin = f"http://{host}"
        ok = await request(running, "POST", "/graphql", json=QUERY, headers={"Host": host})
        assert ok.status_code == 200, host
        same = {"Host": host, "Origin": origin}
        ok = await request(running, "POST", "/graphql", json=QUERY, headers=same)
        assert ok.status_code == 200, host
    made = await request(running, "POST", "/graphql", json={"query": CREATE_POOL})
    assert made.json() == {"data": {"createPool": {"id": "p"}}}


async def _handshake(running: RunningGateway, host: str) -> bytes:
    """The status line a WebSocket handshake naming `host` gets."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        async with stream:
            await stream.send_all(
                (
                    f"GET /graphql HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
                ).encode()
            )
            return (await stream.receive_some(4096)).partition(b"\r\n")[0]


async def test_a_websocket_handshake_naming_a_rebound_host_is_refused(
    gateway: RunningGateway,
) -> None:
    assert await _handshake(gateway, "evil.example") == b"HTTP/1.1 400 "
    assert await _handshake(gateway, f"localhost:{gateway.port}") == b"HTTP/1.1 101 "

"""HTTP hygiene around the app: allowed hosts, security headers, CORS, the Origin check, the
client's address.

`HttpPolicy.serve` wraps the ASGI app for every HTTP request:

- A request whose Host is not an allowed name (`allowed_hosts`, plus the loopback names and the
  address the gateway binds to) is refused with 400 before anything else sees it, as is such a
  WebSocket handshake (`host_allowed`, `refuse_websocket`). This stops DNS rebinding: a page on
  evil.example whose name is made to resolve to 127.0.0.1 is same-origin with itself, so its
  requests carry `Host: evil.example` and `Origin: http://evil.example`, and the Origin check
  alone would take them for same-origin.
- Every response gets `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
  `X-Frame-Options: DENY` and a Content-Security-Policy: the API's `default-src 'none'`, unless
  the response brings its own (the GraphiQL page does: `page_csp`, which admits the page's own
  scripts and styles, its inline script by hash, and its WebSocket).
- CORS, closed by default: only an Origin listed in `cors_origins` ("*": any) gets
  `Access-Control-Allow-Origin` (echoed, never "*", with `Vary: Origin`); a preflight from it is
  answered here with 204, from any other origin with 403. Same-origin pages need no CORS.
- A request to a guarded path (/graphql) whose Origin is neither the gateway's own (judged from
  an allowed Host only) nor allowed is refused with 403 before the app sees it, as is such a
  WebSocket handshake (`websocket_origin_allowed`). Browsers send Origin on every cross-site
  POST, even a "no-cors" one whose response the page cannot read: without this check another
  site could still make a visitor's browser run operations (spending their limits, or
  mutating a development gateway that makes everyone an admin).

`client_address` names the client for per-client limits: the TCP peer, unless the peer is a
trusted proxy (`trusted_proxies`); then the rightmost address of `Forwarded` (or, without it,
`X-Forwarded-For`) that is not a trusted proxy, since every trusted hop appends what it saw and
only what is left of the last untrusted hop can be forged.

Must never: let a request with a Host that is not allowed reach the app, add CORS headers for an
origin that is not allowed, or believe a forwarding header from a peer that is not a trusted
proxy.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.api.graphql_trio import dumps
from gateway.config import (
    Settings,
    parse_allowed_hosts,
    parse_cors_origins,
    parse_trusted_proxies,
)
from gateway.errors import ConfigError

__all__ = [
    "API_CSP",
    "LOOPBACK_HOSTS",
    "HttpPolicy",
    "allowed_hosts",
    "inline_script_hashes",
    "page_csp",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
ALLOWED_METHODS: Final = "GET, POST"
ALLOWED_HEADERS: Final = ("accept", "authorization", "content-type", "x-api-key")
EXPOSED_HEADERS: Final = "Retry-After"

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.I)
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
_DEFAULT_PORTS: Final = {"http": ":80", "https": ":443"}
# Always allowed as Host: a browser sends them only to a page it was pointed at by that name.
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD_BINDS: Final = frozenset({"", "0.0.0.0", "[::]", "*"})

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def inline_script_hashes(html: str) -> list[str]:
    """CSP sources ('sha256-…') for each inline <script> of a page, exactly as written."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def page_csp(script_hashes: Iterable[str], host: str | None) -> str:
    """The CSP of an HTML page served here (GraphiQL): same-origin assets, its inline script by
    hash, inline styles (React and CodeMirror set style attributes), data: fonts and images, and
    its WebSocket to this host ('self' covers ws: only in newer browsers)."""
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self' " + " ".join(script_hashes),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """The Host names requests may carry: the loopback names, the bind address unless it is a
    wildcard (0.0.0.0, ::), and `settings.allowed_hosts`."""
    names = list(LOOPBACK_HOSTS)
    try:
        (bind,) = parse_allowed_hosts([settings.host])
    except ConfigError:  # a bind host no Host header could name
        bind = ""
    if bind not in _WILDCARD_BINDS:
        names.append(bind)
    names.extend(parse_allowed_hosts(settings.allowed_hosts))
    return tuple(dict.fromkeys(names))


def _host_name(value: str) -> str:
    """The name of a Host header value: port dropped, lower case, no trailing dot, an IPv6
    address in its compressed bracketed form ("" when it is none of these)."""
    value = value.strip().lower()
    if value.startswith("["):
        inside, bracket, _ = value[1:].partition("]")
        try:
            return f"[{ipaddress.IPv6Address(inside).compressed}]" if bracket else ""
        except ValueError:
            return ""
    return value.partition(":")[0].rstrip(".")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [
        bytes(value).decode("latin-1")
        for key, value in scope.get("headers") or ()
        if key.lower() == name
    ]


def _parse_address(token: str) -> _Address | None:
    """An address from a forwarding header hop: 1.2.3.4, 1.2.3.4:80, [::1]:80, ::1, "…"."""
    token = token.strip().strip('"').strip()
    if token.startswith("["):
        token = token[1:].partition("]")[0]
    elif token.count(":") == 1:
        token = token.partition(":")[0]
    try:
        address = ipaddress.ip_address(token)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(values: list[str]) -> list[str]:
    """The for= hops of Forwarded (RFC 7239) headers, in order."""
    hops = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, token = pair.partition("=")
                if name.strip().lower() == "for":
                    hops.append(token.strip())
    return hops


class HttpPolicy:
    """Security headers, CORS and Origin checks, and client addresses, for one gateway."""

    def __init__(self, settings: Settings, guarded_paths: Iterable[str] = ("/graphql",)) -> None:
        origins = parse_cors_origins(settings.cors_origins)
        self._any_origin = "*" in origins
        self._origins = frozenset(origins) - {"*"}
        self._cors = bool(origins)
        self._trusted: tuple[_Network, ...] = parse_trusted_proxies(settings.trusted_proxies)
        self._max_age = str(settings.cors_max_age).encode()
        self._guarded = frozenset(guarded_paths)
        hosts = allowed_hosts(settings)
        self._any_host = "*" in hosts
        self._hosts = frozenset(h for h in hosts if not h.startswith("*"))
        self._host_suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))  # ".example.com"

    # -- which hosts --------------------------------------------------------------------------

    def _host_name_allowed(self, name: str) -> bool:
        if not name:
            return False
        return self._any_host or name in self._hosts or name.endswith(self._host_suffixes)

    def host_allowed(self, scope: Scope) -> bool:
        """Whether the request's Host (every one, if it sent several) is an allowed name; a
        request without one is not."""
        hosts = _headers(scope, b"host")
        return bool(hosts) and all(self._host_name_allowed(_host_name(h)) for h in hosts)

    # -- who is the client -------------------------------------------------------------------

    def _is_trusted(self, address: _Address) -> bool:
        return any(address in network for network in self._trusted)

    def is_trusted_proxy(self, host: str) -> bool:
        """Whether a TCP peer at `host` is one of `trusted_proxies` (the connection caps exempt
        such a peer from the per-client count: gateway.api.connections)."""
        peer = _parse_address(host)
        return peer is not None and self._is_trusted(peer)

    def _trusted_peer(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not self._trusted or not client:
            return False
        peer = _parse_address(str(client[0]))
        return peer is not None and self._is_trusted(peer)

    def client_address(self, scope: Scope) -> str:
        """The client's IP address as text ("unknown" when there is none to tell)."""
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        if not self._trusted_peer(scope):
            return peer
        forwarded = _headers(scope, b"forwarded")
        if forwarded:
            hops = _forwarded_for(forwarded)
        else:
            hops = [
                hop for value in _headers(scope, b"x-forwarded-for") for hop in value.split(",")
            ]
        hops = [hop for hop in hops if hop.strip()]
        for hop in reversed(hops):
            address = _parse_address(hop)
            if address is None:
                # Written by a trusted proxy, yet no address ("unknown", an obfuscated id):
                # all such clients share one bucket rather than trusting what is left of it.
                return "unknown"
            if not self._is_trusted(address):
                return str(address)
        first = _parse_address(hops[0]) if hops else None
        return str(first) if first is not None else peer

    # -- origins ------------------------------------------------------------------------------

    def _same_origin(self, scope: Scope, origin: str) -> bool:
        parts = urlsplit(origin)
        default = _DEFAULT_PORTS.get(parts.scheme, "")

        def bare(host: str) -> str:
            host = host.strip().lower()
            return host[: -len(default)] if default and host.endswith(default) else host

        hosts = _headers(scope, b"host")
        if self._trusted_peer(scope):
            hosts += [h for v in _headers(scope, b"x-forwarded-host") for h in v.split(",")]
        # Only an allowed name can make an origin our own: any page can make a browser send
        # its own name as Host by rebinding that name to our address.
        hosts = [h for h in hosts if self._host_name_allowed(_host_name(h))]
        netloc = bare(parts.netloc)
        return any(bare(host) == netloc for host in hosts)

    def _allowed(self, origin: str) -> bool:
        return self._any_origin or origin.lower() in self._origins

    def origin_verdict(self, scope: Scope) -> str:
        """ "none" (no Origin), "same", "allowed" (a listed cross origin) or "denied"."""
        origin = _header(scope, b"origin")
        if origin is None:
            return "none"
        if self._same_origin(scope, origin):
            return "same"
        if origin != "null" and self._allowed(origin):
            return "allowed"
        return "denied"

    def websocket_origin_allowed(self, scope: Scope) -> bool:
        """Whether a WebSocket handshake may be accepted (no Origin, same origin, or allowed)."""
        return self.origin_verdict(scope) != "denied"

    # -- the wrapper --------------------------------------------------------------------------

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: App) -> None:
        """Run `app` for one HTTP request under this policy."""
        if not self.host_allowed(scope):
            await self._refuse(scope, send, 400, self._host_refusal(scope), "BAD_USER_INPUT")
            return
        verdict = self.origin_verdict(scope)
        origin = _header(scope, b"origin") if verdict == "allowed" else None
        path = str(scope.get("path", "")).rstrip("/") or "/"
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, send, verdict, origin)
            return
        if verdict == "denied" and path in self._guarded:
            origin = _header(scope, b"origin") or ""
            message = (
                f"requests from origin {origin[:100]!r} are not allowed (GATEWAY_CORS_ORIGINS)"
            )
            await self._refuse(scope, send, 403, message, "FORBIDDEN")
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._response_headers(message.get("headers") or [], origin)
            await send(message)

        await app(scope, receive, send_with_headers)

    def _response_headers(
        self, headers: Iterable[tuple[bytes, bytes]], origin: str | None
    ) -> list[tuple[bytes, bytes]]:
        result = [(bytes(k), bytes(v)) for k, v in headers]
        present = {k.lower() for k, _ in result}
        for name, value in SECURITY_HEADERS:
            if name not in present:
                result.append((name, value))
        if b"content-security-policy" not in present:
            result.append((b"content-security-policy", API_CSP.encode()))
        if self._cors:
            result.append((b"vary", b"Origin"))
        if origin is not None:
            result.append((b"access-control-allow-origin", origin.encode("latin-1")))
            result.append((b"access-control-expose-headers", EXPOSED_HEADERS.encode()))
        return result

    async def _preflight(self, scope: Scope, send: Send, verdict: str, origin: str | None) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if verdict == "allowed" and origin is not None:
            status = 204
            requested = _header(scope, b"access-control-request-headers") or ""
            wanted = [h.strip().lower() for h in requested.split(",") if h.strip()]
            allowed = [h for h in wanted if h in ALLOWED_HEADERS] or list(ALLOWED_HEADERS)
            headers = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                (b"access-control-allow-headers", ", ".join(allowed).encode()),
                (b"access-control-max-age", self._max_age),
                (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            ]
        elif verdict == "same":
            status = 204  # a same-origin preflight needs no CORS headers
        else:
            status = 403
        headers = self._response_headers(headers, None)
        headers.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    def _host_refusal(scope: Scope) -> str:
        host = _header(scope, b"host")
        named = f"Host {host[:100]!r}" if host is not None else "a request without a Host header"
        return f"{named} is not served here (GATEWAY_ALLOWED_HOSTS)"

    async def refuse_websocket(self, scope: Scope, send: Send) -> None:
        """Refuse a WebSocket handshake whose Host is not allowed: 400 where the server can
        send a response to a handshake (hypercorn can), else a close before accept (403)."""
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 4400})
            return
        body = _error_body(self._host_refusal(scope), "BAD_USER_INPUT")
        headers = self._response_headers(
            [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            None,
        )
        await send({"type": "websocket.http.response.start", "status": 400, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str, code: str) -> None:
        """Answer `status` with one GraphQL-shaped error, without reading the body."""
        body = _error_body(message, code)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        length = _header(scope, b"content-length") or ""
        if _header(scope, b"transfer-encoding") or (length.isdecimal() and int(length) > 0):
            # The body is not read: the connection cannot carry another request.
            headers.append((b"connection", b"close"))
        headers = self._response_headers(headers, None)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _error_body(message: str, code: str) -> bytes:
    return dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode()

"""Reading the API key a client presents, from HTTP headers or a WebSocket connection_init.

A key is presented as `Authorization: Bearer gw_…` or `X-API-Key: gw_…` over HTTP, and in the
WebSocket `connection_init` payload (`credential_from_init`). None means no key was sent (an
anonymous request); "" means one was sent but holds nothing usable, which is a bad key, so a
malformed credential is refused rather than served as anonymous. Whether a key is valid is
decided elsewhere: `AccessControl.authenticate` (control.py) checks it against the key store.

Must never: keep, log or echo a presented key. This module is pure parsing, with no logger
and no storage, and it should stay that way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["credential_from_headers", "credential_from_init"]


def _bearer(value: Any) -> str | None:
    """The key in an Authorization value: "Bearer <key>" (any case), or a bare gw_ key."""
    if not isinstance(value, str):
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if value.strip().startswith("gw_") and not rest:
        return value.strip()
    return None  # another scheme (Basic, …): not ours, ignored


def credential_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key of an HTTP request or WebSocket handshake, from ASGI headers, if any.

    An empty string means a credential header was sent but holds nothing usable; that is a bad
    key, not an anonymous request.
    """
    bearer: str | None = None
    api_key: str | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            text = value.decode("latin-1")
            found = _bearer(text)
            if found is not None:
                bearer = found
            elif text.strip().lower() == "bearer":
                bearer = ""
        elif lowered == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    return bearer if bearer is not None else api_key


def credential_from_init(payload: Mapping[str, Any]) -> str | None:
    """The API key in a WebSocket connection_init payload, if any.

    Accepted (names in any case): {"authorization": "Bearer <key>"}, {"x-api-key": "<key>"}
    (or "apiKey", "api_key"), and the same inside {"headers": {...}}, as GraphiQL and
    graphql-ws clients send them. A value of the wrong type, or an Authorization of another
    scheme, is returned as "" (a bad key), never ignored.
    """
    sources: list[Mapping[str, Any]] = [payload]
    for name, value in payload.items():
        if isinstance(name, str) and name.lower() == "headers" and isinstance(value, Mapping):
            sources.append(value)
    for source in sources:
        for name, value in source.items():
            if not isinstance(name, str):
                continue
            lowered = name.lower()
            if lowered == "authorization":
                return _bearer(value) or ""
            if lowered in {"x-api-key", "apikey", "api_key"}:
                return value.strip() if isinstance(value, str) else ""
    return None

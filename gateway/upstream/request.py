"""Turning a call on the upstream client into one request, ready to send: `build_request`.

It refuses what must never be sent — a disabled provider, or one whose required API key was not
given (`UpstreamUnconfigured`) — and injects the key as `provider.auth` says (query parameter,
header with prefix, or the `{key}` segment of base_url). The result, `UpstreamRequest`, carries
both the real URL and the masked endpoint that attempts and errors show, plus the spellings of
the key to mask (`gateway.upstream.masking`), and whether the request is idempotent (and so may
be retried and coalesced).

Must never send anything, and never put the key anywhere but the outgoing request: every
endpoint and message built here is masked.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from gateway.config import ProviderConfig
from gateway.errors import UpstreamUnconfigured
from gateway.upstream.masking import masker, secrets_to_mask

__all__ = ["IDEMPOTENT_METHODS", "UpstreamRequest", "build_request"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """Everything needed to send one request, auth already applied."""

    provider: ProviderConfig
    method: str
    url: str  # the real URL: may contain the key (path auth); never quoted anywhere
    endpoint: str  # the path below base_url, masked: what Attempt and errors show
    params: tuple[tuple[str, str], ...]
    body: Any
    headers: tuple[tuple[str, str], ...]
    secrets: tuple[str, ...]
    idempotent: bool
    text: bool = False  # return the body as text (RSS/Atom feeds) instead of decoded JSON
    raw: bool = False  # return a RawResponse (bytes, validators; a 304 is an answer, not an error)

    def coalesce_key(self, parse: object) -> tuple[Any, ...]:
        """What makes two concurrent requests identical (`gateway.upstream.coalescing`)."""
        body = None if self.body is None else jsonlib.dumps(self.body, sort_keys=True)
        return (
            self.provider.id,
            self.method,
            self.url,
            tuple(sorted(self.params)),
            body,
            tuple(sorted(self.headers)),
            parse,
            self.text,
            self.raw,
        )


def build_request(
    provider: ProviderConfig,
    path: str,
    method: str,
    params: Mapping[str, str] | None,
    body: Any,
    headers: Mapping[str, str] | None,
    idempotent: bool | None,
    key: str | None,
) -> UpstreamRequest:
    """Apply auth and normalise; raises UpstreamUnconfigured before anything is sent."""
    method = method.upper()
    if not provider.enabled:
        raise UpstreamUnconfigured("provider is disabled", provider=provider.id, endpoint=path)
    auth = provider.auth
    all_params = dict(params or {})
    all_headers = dict(headers or {})
    base = provider.base_url
    secret = (key or auth.default) if auth.kind != "none" else None
    if auth.kind != "none" and not secret and auth.required:
        where = f" (set {auth.env})" if auth.env else ""
        raise UpstreamUnconfigured(
            f"API key not configured{where}", provider=provider.id, endpoint=path
        )
    secrets: tuple[str, ...] = ()
    if secret:
        secrets = secrets_to_mask(secret)
        mask = masker(secrets)
        if auth.kind == "query" and auth.name:
            all_params[auth.name] = secret
        elif auth.kind == "header" and auth.name:
            all_headers[auth.name] = auth.prefix + secret
        elif auth.kind == "path" and "{key}" in base:
            base = base.replace("{key}", quote(secret, safe=""))
        else:
            raise UpstreamUnconfigured(
                f"auth kind {auth.kind!r} cannot be applied (name {auth.name!r})",
                provider=provider.id,
                endpoint=mask(path),
            )
    elif "{key}" in base:
        if auth.required:
            raise UpstreamUnconfigured(
                "base_url needs a {key} but no key is configured",
                provider=provider.id,
                endpoint=path,
            )
        base = provider.base_url_with_key(None)  # the keyless public endpoint (e.g. Ankr)
    return UpstreamRequest(
        provider=provider,
        method=method,
        url=base + path,
        endpoint=path,
        params=tuple(all_params.items()),
        body=body,
        headers=tuple(all_headers.items()),
        secrets=secrets,
        idempotent=method in IDEMPOTENT_METHODS if idempotent is None else idempotent,
    )

"""Conditional GET: an upstream's raw answer with its validators, and the headers that reuse them.

A feed changes a few times an hour and is polled every few minutes, so most polls could be
answered "304 Not Modified" with no body at all, if the poller sends back what the last answer
said about itself (its `ETag`, its `Last-Modified`). `UpstreamClient.request_raw` returns a
`RawResponse` — status 200-299 with the body as bytes (a feed parser finds its encoding from
the bytes and their declaration, so nothing is decoded here), or 304 with an empty body — and
`Validators` carries the two headers from one answer to the next request.

Must never treat a 304 as data, or send validators that did not come from this very URL's
previous answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["KEPT_HEADERS", "NOT_MODIFIED", "RawResponse", "Validators", "kept_headers"]

NOT_MODIFIED: Final = 304


@dataclass(frozen=True, slots=True)
class Validators:
    """What an upstream said identifies its answer: `ETag` and `Last-Modified`, if it said."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        """The request headers that ask for the body only if it changed since."""
        headers: dict[str, str] = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A successful answer, undecoded: 2xx with its body, or 304 Not Modified with none.

    `headers` holds only `etag`, `last-modified` and `content-type` (lower-case names), the
    ones a caller needs to parse this answer and to make the next request conditional.
    """

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def not_modified(self) -> bool:
        return self.status == NOT_MODIFIED

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def validators(self, previous: Validators | None = None) -> Validators:
        """The validators for the next request: this answer's, or (on a 304 that repeats
        none) the previous ones, which still describe the body we hold."""
        etag = self.headers.get("etag")
        modified = self.headers.get("last-modified")
        if self.not_modified and previous is not None:
            return Validators(etag or previous.etag, modified or previous.last_modified)
        return Validators(etag, modified)


KEPT_HEADERS: Final = ("etag", "last-modified", "content-type")


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a `RawResponse` keeps, from a response's (case-insensitive) headers."""
    return {name: headers[name] for name in KEPT_HEADERS if name in headers}

"""The GraphiQL page's vendored browser assets, served by the gateway itself (no CDN).

`GET /graphiql/{name}` serves a file from the package's `static/graphiql/` folder
(scripts/vendor-graphiql.sh puts React, ReactDOM and GraphiQL there). Only plain file names with a
known suffix are served, each with an explicit content type (never the platform's mimetypes
table), an ETag, and gzip when the client accepts it. The page asks for `NAME?v=<content hash>`;
such a request is cached for a year as immutable, any other is revalidated with the ETag.

The folder is listed once when the route is built; each file is read and compressed once, on
its first request, in a worker thread.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import trio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["CONTENT_TYPES", "PREFIX", "graphiql_assets_route"]

PREFIX = "/graphiql"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str


def _folder() -> Traversable:
    return resources.files("gateway").joinpath("static/graphiql")


def _content_type(name: str) -> str | None:
    return CONTENT_TYPES.get(name[name.rfind(".") :]) if "." in name else None


def _servable() -> frozenset[str]:
    """The names that may be asked for: plain files in the folder with a known suffix."""
    folder = _folder()
    if not folder.is_dir():
        return frozenset()
    return frozenset(
        entry.name
        for entry in folder.iterdir()
        if entry.is_file() and _NAME.fullmatch(entry.name) and _content_type(entry.name)
    )


def _load(name: str) -> _Asset:
    body = _folder().joinpath(name).read_bytes()
    gzipped = gzip.compress(body, 6, mtime=0) if len(body) > 1024 else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    content_type = _content_type(name)
    assert content_type is not None
    return _Asset(body, gzipped, etag, content_type)


class _GraphiQLAssets:
    def __init__(self) -> None:
        self._names = _servable()
        self._cache: dict[str, _Asset] = {}  # at most one entry per name in `_names`
        self._lock = trio.Lock()

    async def _asset(self, name: str) -> _Asset:
        if name not in self._cache:
            async with self._lock:
                if name not in self._cache:
                    self._cache[name] = await trio.to_thread.run_sync(_load, name)
        return self._cache[name]

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self._names:
            return PlainTextResponse("Not Found", status_code=404)
        asset = await self._asset(name)
        headers = {
            "Cache-Control": IMMUTABLE if "v" in request.query_params else REVALIDATE,
            "ETag": asset.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if asset.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and _accepts_gzip(request.headers.get("accept-encoding", "")):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers, media_type=asset.content_type)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


def graphiql_assets_route() -> Route:
    """The route serving `/graphiql/{name}` (GET and HEAD)."""
    return Route(PREFIX + "/{name}", _GraphiQLAssets().serve, methods=["GET"])

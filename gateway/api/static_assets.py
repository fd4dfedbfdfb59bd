"""Browser assets shipped inside the package and served by the gateway itself (no CDN).

One `StaticFolder` per folder of `gateway/static/`: GraphiQL's vendored React and GraphiQL
(`/graphiql/{name}`, put there by scripts/vendor-graphiql.sh) and the dashboard's modules, styles
and vendored chart library (`/dashboard/{name}`). Only plain file names with a known suffix are
served, each with an explicit content type (never the platform's mimetypes table), an ETag, and
gzip when the client accepts it. A page asks for `NAME?v=<content hash>`; such a request is cached
for a year as immutable, any other (a module's own relative `import`) is revalidated with the ETag.
`versioned()` writes those URLs into a page from `{{asset:NAME}}` placeholders, so a page and its
assets can never disagree about a hash.

The folder is listed once when the route is built; each file is read and compressed once, on
its first request, in a worker thread.

Must never: serve a name outside the listed folder (no path traversal, no dot files, no
unknown suffix), or read or compress a file on the event loop while serving.
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

__all__ = ["CONTENT_TYPES", "StaticFolder"]

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PLACEHOLDER = re.compile(r"\{\{asset:([A-Za-z0-9][A-Za-z0-9._-]*)\}\}")


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str


def _content_type(name: str) -> str | None:
    return CONTENT_TYPES.get(name[name.rfind(".") :]) if "." in name else None


def _load(folder: Traversable, name: str) -> _Asset:
    body = folder.joinpath(name).read_bytes()
    gzipped = gzip.compress(body, 6, mtime=0) if len(body) > 1024 else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    content_type = _content_type(name)
    assert content_type is not None
    return _Asset(body, gzipped, etag, content_type)


class StaticFolder:
    """The files of `gateway/static/<folder>`, served under `prefix` (e.g. "/graphiql")."""

    def __init__(self, folder: str, prefix: str) -> None:
        self.prefix = prefix
        self._folder = resources.files("gateway").joinpath("static", folder)
        self._names = self._servable()
        self._cache: dict[str, _Asset] = {}  # at most one entry per name in `_names`
        self._lock = trio.Lock()

    def _servable(self) -> frozenset[str]:
        """The names that may be asked for: plain files in the folder with a known suffix."""
        if not self._folder.is_dir():
            return frozenset()
        return frozenset(
            entry.name
            for entry in self._folder.iterdir()
            if entry.is_file() and _NAME.fullmatch(entry.name) and _content_type(entry.name)
        )

    def url(self, name: str) -> str:
        """`prefix/name?v=<the file's content hash>` (read now: call it once, at startup)."""
        if name not in self._names:
            raise LookupError(f"{self.prefix}/{name}: no such servable file")
        digest = hashlib.sha256(self._folder.joinpath(name).read_bytes()).hexdigest()[:12]
        return f"{self.prefix}/{name}?v={digest}"

    def versioned(self, html: str) -> str:
        """`html` with every `{{asset:NAME}}` replaced by NAME's versioned URL."""
        return _PLACEHOLDER.sub(lambda match: self.url(match.group(1)), html)

    async def _asset(self, name: str) -> _Asset:
        if name not in self._cache:
            async with self._lock:
                if name not in self._cache:
                    self._cache[name] = await trio.to_thread.run_sync(_load, self._folder, name)
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

    def route(self) -> Route:
        """The route serving `prefix/{name}` (GET and HEAD)."""
        return Route(self.prefix + "/{name}", self.serve, methods=["GET"])


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False

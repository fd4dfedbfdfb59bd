"""The live dashboard at `/`: one HTML page and its assets, all from the package.

The page (`gateway/static/dashboard/index.html`) and its plain JavaScript modules talk to the
gateway only through GraphQL, as any client would: queries over `POST /graphql` for the first
paint, `graphql-transport-ws` subscriptions on `/graphql` for live updates. This module only
serves them: the page with its asset URLs versioned (`StaticFolder.versioned`) under the same
Content-Security-Policy as GraphiQL (`page_csp`, with no inline script at all), and the assets
under `/dashboard/{name}`.

Must never: put data into the page on the server side (it would bypass auth and query limits),
inline a script, or reference another host.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.api.http_policy import page_csp
from gateway.api.static_assets import StaticFolder

__all__ = ["dashboard_routes"]


class _Dashboard:
    def __init__(self) -> None:
        self.assets = StaticFolder("dashboard", "/dashboard")
        page = resources.files("gateway").joinpath("static", "dashboard", "index.html")
        self._html = self.assets.versioned(page.read_text("utf-8"))

    async def page(self, request: Request) -> Response:
        headers = {
            "Content-Security-Policy": page_csp((), request.headers.get("host")),
            "Cache-Control": "no-cache",
        }
        return HTMLResponse(self._html, headers=headers)


def dashboard_routes() -> list[Route]:
    """`GET /` (the page) and `GET /dashboard/{name}` (its modules, styles, chart library)."""
    dashboard = _Dashboard()
    return [Route("/", dashboard.page, methods=["GET"]), dashboard.assets.route()]

"""The ASGI application: GraphQL over HTTP, GraphiQL, WebSocket, health and metrics.

Routes:
    GET/POST /graphql   GraphQL over HTTP (application/json and application/graphql-response+json)
    GET      /graphql   GraphiQL, when a browser asks for HTML
    WS       /graphql   graphql-transport-ws and legacy graphql-ws (ws.py)
    GET      /healthz   the process is alive
    GET      /readyz    the database answers and the supervisor has started everything
    GET      /metrics   Prometheus text

WebSocket traffic is dispatched to ws.py before Starlette sees it: the per-frame path stays
free of framework layers, and Starlette never touches the socket.

Must never: execute a mutation from a GET, or let a failing request take the process down.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import trio
from graphql import ExecutionResult, OperationType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.context import RequestContext, Services
from gateway.graphql_trio import (
    GraphQLEngine,
    PreparedOperation,
    bad_request,
    dumps,
    loads,
    result_to_dict,
)
from gateway.metrics import HttpStats, render_metrics
from gateway.query_limits import QueryLimits
from gateway.static_assets import graphiql_assets_route
from gateway.ws import WebSocketOptions, serve_websocket

__all__ = ["GatewayApp"]

JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
MAX_BODY_BYTES = 1024 * 1024


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _graphiql_html() -> str:
    return resources.files("gateway").joinpath("static/graphiql.html").read_text("utf-8")


def _response_type(accept: str) -> str | None:
    """The media type to answer with, or None when the client accepts neither JSON type."""
    if not accept.strip():
        return JSON
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if GRAPHQL_RESPONSE_JSON in kinds:
        return GRAPHQL_RESPONSE_JSON
    if JSON in kinds or "application/*" in kinds or "*/*" in kinds:
        return JSON
    return None


# For a response sent before the request body was read: the server will not read the rest, so
# the connection cannot carry another request, and h11 closes it after the response. Saying so
# stops a keep-alive client from sending its next request into a connection that is going away
# (found by tests/test_fuzz.py: the request after a 413 failed with "Server disconnected").
_CLOSE = {"Connection": "close"}


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "")
    return "transfer-encoding" in request.headers or (length.isdecimal() and int(length) > 0)


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "query" not in request.query_params


class GatewayApp:
    """The whole ASGI app; `shutdown` is set by the supervisor to close WebSockets (1001)."""

    def __init__(
        self,
        services: Services,
        engine: GraphQLEngine,
        *,
        ws_options: WebSocketOptions,
        upstream_counters: Callable[[], dict[tuple[str, str], int]] = dict,
        supervisor_running: Callable[[], bool] = lambda: True,
    ) -> None:
        self.services = services
        self.engine = engine
        # The query limits are shared by HTTP and both WebSocket protocols through the engine;
        # applied here, so whoever builds the app gets them enforced.
        engine.set_limits(QueryLimits.from_settings(services.settings))
        self.ws_options = ws_options
        self.shutdown = trio.Event()
        self.http_stats = HttpStats()
        self._upstream_counters = upstream_counters
        self._supervisor_running = supervisor_running
        self._graphiql = _graphiql_html()
        self._starlette = Starlette(
            routes=[
                Route("/graphql", self._graphql, methods=["GET", "POST"]),
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                graphiql_assets_route(),  # GET /graphiql/{name}: GraphiQL's vendored JS/CSS
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if scope["path"].rstrip("/") == "/graphql":
                assert self.services.hub is not None
                await serve_websocket(
                    scope,
                    receive,
                    send,
                    engine=self.engine,
                    hub=self.services.hub,
                    context=RequestContext(self.services),
                    options=self.ws_options,
                    stats=self.services.ws_stats,
                    shutdown=self.shutdown,
                )
            else:
                await send({"type": "websocket.close", "code": 4404})
            return
        if scope["type"] == "http":
            await self._starlette(scope, receive, self._counting_send(scope, send))
            return
        await self._starlette(scope, receive, send)

    def _counting_send(self, scope: Scope, send: Send) -> Send:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.http_stats.requests[(scope["method"], int(message["status"]))] += 1
            await send(message)

        return counted

    # -- health -------------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive", "version": self.services.version})

    async def _readyz(self, request: Request) -> Response:
        problems = []
        if not (self.services.ready and self._supervisor_running()):
            problems.append("supervisor not running")
        try:
            with trio.fail_after(2):
                await self.services.storage.ping()
        except Exception as exc:
            problems.append(f"database: {exc}")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def _metrics(self, request: Request) -> Response:
        text = render_metrics(self.services, self.http_stats, self._upstream_counters())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # -- GraphQL over HTTP --------------------------------------------------------------------

    async def _graphql(self, request: Request) -> Response:
        if request.method == "GET" and _wants_html(request):
            return HTMLResponse(self._graphiql)
        media_type = _response_type(request.headers.get("accept", ""))
        if media_type is None:
            return PlainTextResponse(
                f"Accept must allow {JSON} or {GRAPHQL_RESPONSE_JSON}",
                status_code=406,
                headers=_CLOSE if _has_body(request) else None,
            )
        try:
            params = await self._read_params(request)
            result, context, request_error = await self._run(request, params)
        except _HttpError as error:
            body = {
                "errors": [{"message": error.message, "extensions": {"code": "BAD_USER_INPUT"}}]
            }
            return Response(dumps(body), error.status, error.headers, media_type)
        if result is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        payload = result_to_dict(result)
        if context is not None and context.warnings:
            payload["extensions"] = {"warnings": context.warnings}
        status = 200
        if request_error and media_type == GRAPHQL_RESPONSE_JSON:
            status = 400
        return Response(dumps(payload), status, media_type=media_type)

    async def _read_params(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            query = request.query_params
            params: dict[str, Any] = {
                "query": query.get("query"),
                "operationName": query.get("operationName") or None,
                "variables": None,
            }
            if query.get("variables"):
                params["variables"] = _parse_json_param(query["variables"], "variables")
            return params
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        declared = request.headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > MAX_BODY_BYTES:
            raise _HttpError(413, f"request body over {MAX_BODY_BYTES} bytes", _CLOSE)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise _HttpError(413, f"request body over {MAX_BODY_BYTES} bytes", _CLOSE)
        if content_type == "application/graphql":
            return {
                "query": body.decode("utf-8", "replace"),
                "variables": None,
                "operationName": None,
            }
        if content_type not in {JSON, ""}:
            raise _HttpError(415, f"Content-Type must be {JSON}")
        try:
            params = loads(body)
        except ValueError:
            raise _HttpError(400, "the request body is not valid JSON") from None
        if not isinstance(params, dict):
            raise _HttpError(400, "the request body must be a JSON object")
        return params

    async def _run(
        self, request: Request, params: dict[str, Any]
    ) -> tuple[ExecutionResult | None, RequestContext | None, bool]:
        """Execute; returns (result, context, whether it was a request error)."""
        variables = params.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return bad_request("'variables' must be an object"), None, True
        prepared = self.engine.prepare(params.get("query"), params.get("operationName"), variables)
        if isinstance(prepared, ExecutionResult):
            return prepared, None, True
        self._check_method(request, prepared)
        context = RequestContext(self.services)
        result = await self._execute_until_disconnect(request, prepared, variables, context)
        return result, context, False

    def _check_method(self, request: Request, prepared: PreparedOperation) -> None:
        if prepared.kind is OperationType.SUBSCRIPTION:
            raise _HttpError(400, "subscriptions are served over WebSocket at this same URL")
        if prepared.kind is OperationType.MUTATION and request.method == "GET":
            raise _HttpError(405, "mutations must be sent with POST", {"Allow": "POST"})

    async def _execute_until_disconnect(
        self,
        request: Request,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: RequestContext,
    ) -> ExecutionResult | None:
        """Execute, cancelling every resolver if the client disconnects first."""
        result: ExecutionResult | None = None
        async with trio.open_nursery() as nursery:

            async def watch_disconnect() -> None:
                while True:
                    message = await request.receive()
                    if message["type"] == "http.disconnect":
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch_disconnect)
            result = await self.engine.execute(prepared, variables=variables, context=context)
            nursery.cancel_scope.cancel()
        return result


def _parse_json_param(raw: str, name: str) -> Any:
    try:
        return loads(raw)
    except ValueError:
        raise _HttpError(400, f"'{name}' is not valid JSON") from None

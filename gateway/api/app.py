"""The ASGI application: GraphQL over HTTP, GraphiQL, WebSocket, health and metrics.

Routes:
    GET/POST /graphql   GraphQL over HTTP (application/json and application/graphql-response+json)
    GET      /graphql   GraphiQL, when a browser asks for HTML
    WS       /graphql   graphql-transport-ws and legacy graphql-ws (ws/)
    GET      /healthz   the process is alive
    GET      /readyz    the database answers, its writes commit, and the supervisor runs
                        (it also says whether the sentiment model is loading, ready or not,
                        and with a broker, "degraded" with the reason while Redis is down)
    GET      /metrics   Prometheus text
    GET      /          the live dashboard (gateway.api.dashboard), a GraphQL client itself

WebSocket traffic is dispatched to ws/ before Starlette sees it: the per-frame path stays
free of framework layers, and Starlette never touches the socket.

Around every HTTP request: gateway.api.http_policy (allowed hosts, security headers, CORS, Origin
check); a WebSocket handshake is held to the same hosts and origins. A POST body must arrive whole
within `http_body_timeout` (else 408, the connection closed); a body cut short is one
`http.upload_aborted` log line, never a traceback. Once the shutdown starts, a body still on its
way is not waited for: 503 SHUTTING_DOWN with `Connection: close`, at once, so uploads that could
never finish inside the grace period do not hold the shutdown for all of it. On /graphql, before
anything is parsed: the caller is authenticated (gateway.api.auth: 401 UNAUTHENTICATED for a bad
key, or for none while anonymous access is off) and the request is counted against its tier (429
RATE_LIMITED with Retry-After when over). A mutation the caller's role may not run is refused whole
(FORBIDDEN) before any resolver runs. The ASGI lifespan runs `AccessControl.run` (revocation
polling, usage saving) for as long as the server serves.

Must never: execute a mutation from a GET, run an operation for a caller it did not
authenticate, or let a failing request take the process down.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib import resources
from typing import Any

import structlog
import trio
from graphql import ExecutionResult, OperationType
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.api.auth import (
    AccessControl,
    Principal,
    RateLimited,
    Unauthenticated,
    credential_from_headers,
    forbidden_result,
    use_principal,
)
from gateway.api.connections import ConnectionCaps
from gateway.api.context import RequestContext, Services
from gateway.api.dashboard import dashboard_routes
from gateway.api.graphql_trio import (
    GraphQLEngine,
    PreparedOperation,
    bad_request,
    dumps,
    loads,
    result_to_dict,
)
from gateway.api.http_policy import HttpPolicy, inline_script_hashes, page_csp
from gateway.api.metrics import HttpStats, render_metrics
from gateway.api.operator_metrics import MetricsGuard, operator_metrics
from gateway.api.query_limits import QueryLimits
from gateway.api.static_assets import StaticFolder
from gateway.api.ws import (
    Admission,
    ShutdownSignal,
    WebSocketOptions,
    fresh_allowance,
    http_connection_cap,
    serve_websocket,
    total_connection_cap,
)
from gateway.errors import GatewayError, StorageError

__all__ = ["GatewayApp"]

log = structlog.get_logger(__name__)

JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        code: str = "BAD_USER_INPUT",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.code = code


class _ClientGone(Exception):
    """The client disconnected before its request body was complete (already logged)."""


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
# (found by tests/api/test_fuzz.py: the request after a 413 failed with "Server disconnected").
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
        self.metrics_guard = MetricsGuard(services.settings.metrics_token)  # /metrics token
        # The query limits are shared by HTTP and both WebSocket protocols through the engine;
        # applied here, so whoever builds the app gets them enforced.
        engine.set_limits(QueryLimits.from_settings(services.settings))
        self.ws_options = ws_options
        # A trio.Event that also closes every WebSocket (1001) when set, with no task per socket.
        self.shutdown = ShutdownSignal()
        self.http_stats = HttpStats()
        self._upstream_counters = upstream_counters
        self._supervisor_running = supervisor_running
        if services.access is None:
            services.access = AccessControl(services.settings, services.storage)
        self.access: AccessControl = services.access
        self.policy = HttpPolicy(services.settings)
        # WebSocket caps, total (descriptors less a reserve, so HTTP still answers) and per
        # client by tier, and the handshake's request: gateway.api.ws.admission.
        cap = total_connection_cap(services.settings)
        self.ws_admission = Admission(cap, services.ws_stats, self.access)
        # Every client connection, per address and in total, at accept (the server offers each
        # to it: gateway.api.server): gateway.api.connections.
        self.connections = ConnectionCaps(
            total=http_connection_cap(services.settings),
            per_client=services.settings.http_max_connections_per_client,
            fresh=fresh_allowance(services.settings),
            trusted_proxy=self.policy.is_trusted_proxy,
            stats=self.http_stats,
        )
        self._max_body = services.settings.max_body_bytes
        self._body_timeout = services.settings.http_body_timeout
        # The body reads under way: cancelled when the shutdown starts (_end_body_reads).
        self._body_reads: set[trio.CancelScope] = set()
        self._graphiql = _graphiql_html()
        self._graphiql_scripts = inline_script_hashes(self._graphiql)
        self._starlette = Starlette(
            routes=[
                Route("/graphql", self._graphql, methods=["GET", "POST"]),
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                # GET /graphiql/{name}: GraphiQL's vendored JS/CSS
                StaticFolder("graphiql", "/graphiql").route(),
                *dashboard_routes(),  # GET /: the live dashboard; GET /dashboard/{name}
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if not self.policy.host_allowed(scope):
                await self.policy.refuse_websocket(scope, send)  # 400: DNS rebinding
            elif scope["path"].rstrip("/") != "/graphql":
                await send({"type": "websocket.close", "code": 4404})
            elif not self.policy.websocket_origin_allowed(scope):
                # Before accept, a close is an HTTP 403: a page of another origin may not use a
                # visitor's browser to talk to us.
                await send({"type": "websocket.close", "code": 4403})
            else:
                services = self.services
                assert services.hub is not None
                await serve_websocket(
                    scope,
                    receive,
                    send,
                    engine=self.engine,
                    hub=services.hub,
                    context_for=lambda principal: RequestContext(services, principal=principal),
                    options=self.ws_options,
                    stats=services.ws_stats,
                    shutdown=self.shutdown,
                    access=self.access,
                    client=self.policy.client_address(scope),
                    handshake_credential=credential_from_headers(scope.get("headers") or ()),
                    admission=self.ws_admission,
                    on_admitted=partial(self.connections.upgraded, scope.get("client")),
                )
            return
        if scope["type"] == "http":
            await self.policy.serve(scope, receive, self._counting_send(scope, send), self._http)
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._starlette(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET and POST /graphql straight to `_graphql`, the rest through Starlette's router:
        its middleware and routing were a tenth of a small query's CPU, and `_graphql` raises
        nothing they would handle (an unexpected error is still a 500, from hypercorn)."""
        if scope["path"] == "/graphql" and scope["method"] in ("GET", "POST"):
            response = await self._graphql(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await self._starlette(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """ASGI lifespan: access control's background work runs while the server serves."""
        async with trio.open_nursery() as nursery:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await nursery.start(self.access.run)
                    except GatewayError as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    nursery.start_soon(self._end_body_reads)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    nursery.cancel_scope.cancel()  # access.run saves usage on its way out
                    break
        await send({"type": "lifespan.shutdown.complete"})

    async def _end_body_reads(self) -> None:
        """When the shutdown starts, end every request still waiting for its body: its client
        may trickle it for `http_body_timeout` (15 s), far past the shutdown's grace, and the
        grace would be spent on uploads that cannot finish in it. Each is answered 503 with
        `Connection: close` (`_read_params`), and so is a body that starts after this."""
        await self.shutdown.wait()
        if self._body_reads:  # one line for them all, not one per upload
            log.info("http.uploads_ended", reason="shutting down", requests=len(self._body_reads))
        for scope in list(self._body_reads):
            scope.cancel()

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
        failing_since = self.services.storage.writes_failing_since
        if failing_since is not None:  # disk full, read-only: acknowledged writes would be lost
            problems.append(f"database writes failing since {failing_since.isoformat()}")
        # The sentiment model is reported, never a reason for 503: prices and news are served
        # without it (articles then carry sentiment null and say MODEL_UNAVAILABLE).
        scorer, notes = self.services.sentiment, dict[str, dict[str, Any]]()
        if scorer is not None and scorer.enabled:
            notes["sentiment"] = {"state": scorer.state, "reason": scorer.unavailable_reason}
        # Several replicas: Redis down is *degraded*, not unready: queries are answered from
        # the database, so the load balancer keeps this replica; live streams say why they stop.
        replicas, degraded = self.services.replication, []
        if replicas is not None:
            broker = replicas.client.snapshot()
            notes["broker"] = {
                **broker,
                "since": broker["since"].isoformat(),
                "leader": replicas.lease.holds(),
            }
            if not broker["up"]:
                degraded.append(f"broker {broker['url']} unavailable: {broker['reason']}")
        if problems:
            body = {"status": "not ready", "problems": problems, **notes}
            return JSONResponse(body, status_code=503)
        if degraded:
            return JSONResponse({"status": "degraded", "degraded": degraded, **notes})
        return JSONResponse({"status": "ready", **notes})

    async def _metrics(self, request: Request) -> Response:
        if not self.metrics_guard.allows(request.headers.get("authorization")):
            return PlainTextResponse(
                "/metrics needs the metrics token: Authorization: Bearer <GATEWAY_METRICS_TOKEN>\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        text = render_metrics(self.services, self.http_stats, self._upstream_counters())
        extra = operator_metrics(self.services, self.engine.operations, self.metrics_guard)
        text += "\n".join(extra) + "\n"
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # -- GraphQL over HTTP --------------------------------------------------------------------

    async def _graphql(self, request: Request) -> Response:
        if request.method == "GET" and _wants_html(request):
            csp = page_csp(self._graphiql_scripts, request.headers.get("host"))
            return HTMLResponse(self._graphiql, headers={"Content-Security-Policy": csp})
        media_type = _response_type(request.headers.get("accept", ""))
        if media_type is None:
            return PlainTextResponse(
                f"Accept must allow {JSON} or {GRAPHQL_RESPONSE_JSON}",
                status_code=406,
                headers=_CLOSE if _has_body(request) else None,
            )
        try:
            principal = await self._admit(request)
        except Unauthenticated as refused:
            headers = {"WWW-Authenticate": 'Bearer realm="gateway"'}
            return _error_response(401, refused, media_type, request, headers)
        except RateLimited as limited:
            headers = {"Retry-After": str(limited.retry_after_seconds or 1)}
            return _error_response(429, limited, media_type, request, headers)
        except StorageError as exc:  # the key store is unreadable: say so, do not guess
            log.warning("http_authentication_failed", error=str(exc))
            unavailable = GatewayError("API keys cannot be checked right now; try again")
            return _error_response(503, unavailable, media_type, request, {"Retry-After": "5"})
        use_principal(principal)  # for resolvers' tier checks, in this task only
        try:
            params = await self._read_params(request)
            result, context, request_error = await self._run(request, params, principal)
        except _ClientGone:
            return Response(status_code=499)  # nobody reads this; hypercorn drops it
        except _HttpError as error:
            body = {"errors": [{"message": error.message, "extensions": {"code": error.code}}]}
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
        limit = self._max_body
        if declared.isdecimal() and int(declared) > limit:
            raise _HttpError(413, f"request body over {limit} bytes", _CLOSE)
        if self.shutdown.is_set():
            raise _shutting_down()
        body = bytearray()
        with trio.move_on_after(self._body_timeout) as reading:
            self._body_reads.add(reading)
            try:
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise _HttpError(413, f"request body over {limit} bytes", _CLOSE)
            except ClientDisconnect:
                self._upload_aborted(request, len(body), "client disconnected")
                raise _ClientGone from None
            finally:
                self._body_reads.discard(reading)
        if reading.cancelled_caught and self.shutdown.is_set():
            raise _shutting_down()  # logged once for all of them (_end_body_reads)
        if reading.cancelled_caught:
            limit_s = f"{self._body_timeout:g} s"
            self._upload_aborted(request, len(body), f"body not complete in {limit_s}")
            raise _HttpError(408, f"the request body took over {limit_s}", _CLOSE)
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

    def _upload_aborted(self, request: Request, received: int, reason: str) -> None:
        """One line for a request body that never arrived whole, instead of the traceback the
        ASGI server would log for starlette's ClientDisconnect."""
        log.warning(
            "http.upload_aborted",
            client=self.policy.client_address(request.scope),
            path=request.url.path,
            bytes_read=received,
            reason=reason,
        )

    async def _admit(self, request: Request) -> Principal:
        """Authenticate the caller and count the request; raises Unauthenticated, RateLimited."""
        credential = credential_from_headers(request.scope.get("headers") or ())
        client = self.policy.client_address(request.scope)
        principal = await self.access.authenticate(credential, client)
        self.access.admit(principal)
        return principal

    async def _run(
        self, request: Request, params: dict[str, Any], principal: Principal
    ) -> tuple[ExecutionResult | None, RequestContext | None, bool]:
        """Execute; returns (result, context, whether it was a request error)."""
        variables = params.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return bad_request("'variables' must be an object"), None, True
        prepared = self.engine.prepare(params.get("query"), params.get("operationName"), variables)
        if isinstance(prepared, ExecutionResult):
            return prepared, None, True
        self._check_method(request, prepared)
        forbidden = forbidden_result(principal, prepared)
        if forbidden is not None:
            return forbidden, None, False
        context = RequestContext(self.services, principal=principal)
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
        """Execute, cancelling every resolver if the client disconnects first. Synchronous
        resolvers run at once: when nothing is left to await (`{ __typename }`), no task is
        started to watch for the disconnect (one task per request fewer)."""
        started = self.engine.begin(prepared, variables=variables, context=context)
        if isinstance(started, ExecutionResult):
            return started
        result: ExecutionResult | None = None
        async with trio.open_nursery() as nursery:

            async def watch_disconnect() -> None:
                while True:
                    message = await request.receive()
                    if message["type"] == "http.disconnect":
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch_disconnect)
            result = await started
            nursery.cancel_scope.cancel()
        return result


def _shutting_down() -> _HttpError:
    """The answer to a request whose body was not read because the shutdown started."""
    return _HttpError(
        503,
        "the gateway is shutting down; send the request again",
        {**_CLOSE, "Retry-After": "5"},
        code="SHUTTING_DOWN",
    )


def _error_response(
    status: int,
    error: GatewayError,
    media_type: str,
    request: Request,
    headers: dict[str, str],
) -> Response:
    """A refusal before anything was parsed, as a GraphQL response with one error."""
    extensions = {k: v for k, v in error.extensions().items() if v is not None}
    body = {"errors": [{"message": str(error), "extensions": {**extensions, "code": error.code}}]}
    if _has_body(request):
        headers = {**headers, **_CLOSE}
    return Response(dumps(body), status, headers, media_type)


def _parse_json_param(raw: str, name: str) -> Any:
    try:
        return loads(raw)
    except ValueError:
        raise _HttpError(400, f"'{name}' is not valid JSON") from None

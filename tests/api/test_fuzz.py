"""Property-based robustness: random and mutated requests against one real gateway.

Each test starts one gateway on a loopback port in a background thread (its own `trio.run`),
then lets hypothesis throw a few hundred generated requests at it with synchronous clients
(httpx, websockets.sync), so hypothesis drives plain functions and every call has a timeout.

Properties, whatever is sent:
  - HTTP: never a 5xx; every response with a JSON media type is a well-formed GraphQL
    response (`errors`: a non-empty list of objects with a string `message` and a string
    `extensions.code`; or `data`);
  - WebSocket: every message received is valid protocol JSON for the negotiated protocol, and
    every close code received is one that gateway/api/ws/protocols.py documents (never 1011
    "internal error");
  - the server logs no error (hypercorn's "Error in ASGI Framework", our resolver_failed,
    ws_operation_failed, …): an unexpected exception anywhere fails the test even when the
    client saw a tidy answer;
  - no call hangs (each is bounded by a few seconds) and the server is alive afterwards.

One thing is tolerated: a WebSocket that ends with no close frame at all. Hypercorn closes the
TCP connection as soon as it has sent its close frame; when the client is still sending, the
server's kernel answers with a reset, which can discard the unread close frame on the client's
side. Crashes cannot hide there: they are caught by the error-log property above.

Documents are seeded from real queries and mutated: characters inserted and deleted, spans
duplicated, selections nested deeply, fields aliased hundreds of times, fragments chained and
cycled, introspection mixed in.
"""

from __future__ import annotations

import json
import logging
import os
import string
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed as ConnectionClosedTrio
from trio_websocket import open_websocket_url
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway.config import ProvidersFile, Settings
from gateway.nursery import Gateway, RunningGateway
from tests.conftest import StartGateway

TIMEOUT = 5.0
TICKS = 'subscription { priceTicks(symbols: [\\"BTC\\"]) { symbol usd } }'  # JSON-escaped

# gateway/api/ws/protocols.py's documented close codes (4406 is only ever sent before accept, as an HTTP 403).
WS_CLOSE_CODES = {1000, 1001, 1009, 4400, 4401, 4403, 4408, 4409, 4413, 4429}
TRANSPORT_SERVER_TYPES = {"connection_ack", "ping", "pong", "next", "error", "complete"}
LEGACY_SERVER_TYPES = {"connection_ack", "ka", "data", "error", "complete", "connection_error"}

SEEDS = [
    '{ prices(symbols: ["BTC"]) { usd } }',
    '{ prices(symbols: ["btc", "ETH"]) { symbol usd provider sources observedAt ageSeconds } }',
    "{ status { version } }",
    "{ status { status version uptimeSeconds providers { total online offline } subscribers } }",
    'subscription { priceTicks(symbols: ["BTC"]) { symbol usd provider } }',
    'subscription S($s: [String!]!) { priceTicks(symbols: $s, since: "2026-01-01T00:00:00Z") '
    "{ usd } }",
    '{ ohlcv(symbol: "ETH", interval: H1, limit: 50) { openTime close } }',
    'query Q($n: Int! = 3) { ohlcv(symbol: "BTC", interval: M5, limit: $n) { open } }',
    '{ priceHistory(symbol: "BTC", interval: M5) { openTime open high low close complete } }',
    "{ __typename status { __typename } }",
    "{ __schema { queryType { name } types { name fields { name } } } }",
    '{ __type(name: "Price") { name fields { name type { name ofType { name } } } } }',
    "query A { status { version } } query B { status { status } }",
    "{ ...F } fragment F on Query { status { version } }",
    "mutation { x }",
]

GRAPHQL_CHARS = string.ascii_letters + string.digits + ' {}()[]:$@!.,"\\#=|&\n\t_-'
TOKENS = [
    "{",
    "}",
    "(",
    ")",
    "...",
    "fragment F on Query ",
    "on",
    "__schema",
    "__type",
    "__typename",
    "query",
    "subscription",
    "mutation",
    "$v",
    '"""',
    '"\\u0000"',
    "@include(if: true)",
    "first: 999999999999999999999",
    "limit: -1",
    "\u00e9",
    "\U0001f600",
    "\x00",
]


# ---------------------------------------------------------------------------------------------
# strategies


@st.composite
def aliased(draw: st.DrawFn) -> str:
    count = draw(st.integers(0, 400))
    field = draw(
        st.sampled_from(["status { version }", "__typename", 'prices(symbols: ["BTC"]) { usd }'])
    )
    return "{ " + " ".join(f"a{i}: {field}" for i in range(count)) + " }"


@st.composite
def nested(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 260))
    name = draw(st.sampled_from(["status", "a", "__typename", "providers", "__schema"]))
    return "{" + f"{name} {{" * depth + "version" + "}" * (depth + 1)


@st.composite
def fragment_chain(draw: st.DrawFn) -> str:
    length = draw(st.integers(1, 120))
    cyclic = draw(st.booleans())
    branching = draw(st.integers(1, 3))
    parts = ["{ ...F0 }"]
    for i in range(length):
        spreads = " ".join(
            f"...F{(i + 1 + b) % (length if cyclic else length + 1)}" for b in range(branching)
        )
        parts.append(f"fragment F{i} on Query {{ status {{ version }} {spreads} }}")
    if not cyclic:
        parts.append(f"fragment F{length} on Query {{ __typename }}")
    return "\n".join(parts)


@st.composite
def introspection(draw: st.DrawFn) -> str:
    levels = draw(st.integers(0, 6))
    inner = "name"
    for _ in range(levels):
        inner = f"name fields {{ name type {{ name ofType {{ {inner} }} }} }}"
    return "{ __schema { types { " + inner + " } } }"


@st.composite
def mutated(draw: st.DrawFn) -> str:
    document = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["insert", "token", "delete", "duplicate", "wrap"]))
        at = draw(st.integers(0, len(document)))
        if kind == "insert":
            document = document[:at] + draw(st.text(GRAPHQL_CHARS, max_size=4)) + document[at:]
        elif kind == "token":
            document = document[:at] + draw(st.sampled_from(TOKENS)) + document[at:]
        elif kind == "delete":
            end = draw(st.integers(at, min(len(document), at + 8)))
            document = document[:at] + document[end:]
        elif kind == "duplicate":
            end = draw(st.integers(at, min(len(document), at + 40)))
            document = document[:end] + document[at:end] * draw(st.integers(1, 50)) + document[end:]
        else:
            document = "{ status { " + document + " } }"
    return document


documents = st.one_of(
    st.sampled_from(SEEDS),
    mutated(),
    aliased(),
    nested(),
    fragment_chain(),
    introspection(),
    st.text(max_size=200),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

variables = st.one_of(
    st.none(),
    json_values,
    st.fixed_dictionaries(
        {},
        optional={"s": st.lists(st.sampled_from(["BTC", "ETH", "NOPE", ""])), "n": st.integers()},
    ),
)


@st.composite
def graphql_params(draw: st.DrawFn) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if draw(st.integers(0, 9)):  # mostly present
        params["query"] = draw(documents | json_values)
    if draw(st.booleans()):
        params["variables"] = draw(variables)
    if draw(st.booleans()):
        params["operationName"] = draw(
            st.none() | st.sampled_from(["A", "B", "Q", "S", ""]) | json_values
        )
    if draw(st.booleans()):
        params["extensions"] = draw(json_values)
    return params


# Raw JSON texts that Python's encoder never writes: lone surrogates, NaN, deep nesting.
RAW_BODIES = [
    b'{"query": "{ \\ud800 }"}',
    b'{"query": "{ status { version } }", "variables": {"x": NaN}}',
    b'{"query": "{ status { version } }", "variables": {"x": Infinity}}',
    b'{"query": "{ prices(symbols: [\\"\\udfff\\"]) { usd } }"}',
    b'{"query": "query($s: [String!]!) { prices(symbols: $s) { usd } }", '
    b'"variables": {"s": ["\\ud83d"]}}',
    b'{"query": "{ status { version } }", "operationName": "\\udc00"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"query": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"query": "{ status { version } }", "variables": ' + b'{"a":' * 20_000 + b"1" + b"}" * 20_001,
    b'{"query": "' + b"9" * 5000 + b'"}',
    b'{"query": 1' + b"0" * 5000 + b"}",
    b"\xff\xfe\x00",
    b"",
]

bodies = st.one_of(
    graphql_params().map(lambda p: json.dumps(p).encode()),
    st.sampled_from(RAW_BODIES),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    documents.map(lambda d: d.encode("utf-8", "surrogatepass")),
)

content_types = st.one_of(
    st.just("application/json"),  # the one that reaches the GraphQL layer: drawn most often
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/graphql",
            "application/graphql-response+json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
    st.text(string.printable.strip() + " ", max_size=30).map(str.strip),
)
accepts = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/graphql-response+json",
            "application/graphql-response+json, application/json;q=0.9",
            "*/*",
            "text/html",
            "text/html,application/xhtml+xml",
            "application/*",
            "image/png",
            "",
        ]
    ),
    st.text(string.ascii_letters + "/*+;=,. ", max_size=40).map(str.strip),
)

# GATEWAY_FUZZ_SCALE=20 multiplies every example count, for a longer hunt than CI's.
SCALE = float(os.environ.get("GATEWAY_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """Bounded runs (the whole file stays well under a minute), no example database on disk."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------------------------
# one gateway in a background thread


class BackgroundGateway:
    """A gateway served by its own `trio.run` in a daemon thread, for synchronous clients.

    The anonymous request-rate limits are lifted unless a test sets them: hundreds of requests
    from one address would otherwise be mostly 429s, and never reach the GraphQL layer.
    """

    def __init__(self, **overrides: Any) -> None:
        overrides.setdefault("tier_free_per_minute", 0)
        overrides.setdefault("tier_free_per_day", 0)
        self._overrides = overrides
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._gateway: Gateway | None = None
        self.running: RunningGateway | None = None
        self.crash: BaseException | None = None
        self.errors: list[str] = []

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.urls[0]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    def create_key(self, role: str, tier: str) -> str:
        """A new API key, made in the gateway's own thread."""
        assert self._token is not None and self.running is not None
        access = self.running.services.access
        assert access is not None
        _, key = trio.from_thread.run(
            access.keys.create, "fuzz", role, tier, trio_token=self._token
        )
        return key

    def alive(self) -> bool:
        """Running, not crashed, and nothing logged at error level so far."""
        assert self.crash is None, f"the gateway crashed: {self.crash!r}"
        assert not self.errors, f"the gateway logged errors: {self.errors[:3]}"
        return self._thread is not None and self._thread.is_alive()

    async def _main(self, directory: Path) -> None:
        settings = Settings(port=0, db_path=directory / "fuzz.db", **self._overrides).validated()
        self._gateway = Gateway(settings, ProvidersFile(()))
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.running = await nursery.start(self._gateway.run)
            self._ready.set()

    def _thread_main(self, directory: Path) -> None:
        try:
            trio.run(self._main, directory)
        except BaseException as exc:  # reported by the test, which checks `alive()`
            self.crash = exc
            traceback.print_exc()
        finally:
            self._ready.set()

    @contextmanager
    def serving(self) -> Iterator[BackgroundGateway]:
        with tempfile.TemporaryDirectory() as directory, self._watching_errors():
            self._thread = threading.Thread(
                target=self._thread_main, args=(Path(directory),), daemon=True
            )
            self._thread.start()
            assert self._ready.wait(15), "the gateway did not start"
            assert self.running is not None, f"the gateway failed to start: {self.crash!r}"
            try:
                yield self
            finally:
                assert self._token is not None and self._gateway is not None
                if self._thread.is_alive():
                    trio.from_thread.run_sync(self._gateway.shutdown.set, trio_token=self._token)
                self._thread.join(15)
                assert not self._thread.is_alive(), "the gateway did not stop"
        assert self.crash is None, f"the gateway crashed: {self.crash!r}"

    @contextmanager
    def _watching_errors(self) -> Iterator[None]:
        """Collect every error-level record: hypercorn's logging and the gateway's structlog."""
        errors = self.errors

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.name.startswith("hypercorn"):  # not the clients' own complaints
                    errors.append(f"{record.name}: {record.getMessage()} {record.exc_info!r}")

        def collect(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            if method in {"error", "exception", "critical"}:
                errors.append(f"{method}: {event}")
            raise structlog.DropEvent

        # On the root logger: hypercorn replaces its own logger's handlers when it starts, and
        # its records propagate.
        handler = Collect(logging.ERROR)
        hypercorn_log = logging.getLogger()
        hypercorn_log.addHandler(handler)
        previous = structlog.get_config()
        structlog.configure(processors=[collect])
        try:
            yield
        finally:
            structlog.configure(**previous)
            hypercorn_log.removeHandler(handler)


@contextmanager
def background_gateway(**overrides: Any) -> Iterator[BackgroundGateway]:
    with BackgroundGateway(**overrides).serving() as gateway:
        yield gateway


# ---------------------------------------------------------------------------------------------
# what a well-formed answer looks like


def assert_graphql_error(error: Any) -> None:
    assert isinstance(error, dict), error
    assert isinstance(error.get("message"), str), error
    extensions = error.get("extensions")
    assert isinstance(extensions, dict) and isinstance(extensions.get("code"), str), error


def assert_graphql_response(body: Any) -> None:
    assert isinstance(body, dict), body
    assert set(body) <= {"data", "errors", "extensions"}, body
    assert "data" in body or "errors" in body, body
    if "errors" in body:
        assert isinstance(body["errors"], list) and body["errors"], body
        for error in body["errors"]:
            assert_graphql_error(error)
    if "data" in body:
        assert body["data"] is None or isinstance(body["data"], dict), body


def assert_http_response(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    if media_type in {"application/json", "application/graphql-response+json"}:
        assert_graphql_response(json.loads(response.content))


def assert_ws_message(text: str | bytes, legacy: bool) -> None:
    assert isinstance(text, str), "the server sends text frames only"
    message = json.loads(text)
    assert isinstance(message, dict), message
    kind = message.get("type")
    assert kind in (LEGACY_SERVER_TYPES if legacy else TRANSPORT_SERVER_TYPES), message
    if kind in {"next", "data"}:
        assert isinstance(message.get("id"), str), message
        assert_graphql_response(message["payload"])
    elif kind == "error":
        if legacy:
            assert "id" in message, message  # graphql-ws echoes what it got, even a bad id
            assert_graphql_error(message["payload"])
        else:
            assert isinstance(message.get("id"), str), message
            assert isinstance(message["payload"], list) and message["payload"], message
            for error in message["payload"]:
                assert_graphql_error(error)
    elif kind == "complete":
        assert isinstance(message.get("id"), str), message
    elif kind in {"ping", "pong"} and "payload" in message:
        assert isinstance(message["payload"], dict), message


def ws_exchange(gateway: BackgroundGateway, protocol: str, frames: list[str | bytes]) -> int | None:
    """Send `frames`, read every answer; the server's close code, or None if it stayed open."""
    legacy = protocol == "graphql-ws"
    with connect(
        gateway.ws_url,
        subprotocols=[Subprotocol(protocol)],
        open_timeout=TIMEOUT,
        close_timeout=2,
        max_size=None,
        compression=None,
        proxy=None,
        ping_interval=None,
    ) as ws:
        assert ws.subprotocol == protocol
        try:
            for frame in frames:
                ws.send(frame)
            read_until_quiet(ws, legacy)
        except ConnectionClosed as closed:
            return close_code_of(closed)
        with suppress(ConnectionClosed):
            ws.close()
        return None


def read_until_quiet(ws: ClientConnection, legacy: bool, quiet: float = 0.05) -> None:
    deadline = 40  # reads: a bound on the frames one example may produce, so nothing hangs
    for _ in range(deadline):
        try:
            text = ws.recv(timeout=quiet)
        except TimeoutError:
            return
        assert_ws_message(text, legacy)
    # still talking (a subscription's keep-alives?): it must not be streaming garbage
    text = ws.recv(timeout=TIMEOUT)
    assert_ws_message(text, legacy)


def close_code_of(closed: ConnectionClosed) -> int | None:
    """The server's close code, checked; None when no close frame arrived (see the docstring)."""
    if closed.rcvd is None:
        return None
    code = closed.rcvd.code
    assert code in WS_CLOSE_CODES, (code, closed.rcvd.reason)
    return code


# ---------------------------------------------------------------------------------------------
# HTTP


def test_http_post_never_fails_the_server() -> None:
    with (
        background_gateway() as gateway,
        httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client,
    ):

        @fuzz(500)
        @given(body=bodies, content_type=content_types, accept=accepts)
        def post(body: bytes, content_type: str, accept: str | None) -> None:
            headers = {"content-type": content_type}
            if accept is not None:
                headers["accept"] = accept
            assert_http_response(client.post("/graphql", content=body, headers=headers))

        post()
        assert gateway.alive()
        assert client.get("/healthz").status_code == 200


def test_http_get_never_fails_the_server() -> None:
    with (
        background_gateway() as gateway,
        httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client,
    ):
        text = st.text(max_size=60).filter(lambda s: "\x00" not in s)

        @fuzz(400)
        @given(
            query=st.none() | documents.filter(lambda d: "\x00" not in d) | text,
            variables=st.none()
            | json_values.map(json.dumps)
            | text
            | st.sampled_from(["[" * 5000, "NaN", '{"a": NaN}']),
            operation=st.none() | text,
            extra=st.dictionaries(
                st.text(string.ascii_letters, min_size=1, max_size=5), text, max_size=3
            ),
            accept=accepts,
        )
        def get(
            query: str | None,
            variables: str | None,
            operation: str | None,
            extra: dict[str, str],
            accept: str | None,
        ) -> None:
            params = dict(extra)
            for name, value in (
                ("query", query),
                ("variables", variables),
                ("operationName", operation),
            ):
                if value is not None:
                    params[name] = value
            headers = {"accept": accept} if accept is not None else {}
            assert_http_response(client.get("/graphql", params=params, headers=headers))

        get()
        assert gateway.alive()
        assert client.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------------------------
# WebSocket

message_types = st.sampled_from(
    [
        "connection_init",
        "ping",
        "pong",
        "subscribe",
        "complete",
        "start",
        "stop",
        "connection_terminate",
        "ka",
        "next",
        "x",
        "",
    ]
)
op_ids = st.one_of(st.sampled_from(["1", "2", "op", ""]), json_values, st.text(max_size=10))


@st.composite
def protocol_messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"type": draw(message_types | json_values)}
    if draw(st.booleans()):
        message["id"] = draw(op_ids)
    if draw(st.booleans()):
        message["payload"] = draw(st.one_of(graphql_params(), json_values))
    return message


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message)


frames = st.one_of(
    protocol_messages().map(encode),
    json_values.map(json.dumps),
    st.text(max_size=100),
    st.binary(max_size=100),
    st.sampled_from(
        [
            "[" * 100_000,
            '{"type": "ping", "payload": {"x": NaN}}',
            '{"type": "ping", "payload": {"x": "\\ud800"}}',
            '{"type": "subscribe", "id": "\\udfff", "payload": {"query": "{ __typename }"}}',
            '{"type": "subscribe", "id": "s", "payload": {"query": "{ \\ud800 }"}}',
            '{"type": "start", "id": "\\udfff", "payload": {"query": "{ status { version } }"}}',
            '{"type": "x", "id": "\\ud800"}',
            '{"type": "ping", "payload": ' + "[" * 20_000 + "]" * 20_000 + "}",
        ]
    ),
)


def test_websocket_random_frames() -> None:
    with background_gateway(ws_max_message_bytes=64 * 1024) as gateway:

        @fuzz(250)
        @given(
            protocol=st.sampled_from(["graphql-transport-ws", "graphql-ws"]),
            init=st.booleans(),
            sent=st.lists(frames, max_size=6),
        )
        def exchange(protocol: str, init: bool, sent: list[str | bytes]) -> None:
            prefix: list[str | bytes] = ['{"type": "connection_init"}'] if init else []
            ws_exchange(gateway, protocol, prefix + sent)
            assert gateway.alive()

        exchange()


@st.composite
def operation_messages(draw: st.DrawFn, legacy: bool) -> dict[str, Any]:
    kind = draw(st.sampled_from(["start", "stop"] if legacy else ["subscribe", "complete"]))
    message: dict[str, Any] = {"type": kind, "id": draw(st.sampled_from(["1", "2", "3", "\udfff"]))}
    if kind in {"start", "subscribe"}:
        payload: dict[str, Any] = {"query": draw(documents)}
        if draw(st.booleans()):
            payload["variables"] = draw(variables)
        if draw(st.booleans()):
            payload["operationName"] = draw(st.sampled_from(["A", "B", "Q", "S"]))
        message["payload"] = payload
    return message


@st.composite
def sessions(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Plausible protocol sequences: an init, then operations, pings and the odd stray."""
    protocol = draw(st.sampled_from(["graphql-transport-ws", "graphql-ws"]))
    legacy = protocol == "graphql-ws"
    steps: list[dict[str, Any]] = [
        {"type": "connection_init", "payload": draw(st.none() | st.just({}))}
    ]
    if draw(st.integers(0, 9)) == 0:
        steps = []
    extras = [operation_messages(legacy)]
    extras.append(st.just({"type": "ka" if legacy else "ping"}))
    extras.append(st.just({"type": "connection_init"}))
    if legacy:
        extras.append(st.just({"type": "connection_terminate"}))
    steps += draw(st.lists(st.one_of(*extras), max_size=8))
    return protocol, [encode({k: v for k, v in step.items() if v is not None}) for step in steps]


def test_websocket_protocol_sequences() -> None:
    with background_gateway(ws_max_operations=2) as gateway:

        @fuzz(200)
        @given(session=sessions())
        def exchange(session: tuple[str, list[str]]) -> None:
            protocol, sent = session
            ws_exchange(gateway, protocol, list(sent))
            assert gateway.alive()

        exchange()


def test_handshakes_with_odd_subprotocols() -> None:
    with background_gateway() as gateway:

        @fuzz(40)
        @given(
            offered=st.lists(
                st.text(string.ascii_letters + "-", min_size=1, max_size=25), max_size=3
            )
        )
        def handshake(offered: list[str]) -> None:
            known = [p for p in offered if p in {"graphql-transport-ws", "graphql-ws"}]
            try:
                with connect(
                    gateway.ws_url,
                    subprotocols=[Subprotocol(p) for p in offered],
                    open_timeout=TIMEOUT,
                    close_timeout=2,
                    proxy=None,
                ) as ws:
                    assert known, "a connection without a known protocol was accepted"
                    ws.close()
            except InvalidStatus as rejected:
                assert not known
                assert rejected.response.status_code == 403
            except InvalidHandshake:
                assert not known

        handshake()
        assert gateway.alive()


# ---------------------------------------------------------------------------------------------
# Credentials and origins (gateway.api.auth, gateway.api.http_policy)

AUTH_STATUSES = {200, 400, 401, 403, 405, 406, 413, 415, 429}


def _credential_values(key: str) -> st.SearchStrategy[str]:
    junk = st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=60)
    return st.one_of(
        st.just(key),
        st.just(key[:-1]),
        st.just(key.upper()),
        st.just("gw_00000000_" + "A" * 43),
        junk,
        junk.map(lambda text: "gw_" + text),
        st.sampled_from(["", " ", "gw_", "gw__", "\u00e9"]),
    )


def test_credentials_and_origins_over_http() -> None:
    """Whatever the Authorization / X-API-Key / Origin headers hold: a tidy answer, 401 for a
    bad key, 403 for a foreign origin, and CORS headers only for the allowed one."""
    overrides = {"anonymous_access": "off", "cors_origins": ("https://ok.example",)}
    with (
        background_gateway(**overrides) as gateway,
        httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client,
    ):
        key = gateway.create_key("viewer", "pro")
        printable = string.printable.replace("\r", "").replace("\n", "")

        @fuzz(200)
        @given(
            authorization=st.none()
            | _credential_values(key).map(lambda v: "Bearer " + v)
            | st.text(printable, max_size=40),
            api_key=st.none() | _credential_values(key),
            origin=st.none()
            | st.sampled_from(["https://ok.example", "https://evil.example", "null", "http://x"])
            | st.text(printable, max_size=30),
            body=st.sampled_from([{"query": "{ __typename }"}, {"query": "mutation { x }"}]),
        )
        def post(
            authorization: str | None, api_key: str | None, origin: str | None, body: Any
        ) -> None:
            headers = {}
            for name, value in (("Authorization", authorization), ("X-API-Key", api_key),
                                ("Origin", origin)):  # fmt: skip
                if value is not None:
                    headers[name] = value.strip()
            try:
                response = client.post("/graphql", json=body, headers=headers)
            except (httpx.LocalProtocolError, UnicodeEncodeError):
                return  # not a header value httpx will send
            assert response.status_code in AUTH_STATUSES, response.text[:300]
            assert_http_response(response)
            allowed = response.headers.get("access-control-allow-origin")
            assert allowed in {None, "https://ok.example"}
            assert response.headers["x-content-type-options"] == "nosniff"
            if response.status_code == 200:
                assert key in headers.get("X-API-Key", "") + headers.get("Authorization", "")

        post()
        assert gateway.alive()


def test_credentials_in_connection_init() -> None:
    """Random connection_init payloads: an ack only for the real key, else 4401/4403."""
    with background_gateway(anonymous_access="off") as gateway:
        key = gateway.create_key("viewer", "free")
        names = st.sampled_from(
            ["authorization", "Authorization", "x-api-key", "X-API-Key", "apiKey", "token"]
        )
        values = _credential_values(key) | _credential_values(key).map(lambda v: "Bearer " + v)
        entries = st.dictionaries(names, values | json_values, max_size=2)
        payloads = entries | entries.map(lambda headers: {"headers": headers}) | json_values

        @fuzz(150)
        @given(protocol=st.sampled_from(["graphql-transport-ws", "graphql-ws"]), payload=payloads)
        def exchange(protocol: str, payload: Any) -> None:
            init = json.dumps({"type": "connection_init", "payload": payload})
            with connect(
                gateway.ws_url,
                subprotocols=[Subprotocol(protocol)],
                open_timeout=TIMEOUT,
                close_timeout=2,
                proxy=None,
            ) as ws:
                ws.send(init)
                try:
                    first = json.loads(ws.recv(timeout=TIMEOUT))
                except ConnectionClosed as closed:
                    assert close_code_of(closed) in {None, 4400, 4401, 4403}
                    return
                if first["type"] == "connection_ack":
                    assert key in init  # only the real key gets this far
                else:
                    assert first["type"] == "connection_error" and protocol == "graphql-ws"
                    with pytest.raises(ConnectionClosed) as closed:
                        ws.recv(timeout=TIMEOUT)
                    assert close_code_of(closed.value) in {None, 4401, 4403}
            assert gateway.alive()

        exchange()


# ---------------------------------------------------------------------------------------------
# Regressions: each of these was found by the properties above, and is pinned here as a plain
# test (before the fix: the status or close code in the test's docstring).


def _no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [
        r for r in caplog.records if r.name.startswith("hypercorn") and r.levelno >= logging.ERROR
    ]
    assert not errors, [r.getMessage() for r in errors]


async def _post(running: RunningGateway, content: bytes, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=TIMEOUT) as client:
        return await client.post(
            "/graphql", content=content, headers={"content-type": "application/json", **headers}
        )


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"query": "{ status { version } }", "variables": '
        + b'{"a":' * 5_000
        + b"1"
        + b"}" * 5_001,
        b'{"query": "{ status { version } }", "variables": {"x": NaN}}',
        b'{"query": "{ status { version } }", "variables": {"x": -Infinity}}',
    ],
)
async def test_regression_json_python_cannot_or_should_not_parse_is_400(
    gateway: RunningGateway, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Was 500: RecursionError escaped `except ValueError`; NaN was accepted (and could not be
    written back: responses are written with allow_nan=False)."""
    response = await _post(gateway, content)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    _no_server_errors(caplog)


async def test_regression_deep_json_in_get_variables_is_400(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Was 500, as for POST bodies."""
    async with httpx.AsyncClient(base_url=gateway.urls[0], timeout=TIMEOUT) as client:
        params = {"query": "{ status { version } }", "variables": "[" * 5000}
        response = await client.get("/graphql", params=params)
    assert response.status_code == 400
    _no_server_errors(caplog)


async def test_regression_lone_surrogates_are_escaped_not_500(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Was 500: an error message quoting a lone surrogate (JSON may spell one) could not be
    encoded as UTF-8 after the response had been built."""
    query = "query($s: [String!]!) { prices(symbols: $s) { usd } }"
    content = json.dumps({"query": query, "variables": {"s": ["\ud83d"]}}).encode()
    response = await _post(gateway, content)
    assert response.status_code == 200
    response.content.decode("utf-8")  # strict: valid UTF-8
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNKNOWN_SYMBOL" and "ud83d" in error["message"]
    response = await _post(gateway, b'{"query": "{ \\ud800 }"}')
    assert response.status_code == 200 and response.json()["errors"]
    _no_server_errors(caplog)


async def test_regression_early_errors_close_the_connection_they_did_not_read(
    gateway: RunningGateway,
) -> None:
    """Was "Server disconnected without sending a response" for the request after a 413 (or a
    406 with a large body) on a keep-alive connection: the server had stopped reading it."""
    async with httpx.AsyncClient(base_url=gateway.urls[0], timeout=TIMEOUT) as client:
        for headers, status in (({}, 413), ({"accept": "image/png"}, 406)):
            for _ in range(5):
                response = await client.post(
                    "/graphql",
                    content=b"x" * (1024 * 1024 + 10),
                    headers={"content-type": "application/json", **headers},
                )
                assert response.status_code == status
                assert response.headers["connection"] == "close"
                follow_up = await client.post("/graphql", json={"query": "{ status { version } }"})
                assert follow_up.json()["data"]["status"]["version"]


async def _ws_frames(running: RunningGateway, protocol: str, frames: list[str]) -> list[Any]:
    """Send `frames` after an init; every message until the server closes (then its close
    code) or is quiet for half a second."""
    url = running.urls[0].replace("http://", "ws://") + "/graphql"
    received: list[Any] = []
    async with open_websocket_url(
        url, subprotocols=[protocol], connect_timeout=TIMEOUT, disconnect_timeout=2
    ) as ws:
        await ws.send_message('{"type": "connection_init"}')
        for frame in frames:
            await ws.send_message(frame)
        try:
            with trio.fail_after(TIMEOUT):
                while True:
                    with trio.move_on_after(0.5) as quiet:
                        received.append(json.loads(await ws.get_message()))
                    if quiet.cancelled_caught:
                        break
        except ConnectionClosedTrio as closed:
            received.append(closed.reason.code)
    return received


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"type": "ping", "payload": {"x": NaN}}', 4400),
        ('{"type": "ping", "payload": ' + "[" * 20_000 + "]" * 20_000 + "}", 4400),
    ],
)
async def test_regression_unparseable_frames_close_4400(
    gateway: RunningGateway, frame: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Was 1011 (hypercorn's "internal error"): NaN made the pong unwritable, deep nesting
    raised RecursionError; both escaped the connection's nursery."""
    received = await _ws_frames(gateway, "graphql-transport-ws", [frame])
    assert received == [{"type": "connection_ack"}, code]
    _no_server_errors(caplog)


async def test_regression_lone_surrogates_round_trip_over_websocket(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Was 1011: the writer could not encode a pong payload or an operation id holding a lone
    surrogate, and its exception ended the connection."""
    frames = [
        '{"type": "ping", "payload": {"x": "\\ud800"}}',
        '{"type": "subscribe", "id": "\\udfff", "payload": {"query": "{ status { version } }"}}',
    ]
    received = await _ws_frames(gateway, "graphql-transport-ws", frames)
    assert received == [
        {"type": "connection_ack"},
        {"type": "pong", "payload": {"x": "\ud800"}},
        {
            "id": "\udfff",
            "type": "next",
            "payload": {"data": {"status": {"version": gateway.services.version}}},
        },
        {"id": "\udfff", "type": "complete"},
    ]
    _no_server_errors(caplog)


async def test_regression_legacy_unknown_message_error_has_a_code(gateway: RunningGateway) -> None:
    """Was an `error` payload with no extensions.code (every error must carry one)."""
    received = await _ws_frames(gateway, "graphql-ws", ['{"type": "ping"}'])
    assert received[:3] == [
        {"type": "connection_ack"},
        {"type": "ka"},
        {
            "type": "error",
            "id": None,
            "payload": {
                "message": "unknown message type 'ping'",
                "extensions": {"code": "BAD_USER_INPUT"},
            },
        },
    ]


async def test_regression_an_oversized_message_cannot_stop_the_server(
    start_gateway: StartGateway,
) -> None:
    """Was the whole gateway stopping: hypercorn kept an oversized text message in its buffer,
    appended the next (binary) message to it, and the TypeError escaped its listener."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

    running = await start_gateway(ws_max_message_bytes=1000)
    client = WSConnection(ConnectionType.CLIENT)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        async with stream:
            await stream.send_all(
                client.send(
                    Request(
                        host="127.0.0.1", target="/graphql", subprotocols=["graphql-transport-ws"]
                    )
                )
            )
            events: list[Any] = []
            while not any(isinstance(e, AcceptConnection) for e in events):
                client.receive_data(await stream.receive_some())
                events += list(client.events())
            # Both messages in one write, so the server has the second before it closes; the
            # third makes it look at the second.
            await stream.send_all(
                client.send(TextMessage("x" * 5000)) + client.send(BytesMessage(b"after"))
            )
            await trio.sleep(0.2)
            await stream.send_all(client.send(TextMessage("{}")))
            closes: list[int] = []
            while not closes:
                data = await stream.receive_some()
                client.receive_data(data or None)
                closes += [e.code for e in client.events() if isinstance(e, CloseConnection)]
                if not data:
                    break
    assert closes == [1009]
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=TIMEOUT) as http:
        assert (await http.get("/healthz")).status_code == 200  # still serving


async def test_regression_a_close_reason_quoting_a_lone_surrogate_is_escaped(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Was 1011 and "Error in ASGI Framework": the 4409 reason quotes the operation id, and a
    lone surrogate in it made the close frame unencodable."""
    frame = '{"type": "subscribe", "id": "\\udfff", "payload": {"query": "' + TICKS + '"}}'
    url = gateway.urls[0].replace("http://", "ws://") + "/graphql"
    async with open_websocket_url(
        url, subprotocols=["graphql-transport-ws"], connect_timeout=TIMEOUT, disconnect_timeout=2
    ) as ws:
        await ws.send_message('{"type": "connection_init"}')
        await ws.send_message(frame)
        await ws.send_message(frame)
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosedTrio) as closed:
            while True:
                await ws.get_message()
    assert closed.value.reason.code == 4409
    assert closed.value.reason.reason == "Subscriber for \\udfff already exists"
    _no_server_errors(caplog)

"""graphql-transport-ws and legacy graphql-ws against a real gateway over loopback.

Each test speaks the protocol with trio-websocket, as a client library would, and checks
what a client would notice: the messages it gets and the close code it sees.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from gateway.api.ws import OutboundQueue, ShutdownSignal
from gateway.models import PriceTick, utc_now
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway, wait_members

TICKS = 'subscription { priceTicks(symbols: ["BTC"]) { symbol usd provider } }'


def ws_url(running: RunningGateway) -> str:
    return running.urls[0].replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def connect(
    running: RunningGateway, protocol: str = "graphql-transport-ws"
) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(
        ws_url(running), subprotocols=[protocol], connect_timeout=5, disconnect_timeout=2
    ) as ws:
        yield ws


async def send(ws: WebSocketConnection, message: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(message))


async def receive(ws: WebSocketConnection, timeout: float = 3) -> dict[str, Any]:
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def close_code(ws: WebSocketConnection, timeout: float = 3) -> int:
    """Read until the server closes; the close code it sent."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code
    raise AssertionError("unreachable")


async def init(ws: WebSocketConnection, payload: dict[str, Any] | None = None) -> None:
    await send(ws, {"type": "connection_init", **({"payload": payload} if payload else {})})
    assert await receive(ws) == {"type": "connection_ack"}


def publish(running: RunningGateway, symbol: str = "BTC", usd: float = 100.0) -> PriceTick:
    tick = PriceTick(symbol, usd, "test", utc_now())
    running.services.bus.prices.publish(tick)
    return tick


# -- the happy path ---------------------------------------------------------------------------


async def test_subscribe_receives_ticks_then_complete_stops_them(gateway: RunningGateway) -> None:
    async with connect(gateway) as ws:
        await init(ws)
        await send(ws, {"type": "subscribe", "id": "s1", "payload": {"query": TICKS}})
        await wait_members(gateway, 1)
        publish(gateway, usd=101.5)
        message = await receive(ws)
        assert message == {
            "id": "s1",
            "type": "next",
            "payload": {
                "data": {"priceTicks": {"symbol": "BTC", "usd": 101.5, "provider": "test"}}
            },
        }
        publish(gateway, symbol="ETH")  # not asked for
        await send(ws, {"type": "complete", "id": "s1"})
        await wait_members(gateway, 0)
        publish(gateway)
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}  # and no `next` before it


async def test_query_over_the_socket(gateway: RunningGateway) -> None:
    async with connect(gateway) as ws:
        await init(ws)
        query = "{ status { version } }"
        await send(ws, {"type": "subscribe", "id": "q", "payload": {"query": query}})
        assert await receive(ws) == {
            "id": "q",
            "type": "next",
            "payload": {"data": {"status": {"version": gateway.services.version}}},
        }
        assert await receive(ws) == {"id": "q", "type": "complete"}


async def test_invalid_operation_is_an_error_message_and_the_socket_survives(
    gateway: RunningGateway,
) -> None:
    async with connect(gateway) as ws:
        await init(ws)
        await send(
            ws, {"type": "subscribe", "id": "bad", "payload": {"query": "subscription { nope }"}}
        )
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "bad"
        assert message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        unknown = 'subscription { priceTicks(symbols: ["NOPE"]) { usd } }'
        await send(ws, {"type": "subscribe", "id": "u", "payload": {"query": unknown}})
        message = await receive(ws)
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "UNKNOWN_SYMBOL"
        # the ids are free again and the connection still works
        await send(
            ws, {"type": "subscribe", "id": "bad", "payload": {"query": "{ status { version } }"}}
        )
        assert (await receive(ws))["type"] == "next"


async def test_ping_is_answered_with_its_payload(gateway: RunningGateway) -> None:
    async with connect(gateway) as ws:
        await send(ws, {"type": "ping", "payload": {"n": 1}})  # allowed before init
        assert await receive(ws) == {"type": "pong", "payload": {"n": 1}}


async def test_server_pings_idle_connections(start_gateway: StartGateway) -> None:
    running = await start_gateway(ws_ping_interval=0.2)
    async with connect(running) as ws:
        await init(ws)
        assert await receive(ws, timeout=2) == {"type": "ping"}


# -- every close code -------------------------------------------------------------------------


async def test_init_timeout_closes_4408(start_gateway: StartGateway) -> None:
    running = await start_gateway(ws_init_timeout=0.3)
    async with connect(running) as ws:
        assert await close_code(ws) == 4408


async def test_subscribe_before_ack_closes_4401(gateway: RunningGateway) -> None:
    async with connect(gateway) as ws:
        await send(ws, {"type": "subscribe", "id": "1", "payload": {"query": TICKS}})
        assert await close_code(ws) == 4401


async def test_duplicate_operation_id_closes_4409(gateway: RunningGateway) -> None:
    async with connect(gateway) as ws:
        await init(ws)
        await send(ws, {"type": "subscribe", "id": "same", "payload": {"query": TICKS}})
        await send(ws, {"type": "subscribe", "id": "same", "payload": {"query": TICKS}})
        assert await close_code(ws) == 4409


async def test_second_init_closes_4429(gateway: RunningGateway) -> None:
    async with connect(gateway) as ws:
        await init(ws)
        await send(ws, {"type": "connection_init"})
        assert await close_code(ws) == 4429


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"no": "type"}',
        '{"type": "unknown"}',
        '{"type": "subscribe", "payload": {"query": "{ status { version } }"}}',
        '{"type": "subscribe", "id": "x", "payload": {"variables": {}}}',
        '{"type": "connection_init", "payload": "not an object"}',
    ],
)
async def test_malformed_messages_close_4400(gateway: RunningGateway, raw: str) -> None:
    async with connect(gateway) as ws:
        if "connection_init" not in raw:
            await init(ws)
        await ws.send_message(raw)
        assert await close_code(ws) == 4400


async def test_oversized_message_closes_1009(start_gateway: StartGateway) -> None:
    running = await start_gateway(ws_max_message_bytes=1000)
    async with connect(running) as ws:
        await init(ws)
        await ws.send_message(json.dumps({"type": "ping", "payload": {"pad": "x" * 5000}}))
        assert await close_code(ws) in {1009}


async def test_shutdown_closes_1001(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    async with connect(running) as ws:
        await init(ws)
        await send(ws, {"type": "subscribe", "id": "s", "payload": {"query": TICKS}})
        await wait_members(running, 1)
        running.gateway.shutdown.set()
        assert await close_code(ws) == 1001


async def test_unknown_subprotocol_is_rejected(gateway: RunningGateway) -> None:
    with pytest.raises(HandshakeError), trio.fail_after(5):
        async with open_websocket_url(ws_url(gateway), subprotocols=["mqtt"]):
            pass


# -- legacy graphql-ws (subscriptions-transport-ws) -------------------------------------------


async def test_legacy_protocol_start_data_stop(gateway: RunningGateway) -> None:
    async with connect(gateway, "graphql-ws") as ws:
        assert ws.subprotocol == "graphql-ws"
        await send(ws, {"type": "connection_init", "payload": {}})
        assert await receive(ws) == {"type": "connection_ack"}
        assert await receive(ws) == {"type": "ka"}
        await send(ws, {"type": "start", "id": "1", "payload": {"query": TICKS}})
        await wait_members(gateway, 1)
        publish(gateway, usd=7.0)
        message = await receive(ws)
        assert message["type"] == "data" and message["id"] == "1"
        assert message["payload"]["data"]["priceTicks"]["usd"] == 7.0
        await send(ws, {"type": "stop", "id": "1"})
        await wait_members(gateway, 0)
        await send(ws, {"type": "start", "id": "2", "payload": {"query": "{ nope }"}})
        error = await receive(ws)
        assert error["type"] == "error" and error["id"] == "2"
        assert error["payload"]["extensions"]["code"] == "BAD_USER_INPUT"
        await send(ws, {"type": "connection_terminate"})
        assert await close_code(ws) == 1000


# -- shared execution -------------------------------------------------------------------------


async def test_identical_subscriptions_share_one_execution(start_gateway: StartGateway) -> None:
    clients = 20
    # All clients are anonymous from one address: lift the free tier's subscription and
    # connection limits.
    gateway = await start_gateway(
        tier_free_subscriptions=clients, tier_free_connections=clients, tier_free_per_minute=0
    )
    hub = gateway.services.hub
    assert hub is not None
    received: list[list[str]] = [[] for _ in range(clients)]

    async def client(index: int, ready: trio.Event, done: trio.Event) -> None:
        async with connect(gateway) as ws:
            await init(ws)
            await send(ws, {"type": "subscribe", "id": f"op{index}", "payload": {"query": TICKS}})
            ready.set()
            for _ in range(3):
                message = await receive(ws)
                received[index].append(json.dumps(message["payload"], sort_keys=True))
            done.set()

    async with trio.open_nursery() as nursery:
        dones = []
        for index in range(clients):
            ready, done = trio.Event(), trio.Event()
            dones.append(done)
            nursery.start_soon(client, index, ready, done)
        await wait_members(gateway, clients)
        assert hub.group_count == 1
        before = hub.executions
        for price in (1.0, 2.0, 3.0):
            publish(gateway, usd=price)
        with trio.fail_after(5):
            for done in dones:
                await done.wait()
    assert hub.executions - before == 3  # once per event, not once per subscriber
    assert all(payloads == received[0] for payloads in received)
    assert len(received[0]) == 3


async def test_different_variables_are_different_groups(gateway: RunningGateway) -> None:
    hub = gateway.services.hub
    assert hub is not None
    query = "subscription($s: [String!]!) { priceTicks(symbols: $s) { symbol } }"
    async with connect(gateway) as ws:
        await init(ws)
        for op_id, symbols in (("a", ["BTC"]), ("b", ["ETH"]), ("c", ["BTC"])):
            payload = {"query": query, "variables": {"s": symbols}}
            await send(ws, {"type": "subscribe", "id": op_id, "payload": payload})
        await wait_members(gateway, 3)
        assert hub.group_count == 2
        publish(gateway, symbol="ETH")
        message = await receive(ws)
        assert message["id"] == "b"


# -- slow consumers ---------------------------------------------------------------------------


async def test_outbound_queue_drops_oldest_data_but_never_control() -> None:
    queue = OutboundQueue(limit=3)
    queue.put("ack")
    for n in range(5):
        queue.put(f"data{n}", droppable=True)
    queue.put("complete")
    frames = [frame for _, frame in queue._items]
    assert frames == ["ack", "data3", "data4", "complete"]
    assert queue.dropped == 3


async def test_a_client_that_stops_reading_does_not_grow_the_server(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(ws_send_queue=8, ws_slow_consumer_drops=10_000)
    stats = running.services.ws_stats
    async with connect(running) as idle, connect(running) as active:
        for ws, op in ((idle, "idle"), (active, "active")):
            await init(ws)
            await send(ws, {"type": "subscribe", "id": op, "payload": {"query": TICKS}})
        await wait_members(running, 2)
        # `idle` never reads again. Publish far more than its socket buffers can hold.
        big = "x" * 2000
        for n in range(3000):
            publish(running, usd=float(n))
            if n % 100 == 0:
                await trio.lowlevel.checkpoint()
            if n % 500 == 0:
                assert await receive(active)  # the reading client keeps getting data
        del big
        with trio.fail_after(5):
            while stats.frames_dropped == 0:
                await trio.sleep(0.01)
        assert stats.frames_dropped > 0
        # the active client drained; its queue is tiny, the idle one's is capped
        assert stats.connections == 2


async def test_a_client_that_falls_too_far_behind_is_closed_4413() -> None:
    """Drive one connection with a socket that accepts nothing until released."""
    from gateway.api.graphql_trio import GraphQLEngine
    from gateway.api.shared_subscriptions import SubscriptionHub
    from gateway.api.ws import Connection, WebSocketOptions, WebSocketStats
    from gateway.schema import build_schema

    release = trio.Event()
    sent: list[dict[str, Any]] = []
    inbound_send, inbound_receive = trio.open_memory_channel[dict[str, Any]](10)

    async def blocked_send(message: dict[str, Any]) -> None:
        await release.wait()
        sent.append(message)

    stats = WebSocketStats()
    engine = GraphQLEngine(build_schema()._schema)
    connection = Connection(
        legacy=False,
        receive=inbound_receive.receive,
        send=blocked_send,
        engine=engine,
        hub=SubscriptionHub(engine, None),
        context=None,
        options=WebSocketOptions(send_queue=4, slow_consumer_drops=10),
        stats=stats,
        shutdown=ShutdownSignal(),
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await inbound_send.send(
                {"type": "websocket.receive", "text": '{"type":"connection_init"}'}
            )
            await trio.testing.wait_all_tasks_blocked()
            for n in range(30):
                connection.queue_data(f'{{"n":{n}}}')
            assert stats.frames_dropped >= 10
            assert stats.slow_consumer_closes == 1
            release.set()
    closes = [m for m in sent if m["type"] == "websocket.close"]
    assert closes == [
        {
            "type": "websocket.close",
            "code": 4413,
            "reason": "slow consumer: too many messages dropped",
        }
    ]
    data = [m["text"] for m in sent if m["type"] == "websocket.send"]
    assert len(data) <= 4 + 1  # the ack plus at most a queue's worth: the rest was dropped


async def test_stale_frames_are_dropped_so_a_lagging_client_gets_fresh_data(
    autojump_clock: object,
) -> None:
    queue = OutboundQueue(limit=100, max_age=1.0)
    queue.put("ack")
    queue.put("old", droppable=True)
    await trio.sleep(2)
    queue.put("fresh", droppable=True)
    assert await queue.take() == ("ack", 0)
    assert await queue.take() == ("fresh", 1)  # "old" expired on the way
    assert queue.dropped == 1


async def test_a_close_is_sent_before_pending_data() -> None:
    from gateway.api.ws import CloseFrame

    queue = OutboundQueue(limit=10)
    queue.put("error-for-op")
    for n in range(5):
        queue.put(f"data{n}", droppable=True)
    close = CloseFrame(1001, "server shutting down")
    queue.put_close(close)
    assert [frame for _, frame in queue._items] == ["error-for-op", close]


async def _wedged_client(running: RunningGateway) -> trio.SocketStream:
    """A graphql-transport-ws client with a tiny receive buffer that subscribes, then never
    reads again: its TCP window fills and the server's writes to it stop making progress."""
    import base64
    import os
    import socket as stdlib_socket

    sock = trio.socket.socket()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", running.port))
    stream = trio.SocketStream(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            "GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    await stream.receive_some(4096)  # 101 Switching Protocols

    def frame(message: dict[str, Any]) -> bytes:
        data, mask = json.dumps(message).encode(), os.urandom(4)
        assert len(data) < 2**16
        size = (
            bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0xFE]) + len(data).to_bytes(2)
        )
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return bytes([0x81]) + size + mask + masked

    await stream.send_all(frame({"type": "connection_init"}))
    await stream.receive_some(4096)  # connection_ack
    await stream.send_all(frame({"type": "subscribe", "id": "w", "payload": {"query": TICKS}}))
    return stream


async def test_a_client_that_stops_reading_entirely_is_cut_off_and_cannot_hold_shutdown(
    start_gateway: StartGateway,
) -> None:
    # hypercorn writes under a shielded scope with no deadline: before
    # gateway/api/hypercorn_patches.py bounded it, this client held its connection, and the
    # shutdown, for as long as it lived.
    running = await start_gateway(send_stall_timeout=0.5, ws_send_queue=8)
    stats = running.services.ws_stats
    wedged = await _wedged_client(running)
    async with connect(running) as active:
        await init(active)
        await send(active, {"type": "subscribe", "id": "a", "payload": {"query": TICKS}})
        await wait_members(running, 2)
        with trio.fail_after(10):
            n = 0
            while stats.connections == 2:  # until the wedged one is cut off
                publish(running, usd=float(n))
                n += 1
                if n % 50 == 0:
                    await trio.sleep(0.01)
                    while True:  # the reading client drains what it was sent
                        with trio.move_on_after(0):
                            await active.get_message()
                            continue
                        break
        publish(running, usd=-1.0)
        with trio.fail_after(3):
            while (await receive(active))["payload"]["data"]["priceTicks"]["usd"] != -1.0:
                pass  # the reading client is unaffected
    assert stats.connections == 0
    await wedged.aclose()


def _connection_tasks() -> list[str]:
    """The names of the running tasks that are a WebSocket connection's (or its operations')
    own methods."""
    found: list[str] = []
    todo = [trio.lowlevel.current_root_task()]
    for _ in range(100_000):  # bounded walk of the task tree
        if not todo:
            break
        task = todo.pop()
        name = task.coro.cr_code.co_qualname if hasattr(task.coro, "cr_code") else ""
        if name.startswith(("Connection._", "Operations._", "IdleTimer._")):
            found.append(name)
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return sorted(found)


def _connection_nurseries() -> int:
    """How many nurseries the tasks serving a WebSocket (`Connection.run`) have open."""
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    for _ in range(100_000):  # bounded walk of the task tree
        if not todo:
            break
        task = todo.pop()
        coro: Any = task.coro
        for _ in range(50):  # the task's await chain, bounded
            if coro is None or not hasattr(coro, "cr_code"):
                break
            if coro.cr_code.co_qualname == "Connection.run":
                count += len(task.child_nurseries)
                break
            coro = coro.cr_await
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


async def test_an_idle_subscriber_holds_no_task_but_the_one_that_reads_it(
    gateway: RunningGateway,
) -> None:
    # Each parked task costs an idle socket 2-3 KB (issue 16): reading, writing, the init
    # timeout, keep-alive pings, idle timeout and the shutdown share the app's task (the
    # shutdown through ShutdownSignal's registry); a joined subscription needs no task, and
    # hypercorn's keep-alive timer (patch 5) ends at the upgrade.
    async with connect(gateway) as ws:
        await init(ws)
        await send(ws, {"type": "subscribe", "id": "s1", "payload": {"query": TICKS}})
        await wait_members(gateway, 1)
        assert _connection_tasks() == []
        assert _connection_nurseries() == 0  # opened only while an operation task runs
        assert len(gateway.app.shutdown) == 1  # watched, so the shutdown still closes it
        await send(ws, {"type": "ping"})  # and it still answers while it waits
        assert await receive(ws) == {"type": "pong"}
        # An operation after that still gets its task (in a nursery opened for it) and runs.
        await send(ws, {"type": "subscribe", "id": "q", "payload": {"query": "{ __typename }"}})
        assert (await receive(ws))["payload"] == {"data": {"__typename": "Query"}}
        assert await receive(ws) == {"id": "q", "type": "complete"}
        publish(gateway, usd=7.0)  # and the joined subscription still delivers
        assert (await receive(ws))["payload"]["data"]["priceTicks"]["usd"] == 7.0
    with trio.fail_after(5):
        while len(gateway.app.shutdown):  # forgotten once closed
            await trio.sleep(0.01)


async def test_a_closed_connection_frees_its_subscriptions_and_their_tier_count(
    start_gateway: StartGateway,
) -> None:
    # A joined subscription has no task to cancel (issue 16): the connection's end releases it.
    from tests.api.test_auth import make_key

    running = await start_gateway()
    _, key = await make_key(running, tier="free")
    auth = {"authorization": f"Bearer {key}"}
    for attempt in range(2):  # the free tier holds 5 subscriptions at once
        async with connect(running) as ws:
            await init(ws, auth)
            for n in range(5):
                await send(ws, {"type": "subscribe", "id": f"s{n}", "payload": {"query": TICKS}})
            await wait_members(running, 5)
            await send(ws, {"type": "ping"})
            assert await receive(ws) == {"type": "pong"}, f"attempt {attempt}: refused"
        await wait_members(running, 0)  # closed without a `complete`

"""Shared fixtures: an in-process gateway on an ephemeral loopback port.

Every test that talks to a server gets one started in its own nursery with a fresh database,
and stopped (and awaited) at the end, so no server outlives its test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from gateway.config import ProvidersFile, Settings
from gateway.nursery import Gateway, RunningGateway
from gateway.storage import Storage
from tests.postgres_server import PostgresServer, unavailable_reason
from tests.services import missing_service

StartGateway = Callable[..., Awaitable[RunningGateway]]


async def graphql(
    running: RunningGateway, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST one GraphQL request to a running gateway; the decoded JSON answer."""
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
        body = {"query": query, "variables": variables or {}}
        return (await client.post("/graphql", json=body)).json()  # type: ignore[no-any-return]


def streams_live(running: RunningGateway) -> bool:
    """Every shared subscription's source stream has started listening to the bus.

    A member joins its group before the group's resolver generator runs its first step (that
    is when it subscribes to the bus), so a tick published in between reaches nobody.
    """
    hub = running.services.hub
    assert hub is not None
    listening = sum(topic.subscriber_count for topic in running.services.bus.topics)
    return listening >= hub.group_count


async def wait_members(running: RunningGateway, count: int) -> None:
    """Until `count` subscription operations are attached and their streams are live."""
    hub = running.services.hub
    assert hub is not None
    with trio.fail_after(3):
        while hub.member_count != count or not streams_live(running):
            await trio.sleep(0.01)


@pytest.fixture
async def start_gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartGateway]:
    """`await start_gateway(**settings_overrides, providers=ProvidersFile(...))`."""
    started: list[Gateway] = []

    async def start(providers: ProvidersFile | None = None, **overrides: Any) -> RunningGateway:
        overrides.setdefault("db_path", tmp_path / "gateway.db")
        # The transformer model costs seconds of CPU and ~400 MB: only tests about sentiment
        # load it (sentiment_model="embedded"); elsewhere the scorer is off (null sentiment).
        overrides.setdefault("sentiment_model", "off")
        settings = Settings(port=0, **overrides).validated()
        gateway = Gateway(settings, providers or ProvidersFile(()))
        started.append(gateway)
        with trio.fail_after(10):
            running: RunningGateway = await nursery.start(gateway.run)
        return running

    yield start
    for gateway in started:
        gateway.shutdown.set()
        with trio.fail_after(10):
            await gateway.stopped.wait()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (tests/postgres_server.py); skipped,
    saying why, where none can be started."""
    reason = unavailable_reason()
    if reason is not None:
        missing_service(reason)
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """What `Storage.open` is given, once per engine: a SQLite file, or a fresh, empty
    PostgreSQL database on the session's server (dropped after the test). One store suite runs
    on both engines."""
    if request.param == "sqlite":
        yield tmp_path / "gateway.db"
        return
    yield request.getfixturevalue("postgres_url")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def running_storage(store_target: Path | str) -> AsyncIterator[Storage]:
    """A fresh database whose writer runs (quick batches), closed after the test; once on
    SQLite, once on PostgreSQL."""
    store = await Storage.open(store_target, Settings(storage_batch_seconds=0.01))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()
    await store.aclose()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> RunningGateway:
    return await start_gateway()


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never send traffic anywhere but loopback: resolving any other host fails loudly."""
    import socket

    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in _LOOPBACK_NAMES and not str(name).startswith("127."):
            raise OSError(f"test tried to reach {name!r}: tests must stay on loopback")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)

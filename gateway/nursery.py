"""The supervisor: who runs, who restarts, and how the gateway stops.

One `trio.run` holds everything. Lifetimes nest so that shutdown happens in the right order:

    root nursery ─ storage writer        (cancelled last: flushes every queued write)
      └ service nursery ─ subscription hub
                        ─ sentiment scorer (its model loads in a worker thread)
                        ─ collectors      (each restarted with capped doubling backoff)
                        ─ news path       (ingest and scoring; news and Fear & Greed
                                           collectors, restarted like the others)
                        ─ daily backup    (with GATEWAY_BACKUP_DIR: gateway/ops/backup.py)
                        ─ hypercorn       (stops accepting; connections drain)

Before any of it, the HTTP port is checked with a trial bind (gateway/ops/ports.py), so a
port in use is one line and exit 1 before any upstream is called.

On the shutdown trigger (SIGINT/SIGTERM in the CLI, an Event in tests): readiness drops,
WebSockets are closed with 1001, hypercorn stops accepting and drains for `shutdown_grace`
(by then every write to a client is abandoned too, however slowly it reads: gateway.api.server),
then the service nursery is cancelled (with a hard deadline), and finally the storage writer
commits what it holds. The whole sequence is bounded well inside 5 seconds, slow clients
connected or not (tests/test_nursery.py).

A collector that raises is logged and restarted; nothing a collector does can end the process.

With a broker (several replicas, gateway/broker/): the bus is Redis Streams (its publisher and
reader run first in the service nursery), and the collectors, news and chain collectors, health
checks, retention and backups run only while this replica holds the collector lease, inside the
lease's cancel scope: a deposed leader's collectors are cancelled at once.

Must never: let an upstream failure propagate into the root nursery, or exit before the
writer's final flush.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final

import structlog
import trio

from gateway.api.app import GatewayApp
from gateway.api.context import RequestContext, Services
from gateway.api.graphql_trio import GraphQLEngine
from gateway.api.server import serve_http
from gateway.api.shared_subscriptions import SubscriptionHub
from gateway.api.system_metrics import snapshots_forever
from gateway.api.ws import WebSocketOptions, WebSocketStats, raise_descriptor_limit
from gateway.broker import LeaderLease, Replication, replication
from gateway.chains.data import ChainData
from gateway.chains.onchain import OnchainData, price_symbols
from gateway.config import SECONDS, ProviderConfig, ProvidersFile, Settings
from gateway.gc_tuning import freeze_late_load, tune_gc
from gateway.ingest import Ingest
from gateway.models import PriceTick, utc_now
from gateway.news.sentiment import SentimentScorer
from gateway.news.service import NewsService
from gateway.ops.backup import backup_forever
from gateway.ops.ports import check_port_free
from gateway.prices.at_time import ConsensusAt
from gateway.prices.consensus import OutlierWatch
from gateway.prices.history import CandleHistory
from gateway.prices.plausibility import GateLimits, PlausibilityGate
from gateway.providers.registry import ProviderRegistry
from gateway.providers.status import ProviderStatusBoard, mirror_states
from gateway.providers.upstream_keys import Secrets
from gateway.pubsub import EventBus
from gateway.schema import build_schema
from gateway.sources.base import Collector, CollectorContext
from gateway.sources.interest import SymbolInterest
from gateway.sources.registry import collector_for, stream_for
from gateway.sources.replica_interest import ReplicaInterest
from gateway.sources.schedule import ScheduleBook, ScheduleRun, current_book
from gateway.sources.stream_group import StreamGroup
from gateway.sources.stream_state import StreamHealth, StreamSettings
from gateway.sources.streams import StreamClient
from gateway.storage import ProviderStore, ScheduleStore, Storage, prune_all
from gateway.upstream.client import UpstreamClient

__all__ = ["Gateway", "RunningGateway", "run_gateway", "supervise"]

log = structlog.get_logger(__name__)


@dataclass
class RunningGateway:
    """What `run_gateway` reports once it is serving."""

    urls: list[str]
    services: Services
    app: GatewayApp
    gateway: Gateway
    restarts: dict[str, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.urls[0].rsplit(":", 1)[1])


async def supervise(
    name: str,
    run: Callable[[], Awaitable[object]],
    *,
    initial_backoff: float,
    max_backoff: float,
    restarts: dict[str, int],
) -> None:
    """Run `run()` forever: log and restart it when it raises or returns.

    The delay doubles after each failure up to `max_backoff`, and resets once the task has
    stayed up for longer than `max_backoff` (it was healthy, this is a new problem).
    """
    backoff = initial_backoff
    while True:
        began = trio.current_time()
        try:
            await run()
            log.warning("task.returned", task=name)
        except Exception as exc:
            log.error("task.crashed", task=name, error=repr(exc), exc_info=exc)
        restarts[name] = restarts.get(name, 0) + 1
        if trio.current_time() - began > max_backoff:
            backoff = initial_backoff
        log.info("task.restarting", task=name, in_s=backoff, restarts=restarts[name])
        await trio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


class Gateway:
    """Builds the services from settings; `run` serves until `shutdown` is set."""

    def __init__(self, settings: Settings, providers: ProvidersFile) -> None:
        self.settings = settings
        self.providers = providers
        self.shutdown = trio.Event()
        self.stopped = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        settings = self.settings
        # Before any upstream is called: a port in use is one line at once, not after the
        # collectors have started and logged their first warnings.
        check_port_free(settings.host, settings.port)
        storage = await Storage.open(settings.db_url or settings.db_path, settings)
        try:
            async with replication(settings.broker, settings.bus_buffer) as replicas:
                await self._run_with_storage(storage, replicas, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await storage.aclose()
            self.stopped.set()
            log.info("gateway.stopped")

    async def _run_with_storage(
        self,
        storage: Storage,
        replicas: Replication | None,
        task_status: trio.TaskStatus[RunningGateway],
    ) -> None:
        settings = self.settings
        bus = replicas.bus if replicas is not None else EventBus(settings.bus_buffer)
        secrets = Secrets.from_environment(self.providers)
        shared = replicas.upstream_limits() if replicas is not None else {}
        client = UpstreamClient(providers=self.providers.providers, **shared)
        registry = ProviderRegistry(self.providers, secrets, client, ProviderStore(storage), bus)
        services = Services(
            settings,
            self.providers,
            storage,
            bus,
            registry.board,
            WebSocketStats(),
            registry=registry,
            chains=ChainData.build(registry, settings, storage=storage, bus=bus),
            interest=SymbolInterest(settings.symbols),
            streams=StreamGroup(),
            history=CandleHistory(
                storage,
                client,
                lambda: registry.available_providers("MARKET_DATA"),
                key_for=registry.secrets.key_for,
                max_deviation_pct=settings.consensus_max_deviation_pct,
            ),
            replication=replicas,
        )
        services.schedule = schedule_book(settings, storage, registry)
        book_token = current_book.set(services.schedule)  # every task spawned below sees it
        engine = GraphQLEngine(build_schema()._schema)
        hub = SubscriptionHub(engine, RequestContext(services))
        services.hub = hub
        app = GatewayApp(
            services,
            engine,
            ws_options=WebSocketOptions.from_settings(settings),
            upstream_counters=lambda: {key: n for key, n in client.counters.items()},
            supervisor_running=lambda: not self.shutdown.is_set(),
        )
        running = RunningGateway([], services, app, self)
        async with trio.open_nursery() as root:
            await root.start(storage.run)
            try:
                async with trio.open_nursery() as service:
                    if replicas is not None:
                        await service.start(replicas.bus.run)
                        await service.start(replicas.breakers.run)
                    await service.start(hub.run)
                    await service.start(partial(registry.run, checks=replicas is None))
                    # Loads its model in a worker thread: "loading" (not available) until then.
                    services.sentiment = SentimentScorer.from_settings(settings)
                    await service.start(services.sentiment.run)
                    ingest = Ingest(
                        storage,
                        bus,
                        registry.board,
                        OutlierWatch(max_deviation_pct=settings.consensus_max_deviation_pct),
                        PlausibilityGate(
                            GateLimits(
                                band_pct=settings.plausibility_band_pct,
                                step_pct=settings.plausibility_step_pct,
                                max_step_pct=settings.plausibility_max_step_pct,
                            )
                        ),
                    )
                    await ingest.prime()
                    services.news = NewsService(storage, bus, settings, services.sentiment)
                    await service.start(services.news.run)
                    news = services.news

                    def collect(nursery: trio.Nursery) -> None:
                        """Everything that calls upstreams on a schedule or writes shared rows:
                        in one process here, with replicas only under the collector lease."""
                        restarts = running.restarts
                        self._start_collectors(nursery, registry, services, ingest, restarts)
                        self._start_chains(nursery, services, running.restarts)
                        self._start_onchain(nursery, services, running.restarts)
                        self._start_news(nursery, registry, news, running.restarts)
                        retention = partial(prune_forever, storage, settings)
                        self._supervised(nursery, "retention", retention, running.restarts)
                        # daily: gateway/ops/backup.py (SQLite files; PostgreSQL: pg_dump)
                        if settings.backup_dir is not None and storage.engine == "sqlite":
                            backups = partial(
                                backup_forever,
                                settings.db_path,
                                settings.backup_dir,
                                settings.backup_keep,
                            )
                            self._supervised(nursery, "backup", backups, running.restarts)

                    if replicas is None:
                        collect(service)
                    else:
                        lead = partial(_lead, storage, replicas.lease, registry, collect)
                        await service.start(replicas.lease.lead, lead)
                        states = partial(mirror_states, registry.board, bus.provider_states)
                        mirror = partial(states, replicas.lease.holds)
                        self._supervised(service, "mirror_states", mirror, running.restarts)
                        assert services.interest is not None  # followers' holds reach the leader
                        held = ReplicaInterest(replicas.lease, services.interest)
                        self._supervised(service, "replica_interest", held.run, running.restarts)
                    metrics = partial(snapshots_forever, services, settings.metrics_interval)
                    self._supervised(service, "system_metrics", metrics, running.restarts)
                    server_done = trio.Event()

                    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
                        try:
                            await serve_resiliently(app, settings, self.shutdown, task_status)
                        finally:
                            server_done.set()

                    running.urls = await service.start(serve)
                    services.ready = True
                    log.info("gateway.serving", urls=running.urls, db=str(storage.path))
                    task_status.started(running)

                    await self.shutdown.wait()
                    log.info("gateway.stopping")
                    services.ready = False
                    app.shutdown.set()  # every WebSocket closes with 1001
                    service.cancel_scope.deadline = (
                        trio.current_time() + settings.shutdown_grace + 0.5
                    )
                    await server_done.wait()
                    service.cancel_scope.cancel()
            finally:
                current_book.reset(book_token)
                await client.aclose()
                bus.close()
                root.cancel_scope.cancel()  # the writer flushes what it holds, then returns

    def _supervised(
        self,
        nursery: trio.Nursery,
        name: str,
        run: Callable[[], Awaitable[object]],
        restarts: dict[str, int],
    ) -> None:
        """Start `run` in `nursery` under `supervise`, with the configured restart backoff."""
        nursery.start_soon(
            partial(
                supervise,
                name,
                run,
                initial_backoff=self.settings.restart_backoff_initial,
                max_backoff=self.settings.restart_backoff_max,
                restarts=restarts,
            )
        )

    def _start_collectors(
        self,
        nursery: trio.Nursery,
        registry: ProviderRegistry,
        services: Services,
        ingest: Ingest,
        restarts: dict[str, int],
    ) -> None:
        """A supervised task per enabled, configured provider that has a collector or a stream.

        REST collectors and streams run side by side: while every stream for a symbol is down,
        the REST collectors' ticks keep `priceTicks` flowing.
        """
        client = registry.client
        assert services.interest is not None and services.streams is not None
        for provider in self.providers.providers:
            if not provider.enabled:
                continue
            if not registry.secrets.is_configured(provider):
                if services.schedule is not None and collector_for(provider) is not None:
                    nursery.start_soon(  # UNCONFIGURED: never called, its slots skipped
                        partial(
                            services.schedule.skipped,
                            f"collector:{provider.id}",
                            provider.interval_seconds,
                            "unconfigured",
                            utc_now(),
                        )
                    )
                continue
            stream_class = stream_for(provider)
            runner: Callable[[], Awaitable[object]]
            if stream_class is not None:
                runner = partial(
                    _run_stream,
                    stream_class,
                    provider,
                    services.interest,
                    ingest,
                    services.streams,
                    registry.board,
                    self.settings.stream_publish_interval,
                )
            else:
                collector_class = collector_for(provider)
                if collector_class is None:
                    continue
                context = CollectorContext(
                    provider=provider,
                    client=client,
                    # Whale tracking prices its tokens by their own consensus (USDT, USDC...).
                    symbols=tuple(
                        dict.fromkeys(self.settings.symbols + price_symbols(self.settings))
                    ),
                    publish=ingest,
                    key=registry.secrets.key_for(provider),
                )
                runner = partial(_run_collector, collector_class, context)
            self._supervised(
                nursery,
                f"{'stream' if stream_class else 'collector'}:{provider.id}",
                runner,
                restarts,
            )

    def _start_onchain(
        self, nursery: trio.Nursery, services: Services, restarts: dict[str, int]
    ) -> None:
        """Whale tracking, explorer statistics, DEX analytics and stored TVL (gateway.chains.
        onchain): their records go to their own tables and the whales topic."""
        assert services.chains is not None and services.registry is not None
        onchain = OnchainData.build(
            self.settings,
            services.registry,
            services.chains.rpc,
            services.storage,
            services.bus,
            ConsensusAt(
                services.storage, max_deviation_pct=self.settings.consensus_max_deviation_pct
            ),
        )
        for name, runner in onchain.tasks().items():
            self._supervised(nursery, name, runner, restarts)

    def _start_chains(
        self, nursery: trio.Nursery, services: Services, restarts: dict[str, int]
    ) -> None:
        """The chain collectors (heads, gas): their records take the chain path
        (gateway.chains: store, then the chain_heads and gas topics), not the price ingest."""
        assert services.chains is not None
        for name, runner in services.chains.tasks().items():
            self._supervised(nursery, name, runner, restarts)

    def _start_news(
        self,
        nursery: trio.Nursery,
        registry: ProviderRegistry,
        news: NewsService,
        restarts: dict[str, int],
    ) -> None:
        """A supervised task per news and Fear & Greed collector: their records take the news
        path (gateway.news), not the price ingest."""
        runners = news.runners(
            self.providers.providers,
            registry.client,
            registry.secrets.key_for,
            registry.secrets.is_configured,
        )
        for name, runner in runners:
            self._supervised(nursery, name, runner, restarts)


async def _run_stream(
    stream_class: type[StreamClient],
    provider: ProviderConfig,
    interest: SymbolInterest,
    publish: Callable[[Sequence[PriceTick]], Awaitable[None]],
    group: StreamGroup,
    board: ProviderStatusBoard,
    publish_interval: float,
) -> None:
    """A fresh stream client per (re)start, registered so REST fallback can see it.

    Its connection state goes to the status board, as a health check's result does, so the
    provider's state, `providerStates` and the OFFLINE alert follow the stream.
    """

    def on_health(health: StreamHealth) -> None:
        board.report(
            health.provider,
            health.state,
            health.reason,
            at=health.at,
            last_success_at=health.last_success_at,
            failed=health.failed,
        )

    settings = StreamSettings(
        connect_timeout=provider.timeout_seconds, min_publish_interval=publish_interval
    )
    client = stream_class.from_provider(provider, interest, publish, settings, on_health=on_health)
    group.put(client)
    await client.run()


PRUNE_EVERY: Final = 3600 * SECONDS


async def prune_forever(storage: Storage, settings: Settings) -> None:
    """A minute after start and then hourly: delete raw ticks older than their retention, and
    the rows of every other growing table older than theirs (gateway.storage.RETENTION_RULES;
    a limit of 0 keeps all), in small batches; then give the freed pages back to the file
    system (incremental vacuum) so the database file shrinks."""
    await trio.sleep(60 * SECONDS)
    while True:
        await prune_all(storage, settings, utc_now())
        await trio.sleep(PRUNE_EVERY)


def schedule_book(settings: Settings, storage: Storage, registry: ProviderRegistry) -> ScheduleBook:
    """The schedule book: each slot stored (best-effort), an alert when a job falls behind."""
    store = ScheduleStore(storage)

    def record(run: ScheduleRun) -> None:
        store.record(
            run.task, run.interval_seconds, run.expected_at, run.actual_at, run.outcome, run.reason
        )

    async def alert(task: str, message: str) -> None:
        provider = task.split(":", 1)[1] if task.startswith("collector:") else None
        await registry.alerts.raise_alert("MEDIUM", "schedule_behind", message, provider)

    return ScheduleBook(tolerance=settings.schedule_tolerance, record=record, alert=alert)


async def serve_resiliently(
    app: GatewayApp,
    settings: Settings,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """hypercorn, restarted on the same port if it ever crashes.

    Hypercorn's per-connection code lets any exception that is not an OSError escape into its
    server nursery, ending every connection and the server; one malformed peer must not end the
    gateway. Open connections are lost in such a crash; the process, its collectors and its
    data are not. A failure before the first successful bind (port in use) is not retried.
    """
    urls: list[str] = []

    class Reporter:
        """Reports the first bind to the caller; a restart's bind is the same port."""

        def started(self, value: list[str]) -> None:
            if not urls:
                urls.extend(value)
                task_status.started(value)
            else:
                log.info("http.server_restarted", urls=value)

    restarts = 0
    while not shutdown.is_set():
        bound = replace(settings, port=int(urls[0].rsplit(":", 1)[1])) if urls else settings
        try:
            await serve_http(app, bound, shutdown.wait, task_status=Reporter())  # type: ignore[arg-type]
            return
        except Exception as exc:
            if not urls:
                raise
            restarts += 1
            log.error("http.server_crashed", error=repr(exc), restarts=restarts, exc_info=exc)
            await trio.sleep(min(2.0**restarts, 30.0))


async def _lead(
    storage: Storage,
    lease: LeaderLease,
    registry: ProviderRegistry,
    collect: Callable[[trio.Nursery], None],
    token: int,
) -> None:
    """The collector leader's work, under the lease (gateway/broker/lease.py): every commit
    carries the fencing token and checks the lease first, then health checks and collectors run.
    Once deposed, the term's queued rows meet that check and are dropped, and the replica
    writes as a follower again (unfenced: metering, provider records)."""
    storage.fence(token)
    storage.set_write_guard(lease.write_guard(token))
    registry.board.forget_mirrored()  # its own checks and collectors say from now on
    try:
        async with trio.open_nursery() as leading:
            await leading.start(registry.health.run)
            collect(leading)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(0.5):
            await storage.committed()
        storage.set_write_guard(None)
        storage.fence(None)


async def _run_collector(collector_class: type[Collector], context: CollectorContext) -> None:
    """A fresh collector instance per (re)start, so no state survives a crash."""
    await collector_class(context).run()


async def _freeze_model_when_loaded(scorer: SentimentScorer | None) -> None:
    """Once the sentiment model is loaded, freeze it too (gateway.gc_tuning.freeze_late_load)."""
    if scorer is not None:
        await scorer.loaded.wait()
        if scorer.available:
            freeze_late_load()


async def run_gateway(
    settings: Settings,
    providers: ProvidersFile,
    *,
    task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway that stops on SIGINT or SIGTERM (the CLI's entry point).

    First the soft descriptor limit is raised to the hard one (logged; never fatal), before the
    app derives its WebSocket cap from it (gateway.api.ws.descriptors).
    """
    import signal

    raise_descriptor_limit()
    gateway = Gateway(settings, providers)
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("gateway.signal", signal=signal.Signals(signum).name)
                    gateway.shutdown.set()
                    return

        nursery.start_soon(on_signals)
        running = await nursery.start(gateway.run)
        tune_gc()  # everything start-up built is permanent: see gc_tuning.py
        nursery.start_soon(_freeze_model_when_loaded, running.services.sentiment)
        task_status.started(running)
        await gateway.stopped.wait()
        nursery.cancel_scope.cancel()

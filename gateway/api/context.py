"""The services a GraphQL resolver may use, and the per-request context that carries them.

`Services` is built once by the supervisor; `RequestContext` is made for every HTTP request,
every WebSocket connection and every shared subscription group, so request-scoped things
(warnings for the response's `extensions`, the caller's identity) never leak between clients.
`RequestContext.principal` is the caller (gateway.api.auth.principal); None only in the
gateway's own contexts (the subscription hub's), where resolvers learn the caller from
`gateway.api.auth.principal.current_principal()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import __version__

if TYPE_CHECKING:
    from gateway.api.auth import AccessControl, Principal
    from gateway.api.shared_subscriptions import SubscriptionHub
    from gateway.api.ws import WebSocketStats
    from gateway.broker import Replication
    from gateway.chains.data import ChainData
    from gateway.config import ProvidersFile, Settings
    from gateway.market.cache import MarketCache
    from gateway.news.sentiment import SentimentScorer
    from gateway.news.service import NewsService
    from gateway.prices.history import CandleHistory
    from gateway.providers.registry import ProviderRegistry
    from gateway.providers.status import ProviderStatusBoard
    from gateway.pubsub import EventBus
    from gateway.sources.interest import SymbolInterest
    from gateway.sources.schedule import ScheduleBook
    from gateway.sources.stream_group import StreamGroup
    from gateway.storage import Storage

__all__ = ["MAX_WARNINGS", "RequestContext", "Services"]


@dataclass
class Services:
    """Everything long-lived that resolvers and endpoints read."""

    settings: Settings
    providers: ProvidersFile
    storage: Storage
    bus: EventBus
    status_board: ProviderStatusBoard
    ws_stats: WebSocketStats
    hub: SubscriptionHub | None = None
    registry: ProviderRegistry | None = None
    chains: ChainData | None = None  # JSON-RPC, chain heads and gas (gateway.chains)
    interest: SymbolInterest | None = None  # symbols live streams subscribe to
    streams: StreamGroup | None = None  # the live exchange streams
    market_cache: MarketCache | None = None  # TTL cache of market-wide answers
    history: CandleHistory | None = None  # candle series with gap filling (None: stored only)
    news: NewsService | None = None  # news, its sentiment and Fear & Greed (gateway.news)
    sentiment: SentimentScorer | None = None  # the sentiment model (gateway.news.sentiment)
    access: AccessControl | None = None  # set by GatewayApp when not given
    schedule: ScheduleBook | None = None  # collector schedule compliance (sources.schedule)
    replication: Replication | None = None  # Redis broker and collector lease (gateway.broker)
    version: str = __version__
    started_monotonic: float = field(default_factory=time.monotonic)
    ready: bool = False

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic


# The most warnings one context keeps (see RequestContext.warn).
MAX_WARNINGS = 32


@dataclass
class RequestContext:
    """What one request (or one shared subscription) sees as `info.context`."""

    services: Services
    warnings: list[dict[str, Any]] = field(default_factory=list)
    principal: Principal | None = None

    def warn(self, code: str, message: str, **fields: Any) -> None:
        """Note something the client should know that is not an error (shown in extensions).

        Bounded: one context lives as long as a WebSocket (every operation on it) or the whole
        process (the shared subscriptions' hub), so a warning already noted is not noted
        again, and past `MAX_WARNINGS` further ones are dropped rather than kept forever."""
        warning = {"code": code, "message": message, **fields}
        if len(self.warnings) < MAX_WARNINGS and warning not in self.warnings:
            self.warnings.append(warning)

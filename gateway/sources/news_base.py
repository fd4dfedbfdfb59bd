"""The collector classes of news and Fear & Greed sources: a polling loop for records that are
not price ticks, with conditional GET.

News and index values do not take the price path (`gateway.ingest`): a news collector hands
`NewsItem`s to the news ingest (`gateway.news.ingest`), a Fear & Greed collector hands
`FearGreedPoint`s to the index store, each through its own `publish`. `RecordCollector.run()` is
the loop of `gateway.sources.base.PollingLoop`, as for prices — poll, publish, sleep
`interval_seconds`, upstream trouble logged and retried with doubling backoff (`backoff_delay`),
anything else a bug that escapes to the supervisor — over any record type.

`fetch_raw` makes a request conditional: the `ETag`/`Last-Modified` of the previous answer go
back as `If-None-Match`/`If-Modified-Since`, and a 304 is "nothing new" (no body is read or
parsed). Validators are kept per path, in memory: a restart asks for everything once, which the
store's deduplication absorbs.

Must never import a source module, or anything above `gateway.upstream`; never publish records
of a 304 or of a failed request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Generic, Protocol, TypeVar

import structlog
import trio

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.news_models import FearGreedPoint, NewsItem
from gateway.sources.base import PollingLoop
from gateway.upstream import UpstreamClient
from gateway.upstream.client import NO_RETRY
from gateway.upstream.conditional import RawResponse, Validators

__all__ = [
    "FearGreedCollector",
    "NewsCollector",
    "RecordCollector",
    "RecordContext",
]

log = structlog.get_logger(__name__)

R = TypeVar("R")


@dataclass
class RecordContext(Generic[R]):
    """What a news or Fear & Greed collector is given (see `CollectorContext` for prices).

    `publish` hands a batch on; it may wait while its consumer is behind (backpressure), which
    delays the next poll and nothing else. `key` is the provider's API key (never log it).
    `newest` is the time of the newest record already stored for this provider (None: nothing
    is), so a collector can ask for exactly the history it lacks.
    """

    provider: ProviderConfig
    client: UpstreamClient
    publish: Callable[[Sequence[R]], Awaitable[None]]
    key: str | None = field(default=None, repr=False)  # a secret: kept out of repr()
    newest: datetime | None = None


class RecordCollector(PollingLoop[R]):
    """The polling loop over records of type `R`; a subclass sets `name`, implements `poll()`.

    Exposes `consecutive_failures`, `last_error`, `last_success_at` and `not_modified` (the
    number of polls answered 304) for health reporting and tests.
    """

    name: ClassVar[str]

    def __init__(self, ctx: RecordContext[R]) -> None:
        super().__init__()
        self.ctx = ctx
        self.not_modified = 0
        self._validators: dict[str, Validators] = {}

    @property
    def provider(self) -> ProviderConfig:
        return self.ctx.provider

    async def poll(self) -> list[R]:
        """One fetch + parse; raises `UpstreamError` subclasses on failure."""
        raise NotImplementedError

    async def publish(self, records: Sequence[R]) -> None:
        await self.ctx.publish(records)

    async def fetch_raw(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> RawResponse:
        """GET `path` once (the loop's backoff is the retry), conditional on the validators of
        the previous answer to the same path and parameters; remembers the new ones."""
        slot = path + "?" + "&".join(f"{k}={v}" for k, v in sorted((params or {}).items()))
        previous = self._validators.get(slot)
        sent = {**(headers or {}), **(previous.headers() if previous else {})}
        response = await self.ctx.client.request_raw(
            self.provider, path, params=params, headers=sent, key=self.ctx.key, retry=NO_RETRY
        )
        self._validators[slot] = response.validators(previous)
        if response.not_modified:
            self.not_modified += 1
        return response

    async def fetch_json(
        self,
        path: str,
        parse: Callable[[object], list[R]],
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[R]:
        """`fetch_raw`, then the JSON body through `parse`; [] for a 304. A body that is not
        JSON, or that `parse` rejects, is counted against the provider and raised."""
        response = await self.fetch_raw(path, params=params, headers=headers)
        if response.not_modified:
            return []
        return self.checked(lambda: parse(_json_body(response.body, self.provider.id, path)))

    def checked(self, parse: Callable[[], list[R]]) -> list[R]:
        """`parse()`, with an `UpstreamPayloadError` reported to the client (the provider's
        breaker and counters) before it is raised: the exchange itself counted as a success."""
        try:
            return parse()
        except UpstreamPayloadError as exc:
            self.ctx.client.report_payload_error(self.provider, exc)
            raise


def _json_body(body: bytes, provider: str, path: str) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamPayloadError(
            "response body is not valid JSON", provider=provider, endpoint=path
        ) from None


class NewsCollector(Protocol):
    """What the supervisor needs from a news collector class."""

    name: ClassVar[str]

    def __init__(self, ctx: RecordContext[NewsItem]) -> None: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever; reports started at once; only unexpected exceptions escape."""
        ...


class FearGreedCollector(Protocol):
    """What the supervisor needs from a Fear & Greed collector class."""

    name: ClassVar[str]

    def __init__(self, ctx: RecordContext[FearGreedPoint]) -> None: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever; reports started at once; only unexpected exceptions escape."""
        ...

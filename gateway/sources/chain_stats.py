"""Shared by the explorer sources: turning an explorer's figures into `NetworkStat` records,
and the one fetch path they all use.

`stats_from(section, metrics, …)` reads the named fields of one object (a JSON number or a
numeric string, finite; an absent or null field is left out, never 0) and names each record
by our metric name. A field that is present but not a number rejects the whole answer: an
explorer that sends garbage is a failure, not data. `fetch_parsed` GETs a path through the
shared client with no retry (the collector's backoff is the retry), parsing inside the attempt
so a wrong-shape body counts against the provider's breaker.

Must never import the store, the registry or anything above `gateway.sources`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.onchain_models import NetworkStat
from gateway.sources.base import number_or_none
from gateway.upstream.client import NO_RETRY, UpstreamClient

__all__ = ["fetch_parsed", "payload_fail", "stat_value", "stats_from"]

T = TypeVar("T")


def payload_fail(provider: str, endpoint: str) -> Callable[[str], UpstreamPayloadError]:
    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=endpoint)

    return fail


def stat_value(raw: Any, where: str, fail: Callable[[str], Exception]) -> float | None:
    """A figure as a float: None when absent/null; `fail` for anything not a finite number."""
    if raw is None:
        return None
    value = number_or_none(raw, strings=True)
    if value is None or not math.isfinite(value):
        raise fail(f"{where}: {raw!r:.60} is not a number")
    return value


def stats_from(
    section: Any,
    metrics: Mapping[str, tuple[str, float]],
    *,
    chain: str,
    provider: str,
    observed_at: datetime,
    fail: Callable[[str], Exception],
) -> list[NetworkStat]:
    """`metrics` maps an upstream field to (our metric name, a factor applied to the value)."""
    if not isinstance(section, dict):
        raise fail("expected an object of statistics")
    stats: list[NetworkStat] = []
    for field, (metric, factor) in metrics.items():
        value = stat_value(section.get(field), field, fail)
        if value is not None:
            stats.append(NetworkStat(chain, provider, metric, value * factor, observed_at))
    if not stats:
        raise fail("none of the expected statistics is in the answer")
    return stats


async def fetch_parsed(
    client: UpstreamClient,
    provider: ProviderConfig,
    path: str,
    parse: Callable[[Any], T],
    *,
    key: str | None,
    params: Mapping[str, str] | None = None,
    method: str = "GET",
    json: Any = None,
) -> T:
    """One request, parsed inside its attempt; no retry (the caller's backoff is the retry)."""
    result: T = await client.request_parsed(
        provider,
        path,
        parse,
        method=method,
        params=params,
        json=json,
        idempotent=True,
        key=key,
        retry=NO_RETRY,
    )
    return result

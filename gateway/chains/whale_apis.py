"""Whale transfers that keyed whale APIs report: Whale Alert and Bitquery.

Each feed's `round()` asks its API for the large transfers since it last asked (Whale Alert by
its cursor, starting an hour back: its free plan's window; Bitquery per EVM chain, from the
newest block time it has returned, starting `lookback` back), labels the ends the API left
unnamed from `labels.json`, stores them (`WhaleStore.record`: one row per transfer, whoever
reported it, the gateway's own detector included) and publishes the new ones. Their USD values
are the APIs' own (`price_usd` None), and `provider` says whose.

Must never publish a transfer twice as new, or ask an API more often than its entry's interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.chains.tokens import Labels
from gateway.chains.whales import WhaleSink
from gateway.config import ProviderConfig
from gateway.models import utc_now
from gateway.onchain_models import WhaleTransfer
from gateway.sources import bitquery, whale_alert
from gateway.upstream import UpstreamClient

__all__ = ["BitqueryFeed", "WhaleAlertFeed"]


def _labelled(transfers: Sequence[WhaleTransfer], labels: Labels) -> list[WhaleTransfer]:
    return [
        replace(
            t,
            from_label=t.from_label or labels.label(t.chain, t.from_address),
            to_label=t.to_label or labels.label(t.chain, t.to_address),
        )
        for t in transfers
    ]


class _Feed:
    def __init__(
        self,
        client: UpstreamClient,
        provider: ProviderConfig,
        key: str | None,
        labels: Labels,
        sink: WhaleSink,
        publish: Callable[[WhaleTransfer], None],
        *,
        min_usd: float,
    ) -> None:
        self.client = client
        self.provider = provider
        self.key = key
        self.labels = labels
        self.sink = sink
        self.publish = publish
        self.min_usd = min_usd
        self.published = 0
        self.reset()

    def reset(self) -> None:
        """Forget where the feed was (it starts again `lookback` back)."""

    async def _keep(self, transfers: Sequence[WhaleTransfer]) -> list[WhaleTransfer]:
        wanted = [t for t in transfers if t.amount_usd >= self.min_usd]
        fresh = await self.sink.record(_labelled(wanted, self.labels))
        for transfer in fresh:
            self.publish(transfer)
        self.published += len(fresh)
        return fresh


class WhaleAlertFeed(_Feed):
    """Whale Alert's `/transactions`, followed by cursor."""

    lookback = timedelta(hours=1)

    def reset(self) -> None:
        self.cursor: str | None = None
        self.start: datetime | None = None

    async def round(self) -> list[WhaleTransfer]:
        start = self.start or utc_now() - self.lookback
        page = await whale_alert.fetch_transactions(
            self.client,
            self.provider,
            self.key,
            min_usd=self.min_usd,
            start=start,
            cursor=self.cursor,
        )
        fresh = await self._keep(page.transfers)
        self.start = start
        self.cursor = page.cursor or self.cursor
        return fresh


class BitqueryFeed(_Feed):
    """Bitquery's EVM Transfers over the threshold, per chain, since the newest seen."""

    lookback = timedelta(minutes=30)

    def reset(self) -> None:
        self.since: dict[str, datetime] = {}

    async def round(self) -> list[WhaleTransfer]:
        fresh: list[WhaleTransfer] = []
        for chain in bitquery.NETWORKS:
            since = self.since.get(chain) or utc_now() - self.lookback
            transfers = await bitquery.fetch_transfers(
                self.client, self.provider, self.key, chain=chain, min_usd=self.min_usd,
                since=since,
            )  # fmt: skip
            fresh += await self._keep(transfers)
            self.since[chain] = max([since, *(t.at for t in transfers)])
        return fresh

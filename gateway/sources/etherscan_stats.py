"""The Etherscan family (Etherscan API v2, one key for every chain by `chainid`), keyed:
network statistics.

Documented at https://docs.etherscan.io (API v2: `GET /v2/api?chainid=1&module=…&action=…
&apikey=…`). Read here:

* `module=proxy&action=eth_blockNumber`: the node proxy's JSON-RPC answer,
  `{"jsonrpc": "2.0", "id": 83, "result": "0x129a7d4"}` -> `latest_block`;
* Ethereum only: `module=stats&action=ethsupply`, `{"status": "1", "message": "OK",
  "result": "120269533124500000000000000"}` (wei) -> `eth_supply` (ether), and
  `module=stats&action=nodecount`, `{"status": "1", "message": "OK", "result": {"UTCDate":
  "2024-03-25", "TotalNodeCount": "6253"}}` -> `node_count`.

Errors come with HTTP 200: `{"status": "0", "message": "NOTOK", "result": "Invalid API Key"}`
(a rate limit says "Max rate limit reached"), raised as UpstreamError (RATE_LIMITED for the
latter). Gas oracles are `gateway.sources.gas`'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from gateway.chain_models import EVM_CHAIN_IDS
from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamRateLimited
from gateway.models import utc_now
from gateway.onchain_models import NetworkStat
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stat_value
from gateway.upstream.client import UpstreamClient

__all__ = ["fetch_stats", "parse_block_number", "parse_stats_result"]

_WEI: Final = 10**18


def _checked_result(payload: Any, provider: str, endpoint: str) -> Any:
    fail = payload_fail(provider, endpoint)
    if not isinstance(payload, dict) or "result" not in payload:
        raise fail("expected an object with a 'result'")
    if payload.get("status") == "0":
        message = str(payload.get("result") or payload.get("message"))
        if "rate limit" in message.lower():
            raise UpstreamRateLimited(message, provider=provider, endpoint=endpoint)
        raise UpstreamError(message, provider=provider, endpoint=endpoint)
    return payload["result"]


def parse_block_number(
    payload: Any, observed_at: datetime, *, chain: str, provider: str
) -> list[NetworkStat]:
    """`latest_block` from the proxy's eth_blockNumber answer."""
    endpoint = "proxy/eth_blockNumber"
    result = _checked_result(payload, provider, endpoint)
    if not isinstance(result, str) or not result.startswith("0x"):
        raise payload_fail(provider, endpoint)(f"result {result!r:.40} is not a quantity")
    try:
        number = int(result, 16)
    except ValueError:
        raise payload_fail(provider, endpoint)(f"result {result!r:.40} is not hex") from None
    return [NetworkStat(chain, provider, "latest_block", float(number), observed_at)]


def parse_stats_result(
    payload: Any, observed_at: datetime, *, action: str, chain: str, provider: str
) -> list[NetworkStat]:
    """`eth_supply` (ether) from `ethsupply`, `node_count` from `nodecount`."""
    endpoint = f"stats/{action}"
    result = _checked_result(payload, provider, endpoint)
    fail = payload_fail(provider, endpoint)
    if action == "ethsupply":
        wei = stat_value(result, "result", fail)
        if wei is None:
            raise fail("no supply in the answer")
        return [NetworkStat(chain, provider, "eth_supply", wei / _WEI, observed_at)]
    if not isinstance(result, dict):
        raise fail("expected an object in 'result'")
    count = stat_value(result.get("TotalNodeCount"), "TotalNodeCount", fail)
    if count is None:
        raise fail("no TotalNodeCount in the answer")
    return [NetworkStat(chain, provider, "node_count", count, observed_at)]


async def fetch_stats(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[NetworkStat]:
    chain = provider.chain or "ethereum"
    chain_id = str(EVM_CHAIN_IDS.get(chain, 1))
    provider_id = provider.id
    stats: list[NetworkStat] = await fetch_parsed(
        client,
        provider,
        "",
        lambda p: parse_block_number(p, utc_now(), chain=chain, provider=provider_id),
        key=key,
        params={"chainid": chain_id, "module": "proxy", "action": "eth_blockNumber"},
    )
    if chain != "ethereum":
        return stats
    for action in ("ethsupply", "nodecount"):

        def parse(payload: Any, action: str = action) -> list[NetworkStat]:
            return parse_stats_result(
                payload, utc_now(), action=action, chain=chain, provider=provider_id
            )

        stats += await fetch_parsed(
            client,
            provider,
            "",
            parse,
            key=key,
            params={"chainid": chain_id, "module": "stats", "action": action},
        )
    return stats

"""JSON-RPC 2.0 for the RPC pools' nodes (Ethereum, BSC, Polygon): single calls and batches.

The API, for every caller (chain heads, gas, the whale detector)::

    rpc = JsonRpcClient(upstream_client, key_for=registry.secrets.key_for)

    number = await rpc.call(node, "eth_blockNumber", result=parse_block_number)
    block  = await rpc.get_block(node, 21_000_000, full_transactions=True)     # dict | None
    logs   = await rpc.get_logs(node, from_block=n, to_block=n, address=token, topics=[TRANSFER])
    values = await rpc.batch(node, [("eth_chainId", []), ("eth_blockNumber", [])])
    mixed  = await rpc.batch_settled(node, calls)       # a JsonRpcError in place of each failure
    value, served_by = await rpc.call_via(pool, "eth_getBlockByNumber", ["latest", False])
    values, served_by = await rpc.batch_via(pool, calls)     # one node answers the whole batch

`node` is a `ProviderConfig` (one member of a chain's RPC pool); `call_via` asks a `Pool`,
failing over between its nodes (a lagging node is skipped: the registry benches it). Every
request is one POST to the node's `base_url` through `UpstreamClient`, so the node's rate
limits (from providers.toml), its circuit breaker, the recorded attempts and the status board
apply as to any upstream. A batch of N calls is charged N requests against the node's limits
(public nodes count each call in a batch), and is split into requests of at most `max_batch`
calls.

Validation (a node that answers garbage is a failure, not data), inside the attempt so a bad
body counts against the node's breaker as `UpstreamPayloadError`: the answer must be a
JSON-RPC 2.0 response object (a list of them for a batch) whose `id` is the one sent (each id
of a batch exactly once), holding `result` or `error`; a `result` validator
(`gateway.sources.jsonrpc_results`: quantities, blocks, logs, fee history) then checks the value.
An `error` object becomes `JsonRpcError` (code, message; RATE_LIMITED for a node's limit), which
the pool fails over on but the breaker does not count: the node did answer.

Requests are reads, so they are marked idempotent (coalesced), but not retried on the same node
by default: failing over to the pool's next node is the faster retry.

Must never: return a value that failed validation, or send anything but a read-only method
(this module offers no eth_sendRawTransaction; keys never leave `UpstreamClient`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar, cast

from gateway.config import ProviderConfig
from gateway.errors import JsonRpcError, UpstreamPayloadError
from gateway.sources.jsonrpc_results import (
    FeeHistory,
    block_tag,
    parse_block,
    parse_block_number,
    parse_data,
    parse_fee_history,
    parse_logs,
    parse_quantity,
)
from gateway.upstream.client import NO_RETRY, RetryPolicy, UpstreamClient
from gateway.upstream.pool import Pool

__all__ = ["DEFAULT_MAX_BATCH", "Call", "JsonRpcClient", "KeyFor", "Validator"]

T = TypeVar("T")

Call = tuple[str, Sequence[Any]]
"""One JSON-RPC call: (method, params)."""
Validator = Callable[[Any], Any]
"""Checks a result and returns it (converted, e.g. a quantity to int); ValueError if bad."""
KeyFor = Callable[[ProviderConfig], str | None]

# Most public nodes accept batches of 50 or more (some cap them at 100, a few lower); a larger
# batch is split into several requests.
DEFAULT_MAX_BATCH: Final = 50


def _accept(result: Any) -> Any:
    return result


class JsonRpcClient:
    """JSON-RPC 2.0 calls to RPC nodes through the shared upstream client; see the module
    docstring. `key_for(provider)` gives a node's API key (Infura, Alchemy: a path segment)."""

    def __init__(
        self,
        client: UpstreamClient,
        key_for: KeyFor | None = None,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.client = client
        self.key_for: KeyFor = key_for or (lambda provider: None)
        self.max_batch = max_batch
        self.retry = retry

    # -- the generic calls --------------------------------------------------------------------

    async def call(
        self,
        provider: ProviderConfig,
        method: str,
        params: Sequence[Any] = (),
        *,
        result: Validator | None = None,
    ) -> Any:
        """`method(params)` on one node; its result, checked by `result` (if given).

        Raises `JsonRpcError` for an error object, `UpstreamPayloadError` for an answer that is
        not a valid response (or a result `result` refuses), and the client's other
        `UpstreamError`s (HTTP status, timeout, open circuit, rate limited, unconfigured).
        """
        validate = result or _accept
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        provider_id = provider.id

        def parse(payload: Any) -> Any:
            outcome = _settle(_response(payload, 1, provider_id), method, validate, provider_id)
            if isinstance(outcome, JsonRpcError):
                raise outcome
            return outcome

        return await self._post(provider, body, parse)

    async def batch(
        self,
        provider: ProviderConfig,
        calls: Sequence[Call],
        *,
        results: Sequence[Validator | None] | None = None,
    ) -> list[Any]:
        """Every call's result, in the order given; the first error object raises
        `JsonRpcError` (so a pool fails over and the caller never sees half a batch)."""
        settled = await self.batch_settled(provider, calls, results=results)
        for outcome in settled:
            if isinstance(outcome, JsonRpcError):
                raise outcome
        return settled

    async def batch_settled(
        self,
        provider: ProviderConfig,
        calls: Sequence[Call],
        *,
        results: Sequence[Validator | None] | None = None,
    ) -> list[Any]:
        """Every call's result in order, or the `JsonRpcError` its error object became.

        `results[i]` validates call i's result. A malformed response fails the whole request
        (`UpstreamPayloadError`), as does an error object answered for the batch as a whole
        (a node that takes no batches): `JsonRpcError`.
        """
        if results is not None and len(results) != len(calls):
            raise ValueError("results must hold one validator (or None) per call")
        validators = [v or _accept for v in (results or [None] * len(calls))]
        settled: list[Any] = []
        for start in range(0, len(calls), self.max_batch):
            chunk = calls[start : start + self.max_batch]
            checks = validators[start : start + self.max_batch]
            settled.extend(await self._batch_chunk(provider, chunk, checks))
        return settled

    async def call_via(
        self,
        pool: Pool,
        method: str,
        params: Sequence[Any] = (),
        *,
        result: Validator | None = None,
    ) -> tuple[Any, str]:
        """`call` on the pool's nodes in the pool's order, failing over on any UpstreamError;
        the result and the id of the node that gave it. `PoolExhausted` when every node failed."""
        served: list[str] = []

        async def one(provider: ProviderConfig) -> Any:
            value = await self.call(provider, method, params, result=result)
            served.append(provider.id)
            return value

        value = await pool.call(one)
        return value, served[-1]

    async def batch_via(
        self,
        pool: Pool,
        calls: Sequence[Call],
        *,
        results: Sequence[Validator | None] | None = None,
    ) -> tuple[list[Any], str]:
        """`batch` on one node of the pool (every call of the batch answered by the same node,
        so they describe the same chain state), failing over to the next node on any
        UpstreamError (an error object included); the results and the node's id."""
        served: list[str] = []

        async def one(provider: ProviderConfig) -> list[Any]:
            values = await self.batch(provider, calls, results=results)
            served.append(provider.id)
            return values

        values = await pool.call(one)
        return values, served[-1]

    # -- the methods the gateway reads ------------------------------------------------------

    async def block_number(self, provider: ProviderConfig) -> int:
        """eth_blockNumber: the node's head block."""
        number: int = await self.call(provider, "eth_blockNumber", result=parse_block_number)
        return number

    async def chain_id(self, provider: ProviderConfig) -> int:
        """eth_chainId: which chain the node serves (1 Ethereum, 56 BSC, 137 Polygon)."""
        chain: int = await self.call(provider, "eth_chainId", result=parse_quantity)
        return chain

    async def gas_price(self, provider: ProviderConfig) -> int:
        """eth_gasPrice, in wei."""
        price: int = await self.call(provider, "eth_gasPrice", result=parse_quantity)
        return price

    async def get_block(
        self, provider: ProviderConfig, block: int | str, *, full_transactions: bool = False
    ) -> dict[str, Any] | None:
        """eth_getBlockByNumber: the block (None if the node has no such block yet), with
        transaction hashes, or full transaction objects with `full_transactions`."""

        def check(value: Any) -> dict[str, Any] | None:
            return parse_block(value, full_transactions=full_transactions)

        found = await self.call(
            provider, "eth_getBlockByNumber", [block_tag(block), full_transactions], result=check
        )
        return cast("dict[str, Any] | None", found)

    async def get_logs(
        self,
        provider: ProviderConfig,
        *,
        from_block: int | str | None = None,
        to_block: int | str | None = None,
        block_hash: str | None = None,
        address: str | Sequence[str] | None = None,
        topics: Sequence[str | Sequence[str] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """eth_getLogs with a filter: a block range or one `block_hash`, contract `address`(es)
        and `topics` (position by position: a topic, any of several, or None for any).
        Nodes cap ranges and result sizes (an error object, e.g. -32005): ask small ranges."""
        if block_hash is not None and (from_block is not None or to_block is not None):
            raise ValueError("give either block_hash or a block range, not both")
        query: dict[str, Any] = {}
        if block_hash is not None:
            query["blockHash"] = parse_data(block_hash, "block hash", 32)
        if from_block is not None:
            query["fromBlock"] = block_tag(from_block)
        if to_block is not None:
            query["toBlock"] = block_tag(to_block)
        if address is not None:
            query["address"] = address if isinstance(address, str) else list(address)
        if topics is not None:
            query["topics"] = [t if t is None or isinstance(t, str) else list(t) for t in topics]
        logs: list[dict[str, Any]] = await self.call(
            provider, "eth_getLogs", [query], result=parse_logs
        )
        return logs

    async def fee_history(
        self,
        provider: ProviderConfig,
        blocks: int,
        percentiles: Sequence[float],
        newest: int | str = "latest",
    ) -> FeeHistory:
        """eth_feeHistory over the `blocks` blocks up to `newest`, with the priority fees paid
        at each of `percentiles` (ascending, 0-100) of every block's gas."""
        wanted = list(percentiles)

        def check(value: Any) -> FeeHistory:
            return parse_fee_history(value, wanted)

        history: FeeHistory = await self.call(
            provider,
            "eth_feeHistory",
            [hex(blocks), block_tag(newest), wanted],
            result=check,
        )
        return history

    # -- the wire -----------------------------------------------------------------------------

    async def _batch_chunk(
        self, provider: ProviderConfig, calls: Sequence[Call], checks: Sequence[Validator]
    ) -> list[Any]:
        if not calls:
            return []
        # The client charges the request itself; the other calls of the batch are charged here.
        limiter = self.client.limiter_for(provider)
        for _ in range(len(calls) - 1):
            await limiter.acquire()
        body = [
            {"jsonrpc": "2.0", "id": n, "method": method, "params": list(params)}
            for n, (method, params) in enumerate(calls, start=1)
        ]
        provider_id = provider.id

        def parse(payload: Any) -> list[Any]:
            by_id = _batch_responses(payload, len(calls), provider_id)
            return [
                _settle(by_id[n], method, check, provider_id)
                for n, ((method, _), check) in enumerate(zip(calls, checks, strict=True), start=1)
            ]

        settled: list[Any] = await self._post(provider, body, parse)
        return settled

    async def _post(self, provider: ProviderConfig, body: Any, parse: Callable[[Any], T]) -> T:
        return await self.client.request_parsed(
            provider,
            "",
            parse,
            method="POST",
            json=body,
            idempotent=True,
            key=self.key_for(provider),
            retry=self.retry,
        )


def _response(payload: Any, expected_id: int, provider: str) -> dict[str, Any]:
    """One response object, checked against the id sent."""
    if not isinstance(payload, dict):
        raise UpstreamPayloadError("JSON-RPC answer is not a response object", provider=provider)
    if payload.get("jsonrpc") != "2.0":
        raise UpstreamPayloadError("JSON-RPC answer is not version 2.0", provider=provider)
    if "error" in payload and payload.get("id") is None:
        return payload  # an error about the request as a whole (parse error, invalid request)
    if payload.get("id") != expected_id:
        raise UpstreamPayloadError(
            f"JSON-RPC answer id {payload.get('id')!r:.40} is not the id sent ({expected_id})",
            provider=provider,
        )
    return payload


def _batch_responses(payload: Any, count: int, provider: str) -> dict[int, dict[str, Any]]:
    """The responses of a batch by id: each id sent exactly once, nothing else."""
    if isinstance(payload, dict) and "error" in payload:
        # A node that takes no batches answers one error for the whole request.
        _settle(_response(payload, 1, provider), "batch", _accept, provider, raise_error=True)
    if not isinstance(payload, list):
        raise UpstreamPayloadError("JSON-RPC batch answer is not a list", provider=provider)
    by_id: dict[int, dict[str, Any]] = {}
    for item in payload:
        if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
            raise UpstreamPayloadError(
                "JSON-RPC batch answer holds something that is not a 2.0 response",
                provider=provider,
            )
        number = item.get("id")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= count:
            raise UpstreamPayloadError(
                f"JSON-RPC batch answer id {number!r:.40} was not sent", provider=provider
            )
        if number in by_id:
            raise UpstreamPayloadError(
                f"JSON-RPC batch answer holds id {number} twice", provider=provider
            )
        by_id[number] = item
    if len(by_id) != count:
        missing = sorted(set(range(1, count + 1)) - set(by_id))
        raise UpstreamPayloadError(
            f"JSON-RPC batch answer lacks ids {missing[:10]}", provider=provider
        )
    return by_id


def _settle(
    response: dict[str, Any],
    method: str,
    validate: Validator,
    provider: str,
    *,
    raise_error: bool = False,
) -> Any:
    """The validated result of one response, or the JsonRpcError its error object is."""
    if "error" in response:
        error = response["error"]
        if not isinstance(error, dict):
            raise UpstreamPayloadError(
                f"{method}: JSON-RPC error member is not an object", provider=provider
            )
        code, message = error.get("code"), error.get("message")
        if isinstance(code, bool) or not isinstance(code, int) or not isinstance(message, str):
            raise UpstreamPayloadError(
                f"{method}: JSON-RPC error object lacks an integer code or a message",
                provider=provider,
            )
        failure = JsonRpcError(
            code, message[:500], provider=provider, method=method, data=error.get("data")
        )
        if raise_error:
            raise failure
        return failure
    if "result" not in response:
        raise UpstreamPayloadError(
            f"{method}: JSON-RPC answer has neither result nor error", provider=provider
        )
    try:
        return validate(response["result"])
    except ValueError as exc:
        raise UpstreamPayloadError(f"{method}: {exc}", provider=provider) from None

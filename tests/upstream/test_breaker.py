"""CircuitBreaker: the state machine, the single half-open probe, and what counts as a failure.

The state machine is tested against an injected clock (plain functions, no sleeping) and under
`autojump_clock`; what the client reports to it (4xx and 429 are not failures, 5xx, timeouts and
bad bodies are) is tested through `UpstreamClient` with `httpx.MockTransport`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio

from gateway.config import BreakerSpec, ProviderConfig
from gateway.errors import (
    CircuitOpenError,
    UpstreamError,
    UpstreamPayloadError,
    UpstreamRateLimited,
)
from gateway.upstream import NO_RETRY, UpstreamClient
from gateway.upstream import breaker as breaker_module
from gateway.upstream.breaker import BreakerState, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    threshold: int = 5, cooldown: float = 60.0
) -> tuple[CircuitBreaker, FakeClock, list[tuple[BreakerState, BreakerState]]]:
    clock = FakeClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        BreakerSpec(failure_threshold=threshold, cooldown_seconds=cooldown),
        provider_id="p",
        on_change=lambda old, new: changes.append((old, new)),
        clock=clock,
    )
    return breaker, clock, changes


def test_all_is_explicit() -> None:
    for name in breaker_module.__all__:
        assert hasattr(breaker_module, name), name


def test_defaults_are_five_failures_and_sixty_seconds() -> None:
    breaker = CircuitBreaker()
    assert breaker.spec == BreakerSpec(failure_threshold=5, cooldown_seconds=60.0)
    assert breaker.state is CLOSED


def test_opens_after_consecutive_failures_only() -> None:
    breaker, _, changes = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # not consecutive any more
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED and breaker.allow()
    assert breaker.consecutive_failures == 2
    breaker.record_failure()
    assert breaker.state is OPEN
    assert changes == [(CLOSED, OPEN)]
    assert not breaker.allow()
    assert breaker.opened_count == 1


def test_half_open_after_cooldown_lets_exactly_one_probe_then_closes() -> None:
    breaker, clock, changes = make(threshold=1, cooldown=60)
    breaker.record_failure()
    assert breaker.state is OPEN
    clock.now += 59.9
    assert breaker.state is OPEN
    assert breaker.retry_in() == pytest.approx(0.1)
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is HALF_OPEN  # just reading it reports the new state
    assert breaker.would_allow()
    assert breaker.allow()  # the probe
    assert not breaker.would_allow()
    assert not breaker.allow()  # concurrent callers are refused while it is in flight
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.allow() and breaker.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_failed_probe_reopens_with_a_new_cooldown() -> None:
    breaker, clock, changes = make(threshold=2, cooldown=30)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    clock.now += 29
    assert breaker.state is OPEN  # the cool-down restarted at the probe's failure
    clock.now += 1
    assert breaker.state is HALF_OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]
    assert breaker.opened_count == 2


def test_release_frees_the_probe_slot_without_a_verdict() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=10)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.release()  # the probe got a 404 or was cancelled
    assert breaker.state is HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_a_probe_that_never_reports_does_not_wedge_the_breaker() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=10)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_results_while_open_are_ignored() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=10)
    breaker.record_failure()
    breaker.record_success()  # a straggler admitted before the circuit opened
    assert breaker.state is OPEN
    breaker.record_failure()
    clock.now += 10
    assert breaker.state is HALF_OPEN  # the cool-down was not extended either


def test_payload_failure_revokes_the_exchange_success() -> None:
    """200 with garbage, reported after the fact, still opens the circuit: success+revoke
    must not reset the count each time."""
    breaker, clock, _ = make(threshold=3)
    for _ in range(2):
        breaker.record_success()
        breaker.record_payload_failure()
    assert breaker.consecutive_failures == 2
    breaker.record_success()
    breaker.record_payload_failure()
    assert breaker.state is OPEN
    # A probe answered 200 whose body then fails to parse re-opens the circuit.
    clock.now += 60
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    breaker.record_payload_failure()
    assert breaker.state is OPEN
    # With no success to revoke it is an ordinary failure.
    other, _, _ = make(threshold=1)
    other.record_payload_failure()
    assert other.state is OPEN


def test_reset_forces_closed() -> None:
    breaker, _, changes = make(threshold=1)
    breaker.record_failure()
    breaker.reset()
    assert breaker.state is CLOSED and breaker.allow()
    assert changes[-1] == (OPEN, CLOSED)


def test_bad_specs_are_rejected() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(BreakerSpec(failure_threshold=0))
    with pytest.raises(ValueError):
        CircuitBreaker(BreakerSpec(cooldown_seconds=-1))


async def test_trio_clock_by_default(autojump_clock: trio.abc.Clock) -> None:
    breaker = CircuitBreaker(BreakerSpec(failure_threshold=1, cooldown_seconds=60))
    breaker.record_failure()
    await trio.sleep(59)
    assert breaker.state is OPEN
    await trio.sleep(1)
    assert breaker.state is HALF_OPEN


# -- what the client reports ------------------------------------------------------------------

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]
PROVIDER = ProviderConfig(
    id="prov",
    name="prov",
    categories=("MARKET_DATA",),
    base_url="https://api.example.test",
    timeout_seconds=1.0,
    breaker=BreakerSpec(failure_threshold=3, cooldown_seconds=60.0),
)


def answering(status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (400, None, UpstreamError),
        (401, None, UpstreamError),
        (404, None, UpstreamError),
        (429, None, UpstreamRateLimited),
        (429, {"Retry-After": "3600"}, UpstreamRateLimited),
        (503, {"Retry-After": "3600"}, UpstreamRateLimited),
        (418, {"Retry-After": "3600"}, UpstreamRateLimited),
    ],
)
async def test_client_errors_and_rate_limits_do_not_open_the_circuit(
    status: int, headers: dict[str, str] | None, error: type[UpstreamError]
) -> None:
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return httpx.Response(status, content=b"{}", headers=headers)

    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        for _ in range(10):
            with pytest.raises(error):
                await client.request_json(PROVIDER, "/x", retry=NO_RETRY)
        breaker = client.breaker("prov")
        assert breaker is not None
        assert breaker.state is CLOSED
        assert breaker.consecutive_failures == 0
    assert sent == 10


async def slow(request: httpx.Request) -> httpx.Response:
    await trio.sleep(10)
    return httpx.Response(200, json={})


async def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


@pytest.mark.parametrize(
    "handler",
    [
        answering(500),
        answering(502, b"bad gateway"),
        answering(503),  # without Retry-After it is a server failure, not a rate limit
        answering(200, b"<html>not json"),
        slow,
        refused,
    ],
    ids=["500", "502", "503", "malformed", "timeout", "transport"],
)
async def test_server_failures_open_the_circuit(
    handler: Handler, autojump_clock: trio.abc.Clock
) -> None:
    changes: list[tuple[str, BreakerState, BreakerState]] = []
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        client.on_breaker_change = lambda *change: changes.append(change)
        for _ in range(3):
            with pytest.raises(UpstreamError) as info:
                await client.request_json(PROVIDER, "/x", retry=NO_RETRY)
            assert not isinstance(info.value, CircuitOpenError)
        attempts = len(client.attempts)
        with pytest.raises(CircuitOpenError) as info:
            await client.request_json(PROVIDER, "/x")
        assert len(client.attempts) == attempts  # refused without a request
        assert info.value.provider == "prov"
        assert info.value.retry_in == pytest.approx(60.0, abs=1)
        assert info.value.code == "UPSTREAM_UNAVAILABLE"
        assert info.value.extensions()["circuitOpen"] is True
    assert changes == [("prov", CLOSED, OPEN)]


async def test_wrong_shape_counts_through_request_parsed_and_report(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with UpstreamClient(transport=httpx.MockTransport(answering(200, b"[1]"))) as client:

        def parse(payload: Any) -> dict[str, Any]:
            if not isinstance(payload, dict):
                raise UpstreamPayloadError("expected an object", provider="prov")
            return payload

        with pytest.raises(UpstreamPayloadError):
            await client.request_parsed(PROVIDER, "/x", parse)
        breaker = client.breaker_for(PROVIDER)
        assert breaker.consecutive_failures == 1
        payload = await client.get_json(PROVIDER, "/x")
        with pytest.raises(UpstreamPayloadError) as info:
            parse(payload)
        client.report_payload_error(PROVIDER, info.value)
        assert breaker.consecutive_failures == 2
        client.report_payload_error("prov", info.value)  # by id, as collectors may
        assert breaker.state is OPEN
        assert client.payload_errors["prov"] == 3
        # The HTTP exchanges themselves were fine, and are recorded as such.
        assert [a.error_type for a in client.attempts] == [None, None]


async def test_half_open_probe_through_the_client(autojump_clock: trio.abc.Clock) -> None:
    answers = [500, 500, 500, 200]
    gate = trio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        if status == 200:
            await gate.wait()
        return httpx.Response(status, json={"ok": True})

    provider = replace(PROVIDER, breaker=BreakerSpec(failure_threshold=3, cooldown_seconds=30))
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        for _ in range(3):
            with pytest.raises(UpstreamError):
                await client.get_json(provider, "/x")
        await trio.sleep(30)
        breaker = client.breaker_for(provider)
        assert breaker.state is HALF_OPEN
        results: list[Any] = []

        async def probe() -> None:
            results.append(await client.get_json(provider, "/x"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            await trio.sleep(0.1)  # the probe is in flight
            with pytest.raises(CircuitOpenError):
                await client.get_json(provider, "/other")  # a different request: refused
            gate.set()
        assert results == [{"ok": True}]
        assert breaker.state is CLOSED

"""The status board: states derived from requests, and states reported by a stream."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.config import ProviderConfig, ProvidersFile
from gateway.models import utc_now
from gateway.providers.status import ProviderStatusBoard


def _board(
    changes: list[tuple[str, str, str, str]], *, enabled: bool = True
) -> ProviderStatusBoard:
    entry = ProviderConfig(
        id="kraken-stream",
        name="Kraken stream",
        categories=("MARKET_DATA",),
        base_url="wss://ws.kraken.com/v2",
        enabled=enabled,
        disabled_reason=None if enabled else "off",
    )
    return ProviderStatusBoard(
        ProvidersFile((entry,)), on_change=lambda *change: changes.append(change)
    )


def test_a_reported_state_stands_until_the_next_report() -> None:
    changes: list[tuple[str, str, str, str]] = []
    board = _board(changes)
    record = board.records["kraken-stream"]
    now = utc_now()
    board.report("kraken-stream", "ONLINE", "connected", at=now, last_success_at=now)
    board.report("kraken-stream", "ONLINE", "connected", at=now, last_success_at=now)  # refresh
    assert board.state("kraken-stream") == "ONLINE"
    assert (record.successes, record.failures, record.reason) == (1, 0, "connected")
    later = now + timedelta(seconds=31)
    board.report(
        "kraken-stream",
        "DEGRADED",
        "silent for 30 s, reconnecting",
        at=later,
        last_success_at=now,
        failed=True,
    )
    assert board.state("kraken-stream") == "DEGRADED"
    assert record.last_error == record.reason == "silent for 30 s, reconnecting"
    assert record.last_checked_at == later and record.last_success_at == now
    board.report("kraken-stream", "DEGRADED", "connect failed: 503", at=later, failed=True)
    assert record.reason == "connect failed: 503" and record.failures == 2
    board.report("kraken-stream", "OFFLINE", "connect failed: 503 (3 in a row)", at=later)
    # A failed request to the same provider does not override what the stream reported.
    board.record("kraken-stream", ok=False, at=later, latency_ms=None, error="timeout")
    assert board.state("kraken-stream") == "OFFLINE"
    assert changes == [
        ("kraken-stream", "UNKNOWN", "ONLINE", "connected"),
        ("kraken-stream", "ONLINE", "DEGRADED", "silent for 30 s, reconnecting"),
        ("kraken-stream", "DEGRADED", "OFFLINE", "connect failed: 503 (3 in a row)"),
    ]
    assert board.counts()["offline"] == 1


def test_reports_are_checked_and_a_disabled_provider_stays_unconfigured() -> None:
    changes: list[tuple[str, str, str, str]] = []
    board = _board(changes, enabled=False)
    board.report("kraken-stream", "ONLINE", "connected", at=utc_now())
    assert board.state("kraken-stream") == "UNCONFIGURED" and changes == []
    board.report("nobody", "ONLINE", "connected", at=utc_now())  # unknown providers: ignored
    with pytest.raises(ValueError, match="UNKNOWN"):
        board.report("kraken-stream", "UNKNOWN", "?", at=utc_now())


def test_requests_record_their_last_success_and_the_reason_of_a_change() -> None:
    changes: list[tuple[str, str, str, str]] = []
    board = _board(changes)
    record = board.records["kraken-stream"]
    at = utc_now()
    board.record("kraken-stream", ok=True, at=at, latency_ms=20)
    assert record.last_success_at == at and record.reason == "requests succeed"
    board.record("kraken-stream", ok=False, at=at, latency_ms=None, error="http_error")
    assert record.reason == "http_error" and record.last_success_at == at


def _many(*ids: str) -> ProviderStatusBoard:
    return ProviderStatusBoard(
        ProvidersFile(
            tuple(
                ProviderConfig(
                    id=i, name=i, categories=("MARKET_DATA",), base_url="http://127.0.0.1:9"
                )
                for i in ids
            )
        )
    )


def test_no_upstream_reachable_is_said_once_in_one_line() -> None:
    """Issue 13: with no network, one `upstream.none_reachable` line, not a provider count."""
    from structlog.testing import capture_logs

    board = _many("a", "b", "c", "d")
    now = utc_now()
    with capture_logs() as logs:
        board.record("a", ok=False, at=now, latency_ms=None, error="transport_error")
        board.record("b", ok=False, at=now, latency_ms=None, error="timeout")
        assert not board.none_reachable()  # two tried out of four: too early to say
        board.record("c", ok=False, at=now, latency_ms=None, error="transport_error")
        for _ in range(3):
            board.record("a", ok=False, at=now, latency_ms=None, error="transport_error")
        assert board.none_reachable() and not board.answered_since_start()
        board.record("d", ok=False, at=now, latency_ms=None, error="http_error")  # an answer
        assert not board.none_reachable() and board.answered_since_start()
    events = [entry["event"] for entry in logs]
    assert events.count("upstream.none_reachable") == 1
    assert events.count("upstream.reachable_again") == 1
    (line,) = [entry for entry in logs if entry["event"] == "upstream.none_reachable"]
    assert "Check the network" in line["message"] and line["tried"] == ["a", "b", "c"]


def test_an_http_error_is_an_answer_not_an_unreachable_upstream() -> None:
    board = _many("a", "b", "c")
    now = utc_now()
    for provider in ("a", "b", "c"):
        board.record(provider, ok=False, at=now, latency_ms=5.0, error="http_error")
    assert not board.none_reachable() and board.answered_since_start()

"""Live streams: symbol interest, and the shared StreamClient machinery against the simulator.

Exchange specifics (message shapes, parsers) are in tests/test_stream_<exchange>.py; here the
Kraken dialect stands in for any exchange. Time-only behaviour (backoff) runs on the
autojump clock with a scripted connection; everything with a socket runs on loopback under
`trio.fail_after`, with timeouts in tenths of a second.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_websocket import CloseReason, ConnectionClosed, ConnectionRejected

from gateway.config import ProviderConfig, ProvidersFile
from gateway.errors import BadUserInput, UpstreamPayloadError
from gateway.providers.status import ProviderStatusBoard
from gateway.sources.base import epoch_millis
from gateway.sources.binance_stream import BinanceStream, parse_binance_message
from gateway.sources.coinbase_stream import CoinbaseStream, parse_coinbase_message
from gateway.sources.interest import InterestFull, SymbolInterest
from gateway.sources.kraken_stream import KrakenStream, parse_kraken_message
from gateway.sources.registry import STREAMS, stream_for
from gateway.sources.stream_group import StreamGroup
from gateway.sources.stream_parsing import Frame, decode_json, rfc3339
from gateway.sources.stream_state import (
    HealthReport,
    StreamHealth,
    StreamSettings,
    reconnect_delay,
)
from tests.simulator.ws import TickRecorder, WsSimulator, run_ws_simulator

FAST = StreamSettings(
    connect_timeout=2,
    close_timeout=0.5,
    silence_timeout=5,
    backoff_initial=0.05,
    backoff_max=0.2,
    healthy_after=60,
    resubscribe_delay=0.01,
    keepalive_interval=5,
    min_publish_interval=0,
)


@asynccontextmanager
async def streaming(
    simulator: WsSimulator,
    interest: SymbolInterest,
    settings: StreamSettings = FAST,
    on_health: HealthReport | None = None,
) -> AsyncIterator[tuple[KrakenStream, TickRecorder]]:
    """A Kraken stream client running against the simulator for the block."""
    recorder = TickRecorder()
    client = KrakenStream(
        interest,
        recorder.publish,
        url=simulator.url("kraken"),
        settings=settings,
        on_health=on_health,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        yield client, recorder
        nursery.cancel_scope.cancel()


# -- symbol interest -----------------------------------------------------------------------


def test_interest_is_the_union_of_configured_and_reference_counted_holds() -> None:
    interest = SymbolInterest(["btc", " eth ", ""])
    assert interest.symbols == {"BTC", "ETH"} and interest.version == 0
    assert interest.acquire(["sol", "SOL", "btc"]) == ("SOL", "BTC")
    assert interest.symbols == {"BTC", "ETH", "SOL"} and interest.version == 1
    interest.acquire(["SOL"])
    assert interest.holders("sol") == 2 and interest.version == 1  # no change of the union
    interest.release(["SOL"])
    assert "SOL" in interest and interest.version == 1
    interest.release(["SOL", "BTC", "DOGE"])  # BTC stays configured; DOGE was never held
    assert interest.symbols == {"BTC", "ETH"} and interest.version == 2
    assert len(interest) == 2 and 42 not in interest


async def test_a_hold_releases_when_its_block_ends_however_it_ends() -> None:
    interest = SymbolInterest()
    with interest.hold(["BTC"]):
        assert interest.symbols == {"BTC"}
    with pytest.raises(RuntimeError, match="boom"):
        async with interest.hold("ETH") as hold:
            assert hold.symbols == ("ETH",) and interest.symbols == {"ETH"}
            raise RuntimeError("boom")
    assert interest.symbols == frozenset()
    hold = interest.hold(["SOL"])
    with hold, pytest.raises(RuntimeError, match="twice"):
        hold.__enter__()


def test_holds_are_bounded_and_a_refused_hold_keeps_nothing() -> None:
    interest = SymbolInterest(["BTC"], max_symbols=2)
    interest.acquire(["ETH"])
    with pytest.raises(InterestFull) as refused:
        interest.acquire(["SOL", "ADA"])
    assert isinstance(refused.value, BadUserInput) and refused.value.limit == 2
    assert interest.symbols == {"BTC", "ETH"} and interest.version == 1
    interest.acquire(["ETH", "SOL"])  # ETH is already held: one new symbol fits
    assert interest.symbols == {"BTC", "ETH", "SOL"}
    with pytest.raises(ValueError):
        SymbolInterest(max_symbols=0)


async def test_waiters_wake_on_a_change_and_changes_coalesce() -> None:
    interest = SymbolInterest(["BTC"])
    seen: list[frozenset[str]] = []
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for symbols in interest.changes():
                    seen.append(symbols)
                    if "SOL" in symbols:
                        return
                    await trio.sleep(0.05)  # busy: the next two changes arrive meanwhile

            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [{"BTC"}]
            interest.acquire(["ETH"])
            interest.acquire(["SOL"])
            assert await interest.wait_changed(0) == 2  # at once: it already differs
    assert seen == [{"BTC"}, {"BTC", "ETH", "SOL"}]


# -- pure helpers ----------------------------------------------------------------------------


def test_reconnect_delay_doubles_and_caps() -> None:
    assert [reconnect_delay(n, 0.5, 5) for n in range(1, 8)] == [0.5, 1, 2, 4, 5, 5, 5]
    assert reconnect_delay(0, 0.5, 5) == 0.5
    assert reconnect_delay(10_000, 1, 60) == 60  # no overflow after a long outage


def test_time_and_json_helpers() -> None:
    assert rfc3339("2022-10-19T23:28:22.061769Z") == datetime(
        2022, 10, 19, 23, 28, 22, 61769, tzinfo=UTC
    )
    assert rfc3339("2023-09-25T09:04:31.742648123Z") == datetime(
        2023, 9, 25, 9, 4, 31, 742648, tzinfo=UTC
    )
    assert rfc3339("2024-01-01T02:00:00+02:00") == datetime(2024, 1, 1, tzinfo=UTC)
    for not_a_time in ("yesterday", "2022-13-40T00:00:00Z", "2022-10-19 23:28", 17, None):
        assert rfc3339(not_a_time) is None
    assert epoch_millis(1672515782136) == datetime(2022, 12, 31, 19, 43, 2, 136000, tzinfo=UTC)
    for not_millis in (0, -5, "1672515782136", True, float("inf"), 10**20):
        assert epoch_millis(not_millis) is None
    assert decode_json(b'{"a": 1}', "p", "e") == {"a": 1}
    for not_json in ("{", "NaN", '{"x": Infinity}', b"\xff"):
        with pytest.raises(UpstreamPayloadError):
            decode_json(not_json, "p", "e")


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="silence_timeout"):
        StreamSettings(silence_timeout=0)
    with pytest.raises(ValueError, match="backoff_max"):
        StreamSettings(backoff_initial=5, backoff_max=1)
    with pytest.raises(ValueError, match="offline_after"):
        StreamSettings(offline_after=0)
    with pytest.raises(ValueError, match="ws:// or wss://"):
        KrakenStream(SymbolInterest(), TickRecorder().publish, url="https://ws.kraken.com/v2")


# Keys the three dialects use, so the fuzz reaches the interesting branches.
_FUZZ_KEYS = (
    *("stream", "data", "e", "E", "s", "c", "o", "q", "id", "result", "error", "code", "msg"),
    *("type", "product_id", "price", "time", "open_24h", "reason", "message"),
    *("channel", "method", "success", "symbol", "last", "volume", "vwap", "change_pct"),
    *("timestamp", "req_id"),
)
_FUZZ_WORDS = (
    *("24hrMiniTicker", "serverShutdown", "btcusdt@miniTicker", "BTCUSDT", "67187.34", "-1"),
    *("ticker", "heartbeat", "error", "subscriptions", "BTC-USD", "2022-10-19T23:28:22Z"),
    *("snapshot", "update", "BTC/USD", "subscribe", "pong", "status"),
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(_FUZZ_WORDS),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(_FUZZ_KEYS),
            children,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(payload=_json_values)
def test_parsers_only_ever_return_a_frame_or_raise_a_payload_error(payload: Any) -> None:
    text = json.dumps(payload)
    now = datetime.now(UTC)
    for parse in (parse_binance_message, parse_coinbase_message, parse_kraken_message):
        try:
            frame = parse(text, now)
        except UpstreamPayloadError:
            continue
        assert isinstance(frame, Frame)
        for tick in frame.ticks:  # never garbage: a positive finite price
            assert tick.usd > 0 and tick.usd != float("inf")


# -- backoff, on the autojump clock with a scripted upstream ----------------------------------


class _ScriptedConnection:
    """Sends a heartbeat each second for `lifetime` seconds, then closes (1001)."""

    def __init__(self, lifetime: float) -> None:
        self.ends_at = trio.current_time() + lifetime
        self.sent: list[str] = []

    async def get_message(self) -> str:
        wait = min(1.0, self.ends_at - trio.current_time())
        if wait > 0:
            await trio.sleep(wait)
        if trio.current_time() >= self.ends_at:
            raise ConnectionClosed(CloseReason(1001, "going away"))
        return '{"channel":"heartbeat"}'

    async def send_message(self, message: str) -> None:
        self.sent.append(message)


def _scripted(script: list[float | None], attempts: list[float]) -> Callable[..., Any]:
    """A `connect` that follows `script`: None refuses the handshake, a number is a connection
    that lives that long. Records when each attempt was made."""

    @asynccontextmanager
    async def connect(url: str, **options: Any) -> AsyncIterator[_ScriptedConnection]:
        attempts.append(trio.current_time())
        step = script.pop(0) if script else None
        if step is None:
            raise ConnectionRejected(503, (), b"")
        yield _ScriptedConnection(step)

    return connect


async def test_backoff_doubles_up_to_the_cap(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []
    settings = replace(FAST, backoff_initial=1, backoff_max=8, healthy_after=30)
    client = KrakenStream(
        SymbolInterest(["BTC"]),
        TickRecorder().publish,
        settings=settings,
        connect=_scripted([], attempts),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(attempts)]
    assert gaps[:7] == [1, 2, 4, 8, 8, 8, 8]
    assert client.reconnects == len(attempts) - 1 and client.failures == len(attempts)
    assert not client.connected and "ConnectionRejected" in (client.last_error or "")


async def test_backoff_resets_after_a_healthy_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []
    # refused, refused, refused, then up for 40 s (healthy after 30), then refused again
    script: list[float | None] = [None, None, None, 40.0, None, None, 5.0, None]
    settings = replace(FAST, backoff_initial=1, backoff_max=8, healthy_after=30)
    client = KrakenStream(
        SymbolInterest(["BTC"]),
        TickRecorder().publish,
        settings=settings,
        connect=_scripted(script, attempts),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await trio.sleep(80)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(attempts)]
    # Refused thrice (1, 2, 4); up for 40 s, healthy, so 1 s later the next try; refused twice
    # (2, 4); up for 5 s, not healthy, so the doubling goes on: 5 + 8.
    assert gaps[:7] == [1, 2, 4, 41, 2, 4, 13]
    assert client.connects == 2


# -- against the simulator ---------------------------------------------------------------------


async def test_a_price_change_reaches_publish_quickly() -> None:
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, SymbolInterest(["BTC"])) as (
            client,
            recorder,
        ),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
        simulator.set_price("kraken", "BTC", 70123.5)
        with trio.fail_after(1):
            tick = await recorder.wait_for_price("BTC", 70123.5)
        assert tick.provider == "kraken-stream" and tick.observed_at.tzinfo is not None
        status = client.status()
        assert status.connected and status.live == ("BTC",) and status.subscribed == ("BTC",)
        assert status.connects == 1 and status.reconnects == 0 and status.malformed == 0
        assert client.last_message_at is not None


@pytest.mark.parametrize("abort", [True, False], ids=["socket-dies", "exchange-closes"])
async def test_a_killed_stream_reconnects_resubscribes_and_resumes(abort: bool) -> None:
    interest = SymbolInterest(["BTC"])
    interest.acquire(["ETH"])
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, interest) as (
            client,
            recorder,
        ),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.live_symbols() == {"BTC", "ETH"})
        await simulator.drop("kraken", abort=abort)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.connects == 2 and client.is_live("ETH"))
            await simulator.wait_for(lambda: simulator.subscribed("kraken") == {"BTC", "ETH"})
        simulator.set_price("kraken", "ETH", 3999.25)
        with trio.fail_after(1):
            await recorder.wait_for_price("ETH", 3999.25)
        assert client.reconnects == 1 and simulator.connects["kraken"] == 2
        expected = "1006" if abort else "1011"
        assert expected in (client.last_error or "")
        subscribes = [m for m in simulator.messages("kraken") if m.get("method") == "subscribe"]
        assert [m["params"]["symbol"] for m in subscribes] == [["BTC/USD", "ETH/USD"]] * 2


async def test_a_silent_feed_is_dropped_after_the_silence_timeout() -> None:
    settings = replace(FAST, silence_timeout=0.3)
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, SymbolInterest(["BTC"]), settings) as (client, _),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
        simulator.silence("kraken")
        went_quiet = trio.current_time()
        with trio.fail_after(3):
            await client.wait_until(lambda: not client.connected)
        assert trio.current_time() - went_quiet >= 0.3 * 0.9
        assert client.silences == 1 and "no message for 0.3s" in (client.last_error or "")
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
        assert client.connects == 2 and simulator.connects["kraken"] == 2


async def test_heartbeats_keep_a_quiet_feed_alive() -> None:
    settings = replace(FAST, silence_timeout=0.3)
    async with (
        run_ws_simulator(heartbeat=0.05) as simulator,
        streaming(simulator, SymbolInterest(["BTC"]), settings) as (client, _),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
        await trio.sleep(0.8)  # no price moves, but heartbeats arrive
        assert client.connects == 1 and client.silences == 0


async def test_malformed_frames_are_counted_and_skipped() -> None:
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, SymbolInterest(["BTC"])) as (
            client,
            recorder,
        ),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
        before = len(recorder.ticks)
        for frame in (
            "{not json",
            "[1, 2, 3]",
            '{"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/USD"}]}',
            '{"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/USD", "last": -5}]}',
            '{"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/USD", '
            '"last": 70000, "timestamp": "later"}]}',
        ):
            simulator.send_raw("kraken", frame)
        simulator.set_price("kraken", "BTC", 71000.0)
        with trio.fail_after(2):
            await recorder.wait_for_price("BTC", 71000.0)
        assert client.malformed == 5
        assert recorder.prices("BTC")[before:] == [71000.0]  # nothing from the bad frames
        assert client.connects == 1 and client.connected


async def test_interest_changes_subscribe_and_unsubscribe_upstream() -> None:
    interest = SymbolInterest(["BTC"])
    async with run_ws_simulator() as simulator, streaming(simulator, interest) as (client, _):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
            async with interest.hold(["ETH", "SOL"]):
                await client.wait_until(lambda: client.live_symbols() == {"BTC", "ETH", "SOL"})
                assert simulator.subscribed("kraken") == {"BTC", "ETH", "SOL"}
            await simulator.wait_for(lambda: simulator.subscribed("kraken") == {"BTC"})
            await client.wait_until(lambda: client.live_symbols() == {"BTC"})
        sent = [
            (m["method"], m["params"]["symbol"])
            for m in simulator.messages("kraken")
            if m.get("method") in ("subscribe", "unsubscribe")
        ]
        assert sent == [
            ("subscribe", ["BTC/USD"]),
            ("subscribe", ["ETH/USD", "SOL/USD"]),  # one message for the burst
            ("unsubscribe", ["ETH/USD", "SOL/USD"]),
        ]
        assert client.connects == 1


async def test_a_refused_subscription_is_not_live_and_not_retried() -> None:
    interest = SymbolInterest(["BTC", "SOL"])
    async with run_ws_simulator() as simulator:
        simulator.refuse("kraken", "SOL")
        async with streaming(simulator, interest) as (client, _):
            with trio.fail_after(3):
                await client.wait_until(lambda: client.is_live("BTC") and bool(client.refused))
                interest.acquire(["ETH"])  # a later change must not ask for SOL again
                await client.wait_until(lambda: client.is_live("ETH"))
            assert client.refused == {"SOL/USD"} and not client.is_live("SOL")
            assert client.subscribed == {"BTC", "ETH"}
            assert client.upstream_errors == 1 and "SOL/USD" in (client.last_error or "")
            asked = [
                m["params"]["symbol"]
                for m in simulator.messages("kraken")
                if m.get("method") == "subscribe"
            ]
            assert asked == [["BTC/USD", "SOL/USD"], ["ETH/USD"]]
            assert client.connects == 1


async def test_no_interest_means_no_connection() -> None:
    interest = SymbolInterest()
    async with run_ws_simulator() as simulator, streaming(simulator, interest) as (client, _):
        interest.acquire(["BNB"])  # not listed on Kraken: still nothing to stream
        await trio.sleep(0.1)
        assert simulator.connects["kraken"] == 0 and not client.connected
        with trio.fail_after(3):
            async with interest.hold(["BTC"]):
                await client.wait_until(lambda: client.is_live("BTC"))
            await client.wait_until(lambda: not client.connected)
            await simulator.wait_for(lambda: simulator.open_connections("kraken") == 0)
        assert client.failures == 0 and client.reconnects == 0  # idle is not a failure


async def test_rejected_handshakes_are_retried_with_backoff() -> None:
    async with run_ws_simulator() as simulator:
        simulator.reject_connections("kraken", 3)
        async with streaming(simulator, SymbolInterest(["BTC"])) as (client, _):
            began = trio.current_time()
            with trio.fail_after(3):
                await client.wait_until(lambda: client.is_live("BTC"))
            # 0.05 + 0.1 + 0.2 between the four attempts
            assert trio.current_time() - began >= 0.35 * 0.9
            assert simulator.rejected["kraken"] == 3 and client.reconnects == 3
            assert client.failures == 3 and client.backoff == 0.2


async def test_a_busy_symbol_is_coalesced_to_its_latest_tick() -> None:
    settings = replace(FAST, min_publish_interval=0.2)
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, SymbolInterest(["BTC"]), settings) as (client, recorder),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.is_live("BTC"))
        for price in (70001.0, 70002.0, 70003.0):
            simulator.set_price("kraken", "BTC", price)
        with trio.fail_after(2):
            await recorder.wait_for_price("BTC", 70003.0)
        # The snapshot went out at once; the burst within the interval became its last tick.
        assert recorder.prices("BTC")[1:] == [70003.0]


async def test_keepalive_pings_are_sent_and_pongs_ignored() -> None:
    settings = replace(FAST, keepalive_interval=0.05)
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, SymbolInterest(["BTC"]), settings) as (client, _),
    ):
        with trio.fail_after(3):
            await simulator.wait_for(
                lambda: sum(m.get("method") == "ping" for m in simulator.messages("kraken")) >= 3
            )
        assert client.connects == 1 and client.malformed == 0 and client.upstream_errors == 0


async def test_a_failing_publish_escapes_as_a_bug_not_a_reconnect() -> None:
    async def broken(ticks: Any) -> None:
        raise OSError("disk full")  # an OSError, yet not the exchange's fault

    async with run_ws_simulator() as simulator:
        client = KrakenStream(
            SymbolInterest(["BTC"]), broken, url=simulator.url("kraken"), settings=FAST
        )
        with trio.fail_after(3), pytest.raises(BaseException) as raised:
            await client.run()
    errors: list[BaseException] = [raised.value]
    while isinstance(errors[-1], BaseExceptionGroup):
        errors.append(errors[-1].exceptions[0])
    assert isinstance(errors[-1], RuntimeError) and "disk full" in str(errors[-1])
    assert client.reconnects == 0


async def test_stopping_a_connected_stream_is_quick() -> None:
    async with run_ws_simulator() as simulator:
        async with streaming(simulator, SymbolInterest(["BTC"])) as (client, _):
            with trio.fail_after(3):
                await client.wait_until(lambda: client.is_live("BTC"))
            stopping = trio.current_time()
        assert trio.current_time() - stopping < FAST.close_timeout
        assert not client.connected
        with trio.fail_after(1):
            await simulator.wait_for(lambda: simulator.open_connections("kraken") == 0)


async def test_a_group_knows_which_symbols_no_stream_serves() -> None:
    interest = SymbolInterest(["BTC", "ETH"])
    async with run_ws_simulator() as simulator:
        recorder = TickRecorder()
        kraken = KrakenStream(
            interest, recorder.publish, url=simulator.url("kraken"), settings=FAST
        )
        coinbase = CoinbaseStream(
            interest,
            recorder.publish,
            url=simulator.url("coinbase"),
            settings=FAST,
            symbols=["BTC"],
        )
        group = StreamGroup([kraken])
        group.put(CoinbaseStream(interest, recorder.publish))  # replaced below: one per provider
        group.put(coinbase)
        async with trio.open_nursery() as nursery:
            await nursery.start(kraken.run)
            await nursery.start(coinbase.run)
            with trio.fail_after(3):
                await kraken.wait_until(lambda: kraken.live_symbols() == {"BTC", "ETH"})
                await coinbase.wait_until(lambda: coinbase.is_live("BTC"))
            assert coinbase.subscribed == {"BTC"}  # its provider entry limits it to BTC
            assert group.live_providers("btc") == ["kraken-stream", "coinbase-stream"]
            assert group.down_symbols(["BTC", "ETH", "DOGE"]) == ["DOGE"]
            simulator.reject_connections("kraken", 1000)
            await simulator.drop("kraken", abort=True)
            with trio.fail_after(3):
                while kraken.connected:
                    await group.wait_changed()
            assert group.is_live("BTC") and not group.is_live("ETH")
            assert group.down_symbols(["BTC", "ETH"]) == ["ETH"]
            assert [s.provider for s in group.statuses()] == ["kraken-stream", "coinbase-stream"]
            nursery.cancel_scope.cancel()


def test_the_registry_builds_each_stream_from_its_provider_entry() -> None:
    registry = dict(STREAMS)
    assert {name: cls.name for name, cls in registry.items()} == {name: name for name in registry}
    assert set(registry) == {"binance-stream", "coinbase-stream", "kraken-stream"}
    entry = ProviderConfig(
        id="kraken-stream",
        name="Kraken stream (v2)",
        categories=("MARKET_DATA",),
        base_url="wss://ws.kraken.com/v2",
        timeout_seconds=7.0,
        symbols=("btc", "eth"),
    )
    cls = stream_for(entry)
    assert cls is KrakenStream
    client = cls.from_provider(entry, SymbolInterest(["BTC", "SOL"]), TickRecorder().publish)
    assert client.url == "wss://ws.kraken.com/v2" and client.provider_id == "kraken-stream"
    assert client.settings.connect_timeout == 7.0 and client.only == frozenset({"BTC", "ETH"})
    assert stream_for(replace(entry, id="elsewhere", collector="binance-stream")) is BinanceStream
    assert stream_for(replace(entry, id="coingecko")) is None


# -- health on the provider status board -------------------------------------------------------


class _Board:
    """A status board holding one stream provider, fed by a client's `on_health`; keeps every
    state change and every report."""

    def __init__(self, provider_id: str = "kraken-stream") -> None:
        self.provider_id = provider_id
        self.changes: list[tuple[str, str, str]] = []
        self.reports: list[StreamHealth] = []
        entry = ProviderConfig(
            id=provider_id, name=provider_id, categories=("MARKET_DATA",), base_url="wss://x"
        )
        self.board = ProviderStatusBoard(
            ProvidersFile((entry,)),
            on_change=lambda _p, old, new, why: self.changes.append((old, new, why)),
        )

    def report(self, health: StreamHealth) -> None:
        self.reports.append(health)
        self.board.report(
            health.provider,
            health.state,
            health.reason,
            at=health.at,
            last_success_at=health.last_success_at,
            failed=health.failed,
        )

    @property
    def state(self) -> str:
        return self.board.state(self.provider_id)

    @property
    def record(self) -> Any:
        return self.board.records[self.provider_id]

    def transitions(self) -> list[tuple[str, str]]:
        return [(old, new) for old, new, _ in self.changes]


@pytest.mark.parametrize("abort", [True, False], ids=["socket-dies", "exchange-closes"])
async def test_a_dropped_stream_is_degraded_until_it_delivers_again(abort: bool) -> None:
    board = _Board()
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, SymbolInterest(["BTC"]), on_health=board.report) as (client, _),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.health_state == "ONLINE")
        assert board.state == "ONLINE" and board.record.reason == "connected"
        first_success = board.record.last_success_at
        assert first_success is not None and board.record.successes == 1
        simulator.reject_connections("kraken", 1)  # the first reconnect is refused too
        await simulator.drop("kraken", abort=abort)
        with trio.fail_after(3):
            await client.wait_until(lambda: client.health_state == "DEGRADED")
            assert board.state == "DEGRADED"
            await client.wait_until(lambda: client.health_state == "ONLINE")
        assert board.state == "ONLINE" and client.connects == 2
    assert board.transitions() == [
        ("UNKNOWN", "ONLINE"),
        ("ONLINE", "DEGRADED"),
        ("DEGRADED", "ONLINE"),
    ]
    code = "1006" if abort else "1011"
    dropped, refused = (r for r in board.reports if r.failed)
    assert dropped.state == refused.state == "DEGRADED"
    assert dropped.reason.startswith("disconnected: ") and code in dropped.reason
    assert dropped.reason.endswith(", reconnecting")
    assert refused.reason.startswith("connect failed: ") and "503" in refused.reason
    assert dropped.last_success_at is not None and dropped.last_success_at >= first_success
    assert board.changes[1][2] == dropped.reason  # the change says why
    record = board.record
    assert (record.successes, record.failures) == (2, 2)
    assert record.last_error == refused.reason


async def test_a_silent_stream_is_degraded_then_online_after_reconnecting() -> None:
    board = _Board()
    settings = replace(FAST, silence_timeout=0.3)
    async with (
        run_ws_simulator() as simulator,
        streaming(simulator, SymbolInterest(["BTC"]), settings, board.report) as (client, _),
    ):
        with trio.fail_after(3):
            await client.wait_until(lambda: client.health_state == "ONLINE")
        simulator.silence("kraken")
        with trio.fail_after(3):
            await client.wait_until(lambda: client.health_state == "DEGRADED")
        assert board.state == "DEGRADED"
        assert board.record.reason == "silent for 0.3 s, reconnecting"
        with trio.fail_after(3):
            await client.wait_until(lambda: client.health_state == "ONLINE")
        assert board.state == "ONLINE" and client.status().state == "ONLINE"
    assert board.transitions() == [
        ("UNKNOWN", "ONLINE"),
        ("ONLINE", "DEGRADED"),
        ("DEGRADED", "ONLINE"),
    ]


async def test_repeated_failed_connections_make_a_stream_offline_until_it_delivers() -> None:
    board = _Board()
    settings = replace(FAST, offline_after=3)
    async with run_ws_simulator() as simulator:
        simulator.reject_connections("kraken", 4)
        async with streaming(simulator, SymbolInterest(["BTC"]), settings, board.report) as (
            client,
            _,
        ):
            with trio.fail_after(3):
                await client.wait_until(lambda: client.health_state == "OFFLINE")
                assert board.state == "OFFLINE"
                assert board.record.reason.startswith("connect failed: ")
                assert board.record.reason.endswith("(3 failures in a row)")
                await client.wait_until(lambda: client.health_state == "ONLINE")
    # Never delivered before: UNKNOWN, then DEGRADED twice (one change), OFFLINE, ONLINE.
    assert board.transitions() == [
        ("UNKNOWN", "DEGRADED"),
        ("DEGRADED", "OFFLINE"),
        ("OFFLINE", "ONLINE"),
    ]
    assert [r.state for r in board.reports if r.failed] == [
        "DEGRADED",
        "DEGRADED",
        "OFFLINE",
        "OFFLINE",
    ]
    assert board.record.last_success_at is not None


async def test_a_connection_that_delivers_nothing_is_not_online(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The scripted upstream sends heartbeats but never a tick: connected is not enough.
    attempts: list[float] = []
    board = _Board()
    settings = replace(FAST, backoff_initial=1, backoff_max=8, offline_after=2)
    client = KrakenStream(
        SymbolInterest(["BTC"]),
        TickRecorder().publish,
        settings=settings,
        connect=_scripted([5.0, 5.0], attempts),
        on_health=board.report,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert client.connects == 2 and board.state == "OFFLINE"
    assert board.transitions() == [("UNKNOWN", "DEGRADED"), ("DEGRADED", "OFFLINE")]
    assert (
        board.reports[0].reason
        == "disconnected: closed with 1001 GOING_AWAY (going away), reconnecting"
    )


async def test_an_online_stream_refreshes_its_last_success_without_a_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    board = _Board()
    recorder = TickRecorder()

    class _Ticking(_ScriptedConnection):
        async def get_message(self) -> str:
            await trio.sleep(1.0)
            if trio.current_time() >= self.ends_at:
                raise ConnectionClosed(CloseReason(1001, "going away"))
            return (
                '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD",'
                '"last":70000.5,"timestamp":"2024-03-25T09:00:00.000000Z"}]}'
            )

    @asynccontextmanager
    async def connect(url: str, **options: Any) -> AsyncIterator[_ScriptedConnection]:
        yield _Ticking(60.0)

    client = KrakenStream(
        SymbolInterest(["BTC"]),
        recorder.publish,
        settings=FAST,
        connect=connect,
        on_health=board.report,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    online = [r for r in board.reports if r.state == "ONLINE"]
    # one report on the first tick, then one per HEALTH_REFRESH (5 s) while ticks arrive
    assert 5 <= len(online) <= 7 and board.transitions() == [("UNKNOWN", "ONLINE")]
    assert board.record.successes == 1
    assert board.record.last_success_at == online[-1].last_success_at is not None

"""The exchange side of bench/stream_latency.py: the WebSocket simulator, ticking on a schedule.

Runs `tests/simulator/ws.py` (the loopback stand-in the stream tests use; here its
Binance combined stream at `/binance/stream`) in a process of its own, so that the instant a
message leaves the "exchange" is taken on an event loop that does nothing else. Prints one
`ready PID PORT` line, then obeys stdin lines:

    wait SECONDS             print `subscribed N` once an open connection (N of them) is
                             subscribed to BTC, or `timeout` after SECONDS
    start RATE SECONDS AT    from wall-clock instant AT, push RATE BTC mini-tickers a second for
                             SECONDS (the i-th is due at AT + i/RATE; a late one goes at once),
                             then print `done {json}`: every message as [price, sent_at]
                             (price as the gateway parses it, sent_at in epoch seconds), and
                             how late the schedule ran
    quit (or EOF)            stop

Each message carries a BTC price no other message carries, so the load client can tell which
upstream message a `next` frame came from by its `usd` alone. `sent_at` is `time.time()` taken
immediately before `set_price` queues the frame; the simulator's writer task sends it at the
next checkpoint, so the figure includes that one hop (tens of µs on an idle loop) and errs on
the side of a longer latency, never a shorter one.

Until `start`, one mini-ticker goes out every `--idle-every` seconds: Binance keeps its feed
alive with WebSocket pings the simulator does not send, and the gateway's silence watchdog
(30 s) would otherwise reconnect while 1,000 subscribers are still connecting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import trio

from tests.simulator.ws import WsSimulator, run_ws_simulator

SYMBOL = "BTC"
MAX_MESSAGES = 100_000  # bounds one `start` (rate * seconds)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def as_parsed(price: float) -> float:
    """The float the gateway gets from this price: the simulator writes `c` with 8 decimals."""
    return float(f"{price:.8f}")


class Ticker:
    """Pushes unique prices: a cent above the last one, so every message is told apart."""

    def __init__(self, exchanges: WsSimulator) -> None:
        self.exchanges = exchanges
        self.cents = round(exchanges.prices["binance"][SYMBOL] * 100)
        self.publishing = False

    def push(self) -> tuple[float, float]:
        self.cents += 1
        price = self.cents / 100
        sent_at = time.time()
        self.exchanges.set_price("binance", SYMBOL, price)
        return as_parsed(price), sent_at

    async def idle(self, every: float) -> None:
        while True:
            await trio.sleep(every)
            if not self.publishing:
                self.push()

    async def run(self, rate: float, seconds: float, at: float) -> None:
        self.publishing = True
        count = min(MAX_MESSAGES, max(1, round(rate * seconds)))
        start = trio.current_time() + max(0.0, at - time.time())
        end = start + seconds
        sent: list[tuple[float, float]] = []
        lags: list[float] = []
        try:
            for i in range(count):
                due = start + i / rate
                await trio.sleep_until(due)
                now = trio.current_time()
                if now > end:
                    break
                lags.append(now - due)
                sent.append(self.push())
        finally:
            self.publishing = False
        lags.sort()
        say(
            "done "
            + json.dumps(
                {
                    "sent": sent,
                    "scheduled": count,
                    "lag_p99": lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else None,
                    "lag_max": lags[-1] if lags else None,
                    "connects": self.exchanges.connects["binance"],
                }
            )
        )


async def serve(idle_every: float) -> None:
    async with run_ws_simulator() as exchanges, trio.open_nursery() as nursery:
        ticker = Ticker(exchanges)
        nursery.start_soon(ticker.idle, idle_every)
        say(f"ready {os.getpid()} {exchanges.port}")
        for _ in range(1000):  # bounded: the driver sends a handful of commands
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "wait":
                with trio.move_on_after(float(words[1])) as waiting:
                    await exchanges.wait_for(lambda: SYMBOL in exchanges.subscribed("binance"))
                if waiting.cancelled_caught:
                    say("timeout")
                else:
                    say(f"subscribed {exchanges.open_connections('binance')}")
            elif words[0] == "start":
                rate, seconds, at = (float(w) for w in words[1:4])
                nursery.start_soon(ticker.run, rate, seconds, at)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description="the exchange under bench/stream_latency.py")
    parser.add_argument(
        "--idle-every", type=float, default=5.0, help="a keep-alive tick this often before start"
    )
    args = parser.parse_args()
    trio.run(serve, args.idle_every)


if __name__ == "__main__":
    main()

"""The load side of bench/stream_latency.py: bench/load_client.py, keyed by price not by time.

The same epoll loop and raw RFC 6455 client as load_client.py (it subclasses `LoadClient`: the
connection set-up, frame parsing, pings and the driver protocol are that file's), but a `next`
frame is identified by its `"usd":` value, which the simulated exchange made unique per
upstream message. `observedAt` cannot serve here: on the stream path it is Binance's event
time `E`, whole milliseconds, stamped by the exchange rather than at a known instant.

What it records is only (price, instant the frame was read): the client cannot know when the
exchange sent a price, so latency is computed by the driver from the simulator's own log. The
instant is `time.time()` just after `epoll.poll` returns, the clock the simulator stamps with.
Frames that became readable while the loop was busy with a previous batch are stamped when the
next poll returns, so the client's own lag is part of the figure (it is small: a batch of a
thousand frames takes a few milliseconds).

Protocol with the driver as in load_client.py, except that the report carries every arrival
from T0 until the report (T1 + GRACE), as {price text: [seconds after T0, ...]}: at 1,000
subscribers x 20/s for 12 s that is about 240,000 numbers, a few MB of JSON on one line.
"""

from __future__ import annotations

import sys

import load_client
from load_client import CONNECTING, LIVE, UPGRADING, Conn, LoadClient, emit

USD = b'"usd":'
USD_LEN = len(USD)
MAX_ARRIVALS = 5_000_000  # bounds the report; a run that reaches it says so


class PriceKeyedClient(LoadClient):
    def __init__(self, host: str, port: int, path: str, subscribers: int, window: int) -> None:
        super().__init__(host, port, path, subscribers, window)
        self.arrivals: dict[bytes, list[float]] = {}
        self.recorded = 0
        self.not_recorded = 0

    def _dispatch(self, events: list[tuple[int, int]], now: float, in_window: bool) -> None:
        """As LoadClient's, with a fast path for one whole text frame that hands the payload
        to `_on_message` (LoadClient's own fast path keys on observedAt)."""
        conns = self.conns
        for fd, _events in events:
            conn = conns.get(fd)
            if conn is None:
                continue
            state = conn.state
            if state == CONNECTING:
                self._on_writable(conn)
                continue
            try:
                data = conn.sock.recv(262_144)
            except BlockingIOError:
                continue
            except OSError as exc:
                if state == LIVE:
                    self._drop(conn)
                else:
                    self._fail(conn, f"recv: {exc.__class__.__name__}")
                continue
            if not data:
                if state == LIVE:
                    self._drop(conn)
                else:
                    self._fail(conn, "eof before subscribed")
                continue
            if now >= self.t0:
                self.wire_bytes += len(data)
            if state == LIVE and not conn.buf and len(data) >= 2 and data[0] == 0x81:
                length, header = data[1], 2
                if length == 126 and len(data) >= 4:
                    length, header = (data[2] << 8) | data[3], 4
                if length != 127 and header + length == len(data):
                    self._on_message(conn, data[header:], now, in_window)
                    continue
            if state == UPGRADING:
                self._on_upgrade(conn, data)
            else:
                self._on_frames(conn, data, now, in_window)

    def _on_message(self, conn: Conn, payload: bytes, now: float, in_window: bool) -> None:
        k = payload.find(USD)
        if k < 0:  # acks, pings, errors: LoadClient's handling (no observedAt in them)
            super()._on_message(conn, payload, now, in_window)
            return
        k += USD_LEN
        end = payload.find(b",", k)
        if end < 0:
            end = payload.find(b"}", k)
        key = payload[k:end]
        self.received += 1
        conn.count += 1
        if now >= self.t0:
            conn.win_count += 1
            if self.recorded < MAX_ARRIVALS:
                self.recorded += 1
                times = self.arrivals.get(key)
                if times is None:
                    self.arrivals[key] = [now]
                else:
                    times.append(now)
            else:
                self.not_recorded += 1

    def _report(self, cpu_window: float) -> None:
        t0 = self.t0
        live = [c for c in self.conns.values() if c.state == LIVE]
        emit(
            {
                "event": "report",
                "t0": t0,
                "arrivals": {
                    key.decode(): [round(t - t0, 6) for t in times]
                    for key, times in self.arrivals.items()
                },
                "recorded": self.recorded,
                "not_recorded": self.not_recorded,
                "received_total": self.received,
                "live": len(live),
                "conn_min": min((c.win_count for c in live), default=0),
                "conn_max": max((c.win_count for c in live), default=0),
                "closed": self.closed,
                "close_codes": self.close_codes,
                "other_messages": self.other_messages,
                "client_cpu_s": cpu_window,
                "wire_bytes": self.wire_bytes,
                "extensions": self.extensions,
            }
        )


def main() -> int:
    return load_client.main(PriceKeyedClient, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())

"""The hostile side of bench/soak.py, in its own process: slow request bodies and a WebSocket
flood, each from loopback addresses of its own (never 127.0.0.1, the well-behaved client's).

    python bench/soak_hostile.py --port PORT --seconds S [--slow 300] [--ws-attempts 3000] ...

Two attacks open new sockets for `--seconds`, then hold what they have for up to `--linger`
seconds more, until stdin closes (the driver closes it once it has stopped the gateway, so
the gateway's shutdown is measured with these clients still connected):

slow bodies   `--slow` sockets, spread over `--slow-addresses` source addresses (127.0.0.3,
              127.0.0.4, …) so the per-address request budget does not stop them all before
              a byte is read: each sends `POST /graphql` headers declaring a
              `--body-bytes` body, then one byte every `--trickle` seconds, and keeps
              trickling after an answer until the server closes the socket (an attacker wants
              the descriptor, not the answer); then it opens the next one (at most
              `--slow-rounds` per slot; 5 s later when the answer came at once, a 429 of a
              spent request budget, so this stays a slow attack, not a connection-rate one).
ws flood      every `--ws-burst-every` seconds, from 127.0.0.2: up to `--ws-attempts`
              graphql-transport-ws handshakes, as fast as the server takes them (at most
              `--ws-inflight` in flight), each followed by `connection_init`; every socket the
              server keeps is held (a `ping` message every few seconds, which must not keep an
              idle socket alive) until the next burst, then closed (the last burst's at the
              end).

At the end it prints one JSON line on stdout (`{"event": "report", ...}`): per attack, what
happened to each socket (HTTP status of the answer, or the WebSocket close code), how long the
server let a slow body hold its socket, and how many sockets were held at once. Everything is a
raw trio socket with a minimal RFC 6455 client (bench/load_client.py's frames); every wait has
a timeout and every loop a count.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_client import OP_CLOSE, OP_PING, OP_PONG, client_frame, raise_fd_limit, text_frame

CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 5.0
PING_EVERY = 5.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def connect(source: str, port: int) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:port from `source` (a 127.x.y.z address of this host)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.bind((source, 0))
        with trio.fail_after(CONNECT_TIMEOUT):
            await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def aclose_quietly(stream: trio.SocketStream) -> None:
    with trio.move_on_after(1):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.aclose()


def status_of(head: bytes) -> str:
    """'408' from b'HTTP/1.1 408 Request Timeout...'."""
    parts = head.split(b"\r\n", 1)[0].split()
    return parts[1].decode("ascii", "replace") if len(parts) >= 2 else "garbled"


class SlowBodies:
    """`count` sockets trickling request bodies; see the module docstring."""

    def __init__(self, port: int, args: argparse.Namespace, deadline: float, hold: float) -> None:
        self.port = port
        self.count = args.slow
        self.addresses = [f"127.0.0.{3 + i}" for i in range(args.slow_addresses)]
        self.body_bytes = args.body_bytes
        self.trickle = args.trickle
        self.rounds = args.slow_rounds
        self.deadline = deadline  # no new socket after this
        self.hold_deadline = hold  # every socket closed by then
        self.outcomes: Counter[str] = Counter()  # the answer's status, or what went wrong
        self.answer_s: list[float] = []  # headers sent -> first byte of an answer
        self.held_s: list[float] = []  # connected -> the server closed the socket
        self.open_now = 0
        self.open_peak = 0
        self.started = 0

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for i in range(self.count):
                nursery.start_soon(self.slot, self.addresses[i % len(self.addresses)])
                await trio.sleep(0.005)  # 300 sockets in ~1.5 s, not one SYN burst

    async def slot(self, source: str) -> None:
        for _ in range(self.rounds):
            if trio.current_time() >= self.deadline - 1:
                return
            quick = await self.one(source)
            # Refused at once (429: this address's budget is spent): the socket held nothing,
            # so wait a little rather than turn this into a connection-rate attack.
            await trio.sleep(5 if quick else 0.2)

    async def one(self, source: str) -> bool:
        """One slow body; True when the server answered within a second."""
        try:
            stream = await connect(source, self.port)
        except (OSError, trio.TooSlowError) as exc:
            self.outcomes[f"connect: {type(exc).__name__}"] += 1
            await trio.sleep(1)
            return False
        self.started += 1
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)
        opened = trio.current_time()
        answered: float | None = None
        head = b""
        outcome = "held until the soak ended"
        try:
            request = (
                f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Content-Type: application/json\r\nAccept: application/json\r\n"
                f"Content-Length: {self.body_bytes}\r\n\r\n{{"
            ).encode()
            await stream.send_all(request)
            sent = 1
            # bounded: one byte per trickle until the body is whole or the soak ends
            for _ in range(self.body_bytes + 1):
                if trio.current_time() >= self.hold_deadline:
                    break
                with trio.move_on_after(self.trickle):
                    data = await stream.receive_some(65536)
                    if not data:
                        outcome = status_of(head) if head else "closed without an answer"
                        self.held_s.append(trio.current_time() - opened)
                        break
                    if answered is None:
                        answered = trio.current_time()
                        self.answer_s.append(answered - opened)
                    head = (head + data)[:256]
                    continue  # read on: did the server close after answering?
                if sent < self.body_bytes:
                    await stream.send_all(b" ")
                    sent += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            outcome = f"{status_of(head)} then reset" if head else f"reset ({type(exc).__name__})"
            self.held_s.append(trio.current_time() - opened)
        finally:
            self.open_now -= 1
            await aclose_quietly(stream)
        self.outcomes[outcome] += 1
        return answered is not None and answered - opened < 1

    def report(self) -> dict[str, Any]:
        return {
            "sockets": self.count,
            "addresses": len(self.addresses),
            "connections": self.started,
            "open_peak": self.open_peak,
            "outcomes": dict(self.outcomes.most_common()),
            "answer_p50_s": percentile(self.answer_s, 0.5),
            "answer_max_s": max(self.answer_s, default=math.nan),
            "held_p50_s": percentile(self.held_s, 0.5),
            "held_max_s": max(self.held_s, default=math.nan),
        }


class Frames:
    """Server frames off one stream: (opcode, payload), unmasked, FIN frames only (the
    gateway does not fragment its small control and protocol messages)."""

    def __init__(self, stream: trio.SocketStream, buffered: bytes) -> None:
        self.stream = stream
        self.buf = buffered

    async def next(self) -> tuple[int, bytes] | None:
        for _ in range(64):  # bounded: a frame arrives in a few reads
            frame = self._parse()
            if frame is not None:
                return frame
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buf += data
        return None

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        length, h = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, h = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, h = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < h + length:
            return None
        self.buf = buf[h + length :]
        return buf[0] & 0x0F, buf[h : h + length]


class WebSocketFlood:
    """Bursts of handshakes from one address; see the module docstring."""

    def __init__(self, port: int, args: argparse.Namespace, deadline: float, hold: float) -> None:
        self.port = port
        self.source = args.ws_address
        self.attempts = args.ws_attempts
        self.inflight = args.ws_inflight
        self.burst_every = args.ws_burst_every
        self.deadline = deadline  # no new burst after this
        self.hold_deadline = hold  # the last burst's sockets are held until then
        self.outcomes: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.bursts: list[dict[str, Any]] = []
        self.held_now = 0
        self.held_peak = 0
        self.held_s: list[float] = []  # acknowledged -> closed by the server

    async def run(self) -> None:
        start = trio.current_time()
        for burst in range(1000):  # bounded by the deadline long before
            due = start + burst * self.burst_every
            if due >= self.deadline - 2:
                return
            await trio.sleep_until(due)
            last = due + self.burst_every >= self.deadline - 2
            await self.burst(self.hold_deadline if last else due + self.burst_every - 1)

    async def burst(self, hold_until: float) -> None:
        began = trio.current_time()
        before = Counter(self.outcomes)
        limiter = trio.Semaphore(self.inflight)  # released by another task: no owner
        async with trio.open_nursery() as nursery:
            for _ in range(self.attempts):
                if trio.current_time() >= min(hold_until, self.deadline) - 1:
                    break
                await limiter.acquire()
                nursery.start_soon(self.one, limiter, hold_until)
        counts = self.outcomes - before
        self.bursts.append(
            {
                "seconds_to_send": round(trio.current_time() - began, 1),
                "outcomes": dict(counts.most_common()),
            }
        )

    async def one(self, limiter: trio.Semaphore, hold_until: float) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                limiter.release()

        try:
            await self._one(release, hold_until)
        finally:
            release()

    async def _one(self, release: Any, hold_until: float) -> None:
        try:
            stream = await connect(self.source, self.port)
        except (OSError, trio.TooSlowError) as exc:
            self.outcomes[f"connect: {type(exc).__name__}"] += 1
            return
        try:
            await self._talk(stream, release, hold_until)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.outcomes["reset"] += 1
        except trio.TooSlowError:
            self.outcomes["no answer in 5 s"] += 1
        finally:
            await aclose_quietly(stream)

    async def _talk(self, stream: trio.SocketStream, release: Any, hold_until: float) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )
        head = b""
        with trio.fail_after(ANSWER_TIMEOUT):
            for _ in range(64):
                data = await stream.receive_some(65536)
                if not data:
                    self.outcomes["closed during the handshake"] += 1
                    return
                head += data
                if b"\r\n\r\n" in head:
                    break
        head, _, rest = head.partition(b"\r\n\r\n")
        if status_of(head) != "101":
            self.outcomes[f"HTTP {status_of(head)}"] += 1
            return
        frames = Frames(stream, rest)
        await stream.send_all(text_frame({"type": "connection_init", "payload": {}}))
        with trio.fail_after(ANSWER_TIMEOUT):
            frame = await frames.next()
        if frame is None:
            self.outcomes["closed before an ack"] += 1
            return
        opcode, payload = frame
        if opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            reason = payload[2:42].decode("utf-8", "replace")
            self.outcomes[f"closed {code} {reason!r}"] += 1
            return
        if b"connection_ack" not in payload:
            self.outcomes["other first message"] += 1
            return
        self.outcomes["acknowledged"] += 1
        release()  # a held socket no longer counts against the handshakes in flight
        await self._hold(stream, frames, hold_until)

    async def _hold(self, stream: trio.SocketStream, frames: Frames, hold_until: float) -> None:
        acked = trio.current_time()
        self.held_now += 1
        self.held_peak = max(self.held_peak, self.held_now)
        try:
            ping = text_frame({"type": "ping"})
            for _ in range(100_000):  # bounded by hold_until
                if trio.current_time() >= hold_until:
                    return
                await stream.send_all(ping)
                with trio.move_on_after(
                    min(PING_EVERY, max(0.1, hold_until - trio.current_time()))
                ):
                    for _ in range(1000):
                        frame = await frames.next()
                        if frame is None:
                            self.held_s.append(trio.current_time() - acked)
                            self.close_codes["EOF while held"] += 1
                            return
                        opcode, payload = frame
                        if opcode == OP_CLOSE:
                            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                            self.close_codes[f"{code} while held"] += 1
                            self.held_s.append(trio.current_time() - acked)
                            return
                        if opcode == OP_PING:
                            await stream.send_all(client_frame(OP_PONG, payload))
        finally:
            self.held_now -= 1

    def report(self) -> dict[str, Any]:
        return {
            "address": self.source,
            "attempts_per_burst": self.attempts,
            "outcomes": dict(self.outcomes.most_common()),
            "close_codes": dict(self.close_codes.most_common()),
            "held_peak": self.held_peak,
            "closed_while_held_max_s": max(self.held_s, default=math.nan),
            "bursts": self.bursts,
        }


async def watch_stdin(cancel: trio.CancelScope) -> None:
    """EOF (or a `quit` line) on stdin: the driver is done with us."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        for _ in range(10_000):
            data = await stream.receive_some(1024)
            if not data or b"quit" in data:
                break
    cancel.cancel()


async def main(args: argparse.Namespace) -> None:
    deadline = trio.current_time() + args.seconds
    hold = deadline + args.linger
    slow = SlowBodies(args.port, args, deadline, hold)
    flood = WebSocketFlood(args.port, args, deadline, hold)
    began = time.time()
    with trio.move_on_after(args.seconds + args.linger + 5) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_stdin, nursery.cancel_scope)
            if args.slow:
                nursery.start_soon(slow.run)
            if args.ws_attempts:
                nursery.start_soon(flood.run)
            print(json.dumps({"event": "started", "at": began}), flush=True)
    report = {
        "event": "report",
        "seconds": round(time.time() - began, 1),
        "deadline_hit": scope.cancelled_caught,
        "slow": slow.report(),
        "ws": flood.report(),
    }
    print(json.dumps(report), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the gateway, on 127.0.0.1")
    parser.add_argument("--seconds", type=float, required=True, help="attack for this long")
    parser.add_argument("--linger", type=float, default=30, help="then hold sockets this long")
    parser.add_argument("--slow", type=int, default=300, help="slow-body sockets at once")
    parser.add_argument("--slow-addresses", type=int, default=40, help="from 127.0.0.3 up")
    parser.add_argument("--slow-rounds", type=int, default=100, help="sockets per slot, at most")
    parser.add_argument("--body-bytes", type=int, default=100_000, help="declared body length")
    parser.add_argument("--trickle", type=float, default=3.0, help="seconds between bytes")
    parser.add_argument("--ws-address", default="127.0.0.2")
    parser.add_argument("--ws-attempts", type=int, default=3000, help="handshakes per burst")
    parser.add_argument("--ws-inflight", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--ws-burst-every", type=float, default=30.0, help="seconds")
    return parser.parse_args()


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main, parse_args())

"""The load side of bench/fanout.py: N graphql-transport-ws subscribers in one epoll loop.

Every subscriber is a raw non-blocking socket with a minimal WebSocket client (RFC 6455):
HTTP upgrade, masked client frames, unmasked server frames with 7/16/64-bit lengths,
fragments, ping -> pong, close. No asyncio and no JSON parse on the hot path: a `next`
message is recognised by its `"observedAt":"` field, whose ISO timestamp (set by the
publisher at the publish instant, same machine clock) gives the end-to-end latency. The
timestamp of one event is the same for all subscribers, so it is parsed once and cached.

Talks to the driver with one line per message:
    stdout  {"event": "ready", ...}      every subscriber is acknowledged and subscribed
    stdin   window T0 T1 GRACE           measure [T0, T1) (wall clock, epoch seconds)
    stdout  {"event": "report", ...}     at T1 + GRACE
    stdin   quit (or EOF)                close everything and exit

Two counts come out of a window: messages *received* in [T0, T1) (throughput, latency), and
messages of events *published* in [T0, T1) that arrived by T1 + GRACE (completeness); and the
bytes read from the sockets in [T0, T1) (bytes on the wire per message).

With --deflate every subscriber offers permessage-deflate exactly as Chromium does
(`Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits`): what it sends is then
compressed (RSV1), and a compressed frame is inflated before it is read, with one decompressor
per connection kept across messages unless the server answered `server_no_context_takeover`
(then a fresh one per message, which is all such a server needs).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import select
import socket
import sys
import time
import zlib
from collections import deque
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

QUERY = 'subscription { priceTicks(symbols: ["BTC"]) { symbol usd provider observedAt } }'
MARKER = b'"observedAt":"'
MARKER_LEN = len(MARKER)
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
SYNC_TAIL = b"\x00\x00\xff\xff"

CONNECTING, UPGRADING, WAIT_ACK, LIVE, CLOSED = range(5)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")


def client_frame(opcode: int, payload: bytes, *, deflate: bool = False) -> bytes:
    """One FIN frame, masked as RFC 6455 requires of a client; with `deflate`, its payload
    compressed alone (RFC 7692 §7.2.1) and RSV1 set."""
    if deflate:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        opcode |= 0x40
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + key + _mask(payload, key)


def text_frame(message: dict[str, object], *, deflate: bool = False) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return client_frame(OP_TEXT, payload, deflate=deflate)


class Conn:
    __slots__ = (
        "buf",
        "close_code",
        "count",
        "deadline",
        "frag",
        "frag_op",
        "index",
        "inflater",
        "sock",
        "state",
        "win_count",
    )

    def __init__(self, index: int, sock: socket.socket, deadline: float) -> None:
        self.index = index
        self.sock = sock
        self.state = CONNECTING
        self.buf = b""
        self.frag: list[bytes] | None = None
        self.frag_op = 0
        # permessage-deflate: None when not agreed; False when the server compresses each
        # message alone (a fresh decompressor per message); else the connection's decompressor.
        self.inflater: Any = None
        self.count = 0
        self.win_count = 0
        self.close_code: int | None = None
        self.deadline = deadline


class LoadClient:
    def __init__(self, host: str, port: int, path: str, subscribers: int, window: int) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.subscribers = subscribers
        self.window = window
        self.epoll = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.failures: dict[str, int] = {}
        self.subscribed = 0
        self.inflight = 0
        self.closed = 0
        self.close_codes: dict[str, int] = {}
        self.errors = 0
        self.other_messages: dict[str, int] = {}
        # measurement
        self.received = 0
        self.t0 = float("inf")
        self.t1 = float("inf")
        self.win_count = 0
        self.pub_count = 0  # messages of events published in [t0, t1), any arrival time
        self.latencies: list[float] = []
        self.sent_at: dict[bytes, float] = {}
        self.deflate = False  # offer permessage-deflate as Chromium does (main's --deflate)
        self.extensions: dict[str, int] = {}  # the servers' answers, counted
        self.wire_bytes = 0  # read from the sockets in [t0, t1)
        self.subscribe_message: dict[str, object] = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": QUERY},
        }
        self.init_message: dict[str, object] = {"type": "connection_init", "payload": {}}

    # -- connection setup ---------------------------------------------------------------------

    def _fail(self, conn: Conn, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1
        if conn.state in (CONNECTING, UPGRADING, WAIT_ACK):
            self.inflight -= 1
        self._drop(conn)

    def _drop(self, conn: Conn) -> None:
        if conn.state == LIVE:
            self.closed += 1
        conn.state = CLOSED
        fd = conn.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)
            self.conns.pop(fd, None)
        conn.sock.close()

    def _open(self, index: int, deadline: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = Conn(index, sock, deadline)
        self.inflight += 1
        err = sock.connect_ex((self.host, self.port))
        if err not in (0, 115):  # EINPROGRESS
            self.failures[f"connect errno {err}"] = self.failures.get(f"connect errno {err}", 0) + 1
            self.inflight -= 1
            sock.close()
            return
        self.conns[sock.fileno()] = conn
        self.epoll.register(sock.fileno(), select.EPOLLOUT)

    def _on_writable(self, conn: Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(conn, f"connect: {os.strerror(err)}")
            return
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n"
            + (f"Sec-WebSocket-Extensions: {CHROMIUM_OFFER}\r\n" if self.deflate else "")
            + "\r\n"
        ).encode()
        conn.sock.send(request)
        conn.state = UPGRADING
        self.epoll.modify(conn.sock.fileno(), select.EPOLLIN)

    def _on_upgrade(self, conn: Conn, data: bytes) -> None:
        conn.buf += data
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.buf) > 65536:
                self._fail(conn, "oversized upgrade response")
            return
        head, rest = conn.buf[:end].decode("latin-1"), conn.buf[end + 4 :]
        conn.buf = b""
        status = head.split("\r\n", 1)[0]
        if " 101 " not in status + " ":
            self._fail(conn, f"upgrade refused: {status}")
            return
        if "graphql-transport-ws" not in head.lower():
            self._fail(conn, "no graphql-transport-ws subprotocol")
            return
        answer = ""
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-extensions":
                answer = value.strip()
        self.extensions[answer or "none"] = self.extensions.get(answer or "none", 0) + 1
        if "permessage-deflate" in answer:
            keeps_context = "server_no_context_takeover" not in answer
            conn.inflater = zlib.decompressobj(-15) if keeps_context else False
        conn.state = WAIT_ACK
        conn.sock.send(self._text(conn, self.init_message))
        if rest:
            self._on_frames(conn, rest, time.time(), False)

    # -- frames -------------------------------------------------------------------------------

    def _on_frames(self, conn: Conn, data: bytes, now: float, in_window: bool) -> None:
        if conn.buf:
            data = conn.buf + data
            conn.buf = b""
        n = len(data)
        i = 0
        while n - i >= 2:
            b0 = data[i]
            b1 = data[i + 1]
            length = b1 & 0x7F
            h = i + 2
            if length == 126:
                if n - h < 2:
                    break
                length = (data[h] << 8) | data[h + 1]
                h += 2
            elif length == 127:
                if n - h < 8:
                    break
                length = int.from_bytes(data[h : h + 8], "big")
                h += 8
            key = None
            if b1 & 0x80:  # servers must not mask, but be lenient
                if n - h < 4:
                    break
                key = data[h : h + 4]
                h += 4
            end = h + length
            if end > n:
                break
            payload = data[h:end]
            if key is not None:
                payload = _mask(payload, key)
            i = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (OP_TEXT, OP_BINARY):
                if fin:
                    if b0 & 0x40:  # RSV1: compressed
                        payload = self._inflate(conn, payload)
                    self._on_message(conn, payload, now, in_window)
                else:
                    conn.frag = [payload]
                    conn.frag_op = b0 & 0x4F
            elif opcode == OP_CONT:
                if conn.frag is not None:
                    conn.frag.append(payload)
                    if fin:
                        whole = b"".join(conn.frag)
                        conn.frag = None
                        if conn.frag_op & 0x40:
                            whole = self._inflate(conn, whole)
                        self._on_message(conn, whole, now, in_window)
            elif opcode == OP_PING:
                self._send(conn, client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                conn.close_code = code
                self.close_codes[str(code)] = self.close_codes.get(str(code), 0) + 1
                self._send(conn, client_frame(OP_CLOSE, payload[:2]))
                if conn.state == LIVE:
                    self._drop(conn)
                else:
                    self._fail(conn, f"closed {code} before subscribed")
                return
        if i < n:
            conn.buf = data[i:]

    def _send(self, conn: Conn, frame: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(frame)

    def _text(self, conn: Conn, message: dict[str, object]) -> bytes:
        """A text frame for `message`, compressed when the connection agreed to deflate."""
        return text_frame(message, deflate=conn.inflater is not None)

    def _inflate(self, conn: Conn, payload: bytes) -> bytes:
        inflater = conn.inflater
        if inflater is False:
            inflater = zlib.decompressobj(-15)
        return inflater.decompress(payload + SYNC_TAIL)

    def _parse_stamp(self, stamp: bytes) -> float:
        """observedAt (ISO 8601) -> epoch seconds, cached: every subscriber sees the same one."""
        if len(self.sent_at) > 50_000:
            self.sent_at.clear()
        sent = datetime.fromisoformat(stamp.decode()).timestamp()
        self.sent_at[stamp] = sent
        return sent

    def _on_message(self, conn: Conn, payload: bytes, now: float, in_window: bool) -> None:
        k = payload.find(MARKER)
        if k >= 0:  # the hot path: a `next` carrying a tick
            k += MARKER_LEN
            stamp = payload[k : payload.find(b'"', k)]
            sent = self.sent_at.get(stamp)
            if sent is None:
                sent = self._parse_stamp(stamp)
            self.received += 1
            conn.count += 1
            if in_window:
                self.win_count += 1
                conn.win_count += 1
                self.latencies.append(now - sent)
            if self.t0 <= sent < self.t1:
                self.pub_count += 1
            return
        try:
            message = json.loads(payload)
            kind = message.get("type")
        except (ValueError, AttributeError):
            kind = "<not json>"
        if kind == "connection_ack" and conn.state == WAIT_ACK:
            conn.state = LIVE
            conn.sock.send(self._text(conn, self.subscribe_message))
            self.inflight -= 1
            self.subscribed += 1
        elif kind == "ping":
            self._send(conn, self._text(conn, {"type": "pong"}))
        elif kind in ("pong", "ka"):
            pass
        else:
            self.other_messages[str(kind)] = self.other_messages.get(str(kind), 0) + 1
            if kind == "error":
                self.errors += 1
                if conn.state == WAIT_ACK:
                    self._fail(conn, f"error before subscribed: {payload[:200]!r}")

    # -- loops --------------------------------------------------------------------------------

    def _dispatch(self, events: list[tuple[int, int]], now: float, in_window: bool) -> None:
        conns = self.conns
        sent_at = self.sent_at
        latencies = self.latencies
        t0, t1 = self.t0, self.t1
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
            if in_window:
                self.wire_bytes += len(data)
            if state == LIVE and not conn.buf and data[0] == 0x81:
                # Fast path: exactly one unmasked, unfragmented text frame carrying a tick.
                length = data[1]
                header = 2
                if length == 126 and len(data) >= 4:
                    length = (data[2] << 8) | data[3]
                    header = 4
                if length < 127 and header + length == len(data):
                    k = data.find(MARKER, header)
                    if k >= 0:
                        k += MARKER_LEN
                        stamp = data[k : data.find(b'"', k)]
                        sent = sent_at.get(stamp)
                        if sent is None:
                            sent = self._parse_stamp(stamp)
                        self.received += 1
                        conn.count += 1
                        if in_window:
                            self.win_count += 1
                            conn.win_count += 1
                            latencies.append(now - sent)
                        if t0 <= sent < t1:
                            self.pub_count += 1
                        continue
            if state == UPGRADING:
                self._on_upgrade(conn, data)
            else:
                self._on_frames(conn, data, now, in_window)

    def connect_all(self, timeout: float, per_conn_timeout: float) -> None:
        """Open every subscriber, at most `window` handshakes in flight at once (bounded)."""
        todo = deque(range(self.subscribers))
        deadline = time.monotonic() + timeout
        while (todo or self.inflight) and time.monotonic() < deadline:
            mono = time.monotonic()
            while todo and self.inflight < self.window:
                self._open(todo.popleft(), mono + per_conn_timeout)
            events = self.epoll.poll(0.05, len(self.conns) + 16)
            self._dispatch(events, time.time(), False)
            if self.inflight:
                mono = time.monotonic()
                late = [c for c in self.conns.values() if c.state < LIVE and c.deadline < mono]
                for conn in late:
                    self._fail(conn, "handshake timeout")
        for conn in [c for c in self.conns.values() if c.state < LIVE]:
            self._fail(conn, "connect phase timeout")
        self.failures["never attempted"] = len(todo)
        if not self.failures["never attempted"]:
            del self.failures["never attempted"]

    def serve(self, max_seconds: float) -> None:
        """Count messages; obey the driver's window/quit lines on stdin (bounded in time)."""
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.epoll.register(stdin, select.EPOLLIN)
        pending = b""
        end = time.monotonic() + max_seconds
        report_at = float("inf")
        grace = 0.0
        cpu_start: float | None = None
        cpu_window = 0.0
        while time.monotonic() < end:
            events = self.epoll.poll(0.02, len(self.conns) + 16)
            now = time.time()
            in_window = self.t0 <= now < self.t1
            if in_window and cpu_start is None:
                cpu_start = _cpu()
            if now >= self.t1 and cpu_start is not None and not cpu_window:
                cpu_window = _cpu() - cpu_start
            conn_events = []
            for fd, mask in events:
                if fd != stdin:
                    conn_events.append((fd, mask))
                    continue
                try:
                    chunk = os.read(stdin, 4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    words = line.decode().split()
                    if not words:
                        continue
                    if words[0] == "quit":
                        return
                    if words[0] == "window":
                        self.t0, self.t1, grace = float(words[1]), float(words[2]), float(words[3])
                        report_at = self.t1 + grace
                        end = time.monotonic() + (report_at - time.time()) + 120
            self._dispatch(conn_events, now, in_window)
            if now >= report_at:
                self._report(cpu_window)
                report_at = float("inf")

    def _report(self, cpu_window: float) -> None:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

        live = [c for c in self.conns.values() if c.state == LIVE]
        per_conn = [c.win_count for c in live]
        emit(
            {
                "event": "report",
                "window_s": self.t1 - self.t0,
                "received_total": self.received,
                "window_count": self.win_count,
                "published_window_received": self.pub_count,
                "lat_p50": pct(50),
                "lat_p90": pct(90),
                "lat_p99": pct(99),
                "lat_max": lat[-1] if lat else None,
                "conn_min": min(per_conn) if per_conn else 0,
                "conn_max": max(per_conn) if per_conn else 0,
                "live": len(live),
                "closed": self.closed,
                "close_codes": self.close_codes,
                "other_messages": self.other_messages,
                "client_cpu_s": cpu_window,
                "wire_bytes": self.wire_bytes,
                "extensions": self.extensions,
            }
        )

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            if conn.state == LIVE:
                self._send(conn, client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            conn.sock.close()
        self.conns.clear()
        self.epoll.close()


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def emit(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(client_class: type[LoadClient] | None = None, description: str | None = None) -> int:
    """Run a load client from the command line; `client_class` lets a variant (such as
    stream_client.py's) reuse the whole driver protocol."""
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/graphql")
    parser.add_argument("--subscribers", type=int, required=True)
    parser.add_argument("--window", type=int, default=100, help="handshakes in flight at once")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="hard cap on the run")
    parser.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate as Chromium does"
    )
    parser.add_argument(
        "--aliases",
        type=int,
        default=0,
        help="also select `provider` under this many aliases: a longer message per event",
    )
    args = parser.parse_args()
    limit = raise_fd_limit()
    if args.subscribers + 64 > limit:
        emit({"event": "fatal", "error": f"fd limit {limit} < {args.subscribers} subscribers"})
        return 1
    url = urlsplit(args.url)
    client = (client_class or LoadClient)(
        url.hostname or "127.0.0.1", url.port or 80, url.path or "/", args.subscribers, args.window
    )
    client.deflate = args.deflate
    if args.aliases > 0:
        wide = " ".join(f"p{i}: provider" for i in range(args.aliases))
        client.subscribe_message["payload"] = {"query": QUERY.replace(" } }", f" {wide} }} }}")}
    started = time.monotonic()
    try:
        client.connect_all(args.connect_timeout, per_conn_timeout=30.0)
        emit(
            {
                "event": "ready",
                "subscribed": client.subscribed,
                "failures": client.failures,
                "connect_s": round(time.monotonic() - started, 3),
            }
        )
        client.serve(args.max_seconds)
    finally:
        client.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())

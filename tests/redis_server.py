"""A throwaway redis-server on loopback for the broker tests (tests/broker/conftest.py).

`RedisServer.start()` runs redis-server on a free loopback port with its files in a fresh temp
dir and persistence off (`--save '' --appendonly no`), waiting a bounded time for PING;
`stop()` ends it (SIGTERM, then SIGKILL) and removes the dir. `pause()`/`resume()` stop and
start it again on the same port, for the tests of a Redis outage (its data is gone, as after a
real restart without persistence). `unavailable_reason()` says why none can be started here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "unavailable_reason"]

START_TIMEOUT = 10.0  # seconds until the first PONG


def unavailable_reason() -> str | None:
    """Why no server can be started here (None: it can)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; `url` names it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gateway-redis-"))
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls) -> RedisServer:
        server = cls()
        try:
            server.resume()
        except BaseException:
            server.stop()
            raise
        return server

    def resume(self) -> None:
        """Start redis-server on this port (again, after `pause()`)."""
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not _pings(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def pause(self) -> None:
        """Stop redis-server (its data is lost: no persistence)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.dir, ignore_errors=True)

"""A throwaway PostgreSQL server on loopback for the store tests (tests/conftest.py).

`PostgresServer.start()` runs initdb into a fresh temp dir and postgres on a free loopback port
with its unix socket in that dir (durability off: tests need speed, not crash safety), waiting
a bounded time for it to accept connections; `stop()` shuts it down (fast mode, then kill).
initdb refuses to run as root, so as root every command runs as the `postgres` user that
Debian's package creates (subprocess's `user=`: a setuid in the child, so the pid we signal is
postgres itself). `available()` says why it cannot run, if it cannot.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "unavailable_reason"]

START_TIMEOUT = 30.0  # seconds for initdb plus the first accepted connection


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def unavailable_reason() -> str | None:
    """Why no server can be started here (None: it can)."""
    if _bin_dir() is None:
        return "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb missing; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One postgres process; `url(db)` names a database on it."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None
        self._bin = bin_dir
        self._root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self._data = self._root / "data"
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self._root, user.pw_uid, user.pw_gid)
            self._user = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls) -> PostgresServer:
        server = cls()
        try:
            subprocess.run(
                [str(server._bin / "initdb"), "-D", str(server._data),
                 "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
                 "--locale=C"],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT,
                user=server._user,
                group=server._user,
                cwd=server._root,
            )  # fmt: skip
            server.resume()
        except BaseException:
            server.stop()
            raise
        return server

    def resume(self) -> None:
        """Start postgres on the existing data dir (again, after `pause()`)."""
        self._process = subprocess.Popen(
            [str(self._bin / "postgres"), "-D", str(self._data),
             "-p", str(self.port), "-k", str(self._root), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._user,
            group=self._user,
            cwd=self._root,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("postgres did not start") from None
                time.sleep(0.05)

    def pause(self) -> None:
        """Stop postgres (fast shutdown: sessions are cut), keeping its data."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop postgres and delete its data."""
        self.pause()
        shutil.rmtree(self._root, ignore_errors=True)

"""The `gateway` command as a user runs it: help, bad input, start and graceful stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


NO_UPSTREAMS = REPO / "tests" / "data" / "no-providers.toml"


def gateway(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no upstreams configured, so nothing ever leaves loopback."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GATEWAY_PROVIDERS": str(NO_UPSTREAMS), **(env or {})},
        cwd=REPO,
    )


def test_help_explains_every_command() -> None:
    result = gateway("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout
    serve = gateway("serve", "--help")
    for flag in ("--host", "--port", "--db", "--providers", "GATEWAY_PORT", "GATEWAY_DB"):
        assert flag in serve.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "--port", "http"], {}, "--port: not an integer"),
        (["serve", "--port", "70000"], {}, "between 0 and 65535"),
        (["serve"], {"GATEWAY_PORT": "abc"}, "GATEWAY_PORT must be an integer"),
        (["serve", "--providers", "/nonexistent/providers.toml"], {}, "does not exist"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = gateway(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_prints_the_sdl_and_needs_nothing_else(tmp_path: Path) -> None:
    # No environment and a bare working directory: no providers.toml, no database to open.
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "schema"],
        capture_output=True,
        text=True,
        timeout=20,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "type Query {" in result.stdout and "type Subscription {" in result.stdout
    assert result.stdout.endswith("}\n") and not result.stdout.endswith("\n\n")
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_schema_is_listed_in_help() -> None:
    assert "schema" in gateway("--help").stdout


def test_unopenable_database_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = gateway("serve", "--port", "0", "--db", str(blocker / "sub" / "g.db"))
    assert result.returncode == 1
    assert "gateway: error:" in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gateway("serve", "--port", str(port), "--db", str(tmp_path / "g.db"))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_within_5_seconds(tmp_path: Path, signum: int) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "g.db"),
            "--providers",
            str(NO_UPSTREAMS),
            "--log-format",
            "json",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "gateway did not become ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        started = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=10)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 5, elapsed
        output = process.stdout.read() if process.stdout else ""
        events = [json.loads(line)["event"] for line in output.splitlines() if line.startswith("{")]
        assert "gateway.stopping" in events and "gateway.stopped" in events
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)

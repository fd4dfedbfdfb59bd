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


# -- issue 10, item 9: a careless configuration stops `serve` with one line and exit 2 ---------
# Every URL is loopback (port 9, discard): a regression that starts the gateway stays local.

ENTRY = '[[provider]]\nid = "{id}"\ncategory = "MARKET_DATA"\nbase_url = "{url}"\n{extra}'


def serve_with(
    tmp_path: Path, providers: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`gateway serve` on a free port with this providers.toml; bounded by gateway()'s timeout
    (a gateway that starts instead of refusing fails the test by timing out, never hangs it)."""
    path = tmp_path / "providers.toml"
    path.write_text(providers)
    quiet_env = tmp_path / "quiet.env"
    quiet_env.write_text("")
    return gateway(
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "g.db"),
        env={"GATEWAY_PROVIDERS": str(path), "GATEWAY_ENV_FILE": str(quiet_env), **(env or {})},
        timeout=15,
    )


CARELESS = [
    (
        ENTRY.format(id="coingecko", url="http://127.0.0.1:9", extra="interval_seconds = nan\n"),
        {},
        "providers.toml:1: interval_seconds must be a positive, finite number, got nan",
    ),
    (
        ENTRY.format(id="kraken-stream", url="http://127.0.0.1:9/v2", extra=""),
        {},
        "providers.toml:1: base_url 'http://127.0.0.1:9/v2' is not a WebSocket URL, but"
        " 'kraken-stream' is a live stream: it needs ws:// or wss://",
    ),
    (
        ENTRY.format(id="binance", url="ws://127.0.0.1:9/ws", extra=""),
        {},
        "providers.toml:1: base_url 'ws://127.0.0.1:9/ws' is a WebSocket URL, but"
        " 'binance' is not a live stream: it needs http:// or https://",
    ),
    (
        ENTRY.format(id="mine", url="http://127.0.0.1:9", extra='collector = "nope"\n'),
        {},
        "providers.toml:1: collector 'nope' is not a known collector (one of ",
    ),
    ("# to do: add providers\n", {}, "providers.toml: no [[provider]] entry"),
    ("allow_empty = true\n", {"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL must be one of"),
]


@pytest.mark.parametrize(
    ("providers", "env", "message"),
    CARELESS,
    ids=["nan-interval", "https-stream", "wss-rest", "unknown-collector", "empty", "log-level"],
)
def test_a_careless_configuration_exits_2_with_one_line(
    tmp_path: Path, providers: str, env: dict[str, str], message: str
) -> None:
    result = serve_with(tmp_path, providers, env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gateway: error: ")
    assert message in result.stderr


def test_a_missing_or_malformed_env_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.env"
    result = serve_with(tmp_path, "allow_empty = true\n", {"GATEWAY_ENV_FILE": str(missing)})
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"gateway: error: GATEWAY_ENV_FILE: env file {missing} does not exist\n"

    broken = tmp_path / "broken.env"
    broken.write_text("# keys\nCOINGECKO_API_KEY=abc\nthis line has no equals sign\n")
    result = serve_with(tmp_path, "allow_empty = true\n", {"GATEWAY_ENV_FILE": str(broken)})
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"gateway: error: {broken}:3: expected NAME=VALUE\n"
    assert "abc" not in result.stderr

    # the same for backfill, which reads the same file
    result = gateway(
        "backfill",
        "--symbol",
        "BTC",
        "--db",
        str(tmp_path / "g.db"),
        env={"GATEWAY_ENV_FILE": str(broken)},
        timeout=15,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{broken}:3: expected NAME=VALUE" in result.stderr


def test_port_in_use_is_one_line_before_any_upstream_is_called(tmp_path: Path) -> None:
    """The port is checked before the collectors start: no upstream sees a connection and the
    only thing on stderr is the one error line (issue 13)."""
    with socket.socket() as taken, socket.socket() as upstream:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        upstream.bind(("127.0.0.1", 0))
        upstream.listen()
        url = f"http://127.0.0.1:{upstream.getsockname()[1]}"
        providers = tmp_path / "providers.toml"
        providers.write_text(ENTRY.format(id="coingecko", url=url, extra=""))
        quiet_env = tmp_path / "quiet.env"
        quiet_env.write_text("")
        result = gateway(
            "serve",
            "--port",
            str(taken.getsockname()[1]),
            "--db",
            str(tmp_path / "g.db"),
            env={"GATEWAY_PROVIDERS": str(providers), "GATEWAY_ENV_FILE": str(quiet_env)},
        )
        upstream.setblocking(False)
        with pytest.raises(BlockingIOError):
            upstream.accept()  # nothing connected: no upstream was called
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("gateway: error: cannot listen on 127.0.0.1:")
    assert not [line for line in lines if "warning" in line or "upstream" in line]

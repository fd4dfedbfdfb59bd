"""Logs: structured, and never holding a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from gateway.log import SecretMasker, configure_logging

REPO = Path(__file__).resolve().parents[1]


def test_configured_secrets_and_key_like_values_are_masked() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream, secrets=["s3cr3t-key-value"])
    log = structlog.get_logger("test")
    log.warning(
        "upstream.failed",
        url="https://x.example/api?apikey=abcdef123456&limit=1",
        header="Bearer eyJhbGciOiJIUzI1NiJ9.payload",
        nested={"k": ["prefix s3cr3t-key-value suffix"]},
        path="https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef",
    )
    try:
        raise RuntimeError("token=supersecrettoken failed")
    except RuntimeError:
        log.exception("boom")
    text = stream.getvalue()
    for secret in (
        "s3cr3t-key-value",
        "abcdef123456",
        "eyJhbGciOiJIUzI1NiJ9",
        "supersecrettoken",
        "0123456789abcdef0123456789abcdef",
    ):
        assert secret not in text
    first = json.loads(text.splitlines()[0])
    assert first["url"] == "https://x.example/api?apikey=***&limit=1"
    assert first["event"] == "upstream.failed" and first["level"] == "warning"


def test_short_values_are_not_treated_as_secrets() -> None:
    masker = SecretMasker(["ab"])
    assert masker.mask("about abc") == "about abc"


def test_stdlib_loggers_are_rendered_like_every_other_line() -> None:
    """Lines of libraries that log through the stdlib (hypercorn, trio's accept loop) come out
    as JSON under the json format, masked, once each; info lines of libraries stay out."""
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream, secrets=["s3cr3t-key-value"])
    logging.getLogger("trio.serve_listeners").error(
        "accept returned %s (%s); retrying in %s seconds", "EMFILE", "Too many open files", 0.1
    )
    logging.getLogger("hypercorn.error").warning("key s3cr3t-key-value leaked")
    logging.getLogger("httpx").info("HTTP Request: GET https://x.example/?apikey=abcdef123456")
    lines = stream.getvalue().splitlines()
    events = [json.loads(line) for line in lines]  # every line is JSON
    assert [(e["logger"], e["level"]) for e in events] == [
        ("trio.serve_listeners", "error"),
        ("hypercorn.error", "warning"),
    ]
    assert events[0]["event"] == (
        "accept returned EMFILE (Too many open files); retrying in 0.1 seconds"
    )
    assert "s3cr3t-key-value" not in stream.getvalue() and "timestamp" in events[1]


def test_serve_under_the_json_format_writes_only_json_to_stderr(tmp_path: Path) -> None:
    """`gateway serve --log-format json`, started and stopped with SIGTERM: every stderr line is
    one JSON object, and none is there twice (hypercorn's "Running on" line came out twice in
    plain text: once from its own handler, once from the root logger's)."""
    env = {**os.environ, "GATEWAY_SENTIMENT_MODEL": "off", "GATEWAY_LOG_LEVEL": "debug"}
    command = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "g.db"),
        "--providers",
        str(REPO / "tests" / "data" / "no-providers.toml"),
        "--log-format",
        "json",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: until it serves, or 30 s
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if '"gateway.serving"' in line:
                break
        process.send_signal(signal.SIGTERM)
        stdout, rest = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    lines.extend(rest.splitlines(keepends=True))
    assert process.returncode == 0, "".join(lines)
    assert stdout == ""
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}") from None
    names = [event["event"] for event in events]
    assert "gateway.serving" in names and names[-1] == "gateway.stopped"
    assert len(set(lines)) == len(lines)  # nothing twice

"""Logs: structured, and never holding a secret."""

from __future__ import annotations

import io
import json

import structlog

from gateway.log import SecretMasker, configure_logging


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

"""Logging with structlog: readable console lines on a terminal, JSON lines otherwise.

Configured once by the CLI (or a test). Every module logs through
`structlog.get_logger(__name__)` with an event name and key-value fields, never formatted
strings, so JSON logs stay queryable. Libraries that log through the stdlib (hypercorn's error
logger, trio's accept loop, httpx) go through the same renderer and masking, by one handler on
the root logger: under the json format every line is JSON, and each is written once. Their
lines below WARNING are dropped (httpx logs every request at INFO).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

__all__ = ["SecretMasker", "configure_logging"]

MASK = "***"

# Key-like things that may reach a log line even when they are not a configured secret: a key
# in a query string, an Authorization header value, a key in a known path position, and our
# own API keys (gateway.store.api_keys), of which only the public gw_<prefix>_ part is kept.
_KEYLIKE = re.compile(
    r"(?i)((?:api[_-]?key|apikey|auth_token|access_token|token|key|secret)=)[^&\s\"']+"
    r"|(\b(?:Bearer|Apikey)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|(/v3/|/v2/)[0-9a-fA-F]{24,}"
    r"|(gw_[0-9a-fA-F]{8}_)[A-Za-z0-9_-]{8,}"
)


class SecretMasker:
    """A structlog processor replacing every configured secret, and anything key-like, with
    "***" in every string of every log event (nested containers included)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _KEYLIKE.sub(lambda m: next(g for g in m.groups() if g is not None) + MASK, text)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._walk(v) for v in value)
        if isinstance(value, BaseException):
            return self.mask(repr(value))
        return value

    def __call__(
        self, logger: Any, name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            event[key] = self._walk(value)
        return event


# One for each name of gateway.vocabulary.LOG_LEVELS (GATEWAY_LOG_LEVEL).
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    fmt: str = "auto", level: str = "info", stream: Any = None, secrets: Iterable[str] = ()
) -> None:
    """Set up structlog (and the stdlib root logger hypercorn uses) for this process.

    `secrets` (every configured upstream key) are masked in every log line, as is anything
    that looks like a key; exceptions are rendered before masking so tracebacks are masked too.
    """
    stream = stream or sys.stderr
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    console = fmt == "console" or (fmt == "auto" and getattr(stream, "isatty", lambda: False)())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if console
        else structlog.processors.JSONRenderer()
    )
    masker = SecretMasker(secrets)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            masker,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # The stdlib's records: the same fields (their text is the event), masked, rendered alike.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                masker,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    logging.captureWarnings(True)  # Python warnings too, not bare text on stderr

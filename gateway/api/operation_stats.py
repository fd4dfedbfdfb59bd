"""GraphQL operations counted for Prometheus: by name and outcome (the first error's code),
and their duration by name; requests refused before execution (parse, validation, limits) are
counted too, as kind "refused". And how the engine's document cache does (hits, misses, size).

Names are the client's own (`query PricesNow {...}`), so they are bounded: the first
`MAX_NAMES` distinct names are counted as themselves, any later one as `OTHER`, and an unnamed
operation as `ANONYMOUS`; a client inventing a name per request cannot grow the exposition.
Counting is a dict lookup, an integer increment and a histogram observation.

Must never: keep an operation's text or variables, or fail a request (counting cannot raise).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from graphql import GraphQLError

from gateway.errors import GatewayError
from gateway.histogram import Histogram

__all__ = ["ANONYMOUS", "MAX_NAMES", "OTHER", "OperationStats", "outcome_code"]

MAX_NAMES: Final = 100
ANONYMOUS: Final = "(anonymous)"
OTHER: Final = "(other)"


def outcome_code(errors: Any) -> str:
    """OK without errors; else the first error's code as the response shows it
    (gateway.api.graphql_trio.format_error: a GatewayError's own, INTERNAL for any other
    exception, else `extensions.code`, else BAD_USER_INPUT for a request error)."""
    if not errors:
        return "OK"
    first = errors[0]
    original = getattr(first, "original_error", None)
    if isinstance(original, GatewayError):
        return original.code
    if original is not None and not isinstance(original, GraphQLError):
        return "INTERNAL"
    extensions = getattr(first, "extensions", None) or {}
    code = extensions.get("code") if isinstance(extensions, dict) else None
    if code:
        return str(code)
    return "BAD_USER_INPUT" if getattr(first, "path", None) is None else "INTERNAL"


class OperationStats:
    """Operations by (kind, name, code) and a duration histogram per (kind, name)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.durations: dict[tuple[str, str], Histogram] = {}
        self._names: set[str] = set()
        # The engine's cache of parsed and validated documents (GraphQLEngine._document):
        # lookups by outcome ("hit", "miss"), entries held now and the most it holds.
        self.document_lookups: Counter[str] = Counter()
        self.documents_cached = 0
        self.document_cache_size = 0

    def name(self, raw: str | None) -> str:
        if raw is None:
            return ANONYMOUS
        if raw in self._names:
            return raw
        if len(self._names) < MAX_NAMES:
            self._names.add(raw)
            return raw
        return OTHER

    def record(self, kind: str, raw_name: str | None, code: str, seconds: float) -> None:
        name = self.name(raw_name)
        self.counts[(kind, name, code)] += 1
        histogram = self.durations.get((kind, name))
        if histogram is None:
            histogram = self.durations[(kind, name)] = Histogram()
        histogram.observe(seconds)

"""Helpers for the pure parsers of live exchange streams: what a message means (`Frame`).

An exchange stream's `parse` turns one WebSocket message into a `Frame` (`IGNORED` for one that
carries nothing the client needs: acks, heartbeats). The helpers here refuse what is not JSON
(`decode_json`), accept only a finite price above zero (`positive_price`) and optional finite
numbers (`optional_finite`), and read RFC 3339 timestamps (`rfc3339`).

Pure functions and values: must never do I/O, or accept a value the exchange did not send
(a malformed field is None or an `UpstreamPayloadError`, never a guess).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick
from gateway.sources.base import is_valid_price, number_or_none

__all__ = [
    "IGNORED",
    "Frame",
    "decode_json",
    "optional_finite",
    "positive_price",
    "rfc3339",
]


@dataclass(frozen=True, slots=True)
class Frame:
    """What one upstream message means to the client; parsers return one per message.

    `ticks`: prices the message carries (canonical symbols). `error`: the exchange reported an
    error (counted and logged). `refused`: upstream ids it refused to stream, when it names
    them. `request_id`: the client request this message answers, when it says (an error that
    answers a subscribe request refuses that request's ids). `reconnect`: the exchange is
    about to close the connection and asks clients to connect again.
    """

    ticks: tuple[PriceTick, ...] = ()
    error: str | None = None
    refused: tuple[str, ...] = ()
    request_id: int | None = None
    reconnect: bool = False


IGNORED: Final = Frame()


def decode_json(message: str | bytes, provider: str, endpoint: str) -> Any:
    """The JSON value of a message, or UpstreamPayloadError (NaN/Infinity are refused too)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(message, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UpstreamPayloadError(
            f"not JSON: {exc}", provider=provider, endpoint=endpoint
        ) from None


def positive_price(value: Any) -> float | None:
    """A JSON number or numeric string that is a finite price above zero, else None."""
    price = number_or_none(value, strings=True)
    return price if is_valid_price(price) else None


def optional_finite(value: Any) -> tuple[bool, float | None]:
    """(ok, number): absent/null -> (True, None); a finite number or numeric string -> (True, x);
    anything else -> (False, None)."""
    if value is None:
        return True, None
    number = number_or_none(value, strings=True)
    if number is None or not math.isfinite(number):
        return False, None
    return True, number


_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})$"
)


def rfc3339(value: Any) -> datetime | None:
    """An aware UTC datetime from an RFC 3339 string (any number of fraction digits)."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
    except ValueError:
        return None
    return moment.astimezone(UTC)

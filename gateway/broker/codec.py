"""Events to and from the bytes a Redis stream entry holds: JSON of a dataclass's fields.

Every topic of `gateway.pubsub.EventBus` carries one frozen dataclass (`TOPIC_TYPES`); nested
dataclasses (a head's nodes, an article's sources), tuples, optionals and aware datetimes are
rebuilt from the type hints, so a replica reading an event gets the same object the leader
published. An entry that does not decode (another version of the gateway wrote it) is a
`ValueError`, which the reader logs and skips.

Must never: invent a value for a field the entry lacks (that is a `ValueError`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import datetime
from functools import cache
from typing import Any, Final, Union

from gateway.chain_models import ChainHead, GasPrice
from gateway.models import AlertRecord, PriceTick, ProviderStateChange
from gateway.news_models import FearGreedPoint, StoredArticle
from gateway.onchain_models import WhaleTransfer
from gateway.upstream.pool import RotationEvent

__all__ = ["TOPIC_TYPES", "decode", "encode"]

# The event type of each topic, by the topic's name (gateway.pubsub.EventBus).
TOPIC_TYPES: Final[dict[str, type[Any]]] = {
    "prices": PriceTick,
    "provider_states": ProviderStateChange,
    "rotations": RotationEvent,
    "alerts": AlertRecord,
    "news": StoredArticle,
    "fear_greed": FearGreedPoint,
    "chain_heads": ChainHead,
    "gas": GasPrice,
    "whales": WhaleTransfer,
}


def encode(event: Any) -> bytes:
    """The JSON of a dataclass event (datetimes as ISO 8601 with their offset)."""
    return json.dumps(_plain(event), separators=(",", ":")).encode()


def decode(topic: str, data: bytes) -> Any:
    """The event `encode` made, as the topic's dataclass; ValueError when it does not fit."""
    try:
        return _build(TOPIC_TYPES[topic], json.loads(data))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"undecodable {topic} event: {exc!r}") from exc


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _build(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        (item, *_) = typing.get_args(hint)
        return tuple(_build(item, v) for v in value)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_build(item, v) for v in value]
    if hint is datetime:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} in an event")
        return moment
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = _hints(hint)
        fields = {f.name for f in dataclasses.fields(hint) if f.init}
        return hint(**{name: _build(hints[name], value[name]) for name in fields if name in value})
    if hint is float and isinstance(value, int):
        return float(value)
    return value

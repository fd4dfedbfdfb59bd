"""Reading an upstream's 2xx response body: the size cap, and decoding the JSON.

The body is streamed and abandoned as soon as it passes the cap (`read_capped`): the provider's
`max_response_bytes` (providers.toml) or else the client's (`DEFAULT_MAX_RESPONSE_BYTES`, 5 MiB),
so a misbehaving upstream cannot make us buffer an unbounded response.

A body of `LARGE_BODY_BYTES` or more is decoded in a worker thread, not on the event loop
(`decode_json_body`; the client runs the parser in a thread too). Measured with
bench/large_body.py (6,000 DefiLlama-shaped protocols, 5.5 MB, the gateway's GC settings, a
shared 2-core machine): `json.loads` + `parse_protocols` took 95-190 ms and stopped the loop for
all of it. `json.loads` never releases the GIL, so merely moving it to a thread still stopped the
loop for 50-110 ms; a top-level array is therefore decoded element by element
(`decode_in_pieces`), which lets the GIL change hands between elements: the longest stall fell
to 17-26 ms, for 25-35 % more CPU. Smaller bodies keep the faster inline path.

Must never read more than the cap into memory, or block the event loop decoding a large body.
Sends nothing: the client owns the request and its deadline.
"""

from __future__ import annotations

import json as jsonlib
import re
from typing import Any, Final

import httpx
import trio

from gateway.upstream.attempts import AttemptCall

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "LARGE_BODY_BYTES",
    "decode_in_pieces",
    "decode_json_body",
    "read_capped",
]

DEFAULT_MAX_RESPONSE_BYTES: Final = 5 * 1024 * 1024
# Bodies this big or bigger are decoded and parsed off the event loop (see the docstring).
LARGE_BODY_BYTES: Final = 1024 * 1024


async def read_capped(call: AttemptCall, response: httpx.Response, limit: int) -> bytes:
    """The whole body, or `call.fail("malformed")` raised as soon as it passes `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise call.fail("malformed", f"response of {declared} bytes exceeds the {limit}-byte limit")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise call.fail("malformed", f"response exceeds the {limit}-byte limit")
    return bytes(body)


async def decode_json_body(body: bytes) -> Any:
    """`json.loads(body)`; a body of `LARGE_BODY_BYTES` or more in a worker thread, in pieces.

    Raises what `json.loads` raises (ValueError, RecursionError).
    """
    if len(body) >= LARGE_BODY_BYTES:
        return await trio.to_thread.run_sync(decode_in_pieces, body)
    return jsonlib.loads(body)


_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
_DECODER: Final = jsonlib.JSONDecoder()


def _skip(text: str, at: int) -> int:
    """The index of the first non-whitespace character at or after `at` (JSON whitespace)."""
    match = _WHITESPACE.match(text, at)
    return match.end() if match is not None else at


def decode_in_pieces(body: bytes) -> Any:
    """`json.loads(body)`, but a top-level array one element at a time.

    For a worker thread: `json.loads` holds the GIL for the whole document, so the event loop
    would stop for all of it anyway; between elements here, the GIL can change hands. Same
    result and same errors (ValueError) as `json.loads`.
    """
    text = body.decode(jsonlib.detect_encoding(body), "surrogatepass")
    end = len(text)
    at = _skip(text, 0)
    if at >= end or text[at] != "[":
        return jsonlib.loads(text)
    items: list[Any] = []
    at = _skip(text, at + 1)
    if at < end and text[at] == "]":
        return _finish(text, at + 1, items)
    while True:
        item, at = _DECODER.raw_decode(text, at)
        items.append(item)
        at = _skip(text, at)
        if at < end and text[at] == ",":
            at = _skip(text, at + 1)
        elif at < end and text[at] == "]":
            return _finish(text, at + 1, items)
        else:
            raise jsonlib.JSONDecodeError("Expecting ',' delimiter", text, at)


def _finish(text: str, at: int, value: list[Any]) -> list[Any]:
    if _skip(text, at) != len(text):
        raise jsonlib.JSONDecodeError("Extra data", text, at)
    return value

"""Keeping an upstream API key out of everything the upstream client quotes.

A provider's key can end up in a URL (query or path auth) and so in an httpx error, an
upstream's error text or a recorded endpoint. This module decides which spellings of a key are
hidden (`secrets_to_mask`) and replaces them with `MASK` (`masker`).

Must never log, store or return a secret itself: it only takes secrets in and hands back text
with them masked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final
from urllib.parse import quote

__all__ = ["MASK", "MIN_MASKED_SECRET", "masker", "secrets_to_mask"]

# What a secret is replaced with in messages and recorded endpoints.
MASK: Final = "***"
# Secrets shorter than this are not masked: replacing every "a" in a message helps nobody, and a
# real API key is never this short.
MIN_MASKED_SECRET: Final = 4


def secrets_to_mask(secret: str) -> tuple[str, ...]:
    """The spellings of `secret` to mask: as given and URL-quoted; none if it is too short."""
    if len(secret) < MIN_MASKED_SECRET:
        return ()
    return tuple(dict.fromkeys((secret, quote(secret, safe=""))))


def masker(secrets: tuple[str, ...]) -> Callable[[str], str]:
    """A function that replaces every one of `secrets` in a text with `MASK`."""

    def mask(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, MASK)
        return text

    return mask

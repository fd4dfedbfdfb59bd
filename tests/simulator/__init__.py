"""Test support for upstream code: the local simulator and recorded-shape fixture payloads.

Fixtures in `fixtures/` follow the providers' documented response shapes, with realistic values;
they are what the pure parsers are tested against.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from gateway.config import ProviderConfig, load_providers
from gateway.models import PriceTick

FIXTURES = Path(__file__).parent / "fixtures"
SHIPPED_PROVIDERS = Path(__file__).resolve().parents[2] / "providers.toml"


def shipped_provider(provider_id: str) -> ProviderConfig:
    """The entry the repository's own providers.toml ships for `provider_id`."""
    entry = load_providers(SHIPPED_PROVIDERS).get(provider_id)
    assert entry is not None, f"providers.toml has no {provider_id!r}"
    return entry


def load_fixture(name: str) -> Any:
    """The decoded JSON of `fixtures/<name>` (name with or without `.json`)."""
    path = FIXTURES / (name if name.endswith(".json") else f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def synthetic_protocols_body(count: int) -> bytes:
    """`count` protocols shaped like the DefiLlama /protocols fixture, as one response body
    (deterministic): what the real list of several thousand looks like, for size tests."""
    fixture = load_fixture("defillama_protocols")
    rng = random.Random(7)
    chains = ["Ethereum", "Arbitrum", "Polygon", "Avalanche", "Optimism", "Base", "BSC", "Solana"]
    protocols = []
    for n in range(count):
        item = dict(fixture[n % len(fixture)])
        on = rng.sample(chains, rng.randint(1, 6))
        item |= {
            "id": str(n),
            "name": f"Protocol {n}",
            "slug": f"protocol-{n}",
            "chains": on,
            "tvl": rng.random() * 1e9,
            "chainTvls": {c: rng.random() * 1e8 for c in on},
            "description": "A protocol " + "x" * rng.randint(40, 300),
        }
        protocols.append(item)
    return json.dumps(protocols).encode()


def fixture_bytes(name: str) -> bytes:
    """The raw bytes of `fixtures/<name>`, for serving through a mock transport."""
    return (FIXTURES / (name if name.endswith(".json") else f"{name}.json")).read_bytes()


class Published:
    """A `publish` callable for collectors: records every batch and lets a test wait for one."""

    def __init__(self) -> None:
        self.batches: list[list[PriceTick]] = []
        self._changed = trio.Event()

    async def __call__(self, ticks: Sequence[PriceTick]) -> None:
        self.batches.append(list(ticks))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[list[list[PriceTick]]], bool]) -> None:
        """Return once `predicate(batches)` holds (re-checked after every publish)."""
        while not predicate(self.batches):
            await self._changed.wait()

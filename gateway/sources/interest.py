"""Which symbols the live streams should carry right now: the union of all live interest.

Two kinds of interest add up to one set:

* the **configured** symbols (settings, providers.toml), always on;
* **held** symbols, reference-counted: a GraphQL `priceTicks` subscription holds its symbols for
  as long as it runs (`async with interest.hold(symbols):`, or `acquire` / `release`);
* **shared** symbols: with several replicas, what the other replicas' clients hold, as the
  collector leader last read it from Redis (`set_shared`, gateway/sources/replica_interest.py).

A symbol is in the union while it is configured or held at least once. Every change of the
union bumps `version` and wakes whoever waits in `wait_changed` (the stream clients, which then
subscribe and unsubscribe upstream). Holding and releasing cost O(1) per symbol; nothing
is computed until someone reads `symbols`.

Not thread-safe: use it from the Trio thread only, like everything else here.

Must never: grow without bound. At most `max_symbols` distinct symbols may be held at once; a
hold that would exceed it is refused with `InterestFull` (a client error), and nothing of it is
kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Final

from trio.lowlevel import ParkingLot

from gateway.errors import BadUserInput
from gateway.symbols import normalize_symbol

__all__ = ["DEFAULT_MAX_SYMBOLS", "InterestFull", "SymbolHold", "SymbolInterest"]

# Far above what the asset table lists today; the bound exists for when it is a data file.
DEFAULT_MAX_SYMBOLS: Final = 256


class InterestFull(BadUserInput):
    """A hold would make more distinct symbols live than the gateway streams at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"at most {limit} distinct symbols can be streamed live at once")


def _canonical(symbols: Iterable[str]) -> tuple[str, ...]:
    """Normalized, de-duplicated, blanks dropped (a str is one symbol, not its characters)."""
    if isinstance(symbols, str):
        symbols = (symbols,)
    return tuple(dict.fromkeys(s for s in map(normalize_symbol, symbols) if s))


class SymbolInterest:
    """The union of configured and held symbols, with a change notification.

    `version` increases by one for every change of the union (a symbol appearing or
    disappearing), so a reader that remembers the version it acted on can never miss one.
    """

    def __init__(
        self, configured: Iterable[str] = (), *, max_symbols: int = DEFAULT_MAX_SYMBOLS
    ) -> None:
        if max_symbols < 1:
            raise ValueError("max_symbols must be at least 1")
        self._configured = frozenset(_canonical(configured))
        self._held: dict[str, int] = {}
        self._shared: frozenset[str] = frozenset()
        self._max = max_symbols
        self._lot = ParkingLot()
        self._snapshot: frozenset[str] | None = self._configured
        self.version = 0

    # -- reading ----------------------------------------------------------------------------

    @property
    def symbols(self) -> frozenset[str]:
        """Every symbol with live interest now (configured or held)."""
        if self._snapshot is None:
            self._snapshot = self._configured | self._held.keys() | self._shared
        return self._snapshot

    @property
    def held(self) -> frozenset[str]:
        """The symbols this process's clients hold now (what a replica shares with the others)."""
        return frozenset(self._held)

    @property
    def configured(self) -> frozenset[str]:
        return self._configured

    @property
    def shared(self) -> frozenset[str]:
        return self._shared

    @property
    def max_symbols(self) -> int:
        return self._max

    def holders(self, symbol: str) -> int:
        """How many holds a symbol has (configured symbols are not counted as holds)."""
        return self._held.get(normalize_symbol(symbol), 0)

    def __contains__(self, symbol: object) -> bool:
        if not isinstance(symbol, str):
            return False
        symbol = normalize_symbol(symbol)
        return symbol in self._configured or symbol in self._held or symbol in self._shared

    def __len__(self) -> int:
        return len(self.symbols)

    # -- holding ----------------------------------------------------------------------------

    def acquire(self, symbols: Iterable[str]) -> tuple[str, ...]:
        """Hold `symbols` (one reference each); returns the canonical symbols to `release`.

        Raises `InterestFull`, holding nothing, if the held symbols would exceed the bound.
        """
        wanted = _canonical(symbols)
        new = sum(1 for s in wanted if s not in self._held)
        if new and len(self._held) + new > self._max:
            raise InterestFull(self._max)
        changed = False
        for symbol in wanted:
            count = self._held.get(symbol, 0)
            self._held[symbol] = count + 1
            changed |= count == 0 and symbol not in self._configured
        if changed:
            self._changed()
        return wanted

    def release(self, symbols: Iterable[str]) -> None:
        """Drop one reference to each symbol; releasing what is not held is ignored."""
        changed = False
        for symbol in _canonical(symbols):
            count = self._held.get(symbol, 0)
            if count > 1:
                self._held[symbol] = count - 1
            elif count == 1:
                del self._held[symbol]
                changed |= symbol not in self._configured
        if changed:
            self._changed()

    def hold(self, symbols: Iterable[str]) -> SymbolHold:
        """`with` or `async with`: hold `symbols` for the block (released however it ends)."""
        return SymbolHold(self, symbols)

    def set_shared(self, symbols: Iterable[str]) -> frozenset[str]:
        """Replace the shared symbols (other replicas' holds); at most `max_symbols` are kept, the
        first in sorted order. Returns what was kept."""
        shared = frozenset(sorted(_canonical(symbols))[: self._max])
        if shared != self._shared:
            self._shared = shared
            self._changed()
        return shared

    # -- waiting ----------------------------------------------------------------------------

    async def wait_changed(self, version: int) -> int:
        """Return the current version once it differs from `version` (at once if it does)."""
        while self.version == version:
            await self._lot.park()
        return self.version

    async def changes(self) -> AsyncIterator[frozenset[str]]:
        """The current set at once, then the set after each change.

        Changes that happen while the consumer is busy are coalesced: it sees the latest set,
        never a backlog, so a slow consumer costs nothing here.
        """
        version = self.version
        yield self.symbols
        while True:
            version = await self.wait_changed(version)
            yield self.symbols

    def _changed(self) -> None:
        self._snapshot = None
        self.version += 1
        self._lot.unpark_all()


class SymbolHold:
    """One hold on a set of symbols, released exactly once when the block ends."""

    __slots__ = ("_interest", "_symbols", "_taken")

    def __init__(self, interest: SymbolInterest, symbols: Iterable[str]) -> None:
        self._interest = interest
        self._symbols = _canonical(symbols)
        self._taken: tuple[str, ...] | None = None

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def __enter__(self) -> SymbolHold:
        if self._taken is not None:
            raise RuntimeError("a SymbolHold cannot be entered twice")
        self._taken = self._interest.acquire(self._symbols)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._taken is not None:
            taken, self._taken = self._taken, ()
            self._interest.release(taken)

    async def __aenter__(self) -> SymbolHold:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

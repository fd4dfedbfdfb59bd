"""Per-client connection counts (gateway/api/client_counts.py): bounded by what is held."""

from __future__ import annotations

from gateway.api.client_counts import ClientCounts


def test_a_client_is_forgotten_when_it_holds_nothing() -> None:
    counts = ClientCounts()
    assert (counts.add("ip:10.0.0.1"), counts.add("ip:10.0.0.1"), counts.add("key:a")) == (1, 2, 1)
    assert counts.held_by("ip:10.0.0.1") == 2 and len(counts) == 2
    assert counts.remove("ip:10.0.0.1") == 1
    assert counts.remove("ip:10.0.0.1") == 0
    assert counts.held_by("ip:10.0.0.1") == 0 and len(counts) == 1


def test_removing_what_was_never_added_never_goes_below_zero() -> None:
    counts = ClientCounts()
    assert counts.remove("ip:10.0.0.9") == 0
    assert len(counts) == 0 and counts.held_by("ip:10.0.0.9") == 0

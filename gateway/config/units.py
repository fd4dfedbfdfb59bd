"""Units of time for configuration values, so a default says what it measures: `3 * SECONDS`.

Durations are plain floats in seconds, the unit trio's timeouts take. This module imports
nothing and must never grow logic: every other module of the gateway may use it.
"""

from __future__ import annotations

__all__ = ["MINUTES", "SECONDS"]

SECONDS = 1.0
MINUTES = 60 * SECONDS

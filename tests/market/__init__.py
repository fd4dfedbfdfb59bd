"""Tests of gateway/market/: freshness limits, on-demand answers with failover and fallback."""

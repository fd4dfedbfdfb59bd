"""Tests of gateway/prices/."""

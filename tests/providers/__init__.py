"""Tests of gateway/providers/."""

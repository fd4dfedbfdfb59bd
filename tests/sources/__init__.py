"""Tests of gateway/sources/."""

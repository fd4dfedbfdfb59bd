"""Tests of gateway/store/."""

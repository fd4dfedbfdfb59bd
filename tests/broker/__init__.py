"""Tests of gateway/broker/ (several replicas over Redis), against a real redis-server."""

"""Tests of gateway/chains/: whale detection, the block follower, the chain data files."""

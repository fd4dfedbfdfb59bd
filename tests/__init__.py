"""The test suite; it mirrors gateway/ folder by folder, and simulator/ plays the upstreams."""

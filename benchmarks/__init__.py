"""Benchmarks and the load generator: tooling that measures the service, not part of it."""

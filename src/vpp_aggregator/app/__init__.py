"""Use cases: what an operator or another layer asks of the aggregator, over ports to the adapters."""

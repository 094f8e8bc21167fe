"""Message bus adapters: in-process (embedded default); Kafka in the integration work."""

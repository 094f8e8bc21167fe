"""Virtual power plant aggregator: V2G EVs and stationary batteries as one dispatchable resource."""

__version__ = "0.1.0"
SERVICE_NAME = "vpp-aggregator"

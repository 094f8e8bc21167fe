"""OpenADR 3 on the wire (3.1, and 3.0.1 from older servers): read into the domain's `DrEvent`."""

from vpp_aggregator.adapters.openadr.event import WireEvent, read_event

__all__ = ["WireEvent", "read_event"]

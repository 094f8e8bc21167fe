"""Aggregate telemetry out: per aggregation (grid node), its net power and available range
every few seconds, as ISOs require from large aggregations and from any that sells ancillary
services (`asyncapi.yaml`, AggregateTelemetry; VPP_TOPIC_AGGREGATE_TELEMETRY).

Built from the live state, which already holds every resource's last sample and capacity, so
one message per aggregation costs a pass over numpy columns, not a query."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vpp_aggregator.app.dispatch_ports import Bus
from vpp_aggregator.app.outbound import AggregateTelemetryMessage
from vpp_aggregator.domain.fleet_state import FleetState


class AggregateTelemetry:
    def __init__(
        self,
        state: FleetState,
        bus: Bus,
        clock: Callable[[], datetime],
        *,
        topic: str,
        window_minutes: float = 60.0,
    ) -> None:
        self.state = state
        self.bus = bus
        self.clock = clock
        self.topic = topic
        self.window_minutes = window_minutes  # the capacity window the API reads too

    def messages(self) -> list[AggregateTelemetryMessage]:
        now = self.clock()
        by_node = self.state.capacity(now, self.window_minutes).by_grid_node
        out: list[AggregateTelemetryMessage] = []
        for node, (kw, reporting, registered) in sorted(
            self.state.net_power(now.timestamp()).items()
        ):
            f = by_node.get(node)
            out.append(
                {
                    "aggregation_id": node,
                    "timestamp": now.isoformat(),
                    "net_power_kw": round(kw, 3),
                    "available_discharge_kw": round(f.discharge_kw, 3) if f else 0.0,
                    "available_charge_kw": round(f.charge_kw, 3) if f else 0.0,
                    "stored_energy_kwh": round(f.gross_energy_kwh, 3) if f else 0.0,
                    "discharge_energy_kwh": round(f.discharge_kwh, 3) if f else 0.0,
                    "charge_energy_kwh": round(f.charge_kwh, 3) if f else 0.0,
                    "resources": registered,
                    "resources_reporting": reporting,
                }
            )
        return out

    def publish(self) -> int:
        """Send one message per aggregation; returns how many the bus took."""
        items = [(m["aggregation_id"], dict(m)) for m in self.messages()]
        if not items:
            return 0
        return sum(self.bus.publish_many(self.topic, items))

"""Builders of resources for tests (plain domain objects, valid unless told otherwise)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from vpp_aggregator.domain.resources import Interconnection, Resource, ResourceType, Trip


def bess(resource_id: str = "bess-1", **kw: Any) -> Resource:
    fields: dict[str, Any] = {
        "resource_id": resource_id,
        "resource_type": ResourceType.BESS,
        "name": f"Battery {resource_id}",
        "fleet_id": "fleet-a",
        "grid_node": "NODE_A",
        "battery_capacity_kwh": 200.0,
        "max_charge_kw": 40.0,
        "max_discharge_kw": 50.0,
        "v2g_capable": True,
        "telemetry_enabled": True,
        "interconnection": Interconnection(True, "IA-1"),
        "min_soc_pct": 20.0,
    }
    fields.update(kw)
    return Resource(**fields)


def ev(
    resource_id: str = "ev-1",
    departs_in: timedelta | None = None,
    now: datetime | None = None,
    required_soc_pct: float = 80.0,
    **kw: Any,
) -> Resource:
    fields: dict[str, Any] = {
        "resource_id": resource_id,
        "resource_type": ResourceType.EV,
        "name": f"Vehicle {resource_id}",
        "fleet_id": "fleet-a",
        "grid_node": "NODE_A",
        "battery_capacity_kwh": 60.0,
        "max_charge_kw": 11.0,
        "max_discharge_kw": 10.0,
        "v2g_capable": True,
        "telemetry_enabled": True,
        "interconnection": Interconnection(True, "IA-2"),
        "min_soc_pct": 30.0,
    }
    if departs_in is not None:
        assert now is not None
        fields["trips"] = (
            Trip(now + departs_in, now + departs_in + timedelta(hours=8), required_soc_pct),
        )
    fields.update(kw)
    return Resource(**fields)

"""A resource as a database row and back (departure schedules and trips as JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from vpp_aggregator.domain.resources import (
    Interconnection,
    RecurringDeparture,
    Resource,
    ResourceStatus,
    ResourceType,
    Trip,
)


def schedule_to_json(schedule: Sequence[RecurringDeparture]) -> list[dict[str, Any]]:
    return [
        {
            "days": list(e.days),
            "departure": e.departure,
            "return": e.return_,
            "required_soc_pct": e.required_soc_pct,
            "timezone": e.timezone,
        }
        for e in schedule
    ]


def trips_to_json(trips: Sequence[Trip]) -> list[dict[str, Any]]:
    return [
        {
            "departure": t.departure.isoformat(),
            "return": t.return_.isoformat() if t.return_ else None,
            "required_soc_pct": t.required_soc_pct,
        }
        for t in trips
    ]


def schedule_from_json(doc: Sequence[dict[str, Any]]) -> tuple[RecurringDeparture, ...]:
    return tuple(
        RecurringDeparture(
            days=tuple(e["days"]),
            departure=e["departure"],
            return_=e.get("return"),
            required_soc_pct=e["required_soc_pct"],
            timezone=e["timezone"],
        )
        for e in doc
    )


def trips_from_json(doc: Sequence[dict[str, Any]]) -> tuple[Trip, ...]:
    return tuple(
        Trip(
            departure=datetime.fromisoformat(t["departure"]),
            return_=datetime.fromisoformat(t["return"]) if t.get("return") else None,
            required_soc_pct=t["required_soc_pct"],
        )
        for t in doc
    )


def resource_row(r: Resource) -> dict[str, Any]:
    return {
        "resource_id": r.resource_id,
        "resource_type": r.resource_type.value,
        "name": r.name,
        "fleet_id": r.fleet_id,
        "grid_node": r.grid_node,
        "battery_capacity_kwh": r.battery_capacity_kwh,
        "max_charge_kw": r.max_charge_kw,
        "max_discharge_kw": r.max_discharge_kw,
        "v2g_capable": r.v2g_capable,
        "telemetry_enabled": r.telemetry_enabled,
        "interconnection_approved": r.interconnection.approved,
        "interconnection_reference": r.interconnection.reference,
        "min_soc_pct": r.min_soc_pct,
        "max_soc_pct": r.max_soc_pct,
        "departure_schedule": schedule_to_json(r.departure_schedule),
        "trips": trips_to_json(r.trips),
        "charge_point_id": r.charge_point_id,
        "status": r.status.value,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def resource_from_row(m: Any) -> Resource:
    return Resource(
        resource_id=m.resource_id,
        resource_type=ResourceType(m.resource_type),
        name=m.name,
        fleet_id=m.fleet_id,
        grid_node=m.grid_node,
        battery_capacity_kwh=m.battery_capacity_kwh,
        max_charge_kw=m.max_charge_kw,
        max_discharge_kw=m.max_discharge_kw,
        v2g_capable=m.v2g_capable,
        telemetry_enabled=m.telemetry_enabled,
        interconnection=Interconnection(m.interconnection_approved, m.interconnection_reference),
        min_soc_pct=m.min_soc_pct,
        max_soc_pct=m.max_soc_pct,
        departure_schedule=schedule_from_json(m.departure_schedule),
        trips=trips_from_json(m.trips),
        charge_point_id=m.charge_point_id,
        status=ResourceStatus(m.status),
        created_at=m.created_at,
        updated_at=m.updated_at,
    )

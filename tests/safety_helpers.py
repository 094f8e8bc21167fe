"""The package's one safety checker applied to what the API answers: an allocation read back with
the resource as the API shows it and the settings the service runs with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

from vpp_aggregator.app.dispatch_records import read_schedule_points
from vpp_aggregator.config import Settings
from vpp_aggregator.domain.dispatch.safety import ResourceFacts, SafetyViolation, check_wire


def service_settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.aggregator.settings  # type: ignore[attr-defined]
    return settings


def facts(resource: dict[str, Any]) -> ResourceFacts:
    """A resource as `GET /resources/{id}` shows it; its floor is the service's (`floor_soc_pct`,
    made from VPP_BESS_MIN_SOC), not one of the test's."""
    leaves = resource.get("next_departure")
    return ResourceFacts(
        resource_id=resource["resource_id"],
        is_bess=resource["resource_type"] == "BESS",
        capacity_kwh=resource["battery_capacity_kwh"],
        floor_pct=resource["floor_soc_pct"],
        ceiling_pct=resource["max_soc_pct"],
        max_discharge_kw=resource["max_discharge_kw"],
        max_charge_kw=resource["max_charge_kw"],
        departure=datetime.fromisoformat(leaves["departure"]) if leaves else None,
        departure_soc_pct=leaves["required_soc_pct"] if leaves else 0.0,
    )


def violations(
    client: TestClient, allocation: dict[str, Any], resource: dict[str, Any]
) -> list[SafetyViolation]:
    """What the checker finds wrong with one allocation of a dispatch answer (none = safe)."""
    settings = service_settings(client)
    return check_wire(
        facts(resource),
        float(allocation["start_soc_pct"]),
        read_schedule_points(allocation["schedule"]),
        ramp_kw_per_min=settings.max_ramp_kw_per_min,
        round_trip_efficiency=settings.round_trip_efficiency,
    )

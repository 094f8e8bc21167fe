"""Translate between HTTP models and domain objects."""

from __future__ import annotations

from typing import Any

from vpp_aggregator.adapters.api.schemas import (
    DepartureIn,
    InterconnectionIn,
    NextDepartureOut,
    PatchIn,
    RegisterIn,
    ResourceOut,
    TelemetryOut,
    TripIn,
)
from vpp_aggregator.domain.fleet_state import LiveState
from vpp_aggregator.domain.floors import static_floor_pct
from vpp_aggregator.domain.resources import (
    Interconnection,
    RecurringDeparture,
    Resource,
    ResourceStatus,
    ResourceType,
    Trip,
)

DEFAULT_EV_MIN_SOC_PCT = 20.0


def _schedule(items: list[DepartureIn]) -> tuple[RecurringDeparture, ...]:
    return tuple(
        RecurringDeparture(
            days=tuple(d.lower() for d in e.days),
            departure=e.departure,
            return_=e.return_,
            required_soc_pct=e.required_soc_pct,
            timezone=e.timezone,
        )
        for e in items
    )


def _trips(items: list[TripIn]) -> tuple[Trip, ...]:
    return tuple(Trip(t.departure, t.return_, t.required_soc_pct) for t in items)


def resource_from_request(body: RegisterIn, bess_min_soc_pct: float) -> Resource:
    rtype = ResourceType(body.resource_type)
    min_soc = body.min_soc_pct
    if min_soc is None:
        min_soc = bess_min_soc_pct if rtype is ResourceType.BESS else DEFAULT_EV_MIN_SOC_PCT
    rid = body.resource_id or ""
    return Resource(
        resource_id=rid,
        resource_type=rtype,
        name=body.name,
        fleet_id=body.fleet_id,
        grid_node=body.grid_node,
        battery_capacity_kwh=body.battery_capacity_kwh,
        max_charge_kw=body.max_charge_kw,
        max_discharge_kw=body.max_discharge_kw,
        v2g_capable=body.v2g_capable,
        telemetry_enabled=body.telemetry_enabled,
        interconnection=Interconnection(
            body.interconnection.approved, body.interconnection.reference
        ),
        min_soc_pct=min_soc,
        max_soc_pct=body.max_soc_pct,
        departure_schedule=_schedule(body.departure_schedule),
        trips=_trips(body.trips),
        charge_point_id=body.charge_point_id,
    )


def changes_from_patch(body: PatchIn) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in ("name", "min_soc_pct", "max_soc_pct", "charge_point_id"):
        if name in body.model_fields_set and getattr(body, name) is not None:
            changes[name] = getattr(body, name)
    if body.departure_schedule is not None:
        changes["departure_schedule"] = _schedule(body.departure_schedule)
    if body.trips is not None:
        changes["trips"] = _trips(body.trips)
    if body.status is not None:
        changes["status"] = ResourceStatus(body.status)
    return changes


def resource_out(r: Resource, live: LiveState | None, bess_min_soc_pct: float) -> ResourceOut:
    assert r.created_at is not None and r.updated_at is not None
    out = ResourceOut(
        resource_id=r.resource_id,
        resource_type=r.resource_type.value,
        name=r.name or r.resource_id,
        fleet_id=r.fleet_id,
        grid_node=r.grid_node,
        battery_capacity_kwh=r.battery_capacity_kwh,
        max_charge_kw=r.max_charge_kw,
        max_discharge_kw=r.max_discharge_kw,
        v2g_capable=r.v2g_capable,
        telemetry_enabled=r.telemetry_enabled,
        interconnection=InterconnectionIn(
            approved=r.interconnection.approved, reference=r.interconnection.reference
        ),
        min_soc_pct=r.min_soc_pct,
        max_soc_pct=r.max_soc_pct,
        floor_soc_pct=float(
            static_floor_pct(r.resource_type is ResourceType.BESS, r.min_soc_pct, bess_min_soc_pct)
        ),
        departure_schedule=[
            DepartureIn(
                days=list(e.days),
                departure=e.departure,
                return_=e.return_,
                required_soc_pct=e.required_soc_pct,
                timezone=e.timezone,
            )
            for e in r.departure_schedule
        ],
        trips=[
            TripIn(departure=t.departure, return_=t.return_, required_soc_pct=t.required_soc_pct)
            for t in r.trips
        ],
        charge_point_id=r.charge_point_id or r.resource_id,
        status=r.status.value,
        created_at=r.created_at,
        updated_at=r.updated_at,
        availability_reason="inactive" if r.status is ResourceStatus.INACTIVE else None,
    )
    if live is not None:
        if live.telemetry_at is not None and live.soc_pct is not None:
            out.telemetry = TelemetryOut(
                timestamp=live.telemetry_at,
                soc_pct=live.soc_pct,
                plugged_in=live.plugged_in,
                power_kw=live.power_kw,
            )
        if live.next_departure is not None and live.departure_soc_pct is not None:
            out.next_departure = NextDepartureOut(
                departure=live.next_departure, required_soc_pct=live.departure_soc_pct
            )
        out.availability_factor = live.availability_factor
        out.availability_reason = live.availability_reason
        out.safety_lockout = live.discharge_locked
        out.early_departures = live.early_departures
        out.floor_now_soc_pct = live.floor_now_soc_pct
    return out

"""Registration requirements. Every failed rule is reported at once, each naming its field."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vpp_aggregator.domain.resources import WEEKDAYS, Resource, ResourceType

MIN_BATTERY_CAPACITY_KWH = 50.0


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    message: str


def _parse_hhmm(value: str) -> bool:
    parts = value.split(":")
    if (
        len(parts) != 2
        or not all(p.isdigit() for p in parts)
        or len(parts[1]) != 2
        or len(parts[0]) > 2
    ):
        return False
    hour, minute = int(parts[0]), int(parts[1])
    return 0 <= hour <= 23 and 0 <= minute <= 59


def _check_schedule(resource: Resource) -> list[Violation]:
    out: list[Violation] = []
    for i, entry in enumerate(resource.departure_schedule):
        where = f"departure_schedule[{i}]"
        bad_days = [d for d in entry.days if d not in WEEKDAYS]
        if not entry.days or bad_days:
            out.append(
                Violation(
                    f"{where}.days",
                    f"Days must be a non-empty list of {', '.join(WEEKDAYS)}"
                    + (f"; not {', '.join(bad_days)}." if bad_days else "."),
                )
            )
        if not _parse_hhmm(entry.departure):
            out.append(
                Violation(
                    f"{where}.departure",
                    f"Departure time must be HH:MM (24 h), not {entry.departure!r}.",
                )
            )
        if entry.return_ is not None and not _parse_hhmm(entry.return_):
            out.append(
                Violation(
                    f"{where}.return", f"Return time must be HH:MM (24 h), not {entry.return_!r}."
                )
            )
        try:
            ZoneInfo(entry.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            out.append(
                Violation(
                    f"{where}.timezone",
                    f"Unknown time zone {entry.timezone!r}; use an IANA name such as America/Los_Angeles.",
                )
            )
        out.extend(
            _check_required_soc(resource, f"{where}.required_soc_pct", entry.required_soc_pct)
        )
    for i, trip in enumerate(resource.trips):
        where = f"trips[{i}]"
        if trip.departure.tzinfo is None:
            out.append(
                Violation(
                    f"{where}.departure",
                    "Trip departure needs a time zone offset (e.g. 2026-11-25T07:30:00Z).",
                )
            )
        if trip.return_ is not None:
            if trip.return_.tzinfo is None:
                out.append(Violation(f"{where}.return", "Trip return needs a time zone offset."))
            elif trip.departure.tzinfo is not None and trip.return_ <= trip.departure:
                out.append(Violation(f"{where}.return", "Trip return must be after its departure."))
        out.extend(
            _check_required_soc(resource, f"{where}.required_soc_pct", trip.required_soc_pct)
        )
    out.extend(_overlapping_trips(resource))
    return out


def _overlapping_trips(resource: Resource) -> list[Violation]:
    """A vehicle is on one trip at a time: a trip may not leave before the one before it is back
    (or at the same moment as another)."""
    timed = sorted(
        (t.departure, i, t.return_)
        for i, t in enumerate(resource.trips)
        if t.departure.tzinfo is not None and (t.return_ is None or t.return_.tzinfo is not None)
    )
    out = []
    for (dep_a, i_a, back_a), (dep_b, i_b, _) in itertools.pairwise(timed):
        if dep_b == dep_a or (back_a is not None and dep_b < back_a):
            out.append(
                Violation(
                    f"trips[{i_b}].departure",
                    f"Trip overlaps trips[{i_a}]: it leaves before that one is back.",
                )
            )
    return out


def _check_required_soc(resource: Resource, where: str, required: float) -> list[Violation]:
    if not 0 <= required <= 100:
        return [
            Violation(
                where, f"Required departure SoC must be between 0 and 100 %, not {required:g}."
            )
        ]
    if required > resource.max_soc_pct:
        return [
            Violation(
                where,
                f"Required departure SoC {required:g} % is above the vehicle's maximum SoC "
                f"{resource.max_soc_pct:g} %, so it could never be met.",
            )
        ]
    return []


def check_registration(resource: Resource, bess_min_soc_pct: float) -> list[Violation]:
    """Return every rule the resource breaks (empty when it may join the aggregation)."""
    out: list[Violation] = []
    if resource.battery_capacity_kwh < MIN_BATTERY_CAPACITY_KWH:
        out.append(
            Violation(
                "battery_capacity_kwh",
                f"Battery capacity must be at least {MIN_BATTERY_CAPACITY_KWH:g} kWh; "
                f"{resource.battery_capacity_kwh:g} kWh is too small to aggregate.",
            )
        )
    if not resource.v2g_capable:
        out.append(
            Violation(
                "v2g_capable",
                "The resource must be bidirectional (V2G capable) to discharge to the grid.",
            )
        )
    if not resource.telemetry_enabled:
        out.append(
            Violation(
                "telemetry_enabled",
                "Telemetry must be enabled: the aggregator cannot offer a resource it cannot see.",
            )
        )
    if not resource.interconnection.approved:
        out.append(
            Violation(
                "interconnection.approved",
                "Grid interconnection must be approved by the utility before the resource can export.",
            )
        )
    if not resource.interconnection.reference.strip():
        out.append(
            Violation(
                "interconnection.reference", "An interconnection agreement reference is required."
            )
        )
    if resource.max_discharge_kw <= 0:
        out.append(
            Violation("max_discharge_kw", "Maximum discharge power must be greater than 0 kW.")
        )
    if resource.max_charge_kw <= 0:
        out.append(Violation("max_charge_kw", "Maximum charge power must be greater than 0 kW."))
    if not 0 <= resource.min_soc_pct <= 100:
        out.append(Violation("min_soc_pct", "Minimum SoC must be between 0 and 100 %."))
    if not 0 < resource.max_soc_pct <= 100:
        out.append(Violation("max_soc_pct", "Maximum SoC must be above 0 and at most 100 %."))
    if resource.min_soc_pct >= resource.max_soc_pct:
        out.append(
            Violation(
                "min_soc_pct",
                f"Minimum SoC ({resource.min_soc_pct:g} %) must be below the maximum "
                f"SoC ({resource.max_soc_pct:g} %).",
            )
        )
    if resource.resource_type is ResourceType.BESS:
        if resource.min_soc_pct < bess_min_soc_pct:
            out.append(
                Violation(
                    "min_soc_pct",
                    f"A battery's minimum SoC may not be below the fleet floor of "
                    f"{bess_min_soc_pct:g} % (VPP_BESS_MIN_SOC); got {resource.min_soc_pct:g} %.",
                )
            )
        if resource.departure_schedule:
            out.append(
                Violation("departure_schedule", "A stationary battery has no departure schedule.")
            )
        if resource.trips:
            out.append(Violation("trips", "A stationary battery has no trips."))
    out.extend(_check_schedule(resource))
    if not resource.resource_id.strip():
        out.append(Violation("resource_id", "The resource id may not be blank."))
    if not resource.grid_node.strip():
        out.append(
            Violation(
                "grid_node",
                "A grid node (pricing node) is required: FERC 2222 aggregations are per node.",
            )
        )
    if not resource.fleet_id.strip():
        out.append(Violation("fleet_id", "A fleet id is required."))
    return out

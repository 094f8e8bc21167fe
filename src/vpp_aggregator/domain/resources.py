"""What a resource is: an EV or a stationary battery with its limits and its driver's needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ResourceType(StrEnum):
    EV = "EV"
    BESS = "BESS"


class ResourceStatus(StrEnum):
    """`suspended` is an operator's pause (kept in the fleet, offers nothing); `inactive` is deleted."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    INACTIVE = "inactive"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Interconnection:
    approved: bool
    reference: str


@dataclass(frozen=True, slots=True)
class RecurringDeparture:
    """A weekly driver routine: leaves at `departure` local time needing `required_soc_pct`."""

    days: tuple[str, ...]
    departure: str  # "HH:MM" local
    return_: str | None  # "HH:MM" local, informational
    required_soc_pct: float
    timezone: str


@dataclass(frozen=True, slots=True)
class Trip:
    """A one-off departure; `departure` and `return_` are aware datetimes."""

    departure: datetime
    return_: datetime | None
    required_soc_pct: float


@dataclass(slots=True)
class Resource:
    resource_id: str
    resource_type: ResourceType
    name: str
    fleet_id: str
    grid_node: str
    battery_capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    v2g_capable: bool
    telemetry_enabled: bool
    interconnection: Interconnection
    min_soc_pct: float
    max_soc_pct: float = 100.0
    departure_schedule: tuple[RecurringDeparture, ...] = ()
    trips: tuple[Trip, ...] = ()
    charge_point_id: str | None = None
    status: ResourceStatus = ResourceStatus.ACTIVE
    created_at: datetime | None = None
    updated_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)

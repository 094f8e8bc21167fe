"""HTTP request and response models: one schema drives validation and the OpenAPI document."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    field_validator,
)

from vpp_aggregator.app.messages import TelemetrySample
from vpp_aggregator.domain.instants import instant_problem

Kw = float
RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")
FINITE = ConfigDict(allow_inf_nan=False, populate_by_name=True)


def _in_service_range(value: datetime) -> datetime:
    problem = instant_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Instant = Annotated[datetime, AfterValidator(_in_service_range)]


class InterconnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approved: StrictBool
    reference: str = Field(
        "", max_length=200, description="Utility interconnection agreement reference"
    )


class DepartureIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
    days: list[str] = Field(..., examples=[["mon", "tue", "wed", "thu", "fri"]])
    departure: str = Field(..., examples=["07:30"], description="Local time HH:MM")
    return_: str | None = Field(None, alias="return", examples=["17:30"])
    required_soc_pct: StrictFloat = Field(..., examples=[80])
    timezone: str = Field("UTC", examples=["America/Los_Angeles"])


class TripIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
    departure: Instant
    return_: Instant | None = Field(None, alias="return")
    required_soc_pct: StrictFloat


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    resource_id: str | None = Field(None, min_length=1, max_length=128, examples=["bess-depot-01"])
    resource_type: Literal["EV", "BESS"]

    @field_validator("resource_id")
    @classmethod
    def _id_is_a_plain_name(cls, value: str | None) -> str | None:
        # Starting with a letter or digit: "." and ".." would be path segments in every URL.
        if value is not None and not RESOURCE_ID.fullmatch(value):
            raise ValueError(
                "use letters, digits and . _ : - only, starting with a letter or digit"
            )
        return value

    name: str = Field("", max_length=200)
    fleet_id: str = Field(..., min_length=1, max_length=128)
    grid_node: str = Field(..., min_length=1, max_length=128)
    battery_capacity_kwh: StrictFloat = Field(..., gt=0, le=1_000_000)
    max_charge_kw: StrictFloat = Field(..., ge=0, le=1_000_000)
    max_discharge_kw: StrictFloat = Field(..., ge=0, le=1_000_000)
    v2g_capable: StrictBool
    telemetry_enabled: StrictBool
    interconnection: InterconnectionIn
    min_soc_pct: StrictFloat | None = Field(
        None,
        description="EV: the driver's minimum (default 20). BESS: at least VPP_BESS_MIN_SOC (the default).",
    )
    max_soc_pct: StrictFloat = 100.0
    departure_schedule: list[DepartureIn] = Field(default_factory=list, max_length=50)
    trips: list[TripIn] = Field(default_factory=list, max_length=500)
    charge_point_id: str | None = Field(None, max_length=128)


class RefusedOut(BaseModel):
    index: int  # its place in the list sent
    resource_id: str | None
    errors: list[FieldError]


class BatchOut(BaseModel):
    registered: int
    rejected: list[RefusedOut]


class PatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str | None = Field(None, max_length=200)
    min_soc_pct: StrictFloat | None = None
    max_soc_pct: StrictFloat | None = None
    departure_schedule: list[DepartureIn] | None = Field(None, max_length=50)
    trips: list[TripIn] | None = Field(None, max_length=500)
    status: Literal["active", "suspended"] | None = None
    charge_point_id: str | None = Field(None, max_length=128)


class TelemetryOut(BaseModel):
    timestamp: datetime
    soc_pct: float
    plugged_in: bool
    power_kw: float | None


class NextDepartureOut(BaseModel):
    departure: datetime
    required_soc_pct: float


class ResourceOut(BaseModel):
    resource_id: str
    resource_type: Literal["EV", "BESS"]
    name: str
    fleet_id: str
    grid_node: str
    battery_capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    v2g_capable: bool
    telemetry_enabled: bool
    interconnection: InterconnectionIn
    min_soc_pct: float
    max_soc_pct: float
    floor_soc_pct: float = Field(
        ..., description="The SoC never dispatched below, before any departure raise"
    )
    departure_schedule: list[DepartureIn]
    trips: list[TripIn]
    charge_point_id: str
    status: Literal["active", "suspended", "inactive"]
    created_at: datetime
    updated_at: datetime
    telemetry: TelemetryOut | None = None
    next_departure: NextDepartureOut | None = None
    availability_factor: float = 0.0
    availability_reason: str | None = None
    safety_lockout: bool = Field(
        False, description="Below its floor: locked out of discharge until it recovers"
    )
    early_departures: int = Field(
        0,
        description="Of the vehicle's last 10 stays, how many its driver ended more than an hour "
        "before the departure given (counted up to 5). From VPP_NEED_FLOOR_EARLY_LEAVES of them (0 "
        "by default: every vehicle) the vehicle keeps its next trip's whole need as its floor "
        "for the whole stay; discharge draws on vehicles with more of them last",
    )
    floor_now_soc_pct: float | None = Field(
        None,
        description="The SoC not dispatched below now, before the raise toward a departure: "
        "floor_soc_pct, or the next trip's whole need for a vehicle kept to it (early_departures)",
    )


class ResourceList(BaseModel):
    items: list[ResourceOut]
    total: int
    limit: int
    offset: int


class TelemetryIn(BaseModel):
    """The body of `POST /telemetry`, for the document only: the route reads it by hand (one bad
    sample must not sink a good batch) into the same `TelemetrySample`s as the Kafka consumer."""

    samples: list[TelemetrySample] = Field(..., max_length=10_000)


class RejectionOut(BaseModel):
    index: int
    reason: str


class IngestOut(BaseModel):
    accepted: int
    rejected: list[RejectionOut]


class PowerEnergy(BaseModel):
    kw: float
    kwh: float


class FiguresOut(BaseModel):
    discharge: PowerEnergy
    charge: PowerEnergy
    gross_energy_kwh: float
    resource_count: int
    available_resource_count: int


class NodeFiguresOut(FiguresOut):
    meets_minimum: bool


class CapacityOut(BaseModel):
    as_of: datetime
    duration_minutes: float
    discharge: PowerEnergy
    charge: PowerEnergy
    gross_energy_kwh: float
    resource_count: int
    available_resource_count: int
    min_capacity_kw: float
    meets_minimum: bool
    by_type: dict[str, FiguresOut]
    by_grid_node: dict[str, NodeFiguresOut]
    available_capacity_kw: float = Field(
        ..., description="Discharge kW (name read by the market gateway)"
    )
    available_capacity_kwh: float = Field(
        ...,
        description="Discharge kWh at the grid connection, losses deducted (name read by the "
        "market gateway)",
    )
    shared_state_age_seconds: float | None = Field(
        None,
        description="With several processes (REDIS_URL): seconds since this process last heard "
        "from the shared state, so a stale answer shows; null when the state is not shared",
    )


class HealthOut(BaseModel):
    status: Literal["healthy", "degraded"]
    service: str
    version: str


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    detail: str
    errors: list[FieldError] = Field(default_factory=list)

"""HTTP request and response models: one schema drives validation and the OpenAPI document."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
)

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


class ResourceList(BaseModel):
    items: list[ResourceOut]
    total: int
    limit: int
    offset: int


class SampleIn(BaseModel):
    """Lenient on purpose: a naive timestamp or an out-of-range SoC is rejected per sample, with a reason."""

    model_config = ConfigDict(allow_inf_nan=True)
    resource_id: str = Field(..., max_length=128)
    timestamp: datetime
    soc_pct: float
    plugged_in: StrictBool
    power_kw: float = 0.0


class TelemetryIn(BaseModel):
    samples: list[SampleIn] = Field(..., max_length=10_000)


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


class DispatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    target_kw: StrictFloat = Field(
        ..., description="Positive: discharge to the grid; negative: charge", examples=[250.0]
    )
    start: Instant | None = Field(None, description="Default: now. At most a minute in the past.")
    duration_minutes: StrictInt = Field(..., examples=[60], description="1 to 1440")
    grid_node: str | None = Field(None, max_length=128)
    fleet_id: str | None = Field(None, max_length=128)
    resource_ids: list[str] | None = Field(None, max_length=100_000)
    source: Literal["manual", "market_award", "dr_event"] = "manual"
    reference: str | None = Field(None, max_length=200)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


class AwardIn(BaseModel):
    """An award as the market gateway sends it (`vpp.market.awards`); its rules (the offer it
    clears, the side, at most the quantity offered) are `MarketService.award`'s, for Kafka too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    award_id: str = Field(..., examples=["aw-1"])
    aggregation_id: str = Field(
        ...,
        validation_alias=AliasChoices("aggregation_id", "grid_node"),
        description="The grid node the offer was made for",
    )
    interval_start: Instant
    interval_end: Instant
    awarded_kw: StrictFloat = Field(
        ..., description="Up (discharge), more than 0 and at most the offer's quantity_kw"
    )
    price_per_mwh: StrictFloat | None = None


class SchedulePoint(BaseModel):
    t: datetime
    setpoint_kw: float


class AllocationOut(BaseModel):
    resource_id: str
    resource_type: str
    chargePointId: str
    setpoint_kw: float
    schedule: list[SchedulePoint]
    start_soc_pct: float
    expected_end_soc_pct: float
    binding_constraint: str


class ShortfallReason(BaseModel):
    rule: str
    detail: str


class DispatchOut(BaseModel):
    dispatch_id: str
    status: Literal["scheduled", "active", "completed", "cancelled", "partial", "rejected"]
    source: str
    reference: str | None
    target_kw: float
    start: datetime
    duration_minutes: int
    end_at: datetime = Field(..., description="When the last resource has ramped back to zero")
    allocated_kw: float = Field(
        ..., description="Sustained fleet power once ramped (signed like the target)"
    )
    shortfall_kw: float
    shortfall_reasons: list[ShortfallReason]
    ramp_complete_at: datetime | None
    solver: str
    revision: int
    resource_count: int
    allocations: list[AllocationOut]
    response_time_ms: float


class RevisionOut(BaseModel):
    revision: int
    at: datetime
    reason: str
    detail: dict[str, object]


class DispatchDetailOut(DispatchOut):
    planned_kw_now: float
    delivered_kw: float | None = Field(
        ..., description="Sum of the allocated resources' fresh telemetry, if any"
    )
    reporting_resources: int
    plan_kw: list[float] = Field(
        ..., description="Planned fleet power, one point per minute from start"
    )
    revisions: list[RevisionOut]


class DispatchSummary(BaseModel):
    dispatch_id: str
    status: str
    source: str
    reference: str | None
    target_kw: float
    allocated_kw: float
    shortfall_kw: float
    start: datetime
    duration_minutes: int
    end_at: datetime
    revision: int
    created_at: datetime


class DispatchList(BaseModel):
    items: list[DispatchSummary]
    total: int
    limit: int
    offset: int


class Quantiles(BaseModel):
    p10: float
    p50: float
    p90: float


class ForecastInterval(BaseModel):
    start: datetime
    end: datetime
    available_vehicles: Quantiles
    discharge_kw: Quantiles
    discharge_kwh: Quantiles
    charge_kw: Quantiles


class ForecastModelInfo(BaseModel):
    name: str
    version: str
    trained_at: datetime
    fallback: bool
    detail: str
    history_hours: int = Field(
        description="Resource-hours of telemetry history behind the answer (last VPP forecast window)."
    )
    backtest: dict[str, float] | None


class ForecastEventOut(BaseModel):
    event_id: str
    name: str
    grid_node: str | None
    start: datetime
    end: datetime
    availability_factor: float


class ForecastEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(..., min_length=1, max_length=200, examples=["Depot stand-down"])
    grid_node: str | None = Field(None, max_length=128, description="Whole fleet when absent")
    start: Instant
    end: Instant
    availability_factor: StrictFloat = Field(
        ...,
        description="Expected effect on availability: 0 = nobody plugged in, 0.5 = half, 1.2 = 20 % more",
    )


class WeatherHourIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    hour_utc: Instant
    # Beyond the records ever measured at the surface (-89.2 °C, 56.7 °C; 305 mm in an hour).
    temperature_c: StrictFloat | None = Field(None, ge=-95.0, le=65.0)
    precipitation_mm: StrictFloat | None = Field(None, ge=0.0, le=400.0)


class WeatherIn(BaseModel):
    hours: list[WeatherHourIn] = Field(..., max_length=10_000)


class WeatherStoredOut(BaseModel):
    stored: int


class ForecastOut(BaseModel):
    generated_at: datetime
    horizon_hours: int
    interval_minutes: int
    grid_node: str | None
    resource_count: int
    model: ForecastModelInfo
    history_loading: bool = Field(
        description="True for a while after a start, until stored history is read back in."
    )
    events: list[ForecastEventOut]
    intervals: list[ForecastInterval]

"""HTTP models of what the grid asks for: dispatches and market awards, and their answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
)

from vpp_aggregator.adapters.api.schemas import Instant
from vpp_aggregator.app.messages import MarketAward


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


class AwardIn(MarketAward):
    """An award as the market gateway sends it (`vpp.market.awards`): the same type the Kafka
    consumer reads, but a field we do not know is refused here (a typo an operator should see);
    its rules (the offer it clears, the side, at most the quantity offered) are
    `MarketService.award`'s, for Kafka too."""

    model_config = ConfigDict(extra="forbid")


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

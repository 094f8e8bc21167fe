"""HTTP models of the forecast and of what operators tell it (weather, events)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    create_model,
)

from vpp_aggregator.adapters.api.schemas import Instant
from vpp_aggregator.domain.forecast.quantiles import QUANTILES

# One required field per quantile level the forecast answers (`QUANTILES`: p5, p10, p20, p30,
# p50, p90), non-decreasing from each level to the next.
if TYPE_CHECKING:
    Quantiles = BaseModel
else:
    Quantiles = create_model(
        "Quantiles",
        __doc__="One figure at each quantile level; rising levels never give a smaller value.",
        **{
            q: (float, Field(description=f"P{q[1:]}: about {q[1:]} % of outcomes fall below it"))
            for q in QUANTILES
        },
    )


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

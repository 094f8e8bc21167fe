"""What the services answer each other and the adapters, as types: capacity now and the
capacity forecast. They are JSON-ready `TypedDict`s (the HTTP answers, the Redis keys and the
market offers are built from them), so that a reader of `market` or `redis_state` sees each
field's type where it is used, and mypy catches a misspelt one."""

from __future__ import annotations

from typing import Any, NotRequired

from typing_extensions import TypedDict

from vpp_aggregator.domain.forecast.quantiles import Quantile


class PowerEnergy(TypedDict):
    kw: float
    kwh: float


class CapacityFigures(TypedDict):
    """One aggregation's figures at the grid connection (`docs/architecture.md`)."""

    discharge: PowerEnergy
    charge: PowerEnergy
    gross_energy_kwh: float  # Σ SoC × capacity × availability, in the cells
    resource_count: int
    available_resource_count: int
    meets_minimum: NotRequired[bool]  # totals and grid nodes: discharge kW ≥ the market minimum


class CapacityView(CapacityFigures):
    as_of: str
    duration_minutes: float
    min_capacity_kw: float
    by_type: dict[str, CapacityFigures]
    by_grid_node: dict[str, CapacityFigures]
    available_capacity_kw: float
    available_capacity_kwh: float


# A forecast figure at every quantile level the forecast answers (`QUANTILES`: p5 ... p90).
Quantiles = dict[Quantile, float]


class ForecastInterval(TypedDict):
    start: str
    end: str
    available_vehicles: Quantiles
    discharge_kw: Quantiles
    discharge_kwh: Quantiles
    charge_kw: Quantiles


class ForecastModelInfo(TypedDict):
    name: str
    version: str
    trained_at: str
    fallback: bool  # True: the seasonal profile, no trained model serves
    detail: str
    backtest: dict[str, Any] | None  # the stored model's backtest report, as written
    history_hours: NotRequired[int]


class ForecastEvent(TypedDict):
    event_id: str
    name: str
    grid_node: str | None
    start: str
    end: str
    availability_factor: float


class CapacityForecast(TypedDict):
    generated_at: str
    horizon_hours: int
    interval_minutes: int
    grid_node: str | None
    resource_count: int
    model: ForecastModelInfo
    history_loading: bool
    events: list[ForecastEvent]
    intervals: list[ForecastInterval]

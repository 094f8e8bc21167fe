"""Forecast inputs an operator supplies: hourly weather and events with an expected effect."""

from __future__ import annotations

from fastapi import APIRouter, status

from vpp_aggregator.adapters.api.audit import AuditDep
from vpp_aggregator.adapters.api.auth import Admin, Viewer, fleet_wide
from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.adapters.api.schemas import ErrorOut
from vpp_aggregator.adapters.api.schemas_forecast import (
    ForecastEventIn,
    ForecastEventOut,
    WeatherIn,
    WeatherStoredOut,
)

router = APIRouter(prefix="/forecast", tags=["forecast"])


@router.post("/weather", response_model=WeatherStoredOut, responses={422: {"model": ErrorOut}})
def post_weather(body: WeatherIn, agg: AggDep, who: Admin, audit: AuditDep) -> WeatherStoredOut:
    """Hourly temperature and precipitation (observed or forecast) used as model features."""
    fleet_wide(who)
    hours = [(h.hour_utc, h.temperature_c, h.precipitation_mm) for h in body.hours]
    stored = agg.forecast.inputs.add_weather(hours)
    audit.record("forecast.weather", None, {"hours": stored})
    return WeatherStoredOut(stored=stored)


@router.post(
    "/events",
    status_code=status.HTTP_201_CREATED,
    response_model=ForecastEventOut,
    responses={422: {"model": ErrorOut}},
)
def post_event(body: ForecastEventIn, agg: AggDep, who: Admin, audit: AuditDep) -> ForecastEventOut:
    """A named period (fleet stand-down, stadium event) that scales expected availability."""
    fleet_wide(who)
    e = agg.forecast.inputs.add_event(
        body.name, body.grid_node, body.start, body.end, body.availability_factor
    )
    audit.record(
        "forecast.event",
        e["event_id"],
        {"name": body.name, "grid_node": body.grid_node, "factor": body.availability_factor},
    )
    return ForecastEventOut(
        event_id=e["event_id"],
        name=e["name"],
        grid_node=e["grid_node"],
        start=e["start_at"],
        end=e["end_at"],
        availability_factor=e["availability_factor"],
    )


@router.get("/model", responses={200: {"description": "Current model and training state"}})
def get_model(agg: AggDep, who: Viewer) -> dict[str, object]:
    """The model the forecast serves (null while the seasonal profile answers) and the training state."""
    fleet_wide(who)
    return agg.forecast.model_status()


@router.post("/model/train", status_code=status.HTTP_202_ACCEPTED)
def train_model(agg: AggDep, who: Admin, audit: AuditDep) -> dict[str, object]:
    """Retrain on the fleet's telemetry history in the background; forecasts keep being served."""
    fleet_wide(who)
    state = agg.forecast.models.start_training()
    audit.record("forecast.train", None, {"state": state.get("state")})
    return state

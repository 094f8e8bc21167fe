"""Frequency regulation: the grid operator's signal over HTTP (beside its topic, and for
replays), and how each regulating aggregation is doing, scored as PJM scores it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from vpp_aggregator.adapters.api.auth import Operator, Viewer, fleet_wide
from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.app.messages import RegulationSignal

router = APIRouter(prefix="/regulation", tags=["regulation"])


@router.post("/signal")
def post_signal(agg: AggDep, who: Operator, signal: RegulationSignal) -> dict[str, Any]:
    """A signal value (−1…+1) for one aggregation, or for every one regulating now; passed on
    to its devices at once (`vpp.regulation.broadcast`), as from `vpp.regulation.signal`."""
    fleet_wide(who)
    outcome = agg.regulation.take(signal)
    return {"outcome": outcome.outcome, "detail": outcome.detail}


@router.get("/status")
def status(agg: AggDep, who: Viewer) -> dict[str, Any]:
    """Each aggregation with regulation awarded now: its capacity, the base its resources were
    given, and PJM's score of each hour recorded (correlation, delay, precision); and how many
    commands the independent checker stopped."""
    fleet_wide(who)
    return agg.regulation.status()

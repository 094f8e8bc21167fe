"""A dispatch and its allocations as database rows and back."""

from __future__ import annotations

import builtins
from typing import Any

from vpp_aggregator.app.dispatch_records import (
    DispatchRecord,
    DispatchStatus,
)


def dispatch_row(r: DispatchRecord) -> dict[str, Any]:
    return {
        "dispatch_id": r.dispatch_id,
        "status": r.status.value,
        "source": r.source,
        "reference": r.reference,
        "idempotency_key": r.idempotency_key,
        "target_kw": r.target_kw,
        "start_at": r.start,
        "duration_minutes": r.duration_minutes,
        "end_at": r.end_at,
        "scope": r.scope,
        "solver": r.solver,
        "allocated_kw": r.allocated_kw,
        "shortfall_kw": r.shortfall_kw,
        "shortfall_reasons": r.shortfall_reasons,
        "ramp_complete_at": r.ramp_complete_at,
        "response_time_ms": r.response_time_ms,
        "revision": r.revision,
        "plan_kw": r.plan_kw,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def dispatch_record(m: Any, summary: bool = False) -> DispatchRecord:
    """The record of a row; a `summary` row has no plan or shortfall reasons (left empty)."""
    return DispatchRecord(
        dispatch_id=m.dispatch_id,
        status=DispatchStatus(m.status),
        source=m.source,
        reference=m.reference,
        idempotency_key=m.idempotency_key,
        target_kw=m.target_kw,
        start=m.start_at,
        duration_minutes=m.duration_minutes,
        end_at=m.end_at,
        scope=m.scope,
        solver=m.solver,
        allocated_kw=m.allocated_kw,
        shortfall_kw=m.shortfall_kw,
        shortfall_reasons=[] if summary else m.shortfall_reasons,
        ramp_complete_at=m.ramp_complete_at,
        response_time_ms=m.response_time_ms,
        revision=m.revision,
        plan_kw=[] if summary else m.plan_kw,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


def allocation_rows(r: DispatchRecord) -> builtins.list[dict[str, Any]]:
    return [
        {
            "dispatch_id": r.dispatch_id,
            "revision": r.revision,
            "resource_id": a.resource_id,
            "resource_type": a.resource_type,
            "charge_point_id": a.charge_point_id,
            "setpoint_kw": a.setpoint_kw,
            "schedule_start": a.schedule_start,
            "schedule_kw": a.schedule_kw,
            "start_soc_pct": a.start_soc_pct,
            "expected_end_soc_pct": a.expected_end_soc_pct,
            "binding_constraint": a.binding_constraint[:200],  # the column width
        }
        for a in r.allocations
    ]

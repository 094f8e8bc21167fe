"""OpenADR `CHARGE_STATE_SETPOINT` as a dispatch: "the state of charge of an energy storage
resource" (Definition), units from the payload descriptor."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from vpp_aggregator.app.dispatch import DispatchRequest
from vpp_aggregator.app.dr_store import SOURCE
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.domain.dr_asks import Battery, FleetAsk, Scope, charge_state_pct

MAX_MINUTES = 24 * 60


def charge_to(
    event_id: str,
    ask: FleetAsk,
    scope: Scope,
    start: datetime,
    end: datetime,
    key: str,
    now: datetime,
    batteries: Callable[[Scope, datetime, int], list[Battery]],
) -> list[DispatchRequest] | Outcome:
    """Each targeted battery below the goal that can charge charges up to it, never past it;
    each above it that can discharge discharges down to it, never below it (nor below its own
    floor); both within the window, as energy goals (like a recharge, not power obligations).
    Why nothing is dispatched otherwise, as an outcome."""
    assert ask.charge_state is not None
    value, units = ask.charge_state
    duration = min(MAX_MINUTES, math.ceil((end - start).total_seconds() / 60.0))
    requests = []
    for direction, suffix in ((-1, ""), (1, ":down")):
        found = batteries(scope, now, direction)
        goals = {b.resource_id: charge_state_pct(value, units, b.capacity_kwh) for b in found}
        away = [
            b
            for b in found
            if direction * (b.soc_pct - goals[b.resource_id]) > 0.5  # on the wrong side of it
        ]
        if not away:
            continue
        power = sum(b.max_charge_kw if direction < 0 else b.max_discharge_kw for b in away)
        goal = {b.resource_id: goals[b.resource_id] for b in away}
        requests.append(
            DispatchRequest(
                target_kw=direction * power,
                duration_minutes=duration,
                start=None if start <= now else start,
                resource_ids=tuple(goal),
                source=SOURCE,
                reference=event_id,
                idempotency_key=key + suffix,
                charge_ceiling_pct=goal if direction < 0 else None,
                discharge_floor_pct=goal if direction > 0 else None,
            )
        )
    if not requests:
        why = "no battery in scope is free to move toward it now (at it, held by another dispatch, or unavailable)"
        return Outcome("ignored", f"{ask.meaning}: {why}")
    return requests

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
    batteries: Callable[[Scope, datetime], list[Battery]],
) -> DispatchRequest | Outcome:
    """Each targeted battery that can charge and is below the goal charges up to it, never
    past it, within the window: one charging dispatch with an energy goal (like a recharge, not a
    power obligation). Why nothing is dispatched otherwise, as an outcome."""
    assert ask.charge_state is not None
    value, units = ask.charge_state
    found = batteries(scope, now)
    goals = {b.resource_id: charge_state_pct(value, units, b.capacity_kwh) for b in found}
    below = [b for b in found if b.soc_pct < goals[b.resource_id] - 0.5]
    above = sum(1 for b in found if b.soc_pct > goals[b.resource_id] + 0.5)
    if not below:
        why = f"{ask.meaning}: no battery that can charge now is below it"
        if above:
            why += f"; {above} above it (discharging to a state of charge is not commanded yet)"
        return Outcome("ignored", why)
    return DispatchRequest(
        target_kw=-sum(b.max_charge_kw for b in below),
        duration_minutes=min(MAX_MINUTES, math.ceil((end - start).total_seconds() / 60.0)),
        start=None if start <= now else start,
        resource_ids=tuple(b.resource_id for b in below),
        source=SOURCE,
        reference=event_id,
        idempotency_key=key,
        charge_ceiling_pct={b.resource_id: goals[b.resource_id] for b in below},
    )

"""A target the fleet cannot hold to the end of its window is planned as the highest level it
can hold up to the average of the burst that delivers the most energy, found to within the
search's resolution (`domain/dispatch/held`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dispatch_fleets import random_inputs
from vpp_aggregator.domain.dispatch.held import RESOLUTION, held_kw, plan_held
from vpp_aggregator.domain.dispatch.lp import solve_lp
from vpp_aggregator.domain.dispatch.outcome import TOLERANCE
from vpp_aggregator.domain.dispatch.problem import DispatchProblem

RAMP = 10.0


def _long_case(seed: int) -> DispatchProblem:
    """An hours-long window at a good share of the fleet's power: most such fleets run out of
    energy (or vehicles leave) before the window ends."""
    rng = np.random.default_rng(seed)
    inputs = random_inputs(int(rng.integers(1, 13)), int(rng.integers(0, 2**31)))
    direction = int(rng.choice([1, -1]))
    power = inputs.max_discharge_kw if direction > 0 else inputs.max_charge_kw
    target = direction * max(rng.uniform(0.2, 1.0) * float(power[inputs.available].sum()), 1.0)
    return DispatchProblem(inputs, target, int(rng.integers(30, 300)), RAMP)


@pytest.mark.parametrize("seed", range(40))
def test_a_level_the_fleet_cannot_hold_is_planned_as_the_highest_it_can(seed: int) -> None:
    p = _long_case(seed)
    window = p.duration_min
    plan = plan_held(p, solve_lp)
    inside = plan.fleet_power()[1 : window + 1] if plan.rows.size else None
    if inside is None or inside.size == 0 or held_kw(p, plan, p.target_abs_kw):
        return  # nothing to plan, or the target itself is held
    level = float(inside.max())
    if not held_kw(p, plan, level):
        return  # no level can be held to the window's end: the most energy instead
    # Two steps of the resolution above it (and up to the burst's average less the plan's
    # tolerance, where the search starts), the fleet no longer holds the level asked.
    average_kw = abs(solve_lp(p).delivered_kwh(p)) * 60.0 / window * (1 - TOLERANCE)
    above = min(level * (1 + 2 * RESOLUTION), average_kw)
    if above <= level * (1 + 1e-9):
        return
    trial = solve_lp(dataclasses.replace(p, target_kw=p.direction * above))
    assert not held_kw(p, trial, above), (level, above)

"""Random fleets for dispatch tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from vpp_aggregator.domain.dispatch.problem import ResourceInputs


def random_inputs(n: int, seed: int, departures: bool = True) -> ResourceInputs:
    rng = np.random.default_rng(seed)
    bess = rng.random(n) < 0.25
    cap = np.where(bess, rng.uniform(100, 1000, n), rng.uniform(50, 120, n))
    power = np.where(bess, cap * rng.uniform(0.25, 0.5, n), rng.choice([7.2, 11.0, 19.2], n))
    floor = np.where(bess, rng.uniform(20, 30, n), rng.uniform(10, 40, n))
    dep = np.where(bess | (rng.random(n) < 0.4) | (not departures), np.inf, rng.uniform(2, 400, n))
    return ResourceInputs(
        resource_ids=[f"r{i}" for i in range(n)],
        is_bess=bess,
        capacity_kwh=cap,
        soc_pct=rng.uniform(5, 98, n),
        floor_pct=floor,
        ceiling_pct=np.where(bess, 95.0, 100.0),
        max_discharge_kw=power,
        max_charge_kw=power,
        power_kw=rng.choice([0.0, 0.0, -7.0, 4.0, -30.0], n),
        departure_min=dep,
        departure_soc_pct=rng.uniform(50, 95, n),
        available=rng.random(n) < 0.9,
        early_departures=np.where(bess, 0, rng.integers(0, 11, n)),
    )


fleet_cases = st.tuples(
    st.integers(1, 30),  # resources
    st.integers(0, 2**31 - 1),  # seed
    st.floats(-3000, 3000).filter(lambda x: abs(x) > 1),  # target kW
    st.integers(1, 90),  # window minutes
    st.booleans(),  # draw on resources moving against the dispatch
)

# What a market or DR event asks of an aggregation: at least the 100 kW minimum for 5+ minutes.
market_cases = st.tuples(
    st.integers(1, 30),
    st.integers(0, 2**31 - 1),
    st.floats(100, 3000) | st.floats(-3000, -100),
    st.integers(5, 120),
    st.booleans(),
)

"""A synthetic fleet for tests and benchmarks: many resources with realistic spread, no data files."""

from __future__ import annotations

import numpy as np

from vpp_aggregator.domain.resources import (
    Interconnection,
    RecurringDeparture,
    Resource,
    ResourceType,
)

ROUTINES = [
    (
        RecurringDeparture(
            ("mon", "tue", "wed", "thu", "fri"),
            f"{h:02d}:{m:02d}",
            "17:30",
            80.0,
            "America/Los_Angeles",
        ),
    )
    for h in range(5, 10)
    for m in (0, 15, 30, 45)
]


def synthetic_fleet(n: int, start: int = 0, seed: int = 1) -> list[Resource]:
    """A mixed fleet (80 % EVs on weekday routines, 20 % BESS) over 50 grid nodes and 10 fleets."""
    rng = np.random.default_rng(seed + start)
    caps = rng.choice([57.5, 64.8, 77.0, 82.0, 100.0], size=n)
    out = []
    for k in range(n):
        i = start + k
        is_ev = i % 5 != 0
        out.append(
            Resource(
                resource_id=f"{'ev' if is_ev else 'bess'}-{i:07d}",
                resource_type=ResourceType.EV if is_ev else ResourceType.BESS,
                name="",
                fleet_id=f"fleet-{i % 10}",
                grid_node=f"NODE_{i % 50:02d}",
                battery_capacity_kwh=float(caps[k]) if is_ev else 500.0,
                max_charge_kw=11.0 if is_ev else 250.0,
                max_discharge_kw=11.0 if is_ev else 250.0,
                v2g_capable=True,
                telemetry_enabled=True,
                interconnection=Interconnection(True, f"IA-{i}"),
                min_soc_pct=30.0 if is_ev else 20.0,
                departure_schedule=ROUTINES[i % len(ROUTINES)] if is_ev else (),
            )
        )
    return out

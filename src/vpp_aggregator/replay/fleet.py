"""The replay's fleet: one vehicle per regular driver (or per charger where the file names no
drivers), a real V2G model each, drawn by registration count as the demo does, plus batteries;
their registrations, and their stays turned into visits with the SoC each driver needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vpp_aggregator.demo.drivers import load_ev_models
from vpp_aggregator.domain.efficiency import one_way_efficiency
from vpp_aggregator.domain.resources import Interconnection, Resource, ResourceType
from vpp_aggregator.replay.devices import Hardware, Visits, arrival_and_need
from vpp_aggregator.replay.stays import Stays

BESS_FLOOR_PCT = 20.0  # the registration's minimum; the service's own floor is the rule


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """`--fleet`: `ev=N` caps the vehicles (the N busiest drivers; default all regular ones),
    `bess=M` adds batteries, `bess_kwh=` sizes them, `per_week=` is a regular driver's
    minimum stays a week, `nodes=` the grid nodes vehicles spread over."""

    ev: int | None = None
    bess: int = 4
    bess_kwh: float = 500.0
    per_week: float = 0.5
    nodes: int = 1

    @classmethod
    def parse(cls, text: str | None) -> FleetSpec:
        if not text:
            return cls()
        fields: dict[str, Any] = {}
        kinds = {"ev": int, "bess": int, "bess_kwh": float, "per_week": float, "nodes": int}
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in kinds or not value.strip():
                raise ValueError(
                    f"fleet spec part {part!r}: expected one of {', '.join(kinds)} as name=value"
                )
            fields[name] = kinds[name](value)
            if fields[name] < 0:
                raise ValueError(f"fleet spec {name} must be >= 0, not {value}")
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class ReplayFleet:
    hardware: Hardware
    visits: Visits
    soc_pct: np.ndarray
    registrations: list[Resource]
    drivers: tuple[str, ...]  # per EV: the driver (or charger) whose stays it replays
    grid_nodes: tuple[str, ...]


def build(
    stays: Stays,
    spec: FleetSpec,
    start_ts: float,
    end_ts: float,
    data_dir: Path,
    seed: int,
    round_trip_efficiency: float,
    fleet_id: str = "replay",
) -> ReplayFleet:
    rng = np.random.default_rng(seed)
    keys = stays.regular(start_ts, end_ts, spec.per_week)
    if spec.ev is not None:
        keys = keys[: spec.ev]
    models = load_ev_models(str(data_dir / "prices_nl" / "ev_specs_v2g_enabled2024.json"))
    weights = np.array([m[4] for m in models])
    picks = rng.choice(len(models), size=len(keys), p=weights / weights.sum())
    nodes = tuple(f"NODE_{chr(ord('A') + k)}" for k in range(max(1, spec.nodes)))
    n_ev, n = len(keys), len(keys) + spec.bess
    cap, pc, pd = np.zeros(n), np.zeros(n), np.zeros(n)
    lo, hi, soc = np.zeros(n), np.full(n, 100.0), np.zeros(n)
    regs: list[Resource] = []
    ids: list[str] = []
    for i, k in enumerate(keys):
        model, cap_kwh, charge_kw, discharge_kw, _ = models[int(picks[i])]
        rid = f"{fleet_id}-ev-{i + 1:04d}"
        cap[i], pc[i], pd[i] = cap_kwh, charge_kw, discharge_kw
        lo[i] = float(rng.choice([15.0, 20.0, 25.0, 30.0]))
        hi[i] = float(rng.choice([90.0, 100.0], p=[0.3, 0.7]))
        ids.append(rid)
        regs.append(
            _registration(
                rid,
                "EV",
                f"{model} ({stays.by} {stays.keys[k]})",
                fleet_id,
                nodes[i % len(nodes)],
                cap_kwh,
                charge_kw,
                discharge_kw,
                lo[i],
                hi[i],
            )
        )
    for b in range(spec.bess):
        i = n_ev + b
        rid = f"{fleet_id}-bess-{b + 1:03d}"
        cap[i] = spec.bess_kwh
        pc[i] = pd[i] = 0.5 * spec.bess_kwh  # C-rate 0.5
        lo[i], hi[i] = BESS_FLOOR_PCT, 95.0
        soc[i] = float(rng.uniform(50.0, 80.0))
        ids.append(rid)
        regs.append(
            _registration(
                rid,
                "BESS",
                f"Battery site {b + 1}",
                fleet_id,
                nodes[i % len(nodes)],
                cap[i],
                pc[i],
                pd[i],
                lo[i],
                hi[i],
            )
        )
    hw = Hardware(tuple(ids), np.arange(n) < n_ev, cap, pc, pd, lo, hi)
    return ReplayFleet(
        hw,
        _visits(stays, keys, hw, start_ts, end_ts, rng, round_trip_efficiency),
        soc,
        regs,
        tuple(stays.keys[k] for k in keys),
        nodes,
    )


def _visits(
    stays: Stays,
    keys: list[int],
    hw: Hardware,
    start_ts: float,
    end_ts: float,
    rng: np.random.Generator,
    round_trip_efficiency: float,
) -> Visits:
    device_of = {k: i for i, k in enumerate(keys)}
    inside = stays.between(start_ts, end_ts)
    rows = np.flatnonzero(np.isin(inside.key, np.array(keys, dtype=np.int64)))
    dev = np.array([device_of[int(k)] for k in inside.key[rows]], dtype=np.int64)
    eta = one_way_efficiency(round_trip_efficiency)
    arrival = np.zeros(rows.size)
    need = np.zeros(rows.size)
    for j, r in enumerate(rows.tolist()):
        i = int(dev[j])
        # Drivers arrive with what their trips left them: spread, never below their minimum.
        arrival[j] = float(rng.uniform(max(hw.min_soc_pct[i], 25.0), 60.0))
        need[j] = arrival_and_need(
            float(hw.capacity_kwh[i]),
            float(hw.max_charge_kw[i]),
            float(hw.min_soc_pct[i]),
            float(hw.max_soc_pct[i]),
            float(inside.end_ts[r] - inside.start_ts[r]),
            float(inside.needed_kwh[r]),
            eta,
            arrival[j],
        )
    return Visits(
        dev,
        inside.start_ts[rows],
        inside.end_ts[rows],
        arrival,
        need,
        inside.stated_departure_ts[rows],
    )


def _registration(
    rid: str,
    kind: str,
    name: str,
    fleet_id: str,
    node: str,
    cap_kwh: float,
    charge_kw: float,
    discharge_kw: float,
    min_soc: float,
    max_soc: float,
) -> Resource:
    return Resource(
        resource_id=rid,
        resource_type=ResourceType(kind),
        name=name,
        fleet_id=fleet_id,
        grid_node=node,
        battery_capacity_kwh=float(cap_kwh),
        max_charge_kw=float(charge_kw),
        max_discharge_kw=float(discharge_kw),
        v2g_capable=True,
        telemetry_enabled=True,
        interconnection=Interconnection(True, f"IA-{rid}"),
        min_soc_pct=float(min_soc),
        max_soc_pct=float(max_soc),
    )

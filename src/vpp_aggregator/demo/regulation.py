"""Replay a regulation signal against a simulated fleet: the service's allocation
(`domain/regulation.allocate`) re-planned every minute, each command proven safe by the
independent checker before it goes out, devices that hear the signal a few seconds late and
follow it at no more than their ramp limit, and PJM's hourly performance score of what they did.

The fleet: vehicles plugged in for the evening (60 kWh, 11 kW both ways, 30 % driver minimum,
leaving at 07:00 with 80 %) and batteries (200 kWh, 50 kW, 20 % floor), in a 4:1 mix, states
of charge spread around the middle, seeded."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from vpp_aggregator.domain.dispatch.safety import ResourceFacts
from vpp_aggregator.domain.regulation import (
    Participation,
    RegulationResources,
    Sizing,
    allocate,
    signal_rate_per_min,
    size_fleet,
)
from vpp_aggregator.domain.regulation_safety import RegulationCommand, check_regulation
from vpp_aggregator.domain.regulation_score import HourScore, hourly_scores

F8 = np.ndarray
EV = {"kwh": 60.0, "kw": 11.0, "floor": 30.0, "leave_soc": 80.0}
BESS = {"kwh": 200.0, "kw": 50.0, "floor": 20.0}
BESS_EVERY = 5  # one battery in five resources
RAMP_KW_PER_MIN = 10.0
REPLAN_S = 60.0
HORIZON_S = 15 * 60.0  # each command holds this long at most
RATE_PERCENTILE = 99.0
ROUND_TRIP = 0.9


def read_signal(path: Path) -> tuple[F8, F8, datetime]:
    """A PJM regulation signal file: a timestamp column and a value column (−1…+1)."""
    times, values = [], []
    with path.open(newline="") as f:
        rows = csv.reader(f)
        next(rows)  # header
        for row in rows:
            if len(row) >= 2 and row[0]:
                times.append(datetime.fromisoformat(row[0]))
                values.append(float(row[1]))
    if len(times) < 2:
        raise ValueError(f"{path}: fewer than two signal values")
    t0 = times[0]
    t = np.array([(x - t0).total_seconds() for x in times])
    return t, np.clip(np.array(values), -1.0, 1.0), t0


@dataclass
class Fleet:
    n: int
    seed: int = 7
    start_hour: float = 16.0  # local time of the replay's first value
    is_bess: F8 = field(init=False)
    kwh: F8 = field(init=False)
    kw: F8 = field(init=False)
    floor: F8 = field(init=False)
    soc: F8 = field(init=False)
    leave_s: F8 = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.is_bess = (np.arange(self.n) % BESS_EVERY) == BESS_EVERY - 1
        self.kwh = np.where(self.is_bess, BESS["kwh"], EV["kwh"])
        self.kw = np.where(self.is_bess, BESS["kw"], EV["kw"])
        self.floor = np.where(self.is_bess, BESS["floor"], EV["floor"])
        self.soc = rng.uniform(40.0, 60.0, self.n)
        to_seven = ((24.0 + 7.0 - self.start_hour) % 24.0) * 3600.0
        self.leave_s = np.where(self.is_bess, np.inf, to_seven)

    def resources(self, elapsed_s: float, power_kw: F8) -> RegulationResources:
        return RegulationResources(
            [f"r{i}" for i in range(self.n)],
            self.kwh,
            self.soc.copy(),
            self.floor,
            np.full(self.n, 100.0),
            self.kw,
            self.kw,
            self.leave_s - elapsed_s,
            np.where(self.is_bess, 0.0, EV["leave_soc"]),
            np.ones(self.n, dtype=bool),
            power_kw.copy(),
        )

    def facts(self, i: int, elapsed_s: float) -> tuple[ResourceFacts, float | None]:
        leaves = self.leave_s[i] - elapsed_s
        return (
            ResourceFacts(
                resource_id=f"r{i}",
                is_bess=bool(self.is_bess[i]),
                capacity_kwh=float(self.kwh[i]),
                floor_pct=float(self.floor[i]),
                ceiling_pct=100.0,
                max_discharge_kw=float(self.kw[i]),
                max_charge_kw=float(self.kw[i]),
                departure_soc_pct=0.0 if self.is_bess[i] else EV["leave_soc"],
            ),
            None if math.isinf(leaves) else float(leaves),
        )


def default_size(t: F8, signal: F8, capacity_kw: float) -> Sizing:
    """The documented sizing rule on the default mix (README, "Frequency regulation")."""
    f = Fleet(BESS_EVERY * 20)
    give = np.maximum(f.soc - f.floor, 0) / 100 * f.kwh
    take = np.maximum(100.0 - f.soc, 0) / 100 * f.kwh
    running = np.cumsum(signal * np.diff(t, append=t[-1] + 2.0) / 3600.0)
    usable = float(take.mean() if running[np.argmax(np.abs(running))] < 0 else give.mean())
    sized = size_fleet(
        t,
        signal,
        capacity_kw,
        power_kw=float(f.kw.mean()),
        usable_kwh=usable * 0.8,  # keep a fifth of the room for the allocation's safety margins
        ramp_kw_per_min=RAMP_KW_PER_MIN,
        percentile=RATE_PERCENTILE,
    )
    return sized


@dataclass(frozen=True)
class Replay:
    hours: list[HourScore]
    resources: int
    capacity_kw: float
    safety_violations: int
    commands: int
    soc_violations: int  # resource-steps outside floor or ceiling, as the devices measured
    offered_kw_min: float  # the least participation the fleet could safely carry at a re-plan
    departures_unmet: int  # vehicles that could no longer reach their departure SoC at the end


def replay(
    t: F8,
    signal: F8,
    capacity_kw: float,
    n: int,
    *,
    seed: int = 7,
    start_hour: float = 16.0,
    progress: Callable[[float], None] | None = None,
) -> Replay:
    fleet = Fleet(n, seed, start_hour)
    rng = np.random.default_rng(seed + 1)
    heard_late = rng.integers(1, 3, n)  # the signal reaches each device 2 or 4 s late
    dt = float(np.median(np.diff(t)))
    rate = signal_rate_per_min(t, signal, RATE_PERCENTILE)
    eta = math.sqrt(ROUND_TRIP)
    power = np.zeros(n)
    base, part = np.zeros(n), np.zeros(n)
    sent_base, sent_part = np.full(n, np.nan), np.full(n, np.nan)
    sent_until = np.full(n, -np.inf)  # devices stop at their command's end
    renew = min(2 * REPLAN_S, HORIZON_S / 2)
    response = np.zeros(t.size)
    fleet_base = np.zeros(t.size)
    violations = commands = soc_broken = 0
    offered_min = math.inf
    next_plan = 0.0
    for k, now in enumerate(t):
        if now >= next_plan:
            plan: Participation = allocate(
                fleet.resources(now, power),
                capacity_kw,
                horizon_s=HORIZON_S,
                ramp_kw_per_min=RAMP_KW_PER_MIN,
                signal_rate_per_min=rate,
                eta=eta,
            )
            offered_min = min(offered_min, plan.capacity_kw)
            changed = (
                np.isnan(sent_part)
                | (
                    np.abs(plan.participation_kw - sent_part) + np.abs(plan.base_kw - sent_base)
                    > np.maximum(0.5, 0.05 * sent_part)
                )
                | (sent_until - now < renew)
            )
            for i in np.flatnonzero(changed).tolist():
                facts, leaves = fleet.facts(i, now)
                cmd = RegulationCommand(
                    f"r{i}",
                    float(plan.base_kw[i]),
                    float(plan.participation_kw[i]),
                    RAMP_KW_PER_MIN,
                    float(plan.valid_s[i]),
                )
                violations += len(
                    check_regulation(
                        cmd,
                        facts,
                        soc_pct=float(fleet.soc[i]),
                        departure_in_s=leaves,
                        max_ramp_kw_per_min=RAMP_KW_PER_MIN,
                        round_trip_efficiency=ROUND_TRIP,
                        power_kw=float(power[i]),
                    )
                )
            commands += int(changed.sum())
            sent_base = np.where(changed, plan.base_kw, sent_base)
            sent_part = np.where(changed, plan.participation_kw, sent_part)
            sent_until = np.where(changed, now + plan.valid_s, sent_until)
            base, part = sent_base.copy(), sent_part.copy()
            next_plan = now + REPLAN_S
            if progress is not None:
                progress(now / max(float(t[-1]), 1.0))
        heard = signal[np.maximum(k - heard_late, 0)]
        held = now < sent_until
        target = np.where(held, np.clip(base + part * heard, -fleet.kw, fleet.kw), 0.0)
        step = RAMP_KW_PER_MIN * dt / 60.0
        power += np.clip(target - power, -step, step)
        stored = np.where(power > 0, power / eta, power * eta) * dt / 3600.0
        fleet.soc -= stored / fleet.kwh * 100.0
        soc_broken += int(
            np.count_nonzero((fleet.soc < fleet.floor - 1e-6) | (fleet.soc > 100 + 1e-6))
        )
        response[k] = power.sum()
        fleet_base[k] = np.where(held, base, 0.0).sum()
    scores = hourly_scores(t, signal, (response - fleet_base) / capacity_kw)
    left_h = np.maximum(fleet.leave_s - float(t[-1]), 0.0) / 3600.0
    reach = fleet.soc + fleet.kw * eta * left_h / fleet.kwh * 100.0
    unmet = int(np.count_nonzero(~fleet.is_bess & (reach < EV["leave_soc"] - 1e-6)))
    return Replay(scores, n, capacity_kw, violations, commands, soc_broken, offered_min, unmet)

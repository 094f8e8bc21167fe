"""Simulated devices for a replay: vehicles plugged in exactly during their driver's real stays,
batteries always connected; each follows the service's V2G commands as a real charger does,
a few seconds late, at no more than its ramp limit, inside its own power and charge limits,
and refuses a small share of commands. Telemetry drops out now and then. Seeded throughout.

Columnar (one row per device), advanced in steps of at most a minute, so a year of a few
hundred devices is a few hundred thousand numpy steps."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.efficiency import one_way_efficiency

START_ALLOWANCE_S = 600.0
F8 = NDArray[np.float64]
I8 = NDArray[np.int64]
B1 = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How devices depart from an ideal follower (all configurable, all seeded)."""

    command_delay_s: float = 4.0  # a command takes effect this long after it is sent
    ramp_kw_per_min: float = 10.0
    refusal_share: float = 0.01  # of commands a device refuses outright
    dropout_share: float = 0.005  # of telemetry samples that never arrive
    round_trip_efficiency: float = 0.9
    seed: int = 19


@dataclass(frozen=True, slots=True)
class Hardware:
    """Per device: EVs first, then batteries."""

    resource_ids: tuple[str, ...]
    is_ev: B1
    capacity_kwh: F8
    max_charge_kw: F8
    max_discharge_kw: F8
    min_soc_pct: F8
    max_soc_pct: F8


@dataclass(frozen=True, slots=True)
class Visits:
    """Each EV's stays in time order: the device index, when it plugs in and unplugs, its SoC
    on arrival and what it must hold when it leaves."""

    device: I8
    start_ts: F8
    end_ts: F8
    arrival_soc_pct: F8
    required_soc_pct: F8
    stated_departure_ts: F8  # what the driver said (NaN: the file has no stated departures)


@dataclass(frozen=True, slots=True)
class Departed:
    """A vehicle that unplugged: with how much charge against what its driver needed."""

    device: int
    at_ts: float
    soc_pct: float
    required_soc_pct: float


class Devices:
    def __init__(
        self, hw: Hardware, visits: Visits, soc_pct: F8, behaviour: Behaviour, start_ts: float
    ) -> None:
        self.hw = hw
        self.visits = visits
        self.b = behaviour
        self.eta = one_way_efficiency(behaviour.round_trip_efficiency)
        self.rng = np.random.default_rng(behaviour.seed)
        n = len(hw.resource_ids)
        self.index = {rid: i for i, rid in enumerate(hw.resource_ids)}
        self.soc_pct = soc_pct.astype(np.float64).copy()
        self.power_kw = np.zeros(n)  # at the grid connection; positive = discharge
        self.target_soc_pct = np.where(hw.is_ev, 0.0, np.nan)  # own charging goal (EVs)
        self.visit = np.full(n, -1, dtype=np.int64)  # the stay under way, -1: away (EVs)
        self.t = start_ts
        self._next_visit = 0
        order = np.lexsort((visits.start_ts,))
        self._arrivals = order  # visits by arrival time
        # Accepted schedules per device, by dispatch: (t0_ts, setpoints one per minute from t0,
        # when it takes effect, order received). A device keeps every dispatch's schedule (a
        # recharge booked for tomorrow does not erase tonight's discharge) and follows, at each
        # moment, the newest one received whose window covers it.
        self._cmds: list[dict[str, tuple[float, F8, float, int]]] = [{} for _ in range(n)]
        self._holding: set[int] = set()  # devices with any schedule
        self._received = 0
        self._effects: list[float] = []  # when received commands take effect (a heap)
        self._cmd_rev: dict[tuple[str, int], int] = {}  # (dispatch, device) -> newest revision
        self.refused = 0
        self.accepted = 0
        self._arrived: list[int] = []

    # ------------------------------------------------------------------ commands
    def command(
        self,
        resource_id: str,
        dispatch_id: str,
        revision: int,
        points: list[dict[str, object]],
        sent_ts: float,
    ) -> bool | None:
        """Take a command (the device gateway's V2G format); False: refused, None: not ours or
        an older revision than one already held."""
        i = self.index.get(resource_id)
        if i is None:
            return None
        seen = self._cmd_rev.get((dispatch_id, i), -1)
        if revision < seen:
            return None
        self._cmd_rev[(dispatch_id, i)] = revision
        if self.rng.random() < self.b.refusal_share:
            self.refused += 1
            return False
        kw = np.array([float(p["setpoint_kw"]) for p in points], dtype=np.float64)  # type: ignore[arg-type]
        t0 = datetime.fromisoformat(str(points[0]["t"])).timestamp() if points else sent_ts
        self._received += 1
        if kw.size:
            self._cmds[i][dispatch_id] = (t0, kw, sent_ts + self.b.command_delay_s, self._received)
            self._holding.add(i)
            heapq.heappush(self._effects, sent_ts + self.b.command_delay_s)
        else:  # an empty schedule lets go of that dispatch
            self._cmds[i].pop(dispatch_id, None)
        self.accepted += 1
        return True

    def _commanded(self, t: float, dt_s: float = 0.0) -> tuple[B1, F8]:
        """Which devices follow a command at `t`, and the setpoint they move toward over the
        step [t, t+dt): of the schedules in effect whose window covers `t`, the newest received,
        read as the command format defines it (points a minute apart, linear between), at the
        step's end. Ended schedules are forgotten."""
        active = np.zeros(self.soc_pct.size, dtype=bool)
        kw = np.zeros(active.size)
        for i in list(self._holding):
            held = self._cmds[i]
            best = -1
            for did, (t0, pts, from_ts, seq) in list(held.items()):
                k = int((t - t0) // 60.0)
                if k >= pts.size:  # over: back to its own behaviour
                    del held[did]
                elif k >= 0 and from_ts <= t and seq > best:
                    x = min((t + dt_s - t0) / 60.0, pts.size - 1.0)
                    best, kw[i] = seq, float(np.interp(x, np.arange(pts.size), pts))
            active[i] = best >= 0
            if not held:
                self._holding.discard(i)
        return active, kw

    # ------------------------------------------------------------------ physics
    def advance(self, until_ts: float, max_step_s: float = 60.0) -> list[Departed]:
        """Run the devices to `until_ts`; vehicles arrive and leave on their stays' times. A step
        ends where a command takes effect, so a device runs its previous setpoint for the
        command delay, not for the rest of the step."""
        departed: list[Departed] = []
        while self.t < until_ts - 1e-9:
            while self._effects and self._effects[0] <= self.t + 1e-9:
                heapq.heappop(self._effects)
            t_next = min(until_ts, self.t + max_step_s, *self._effects[:1])
            departed += self._leave_and_arrive(self.t)
            self._step(self.t, t_next - self.t)
            self.t = t_next
        departed += self._leave_and_arrive(self.t)
        return departed

    def _leave_and_arrive(self, t: float) -> list[Departed]:
        out: list[Departed] = []
        v = self.visits
        under_way = np.flatnonzero(self.visit >= 0)
        if under_way.size:
            ended = under_way[v.end_ts[self.visit[under_way]] <= t]
            for i in ended.tolist():
                k = int(self.visit[i])
                out.append(
                    Departed(
                        i, float(v.end_ts[k]), float(self.soc_pct[i]), float(v.required_soc_pct[k])
                    )
                )
                self.visit[i] = -1
                self.power_kw[i] = 0.0
                self._cmds[i].clear()
                self._holding.discard(i)
        while self._next_visit < self._arrivals.size:
            k = int(self._arrivals[self._next_visit])
            if v.start_ts[k] > t:
                break
            self._next_visit += 1
            if v.end_ts[k] <= t:  # began and ended inside one step: too short to matter
                continue
            i = int(v.device[k])
            self.visit[i] = k
            self.soc_pct[i] = v.arrival_soc_pct[k]
            self.target_soc_pct[i] = v.required_soc_pct[k]
            self.power_kw[i] = 0.0
            self._arrived.append(i)
        return out

    def take_arrivals(self) -> list[int]:
        """Devices that plugged in since the last call."""
        out, self._arrived = self._arrived, []
        return out

    def any_commanded(self) -> bool:
        return bool(self._holding)

    def plugged(self) -> B1:
        return np.asarray(~self.hw.is_ev | (self.visit >= 0))

    def _step(self, t: float, dt_s: float) -> None:
        hw = self.hw
        plugged = self.plugged()
        # Own behaviour: a vehicle charges at full power until it holds what its driver needs.
        charging = plugged & hw.is_ev & (self.soc_pct < self.target_soc_pct - 1e-9)
        if not self._holding and not charging.any() and not self.power_kw.any():
            return  # every device at rest: none holds a command nor charges on its own
        own = np.where(charging, -hw.max_charge_kw, 0.0)
        active, kw = self._commanded(t, dt_s)
        want = np.where(active, kw, own)
        want = np.clip(want, -hw.max_charge_kw, hw.max_discharge_kw)
        # The pack's own limits: no discharge at its minimum, no charge at its maximum.
        want = np.where((want > 0) & (self.soc_pct <= hw.min_soc_pct + 1e-9), 0.0, want)
        want = np.where((want < 0) & (self.soc_pct >= hw.max_soc_pct - 1e-9), 0.0, want)
        want = np.where(plugged, want, 0.0)
        step = self.b.ramp_kw_per_min * dt_s / 60.0
        # Power moves linearly toward what is wanted at the step's end, at most at the ramp
        # limit, so the step moves the mean of its two ends: a device on a schedule is where the
        # schedule is at every step's end and has moved what it did. (Aiming at the step's middle
        # moved the same energy but reported the power of half a step before: a release then
        # ramped down from more than the device had.)
        p = self.power_kw + np.clip(want - self.power_kw, -step, step)
        p = np.where(plugged, p, 0.0)
        mean = np.where(plugged, (self.power_kw + p) / 2.0, 0.0)
        # Energy through the cells: charging stores η of it, discharging draws 1/η of it.
        cells_kwh = np.where(mean > 0, mean / self.eta, mean * self.eta) * dt_s / 3600.0
        # Never past the pack's limits within the step: the power is cut to what fits.
        room_down = np.maximum(self.soc_pct - hw.min_soc_pct, 0.0) / 100.0 * hw.capacity_kwh
        room_up = np.maximum(hw.max_soc_pct - self.soc_pct, 0.0) / 100.0 * hw.capacity_kwh
        cut = np.where(
            cells_kwh > 0, np.minimum(cells_kwh, room_down), np.maximum(cells_kwh, -room_up)
        )
        scale = np.divide(cut, cells_kwh, out=np.ones_like(cut), where=cells_kwh != 0)
        self.power_kw = p * scale
        self.soc_pct = self.soc_pct - cut / hw.capacity_kwh * 100.0

    # ------------------------------------------------------------------ telemetry
    def holding(self) -> B1:
        """The devices holding a schedule of any dispatch."""
        out = np.zeros(self.soc_pct.size, dtype=bool)
        out[list(self._holding)] = True
        return out

    def samples(self, due: B1 | None = None) -> tuple[I8, F8, F8, B1, I8]:
        """This moment's telemetry (rows, SoC %, kW, plugged) of the devices `due` to report
        (all when None) without the samples that drop out, and the rows that dropped out."""
        drawn = self.rng.random(self.soc_pct.size)  # one draw a device either way: same stream
        asked = np.ones(drawn.size, dtype=bool) if due is None else due
        keep = (drawn >= self.b.dropout_share) & asked
        rows = np.flatnonzero(keep)
        return (
            rows,
            self.soc_pct[rows],
            self.power_kw[rows],
            self.plugged()[rows],
            np.flatnonzero(asked & ~keep),
        )


def arrival_and_need(
    capacity_kwh: float,
    max_charge_kw: float,
    min_soc_pct: float,
    max_soc_pct: float,
    stay_s: float,
    needed_kwh: float,
    eta: float,
    arrival_soc_pct: float,
) -> float:
    """The SoC a driver needs on leaving: arrival plus the energy the session says they needed,
    but no more than the stay could physically store at full power (less ten minutes for the
    charger to start), nor above the maximum."""
    # Less the first minutes of the stay: a charger starts a little after the car plugs in.
    storable = max_charge_kw * eta * max(0.0, stay_s - START_ALLOWANCE_S) / 3600.0
    gain_pct = min(needed_kwh, storable) / capacity_kwh * 100.0
    return (
        float(min(max_soc_pct, max(arrival_soc_pct, min_soc_pct) + gain_pct))
        if math.isfinite(gain_pct)
        else arrival_soc_pct
    )

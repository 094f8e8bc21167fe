"""The replay's books: what was offered, awarded and delivered per day and 5-minute interval,
every departure against what its driver needed, every command through the independent safety
checker, and each shortfall split over its causes so that, per interval,
delivered = awarded − shortfall + surplus and the causes add up to the shortfall."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from vpp_aggregator.replay.devices import Departed
from vpp_aggregator.replay.fleet import ReplayFleet

FULL_SHARE = 0.95  # an interval counts as delivered in full at 95 % of its award
DEPARTURE_TOL_PCT = 0.1  # a departure is met within a tenth of a percent of the SoC needed
TOL_KWH = 1e-3
SETTLEMENT_S = 300.0  # settlement's interval
# What a shortfall can come from, the most specific first: the service made no dispatch for
# the award (its reason is kept with the interval), a device refused its command, a vehicle
# left before the time its driver gave, left or went away mid-plan, its samples were lost, the
# plan itself fell short of the award (fewer vehicles or less energy than the forecast said),
# and what none of these explains: the devices' response (command delay, ramp).
CAUSES = (
    "not_dispatched",
    "refusal",
    "left_early",
    "arrived_late",
    "dropout",
    "soc_below_forecast",
    "response",
)
FIGURES = (
    "offered_kwh",
    "awarded_kwh",
    "delivered_kwh",
    "shortfall_kwh",
    "surplus_kwh",
    "intervals_awarded",
    "intervals_delivered_in_full",
    "departures",
    "departures_met",
    "safety_violations",
)


@dataclass(slots=True)
class _Schedule:
    t0: float
    kw: np.ndarray

    def kwh_between(self, a: float, b: float) -> float:
        """Planned discharge energy over [a, b) (minute setpoints held)."""
        if self.kw.size == 0:
            return 0.0
        t = self.t0 + 60.0 * np.arange(self.kw.size)
        overlap = np.clip(np.minimum(t + 60.0, b) - np.maximum(t, a), 0.0, None)
        return float(np.sum(self.kw * overlap) / 3600.0)


@dataclass(slots=True)
class _Day:
    figures: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FIGURES, 0.0))
    causes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CAUSES, 0.0))


class Ledger:
    def __init__(
        self,
        fleet: ReplayFleet,
        timezone: str,
        gaps: frozenset[date],
        start_ts: float,
        end_ts: float,
    ) -> None:
        self.fleet = fleet
        self.zone = ZoneInfo(timezone)
        self.gaps = gaps
        self.start_ts = start_ts
        self.end_ts = end_ts
        self.days: dict[date, _Day] = defaultdict(_Day)
        self.intervals: list[dict[str, Any]] = []
        # per dispatch, per device: the newest schedule it took, and one it refused after it
        self.schedules: dict[str, dict[int, _Schedule]] = defaultdict(dict)
        self.refused: dict[str, dict[int, _Schedule]] = defaultdict(dict)
        self.left: dict[int, list[tuple[float, float]]] = defaultdict(list)  # (left, stated)
        self.stated: dict[int, float] = {}
        self.dropped: dict[int, list[float]] = defaultdict(list)
        self.violations: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.index = {rid: i for i, rid in enumerate(fleet.hardware.resource_ids)}

    # ------------------------------------------------------------------ what happens
    def _day(self, ts: float) -> date | None:
        """The replayed local day of `ts`, or None outside the replay or on a gap day."""
        if not self.start_ts <= ts < self.end_ts:
            return None
        d = datetime.fromtimestamp(ts, self.zone).date()
        return None if d in self.gaps else d

    def note(self, text: str) -> None:
        self.notes.append(text)

    def offered(self, offer: dict[str, Any]) -> None:
        if offer.get("product", "energy") != "energy":
            return
        s = datetime.fromisoformat(offer["interval_start"])
        e = datetime.fromisoformat(offer["interval_end"])
        day = self._day(s.timestamp())
        if day is not None:
            hours = (e - s).total_seconds() / 3600.0
            self.days[day].figures["offered_kwh"] += float(offer["max_power_kw"]) * hours

    def awarded(self, award: Any) -> None:
        day = self._day(award.interval_start.timestamp())
        if day is not None:
            hours = (award.interval_end - award.interval_start).total_seconds() / 3600.0
            self.days[day].figures["awarded_kwh"] += award.awarded_kw * hours

    def arrived(self, device: int, visit: int, stated_leave_ts: float) -> None:
        self.stated[device] = stated_leave_ts

    def departed(self, d: Departed) -> None:
        stated = self.stated.pop(d.device, d.at_ts)
        self.left[d.device].append((d.at_ts, stated))
        day = self._day(d.at_ts)
        if day is None:
            return
        f = self.days[day].figures
        f["departures"] += 1
        if d.soc_pct >= d.required_soc_pct - DEPARTURE_TOL_PCT:
            f["departures_met"] += 1
        else:
            self.note(
                f"{datetime.fromtimestamp(d.at_ts, self.zone):%Y-%m-%d %H:%M} "
                f"{self.fleet.hardware.resource_ids[d.device]} left with {d.soc_pct:.1f} % "
                f"of {d.required_soc_pct:.1f} % needed"
                + (
                    f", {(stated - d.at_ts) / 60.0:.0f} min before the departure it stated"
                    if stated > d.at_ts + 30.0
                    else ""
                )
            )

    def dropout(self, devices: np.ndarray, ts: float) -> None:
        for i in devices.tolist():
            self.dropped[int(i)].append(ts)

    def commanded(self, cmd: dict[str, Any], took: bool | None, violations: list[Any]) -> None:
        i = self.index.get(str(cmd.get("resource_id")))
        if i is None:
            return
        dispatch = str(cmd["dispatch_id"])
        pts = cmd.get("schedule") or []
        t0 = datetime.fromisoformat(str(pts[0]["t"])).timestamp() if pts else 0.0
        sched = _Schedule(t0, np.array([float(p["setpoint_kw"]) for p in pts]))
        if took is False:
            self.refused[dispatch][i] = sched
        elif took:
            self.schedules[dispatch][i] = sched
            self.refused[dispatch].pop(i, None)
        for v in violations:
            self.violations.append(
                {"resource_id": v.resource_id, "rule": v.rule, "detail": v.detail}
            )
            day = self._day(t0) or (min(self.days) if self.days else None)
            if day is not None:
                self.days[day].figures["safety_violations"] += 1

    # ------------------------------------------------------------------ settlement
    def settled(self, s: dict[str, Any]) -> None:
        if s.get("product", "energy") != "energy":
            return
        dispatch = s.get("dispatch_id")
        if s["status"] != "settled" or not s["intervals"]:  # nothing ran: all of it short
            start = datetime.fromisoformat(s["interval_start"]).timestamp()
            end = datetime.fromisoformat(s["interval_end"]).timestamp()
            per = float(s["awarded_kw"]) * SETTLEMENT_S / 3600.0
            for a in np.arange(start, end - 1e-6, SETTLEMENT_S):
                self._interval(
                    float(a),
                    float(a) + SETTLEMENT_S,
                    per,
                    0.0,
                    None,
                    s.get("reason") or "no dispatch ran",
                )
            return
        for iv in s["intervals"]:
            a = datetime.fromisoformat(iv["interval_start"]).timestamp()
            b = datetime.fromisoformat(iv["interval_end"]).timestamp()
            self._interval(a, b, float(iv["awarded_kwh"]), float(iv["credited_kwh"]), dispatch, "")

    def _interval(
        self,
        a: float,
        b: float,
        awarded: float,
        delivered: float,
        dispatch: str | None,
        reason: str,
    ) -> None:
        day = self._day(a)
        if day is None:
            return
        d = self.days[day]
        short = max(0.0, awarded - delivered)
        surplus = max(0.0, delivered - awarded)
        causes = self._causes(a, b, awarded, short, dispatch)
        d.figures["delivered_kwh"] += delivered
        d.figures["shortfall_kwh"] += short
        d.figures["surplus_kwh"] += surplus
        d.figures["intervals_awarded"] += 1
        if delivered >= FULL_SHARE * awarded - TOL_KWH:
            d.figures["intervals_delivered_in_full"] += 1
        for c, kwh in causes.items():
            d.causes[c] += kwh
        self.intervals.append(
            {
                "interval_start": datetime.fromtimestamp(a, self.zone).isoformat(),
                "awarded_kwh": round(awarded, 4),
                "delivered_kwh": round(delivered, 4),
                "shortfall_kwh": round(short, 4),
                "surplus_kwh": round(surplus, 4),
                "causes": {c: round(k, 4) for c, k in causes.items() if k > 0},
                **({"reason": reason} if reason else {}),
            }
        )

    def _causes(
        self, a: float, b: float, awarded: float, short: float, dispatch: str | None
    ) -> dict[str, float]:
        """The shortfall split over its causes, the most specific first; what none explains is
        the devices' response (command delay and ramp)."""
        if short <= TOL_KWH:
            return {}
        found: dict[str, float] = dict.fromkeys(CAUSES, 0.0)
        if dispatch is None:
            return {"not_dispatched": short}
        planned = 0.0
        for i, sched in self.schedules.get(dispatch, {}).items():
            kwh = sched.kwh_between(a, b)
            planned += kwh
            # Unplugged while its part of the plan still ran (inside this interval or before it).
            gone = [(t, st) for t, st in self.left.get(i, []) if sched.t0 <= t < b]
            if gone:
                t, stated = min(gone)
                cause = "left_early" if t < stated - 60.0 else "arrived_late"
                found[cause] += sched.kwh_between(max(t, a), b)
            if any(a <= t < b for t in self.dropped.get(i, [])):
                found["dropout"] += kwh
        for refused in self.refused.get(dispatch, {}).values():
            # what the service asked of it there and did not get
            found["refusal"] += max(0.0, refused.kwh_between(a, b))
        found["soc_below_forecast"] += max(0.0, awarded - planned)
        out: dict[str, float] = {}
        left = short
        for c in CAUSES[:-1]:
            take = min(left, found[c])
            if take > 0:
                out[c] = take
                left -= take
        if left > TOL_KWH * 0.01:
            out["response"] = left
        return out

    # ------------------------------------------------------------------ the report
    def report(self) -> dict[str, Any]:
        days = []
        totals = dict.fromkeys(FIGURES, 0.0)
        causes = dict.fromkeys(CAUSES, 0.0)
        for day in sorted(self.days):
            d = self.days[day]
            days.append(
                {
                    "date": day.isoformat(),
                    **_rounded(d.figures),
                    "shortfall_causes_kwh": _rounded(d.causes),
                }
            )
            for k, v in d.figures.items():
                totals[k] += v
            for k, v in d.causes.items():
                causes[k] += v
        is_ev = self.fleet.hardware.is_ev
        return {
            "fleet": {
                "vehicles": int(is_ev.sum()),
                "batteries": int((~is_ev).sum()),
                "vehicle_of": list(self.fleet.drivers),
            },
            "totals": {**_rounded(totals), "shortfall_causes_kwh": _rounded(causes)},
            "days": days,
            "intervals": self.intervals,
            "safety_violations": self.violations[:100],
            "notes": self.notes[:200],
            "gap_days_left_out": sorted(
                d.isoformat()
                for d in self.gaps
                if d >= datetime.fromtimestamp(self.start_ts, self.zone).date()
            ),
        }


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {
        k: (int(v) if float(v).is_integer() and not k.endswith("kwh") else round(v, 3))
        for k, v in figures.items()
    }

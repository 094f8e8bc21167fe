"""What an award's dispatch must give for the aggregation's meter to show the award.

Settlement pays baseline − measured net load over every member of the aggregation, not what
the dispatched resources give: a vehicle that plugs in and charges on its own during the award
takes its kW off the delivery, unless the award's baseline already expects that charging. So
while an award runs, its dispatch is asked for the award plus whatever the members outside it
draw beyond the baseline: target = award − baseline − (net output of the members not in the
award's dispatches). The baseline is settlement's own (`app/settlement.Meter`), measured once
as the award begins. Where the meter already shows more than the award (a baseline that
expects more charging than the members draw, as when the dispatch holds vehicles at zero that
would have charged), the target is lower, down to `LEAST_TARGET_KW` in the award's direction:
surplus is not paid, and what the batteries keep serves the day's later awards (Caltech's first
quarter: surplus 1,325 → 219 kWh, intervals in full 94.7 → 95.35 %). It is at most `MAX_RAISE`
times the award; awards of one aggregation running together share the correction by their
kW."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from vpp_aggregator.app.makeup import MakeupLog
from vpp_aggregator.app.settlement import KW_PER_KWH, SLOT_S, Meter

log = logging.getLogger(__name__)

# The target is at most this times the award: a bound on what one measurement may ask of the
# batteries. At 1.5 it bound on residential evenings, where vehicles arriving home draw 55-120 kW
# beyond a baseline of none (Norway's replayed November: 166 of 215 short intervals at the cap).
MAX_RAISE = 3.0
LEAST_TARGET_KW = 1.0  # the least a lowered target asks: a dispatch of 0 kW is no dispatch
MIN_CHANGE_KW = 2.0  # smaller changes are not worth a re-plan...
MIN_CHANGE_SHARE = 0.02  # ...nor those under this share of the award


class Powers(Protocol):
    def net_power(self, now_ts: float) -> dict[str, tuple[float, int, int]]: ...
    def power_of(self, resource_ids: Sequence[str], now_ts: float) -> float: ...


class AwardTracking:
    def __init__(self, meter: Meter, powers: Powers, makeup: MakeupLog | None = None) -> None:
        self.meter = meter
        self.powers = powers
        self.makeup = makeup  # what was made up, for the next days' offers (`app/makeup`)
        self._baselines: dict[str, tuple[float, np.ndarray]] = {}  # award -> (t0, kW per slot)

    def targets(
        self, running: list[tuple[dict[str, Any], list[str]]], now: datetime
    ) -> dict[str, float]:
        """Each running award's dispatch target (by award id), from the awards under way and
        the resources each one's dispatch holds."""
        now_ts = now.timestamp()
        self._forget({a["award_id"] for a, _ in running})
        by_node: dict[str, list[tuple[dict[str, Any], list[str]]]] = {}
        for award, held in running:
            by_node.setdefault(award["aggregation_id"], []).append((award, held))
        net = self.powers.net_power(now_ts)
        out: dict[str, float] = {}
        for node, awards in by_node.items():
            total_kw = sum(float(a["awarded_kw"]) for a, _ in awards)
            if abs(total_kw) < 1e-9:
                continue
            held = sorted({r for _, ids in awards for r in ids})
            others_kw = net.get(node, (0.0, 0, 0))[0] - self.powers.power_of(held, now_ts)
            base_kw = sum(self._baseline_kw(a, now_ts) for a, _ in awards) / len(awards)
            wanted = total_kw - base_kw - others_kw
            if self.makeup is not None and total_kw > 0:
                self.makeup.note(node, now, wanted - total_kw)
            for a, _ in awards:
                kw = float(a["awarded_kw"])
                share = wanted * kw / total_kw
                # never the other way: a discharge award is not met by charging the batteries
                along = share if share * kw > 0 else 0.0
                least = min(LEAST_TARGET_KW, abs(kw))
                out[a["award_id"]] = math.copysign(
                    min(max(abs(along), least), MAX_RAISE * abs(kw)), kw
                )
        return out

    @staticmethod
    def worth_changing(current_kw: float, wanted_kw: float, awarded_kw: float) -> bool:
        return abs(wanted_kw - current_kw) >= max(MIN_CHANGE_KW, MIN_CHANGE_SHARE * abs(awarded_kw))

    def _baseline_kw(self, award: dict[str, Any], now_ts: float) -> float:
        """The aggregation's baseline (kW of vehicle load) in the interval under way."""
        known = self._baselines.get(award["award_id"])
        if known is None:
            try:
                measured = self.meter.measure(
                    award["aggregation_id"],
                    award["interval_start"],
                    award["interval_end"],
                    float(award["awarded_kw"]),
                    per_resource=False,
                )
            except Exception:  # the award is still served at its kW
                log.exception("award %s: no baseline to track against", award["award_id"])
                measured = None
            slots = measured.intervals if measured is not None else []
            t0 = datetime.fromisoformat(slots[0]["interval_start"]).timestamp() if slots else 0.0
            kw = np.array([s["baseline_kwh"] * KW_PER_KWH for s in slots], dtype=np.float64)
            known = self._baselines[award["award_id"]] = (t0, kw)
        t0, kw = known
        k = int((now_ts - t0) // SLOT_S)
        return float(kw[k]) if 0 <= k < kw.size else 0.0

    def _forget(self, running: set[str]) -> None:
        for gone in set(self._baselines) - running:
            del self._baselines[gone]

"""Customer baselines: what a load would have used on an event day had there been no event.

Delivered = baseline − measured net consumption, per settlement interval. Three methods, chosen
per aggregation; every parameter is configuration (`config.py`, `VPP_BASELINE_*`):

- **CAISO 10-in-10** (CAISO tariff §4.13.4, customer load baseline; BPM for Demand Response):
  the mean, interval by interval, of the 10 most recent like non-event days in a 45-day
  lookback (weekends and holidays: the 4 most recent), scaled by a day-of ratio — the event
  day's load over the baseline's in the window 4 h to 1 h before the event — capped to
  0.8…1.2 (±20 %).
- **PJM customer baseline load** (PJM Manual 11 §10, Operating Agreement Schedule 1 §3.3A):
  weekdays "high 4 of 5" — of the 5 most recent like non-event days in 45, the 4 with the
  highest use over the event's hours — Saturdays and Sundays/holidays "high 2 of 3" each; a
  day using less than 25 % of the candidates' average over those hours is passed over for an
  older one; then the symmetric additive adjustment: the event day's load minus the
  baseline's, averaged over 4 h to 1 h before the event, added to every interval, up or down.
- **Metered output**: the baseline is zero, so delivery is what was injected (batteries, and
  any aggregation that sells its export).

The section numbers are where the ISOs keep these rules; their text was not available where
this was written, so the parameters follow the published summaries and stay configurable
(see docs/settlement.md before registering with an ISO).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.baseline_days import DayType, day_type, like_days


class BaselineMethod(StrEnum):
    CAISO_10IN10 = "caiso_10in10"
    PJM_CBL = "pjm_cbl"
    METERED = "metered"


class Adjustment(StrEnum):
    RATIO = "ratio"  # CAISO: multiplied, capped
    ADDITIVE = "additive"  # PJM: added, symmetric


@dataclass(frozen=True, slots=True)
class BaselineRule:
    """One ISO's day-matching baseline, every number of it configurable."""

    method: BaselineMethod
    lookback_days: int = 45
    weekday_days: int = 10  # the most recent like days looked at ...
    weekday_keep: int = 10  # ... of which the highest over the event hours are averaged
    weekend_days: int = 4
    weekend_keep: int = 4
    weekday_min_days: int = 1  # fewer like days than this: no baseline, settlement says why
    weekend_min_days: int = 1
    saturday_apart: bool = False
    low_usage_share: float | None = None  # a day below this share of the average is passed over
    adjustment: Adjustment = Adjustment.RATIO
    adjustment_from_h: float = 4.0  # hours before the event the adjustment window opens ...
    adjustment_to_h: float = 1.0  # ... and closes
    adjustment_cap: float | None = 0.2  # ratio within 1 ± cap; additive: no cap by default
    timezone: str = "America/Los_Angeles"  # the market's local days

    def counts(self, kind: DayType) -> tuple[int, int, int]:
        """Days looked at, kept, and needed at least, for this type of day."""
        if kind is DayType.WEEKDAY:
            return self.weekday_days, self.weekday_keep, self.weekday_min_days
        return self.weekend_days, self.weekend_keep, self.weekend_min_days


CAISO_10IN10 = BaselineRule(BaselineMethod.CAISO_10IN10, weekday_min_days=5, weekend_min_days=2)
PJM_CBL = BaselineRule(
    BaselineMethod.PJM_CBL,
    weekday_days=5,
    weekday_keep=4,
    weekend_days=3,
    weekend_keep=2,
    saturday_apart=True,
    low_usage_share=0.25,
    adjustment=Adjustment.ADDITIVE,
    adjustment_cap=None,
    timezone="America/New_York",
)
METERED = BaselineRule(BaselineMethod.METERED)
DEFAULT_RULES = {r.method: r for r in (CAISO_10IN10, PJM_CBL, METERED)}


@dataclass(frozen=True, slots=True)
class DayLoads:
    """Net consumption (kW, positive = drawing from the grid) per interval of each local day;
    a day is known when it has a row. `kw[i]` belongs to `days[i]`."""

    days: tuple[date, ...]
    kw: NDArray[np.float64]  # (days, intervals per day)

    def row(self, day: date) -> NDArray[np.float64] | None:
        try:
            return np.asarray(self.kw[self.days.index(day)], dtype=np.float64)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Baseline:
    """The event day's baseline per interval, or why there is none."""

    kw: NDArray[np.float64] | None
    days_used: tuple[date, ...] = ()
    day_type: DayType | None = None
    unadjusted_kw: NDArray[np.float64] | None = None
    adjustment: float | None = None  # the ratio or the kW added
    note: str | None = None


def _mean(values: NDArray[np.float64], axis: int | None = None) -> NDArray[np.float64] | float:
    """Mean leaving out NaN (intervals a clock change skipped); 0 where nothing is left."""
    known = ~np.isnan(values)
    total = np.where(known, values, 0.0).sum(axis=axis)
    count = known.sum(axis=axis)
    out = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return float(out) if axis is None else np.asarray(out, dtype=np.float64)


def choose_days(
    loads: DayLoads,
    event_day: date,
    window: slice,
    rule: BaselineRule,
    event_days: Iterable[date],
) -> tuple[list[date], DayType, str | None]:
    """The like days the baseline averages, and why it has none when too few were found."""
    kind = day_type(event_day, saturday_apart=rule.saturday_apart)
    wanted, keep, needed = rule.counts(kind)
    candidates = like_days(
        event_day,
        rule.lookback_days,
        saturday_apart=rule.saturday_apart,
        event_days=event_days,
        with_data=loads.days,
    )
    at = {d: i for i, d in enumerate(loads.days)}
    means = _mean(loads.kw[[at[d] for d in candidates]][:, window], axis=1)
    use = dict(zip(candidates, np.asarray(means).tolist(), strict=True))  # one pass, not a day each
    chosen = candidates[:wanted]
    if rule.low_usage_share is not None and chosen:
        # pass over low days for older ones, judged against the days first chosen
        floor = rule.low_usage_share * sum(use[d] for d in chosen) / len(chosen)
        chosen = [d for d in candidates if use[d] >= floor][:wanted]
    if len(chosen) < needed:
        return (
            [],
            kind,
            (
                f"{len(chosen)} {kind.value} like days without events in the {rule.lookback_days} "
                f"days before {event_day.isoformat()}; the {rule.method.value} baseline needs "
                f"{needed}"
            ),
        )
    chosen.sort(key=lambda d: -use[d])  # highest use over the event hours first (stable)
    return sorted(chosen[:keep], reverse=True), kind, None  # most recent first


def baseline(
    loads: DayLoads,
    event_day: date,
    event_slots: slice,
    rule: BaselineRule,
    event_days: Iterable[date] = (),
    *,
    slot_minutes: int,
    adjust: bool = True,
) -> Baseline:
    """The adjusted baseline of `event_day` for every interval of it; `event_slots` are the
    intervals the day's events cover (they choose the high days and place the adjustment
    window). `adjust=False`: the event day was not measured in the window, so no adjustment."""
    intervals = loads.kw.shape[1]
    if rule.method is BaselineMethod.METERED:
        zero = np.zeros(intervals)
        return Baseline(zero, unadjusted_kw=zero, adjustment=0.0)
    days, kind, why = choose_days(loads, event_day, event_slots, rule, event_days)
    if why is not None:
        return Baseline(None, day_type=kind, note=why)
    rows = [loads.days.index(d) for d in days]
    today = loads.row(event_day)
    return _averaged(
        loads.kw[None],
        rows,
        None if today is None else today[None],
        event_slots,
        rule,
        slot_minutes,
        np.array([adjust]),
        tuple(days),
        kind,
    )[0]


def baselines_each(
    kw: NDArray[np.float64],
    known: NDArray[np.bool_],
    days: Sequence[date],
    event_day: date,
    event_slots: slice,
    rule: BaselineRule,
    event_days: Iterable[date] = (),
    *,
    slot_minutes: int,
    adjust: NDArray[np.bool_],
) -> list[Baseline]:
    """Each resource's own baseline, as `baseline` gives it for that resource alone: `kw`
    (resources, days, intervals) with `days` the last the event day, `known` the days each
    resource's load counts on, `adjust` whether it was measured in the adjustment window.
    Resources whose like days are the same are averaged and adjusted together: settling an
    aggregation of 200 vehicles one at a time cost more than measuring it."""
    if days[-1] != event_day or not known[:, -1].all():
        raise ValueError("the event day must be the last day, known for every resource")
    if rule.method is BaselineMethod.METERED:
        return [
            baseline(
                DayLoads(tuple(days), kw[r]),
                event_day,
                event_slots,
                rule,
                slot_minutes=slot_minutes,
            )
            for r in range(kw.shape[0])
        ]
    event_days = tuple(event_days)
    kind = day_type(event_day, saturday_apart=rule.saturday_apart)
    wanted, keep, _ = rule.counts(kind)
    by_use = rule.low_usage_share is not None or keep < wanted  # the choice reads the loads
    chosen: dict[tuple[bool, ...] | int, tuple[list[date], str | None]] = {}
    groups: dict[tuple[date, ...], list[int]] = {}
    out: list[Baseline | None] = [None] * kw.shape[0]
    for r in range(kw.shape[0]):
        seen = known[r]
        key: tuple[bool, ...] | int = r if by_use else tuple(seen.tolist())
        if key not in chosen:
            loads = DayLoads(tuple(d for d, s in zip(days, seen, strict=True) if s), kw[r][seen])
            picked, _, why = choose_days(loads, event_day, event_slots, rule, event_days)
            chosen[key] = (picked, why)
        picked, why = chosen[key]
        if why is not None:
            out[r] = Baseline(None, day_type=kind, note=why)
        else:
            groups.setdefault(tuple(picked), []).append(r)
    at = {d: i for i, d in enumerate(days)}
    for like, members in groups.items():
        group = kw[members]
        averaged = _averaged(
            group,
            [at[d] for d in like],
            group[:, -1],  # the event day, each member's own load
            event_slots,
            rule,
            slot_minutes,
            adjust[members],
            like,
            kind,
        )
        for r, b in zip(members, averaged, strict=True):
            out[r] = b
    every = [b for b in out if b is not None]
    assert len(every) == len(out), "every resource has its baseline or why not"
    return every


def _averaged(
    kw: NDArray[np.float64],
    rows: list[int],
    today: NDArray[np.float64] | None,
    event_slots: slice,
    rule: BaselineRule,
    slot_minutes: int,
    adjust: NDArray[np.bool_],
    days: tuple[date, ...],
    kind: DayType,
) -> list[Baseline]:
    """The baselines of resources (`kw`: resources, days, intervals) on the same chosen days
    (`rows` of the days axis), each adjusted by its own load `today` (resources, intervals)."""
    raw = np.asarray(_mean(kw[:, rows], axis=1))
    per_hour = 60 // slot_minutes
    start = int(event_slots.start or 0)
    lo = max(0, start - round(rule.adjustment_from_h * per_hour))
    hi = max(0, start - round(rule.adjustment_to_h * per_hour))
    if hi <= lo or today is None:
        why = "no day-of adjustment: the event starts too early in the day for its window"
        return [Baseline(raw[r], days, kind, raw[r], None, why) for r in range(raw.shape[0])]
    actual = np.asarray(_mean(today[:, lo:hi], axis=1))
    base = np.asarray(_mean(raw[:, lo:hi], axis=1))
    if rule.adjustment is Adjustment.RATIO:
        factor = np.divide(actual, base, out=np.ones_like(base), where=base > 0)
        if rule.adjustment_cap is not None:
            cap = rule.adjustment_cap
            factor = np.minimum(1.0 + cap, np.maximum(1.0 - cap, factor))
        adjusted = raw * factor[:, None]
    else:
        factor = actual - base
        if rule.adjustment_cap is not None:
            limit = rule.adjustment_cap * np.abs(base)
            factor = np.minimum(limit, np.maximum(-limit, factor))
        adjusted = raw + factor[:, None]
    unmeasured = "no day-of adjustment: the event day was not measured before the event"
    return [
        Baseline(adjusted[r], days, kind, raw[r], float(factor[r]))
        if adjust[r]
        else Baseline(raw[r], days, kind, raw[r], None, unmeasured)
        for r in range(raw.shape[0])
    ]

"""Measurement and verification of an award: per 5-minute settlement interval, the
aggregation's baseline, its measured net consumption and the difference, delivered.

The aggregation is the grid node's resources as registered. Vehicles are load: baselined by
the aggregation's method (`domain/baselines`), on their own and summed. Batteries are metered
output: their baseline is zero, so they deliver what they inject. Delivered = baseline −
measured net consumption, so a vehicle that stops charging delivers what it no longer draws,
one that exports delivers that too, and a charge-side award (negative kW) is met by drawing
more than the baseline.

The day's awards of the aggregation are one event: its hours run from the first award's start
to the last one's end, and the day-of adjustment is read before the first, so a real-time
award late in a day of curtailment is not baselined on the curtailment. Where awards overlap
(a real-time award inside a day-ahead hour), each is credited the interval's delivery in
proportion to its awarded kW.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.baseline_policy import BaselinePolicy
from vpp_aggregator.app.member_loads import MemberLoads, from_series
from vpp_aggregator.app.outbound import SettledInterval, SettledResource
from vpp_aggregator.domain.baseline_days import local_slots
from vpp_aggregator.domain.baselines import Baseline, BaselineMethod, DayLoads, baseline
from vpp_aggregator.domain.metering import energy_in_each

__all__ = ["BaselinePolicy", "Measured", "MeasurementStore", "Meter"]

SLOT_S = 300  # settlement intervals: the 5-minute real-time interval
SLOT_MIN = SLOT_S // 60
KW_PER_KWH = 3600.0 / SLOT_S  # mean kW over one interval of 1 kWh
MIN_COVERAGE = 0.5  # a day (or the adjustment window) counts when samples cover this share
# A device that was offline uploads its buffered samples when it is back, and a test may post a
# day's telemetry after the fact: a past day is final only this long after it ends; until then
# a measurement reads it again when samples of it were received since it was last read.
LATE_SAMPLES_S = 86_400.0
# A sample stamped as received just before a read may commit after it: looked for this far back.
LATE_MARGIN_S = 60.0


class MeasurementStore(Protocol):
    def power_history(
        self, resource_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]: ...
    def award_spans(
        self, aggregation_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime, float]]: ...
    def rolled_through(self) -> date | None: ...
    def received_since(
        self, since: datetime, start: datetime, end: datetime
    ) -> list[tuple[str, float]]: ...
    def daily_energy(
        self, resource_ids: Sequence[str], first: date, last: date, interval_s: float
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]]: ...


class Members(Protocol):
    def members(self, grid_node: str) -> list[tuple[str, bool]]: ...


@dataclass(frozen=True, slots=True)
class Measured:
    method: str
    baseline_kwh: float
    measured_kwh: float
    delivered_kwh: float  # credited to this award
    days_used: list[str]
    adjustment: float | None
    note: str | None
    intervals: list[SettledInterval]
    resources: list[SettledResource]


def _round(x: float) -> float:
    return round(float(x), 4)


class Meter:
    """Measures awards. Each resource's intervals of a past day are kept once read (float32, at
    most `cache_days` resource-days, least recently used out): a real-time award every 5
    minutes then reads only its own day's samples, not 45 days'. A day whose late samples may
    still come (`LATE_SAMPLES_S`) is read again when samples of it were received since."""

    def __init__(
        self,
        store: MeasurementStore,
        members: Members,
        policy: BaselinePolicy,
        hold_s: float,
        clock: Callable[[], datetime],
        cache_days: int = 50_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.members = members
        self.policy = policy
        self.hold_s = hold_s
        self.cache_days = cache_days
        # (resource, zone, day) -> its loads, its coverage, and when it was read (None: final)
        self._days: OrderedDict[
            tuple[str, str, date], tuple[NDArray[np.float32], float, float | None]
        ] = OrderedDict()
        self._lock = threading.Lock()

    def _loads(
        self,
        ids: list[str],
        days: list[date],
        tz: ZoneInfo,
        end: datetime,
        since: float = -np.inf,
        last_pass: int = 0,
    ) -> tuple[MemberLoads, NDArray[np.float64], NDArray[np.bool_]]:
        """The members' loads over `days`; the event day's intervals before `since` (epoch s)
        need not be measured (their samples are not read). `last_pass`: which pass of a
        repeated hour the event day's intervals are (`local_slots`)."""
        starts, exists = local_slots(days, tz, SLOT_MIN, last_pass)
        n = len(days)
        row = {rid: r for r, rid in enumerate(ids)}
        kw = np.full((len(ids), *starts.shape), np.nan)
        cov = np.zeros((len(ids), n))
        read_at = self.clock().timestamp()  # before the read: what comes during it is late
        with self._lock:
            kept = {
                (rid, i): self._days[(rid, tz.key, days[i])]
                for rid in ids
                for i in range(n - 1)
                if (rid, tz.key, days[i]) in self._days
            }
        stale = self._late(kept, days, tz.key)
        first_unknown = n - 1  # the event day is always read
        with self._lock:
            for rid in ids:
                r = row[rid]
                for i in range(n - 1):
                    if (rid, i) not in kept or (rid, i) in stale:
                        first_unknown = min(first_unknown, i)
                        continue
                    day_kw, covered, when = kept[(rid, i)]
                    key = (rid, tz.key, days[i])
                    if when is not None:  # checked up to now: the next check looks from here
                        self._days[key] = (day_kw, covered, read_at)
                    self._days.move_to_end(key)
                    kw[r, i], cov[r, i] = day_kw, covered
        read = starts[first_unknown:]
        # Days gone from the raw history are read from their stored five-minute series,
        # measured by the same rule (`app/telemetry_retention`) before their samples went.
        rolled = self.store.rolled_through()
        rolled_s = _utc_midnight(rolled) if rolled is not None else -np.inf
        series = (
            self.store.daily_energy(
                ids,
                datetime.fromtimestamp(float(read.min()), UTC).date(),
                rolled - timedelta(days=1),
                SLOT_S,
            )
            if rolled is not None and float(read.min()) < rolled_s
            else {}
        )
        # `since` spares only the event day's early samples: a past day not kept is read whole.
        since = since if first_unknown == n - 1 else -np.inf
        raw_start = max(float(read.min()), rolled_s, since) - self.hold_s
        history = self.store.power_history(ids, datetime.fromtimestamp(raw_start, UTC), end)
        none = (np.zeros(0), np.zeros(0))
        kwh, c = energy_in_each(
            [history.get(rid, none) for rid in ids], read, read + SLOT_S, self.hold_s
        )
        for rid in series.keys() & row.keys():
            r = row[rid]
            kwh[r], c[r] = from_series(series[rid], read, rolled_s, kwh[r], c[r])
        ok = exists[first_unknown:]
        kw[:, first_unknown:] = np.where(ok, -kwh * KW_PER_KWH, np.nan)
        c = np.where(ok, c, 0.0)
        cov[:, first_unknown:] = c.sum(axis=2)
        final_before = read_at - LATE_SAMPLES_S
        final = {
            i
            for i in range(first_unknown, n - 1)
            if datetime.combine(days[i] + timedelta(days=1), time(), tz).timestamp() <= final_before
        }
        with self._lock:
            for rid in ids:
                r = row[rid]
                for i in range(first_unknown, n - 1):
                    key = (rid, tz.key, days[i])
                    when = None if i in final else read_at
                    self._days[key] = (kw[r, i].astype(np.float32), float(cov[r, i]), when)
            while len(self._days) > self.cache_days:
                self._days.popitem(last=False)
        loads = MemberLoads(days, row, kw, cov, c[:, -1], exists.sum(axis=1) * float(SLOT_S))
        return loads, starts, exists

    def _late(
        self,
        kept: dict[tuple[str, int], tuple[NDArray[np.float32], float, float | None]],
        days: list[date],
        tz_key: str,
    ) -> set[tuple[str, int]]:
        """The kept days not yet final that samples were received for since they were read."""
        open_days = {i for (_, i), v in kept.items() if v[2] is not None}
        if not open_days:
            return set()
        since = min(v[2] for v in kept.values() if v[2] is not None) - LATE_MARGIN_S
        tz = ZoneInfo(tz_key)
        midnights = [datetime.combine(d, time(), tz) for d in days]
        lo, hi = min(open_days), max(open_days)
        late = self.store.received_since(
            datetime.fromtimestamp(since, UTC),
            midnights[lo] - timedelta(seconds=self.hold_s),  # held into the day's first minutes
            midnights[hi + 1],
        )
        day_starts = np.array([m.timestamp() for m in midnights])
        stale = set()
        for rid, ts in late:
            # the day of the sample, and the next one if the sample is held into it
            for t in (ts, ts + self.hold_s):
                i = int(np.searchsorted(day_starts, t, side="right")) - 1
                if i in open_days:
                    stale.add((rid, i))
        return stale

    def measure(
        self,
        aggregation_id: str,
        start: datetime,
        end: datetime,
        awarded_kw: float,
        per_resource: bool = True,
    ) -> Measured:
        """The award's delivery against its baseline; `per_resource=False` leaves out each
        member's own baseline and use (`resources` empty), which only the settlement reports."""
        rule = self.policy.rule_for(aggregation_id)
        tz = ZoneInfo(rule.timezone)
        day = start.astimezone(tz).date()
        metered = rule.method is BaselineMethod.METERED
        back = 0 if metered else rule.lookback_days
        days = [day - timedelta(days=b) for b in range(back, -1, -1)]
        members = self.members.members(aggregation_id)
        # An award in the second pass of the hour clocks repeat is measured on that pass,
        # against the same time of day on the other days, as an award in the first pass is.
        second = start.astimezone(tz).fold
        starts, exists = local_slots(days, tz, SLOT_MIN, second)
        spans = self.store.award_spans(
            aggregation_id,
            datetime.fromtimestamp(float(starts[0, 0]), UTC),
            datetime.fromtimestamp(float(starts[-1, -1]) + SLOT_S, UTC),
        )
        event_days = {s.astimezone(tz).date() for s, _, _ in spans} - {day}
        todays = [(s, e) for s, e, _ in spans if s.astimezone(tz).date() == day] or [(start, end)]
        today, real = starts[-1], exists[-1]
        event = _overlapping(today, real, min(s for s, _ in todays), max(e for _, e in todays))
        window = _overlapping(today, real, start, end)
        adjust_from = max(0, event.start - round(rule.adjustment_from_h * 60 / SLOT_MIN))
        adjust_to = max(0, event.start - round(rule.adjustment_to_h * 60 / SLOT_MIN))
        # Of the event day only the award's intervals and the adjustment window before the
        # day's first event are used: its samples before them are not read (settling a
        # morning's hourly awards read the whole morning again for each).
        adjusted = not metered and adjust_to > adjust_from  # else the window is empty
        since = float(today[min(window.start, adjust_from) if adjusted else window.start])
        loads, _, _ = self._loads([r for r, _ in members], days, tz, end, since, second)
        note: str | None = None
        if end.astimezone(tz) > datetime.combine(day + timedelta(days=1), time(), tz):
            note = "the award runs past local midnight: only its part before midnight is measured"

        def baseline_of(rows: list[str]) -> Baseline:
            if metered or not rows:
                return Baseline(np.zeros(today.size))
            kw, cover = loads.summed(rows)
            seen = cover >= MIN_COVERAGE
            seen[-1] = True  # the event day itself is always kept
            lo, hi = adjust_from, adjust_to
            measured_before = float(
                loads.covered_today[loads.rows(rows), lo:hi].sum()
            ) >= MIN_COVERAGE * len(rows) * SLOT_S * max(hi - lo, 1)
            return baseline(
                DayLoads(tuple(d for d, s in zip(days, seen, strict=True) if s), kw[seen]),
                day,
                event,
                rule,
                event_days,
                slot_minutes=SLOT_MIN,
                adjust=measured_before,
            )

        vehicles = [r for r, bess in members if not bess]
        whole = baseline_of(vehicles)
        base_kw = whole.kw
        note = "; ".join(n for n in (note, whole.note) if n) or None
        if base_kw is None:
            base_kw = np.zeros(today.size)
            note = f"{note}; delivery counted as metered output only (baseline 0)"
        measured_kw = np.nan_to_num(loads.kw[:, -1]).sum(axis=0)
        intervals: list[SettledInterval] = []
        credited_total = 0.0
        for s in range(window.start, window.stop):
            a = max(start.timestamp(), today[s])
            b = min(end.timestamp(), today[s] + SLOT_S)
            if not real[s] or b <= a:  # the hour clocks skip is no time of the award's
                continue
            awarded = awarded_kw * (b - a) / 3600.0
            base, used = base_kw[s] / KW_PER_KWH, measured_kw[s] / KW_PER_KWH
            delivered = base - used
            together = sum(kw for s0, s1, kw in spans if s0.timestamp() < b and s1.timestamp() > a)
            credited = delivered * awarded_kw / together if together else 0.0
            credited_total += credited
            intervals.append(
                {
                    "interval_start": datetime.fromtimestamp(today[s], UTC).isoformat(),
                    "interval_end": datetime.fromtimestamp(today[s] + SLOT_S, UTC).isoformat(),
                    "awarded_kwh": _round(awarded),
                    "baseline_kwh": _round(base),
                    "measured_kwh": _round(used),
                    "delivered_kwh": _round(delivered),
                    "credited_kwh": _round(credited),
                }
            )
        resources: list[SettledResource] = []
        for rid, bess in members if per_resource else []:
            own = baseline_of([] if bess else [rid]).kw
            own_kwh = float(own[window].sum()) / KW_PER_KWH if own is not None else 0.0
            used = float(np.nan_to_num(loads.kw[loads.row[rid], -1, window]).sum()) / KW_PER_KWH
            resources.append(
                {
                    "resource_id": rid,
                    "baseline_kwh": _round(own_kwh),
                    "measured_kwh": _round(used),
                    "delivered_kwh": _round(own_kwh - used),
                }
            )
        return Measured(
            method=rule.method.value,
            baseline_kwh=_round(float(base_kw[window].sum()) / KW_PER_KWH),
            measured_kwh=_round(float(measured_kw[window].sum()) / KW_PER_KWH),
            delivered_kwh=_round(credited_total),
            days_used=[d.isoformat() for d in whole.days_used],
            adjustment=None if whole.adjustment is None else _round(whole.adjustment),
            note=note,
            intervals=intervals,
            resources=resources,
        )


def _utc_midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _overlapping(
    today: NDArray[np.float64], real: NDArray[np.bool_], a: datetime, b: datetime
) -> slice:
    """The event day's local intervals from the first to the last that overlaps [a, b) in
    time (intervals the clock skips are none of them; a span past the day ends with it)."""
    hit = np.flatnonzero(real & (today < b.timestamp()) & (today + SLOT_S > a.timestamp()))
    return slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0)

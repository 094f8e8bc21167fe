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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.baseline_policy import BaselinePolicy
from vpp_aggregator.app.member_loads import MemberLoads, from_series
from vpp_aggregator.app.meter_days import (
    DayBlock,
    KeptDays,
    Key,
    first_stale_start,
    valid_until,
)
from vpp_aggregator.app.outbound import SettledInterval, SettledResource
from vpp_aggregator.domain.baseline_days import local_slots
from vpp_aggregator.domain.baselines import Baseline, BaselineMethod, baselines_each
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
    """Measures awards. The intervals of each day read are kept (`app/meter_days`, at most
    `cache_days` resource-days): a measurement reads again only the intervals after the last
    read and those a sample received since falls in (a device back from an outage uploads what
    it buffered), so a real-time award every 5 minutes reads its own minutes, not 45 days'. A
    day is final, and no longer checked, `LATE_SAMPLES_S` after it ends."""

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
        self._kept = KeptDays(cache_days)

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
        n, m = starts.shape
        row = {rid: r for r, rid in enumerate(ids)}
        read_at = self.clock().timestamp()  # before the read: what comes during it is late
        need = np.full(n, -np.inf)
        need[-1] = since
        wanted = exists & (starts >= need[:, None])
        first_needed = np.where(wanted, starts, np.inf).min(axis=1)
        keys = [(tuple(ids), tz.key, d, last_pass if i == n - 1 else 0) for i, d in enumerate(days)]
        blocks = [self._kept.get(k) for k in keys]
        kept = [
            b if b is not None and b.from_s <= first_needed[i] else None
            for i, b in enumerate(blocks)
        ]
        late = self._late(kept, starts, row)
        # per day, where its kept intervals stop holding (a final day holds all through)
        stale_from = np.where([b is not None and b.read_at is None for b in kept], np.inf, -np.inf)
        for i, b in enumerate(kept):
            if b is not None and b.read_at is not None:
                rows, ts = late.get(i, (np.zeros(0, np.int64), np.zeros(0)))
                until = valid_until(b, rows, ts, float(starts[i, 0]))
                stale_from[i] = first_stale_start(starts[i], exists[i], until, SLOT_S).min()
        # A kept day is read again from where it stops holding, even where that is before what
        # this measurement needs (an award's tracking needs its day from the award's start):
        # kept whole, it serves the next awards and, once past, the next days' baselines.
        missing = np.array([b is None for b in kept])
        read_from = float(np.where(missing, first_needed, stale_from).min())
        kw = np.full((len(ids), n, m), np.nan)
        cov = np.zeros((len(ids), n, m))
        cov_final = np.zeros((len(ids), n))  # a final day keeps only its total
        for i, b in enumerate(kept):
            if b is not None:
                kw[:, i] = b.kw
                if b.read_at is None:
                    cov_final[:, i] = b.covered
                else:
                    cov[:, i] = b.covered
        fresh = exists & (starts >= read_from)  # all that is read, kept for what comes next
        days_read = np.flatnonzero(fresh.any(axis=1))
        first = int(days_read[0]) if days_read.size else n
        if first < n:
            read = starts[first:]
            # Days gone from the raw history are read from their stored five-minute series,
            # measured by the same rule (`app/telemetry_retention`) before their samples went.
            rolled = self.store.rolled_through()
            rolled_s = _utc_midnight(rolled) if rolled is not None else -np.inf
            lo = float(read.min())
            series = (
                self.store.daily_energy(
                    ids, datetime.fromtimestamp(lo, UTC).date(), rolled - timedelta(days=1), SLOT_S
                )
                if rolled is not None and lo < rolled_s
                else {}
            )
            raw_start = max(read_from, rolled_s) - self.hold_s
            history = self.store.power_history(ids, datetime.fromtimestamp(raw_start, UTC), end)
            none = (np.zeros(0), np.zeros(0))
            kwh, c = energy_in_each(
                [history.get(rid, none) for rid in ids], read, read + SLOT_S, self.hold_s
            )
            for rid in series.keys() & row.keys():
                r = row[rid]
                kwh[r], c[r] = from_series(series[rid], read, rolled_s, kwh[r], c[r])
            now = fresh[first:]
            kw[:, first:] = np.where(now, -kwh * KW_PER_KWH, kw[:, first:])
            cov[:, first:] = np.where(now, c, cov[:, first:])
            cov_final[:, fresh.any(axis=1)] = 0.0  # a final day read again counts once
        # a sample stamped as received just before the read may commit after it
        good_to = min(read_at - LATE_MARGIN_S, end.timestamp())
        self._keep(keys, kept, first, read_from, stale_from, kw, cov, starts, read_at, good_to)
        before = exists[-1] & ~wanted[-1]  # the event day's intervals before those used
        kw[:, -1] = np.where(before, 0.0, kw[:, -1])
        cov[:, -1] = np.where(before, 0.0, cov[:, -1])
        covered = cov.sum(axis=2) + cov_final
        loads = MemberLoads(days, row, kw, covered, cov[:, -1], exists.sum(axis=1) * float(SLOT_S))
        return loads, starts, exists

    def _keep(
        self,
        keys: list[Key],
        kept: list[DayBlock | None],
        first: int,
        read_from: float,
        stale_from: NDArray[np.float64],
        kw: NDArray[np.float64],
        cov: NDArray[np.float64],
        starts: NDArray[np.float64],
        read_at: float,
        good_to: float,
    ) -> None:
        """Keep what this read measured; a day checked with nothing received since is good as
        of now, and one over a day past its end is final."""
        final_before = read_at - LATE_SAMPLES_S
        for i, (key, b) in enumerate(zip(keys, kept, strict=True)):
            if i < first:
                if b is not None and b.read_at is not None:
                    b.read_at = read_at  # checked up to now: the next check looks from here
                continue
            held = b is not None and b.from_s < read_from <= stale_from[i]
            from_s = b.from_s if held and b is not None else max(read_from, float(starts[i, 0]))
            if starts[i, -1] + SLOT_S <= final_before:
                kw_i, cov_i = kw[:, i].astype(np.float32), cov[:, i].sum(axis=1)
                block = DayBlock(kw_i, cov_i, from_s, None, np.inf)
            else:
                cov_i = cov[:, i].astype(np.float32)
                block = DayBlock(kw[:, i].copy(), cov_i, from_s, read_at, good_to)
            self._kept.put(key, block)

    def _late(
        self, kept: list[DayBlock | None], starts: NDArray[np.float64], row: dict[str, int]
    ) -> dict[int, tuple[NDArray[np.int64], NDArray[np.float64]]]:
        """Per open kept day, the members and times of samples received since it was read
        that fall in it or are held into it (those taken after a read change only intervals
        read again anyway)."""
        open_days = [i for i, b in enumerate(kept) if b is not None and b.read_at is not None]
        if not open_days:
            return {}
        blocks = [b for b in kept if b is not None and b.read_at is not None]
        since = min(b.read_at for b in blocks if b.read_at is not None) - LATE_MARGIN_S
        upto = max(b.good_to for b in blocks)
        lo, hi = min(open_days), max(open_days)
        late = self.store.received_since(
            datetime.fromtimestamp(since, UTC),
            datetime.fromtimestamp(float(starts[lo, 0]) - self.hold_s, UTC),
            datetime.fromtimestamp(min(upto, float(starts[hi, -1]) + SLOT_S), UTC),
        )
        late = [(rid, ts) for rid, ts in late if rid in row]
        if not late:
            return {}
        rows = np.array([row[rid] for rid, _ in late], dtype=np.int64)
        ts = np.array([t for _, t in late], dtype=np.float64)
        day_starts = starts[:, 0]
        out: dict[int, tuple[NDArray[np.int64], NDArray[np.float64]]] = {}
        for i in open_days:
            # the day's own samples, and the last ones of the day before, held into it
            hit = (ts < starts[i, -1] + SLOT_S) & (ts + self.hold_s > day_starts[i])
            if hit.any():
                out[i] = (rows[hit], ts[hit])
        return out

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

        def baselines_of(rows: list[str], each: bool) -> list[Baseline]:
            """The baseline of the members `rows` together, or of each on its own."""
            if metered or not rows:
                return [Baseline(np.zeros(today.size)) for _ in range(len(rows) if each else 1)]
            before = loads.covered_today[loads.rows(rows), adjust_from:adjust_to]
            if each:
                (kw, cover), n, before = loads.each(rows), 1, before.sum(axis=1)
            else:
                kw, cover = (x[None] for x in loads.summed(rows))
                n, before = len(rows), np.array([float(before.sum())])
            known = cover >= MIN_COVERAGE
            known[:, -1] = True  # the event day itself is always kept
            adjust = before >= MIN_COVERAGE * n * SLOT_S * max(adjust_to - adjust_from, 1)
            return baselines_each(
                kw, known, days, day, event, rule, event_days, slot_minutes=SLOT_MIN, adjust=adjust
            )

        vehicles = [r for r, bess in members if not bess]
        whole = baselines_of(vehicles, each=False)[0]
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
        own_of = (
            dict(zip(vehicles, baselines_of(vehicles, True), strict=True)) if per_resource else {}
        )
        for rid, bess in members if per_resource else []:
            own = np.zeros(today.size) if bess else own_of[rid].kw
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

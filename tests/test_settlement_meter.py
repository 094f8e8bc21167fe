"""Settlement measurement where the clock, the day's other awards and missing telemetry make it
hard: days of 23 and 25 hours, real-time awards late in a day of curtailment, a real-time award
inside a day-ahead hour, and days the meter barely saw. Numbers worked by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from numpy.typing import NDArray

from vpp_aggregator.app.baseline_policy import BaselinePolicy
from vpp_aggregator.app.settlement import Meter
from vpp_aggregator.app.telemetry_retention import day_series
from vpp_aggregator.domain.baselines import BaselineMethod

LA = ZoneInfo("America/Los_Angeles")
NY = ZoneInfo("America/New_York")
STEP = 60.0  # a sample a minute


class Fleet:
    """A store and a register in one: samples of power (kW, + export) and the awards."""

    def __init__(self, members: list[tuple[str, bool]]) -> None:
        self._members = members
        self.samples: dict[str, tuple[list[float], list[float]]] = {r: ([], []) for r, _ in members}
        self.awards: list[tuple[datetime, datetime, float]] = []
        self.reads: list[datetime] = []  # where each history read began
        self.arrivals: list[tuple[str, float, float]] = []  # resource, taken, received
        self.series = {}

    def members(self, grid_node: str) -> list[tuple[str, bool]]:
        return self._members

    def report(
        self, rid: str, start: datetime, end: datetime, kw: float, received: datetime | None = None
    ) -> None:
        """Samples a minute apart, each received as it is taken unless `received` says when."""
        t = start.timestamp()
        while t < end.timestamp():
            self.samples[rid][0].append(t)
            self.samples[rid][1].append(kw)
            self.arrivals.append((rid, t, t if received is None else received.timestamp()))
            t += STEP

    def received_since(
        self, since: datetime, start: datetime, end: datetime
    ) -> list[tuple[str, float]]:
        return [
            (rid, t)
            for rid, t, got in self.arrivals
            if got >= since.timestamp() and start.timestamp() <= t < end.timestamp()
        ]

    def power_history(
        self, resource_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]:
        self.reads.append(start)
        out = {}
        for rid in resource_ids:
            ts, kw = (np.array(x) for x in self.samples[rid])
            order = np.argsort(ts, kind="stable")
            ts, kw = ts[order], kw[order]
            keep = (ts >= start.timestamp()) & (ts < end.timestamp())
            out[rid] = (ts[keep], kw[keep])
        return out

    def award_spans(
        self, aggregation_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime, float]]:
        return [(s, e, kw) for s, e, kw in self.awards if s < end and e > start]

    # the long-kept five-minute series, as the retention job leaves them
    rolled: date | None = None
    series: dict[str, dict[date, tuple[NDArray[np.float32], NDArray[np.uint16]]]]

    def roll_up_before(self, cut: date, hold_s: float) -> None:
        """Keep each day before `cut` as its series, and drop the raw samples before the day
        ahead of it (whose series is kept too), as `TelemetryRetention` does."""
        self.series = {rid: {} for rid in self.samples}
        for rid, (ts_, kw_) in self.samples.items():
            ts, kw = np.array(ts_), np.array(kw_)
            order = np.argsort(ts, kind="stable")
            ts, kw = ts[order], kw[order]
            day = datetime.fromtimestamp(float(ts[0]), UTC).date()
            while day < cut:
                self.series[rid][day] = day_series(day, ts, kw, hold_s)
                day += timedelta(days=1)
            gone = ts < datetime.combine(cut - timedelta(days=1), time(), UTC).timestamp()
            self.samples[rid] = (ts[~gone].tolist(), kw[~gone].tolist())
        self.rolled = cut

    def rolled_through(self) -> date | None:
        return self.rolled

    def daily_energy(
        self, resource_ids: Sequence[str], first: date, last: date, interval_s: float
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]]:
        out = {}
        for rid in resource_ids:
            days = sorted(d for d in self.series.get(rid, {}) if first <= d <= last)
            if days:
                out[rid] = (
                    np.concatenate(
                        [
                            datetime.combine(d, time(), UTC).timestamp()
                            + interval_s * np.arange(288)
                            for d in days
                        ]
                    ),
                    np.concatenate([self.series[rid][d][0] for d in days]).astype(float),
                    np.concatenate([self.series[rid][d][1] for d in days]).astype(float),
                )
        return out

    def award(self, start: datetime, minutes: int, kw: float) -> tuple[datetime, datetime]:
        self.awards.append((start, start + timedelta(minutes=minutes), kw))
        return start, start + timedelta(minutes=minutes)


LATER = datetime(2030, 1, 1, tzinfo=UTC)  # measured long after: every past day is final


def meter(fleet: Fleet, method: BaselineMethod, now: datetime = LATER) -> Meter:
    return Meter(fleet, fleet, BaselinePolicy(default=method), hold_s=120.0, clock=lambda: now)


def at(day: date, hour: int, minute: int = 0, tz: ZoneInfo = LA) -> datetime:
    return datetime.combine(day, time(hour, minute), tz)


def test_the_day_clocks_go_back_has_25_hours_and_its_last_hour_is_measured() -> None:
    fleet = Fleet([("bess-1", True)])
    day = date(2025, 11, 2)  # 25 hours in Los Angeles
    fleet.report("bess-1", at(day, 22), at(day + timedelta(days=1), 0), 10.0)
    start, end = fleet.award(at(day, 23), 60, 10.0)
    m = meter(fleet, BaselineMethod.METERED).measure("N", start, end, 10.0)
    assert len(m.intervals) == 12
    assert m.delivered_kwh == pytest.approx(10.0)


def test_an_award_ending_as_the_clocks_go_forward_has_its_hour_and_no_more() -> None:
    """01:00-02:00 on the day clocks go forward ends at 03:00 by the clock: the skipped hour's
    intervals are not the award's. (They were measured as its, with negative awarded energy
    growing to -92 kWh, and a replay counted 550 kWh of surplus on that day.)"""
    fleet = Fleet([("bess-1", True)])
    day = date(2019, 3, 10)  # 23 hours in Los Angeles
    fleet.report("bess-1", at(day, 0), at(day, 5), 100.0)
    start, end = fleet.award(at(day, 1).astimezone(UTC), 60, 100.0)  # as awards arrive: UTC
    m = meter(fleet, BaselineMethod.METERED).measure("N", start, end, 100.0)
    assert len(m.intervals) == 12
    assert all(i["awarded_kwh"] == pytest.approx(100.0 / 12, abs=1e-3) for i in m.intervals)
    assert m.delivered_kwh == pytest.approx(100.0)


@pytest.mark.parametrize("method", [BaselineMethod.METERED, BaselineMethod.CAISO_10IN10])
def test_both_passes_of_the_hour_the_clocks_repeat_are_measured(method: BaselineMethod) -> None:
    """The day clocks go back, 01:00-02:00 comes twice; a day-ahead market awards each pass as
    its own hour (in UTC). Each is measured on its own pass, 12 intervals of its own instants,
    against the same time of day on the other days. (The first ended at 01:00 again by the
    clock and got no interval; the second's instants were not the day's: 200 kWh of Office001's
    fourth quarter of 2019 were counted short as "no dispatch ran".)"""
    fleet = Fleet([("ev-1", False), ("bess-1", True)])
    day = date(2019, 11, 3)  # 25 hours in Los Angeles
    for back in range(1, 21):  # like days: the vehicle draws 7 kW until 04:00
        d = day - timedelta(days=back)
        fleet.report("ev-1", at(d, 0), at(d, 4), -7.0)
        fleet.report("ev-1", at(d, 4), at(d + timedelta(days=1), 0), 0.0)
    first = datetime(2019, 11, 3, 8, tzinfo=UTC)  # 01:00 PDT
    second = datetime(2019, 11, 3, 9, tzinfo=UTC)  # 01:00 PST
    fleet.report("ev-1", at(day, 0), first, -7.0)  # as usual before the awards, then it stops
    fleet.report("ev-1", first, second + timedelta(hours=2), 0.0)
    fleet.report("bess-1", first, second, 30.0)  # and the battery gives 30 kW, then 50
    fleet.report("bess-1", second, second + timedelta(hours=1), 50.0)
    fleet.award(first, 60, 37.0)
    fleet.award(second, 60, 57.0)
    m = meter(fleet, method)
    for start, kw, battery_kwh in ((first, 37.0, 30.0), (second, 57.0, 50.0)):
        got = m.measure("N", start, start + timedelta(hours=1), kw)
        assert [i["interval_start"] for i in got.intervals] == [
            (start + timedelta(minutes=5 * k)).isoformat() for k in range(12)
        ]
        assert sum(i["awarded_kwh"] for i in got.intervals) == pytest.approx(kw, abs=0.01)
        vehicle_kwh = (
            7.0 if method is BaselineMethod.CAISO_10IN10 else 0.0
        )  # what it no longer drew
        assert got.delivered_kwh == pytest.approx(battery_kwh + vehicle_kwh, abs=0.05)


def test_like_days_are_matched_by_the_clock_across_a_clock_change() -> None:
    fleet = Fleet([("ev-1", False)])
    day = date(2025, 11, 3)  # the Monday after the clocks went back in New York
    for back in range(1, 46):
        d = day - timedelta(days=back)
        fleet.report("ev-1", at(d, 0, tz=NY), at(d, 18, tz=NY), 0.0)
        fleet.report("ev-1", at(d, 18, tz=NY), at(d, 19, tz=NY), -10.0)  # charges 18:00-19:00
        fleet.report("ev-1", at(d, 19, tz=NY), at(d + timedelta(days=1), 0, tz=NY), 0.0)
    fleet.report("ev-1", at(day, 0, tz=NY), at(day, 19, tz=NY), 0.0)  # curtailed today
    start, end = fleet.award(at(day, 18, tz=NY), 60, 10.0)
    m = meter(fleet, BaselineMethod.PJM_CBL).measure("N", start, end, 10.0)
    # weeks of days, before and after the change, all charged 18:00-19:00 local
    assert m.baseline_kwh == pytest.approx(10.0)
    assert m.delivered_kwh == pytest.approx(10.0)


@pytest.mark.parametrize("method", [BaselineMethod.PJM_CBL, BaselineMethod.CAISO_10IN10])
def test_like_days_gone_from_the_raw_history_are_read_from_their_kept_series(
    method: BaselineMethod,
) -> None:
    """Raw samples older than the retention are dropped after their five-minute series is
    stored: an award settles the same from the series as it did from the samples."""
    fleet = Fleet([("ev-1", False), ("ev-2", False)])
    day = date(2025, 11, 3)  # Monday after the clocks went back: local days of 23-25 h around
    for back in range(1, 46):
        d = day - timedelta(days=back)
        for rid, kw in (("ev-1", -10.0), ("ev-2", -7.0 - back % 3)):
            fleet.report(rid, at(d, 0, tz=NY), at(d, 18, tz=NY), -1.0)
            fleet.report(rid, at(d, 18, tz=NY), at(d, 19, 7, tz=NY), kw)  # across intervals
            fleet.report(rid, at(d, 19, 7, tz=NY), at(d + timedelta(days=1), 0, tz=NY), -1.0)
    for rid in ("ev-1", "ev-2"):
        fleet.report(rid, at(day, 0, tz=NY), at(day, 19, tz=NY), -1.0)
    start, end = fleet.award(at(day, 18, tz=NY), 60, 10.0)
    before = meter(fleet, method).measure("N", start, end, 10.0)
    fleet.roll_up_before(day - timedelta(days=3), hold_s=120.0)
    assert len(fleet.samples["ev-1"][0]) <= 5 * 24 * 60  # 5 days of 45 left as raw samples
    after = meter(fleet, method).measure("N", start, end, 10.0)
    assert after.days_used == before.days_used and len(before.days_used) >= 4
    assert after.baseline_kwh == pytest.approx(before.baseline_kwh, abs=1e-3)
    assert after.delivered_kwh == pytest.approx(before.delivered_kwh, abs=1e-3)
    assert after.resources == before.resources


@pytest.mark.parametrize("method", [BaselineMethod.PJM_CBL, BaselineMethod.CAISO_10IN10])
def test_real_time_awards_through_a_day_are_one_event_baselined_before_the_first(
    method: BaselineMethod,
) -> None:
    fleet = Fleet([("ev-1", False)])
    day = date(2025, 6, 11)  # a Wednesday
    fleet.report("ev-1", at(day - timedelta(days=45), 0), at(day, 12), -10.0)  # 10 kW always
    fleet.report("ev-1", at(day, 12), at(day, 18), 0.0)  # curtailed from noon
    awards = [fleet.award(at(day, 12) + timedelta(minutes=5 * k), 5, 10.0) for k in range(72)]
    start, end = awards[54]  # 16:30: its 4 h to 1 h before lies in the curtailment
    m = meter(fleet, method).measure("N", start, end, 10.0)
    # the adjustment is read before noon, where the day drew its usual 10 kW
    assert m.adjustment == pytest.approx(0.0 if method is BaselineMethod.PJM_CBL else 1.0)
    assert m.delivered_kwh == pytest.approx(10.0 / 12, abs=1e-4)  # to the watt-hour


def test_a_real_time_award_inside_a_day_ahead_hour_shares_the_delivery() -> None:
    fleet = Fleet([("bess-1", True)])
    day = date(2025, 6, 11)
    fleet.report("bess-1", at(day, 14), at(day, 15), 150.0)  # exports 150 kW all hour
    hour = fleet.award(at(day, 14), 60, 100.0)  # day-ahead
    five = fleet.award(at(day, 14, 20), 5, 50.0)  # real-time, on top
    m = meter(fleet, BaselineMethod.METERED)
    rt = m.measure("N", *five, 50.0)
    assert rt.delivered_kwh == pytest.approx(
        150.0 / 12 * 50 / 150, abs=1e-4
    )  # a third of 14:20-14:25
    da = m.measure("N", *hour, 100.0)
    # all of 11 intervals, two thirds of the shared one: 11 × 12.5 + 12.5 × 2/3 kWh
    assert da.delivered_kwh == pytest.approx(11 * 12.5 + 12.5 * 100 / 150, abs=1e-3)
    shared = da.intervals[4]
    assert (shared["delivered_kwh"], shared["credited_kwh"]) == (12.5, pytest.approx(8.3333))


def test_days_the_meter_barely_saw_are_not_like_days_and_an_unseen_morning_is_not_adjusted() -> (
    None
):
    fleet = Fleet([("ev-1", False)])
    day = date(2025, 6, 11)
    for back in range(1, 15):
        d = day - timedelta(days=back)
        if back == 1:  # yesterday: one minute of telemetry, at 0 kW
            fleet.report("ev-1", at(d, 15), at(d, 15, 1), 0.0)
        else:
            fleet.report("ev-1", at(d, 0), at(d + timedelta(days=1), 0), -10.0)
    fleet.report("ev-1", at(day, 14), at(day, 16), 0.0)  # today: seen only from 14:00
    start, end = fleet.award(at(day, 15), 60, 10.0)
    m = meter(fleet, BaselineMethod.CAISO_10IN10).measure("N", start, end, 10.0)
    assert (day - timedelta(days=1)).isoformat() not in m.days_used
    assert m.adjustment is None and m.note is not None and "not measured" in m.note
    assert m.baseline_kwh == pytest.approx(10.0)  # ten days at 10 kW, not scaled toward 0
    assert m.delivered_kwh == pytest.approx(10.0)


def test_an_award_measured_from_samples_a_minute_apart_counts_each_interval_once() -> None:
    fleet = Fleet([("bess-1", True)])
    day = date(2025, 6, 11)
    fleet.report("bess-1", at(day, 9), at(day, 10), 60.0)
    start, end = fleet.award(at(day, 9), 60, 60.0)
    m = meter(fleet, BaselineMethod.METERED).measure("N", start, end, 60.0)
    assert [i["interval_start"] for i in m.intervals] == [
        (start + timedelta(minutes=5 * k)).astimezone(UTC).isoformat() for k in range(12)
    ]
    assert m.delivered_kwh == pytest.approx(60.0)


def test_past_days_are_read_once_and_the_next_award_reads_only_the_minutes_since() -> None:
    fleet = Fleet([("ev-1", False), ("ev-2", False), ("bess-1", True)])
    day = date(2025, 6, 11)
    for rid, kw in (("ev-1", -7.0), ("ev-2", -3.0)):
        fleet.report(rid, at(day - timedelta(days=45), 0), at(day, 12), kw)
        fleet.report(rid, at(day, 12), at(day, 13), 0.0)
    fleet.report("bess-1", at(day, 12), at(day, 13), 20.0)
    first, second = fleet.award(at(day, 12), 5, 30.0), fleet.award(at(day, 12, 5), 5, 30.0)
    m = meter(fleet, BaselineMethod.CAISO_10IN10, now=at(day, 13))
    a = m.measure("N", *first, 30.0)
    b = m.measure("N", *second, 30.0)
    assert fleet.reads[0] < at(day - timedelta(days=44), 0)  # 45 days of samples, once
    # then only the minutes after the first award's: yesterday's samples may still come, and
    # the first award's, but none came since they were read (the held sample before them too)
    assert at(day, 12) <= fleet.reads[1] < at(day, 12, 5)
    fresh = meter(fleet, BaselineMethod.CAISO_10IN10).measure("N", *second, 30.0)
    assert (b.baseline_kwh, b.delivered_kwh, b.days_used) == (
        fresh.baseline_kwh,
        fresh.delivered_kwh,
        fresh.days_used,
    )
    assert a.delivered_kwh == pytest.approx((10.0 + 20.0) / 12, abs=1e-4)  # 10 kW paused + 20 out


def test_yesterdays_samples_that_come_late_are_in_the_baseline_of_the_next_measurement() -> None:
    """A device back from an outage uploads the day it buffered: an award measured before that
    (the dispatch tracks its award while it runs) must not keep yesterday as it was then."""
    fleet = Fleet([("ev-1", False)])
    day = date(2025, 6, 11)
    fleet.report("ev-1", at(day - timedelta(days=20), 0), at(day - timedelta(days=1), 0), -7.0)
    fleet.report("ev-1", at(day, 12), at(day, 13), 0.0)  # paused; its morning unseen: unadjusted
    award = fleet.award(at(day, 12), 60, 7.0)
    m = meter(fleet, BaselineMethod.CAISO_10IN10, now=at(day, 12, 30))
    before = m.measure("N", *award, 7.0)
    # yesterday, uploaded late: as the award is measured
    fleet.report("ev-1", at(day - timedelta(days=1), 0), at(day, 0), -1.0, at(day, 12, 30))
    after = m.measure("N", *award, 7.0)
    fresh = meter(fleet, BaselineMethod.CAISO_10IN10).measure("N", *award, 7.0)
    assert (day - timedelta(days=1)).isoformat() not in before.days_used  # unseen then
    assert before.baseline_kwh == pytest.approx(7.0, abs=1e-3)
    assert (after.baseline_kwh, after.days_used) == (fresh.baseline_kwh, fresh.days_used)
    assert after.baseline_kwh == pytest.approx((9 * 7.0 + 1.0) / 10, abs=1e-3)


def test_an_award_measured_as_it_runs_then_after_a_late_upload_is_as_measured_afresh() -> None:
    """The meter keeps the intervals it read. Measured while the award runs, then again once
    the rest of the hour came and a battery back from an outage uploaded the minutes it
    buffered from inside the award, it reads both and keeps none of the first read's gaps."""
    fleet = Fleet([("ev-1", False), ("bess-1", True)])
    day = date(2025, 6, 11)
    fleet.report("ev-1", at(day - timedelta(days=20), 0), at(day, 12), -7.0)
    fleet.report("ev-1", at(day, 12), at(day, 12, 30), 0.0)
    fleet.report("bess-1", at(day, 12), at(day, 12, 10), 20.0)  # then offline
    award = fleet.award(at(day, 12), 60, 27.0)
    now = [at(day, 12, 30)]
    policy = BaselinePolicy(default=BaselineMethod.CAISO_10IN10)
    m = Meter(fleet, fleet, policy, hold_s=120.0, clock=lambda: now[0])
    during = m.measure("N", *award, 27.0)
    fleet.report("ev-1", at(day, 12, 30), at(day, 13), 0.0)
    fleet.report("bess-1", at(day, 12, 10), at(day, 13), 20.0, at(day, 13, 1))  # buffered
    now[0] = at(day, 13, 5)
    after = m.measure("N", *award, 27.0)
    fresh = meter(fleet, BaselineMethod.CAISO_10IN10, now=now[0]).measure("N", *award, 27.0)
    assert during.delivered_kwh < after.delivered_kwh - 15.0  # 48 minutes of 20 kW unseen
    assert (after.intervals, after.delivered_kwh) == (fresh.intervals, fresh.delivered_kwh)
    assert after.delivered_kwh == pytest.approx(27.0, abs=1e-3)


def test_days_read_again_after_older_ones_left_the_meter_count_their_coverage_once() -> None:
    """A meter keeping fewer days than a baseline looks back reads the oldest again, and with
    them the kept days after: a day its samples covered for a third must still not count as a
    like day (its coverage once counted both kept and measured again)."""
    fleet = Fleet([("ev-1", False)])
    day = date(2025, 6, 11)
    for back in range(45, 0, -1):
        d = day - timedelta(days=back)
        end = at(d, 8) if back % 3 == 0 else at(d + timedelta(days=1), 0)  # a third, some days
        fleet.report("ev-1", at(d, 0), end, -7.0)
    fleet.report("ev-1", at(day, 0), at(day, 13), 0.0)
    award = fleet.award(at(day, 12), 60, 7.0)
    m = Meter(fleet, fleet, BaselinePolicy(default=BaselineMethod.CAISO_10IN10), 120.0,
              clock=lambda: at(day, 13), cache_days=40)  # fmt: skip
    m.measure("N", *award, 7.0)
    again = m.measure("N", *award, 7.0)
    fresh = meter(fleet, BaselineMethod.CAISO_10IN10, now=at(day, 13)).measure("N", *award, 7.0)
    assert again.days_used == fresh.days_used
    assert not any(
        (day - date.fromisoformat(d)).days % 3 == 0 for d in again.days_used
    )  # the days seen a third of the time are not like days

"""ISO baselines worked by hand: CAISO 10-in-10 with its capped day-of ratio, PJM high 4 of 5 /
high 2 of 3 with the symmetric additive adjustment, NERC holidays and events on holidays.

Hourly intervals keep the arithmetic readable: each day's load is one number for every hour,
so a baseline is the mean of the chosen days' numbers and its adjustment is read off the
event day's hours 10-12 (the window 4 h to 1 h before an event at 14:00)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pytest

from vpp_aggregator.domain.baseline_days import DayType, day_type, nerc_holidays
from vpp_aggregator.domain.baselines import (
    CAISO_10IN10,
    METERED,
    PJM_CBL,
    BaselineRule,
    DayLoads,
    baseline,
    baselines_each,
)
from vpp_aggregator.domain.metering import energy_in, energy_in_each, interval_energy

EVENT = slice(14, 16)  # 14:00-16:00, hourly intervals
ADJ = slice(10, 13)  # the adjustment window, 4 h to 1 h before 14:00


def loads(per_day: dict[date, float], event_day: date, window_kw: float) -> DayLoads:
    """Each day at one load all day; the event day at `window_kw` in the adjustment window."""
    days = [*sorted(per_day), event_day]
    kw = np.array([[per_day[d]] * 24 for d in days[:-1]] + [[0.0] * 24])
    kw[-1, ADJ] = window_kw
    return DayLoads(tuple(days), kw)


def every_day(first: date, last: date, kw: float) -> dict[date, float]:
    return {first + timedelta(days=i): kw for i in range((last - first).days + 1)}


def test_nerc_holidays_are_six_and_only_a_sunday_one_moves_to_monday() -> None:
    assert nerc_holidays(2019) == {
        date(2019, 1, 1),
        date(2019, 5, 27),  # Memorial Day
        date(2019, 7, 4),
        date(2019, 9, 2),  # Labor Day
        date(2019, 11, 28),  # Thanksgiving
        date(2019, 12, 25),
    }  # not Martin Luther King Jr. Day, Presidents' Day, Columbus Day or Veterans Day
    assert date(2021, 7, 5) in nerc_holidays(2021)  # July 4th 2021 was a Sunday
    assert date(2021, 7, 4) not in nerc_holidays(2021)
    assert date(2022, 1, 1) in nerc_holidays(2022)  # a Saturday: it stays
    assert date(2022, 12, 26) in nerc_holidays(2022)  # Christmas 2022 was a Sunday
    assert day_type(date(2019, 7, 4), saturday_apart=True) is DayType.SUNDAY_HOLIDAY
    assert day_type(date(2019, 1, 21), saturday_apart=False) is DayType.WEEKDAY  # MLK day


def test_caiso_10_in_10_averages_the_ten_latest_like_days_and_caps_the_ratio() -> None:
    event_day = date(2019, 7, 10)  # a Wednesday
    per_day = every_day(date(2019, 5, 20), date(2019, 7, 9), 100.0)  # older days: 100 kW
    # the ten most recent weekdays that count: Jul 9, 8, 5, 3, 1 at 20 kW; Jun 28..24 at 10 kW
    for d in (9, 8, 5, 3, 1):
        per_day[date(2019, 7, d)] = 20.0
    for d in (28, 27, 26, 25, 24):
        per_day[date(2019, 6, d)] = 10.0
    # left out: Jul 4 (a NERC holiday), Jul 2 (an event day) and the weekends, all at 100 kW
    raised = baseline(
        loads(per_day, event_day, 27.0),
        event_day,
        EVENT,
        CAISO_10IN10,
        [date(2019, 7, 2)],
        slot_minutes=60,
    )
    assert raised.days_used == tuple(
        sorted([date(2019, 7, d) for d in (9, 8, 5, 3, 1)], reverse=True)
        + sorted([date(2019, 6, d) for d in (28, 27, 26, 25, 24)], reverse=True)
    )
    assert raised.unadjusted_kw is not None and raised.kw is not None
    assert raised.unadjusted_kw[EVENT] == pytest.approx([15.0, 15.0])  # (5×20 + 5×10) / 10
    # 27 kW against 15 kW in the window is a ratio of 1.8: capped at 1.2
    assert raised.adjustment == pytest.approx(1.2)
    assert raised.kw[EVENT] == pytest.approx([18.0, 18.0])
    lowered = baseline(
        loads(per_day, event_day, 13.5),
        event_day,
        EVENT,
        CAISO_10IN10,
        [date(2019, 7, 2)],
        slot_minutes=60,
    )
    assert lowered.adjustment == pytest.approx(0.9)  # inside the cap: applied as is
    assert lowered.kw is not None and lowered.kw[EVENT] == pytest.approx([13.5, 13.5])
    floored = baseline(
        loads(per_day, event_day, 3.0),
        event_day,
        EVENT,
        CAISO_10IN10,
        [date(2019, 7, 2)],
        slot_minutes=60,
    )
    assert floored.adjustment == pytest.approx(0.8)  # 0.2 is capped at 0.8
    assert floored.kw is not None and floored.kw[EVENT] == pytest.approx([12.0, 12.0])


def test_caiso_weekends_and_holidays_take_four_in_four_and_a_holiday_event_is_one_of_them() -> None:
    per_day = every_day(date(2019, 5, 20), date(2019, 7, 12), 50.0)  # weekdays: 50 kW
    # weekend days and the holiday: the four latest before Saturday Jul 13 are
    # Jul 7 (Sun), Jul 6 (Sat), Jul 4 (Independence Day, a Thursday) and Jun 30 (Sun)
    like = {date(2019, 7, 7): 4.0, date(2019, 7, 6): 8.0, date(2019, 7, 4): 12.0}
    like[date(2019, 6, 30)] = 16.0
    like.update({date(2019, 6, 29): 90.0, date(2019, 6, 23): 90.0})
    per_day.update(like)
    saturday = baseline(
        loads(per_day, date(2019, 7, 13), 10.0),
        date(2019, 7, 13),
        EVENT,
        CAISO_10IN10,
        slot_minutes=60,
    )
    assert saturday.day_type is DayType.WEEKEND_HOLIDAY
    assert saturday.unadjusted_kw is not None and saturday.unadjusted_kw[14] == pytest.approx(10.0)
    assert saturday.adjustment == pytest.approx(1.0)
    # an event on Independence Day is baselined against weekend days, not the weekdays before it
    per_day = every_day(date(2019, 5, 20), date(2019, 7, 3), 50.0)
    per_day.update({date(2019, 6, 30): 6.0, date(2019, 6, 29): 6.0})
    per_day.update({date(2019, 6, 23): 10.0, date(2019, 6, 22): 10.0})
    holiday = baseline(
        loads(per_day, date(2019, 7, 4), 8.0),
        date(2019, 7, 4),
        EVENT,
        CAISO_10IN10,
        slot_minutes=60,
    )
    assert holiday.days_used == (
        date(2019, 6, 30),
        date(2019, 6, 29),
        date(2019, 6, 23),
        date(2019, 6, 22),
    )
    assert holiday.unadjusted_kw is not None and holiday.unadjusted_kw[14] == pytest.approx(8.0)


def test_caiso_without_enough_like_days_gives_no_baseline_and_says_why() -> None:
    event_day = date(2019, 7, 10)
    per_day = every_day(date(2019, 7, 5), date(2019, 7, 9), 10.0)  # 3 weekdays: Jul 5, 8, 9
    found = baseline(
        loads(per_day, event_day, 10.0), event_day, EVENT, CAISO_10IN10, slot_minutes=60
    )
    assert found.kw is None
    assert (
        found.note is not None and "3 weekday like days" in found.note and "needs 5" in found.note
    )


def test_pjm_high_4_of_5_passes_over_a_low_day_and_adds_the_symmetric_adjustment() -> None:
    event_day = date(2019, 7, 10)
    per_day = every_day(date(2019, 5, 20), date(2019, 7, 9), 100.0)
    # the five latest weekdays (Jul 4 is a NERC holiday): Jul 9, 8, 5, 3, 2
    per_day.update(
        {date(2019, 7, 9): 8.0, date(2019, 7, 8): 12.0, date(2019, 7, 5): 10.0}
        | {date(2019, 7, 3): 2.0, date(2019, 7, 2): 9.0, date(2019, 7, 1): 11.0}
    )
    # Jul 3 used 2 kW over the event hours, under 25 % of the five's mean (41 / 5 × 0.25 = 2.05):
    # passed over for Jul 1 (11 kW). High 4 of Jul 9, 8, 5, 2, 1 = 12, 11, 10, 9 → 10.5 kW
    up = baseline(loads(per_day, event_day, 13.0), event_day, EVENT, PJM_CBL, slot_minutes=60)
    assert set(up.days_used) == {date(2019, 7, d) for d in (8, 1, 5, 2)}
    assert up.unadjusted_kw is not None and up.unadjusted_kw[14] == pytest.approx(10.5)
    assert up.adjustment == pytest.approx(2.5)  # 13 kW measured in the window − 10.5 kW
    assert up.kw is not None and up.kw[EVENT] == pytest.approx([13.0, 13.0])
    down = baseline(loads(per_day, event_day, 7.0), event_day, EVENT, PJM_CBL, slot_minutes=60)
    assert down.adjustment == pytest.approx(-3.5)  # symmetric: it lowers the baseline too
    assert down.kw is not None and down.kw[EVENT] == pytest.approx([7.0, 7.0])
    # the ratio cap of CAISO does not apply: 20 kW against 10.5 kW is added in full
    assert baseline(
        loads(per_day, event_day, 20.0), event_day, EVENT, PJM_CBL, slot_minutes=60
    ).adjustment == pytest.approx(9.5)


def test_pjm_weekends_take_high_2_of_3_saturdays_apart_from_sundays_and_holidays() -> None:
    per_day = every_day(date(2019, 5, 20), date(2019, 7, 12), 50.0)
    per_day.update({date(2019, 7, 6): 4.0, date(2019, 6, 29): 8.0, date(2019, 6, 22): 6.0})
    per_day.update({date(2019, 7, 7): 30.0, date(2019, 6, 15): 100.0})  # a Sunday; a 4th Saturday
    saturday = baseline(
        loads(per_day, date(2019, 7, 13), 7.0), date(2019, 7, 13), EVENT, PJM_CBL, slot_minutes=60
    )
    assert saturday.days_used == (date(2019, 6, 29), date(2019, 6, 22))  # 8 and 6 of 4, 8, 6
    assert saturday.unadjusted_kw is not None and saturday.unadjusted_kw[14] == pytest.approx(7.0)
    # an event on Independence Day: Sundays and holidays — Jun 30, 23 and 16 (Memorial Day is
    # further back) — high 2 of 3
    per_day = every_day(date(2019, 5, 20), date(2019, 7, 3), 50.0)
    per_day.update({date(2019, 6, 30): 3.0, date(2019, 6, 23): 5.0, date(2019, 6, 16): 9.0})
    holiday = baseline(
        loads(per_day, date(2019, 7, 4), 7.0), date(2019, 7, 4), EVENT, PJM_CBL, slot_minutes=60
    )
    assert holiday.day_type is DayType.SUNDAY_HOLIDAY
    assert holiday.days_used == (date(2019, 6, 23), date(2019, 6, 16))  # 5 and 9 of 3, 5, 9
    assert holiday.kw is not None and holiday.kw[14] == pytest.approx(7.0)  # 7 + (7 − 7)


def test_metered_output_has_a_zero_baseline_and_parameters_are_configuration() -> None:
    day = date(2019, 7, 10)
    flat = loads(every_day(date(2019, 6, 1), date(2019, 7, 9), 10.0), day, 10.0)
    metered = baseline(flat, day, EVENT, METERED, slot_minutes=60)
    assert metered.kw is not None and not metered.kw.any()
    wider = replace(CAISO_10IN10, adjustment_cap=1.0)  # a cap of ±100 % lets 1.8 through
    assert baseline(
        loads(every_day(date(2019, 6, 1), date(2019, 7, 9), 15.0), day, 27.0),
        day,
        EVENT,
        wider,
        slot_minutes=60,
    ).adjustment == pytest.approx(1.8)


def test_interval_energy_holds_samples_and_reports_what_it_could_not_see() -> None:
    ts = np.array([0.0, 600.0, 1200.0, 3000.0])
    kw = np.array([50.0, 100.0, -20.0, 80.0])
    edges = np.array([0.0, 900.0, 1800.0, 2700.0, 3600.0])
    energy, covered = interval_energy(ts, kw, edges, 600.0)
    # 0-900: 50 kW 600 s + 100 kW 300 s; 900-1800: 100 kW 300 s − 20 kW 600 s; 1800-2700:
    # nothing known; 2700-3600: 80 kW from 3000
    assert energy == pytest.approx(
        [(50 * 600 + 100 * 300) / 3600, (100 * 300 - 20 * 600) / 3600, 0.0, 80 * 600 / 3600]
    )
    assert covered == pytest.approx([900.0, 900.0, 0.0, 600.0])


def test_many_resources_measured_at_once_as_each_on_its_own() -> None:
    """Settlement measures an aggregation's members in one pass (`energy_in_each`): a member's
    samples must never leak into the next one's windows, nor one without samples get any."""
    rng = np.random.default_rng(7)
    t0 = 1.55e9  # epoch seconds, as settlement reads them
    members = [(np.array([t0 + 3000.0]), np.array([11.0]))]  # one sample held past the last window
    members.append((np.zeros(0), np.zeros(0)))  # no samples at all
    for n in (1, 40, 300):
        ts = np.sort(t0 + rng.uniform(-1800.0, 2 * 86_400.0, n))
        members.append((ts, rng.normal(0.0, 10.0, n)))
    starts = t0 + np.arange(0.0, 2 * 86_400.0, 300.0).reshape(2, -1)  # two days of intervals
    each_kwh, each_covered = energy_in_each(members, starts, starts + 300.0, 600.0)
    assert each_kwh.shape == (len(members), 2, 288)
    for r, (ts, kw) in enumerate(members):
        kwh, covered = energy_in(ts, kw, starts, starts + 300.0, 600.0)
        assert each_kwh[r] == pytest.approx(kwh, abs=1e-9)
        assert each_covered[r] == pytest.approx(covered, abs=1e-6)
    assert each_kwh[1].sum() == 0.0 and each_covered[1].sum() == 0.0
    # the lone sample at t0 + 3000 s holds 600 s: the tenth and eleventh intervals, 11 kW each
    assert each_kwh[0, 0, 10:12] == pytest.approx([11 * 300 / 3600] * 2)


@pytest.mark.parametrize(
    ("rule", "event"),
    [
        (CAISO_10IN10, slice(168, 204)),
        (replace(CAISO_10IN10, weekday_keep=7), slice(168, 204)),  # high 7 of 10: by use
        (PJM_CBL, slice(168, 204)),
        (replace(PJM_CBL, adjustment_cap=0.05), slice(168, 204)),  # a capped additive
        (CAISO_10IN10, slice(6, 30)),  # too early in the day for a day-of adjustment
        (METERED, slice(168, 204)),
    ],
    ids=["caiso", "high-7-of-10", "pjm", "pjm-capped", "caiso-early", "metered"],
)
def test_each_resource_baselined_at_once_is_its_baseline_on_its_own(
    rule: BaselineRule, event: slice
) -> None:
    """Settlement reports every member's own baseline; baselined together (grouped by the like
    days they share) each must be exactly what `baseline` gives that member alone: its own
    days (a member without samples on a day has that day left out), high days by its own
    use, its own day-of adjustment, or none where it was not measured before."""
    rng = np.random.default_rng(7)
    event_day = date(2019, 7, 10)
    days = [event_day - timedelta(days=b) for b in range(45, -1, -1)]
    members, slots = 30, 288
    kw = rng.gamma(1.0, 3.0, (members, len(days), slots))
    kw[:, ::9, 130:142] = np.nan  # an hour the clock skipped, in the adjustment window
    kw[:, ::11, 180:192] = np.nan  # ... and in the event's hours
    kw[rng.random(kw.shape) < 0.02] = 0.0
    known = rng.random((members, len(days))) > 0.15
    known[:3] = True  # a few members measured every day: they share their like days
    known[3] = False  # one measured on almost no day: too few like days, no baseline
    known[:, -1] = True
    adjust = rng.random(members) > 0.2
    holiday = (date(2019, 7, 3),)  # an event day of the lookback, left out
    together = baselines_each(
        kw, known, days, event_day, event, rule, holiday, slot_minutes=5, adjust=adjust
    )
    assert len(together) == members
    for r in range(members):
        seen = known[r]
        alone = baseline(
            DayLoads(tuple(d for d, s in zip(days, seen, strict=True) if s), kw[r][seen]),
            event_day,
            event,
            rule,
            holiday,
            slot_minutes=5,
            adjust=bool(adjust[r]),
        )
        got = together[r]
        for a, b in ((got.kw, alone.kw), (got.unadjusted_kw, alone.unadjusted_kw)):
            assert (a is None) == (b is None), r
            assert a is None or b is None or np.array_equal(a, b), r
        assert (got.days_used, got.day_type, got.adjustment, got.note) == (
            alone.days_used,
            alone.day_type,
            alone.adjustment,
            alone.note,
        ), r
    assert any(b.kw is None for b in together) != (rule is METERED)
    with pytest.raises(ValueError, match="the event day must be the last day"):
        baselines_each(
            kw[:, :-1],
            known[:, :-1],
            days[:-1],
            event_day,
            event,
            rule,
            slot_minutes=5,
            adjust=adjust,
        )

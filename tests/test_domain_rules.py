"""Registration rules and departure schedules, as a fleet operator would meet them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import bess, ev
from vpp_aggregator.domain.registration import check_registration
from vpp_aggregator.domain.resources import Interconnection, RecurringDeparture, Trip
from vpp_aggregator.domain.schedule import next_departure

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def _fields(resource_fn, **kw):  # type: ignore[no-untyped-def]
    return {v.field for v in check_registration(resource_fn(**kw), 20.0)}


def test_valid_resources_pass() -> None:
    assert check_registration(ev(), 20.0) == []
    assert check_registration(bess(), 20.0) == []


def test_each_requirement_reported_together() -> None:
    fields = _fields(
        ev,
        battery_capacity_kwh=49.9,
        v2g_capable=False,
        telemetry_enabled=False,
        interconnection=Interconnection(False, " "),
    )
    assert fields == {
        "battery_capacity_kwh",
        "v2g_capable",
        "telemetry_enabled",
        "interconnection.approved",
        "interconnection.reference",
    }


def test_capacity_boundary_is_inclusive() -> None:
    assert check_registration(ev(battery_capacity_kwh=50.0), 20.0) == []


def test_bess_rules() -> None:
    assert _fields(bess, min_soc_pct=15.0) == {"min_soc_pct"}
    sched = (RecurringDeparture(WEEKDAYS, "07:00", None, 80, "UTC"),)
    assert "departure_schedule" in _fields(bess, departure_schedule=sched)


def test_schedule_problems_name_the_entry() -> None:
    sched = (RecurringDeparture(("mon", "funday"), "25:00", "17:3", 120, "Mars/Olympus"),)
    fields = _fields(ev, departure_schedule=sched)
    assert {
        "departure_schedule[0].days",
        "departure_schedule[0].departure",
        "departure_schedule[0].return",
        "departure_schedule[0].timezone",
        "departure_schedule[0].required_soc_pct",
    } <= fields


def test_trip_return_before_departure() -> None:
    t = datetime(2026, 11, 26, 8, tzinfo=UTC)
    assert "trips[0].return" in _fields(ev, trips=(Trip(t, t - timedelta(hours=1), 80),))


def test_min_above_max_soc() -> None:
    assert "min_soc_pct" in _fields(ev, min_soc_pct=90.0, max_soc_pct=80.0)


def test_next_departure_weekly_in_local_time_across_dst() -> None:
    sched = (RecurringDeparture(WEEKDAYS, "07:30", "17:30", 80, "America/Los_Angeles"),)
    # Friday 2026-10-30 after departure -> Monday 2026-11-02, after DST ended (PST, UTC-8).
    nxt = next_departure(sched, (), datetime(2026, 10, 30, 16, tzinfo=UTC))
    assert nxt is not None
    assert nxt.at.astimezone(UTC) == datetime(2026, 11, 2, 15, 30, tzinfo=UTC)
    # On a Friday in summer (PDT, UTC-7) before departure -> same day 14:30 UTC.
    nxt = next_departure(sched, (), datetime(2026, 7, 3, 10, tzinfo=UTC))
    assert nxt is not None and nxt.at.astimezone(UTC) == datetime(2026, 7, 3, 14, 30, tzinfo=UTC)


def test_trip_earlier_than_routine_wins_and_higher_need_on_tie() -> None:
    after = datetime(2026, 11, 25, 12, tzinfo=UTC)
    sched = (RecurringDeparture(("wed", "thu"), "18:00", None, 60, "UTC"),)
    trip = Trip(datetime(2026, 11, 25, 14, tzinfo=UTC), None, 95)
    nxt = next_departure(sched, (trip,), after)
    assert nxt is not None and nxt.at == trip.departure and nxt.required_soc_pct == 95
    tie = Trip(datetime(2026, 11, 25, 18, tzinfo=UTC), None, 70)
    nxt = next_departure(sched, (tie,), after)
    assert nxt is not None and nxt.required_soc_pct == 70
    assert next_departure((), (), after) is None

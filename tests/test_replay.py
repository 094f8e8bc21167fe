"""The replay (`vpp-aggregator replay`): real drivers through forecast, offers, awards, dispatch,
follow-through and settlement on a simulated clock. Two replayed days of a small fleet from the
Caltech extract shipped with the package, with more refusals and dropouts than by default so
that shortfalls and their causes show up."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import time_machine

from vpp_aggregator.demo.constants import PACKAGED_DATA_DIR
from vpp_aggregator.replay import parts
from vpp_aggregator.replay.devices import Behaviour
from vpp_aggregator.replay.fleet import FleetSpec, build
from vpp_aggregator.replay.gaps import gap_days
from vpp_aggregator.replay.ledger import CAUSES, FIGURES
from vpp_aggregator.replay.runner import ReplaySpec, run
from vpp_aggregator.replay.stays import read_stays

SESSIONS = PACKAGED_DATA_DIR / "acn_caltech" / "sessions_caltech.csv"
SPEC = ReplaySpec(
    sessions=SESSIONS,
    start=date(2019, 3, 5),
    end=date(2019, 3, 7),
    data_dir=PACKAGED_DATA_DIR,
    fleet=FleetSpec(ev=8, bess=1, bess_kwh=400.0),
    warmup_days=2,
    behaviour=Behaviour(refusal_share=0.05, dropout_share=0.02, seed=3),
)


@pytest.fixture(scope="module")
def replayed() -> dict[str, Any]:
    # The wall clock stands still in 2100: whatever read it would stamp or decide by it.
    with time_machine.travel(datetime(2100, 1, 1, tzinfo=UTC), tick=False):
        return run(SPEC)


def test_per_interval_delivered_is_awarded_less_shortfall_plus_surplus(
    replayed: dict[str, Any],
) -> None:
    intervals = replayed["intervals"]
    assert intervals, "the replay settled no awarded interval"
    for iv in intervals:
        assert iv["delivered_kwh"] == pytest.approx(
            iv["awarded_kwh"] - iv["shortfall_kwh"] + iv["surplus_kwh"], abs=1e-3
        )
        assert iv["shortfall_kwh"] == 0.0 or iv["surplus_kwh"] == 0.0


def test_every_shortfall_has_causes_that_add_up_to_it(replayed: dict[str, Any]) -> None:
    short = [iv for iv in replayed["intervals"] if iv["shortfall_kwh"] > 1e-3]
    assert short, "with 5 % of commands refused, some interval must fall short"
    for iv in short:
        assert iv["causes"], iv
        assert set(iv["causes"]) <= set(CAUSES)
        assert sum(iv["causes"].values()) == pytest.approx(iv["shortfall_kwh"], abs=2e-3)
    totals = replayed["totals"]
    assert sum(totals["shortfall_causes_kwh"].values()) == pytest.approx(
        totals["shortfall_kwh"], abs=0.05
    )


def test_totals_are_the_days_added_up(replayed: dict[str, Any]) -> None:
    totals, days = replayed["totals"], replayed["days"]
    assert [d["date"] for d in days] == ["2019-03-05", "2019-03-06"]
    for name in FIGURES:
        assert totals[name] == pytest.approx(sum(d[name] for d in days), abs=0.01), name
    assert totals["intervals_delivered_in_full"] <= totals["intervals_awarded"]
    assert totals["awarded_kwh"] <= totals["offered_kwh"] + 1e-6


def test_every_departure_of_the_replayed_days_is_judged_and_no_schedule_broke_a_rule(
    replayed: dict[str, Any],
) -> None:
    zone_start = datetime(2019, 3, 5, 8, tzinfo=UTC).timestamp()  # midnight in Pasadena
    zone_end = datetime(2019, 3, 7, 8, tzinfo=UTC).timestamp()
    fleet = build(
        read_stays(SESSIONS),
        SPEC.fleet,
        zone_start - 2 * 86_400,
        zone_end,
        SPEC.data_dir,
        SPEC.seed,
        0.9,
    )
    ends = fleet.visits.end_ts
    expected = int(((ends >= zone_start) & (ends < zone_end)).sum())
    assert expected > 0
    assert replayed["totals"]["departures"] == expected
    assert replayed["totals"]["safety_violations"] == 0


def test_no_component_reads_the_wall_clock(replayed: dict[str, Any]) -> None:
    """The same replay with the wall clock frozen in 1990 instead of 2100 gives the same
    figures, and no year of either appears anywhere in them."""
    with time_machine.travel(datetime(1990, 1, 1, tzinfo=UTC), tick=False):
        again = run(SPEC)
    # dispatch ids are random (uuid4), the one thing two runs may differ in
    assert _ids_masked(again) == _ids_masked(replayed)
    text = json.dumps(replayed)
    assert "2100-" not in text and "1990-" not in text


def _ids_masked(result: dict[str, Any]) -> str:
    return re.sub(r"dsp-[0-9a-f]+", "dsp-*", json.dumps(result, sort_keys=True))


def test_a_replay_in_parts_is_its_parts_joined_the_first_exactly_as_one_replay() -> None:
    """`--jobs 2` over three days: two processes, the same fleet. The first part (two days)
    starts where one continuous replay does, so its days are that replay's to the last figure;
    the second starts from its own warm-up, and the totals are the days added up."""
    spec = replace(SPEC, end=date(2019, 3, 8))
    whole = run(spec)
    parted = parts.run(spec, 2)
    assert parted["parts"] == [
        {"from": "2019-03-05", "to": "2019-03-07"},
        {"from": "2019-03-07", "to": "2019-03-08"},
    ]
    assert parted["fleet"] == whole["fleet"]
    assert [d["date"] for d in parted["days"]] == ["2019-03-05", "2019-03-06", "2019-03-07"]
    assert _ids_masked(parted["days"][:2]) == _ids_masked(whole["days"][:2])
    first = [iv for iv in whole["intervals"] if iv["interval_start"] < "2019-03-07"]
    assert first, "the first part's days settled no interval"
    assert _ids_masked(parted["intervals"][: len(first)]) == _ids_masked(first)
    # The second part's one day: its drivers' departures judged (it sells nothing here, as the
    # first day of a replay may not: docs/replay.md, "Batteries sell every other day").
    assert parted["days"][2]["departures"] > 0
    for name in FIGURES:
        added = sum(d[name] for d in parted["days"])
        assert parted["totals"][name] == pytest.approx(added, abs=0.01), name
    assert parts.periods(date(2019, 1, 1), date(2020, 1, 1), 2) == [
        (date(2019, 1, 1), date(2019, 7, 2)),
        (date(2019, 7, 2), date(2020, 1, 1)),
    ]
    assert parts.periods(date(2019, 1, 1), date(2019, 1, 2), 4) == [
        (date(2019, 1, 1), date(2019, 1, 2))
    ]


def test_the_chart_draws_every_day_with_what_it_was_awarded_and_delivered(
    replayed: dict[str, Any],
) -> None:
    from xml.etree import ElementTree

    from vpp_aggregator.replay.chart import svg

    root = ElementTree.fromstring(svg(replayed, "two days & a title"))
    ns = "{http://www.w3.org/2000/svg}"
    tips = [t.text or "" for t in root.iter(f"{ns}title")]
    assert len(tips) == len(replayed["days"])
    for day, tip in zip(replayed["days"], tips, strict=True):
        assert tip.startswith(str(day["date"]))
        assert f"awarded {day['awarded_kwh']:,.1f} kWh" in tip
        assert f"delivered {day['delivered_kwh']:,.1f} kWh" in tip
    assert any((t.text or "") == "two days & a title" for t in root.iter(f"{ns}text"))


def test_gap_days_are_read_from_the_hourly_table(tmp_path: Path) -> None:
    hourly = tmp_path / "hourly_x.csv"
    hourly.write_text(
        "hour_local,hour_utc,plugged_in_avg,suspect_gap\n"
        "2019-03-31 16:00-0700,2019-03-31 23:00,0,True\n"
        "2019-04-01 00:00-0700,2019-04-01 07:00,0,False\n"
    )
    assert gap_days(hourly, "America/Los_Angeles") == {date(2019, 3, 31)}


def test_a_driver_replug_minutes_later_is_one_stay(tmp_path: Path) -> None:
    sessions = tmp_path / "s.csv"
    sessions.write_text(
        "user_id,connect_time_utc,disconnect_time_utc,kwh_delivered,kwh_requested\n"
        "u1,2019-03-05T16:00:00Z,2019-03-05T18:00:00Z,5.0,12.0\n"
        "u1,2019-03-05T18:04:00Z,2019-03-05T23:00:00Z,4.0,\n"
        "u1,2019-03-06T16:00:00Z,2019-03-06T23:00:00Z,9.0,\n"
        ",2019-03-06T16:00:00Z,2019-03-06T23:00:00Z,9.0,\n"
    )
    stays = read_stays(sessions)
    assert stays.by == "driver" and stays.keys == ("u1",)
    assert len(stays) == 2  # the re-plug joins the first stay; the nameless session is no one's
    assert stays.end_ts[0] == datetime(2019, 3, 5, 23, tzinfo=UTC).timestamp()
    # needed: the 12 kWh asked for where the driver said, else what the session delivered
    assert np.allclose(stays.needed_kwh, [12.0 + 4.0, 9.0])
    assert np.allclose(stays.delivered_kwh, [9.0, 9.0])


def test_a_file_naming_drivers_only_later_has_one_vehicle_per_charger_before(
    tmp_path: Path,
) -> None:
    """As Office001, which names its drivers from 2020 on: a 2019 replay has one vehicle per
    charger (by driver it would have had none), a 2021 one a vehicle per driver."""
    sessions = tmp_path / "s.csv"
    rows = ["user_id,station_id,connect_time_utc,disconnect_time_utc,kwh_delivered"]
    for day in range(1, 20):
        for charger in ("c1", "c2"):
            rows.append(f",{charger},2019-10-{day:02d}T16:00:00Z,2019-10-{day:02d}T23:00:00Z,8")
    for day in range(1, 20):
        rows.append(f"u{day % 3},c1,2021-03-{day:02d}T16:00:00Z,2021-03-{day:02d}T23:00:00Z,8")
    sessions.write_text("\n".join(rows) + "\n")

    def ts(d: str) -> float:
        return datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp()

    in_2019 = read_stays(sessions, window=(ts("2019-09-01"), ts("2020-01-01")))
    assert in_2019.by == "charger"
    assert in_2019.regular(ts("2019-10-01"), ts("2019-10-21"), 0.5) == [0, 1]  # both chargers
    in_2021 = read_stays(sessions, window=(ts("2021-03-01"), ts("2021-04-01")))
    assert in_2021.by == "driver" and in_2021.keys == ("u0", "u1", "u2")


def test_a_bad_replay_is_refused_naming_each_problem() -> None:
    bad = ReplaySpec(
        sessions=Path("/nowhere.csv"),
        start=date(2019, 3, 7),
        end=date(2019, 3, 5),
        data_dir=PACKAGED_DATA_DIR,
        quantile="p42",
        award_share=1.5,
        baseline="yesterday",
    )
    with pytest.raises(ValueError) as exc:
        bad.check()
    for part in ("--to", "quantile", "award share", "sessions file", "baseline 'yesterday'"):
        assert part in str(exc.value)
    # a service setting is replayed as given, checked as the service checks it; what the replay
    # sets itself (its store, its cadences) is not for the asking
    for settings, why in (
        ({"VPP_NEED_FLOOR_EARLY_LEAVES": "9"}, "VPP_NEED_FLOOR_EARLY_LEAVES='9'"),
        ({"DATABASE_URL": "sqlite://", "REDIS_URL": "x"}, "sets DATABASE_URL, REDIS_URL itself"),
    ):
        with pytest.raises(ValueError, match=re.escape(why)):
            replace(SPEC, settings=settings).check()
    replace(SPEC, settings={"VPP_NEED_FLOOR_EARLY_LEAVES": "0"}).check()
    with pytest.raises(ValueError, match="--fleet-to 2019-03-01 must be after --fleet-from"):
        replace(SPEC, fleet_days=(date(2019, 3, 5), date(2019, 3, 1))).check()
    # the drivers' stays are read over the fleet's days: a day outside them would have none
    for fleet_days in (
        (date(2019, 1, 1), date(2019, 2, 1)),
        (SPEC.start + timedelta(days=1), date(2019, 12, 1)),
    ):
        with pytest.raises(ValueError, match="must cover the replayed days"):
            replace(SPEC, fleet_days=fleet_days).check()
    replace(SPEC, fleet_days=(SPEC.start, SPEC.end)).check()


def test_a_short_replay_can_replay_the_fleet_of_a_longer_period() -> None:
    """`--fleet-from/--fleet-to`: a day with the fleet a month's replay has (its regular
    drivers), not the drivers of that day alone, as a part of a long replay has its fleet."""
    day = replace(SPEC, end=date(2019, 3, 6), warmup_days=0, fleet=FleetSpec(bess=0))
    month = (date(2019, 3, 1), date(2019, 4, 1))
    own = run(day)["fleet"]
    drawn = run(replace(day, fleet_days=month))["fleet"]
    span = tuple(
        datetime.combine(d, datetime.min.time(), ZoneInfo(SPEC.timezone)).timestamp() for d in month
    )
    stays = read_stays(SESSIONS, None, span)
    regulars = [str(stays.keys[k]) for k in stays.regular(*span, FleetSpec().per_week)]
    assert drawn["vehicles"] == len(regulars) != own["vehicles"]
    assert drawn["vehicle_of"] == regulars


def one_battery(command_delay_s: float = 4.0) -> Any:
    """Simulated devices: one 500 kWh, 250 kW battery at 80 %, from 2019-10-22 09:00 UTC, that
    refuses nothing and drops no sample."""
    from vpp_aggregator.replay.devices import Behaviour, Devices, Hardware, Visits

    f = np.array
    hw = Hardware(
        ("bess-1",), f([False]), f([500.0]), f([250.0]), f([250.0]), f([20.0]), f([100.0])
    )
    none = f([], dtype=np.float64)
    visits = Visits(f([], dtype=np.int64), none, none, none, none, none)
    t0 = datetime(2019, 10, 22, 9, tzinfo=UTC).timestamp()
    behaviour = Behaviour(command_delay_s=command_delay_s, refusal_share=0.0, dropout_share=0.0)
    return Devices(hw, visits, f([80.0]), behaviour, t0)


def points(start_ts: float, kw: float, minutes: int) -> list[dict[str, object]]:
    """A schedule holding `kw` for `minutes`, one point a minute from `start_ts`."""
    start = datetime.fromtimestamp(start_ts, UTC)
    return [
        {"t": (start + timedelta(minutes=m)).isoformat(), "setpoint_kw": kw} for m in range(minutes)
    ]


def test_a_device_keeps_tonights_schedule_when_tomorrows_arrives() -> None:
    """A battery told tonight to discharge, then sent tomorrow's recharge, goes on discharging
    tonight and charges tomorrow: a device gateway holds each dispatch's schedule, and one
    booked for later does not erase the one under way (it did in the first replays, which then
    left batteries empty and undelivered for weeks)."""
    dev = one_battery()
    t0 = dev.t
    assert dev.command("bess-1", "tonight", 1, points(t0, 50.0, 120), t0)
    tomorrow = t0 + 86_400
    assert dev.command("bess-1", "recharge", 1, points(tomorrow, -50.0, 120), t0 + 60)
    dev.advance(t0 + 3600)
    assert dev.power_kw[0] == pytest.approx(50.0)  # still discharging tonight
    dev.advance(t0 + 3 * 3600)
    soc_after_tonight = float(dev.soc_pct[0])
    assert soc_after_tonight < 80.0 - 15.0  # ~2 h at 50 kW of a 500 kWh pack
    dev.advance(tomorrow + 3600)
    assert dev.power_kw[0] == pytest.approx(-50.0)  # and tomorrow it recharges
    assert dev.soc_pct[0] > soc_after_tonight + 5.0 and dev.any_commanded()
    dev.advance(tomorrow + 3 * 3600)
    assert not dev.any_commanded()  # both schedules over and forgotten


def test_a_device_follows_a_command_after_its_delay_not_a_step_later() -> None:
    """A command sent at 09:00 takes effect at 09:00:04 (the configured delay): the device ramps
    toward it for the remaining 56 s of the minute. (The devices once read commands only at the
    start of a step, so every command took effect a minute late, and a plan ending at a floor
    was crossed by the minute the device spent on its previous setpoint.)"""
    dev = one_battery(command_delay_s=4.0)
    t0 = dev.t
    assert dev.command("bess-1", "d", 1, points(t0, 10.0, 5), t0)
    dev.advance(t0 + 60.0)
    assert dev.power_kw[0] == pytest.approx(10.0 * 56.0 / 60.0)  # ramping since 09:00:04


def test_a_device_follows_a_schedule_linearly_between_its_points_as_the_format_says() -> None:
    """The command format (asyncapi.yaml) has setpoints a minute apart, linear between: a
    battery told to ramp 0, 10, ... 60 kW moves 180 kW·min in those 6 minutes, as the planner
    and the safety checker count it. (Read as steps it moved 150 and lagged the plan by a minute,
    so on a ramp down toward its floor it moved more than planned and crossed the floor.)"""
    dev = one_battery(command_delay_s=0.0)
    t0 = dev.t
    start = datetime.fromtimestamp(t0, UTC)
    ramp = [
        {"t": (start + timedelta(minutes=m)).isoformat(), "setpoint_kw": 10.0 * min(m, 6)}
        for m in range(10)
    ]
    assert dev.command("bess-1", "d", 1, ramp, t0)
    dev.advance(t0 + 360.0)
    through_cells_kwh = 180.0 / 60.0 / math.sqrt(0.9)
    assert 80.0 - float(dev.soc_pct[0]) == pytest.approx(through_cells_kwh / 500.0 * 100.0)


def test_a_device_on_a_ramp_reports_the_power_the_schedule_has_at_that_minute() -> None:
    """A battery ramping 0, 10, ... 60 kW then back down reports at each minute the schedule's
    power at that minute, having moved what the schedule does. (Aimed at each step's middle it
    moved the same energy but reported the power of half a minute before: ramping down it read
    10 kW above its plan, and a release that ramps down from the reported power took it past its
    floor, 2 flags on Norway's fourth quarter of 2019.)"""
    dev = one_battery(command_delay_s=0.0)
    t0 = dev.t
    start = datetime.fromtimestamp(t0, UTC)
    kw = [10.0 * min(m, 12 - m) for m in range(13)]  # up to 60 kW and down again
    ramp = [
        {"t": (start + timedelta(minutes=m)).isoformat(), "setpoint_kw": x}
        for m, x in enumerate(kw)
    ]
    assert dev.command("bess-1", "d", 1, ramp, t0)
    for m in range(1, 13):
        dev.advance(t0 + 60.0 * m)
        assert dev.power_kw[0] == pytest.approx(kw[m])
    moved_kwh = 360.0 / 60.0  # kW·min of the schedule, linear between its points
    assert 80.0 - float(dev.soc_pct[0]) == pytest.approx(moved_kwh / math.sqrt(0.9) / 5.0)


def test_the_checker_reads_a_schedule_from_the_point_in_effect_when_the_soc_was_sampled() -> None:
    """A schedule planned at 09:25 reaches the device at 09:26, when the SoC known is 09:26's:
    checked from 09:25 the first minute's energy counts twice and a plan ending exactly at the
    battery's floor reads as crossing it (4 false flags on Caltech's first quarter of 2019)."""
    from vpp_aggregator.domain.dispatch.safety import ResourceFacts, check_wire
    from vpp_aggregator.replay.runner import from_sample

    start = datetime(2019, 1, 12, 9, 25, tzinfo=UTC)
    # 100 kWh battery at 21 % with a 20 % floor: 60 kW for one minute, then nothing.
    points = [(start + timedelta(minutes=m), kw) for m, kw in enumerate([60.0, 0.0, 0.0])]
    sampled = start + timedelta(minutes=1)
    assert from_sample(points, sampled) == points[1:]
    assert from_sample(points, start - timedelta(minutes=5)) == points  # not begun: all of it
    facts = ResourceFacts(
        resource_id="b",
        is_bess=True,
        capacity_kwh=100.0,
        floor_pct=20.0,
        ceiling_pct=100.0,
        max_discharge_kw=100.0,
        max_charge_kw=100.0,
        departure=None,
        departure_soc_pct=0.0,
        available=True,
    )
    soc_at_sample = 20.0  # the minute at 60 kW took it from 21 % to its floor
    kw = dict(ramp_kw_per_min=100.0, round_trip_efficiency=1.0)
    assert check_wire(facts, soc_at_sample, points, **kw)  # counted twice: "below its floor"
    assert not check_wire(facts, soc_at_sample, from_sample(points, sampled), **kw)


def test_commands_of_a_re_plan_a_refusal_sets_off_reach_the_devices_in_the_same_step() -> None:
    """A refused command makes the service re-plan and send new commands at once; they reach
    the devices in the step they were sent, not a minute later. (They once waited for the next
    step: for that minute the other vehicles kept to the plan being replaced while the new one
    started from the SoC they had before it, and a plan ending at a driver's minimum crossed it,
    3 flags on Norway's fourth quarter of 2019.) A cascade of re-plans stops after a bounded
    number of rounds, the rest going out next step and the replay noting it."""
    from vpp_aggregator.replay.runner import MAX_COMMAND_ROUNDS, _Replay

    class Stub:
        def __init__(self, cascade: int) -> None:
            self.commands: list[tuple[str, Any]] = [("v2g", {"n": 0})]
            self.delivered: list[int] = []
            self.cascade = cascade
            self.ledger = type("L", (), {"notes": [], "note": lambda s, x: s.notes.append(x)})()

        def _deliver(self, todo: list[tuple[str, Any]], t: float) -> None:
            for _kind, cmd in todo:
                self.delivered.append(cmd["n"])
                if cmd["n"] < self.cascade:  # refused: the re-plan sends another command
                    self.commands.append(("v2g", {"n": cmd["n"] + 1}))

    once = Stub(cascade=1)
    _Replay._deliver_commands(once, 0.0)  # type: ignore[arg-type]
    assert once.delivered == [0, 1] and once.commands == [] and once.ledger.notes == []
    endless = Stub(cascade=10**6)
    _Replay._deliver_commands(endless, 0.0)  # type: ignore[arg-type]
    assert endless.delivered == list(range(MAX_COMMAND_ROUNDS))
    assert len(endless.commands) == 1 and len(endless.ledger.notes) == 1


def test_the_replay_steps_five_minutes_only_while_nothing_is_followed() -> None:
    """Idle, the replay moves to the next point of its 5-minute grid; a dispatch that begins
    before that point, a device holding a command or a command still to deliver make it move a
    minute at a time, so no dispatch's start is stepped over."""
    from types import SimpleNamespace

    from vpp_aggregator.replay.runner import _Replay

    warm = 1_000_000.0
    first_start = [math.inf]
    held = [False]
    replay = SimpleNamespace(
        warm_ts=warm,
        commands=[],
        devices=SimpleNamespace(any_commanded=lambda: held[0]),
        agg=SimpleNamespace(dispatch=SimpleNamespace(first_start_ts=lambda: first_start[0])),
    )
    step = lambda t: _Replay._next_step(replay, t)  # noqa: E731
    assert step(warm) == warm + 300
    assert step(warm + 120) == warm + 300  # back on the grid
    first_start[0] = warm + 600  # begins after the next grid point: still idle until then
    assert step(warm + 120) == warm + 300
    assert step(warm + 300) == warm + 360  # begins within this step: minute by minute
    first_start[0] = warm - 60  # under way
    assert step(warm + 900) == warm + 960
    first_start[0] = math.inf
    held[0] = True
    assert step(warm + 900) == warm + 960
    held[0] = False
    replay.commands = [("command", {})]
    assert step(warm + 900) == warm + 960


# The replay's steps (minutes from the warm-up's start) and whether a device holds a command:
# a minute at a time while one does, 5 minutes on the grid while none does.
BUSY = [(m, True) for m in range(46)]
IDLE = [(m, False) for m in range(0, 46, 5)]
# a dispatch ending at minute 17 (its last minute steps to 20), then on the grid
ENDING = (
    [(m, True) for m in range(17)]
    + [(17, False), (20, False)]
    + [(m, False) for m in range(25, 46, 5)]
)


@pytest.mark.parametrize(
    ("steps", "away_at", "visits_at"),
    [
        (BUSY, [0, 11, 22, 33, 44], [0, *range(10, 21), 31, 42]),
        (IDLE, [0, 15, 30, 45], [0, 10, 15, 20, 35]),
        (ENDING, [0, 11, 25, 40], [0, *range(10, 17), 20, 35]),
    ],
    ids=["dispatching", "idle", "dispatch-ends"],
)
def test_a_vehicle_away_reports_at_most_fifteen_minutes_apart_and_at_once_as_it_comes_and_goes(
    steps: list[tuple[int, bool]], away_at: list[int], visits_at: list[int]
) -> None:
    """A vehicle away from its charger has nothing new to say (no power, the same SoC): it
    reports every 15 minutes on the 5-minute grid, and never more than 15 minutes apart, the
    service's stale window, even as a dispatch ends between two reports; the minute it plugs in
    and the minute it unplugs reach the service at once. While a dispatch runs, a battery
    holding a command and a vehicle plugged in report every minute; while none does,
    everything plugged in reports on the 5-minute grid."""
    from types import SimpleNamespace

    from vpp_aggregator.replay.runner import _Replay, _settings

    ids = ["bess-1", "ev-away", "ev-visits"]
    plugged = np.array([True, False, False])
    holding = np.array([False, False, False])
    sent: list[set[str]] = []
    heard: list[int] = []

    def samples(due: Any) -> Any:
        rows = np.flatnonzero(due)
        z = np.zeros(rows.size)
        return rows, z, z, plugged[rows].copy(), np.zeros(0, np.int64)

    warm = 1_551_686_400.0  # a local midnight, where the replay's 5-minute grid begins
    replay = SimpleNamespace(
        ids=ids,
        warm_ts=warm,
        _reported_ts=np.full(3, -math.inf),
        _reported_plugged=np.zeros(3, dtype=bool),
        devices=SimpleNamespace(
            any_commanded=lambda: bool(holding.any()),
            plugged=lambda: plugged.copy(),
            holding=lambda: holding.copy(),
            samples=samples,
        ),
        ledger=SimpleNamespace(dropout=lambda rows, t: None),
        agg=SimpleNamespace(
            telemetry=SimpleNamespace(ingest=lambda b: sent.append(set(b.resource_ids)))
        ),
    )
    for minute, busy in steps:
        holding[0] = busy
        plugged[2] = 10 <= minute < 20  # plugs in at minute 10, leaves at 20
        before = len(sent)
        _Replay._telemetry(replay, warm + 60.0 * minute)  # type: ignore[arg-type]
        heard += [minute] * (len(sent) - before)
    minutes_of = {rid: [m for m, got in zip(heard, sent, strict=True) if rid in got] for rid in ids}
    assert minutes_of["bess-1"] == [m for m, busy in steps if busy or m % 5 == 0]
    assert minutes_of["ev-away"] == away_at
    assert minutes_of["ev-visits"] == visits_at
    # the service holds each sample of the vehicle away over every minute until the next
    spec = ReplaySpec(Path("sessions.csv"), date(2019, 1, 1), date(2019, 1, 2), Path("."))
    stale_s = _settings(spec, Path("."))["VPP_TELEMETRY_STALE_SECONDS"]
    assert (np.diff(away_at) * 60.0 <= stale_s).all()

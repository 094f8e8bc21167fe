"""Capacity maths (docs/concepts.md, "Capacity") against hand-computed cases, and incremental = full recomputation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import bess, ev
from vpp_aggregator.domain.early_departures import EARLY_FLOOR_FROM
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.resources import ResourceStatus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ETA = 0.9**0.5  # each way of the 0.9 round trip: energy figures are at the grid connection


def _state(need_floor_early_leaves: int = EARLY_FLOOR_FROM) -> FleetState:
    """`need_floor_early_leaves=2`: only drivers seen leaving early twice keep their need, the
    others' floor rises toward their departure (docs/concepts.md, "Floors")."""
    return FleetState(
        bess_min_soc_pct=20.0,
        stale_seconds=300.0,
        round_trip_efficiency=0.9,
        need_floor_early_leaves=need_floor_early_leaves,
    )


def _telemetry(state: FleetState, rid: str, soc: float, at: datetime, plugged: bool = True) -> None:
    state.apply_telemetry(
        state.rows_of([rid]),
        np.array([at.timestamp()]),
        np.array([soc]),
        np.array([plugged]),
        np.array([0.0]),
        at,
    )


def test_by_default_vehicles_give_only_what_they_hold_beyond_their_next_trips_need() -> None:
    s = _state()
    s.upsert(bess("b1", min_soc_pct=20.0), NOW)
    s.upsert(ev("e1", departs_in=timedelta(hours=5), now=NOW, required_soc_pct=60), NOW)
    s.upsert(ev("e2", departs_in=timedelta(hours=5), now=NOW, required_soc_pct=80), NOW)
    for rid, soc in (("b1", 60), ("e1", 70), ("e2", 70)):
        _telemetry(s, rid, soc, NOW)
    # b1 (60-20) % of 200 kWh; e1 (70-60) % of 60 kWh; e2 is below its 80 %: nothing.
    assert s.capacity(NOW, 60).total.discharge_kwh == pytest.approx((80 + 6) * ETA)


def test_hand_computed_mixed_fleet() -> None:
    s = _state(need_floor_early_leaves=2)
    s.upsert(bess("b1", min_soc_pct=20.0), NOW)  # floor 20 %
    s.upsert(ev("e1", departs_in=timedelta(hours=5), now=NOW, required_soc_pct=80), NOW)
    s.upsert(ev("e2", departs_in=timedelta(hours=2), now=NOW, required_soc_pct=90), NOW)
    s.upsert(ev("e3", departs_in=timedelta(minutes=30), now=NOW), NOW)
    s.upsert(ev("e4"), NOW)
    _telemetry(s, "b1", 60, NOW)
    _telemetry(s, "e1", 70, NOW)
    _telemetry(s, "e2", 70, NOW)
    _telemetry(s, "e3", 70, NOW)
    _telemetry(s, "e4", 70, NOW - timedelta(seconds=301))  # stale

    snap = s.capacity(NOW, 60)
    # Cell energy; at the grid discharge gives ETA of it and charging takes 1/ETA of it.
    # b1: (60-20)% of 200 = 80 kWh, 50 kW limit; charge (100-60)% of 200 = 80 kWh, 40 kW.
    # e1: raise 80 - ETA*11*4/60*100 = 10.4 % < 30 %: floor 30 -> 24 kWh, 10 kW; charge 18 kWh, 11 kW.
    # e2: raise 90 - ETA*11*1/60*100 = 72.6 % > 70 %: nothing to give; charge 18 kWh, 11 kW.
    # e3 departs within the window, e4 is stale: both unavailable.
    assert snap.total.discharge_kwh == pytest.approx(104.0 * ETA)
    assert snap.total.discharge_kw == pytest.approx(60.0)
    assert snap.total.charge_kwh == pytest.approx((80 + 18 + 18) / ETA)
    assert snap.total.charge_kw == pytest.approx(62.0)
    assert snap.total.gross_energy_kwh == pytest.approx(120 + 42 + 42)  # stored, in the cells
    assert snap.total.resource_count == 5
    assert snap.total.available_resource_count == 3
    assert snap.by_type["BESS"].discharge_kw == pytest.approx(50.0)
    assert snap.by_type["EV"].discharge_kwh == pytest.approx(24.0 * ETA)

    # A 4 h window: e1's window now ends 1 h before departure -> floor 80 - ETA*11/60*100 = 62.6 %.
    snap4 = s.capacity(NOW, 240)
    e1_floor = 80 - ETA * 11 / 60 * 100
    assert snap4.total.discharge_kwh == pytest.approx((80 + (70 - e1_floor) / 100 * 60) * ETA)
    # b1 over 4 h: 80*ETA kWh / 4 h = 19 kW, below its 50 kW limit.
    assert snap4.by_type["BESS"].discharge_kw == pytest.approx(20.0 * ETA)
    # e2 departs inside a 4 h window.
    assert snap4.total.available_resource_count == 2


def test_staleness_and_departure_take_effect_as_time_passes() -> None:
    s = _state(need_floor_early_leaves=2)
    s.upsert(bess("b1"), NOW)
    s.upsert(ev("e1", departs_in=timedelta(hours=3), now=NOW, required_soc_pct=80), NOW)
    _telemetry(s, "b1", 50, NOW)
    _telemetry(s, "e1", 90, NOW)
    assert s.capacity(NOW, 60).total.available_resource_count == 2
    later = NOW + timedelta(seconds=299)
    _telemetry(s, "e1", 90, later)
    assert s.capacity(later, 60).total.available_resource_count == 2
    # b1's telemetry goes stale; e1 stays (it reported at `later`).
    snap = s.capacity(NOW + timedelta(seconds=301), 60)
    assert snap.total.available_resource_count == 1
    assert snap.by_type["BESS"].available_resource_count == 0
    # Inside the raise zone the EV's floor climbs continuously as departure nears.
    t1 = NOW + timedelta(seconds=310)
    _telemetry(s, "e1", 90, t1)
    e_early = s.capacity(t1, 60).total.discharge_kwh
    t2 = NOW + timedelta(minutes=90)
    _telemetry(s, "e1", 90, t2)
    e_late = s.capacity(t2, 60).total.discharge_kwh
    assert e_late < e_early
    # Past its departure and still plugged in, it is overdue: it may leave any minute, so it
    # counts for nothing (docs/concepts.md, "Floors").
    t3 = NOW + timedelta(hours=3, minutes=1)
    _telemetry(s, "e1", 90, t3)
    assert s.capacity(t3, 60).total.discharge_kwh == 0.0
    # Once it has unplugged the trip is over: back, it has full headroom to its 30 % floor.
    _telemetry(s, "e1", 90, t3 + timedelta(minutes=1), plugged=False)
    t4 = t3 + timedelta(hours=1)
    _telemetry(s, "e1", 90, t4)
    assert s.capacity(t4, 60).total.discharge_kwh == pytest.approx(0.6 * 60 * ETA)


def test_filters_deactivation_and_suspension() -> None:
    s = _state()
    s.upsert(bess("b1", grid_node="N1", fleet_id="f1"), NOW)
    s.upsert(bess("b2", grid_node="N2", fleet_id="f2"), NOW)
    for rid in ("b1", "b2"):
        _telemetry(s, rid, 80, NOW)
    assert set(s.capacity(NOW, 60).by_grid_node) == {"N1", "N2"}
    assert s.capacity(NOW, 60, grid_node="N1").total.discharge_kwh == pytest.approx(120.0 * ETA)
    assert s.capacity(NOW, 60, fleet_id="f2").total.discharge_kwh == pytest.approx(120.0 * ETA)
    s.upsert(bess("b2", grid_node="N2", fleet_id="f2", status=ResourceStatus.SUSPENDED), NOW)
    assert s.capacity(NOW, 60).total.available_resource_count == 1
    s.upsert(bess("b1", grid_node="N1", fleet_id="f1", status=ResourceStatus.INACTIVE), NOW)
    snap = s.capacity(NOW, 60)
    assert snap.total.resource_count == 1
    assert snap.total.discharge_kwh == 0.0
    assert "b1" not in s


def test_older_sample_never_overwrites_newer() -> None:
    s = _state()
    s.upsert(bess("b1"), NOW)
    _telemetry(s, "b1", 80, NOW)
    _telemetry(s, "b1", 30, NOW - timedelta(seconds=10))
    live = s.live("b1", NOW)
    assert live is not None and live.soc_pct == 80


def test_bess_floor_never_below_fleet_minimum() -> None:
    s = FleetState(bess_min_soc_pct=25.0, stale_seconds=300.0, round_trip_efficiency=0.9)
    s.upsert(bess("b1", min_soc_pct=20.0), NOW)
    _telemetry(s, "b1", 30, NOW)
    assert s.capacity(NOW, 60).total.discharge_kwh == pytest.approx(0.05 * 200 * ETA)


# ---------------------------------------------------------------- properties
resource_spec = st.tuples(
    st.booleans(),  # is EV
    st.floats(50, 1000),  # capacity
    st.floats(0, 100),  # soc
    st.floats(0, 60),  # min soc
    st.floats(1, 350),  # power
    st.one_of(st.none(), st.floats(0.1, 30)),  # departs in hours
    st.floats(0, 100),  # required soc
    st.booleans(),  # plugged
    st.floats(0, 600),  # telemetry age s
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(resource_spec, min_size=1, max_size=40), st.floats(1, 24 * 60), st.floats(0, 7200))
def test_energy_bounded_and_incremental_equals_full(
    specs: list[tuple[bool, float, float, float, float, float | None, float, bool, float]],
    duration_min: float,
    advance_s: float,
) -> None:
    s = _state()
    bound = 0.0
    for i, (is_ev, cap, soc, min_soc, kw, dep_h, req, plugged, age) in enumerate(specs):
        rid = f"r{i}"
        if is_ev:
            s.upsert(
                ev(
                    rid,
                    battery_capacity_kwh=cap,
                    min_soc_pct=min_soc,
                    max_charge_kw=kw,
                    max_discharge_kw=kw,
                    departs_in=timedelta(hours=dep_h) if dep_h else None,
                    now=NOW,
                    required_soc_pct=req,
                ),
                NOW,
            )
        else:
            s.upsert(
                bess(
                    rid,
                    battery_capacity_kwh=cap,
                    min_soc_pct=max(20.0, min_soc),
                    max_charge_kw=kw,
                    max_discharge_kw=kw,
                ),
                NOW,
            )
        _telemetry(s, rid, soc, NOW - timedelta(seconds=age), plugged)
        floor = min_soc if is_ev else max(20.0, min_soc)
        bound += max(0.0, soc - floor) / 100 * cap
    first = s.capacity(NOW, duration_min)
    assert 0.0 <= first.total.discharge_kwh <= bound + 1e-6
    assert first.total.discharge_kw >= 0.0
    assert first.total.charge_kwh >= 0.0
    # Advance time: the incrementally maintained view must equal a view built from scratch.
    later = NOW + timedelta(seconds=advance_s)
    incremental = s.capacity(later, duration_min)
    s._views.clear()  # drop cached aggregates: the next read recomputes everything
    full = s.capacity(later, duration_min)
    for name in ("discharge_kw", "discharge_kwh", "charge_kw", "charge_kwh", "gross_energy_kwh"):
        assert getattr(incremental.total, name) == pytest.approx(
            getattr(full.total, name), abs=1e-6
        )
    assert incremental.total.available_resource_count == full.total.available_resource_count
    assert 0.0 <= incremental.total.discharge_kwh <= bound + 1e-6


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 3 * 3600), min_size=1, max_size=12),  # when samples come (s after)
    st.lists(st.floats(0, 3 * 3600), min_size=1, max_size=6),  # when the view is read
    st.integers(0, 2**32 - 1),
)
def test_a_view_read_seldom_answers_as_one_read_at_every_change(
    sample_s: list[float], read_s: list[float], seed: int
) -> None:
    """Changes to a view read within `EAGER_AFTER_READ_S` are evaluated as they come, the
    others by the next read: either way a read says what a view built from scratch says."""
    rng = np.random.default_rng(seed)
    s = _state()
    for i in range(30):
        if i % 3:
            s.upsert(
                ev(f"r{i}", departs_in=timedelta(hours=float(rng.uniform(0.5, 3))), now=NOW), NOW
            )
        else:
            s.upsert(bess(f"r{i}", grid_node=f"N{i % 2}"), NOW)
    s.capacity(NOW, 60)
    events = sorted([(t, "sample") for t in sample_s] + [(t, "read") for t in read_s])
    for t_s, what in events:
        at = NOW + timedelta(seconds=t_s)
        if what == "read":
            s.capacity(at, 60)
            continue
        rows = rng.choice(30, size=8, replace=False).astype(np.int64)
        s.apply_telemetry(
            rows,
            np.full(8, at.timestamp()),
            rng.uniform(0, 100, 8),
            rng.random(8) < 0.8,
            np.zeros(8),
            at,
        )
    end = NOW + timedelta(seconds=max(t for t, _ in events) + 1)
    kept = s.capacity(end, 60)
    s._views.clear()
    full = s.capacity(end, 60)
    for name in ("discharge_kw", "discharge_kwh", "charge_kw", "charge_kwh", "gross_energy_kwh"):
        assert getattr(kept.total, name) == pytest.approx(getattr(full.total, name), abs=1e-6)
    assert kept.total.available_resource_count == full.total.available_resource_count
    assert kept.by_grid_node.keys() == full.by_grid_node.keys()


def test_resumming_group_totals_changes_nothing_but_round_off() -> None:
    s = _state()
    for i in range(50):
        s.upsert(bess(f"b{i}", grid_node=f"N{i % 3}"), NOW)
    rng = np.random.default_rng(4)
    for k in range(200):
        t = NOW + timedelta(seconds=k)
        rows = rng.integers(0, 50, 20)
        s.apply_telemetry(
            rows,
            np.full(20, t.timestamp()),
            rng.uniform(0, 100, 20),
            np.ones(20, bool),
            np.zeros(20),
            t,
        )
    t = NOW + timedelta(seconds=200)
    before = s.capacity(t, 60)
    view = s._views[3600.0]
    s._resum(view)
    after = s.capacity(t, 60)
    assert after.total.discharge_kwh == pytest.approx(before.total.discharge_kwh, abs=1e-9)
    assert after.by_grid_node["N1"].charge_kw == pytest.approx(
        before.by_grid_node["N1"].charge_kw, abs=1e-9
    )


def test_a_reader_with_a_slightly_older_clock_gets_the_newer_answer() -> None:
    s = _state()
    s.upsert(bess("b1"), NOW)
    _telemetry(s, "b1", 60, NOW)
    s.capacity(NOW + timedelta(seconds=2), 60)
    late = s.capacity(
        NOW + timedelta(seconds=1), 60
    )  # raced: its clock was read before the other's
    assert late.as_of == NOW + timedelta(seconds=2)


def test_live_states_read_together_say_what_each_read_alone_says() -> None:
    """A dispatch is followed by reading all its resources at once (`live_many`); each must say
    what reading it alone says: unknown, stale, unplugged, locked out, leaving."""
    s = _state()
    s.upsert(bess("b1", min_soc_pct=20.0), NOW)
    s.upsert(bess("b2"), NOW)
    s.upsert(ev("e1", departs_in=timedelta(hours=2), now=NOW, required_soc_pct=80), NOW)
    s.upsert(ev("e2"), NOW)
    s.upsert(ev("e3"), NOW)
    _telemetry(s, "b1", 10, NOW)  # below its floor: locked out of discharge
    _telemetry(s, "b2", 60, NOW - timedelta(seconds=301))  # stale
    _telemetry(s, "e1", 70, NOW)
    _telemetry(s, "e2", 70, NOW, plugged=False)
    ids = ["e3", "nobody", "b1", "b2", "e1", "e2", "b1"]  # e3 never reported
    together = s.live_many(ids, NOW, 1.0)
    assert together == [s.live(rid, NOW, 1.0) for rid in ids]
    assert together[1] is None
    b1, b2, e1, e2 = together[2], together[3], together[4], together[5]
    assert b1 is not None and b1.discharge_locked and b1.soc_pct == 10
    assert b2 is not None and b2.availability_reason is not None
    assert b2.availability_reason.value == "stale_telemetry"
    assert e1 is not None and e1.availability_reason is None and e1.departure_soc_pct == 80
    assert e2 is not None and e2.availability_reason is not None and not e2.plugged_in
    assert together[0] is not None and together[0].soc_pct is None

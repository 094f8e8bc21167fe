"""The simulator on the real data: what it registers is acceptable, and what it reports is physics."""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from vpp_aggregator.demo.constants import CHARGE_EFFICIENCY, SITE_TZ
from vpp_aggregator.demo.drivers import build_fleet
from vpp_aggregator.demo.fleet import SimulatedFleet
from vpp_aggregator.demo.follow import (
    DispatchFollower,
    parse_schedule,
    run_simulation,
    schedule_setpoint_kw,
)
from vpp_aggregator.domain.registration import check_registration
from vpp_aggregator.domain.resources import (
    WEEKDAYS,
    Interconnection,
    RecurringDeparture,
    Resource,
    ResourceType,
)

# These tests describe the simulator on the full shared data set, not on the small extract the
# package ships for demos (that one has its own test in test_demo_data.py).
DATA = Path(os.environ.get("VPP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "acn_caltech" / "sessions_caltech.csv").is_file()
    or not (DATA / "prices_nl" / "ev_specs_v2g_enabled2024.json").is_file(),
    reason=f"real data not found at {DATA} (set VPP_DATA_DIR to the shared data folder)",
)

LA = ZoneInfo(SITE_TZ)
N_EV, N_BESS = 40, 4
DT_S = 300.0
# A Wednesday, local midnight at the Caltech garage: the pattern clock starts here.
T0 = datetime(2025, 11, 19, 0, 0, tzinfo=LA).astimezone(UTC)


def _to_resource(body: dict[str, Any]) -> Resource:
    """The registration body as the domain sees it, so the domain's own rules judge it."""
    return Resource(
        resource_id=body["resource_id"],
        resource_type=ResourceType(body["resource_type"]),
        name=body["name"],
        fleet_id=body["fleet_id"],
        grid_node=body["grid_node"],
        battery_capacity_kwh=body["battery_capacity_kwh"],
        max_charge_kw=body["max_charge_kw"],
        max_discharge_kw=body["max_discharge_kw"],
        v2g_capable=body["v2g_capable"],
        telemetry_enabled=body["telemetry_enabled"],
        interconnection=Interconnection(**body["interconnection"]),
        min_soc_pct=body["min_soc_pct"],
        max_soc_pct=body.get("max_soc_pct", 100.0),
        departure_schedule=tuple(
            RecurringDeparture(
                days=tuple(e["days"]),
                departure=e["departure"],
                return_=e.get("return"),
                required_soc_pct=e["required_soc_pct"],
                timezone=e["timezone"],
            )
            for e in body.get("departure_schedule", [])
        ),
    )


def _run(fleet: SimulatedFleet, steps: int, dt_s: float = DT_S) -> list[list[dict[str, Any]]]:
    return [fleet.step(T0 + timedelta(seconds=k * dt_s), dt_s) for k in range(steps)]


@pytest.fixture(scope="module")
def fleet_day() -> tuple[SimulatedFleet, list[list[dict[str, Any]]]]:
    fleet = build_fleet(N_EV, N_BESS, DATA)
    return fleet, _run(fleet, int(86_400 / DT_S))


def test_registrations_meet_the_requirements() -> None:
    fleet = build_fleet(N_EV, N_BESS, DATA, grid_nodes=("N1", "N2", "N3"), fleet_id="f-1")
    regs = fleet.registrations()
    assert len(regs) == N_EV + N_BESS
    assert len({r["resource_id"] for r in regs}) == len(regs)
    assert [r["resource_type"] for r in regs] == ["EV"] * N_EV + ["BESS"] * N_BESS
    assert {r["grid_node"] for r in regs} == {"N1", "N2", "N3"}
    for r in regs:
        assert r["fleet_id"] == "f-1"
        assert r["battery_capacity_kwh"] >= 50
        assert r["v2g_capable"] is True and r["telemetry_enabled"] is True
        assert r["interconnection"]["approved"] is True and r["interconnection"]["reference"]
        assert r["max_charge_kw"] > 0 and r["max_discharge_kw"] > 0
        assert 0 <= r["min_soc_pct"] < r["max_soc_pct"] <= 100
        json.dumps(r)  # plain JSON, no numpy scalars
        assert check_registration(_to_resource(r), bess_min_soc_pct=20.0) == [], r
        if r["resource_type"] == "BESS":
            assert r["min_soc_pct"] >= 20
            assert "departure_schedule" not in r
            continue
        (entry,) = r["departure_schedule"]
        assert entry["days"] and set(entry["days"]) <= set(WEEKDAYS)
        for key in ("departure", "return"):
            hh, mm = entry[key].split(":")
            assert len(hh) == len(mm) == 2 and 0 <= int(hh) <= 23 and 0 <= int(mm) <= 59
        assert r["min_soc_pct"] < entry["required_soc_pct"] <= r["max_soc_pct"]
        assert entry["timezone"] == SITE_TZ


def test_ev_batteries_are_real_models_weighted_by_registrations() -> None:
    specs = json.loads((DATA / "prices_nl" / "ev_specs_v2g_enabled2024.json").read_text())
    big = {(s["battery_capacity"], s["max_ac_charge_power"]) for s in specs.values()}
    big = {b for b in big if b[0] >= 50}
    regs = build_fleet(500, 0, DATA).registrations()
    assert {(r["battery_capacity_kwh"], r["max_charge_kw"]) for r in regs} <= big
    # Teslas (57.5 kWh) are ~38 % of registrations among the models of 50 kWh or more.
    share = np.mean([r["battery_capacity_kwh"] == 57.5 for r in regs])
    assert 0.30 < share < 0.47


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    a, b, c = (build_fleet(10, 2, DATA, seed=s) for s in (7, 7, 8))
    assert a.registrations() == b.registrations()
    assert a.registrations() != c.registrations()
    assert _run(a, 20) == _run(b, 20)


def test_samples_are_well_formed(
    fleet_day: tuple[SimulatedFleet, list[list[dict[str, Any]]]],
) -> None:
    fleet, ticks = fleet_day
    for k, samples in enumerate(ticks):
        now = T0 + timedelta(seconds=k * DT_S)
        assert [s["resource_id"] for s in samples] == list(fleet.resource_ids)
        for s in samples:
            ts = datetime.fromisoformat(s["timestamp"])
            assert ts.tzinfo is not None and ts <= now
            assert 0.0 <= s["soc_pct"] <= 100.0
            assert isinstance(s["plugged_in"], bool)
            assert isinstance(s["power_kw"], float)


def test_naive_now_is_refused() -> None:
    fleet = build_fleet(1, 0, DATA)
    with pytest.raises(ValueError, match="aware"):
        fleet.step(datetime(2025, 1, 1, 12, 0), 60.0)


def test_evs_follow_a_workplace_day(
    fleet_day: tuple[SimulatedFleet, list[list[dict[str, Any]]]],
) -> None:
    """Caltech is a workplace garage: cars are there at midday, gone at night."""
    _, ticks = fleet_day
    plugged = np.array([[s["plugged_in"] for s in t[:N_EV]] for t in ticks])
    per_tick = plugged.sum(axis=1)
    assert per_tick.max() > 0 and per_tick.min() < N_EV
    at_13h, at_3h = int(13 * 3600 / DT_S), int(3 * 3600 / DT_S)
    assert per_tick[at_13h] > per_tick[at_3h]
    changed = (plugged[1:] != plugged[:-1]).any(axis=0)
    assert changed.sum() >= 5  # real arrivals and departures, not a static fleet
    bess = np.array([[s["plugged_in"] for s in t[N_EV:]] for t in ticks])
    assert bess.all()


def test_plugged_ev_below_target_charges(
    fleet_day: tuple[SimulatedFleet, list[list[dict[str, Any]]]],
) -> None:
    fleet, ticks = fleet_day
    charging_pairs = full_pairs = drained = 0
    for prev, cur in itertools.pairwise(ticks):
        for i in range(N_EV):
            p, c = prev[i], cur[i]
            if c["power_kw"] < 0:
                assert c["plugged_in"]
            if not c["plugged_in"]:
                assert c["power_kw"] == 0.0
                assert c["soc_pct"] <= p["soc_pct"] + 0.01  # away: only driving, never charging
                drained += c["soc_pct"] < p["soc_pct"] - 0.01
            if p["plugged_in"] and c["plugged_in"] and p["soc_pct"] < fleet.target_soc_pct[i] - 1:
                charging_pairs += 1
                assert c["power_kw"] < 0
                assert c["soc_pct"] > p["soc_pct"]
                # The SoC rise is the power drawn, less losses, over the step.
                rise = (
                    -c["power_kw"] * CHARGE_EFFICIENCY * DT_S / 3600 / fleet.capacity_kwh[i] * 100
                )
                assert c["soc_pct"] - p["soc_pct"] == pytest.approx(rise, abs=0.02)
            if c["plugged_in"] and p["soc_pct"] >= fleet.target_soc_pct[i] + 0.01:
                full_pairs += 1
                assert c["power_kw"] == 0.0  # at its target a car idles (no dispatch here)
            assert c["soc_pct"] <= fleet.max_soc_pct[i] + 0.01
            assert -fleet.max_charge_kw[i] - 1e-6 <= c["power_kw"] <= fleet.max_discharge_kw[i]
    assert charging_pairs >= 10 and full_pairs >= 10
    assert drained >= 5


def test_bess_cycles_within_its_limits(
    fleet_day: tuple[SimulatedFleet, list[list[dict[str, Any]]]],
) -> None:
    fleet, ticks = fleet_day
    soc = np.array([[s["soc_pct"] for s in t[N_EV:]] for t in ticks])
    kw = np.array([[s["power_kw"] for s in t[N_EV:]] for t in ticks])
    cap = fleet.capacity_kwh[N_EV:]
    assert ((cap >= 100) & (cap <= 1000)).all()
    assert np.allclose(fleet.max_charge_kw[N_EV:], 0.5 * cap)
    assert (soc >= fleet.min_soc_pct[N_EV:] - 0.01).all()
    assert (soc <= fleet.max_soc_pct[N_EV:] + 0.01).all()
    assert (kw > 1).any(axis=0).all() and (kw < -1).any(axis=0).all()  # both ways, every battery
    assert (np.abs(kw) <= 0.5 * cap + 1e-6).all()
    d_soc = np.diff(soc, axis=0)
    # Only steps whose SoC change shows at the 0.01 % resolution the samples carry.
    moving = np.abs(kw[1:]) * DT_S / 3600 / cap * 100 > 0.02
    assert (np.sign(d_soc[moving]) == -np.sign(kw[1:][moving])).all()  # discharge lowers SoC
    _assert_bess_energy_balance(kw[1:], d_soc, cap, DT_S)


def _assert_bess_energy_balance(
    kw: np.ndarray[Any, Any], d_soc: np.ndarray[Any, Any], cap: np.ndarray[Any, Any], dt_s: float
) -> None:
    """Reported power and SoC change tell the same story (losses on the battery side)."""
    battery_kwh = np.where(kw > 0, kw / CHARGE_EFFICIENCY, kw * CHARGE_EFFICIENCY) * dt_s / 3600
    assert np.allclose(d_soc, -battery_kwh / cap * 100, atol=0.02)


def test_bess_long_steps_stop_at_the_floor_and_ceiling() -> None:
    """Hour-long steps would overshoot a naive integrator; power is cut to what the SoC allows."""
    fleet = build_fleet(0, 6, DATA, seed=3)
    dt = 3 * 3600.0
    ticks = _run(fleet, 16, dt)  # two days
    soc = np.array([[s["soc_pct"] for s in t] for t in ticks])
    kw = np.array([[s["power_kw"] for s in t] for t in ticks])
    assert (soc >= fleet.min_soc_pct - 0.01).all() and (soc <= fleet.max_soc_pct + 0.01).all()
    _assert_bess_energy_balance(kw[1:], np.diff(soc, axis=0), fleet.capacity_kwh, dt)


def test_departure_schedule_matches_when_the_replayed_driver_leaves() -> None:
    fleet = build_fleet(N_EV, 0, DATA)
    dt = 600.0
    ticks = _run(fleet, int(28 * 86_400 / dt), dt)  # the whole replay loop, four weeks
    pattern_start = T0
    close = 0
    for i, reg in enumerate(fleet.registrations()):
        (entry,) = reg["departure_schedule"]
        hh, mm = (int(x) for x in entry["departure"].split(":"))
        unplugs = [
            (pattern_start + timedelta(seconds=(k + 1) * dt)).astimezone(LA)
            for k in range(len(ticks) - 1)
            if ticks[k][i]["plugged_in"] and not ticks[k + 1][i]["plugged_in"]
        ]
        on_days = [
            u.hour * 60 + u.minute for u in unplugs if WEEKDAYS[u.weekday()] in entry["days"]
        ]
        assert on_days, reg["resource_id"]
        close += abs(float(np.median(on_days)) - (hh * 60 + mm)) <= 45
    assert close >= 0.8 * N_EV


# --------------------------------------------------------------------------- setpoints


def _twins_at_noon() -> tuple[SimulatedFleet, SimulatedFleet, list[dict[str, Any]]]:
    """Two identical fleets run to Wednesday noon (cars at work), and the last samples."""
    a, b = build_fleet(N_EV, N_BESS, DATA), build_fleet(N_EV, N_BESS, DATA)
    ticks = _run(a, int(12 * 3600 / DT_S) + 1)
    assert _run(b, len(ticks)) == ticks
    return a, b, ticks[-1]


NOON = T0 + timedelta(hours=12, seconds=DT_S)


def test_setpoints_make_plugged_resources_discharge_and_charge() -> None:
    a, b, last = _twins_at_noon()
    ev = next(
        i
        for i in range(N_EV)
        if last[i]["plugged_in"]
        and a.min_soc_pct[i] + 5 < last[i]["soc_pct"] < a.max_soc_pct[i] - 5
    )
    bess_out, bess_in = N_EV, N_EV + 1
    cmd = {
        ev: 0.5 * a.max_discharge_kw[ev],
        bess_out: 0.25 * a.max_discharge_kw[bess_out],
        bess_in: -0.25 * a.max_charge_kw[bess_in],
    }
    a.set_setpoints({a.resource_ids[i]: kw for i, kw in cmd.items()})
    dt = 60.0
    soc0 = a.soc_pct
    got, twin = a.step(NOON, dt), b.step(NOON, dt)
    soc1 = a.soc_pct
    cap = a.capacity_kwh
    for i, kw in cmd.items():
        assert got[i]["plugged_in"] is True
        assert got[i]["power_kw"] == pytest.approx(kw, abs=1e-3)
        assert twin[i]["power_kw"] != pytest.approx(kw, abs=1e-3)  # not what it did on its own
        battery_kwh = kw / CHARGE_EFFICIENCY if kw > 0 else kw * CHARGE_EFFICIENCY
        assert soc0[i] - soc1[i] == pytest.approx(battery_kwh * dt / 3600 / cap[i] * 100, rel=1e-9)
    others = [k for k in range(len(got)) if k not in cmd]
    assert [got[k] for k in others] == [twin[k] for k in others]  # the rest is untouched


def test_setpoints_are_clipped_to_power_and_soc_limits() -> None:
    a, b, last = _twins_at_noon()
    ev = next(i for i in range(N_EV) if last[i]["plugged_in"] and last[i]["soc_pct"] < 80)
    bess = N_EV
    a.set_setpoints({a.resource_ids[ev]: -1e4, a.resource_ids[bess]: 1e6})
    got = a.step(NOON, 60.0)
    assert got[ev]["power_kw"] == pytest.approx(-a.max_charge_kw[ev], abs=1e-3)
    assert got[bess]["power_kw"] == pytest.approx(a.max_discharge_kw[bess], abs=1e-3)
    # Hours at full discharge: every BESS stops exactly at its floor, and the reported power is
    # the energy that really left (not the command).
    a.set_setpoints({rid: 1e6 for rid in a.resource_ids[N_EV:]})
    dt = 3 * 3600.0
    ticks = [a.step(NOON + timedelta(hours=3 * (k + 1)), dt) for k in range(3)]
    soc = np.array([[s["soc_pct"] for s in t[N_EV:]] for t in ticks])
    kw = np.array([[s["power_kw"] for s in t[N_EV:]] for t in ticks])
    assert np.allclose(soc[-1], a.min_soc_pct[N_EV:], atol=0.01)
    assert (kw[-1] == 0).all()
    _assert_bess_energy_balance(kw[1:], np.diff(soc, axis=0), a.capacity_kwh[N_EV:], dt)

    # An EV told to discharge for longer than its pack allows stops at its minimum SoC.
    soc0 = b.soc_pct
    hours = (soc0 - b.min_soc_pct) / 100 * b.capacity_kwh * CHARGE_EFFICIENCY / b.max_discharge_kw
    for i in range(N_EV):
        if not last[i]["plugged_in"] or hours[i] < 0.25:
            continue
        span = 1.5 * hours[i] * 3600
        probe = build_fleet(N_EV, N_BESS, DATA)
        _run(probe, int(12 * 3600 / DT_S) + 1)
        steps = int(span // 60) + 1
        if all(
            probe.step(NOON + timedelta(minutes=m), 60.0)[i]["plugged_in"] for m in range(steps)
        ):
            break  # plugged in all along: no drive in between
    else:
        pytest.fail("no EV stays plugged in long enough")
    b.set_setpoints({b.resource_ids[i]: 1e6})
    sample = b.step(NOON, span)[i]
    assert sample["plugged_in"] is True
    assert b.soc_pct[i] == pytest.approx(b.min_soc_pct[i], abs=1e-6)
    assert sample["power_kw"] == pytest.approx(b.max_discharge_kw[i] / 1.5, abs=1e-3)


def test_unplugged_ev_ignores_its_setpoint() -> None:
    a, b, last = _twins_at_noon()
    dt = 60.0
    away = [i for i in range(N_EV) if not last[i]["plugged_in"]]
    assert away
    a.set_setpoints({a.resource_ids[i]: 0.5 * a.max_discharge_kw[i] for i in away})
    got, twin = a.step(NOON, dt), b.step(NOON, dt)
    for i in away:
        if twin[i]["plugged_in"]:
            continue  # arrived during this step: obeys from now on, checked elsewhere
        assert got[i] == twin[i]
        assert got[i]["power_kw"] == 0.0
    assert np.array_equal(a.soc_pct, b.soc_pct)


def test_set_setpoints_replaces_the_previous_command() -> None:
    a, b, _ = _twins_at_noon()
    a.set_setpoints({rid: -5.0 for rid in a.resource_ids})
    a.set_setpoints({"not-in-this-fleet": 3.0})  # everything back to its own behaviour
    assert a.step(NOON, 60.0) == b.step(NOON, 60.0)
    with pytest.raises(ValueError, match="finite"):
        a.set_setpoints({a.resource_ids[0]: float("nan")})


def test_schedule_interpolation_is_linear_and_zero_outside() -> None:
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    points = [  # out of order, both UTC spellings
        {"t": (t0 + timedelta(minutes=2)).isoformat(), "setpoint_kw": -4.0},
        {"t": t0.isoformat().replace("+00:00", "Z"), "setpoint_kw": 10.0},
        {"t": (t0 + timedelta(minutes=1)).isoformat(), "setpoint_kw": 20.0},
    ]
    times, kw = parse_schedule(points)
    assert times.tolist() == [t0.timestamp() + 60 * m for m in range(3)]
    assert kw.tolist() == [10.0, 20.0, -4.0]

    def at(seconds: float) -> float:
        return schedule_setpoint_kw(times, kw, t0.timestamp() + seconds)

    assert at(-0.001) == 0.0
    assert at(0) == 10.0
    assert at(15) == pytest.approx(12.5)
    assert at(60) == 20.0
    assert at(90) == pytest.approx(8.0)
    assert at(120) == -4.0
    assert at(120.001) == 0.0
    empty = parse_schedule([])
    assert schedule_setpoint_kw(*empty, t0.timestamp()) == 0.0
    with pytest.raises(KeyError):
        parse_schedule([{"t": t0.isoformat()}])


def test_dispatch_follower_caches_by_revision_and_expires_stale_plans() -> None:
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    svc: dict[str, Any] = {"up": True, "revision": 1, "detail_calls": 0, "lists": []}

    def handler(request: httpx.Request) -> httpx.Response:
        if not svc["up"]:
            return httpx.Response(503, json={"detail": "down"})
        if request.url.path == "/dispatch":
            status = request.url.params["status"]
            svc["lists"].append((status, request.url.params["limit"]))
            items = {
                "active": [{"dispatch_id": "d1", "revision": svc["revision"]}],
                "partial": [],
                "scheduled": [
                    {"dispatch_id": "later", "revision": 1, "start": "2026-03-02T11:00:00Z"}
                ],
            }[status]
            return httpx.Response(200, json={"items": items, "total": len(items)})
        assert request.url.path == "/dispatch/d1"
        svc["detail_calls"] += 1
        kw = 10.0 * svc["revision"]
        schedule = [
            {"t": (t0 + timedelta(minutes=m)).isoformat(), "setpoint_kw": kw} for m in range(5)
        ]
        return httpx.Response(
            200,
            json={
                "dispatch_id": "d1",
                "status": "active",
                "revision": svc["revision"],
                "allocations": [
                    {"resource_id": "r1", "schedule": schedule},
                    {"resource_id": "r2", "schedule": schedule[3:]},  # starts at +3 min
                ],
            },
        )

    mono = [0.0]
    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://svc") as client:
        follower = DispatchFollower(client, clock=lambda: mono[0])
        assert follower.setpoints(t0 + timedelta(seconds=30)) == {"r1": 10.0}  # r2 not begun
        assert follower.setpoints(t0 + timedelta(minutes=3)) == {"r1": 10.0, "r2": 10.0}
        assert svc["detail_calls"] == 1  # same revision: not fetched again
        assert {status for status, _ in svc["lists"]} == {"active", "partial", "scheduled"}
        assert {limit for _, limit in svc["lists"]} == {"500"}
        svc["up"] = False
        mono[0] = 59.0
        assert follower.setpoints(t0 + timedelta(minutes=4)) == {"r1": 10.0, "r2": 10.0}
        mono[0] = 61.0
        assert follower.setpoints(t0 + timedelta(minutes=4)) == {}  # too old to follow
        svc["up"] = True
        assert follower.setpoints(t0 + timedelta(minutes=4)) == {"r1": 10.0, "r2": 10.0}
        assert svc["detail_calls"] == 1
        svc["revision"] = 2
        assert follower.setpoints(t0 + timedelta(minutes=4)) == {"r1": 20.0, "r2": 20.0}
        assert follower.setpoints(t0 + timedelta(minutes=5)) == {"r1": 0.0, "r2": 0.0}  # held
        assert svc["detail_calls"] == 2


# --------------------------------------------------------------------------- over HTTP


class _FakeService(BaseHTTPRequestHandler):
    state: dict[str, Any]

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        st = self.state
        url = urlsplit(self.path)
        if url.path == "/health":
            st["health_calls"] += 1
            self._answer(200 if st["health_calls"] > 1 else 503, {"status": "ok"})
        elif url.path == "/dispatch":
            status = parse_qs(url.query)["status"][0]
            st["list_calls"] += 1
            if st["list_calls"] == 4:  # the second tick cannot see the dispatches
                self._answer(500, {"detail": "transient"})
                return
            items = [d["summary"] for d in st["dispatches"].values() if d["status"] == status]
            self._answer(200, {"items": items, "total": len(items), "limit": 500, "offset": 0})
        elif url.path.startswith("/dispatch/"):
            did = url.path.removeprefix("/dispatch/")
            st["detail_calls"][did] = st["detail_calls"].get(did, 0) + 1
            d = st["dispatches"][did]
            self._answer(200, {"status": d["status"], "revision": 1, **d["detail"]})
        else:
            self._answer(404, {})

    def do_POST(self) -> None:
        st = self.state
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path == "/resources/register":
            rid = body["resource_id"]
            if rid.endswith("bess-001"):
                self._answer(422, {"detail": "refused for the test"})
            elif rid in st["registered"]:
                self._answer(409, {"detail": "exists"})
            else:
                st["registered"].add(rid)
                self._answer(201, body)
        elif self.path == "/telemetry":
            st["posts"].append(body["samples"])
            if len(st["posts"]) == 1:
                self._answer(500, {"detail": "transient"})
            else:
                n = len(body["samples"])
                self._answer(200, {"accepted": n - 1, "rejected": [{"index": 0, "reason": "x"}]})
        else:
            self._answer(404, {})


@pytest.fixture
def fake_service() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {
        "health_calls": 0,
        "registered": {"demo-fleet-ev-0001"},
        "posts": [],
        "dispatches": {},
        "list_calls": 0,
        "detail_calls": {},
    }
    handler = type("Handler", (_FakeService,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_run_simulation_survives_errors_and_rejections(
    fake_service: tuple[str, dict[str, Any]],
) -> None:
    url, state = fake_service
    ticks: list[tuple[int, int]] = []  # (accepted, rejected) per tick
    run_simulation(
        url,
        5,
        2,
        interval_s=0.2,
        duration_s=1.0,
        speed=600.0,
        data_dir=DATA,
        on_tick=lambda accepted, rejected: ticks.append((accepted, rejected)),
    )
    assert state["health_calls"] >= 2  # waited through the 503
    assert len(state["registered"]) == 6  # 5 EVs (one answered 409) + 1 BESS; one BESS refused
    assert len(ticks) >= 4 and len(ticks) == len(state["posts"])
    assert ticks[0] == (0, 6)  # the 500 was logged, not raised: 6 sent, none accepted
    assert all(t == (5, 1) for t in ticks[1:])  # 6 sent, 1 rejected by the service
    after = datetime.now(UTC)
    for post in state["posts"]:
        assert {s["resource_id"] for s in post} == state["registered"]
        assert all(datetime.fromisoformat(s["timestamp"]) <= after for s in post)


def _schedule(t0: datetime, kws: list[float]) -> list[dict[str, Any]]:
    return [
        {"t": (t0 + timedelta(minutes=m)).isoformat(), "setpoint_kw": kw}
        for m, kw in enumerate(kws)
    ]


def test_run_simulation_obeys_the_open_dispatches(
    fake_service: tuple[str, dict[str, Any]],
) -> None:
    url, state = fake_service
    now = datetime.now(UTC)
    t0 = now.replace(second=0, microsecond=0) - timedelta(minutes=2)
    bess_kw = [20.0 + 3.0 * m for m in range(6)]  # a ramp: 26 kW now, 29 kW in a minute
    ev_kw = [-2.0] * 6  # charge at 2 kW (below every model's limit)
    state["dispatches"] = {
        "d-active": {
            "status": "active",
            "summary": {"dispatch_id": "d-active", "status": "active", "revision": 1},
            "detail": {
                "allocations": [
                    {"resource_id": "demo-fleet-bess-002", "schedule": _schedule(t0, bess_kw)}
                ]
            },
        },
        "d-partial": {  # an active dispatch short of its target is listed as partial
            "status": "partial",
            "summary": {"dispatch_id": "d-partial", "status": "partial", "revision": 1},
            "detail": {
                "allocations": [
                    {"resource_id": "demo-fleet-ev-0001", "schedule": _schedule(t0, ev_kw)}
                ]
            },
        },
        "d-later": {  # starts in an hour: not followed yet, not even fetched
            "status": "scheduled",
            "summary": {
                "dispatch_id": "d-later",
                "status": "scheduled",
                "revision": 1,
                "start": (now + timedelta(hours=1)).isoformat(),
            },
            "detail": {},
        },
    }
    run_simulation(url, 5, 2, interval_s=0.2, duration_s=1.0, speed=600.0, data_dir=DATA)
    posts = state["posts"]
    assert len(posts) >= 4
    # Active, partial and scheduled every tick; the failing tick gave up after its first call.
    assert state["list_calls"] == 3 * len(posts) - 2
    assert state["detail_calls"] == {"d-active": 1, "d-partial": 1}  # cached by revision
    times, kw = parse_schedule(_schedule(t0, bess_kw))
    for post in posts:  # including the tick whose dispatch list failed (last plan kept)
        by_id = {s["resource_id"]: s for s in post}
        bess = by_id["demo-fleet-bess-002"]
        at = datetime.fromisoformat(bess["timestamp"]).timestamp()
        expected = schedule_setpoint_kw(times, kw, at)
        assert 25.0 < expected < 32.0
        assert bess["power_kw"] == pytest.approx(expected, abs=2e-3)
        ev = by_id["demo-fleet-ev-0001"]
        assert ev["power_kw"] == (-2.0 if ev["plugged_in"] else 0.0)
        for rid in ("demo-fleet-ev-0002", "demo-fleet-bess-002"):
            assert 0.0 <= by_id[rid]["soc_pct"] <= 100.0
    bess_soc = [
        next(s["soc_pct"] for s in p if s["resource_id"].endswith("bess-002")) for p in posts
    ]
    # Discharging all along, in real time: 30 kW for about a second barely moves the SoC, whereas
    # the battery's own cycle at 600x pattern speed would have moved it visibly.
    assert all(b <= a for a, b in itertools.pairwise(bess_soc))
    assert bess_soc[0] - bess_soc[-1] < 0.05

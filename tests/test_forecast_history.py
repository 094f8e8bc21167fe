"""The forecaster's hourly history: folded on arrival, equal to reading the raw samples back."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from factories import ev
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.history import PluggedHistory
from vpp_aggregator.domain.metering import energy_in
from vpp_aggregator.domain.resources import ResourceStatus

NOW_S = 1_000 * 3600.0 + 1234.0


HOLD_S = 900.0  # a sample's state holds until the next, at most this long


def brute_force(
    ids: list[str], ts: np.ndarray, plugged: np.ndarray, who: list[str], hours: int
) -> np.ndarray:
    """Each resource-hour's share of time plugged in, by the meter's own sample-and-hold rule
    (`domain/metering.energy_in`, plugged in as 1 kW): the first of samples at one time is the
    one kept, as the store keeps it; samples before the window are not read."""
    end_h = int(NOW_S // 3600)
    edges = np.arange(end_h - hours, end_h + 1) * 3600.0
    out = np.full((len(who), hours), np.nan)
    for r, rid in enumerate(who):
        mine = [
            (t, p) for i, t, p in zip(ids, ts, plugged, strict=True) if i == rid and t >= edges[0]
        ]
        first = {t: p for t, p in reversed(mine)}  # the first sample at each time
        at = np.array(sorted(first))
        on = np.array([1.0 if first[t] else 0.0 for t in at])
        kwh, covered = energy_in(at, on, edges[:-1], edges[1:], HOLD_S)
        seen = covered > 0
        out[r, seen] = kwh[seen] * 3600.0 / covered[seen]
    return out


@settings(max_examples=80, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.floats(min_value=NOW_S - 30 * 3600, max_value=NOW_S).map(
                lambda t: round(t / 60) * 60.0
            ),
            st.booleans(),
        ),
        min_size=1,
        max_size=80,
    ),
    batch=st.integers(min_value=1, max_value=30),
    reads=st.booleans(),
)
def test_in_order_samples_fold_to_the_share_of_each_hours_time_plugged_in(
    samples: list[tuple[str, float, bool]], batch: int, reads: bool
) -> None:
    """Whatever the batching, and read or not as hours finish, telemetry arriving in time order
    gives each resource-hour's share of reported time plugged in, each sample holding until the
    next (at most the hold), exactly as the meter measures; samples older than the window are
    dropped."""
    samples.sort(key=lambda s: s[1])
    ids = [s[0] for s in samples]
    ts = np.array([s[1] for s in samples])
    plugged = np.array([s[2] for s in samples])
    history = PluggedHistory(24, hold_s=HOLD_S)
    for i in range(0, len(ids), batch):
        history.add(
            ids[i : i + batch],
            ts[i : i + batch],
            plugged[i : i + batch],
            np.full(batch, 50.0)[: len(ids[i : i + batch])],
            NOW_S,
        )
        if reads:  # a forecast now: the hours finished so far are read (an id asked twice)
            history.window(["a", "c", "a"], int(ts[i : i + batch].max() // 3600))
    who = ["a", "b", "c", "never"]
    window = history.window(who, int(NOW_S // 3600))
    expected = brute_force(ids, ts, plugged, who, 24)
    np.testing.assert_allclose(window.share, expected, atol=0.5 / 250 + 1e-6)
    assert window.samples.tolist() == (~np.isnan(expected)).sum(axis=1).tolist()


def test_an_hours_share_is_of_its_time_not_of_its_samples() -> None:
    """A vehicle away from its charger heartbeats every 15 minutes; plugged in at :40, its
    charger reports every minute. It was plugged in a third of the hour, not 20 of its 23
    samples' worth: how often a device reports must not move the forecast."""
    h = int(NOW_S // 3600) - 2
    away = (h - 1) * 3600.0 + np.arange(0, 100 * 60, 15 * 60)  # from the hour before to :40
    away = away[away < h * 3600.0 + 40 * 60]
    home = h * 3600.0 + 60.0 * np.arange(40, 80)  # from :40 into the next hour
    ts = np.r_[away, home]
    plugged = np.r_[np.zeros(away.size, bool), np.ones(home.size, bool)]
    history = PluggedHistory(4, hold_s=HOLD_S)
    history.add(["ev"] * ts.size, ts, plugged, np.full(ts.size, 50.0), NOW_S)
    share = history.window(["ev"], h + 2).share[0]
    assert share[1] == 0.0  # the hour before: away all through
    assert abs(share[2] - 1 / 3) <= 0.5 / 250  # plugged in from :40
    assert share[3] == 1.0  # plugged in from :00 to :20 and then held, all it reported


def test_a_batch_delivered_again_changes_nothing() -> None:
    """A consumer that fails mid-stream reads its batches again: the samples are the same ones,
    and the history must not count their time twice (in the hour under way or before it)."""
    h = int(NOW_S // 3600) - 2
    ts = h * 3600.0 + 60.0 * np.arange(0, 80)  # a sample a minute from :00 to the next :20
    plugged = (ts < h * 3600.0 + 50 * 60) | (ts >= (h + 1) * 3600.0)
    once, twice = PluggedHistory(4, hold_s=300.0), PluggedHistory(4, hold_s=300.0)
    for history, again in ((once, False), (twice, True)):
        for k in range(0, ts.size, 10):
            part = slice(k, k + 10)
            history.add(["ev"] * 10, ts[part], plugged[part], np.full(10, 50.0), NOW_S)
            if again and k >= 40:  # :40 to the next :20 come twice, each right after itself
                history.add(["ev"] * 10, ts[part], plugged[part], np.full(10, 50.0), NOW_S)
    share = twice.window(["ev"], h + 2).share[0]
    np.testing.assert_array_equal(share, once.window(["ev"], h + 2).share[0])
    assert abs(share[2] - 50 / 60) <= 0.5 / 250


def test_after_a_start_the_hour_under_way_goes_on_from_the_stored_history() -> None:
    """After a restart at :05 the stored history (away :00 to :05) and live telemetry (plugged
    in from :05) make one hour, not the stored five minutes alone; and reading the history as
    the stored part finishes loses no finished hour."""
    start_h = int(NOW_S // 3600) - 1
    start_s = start_h * 3600.0 + 300.0
    history = PluggedHistory(4, hold_s=300.0)
    old = np.r_[(start_h - 3) * 3600.0 + 60.0 * np.arange(0, 185)]  # from H-3 to H:04
    history.add(
        ["ev"] * old.size,
        old,
        old < start_h * 3600.0,
        np.full(old.size, 50.0),
        start_s,
        stored=True,
    )
    history.finish_stored(start_s)
    before = history.window(["ev"], start_h).share[0]
    assert before[1:].tolist() == [1.0, 1.0, 1.0]  # H-3..H-1, none lost to the hour under way
    live = start_h * 3600.0 + 60.0 * np.arange(5, 60)
    history.add(["ev"] * live.size, live, np.ones(live.size, bool), np.full(live.size, 50.0), NOW_S)
    assert abs(history.window(["ev"], start_h + 1).share[0, 3] - 55 / 60) <= 0.5 / 250


def test_late_sample_fills_a_missing_hour_and_an_hour_older_than_the_window_is_ignored() -> None:
    h = int(NOW_S // 3600)
    history = PluggedHistory(4, hold_s=300.0)
    history.add(["a"], np.array([(h - 1) * 3600.0]), np.array([True]), np.array([60.0]), NOW_S)
    history.add(["a"], np.array([(h - 3) * 3600.0]), np.array([False]), np.array([40.0]), NOW_S)
    history.add(["a"], np.array([(h - 9) * 3600.0]), np.array([True]), np.array([40.0]), NOW_S)
    window = history.window(["a"], h)
    assert np.isnan(window.share[0, [0, 2]]).all()
    assert window.share[0, 1] == 0.0 and window.share[0, 3] == 1.0
    assert window.soc_when_plugged[0] == 60.0


def test_soc_by_hour_of_day_follows_each_day_a_quarter_of_the_way() -> None:
    """A vehicle that arrives at 40 % at 08:00 and has charged to 80 % by 16:00 shows both, hour
    by hour: the forecast must not credit the morning with the afternoon's charge. A later day
    moves an hour a quarter of the way to what that day saw; hours never plugged in stay NaN,
    and an hour is taken once however its samples arrive."""
    day0 = (int(NOW_S // 3600) // 24 - 5) * 24  # epoch hour of a midnight five days back
    history = PluggedHistory(24 * 7, hold_s=300.0)

    def day(d: int, morning: float) -> None:
        for hod, soc in ((8, morning), (16, 80.0)):
            t = (day0 + 24 * d + hod) * 3600.0 + np.array([60.0, 1800.0])
            for ti in t:  # one sample per call, as minute-by-minute telemetry comes
                history.add(["ev"], np.array([ti]), np.array([True]), np.array([soc]), NOW_S)
        away = (day0 + 24 * d + 12) * 3600.0  # plugged out at noon: no SoC by hour from it
        history.add(["ev"], np.array([away]), np.array([False]), np.array([10.0]), NOW_S)

    day(0, 40.0)
    day(1, 40.0)
    by_hour = history.window(["ev", "never"], int(NOW_S // 3600)).soc_by_hour
    assert by_hour[0, 8] == 40.0 and by_hour[0, 16] == 80.0
    assert np.isnan(by_hour[0, 12]) and np.isnan(by_hour[1]).all()
    day(2, 60.0)  # arrives fuller one day: the 08:00 average moves a quarter of the way
    by_hour = history.window(["ev"], int(NOW_S // 3600)).soc_by_hour
    assert by_hour[0, 8] == 45.0 and by_hour[0, 16] == 80.0


def test_forecast_history_is_read_back_after_a_restart(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    settings_ = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}", VPP_SITE_TIMEZONE="UTC"
    )
    evs = [f"ev-{i}" for i in range(6)]
    batch = []
    for hours_back in range(1, 10 * 24):
        t = clock.now - timedelta(hours=hours_back)
        work = 8 <= t.hour < 17
        batch += [sample(rid, t, 70, plugged=work and i % 3 != 0) for i, rid in enumerate(evs)]
    batch += [sample(rid, clock.now, 70, plugged=True) for rid in evs]

    def forecast(c: TestClient) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + 30
        while c.get("/forecast/model").json()["history_loading"]:
            assert time.monotonic() < deadline, "stored history never finished loading"
            time.sleep(0.05)
        return c.get("/capacity/forecast", params={"horizon_hours": 24}).json()  # type: ignore[no-any-return]

    with TestClient(create_app(settings_, clock=clock)) as c:
        forecast(c)
        for rid in evs:
            c.post("/resources/register", json=ev_body(rid))
        c.post("/resources/register", json=bess_body())
        assert c.post("/telemetry", json={"samples": batch}).status_code == 200
        before = forecast(c)
    with TestClient(create_app(settings_, clock=clock)) as c:
        after = forecast(c)
    assert after["model"]["history_hours"] == before["model"]["history_hours"] == 6 * (10 * 24 - 1)
    assert after["intervals"] == before["intervals"]
    day = {i["start"][11:13]: i["available_vehicles"]["p50"] for i in after["intervals"]}
    assert day["12"] > day["02"] + 2  # the working-day pattern came back with the history


def test_profile_counts_each_hour_of_week_with_or_without_a_clock_change() -> None:
    """Hour-of-week plug-in probabilities match a per-hour count, for a regular window and for
    one where a clock change makes some hours of week appear more often than others."""
    from vpp_aggregator.domain.forecast.fleet import PRIOR_WEIGHT, learn_profile
    from vpp_aggregator.domain.forecast.history import FULL, MISSING

    rng = np.random.default_rng(4)
    regular = np.arange(336) % 168
    shifted = np.r_[np.arange(100), np.arange(99, 336)] % 168  # hour 99 twice, one fewer at the end
    for how in (regular, shifted):
        raw = rng.integers(0, FULL + 1, size=(6, how.size)).astype(np.uint8)
        raw[rng.random(raw.shape) < 0.3] = MISSING
        is_bess = np.array([False] * 4 + [True] * 2)
        profile = learn_profile(raw, how, np.full(6, 60.0), np.full(6, 50.0), is_bess)
        for kind in (False, True):
            members = np.flatnonzero(is_bess == kind)
            for h in (0, 99, 167):
                cols = how == h
                cell = raw[np.ix_(members, cols)]
                seen = cell != MISSING
                share = np.where(seen, cell, 0) / FULL
                fleet = share.sum() / seen.sum() if seen.any() else 0.5
                want = (share.sum(axis=1) + PRIOR_WEIGHT * fleet) / (
                    seen.sum(axis=1) + PRIOR_WEIGHT
                )
                np.testing.assert_allclose(profile.p_plugged[members, h], want)


def test_on_the_live_states_rows_a_row_given_to_another_resource_starts_empty() -> None:
    """The forecast's history indexes the live state's rows; a row freed by a deactivation and
    taken by a new resource must not hand the old one's plug-in hours to the new one."""
    from datetime import UTC, datetime

    now = datetime.fromtimestamp(NOW_S, tz=UTC)
    state = FleetState(bess_min_soc_pct=20.0, stale_seconds=300.0, round_trip_efficiency=0.9)
    state.upsert_many([ev("a"), ev("b")], now)
    history = PluggedHistory(4, state.history_rows, hold_s=300.0)
    h = int(NOW_S // 3600)
    at = np.array([(h - 2) * 3600.0, (h - 2) * 3600.0, (h - 2) * 3600.0])
    history.add(["a", "b", "ghost"], at, np.array([True, False, True]), np.full(3, 60.0), NOW_S)
    assert len(history) == 2  # an id the live state does not know is not kept
    state.upsert(ev("a", status=ResourceStatus.INACTIVE), now)
    state.upsert(ev("c"), now)
    assert state.rows_of(["c"]).tolist() == [0]  # the row "a" had
    window = history.window(["c", "b"], h)
    assert np.isnan(window.share[0]).all() and np.isnan(window.soc_when_plugged[0])
    assert window.share[1, 2] == 0.0  # b's hour is still there
    history.add(["c"], np.array([(h - 1) * 3600.0]), np.array([True]), np.array([70.0]), NOW_S)
    window = history.window(["c"], h)
    assert np.isnan(window.share[0, :3]).all()  # a's hour (h - 2) is gone with a
    assert window.share[0, 3] == 1.0 and window.soc_when_plugged[0] == 70.0
    assert window.samples.tolist() == [1]


def test_rows_found_at_ingest_are_checked_so_a_sample_never_lands_on_another_resource() -> None:
    """Ingest hands the rows it found to the history (no second lookup); a resource deactivated,
    or whose row went to another resource, between the two steps must not have its sample
    folded into the row's new owner (nor kept once deactivated)."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from vpp_aggregator.app.events import EventBus, TelemetryAccepted
    from vpp_aggregator.app.telemetry import TelemetryBatch, TelemetryService

    now_s = 490_000 * 3600.0 + 1234.0  # 2025: ingest refuses 1970
    now = datetime.fromtimestamp(now_s, tz=UTC)
    h = int(now_s // 3600)
    state = FleetState(bess_min_soc_pct=20.0, stale_seconds=300.0, round_trip_efficiency=0.9)
    state.upsert_many([ev("a"), ev("b"), ev("d")], now)
    history = PluggedHistory(4, state.history_rows, hold_s=300.0)
    events = EventBus()

    def meanwhile(_: TelemetryAccepted) -> None:  # runs between ingest and the history
        state.upsert(ev("a", status=ResourceStatus.INACTIVE), now)
        state.upsert(ev("c"), now)  # takes a's row
        state.upsert(ev("d", status=ResourceStatus.INACTIVE), now)  # its row stays free
        history.add(["c"], np.array([(h - 1) * 3600.0]), np.array([False]), np.full(1, 70.0), now_s)

    events.subscribe(TelemetryAccepted, "meanwhile", meanwhile)
    events.subscribe(
        TelemetryAccepted,
        "history",
        lambda e: history.add(
            e.resource_ids, e.timestamp_s, e.plugged_in, e.soc_pct, now_s, e.rows
        ),
    )
    store = SimpleNamespace(insert_samples=lambda *_: None)
    telemetry = TelemetryService(store, state, lambda: now, 300.0, events)  # type: ignore[arg-type]
    at = np.full(3, (h - 1) * 3600.0 + 60.0)
    batch = TelemetryBatch(
        ["a", "b", "d"], at, np.full(3, 50.0), np.ones(3, bool), np.zeros(3), np.arange(3)
    )
    assert telemetry.ingest(batch).accepted == 3
    window = history.window(["c", "b"], h + 1)
    assert window.share[0, 2] == 0.0 and np.isnan(window.soc_when_plugged[0])  # c's alone
    assert window.share[1, 2] == 1.0  # b's row was not touched meanwhile: its sample is kept
    assert len(history) == 2  # c's and b's: nothing kept on the row d left
    d_row = 2  # registered third, on a fresh fleet
    assert history.window(["d"], h + 1).samples.tolist() == [0]
    state.upsert(ev("e"), now)  # the row d left, given to a newcomer
    assert state.rows_of(["e"]).tolist() == [d_row]
    assert history.window(["e"], h + 1).samples.tolist() == [0]


def test_a_model_learns_from_the_vehicles_shares_of_each_hour_summed_batteries_left_out() -> None:
    """What training learns from is the forecast's own history: per hour, each vehicle's share
    of its reported time plugged in, summed over the vehicles (batteries left out); an hour no
    vehicle reported is a gap, not zero; the series starts at the first hour a vehicle did."""
    from datetime import UTC, datetime

    from factories import bess
    from vpp_aggregator.app.forecast_parts import history_series

    now = datetime.fromtimestamp(NOW_S, tz=UTC)
    state = FleetState(bess_min_soc_pct=20.0, stale_seconds=300.0, round_trip_efficiency=0.9)
    state.upsert_many([ev("ev-1"), ev("bus-ü-2"), bess("bess-3")], now)
    history = PluggedHistory(6, state.history_rows, hold_s=300.0)
    h0 = (int(NOW_S // 3600) - 5) * 3600.0
    samples = [  # (resource, minutes after h0, plugged in): each holds 5 minutes
        *[("ev-1", m, p) for m, p in ((0, True), (5, True), (10, False), (15, False))],
        *[("bus-ü-2", m, p) for m, p in ((30, True), (35, False), (125, True))],
        *[("bess-3", m, True) for m in (5, 70)],  # hour 1: only the battery reported
    ]
    samples.sort(key=lambda x: x[1])
    ts = np.array([h0 + 60.0 * m for _, m, _ in samples])
    history.add(
        [r for r, _, _ in samples],
        ts,
        np.array([p for *_, p in samples]),
        np.full(ts.size, 50.0),
        NOW_S,
    )
    inputs, _ = state.dispatch_inputs(now, now, direction=1)
    series = history_series(history, inputs, int(NOW_S // 3600))
    assert series is not None and series.start_ts == h0
    # hour 0: ev-1 plugged 10 of its 20 minutes, the bus 5 of 10; hour 2: the bus, all its 5
    np.testing.assert_allclose(series.plugged[:3], [0.5 + 0.5, 0.0, 1.0], atol=1 / 250)
    assert series.gap[:3].tolist() == [False, True, False]

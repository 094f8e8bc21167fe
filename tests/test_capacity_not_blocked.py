"""A capacity read is answered while a whole-fleet pass (a new window's view, a telemetry
snapshot, a state image, a forecast's inputs) is under way: passes hold the fleet lock a chunk at
a time (`domain/fleet_scan`). And what a pass in chunks returns stays right when the fleet
changes between its chunks. Ordering is asserted with events, never with durations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from factories import bess, ev
from vpp_aggregator.domain import fleet_scan
from vpp_aggregator.domain.fleet_image import restore_image, take_image
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.resources import Resource, ResourceStatus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROWS = 40
IDS = [f"r{i}" for i in range(ROWS)]
WAIT_S = 10.0  # only a guard against hanging: each wait returns as soon as its event is set


def _state() -> FleetState:
    s = FleetState(bess_min_soc_pct=20.0, stale_seconds=300.0, round_trip_efficiency=0.9)
    s.upsert_many(_fleet(), NOW)
    _samples(s, IDS, NOW, 60.0)
    s.capacity(NOW, 60)  # the reader's window
    return s


def _fleet() -> list[Resource]:
    return [
        bess(rid, grid_node=f"N{i % 3}")
        if i % 2
        else ev(rid, departs_in=timedelta(hours=2 + i), now=NOW, grid_node=f"N{i % 3}")
        for i, rid in enumerate(IDS)
    ]


def _samples(s: FleetState, ids: list[str], at: datetime, soc: float) -> None:
    n = len(ids)
    s.apply_telemetry(
        s.rows_of(ids),
        np.full(n, at.timestamp()),
        np.full(n, soc),
        np.ones(n, bool),
        np.zeros(n),
        at,
    )


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_scan, "CHUNK_ROWS", 4)  # ten chunks over the fleet
    monkeypatch.setattr(fleet_scan, "EVENT_CHUNK_ROWS", 4)
    monkeypatch.setattr(fleet_scan, "ID_CHUNK", 4)


class Parked:
    """Runs `work` on a thread that parks at its first pause between chunks (lock let go),
    until `resume`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, work: Callable[[], Any]) -> None:
        self.paused, self._resume, self.done = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self.result: Any = None
        real = fleet_scan.pause

        def pause() -> None:
            if threading.current_thread() is self.thread and not self._resume.is_set():
                self.paused.set()
                self._resume.wait(WAIT_S)
            else:
                real()

        monkeypatch.setattr(fleet_scan, "pause", pause)

        def run() -> None:
            self.result = work()
            self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.paused.wait(WAIT_S), "the pass never let the lock go between chunks"

    def resume(self) -> Any:
        self._resume.set()
        self.thread.join(WAIT_S)
        assert self.done.is_set()
        return self.result


PASSES: dict[str, Callable[[FleetState], object]] = {
    "a new window's view": lambda s: s.capacity(NOW, 15),
    "telemetry snapshot": lambda s: s.take_dirty(),
    "state image": lambda s: take_image(s, NOW),
    "dispatch inputs of the fleet": lambda s: s.dispatch_inputs(NOW, NOW, direction=1),
    "dispatch inputs by id": lambda s: s.dispatch_inputs(NOW, NOW, direction=1, resource_ids=IDS),
    "forecast history rows": lambda s: s.history_rows(IDS),
    "routines": lambda s: s.routine_index(IDS),
    "grid nodes": lambda s: s.grid_nodes(),
    "net power": lambda s: s.net_power(NOW.timestamp()),
    "members": lambda s: s.members("N1"),
    "registering in bulk": lambda s: s.upsert_many(_fleet(), NOW),  # the same again
}


@pytest.mark.parametrize("name", PASSES)
def test_a_capacity_read_completes_while_a_whole_fleet_pass_is_under_way(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    s = _state()
    expected = s.capacity(NOW, 60)
    parked = Parked(monkeypatch, lambda: PASSES[name](s))
    answered = threading.Event()
    reads: list[Any] = []

    def read() -> None:
        reads.append(s.capacity(NOW, 60))
        answered.set()

    threading.Thread(target=read, daemon=True).start()
    assert answered.wait(WAIT_S), "the read waited for the whole pass"
    assert not parked.done.is_set()  # answered while the pass was still under way
    parked.resume()
    assert reads[0].total.resource_count == expected.total.resource_count
    assert reads[0].total.available_resource_count == expected.total.available_resource_count
    assert reads[0].total.discharge_kwh == pytest.approx(expected.total.discharge_kwh, abs=1e-9)


def test_a_view_built_while_samples_arrive_equals_one_built_from_scratch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = _state()
    later = NOW + timedelta(seconds=30)
    parked = Parked(monkeypatch, lambda: s.capacity(NOW, 15))
    # one row in the chunk already evaluated, one in a chunk still to come, and a new resource
    _samples(s, ["r1", "r37"], later, 95.0)
    s.upsert(bess("late", grid_node="N9"), later)
    _samples(s, ["late"], later, 80.0)
    parked.resume()
    built = s.capacity(later, 15)
    s._views.clear()
    scratch = s.capacity(later, 15)
    assert built.total.discharge_kwh == pytest.approx(scratch.total.discharge_kwh, abs=1e-9)
    assert built.total.charge_kw == pytest.approx(scratch.total.charge_kw, abs=1e-9)
    assert built.total.resource_count == scratch.total.resource_count == ROWS + 1
    assert built.by_grid_node.keys() == scratch.by_grid_node.keys()


def test_a_sample_applied_during_a_snapshot_is_in_it_or_left_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = _state()
    s.take_dirty()
    _samples(s, IDS, NOW + timedelta(seconds=1), 50.0)
    parked = Parked(monkeypatch, s.take_dirty)
    _samples(s, ["r0", "r39"], NOW + timedelta(seconds=2), 40.0)  # chunk done / chunk to come
    ids, _, ts, *_ = parked.resume()
    assert sorted(ids) == sorted(IDS)
    newest = dict(zip(ids, ts.tolist(), strict=True))
    assert newest["r39"] == (NOW + timedelta(seconds=2)).timestamp()
    assert newest["r0"] == (NOW + timedelta(seconds=1)).timestamp()
    again, _, ts2, *_ = s.take_dirty()  # r0's newer sample was left for the next snapshot
    assert again == ["r0"] and ts2[0] == (NOW + timedelta(seconds=2)).timestamp()


def test_an_image_taken_while_a_resource_moves_rows_names_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = _state()
    parked = Parked(monkeypatch, lambda: take_image(s, NOW))
    # rows 0-3 are copied; the last row freed is the first reused
    for rid in ("r5", "r6", "r1"):
        s.upsert(bess(rid, status=ResourceStatus.INACTIVE), NOW)
    s.upsert(bess("r5"), NOW)  # into row 1, copied already (as r1)
    s.upsert(bess("r1"), NOW)  # into row 6, not copied yet: r1 twice
    image = parked.resume()
    assert len(image.resource_ids) == len(set(image.resource_ids))
    restored = FleetState(bess_min_soc_pct=20.0, stale_seconds=300.0, round_trip_efficiency=0.9)
    restore_image(restored, image, NOW)  # refuses an image naming a resource twice
    assert "r1" in restored


def test_a_read_at_once_never_waits_and_never_answers_from_a_changed_state() -> None:
    s = _state()
    first = s.capacity(NOW, 60)
    changed, release = threading.Event(), threading.Event()

    def writer() -> None:  # holds the lock across a change, as a long pass would
        with s._lock:
            _samples(s, ["r0"], NOW + timedelta(seconds=2), 10.0)
            changed.set()
            release.wait(WAIT_S)

    quiet = s.capacity_at_once(NOW + timedelta(seconds=1), 60)  # nothing changed: no lock needed
    assert quiet is not None and quiet.total == first.total
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert changed.wait(WAIT_S)
    assert s.capacity_at_once(NOW + timedelta(seconds=3), 60) is None  # would wait: says so
    release.set()
    thread.join(WAIT_S)
    after = s.capacity_at_once(NOW + timedelta(seconds=3), 60)
    assert after is not None and after == s.capacity(NOW + timedelta(seconds=3), 60)
    assert after.total.gross_energy_kwh < first.total.gross_energy_kwh  # r0's new sample counted


def test_a_read_at_once_leaves_many_rows_fallen_due_to_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vpp_aggregator.domain import fleet_capacity

    monkeypatch.setattr(fleet_capacity, "AT_ONCE_MAX_DUE", 4)
    s = _state()
    stale = NOW + timedelta(seconds=301)  # every sample is stale by then: all 40 rows fall due
    assert s.capacity_at_once(stale, 60) is None
    answer = s.capacity(stale, 60)  # what the worker thread does
    assert answer.total.available_resource_count == 0
    assert s.capacity_at_once(stale, 60) == answer  # nothing left to do: at once again

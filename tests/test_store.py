"""Persistence on SQLite and PostgreSQL: migrations, history, replays, latest-sample restore."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from factories import bess, ev
from vpp_aggregator.adapters.store.database import (
    current_revision,
    head_revision,
    make_engine,
    migrate,
)
from vpp_aggregator.adapters.store.repository import STAMP_BLOCK, Repository
from vpp_aggregator.app.errors import DuplicateResourceError
from vpp_aggregator.config import ConfigError, load_settings
from vpp_aggregator.domain.resources import RecurringDeparture, Trip

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.fixture
def repo(database_url: str) -> Repository:
    engine = make_engine(database_url)
    migrate(engine)
    return Repository(engine)


def test_migrations_are_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    assert migrate(engine) == head_revision()
    assert migrate(engine) == head_revision()
    assert current_revision(engine) == head_revision()


def test_replicas_starting_together_migrate_one_at_a_time(database_url: str) -> None:
    """Each replica's entrypoint runs `vpp-aggregator migrate` on start; four at once on a new
    database all succeed, and the schema is created once (without the lock, the later ones
    failed on tables the first had just created)."""
    command = [sys.executable, "-c", "from vpp_aggregator.cli import app; app()", "migrate"]
    env = {**os.environ, "DATABASE_URL": database_url}
    replicas = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in replicas]
    assert [p.returncode for p in replicas] == [0] * 4, outputs
    assert current_revision(make_engine(database_url)) == head_revision()


def test_resource_round_trip(repo: Repository) -> None:
    r = ev(
        "ev-9",
        departure_schedule=(
            RecurringDeparture(("mon",), "07:30", "17:00", 80, "America/New_York"),
        ),
        trips=(Trip(NOW + timedelta(days=1), None, 90),),
        created_at=NOW,
        updated_at=NOW,
    )
    repo.add(r)
    got = repo.get("ev-9")
    assert got == r
    with pytest.raises(DuplicateResourceError):
        repo.add(r)
    items, total = repo.list(resource_type="EV")
    assert total == 1 and items[0].resource_id == "ev-9"


def test_history_keeps_every_sample_once(repo: Repository) -> None:
    repo.add(bess("b1", created_at=NOW, updated_at=NOW))
    ts = np.array([NOW.timestamp() - 60, NOW.timestamp(), NOW.timestamp() - 30])
    for _ in range(2):  # a replayed batch is not stored twice
        repo.insert_samples(
            ["b1", "b1", "b1"],
            ts,
            np.array([40.0, 60.0, 50.0]),
            np.array([True, True, False]),
            np.array([-5.0, 0.0, 3.5]),
            NOW,
        )
    assert repo.count_samples("b1") == 3
    replay = sorted(
        repo.samples_received_since(NOW - timedelta(seconds=1)), key=lambda s: s.timestamp
    )
    assert [s.soc_pct for s in replay] == [40.0, 50.0, 60.0]
    assert replay[-1].timestamp == NOW and replay[-1].plugged_in is True
    assert list(repo.samples_received_since(NOW + timedelta(seconds=1))) == []


def test_the_forecast_reads_the_stored_history_in_small_chunks_with_exact_times(
    repo: Repository,
) -> None:
    """After a start the forecast folds the stored history in beside the API: every sample of
    the window once, its time to the microsecond, in chunks of the size asked."""
    repo.add(bess("b1", created_at=NOW, updated_at=NOW))
    ts = NOW.timestamp() - np.arange(7) * 600.0 - 0.123456  # one outside the window below
    plugged = np.arange(7) % 2 == 0
    repo.insert_samples(["b1"] * 7, ts, np.arange(7) + 40.0, plugged, np.zeros(7), NOW)
    chunks = list(repo.history_chunks(NOW - timedelta(seconds=3600), NOW, size=4))
    assert [len(c[0]) for c in chunks] == [4, 2]
    got = sorted(zip(*(np.concatenate([c[k] for c in chunks]) for k in (1, 2, 3)), strict=True))
    want = sorted(zip(ts[:6], plugged[:6], np.arange(6) + 40.0, strict=True))
    assert [(round(t, 6), bool(p), s) for t, p, s in got] == [
        (round(t, 6), bool(p), s) for t, p, s in want
    ]


def test_samples_of_ids_of_every_length_and_script_are_stored_exactly(repo: Repository) -> None:
    """PostgreSQL's COPY buffer groups rows by the byte length of their id: nothing is mixed up."""
    ids = ["b1", "bess-東京-2", "b-10", "bé"]
    for rid in ids:
        repo.add(bess(rid, created_at=NOW, updated_at=NOW))
    order = [0, 1, 2, 3, 2, 0]
    t = NOW.timestamp()
    repo.insert_samples(
        [ids[i] for i in order],
        np.array([t - 50 + k for k in range(len(order))]),
        np.array([10.0 + k for k in range(len(order))]),
        np.array([k % 2 == 0 for k in range(len(order))]),
        np.array([-1.5 * k for k in range(len(order))]),
        NOW,
    )
    stored = sorted(
        (s.resource_id, s.timestamp.timestamp(), s.soc_pct, s.plugged_in, s.power_kw)
        for s in repo.samples_received_since(NOW - timedelta(seconds=1))
    )
    assert stored == sorted(
        (ids[i], t - 50 + k, 10.0 + k, k % 2 == 0, -1.5 * k) for k, i in enumerate(order)
    )


def test_latest_snapshot_never_goes_back_in_time(repo: Repository) -> None:
    t = NOW.timestamp()
    repo.upsert_latest(
        ["b1", "b2"],
        np.array([t, t]),
        np.array([60.0, 70.0]),
        np.array([True, False]),
        np.array([0.0, 1.0]),
        NOW,
    )
    repo.upsert_latest(
        ["b1"],
        np.array([t - 10]),
        np.array([10.0]),
        np.array([True]),
        np.array([0.0]),
        NOW + timedelta(seconds=10),
    )
    latest = {s.resource_id: s for s in repo.latest_samples()}
    assert latest["b1"].soc_pct == 60.0 and latest["b2"].plugged_in is False
    assert repo.last_snapshot_at() == NOW + timedelta(seconds=10)


def test_a_snapshot_larger_than_a_formatting_block_keeps_every_timestamp(
    repo: Repository,
) -> None:
    """Timestamps are formatted in blocks for SQLite (a million at once held every other thread
    for 0.6 s): across the blocks' edges each resource keeps its own, to the microsecond."""
    n = STAMP_BLOCK * 2 + 7
    ids = [f"r{i}" for i in range(n)]
    ts = NOW.timestamp() + np.arange(n) * 1.000001
    repo.upsert_latest(
        ids, ts, np.full(n, 50.0), np.ones(n, dtype=bool), np.zeros(n), NOW + timedelta(days=1)
    )
    latest = {s.resource_id: s.timestamp for s in repo.latest_samples()}
    for i in (0, STAMP_BLOCK - 1, STAMP_BLOCK, 2 * STAMP_BLOCK, n - 1):
        expected = datetime.fromtimestamp(round(ts[i] * 1e6) / 1e6, tz=UTC)
        assert latest[f"r{i}"] == expected


def test_sqlite_synchronous_is_what_the_setting_asks(tmp_path: Path) -> None:
    """`VPP_SQLITE_SYNCHRONOUS`: "normal" by default (WAL syncs at checkpoints), "off" for a
    store thrown away at the end (a replay's); anything else is refused before it reaches the
    PRAGMA, by the settings and by the engine."""
    url = f"sqlite:///{tmp_path / 'v.db'}"

    def read_back(engine: Engine) -> int:
        with engine.connect() as conn:
            level = int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
        engine.dispose()
        return level

    assert load_settings().sqlite_synchronous == "normal"
    assert read_back(make_engine(url)) == 1  # SQLite's number for NORMAL
    for name, level in (("off", 0), ("normal", 1), ("full", 2)):
        setting = load_settings(VPP_SQLITE_SYNCHRONOUS=name).sqlite_synchronous
        assert read_back(make_engine(url, setting)) == level
    with pytest.raises(ConfigError, match="VPP_SQLITE_SYNCHRONOUS"):
        load_settings(VPP_SQLITE_SYNCHRONOUS="off; DROP TABLE resources")
    with pytest.raises(ValueError, match="not one of"):
        make_engine(url, "off; DROP TABLE resources")  # type: ignore[arg-type]

"""Telemetry history built for volume, on SQLite and PostgreSQL: bulk writes (binary COPY on
PostgreSQL) into day partitions, replays stored once, and the retention that drops raw days
only after their five-minute series is kept, so settlement reads the same energy from it."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api_helpers import ev_body
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.store.database import make_engine, migrate
from vpp_aggregator.adapters.store.market_repository import ID_BLOCK, MarketRepository
from vpp_aggregator.adapters.store.repository import Repository
from vpp_aggregator.adapters.store.tables import telemetry_samples
from vpp_aggregator.adapters.store.telemetry_daily import TelemetryDaily
from vpp_aggregator.adapters.store.telemetry_partitions import PartitionBusyError
from vpp_aggregator.app.telemetry_retention import TelemetryRetention
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.metering import energy_in

DAY0 = date(2026, 10, 1)
IDS = ["ev-1", "bus-ü-2", "bess-3"]  # a non-ASCII id: COPY counts its bytes, not characters
HOLD_S = 300.0


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _report(repo: Repository, days: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A sample every 2 minutes (ev-1 skips an hour a day) for `days` days, in batches that
    cross midnight; returns what was sent per resource."""
    sent: dict[str, tuple[list[float], list[float]]] = {r: ([], []) for r in IDS}
    rng = np.random.default_rng(7)
    t = np.arange(_midnight(DAY0), _midnight(DAY0 + timedelta(days=days)), 120.0)
    for chunk in np.array_split(t, 7):
        ids, ts, kw = [], [], []
        for i, rid in enumerate(IDS):
            keep = chunk if rid != "ev-1" else chunk[(chunk % 86_400) // 3600 != 13]
            p = rng.uniform(-11, 7, keep.size) * (i + 1)
            ids += [rid] * keep.size
            ts.append(keep)
            kw.append(p)
            sent[rid][0].extend(keep.tolist())
            sent[rid][1].extend(p.tolist())
        tsa, kwa = np.concatenate(ts), np.concatenate(kw)
        repo.insert_samples(ids, tsa, np.full(tsa.size, 55.5), kwa < 0, kwa, datetime.now(UTC))
    return {r: (np.array(a), np.array(b)) for r, (a, b) in sent.items()}


@pytest.fixture
def stores(database_url: str) -> tuple[Repository, MarketRepository, TelemetryDaily]:
    engine = make_engine(database_url)
    migrate(engine)
    repo = Repository(engine)
    return repo, MarketRepository(engine), TelemetryDaily(engine, repo.partitions)


def test_samples_land_whole_and_a_replayed_batch_is_stored_once(
    stores: tuple[Repository, MarketRepository, TelemetryDaily], database_url: str
) -> None:
    repo, market, _ = stores
    sent = _report(repo, days=3)
    assert repo.count_samples() == sum(v[0].size for v in sent.values())
    # a worker that crashed before committing its offsets sends the batch again, plus a new one
    ts = np.array([_midnight(DAY0) + 240.0, _midnight(DAY0 + timedelta(days=9)) + 60.0])
    repo.insert_samples(
        ["bus-ü-2", "bus-ü-2"],
        ts,
        np.array([1.0, 2.0]),
        np.array([True, False]),
        np.array([5.0, 6.0]),
        datetime.now(UTC),
    )
    assert repo.count_samples() == sum(v[0].size for v in sent.values()) + 1
    got = market.power_history(
        ["bus-ü-2"], datetime.fromtimestamp(ts[0], UTC), datetime.fromtimestamp(ts[0] + 1, UTC)
    )
    assert got["bus-ü-2"][1].tolist() == pytest.approx([sent["bus-ü-2"][1][2]])  # not replaced
    if database_url.startswith("postgresql"):
        days = repo.partitions.existing()
        assert days == [DAY0 + timedelta(days=k) for k in (0, 1, 2, 9)]  # one table per UTC day


def test_retention_keeps_each_days_series_before_dropping_its_samples(
    stores: tuple[Repository, MarketRepository, TelemetryDaily], database_url: str
) -> None:
    repo, market, daily = stores
    sent = _report(repo, days=6)
    clock = lambda: datetime.combine(DAY0 + timedelta(days=6), datetime.min.time(), UTC)  # noqa: E731
    job = TelemetryRetention(daily, clock, raw_days=3, series_days=30, hold_s=HOLD_S)
    result = job.run()
    # days 0..3 rolled up (3 is the first day kept raw); days before 3 are gone
    assert result["rolled_up"] == [(DAY0 + timedelta(days=k)).isoformat() for k in range(4)]
    assert daily.rolled_through() == DAY0 + timedelta(days=4)
    first_kept = _midnight(DAY0 + timedelta(days=3))
    with repo.engine.connect() as conn:
        oldest = conn.execute(select(func.min(telemetry_samples.c.ts))).scalar_one()
    assert oldest.timestamp() == pytest.approx(first_kept)
    if database_url.startswith("postgresql"):
        assert repo.partitions.existing()[0] == DAY0 + timedelta(days=3)
    # the kept series is the energy the samples held, interval by interval
    series = market.daily_energy(IDS, DAY0, DAY0 + timedelta(days=3), 300.0)
    for rid in IDS:
        at, kwh, covered = series[rid]
        assert at.size == 4 * 288
        ts, kw = sent[rid]
        want_kwh, want_cov = energy_in(ts, kw, at, at + 300.0, HOLD_S)
        assert kwh == pytest.approx(want_kwh, abs=2e-5 * np.abs(want_kwh).max())
        assert covered == pytest.approx(np.round(want_cov))
    # ev-1's missing hour each day is reported as not covered, not as zero power
    assert series["ev-1"][2][13 * 12 + 1] == 0.0
    # running again the same day changes nothing; later the series ages out too
    assert job.run()["rolled_up"] == []
    later = TelemetryRetention(
        daily, lambda: clock() + timedelta(days=40), raw_days=3, series_days=30, hold_s=HOLD_S
    )
    later.run()
    assert market.daily_energy(IDS, DAY0, DAY0 + timedelta(days=5), 300.0) == {}
    assert repo.count_samples() == 0


def test_settlement_reads_every_members_samples_and_finds_those_that_came_late(
    stores: tuple[Repository, MarketRepository, TelemetryDaily],
) -> None:
    """Settlement's two reads go straight through the driver: every member's samples, sorted,
    also for more members than one query takes; and the samples received after a day was
    measured, by when they were taken."""
    repo, market, _ = stores
    ids = [f"ev-{k:05d}" for k in range(ID_BLOCK + 7)]  # two queries' worth
    t0 = _midnight(DAY0)
    first = datetime.fromtimestamp(t0 + 3 * 86_400, UTC)
    ts = np.repeat([t0 + 3_600.0, t0 + 60.0], len(ids))  # stored out of time order
    kw = np.arange(ts.size, dtype=np.float64)
    repo.insert_samples(ids * 2, ts, np.full(ts.size, 50.0), kw > 0, kw, first)
    got = market.power_history(
        ids, datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t0 + 86_400, UTC)
    )
    assert len(got) == len(ids)
    last = len(ids) - 1
    assert got[ids[last]][0].tolist() == [t0 + 60.0, t0 + 3_600.0]
    assert got[ids[last]][1].tolist() == [float(2 * len(ids) - 1), float(last)]
    # a sample of day 0 that comes a day after the rest; one of day 1 at the same time
    late = datetime.fromtimestamp(t0 + 4 * 86_400, UTC)
    repo.insert_samples(
        ["ev-00003", "ev-00004"],
        np.array([t0 + 7_200.0, t0 + 86_400.0 + 60.0]),
        np.array([50.0, 50.0]),
        np.array([True, True]),
        np.array([1.0, 1.0]),
        late,
    )
    day0 = (datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t0 + 86_400, UTC))
    assert market.received_since(late, *day0) == [("ev-00003", t0 + 7_200.0)]
    assert len(market.received_since(first, *day0)) == 2 * len(ids) + 1
    assert market.received_since(late + timedelta(seconds=1), *day0) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_long_reader_of_the_history_never_stalls_ingest(
    stores: tuple[Repository, MarketRepository, TelemetryDaily],
) -> None:
    """Making a day's partition locks the whole table and waits for every open transaction that
    read it (a report, a polling script). The next days are made ahead, so samples go in beside
    such a reader; a day not made ahead fails with the cause after a few seconds instead of
    holding every insert behind it, and goes in once the reader is done."""
    repo, _, daily = stores
    clock = lambda: datetime.combine(DAY0, datetime.min.time(), UTC) + timedelta(hours=9)  # noqa: E731
    job = TelemetryRetention(daily, clock, raw_days=3, series_days=30, hold_s=HOLD_S)
    assert job.prepare_ahead() == [DAY0 + timedelta(days=k) for k in range(3)]
    assert repo.partitions.existing() == [DAY0 + timedelta(days=k) for k in range(3)]

    def insert(day: date, outcome: list[BaseException | None]) -> None:
        try:
            ts = np.array([_midnight(day) + 60.0, _midnight(day) + 120.0])
            ones = np.ones(2)
            repo.insert_samples(["ev-1", "ev-1"], ts, ones, ones > 0, ones, datetime.now(UTC))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    def insert_within(day: date, wait_s: float = 120.0) -> BaseException | None:
        outcome: list[BaseException | None] = []
        worker = threading.Thread(target=insert, args=(day, outcome), daemon=True)
        worker.start()
        worker.join(wait_s)
        assert outcome, f"samples of {day} still waiting after {wait_s} s"
        return outcome[0]

    with repo.engine.connect() as reader:  # its transaction stays open, as a report's does
        reader.execute(select(func.count()).select_from(telemetry_samples)).scalar_one()
        assert insert_within(DAY0 + timedelta(days=1)) is None
        late = insert_within(DAY0 + timedelta(days=5))
        assert isinstance(late, PartitionBusyError)
        assert "pg_stat_activity" in str(late)
    assert insert_within(DAY0 + timedelta(days=5)) is None
    assert repo.count_samples() == 4


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_late_sample_behind_a_long_reader_is_refused_for_now_with_the_cause(
    database_url: str,
) -> None:
    """Over HTTP, a sample of a day that has no partition yet (one from before the service ran)
    behind a long reader: 503 with the cause and a Retry-After, nothing stored; once the reader
    is done, the same batch goes in."""
    settings = load_settings(DATABASE_URL=database_url)
    with TestClient(create_app(settings)) as client:
        client.post("/resources/register", json=ev_body("ev-late")).raise_for_status()
        old = (datetime.now(UTC) - timedelta(days=12)).replace(microsecond=0)
        batch = {
            "samples": [
                {
                    "resource_id": "ev-late",
                    "timestamp": old.isoformat(),
                    "soc_pct": 60.0,
                    "plugged_in": True,
                    "power_kw": 0.0,
                }
            ]
        }
        engine = make_engine(database_url)
        with engine.connect() as reader:
            reader.execute(select(func.count()).select_from(telemetry_samples)).scalar_one()
            refused = client.post("/telemetry", json=batch)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            assert "pg_stat_activity" in refused.json()["detail"]
        assert client.post("/telemetry", json=batch).status_code == 200
        assert Repository(engine).count_samples() == 1

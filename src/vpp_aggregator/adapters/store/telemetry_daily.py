"""The long-kept telemetry: per resource and UTC day, its five-minute energy series, and the
raw-history retention that makes room for it (day partitions dropped on PostgreSQL, rows
deleted on SQLite)."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, String, delete, insert, select, type_coerce

from vpp_aggregator.adapters.store.tables import (
    epoch_seconds,
    param_mark,
    service_meta,
    telemetry_daily,
    telemetry_samples,
)
from vpp_aggregator.adapters.store.telemetry_partitions import DailyPartitions

ROLLED_THROUGH = "telemetry_rolled_through"  # days before it have their series stored
RAW_FROM = "telemetry_raw_from"  # raw samples before it are gone


def _meta(engine: Engine, key: str) -> date | None:
    with engine.connect() as conn:
        value = conn.execute(
            select(service_meta.c.value).where(service_meta.c.key == key)
        ).scalar_one_or_none()
    return date.fromisoformat(value) if value else None


def _set_meta(engine: Engine, key: str, day: date) -> None:
    with engine.begin() as conn:
        conn.execute(delete(service_meta).where(service_meta.c.key == key))
        conn.execute(insert(service_meta).values(key=key, value=day.isoformat()))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class TelemetryDaily:
    def __init__(self, engine: Engine, partitions: DailyPartitions | None = None) -> None:
        self.engine = engine
        self.partitions = partitions if engine.dialect.name == "postgresql" else None

    # ------------------------------------------------------------------ state of the history
    def rolled_through(self) -> date | None:
        return _meta(self.engine, ROLLED_THROUGH)

    def raw_from(self) -> date | None:
        return _meta(self.engine, RAW_FROM)

    def oldest_raw_day(self) -> date | None:
        if self.partitions is not None:
            days = self.partitions.existing()
            return days[0] if days else None
        with self.engine.connect() as conn:
            first = conn.execute(
                select(telemetry_samples.c.ts).order_by(telemetry_samples.c.ts).limit(1)
            ).scalar()
        return first.astimezone(UTC).date() if first is not None else None

    # ------------------------------------------------------------------ rolling up
    def day_samples(
        self, day: date, lead_s: float, size: int = 200_000
    ) -> Iterator[tuple[str, NDArray[np.float64], NDArray[np.float64]]]:
        """Each resource's samples (epoch s, kW) from `lead_s` before the day to its end,
        one resource at a time, in time order. Read as columns, `size` rows at a time (the
        times as stored, parsed at once: a datetime per row cost most of a day's roll-up)."""
        t = telemetry_samples
        start = _midnight(day) - timedelta(seconds=lead_s)
        stamp = type_coerce(t.c.ts, String) if self.engine.dialect.name == "sqlite" else t.c.ts
        q = (
            select(t.c.resource_id, stamp, t.c.power_kw)
            .where(t.c.ts >= start, t.c.ts < _midnight(day + timedelta(days=1)))
            .order_by(t.c.resource_id, t.c.ts)
        )
        current: str | None = None  # the resource whose samples may go on in the next rows
        ts: builtins.list[NDArray[np.float64]] = []
        kw: builtins.list[NDArray[np.float64]] = []
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=size).execute(q)
            while rows := result.fetchmany(size):
                ids, stamps, power = zip(*rows, strict=True)
                at, p = epoch_seconds(stamps), np.array(power, dtype=np.float64)
                cuts = [0, *(i for i in range(1, len(ids)) if ids[i] != ids[i - 1]), len(ids)]
                for a, b in itertools.pairwise(cuts):
                    if ids[a] != current:
                        if current is not None:
                            yield current, np.concatenate(ts), np.concatenate(kw)
                        current, ts, kw = ids[a], [], []
                    ts.append(at[a:b])
                    kw.append(p[a:b])
        if current is not None:
            yield current, np.concatenate(ts), np.concatenate(kw)

    def write_day(
        self, day: date, rows: Sequence[tuple[str, NDArray[np.float32], NDArray[np.uint16], int]]
    ) -> None:
        """Store (replacing) the day's series of these resources; two processes rolling up
        the same day write the same rows, so neither fails."""
        if not rows:
            return
        mark = param_mark(self.engine.dialect.name)
        sql = (
            "INSERT INTO telemetry_daily (day, resource_id, energy_kwh, covered_s, samples) "
            f"VALUES ({', '.join([mark] * 5)}) ON CONFLICT (day, resource_id) DO UPDATE SET "
            "energy_kwh = excluded.energy_kwh, covered_s = excluded.covered_s, "
            "samples = excluded.samples"
        )
        key = day.isoformat()
        values = [
            (key, rid, kwh.astype("<f4").tobytes(), cov.astype("<u2").tobytes(), n)
            for rid, kwh, cov, n in rows
        ]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql, values)

    def mark_rolled_through(self, day: date) -> None:
        _set_meta(self.engine, ROLLED_THROUGH, day)

    # ------------------------------------------------------------------ retention
    def prepare_raw_days(self, days: Sequence[date]) -> None:
        if self.partitions is not None:
            self.partitions.ensure(days)

    def drop_raw_before(self, day: date) -> None:
        _set_meta(self.engine, RAW_FROM, day)  # first: a reader never trusts a gone day
        if self.partitions is not None:
            self.partitions.drop_before(day)
            return
        with self.engine.begin() as conn:
            conn.execute(delete(telemetry_samples).where(telemetry_samples.c.ts < _midnight(day)))

    def drop_series_before(self, day: date) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(telemetry_daily).where(telemetry_daily.c.day < day.isoformat()))

    # ------------------------------------------------------------------ reading
    def daily_energy(
        self, resource_ids: Sequence[str], first: date, last: date, interval_s: float
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]]:
        """Per resource, its stored five-minute intervals from `first` to `last` (UTC days,
        inclusive): interval starts (epoch s), kWh (positive = export), seconds covered."""
        d = telemetry_daily
        found: dict[str, builtins.list[tuple[str, bytes, bytes]]] = {}
        ids = builtins.list(resource_ids)
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 10_000):
                q = select(d.c.resource_id, d.c.day, d.c.energy_kwh, d.c.covered_s).where(
                    d.c.resource_id.in_(ids[i : i + 10_000]),
                    d.c.day >= first.isoformat(),
                    d.c.day <= last.isoformat(),
                )
                for rid, day, kwh, cov in conn.execute(q):
                    found.setdefault(rid, []).append((day, kwh, cov))
        out = {}
        for rid, days in found.items():
            days.sort()
            starts = np.concatenate(
                [
                    _midnight(date.fromisoformat(day)).timestamp()
                    + interval_s * np.arange(len(kwh) // 4)
                    for day, kwh, _ in days
                ]
            )
            out[rid] = (
                starts,
                np.concatenate([np.frombuffer(k, "<f4") for _, k, _ in days]).astype(np.float64),
                np.concatenate([np.frombuffer(c, "<u2") for _, _, c in days]).astype(np.float64),
            )
        return out

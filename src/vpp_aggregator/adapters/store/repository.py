"""Registry and telemetry history persistence (SQLAlchemy Core for bulk speed)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import psycopg.errors
from numpy.typing import NDArray
from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from vpp_aggregator.adapters.store.history_reads import HistoryReads
from vpp_aggregator.adapters.store.pg_copy import COLUMNS as COPY_COLUMNS
from vpp_aggregator.adapters.store.pg_copy import telemetry_copy_buffer
from vpp_aggregator.adapters.store.resource_rows import resource_from_row, resource_row
from vpp_aggregator.adapters.store.tables import (
    STAMP_BLOCK,
    driver_stamps,
    param_mark,
    resources,
    service_meta,
    telemetry_latest,
)
from vpp_aggregator.adapters.store.telemetry_partitions import DailyPartitions
from vpp_aggregator.app.errors import DuplicateResourceError
from vpp_aggregator.app.ports import StoredSample
from vpp_aggregator.domain.resources import (
    Resource,
    ResourceStatus,
)


class Repository(HistoryReads):
    """All SQL lives here; callers see domain objects."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self.partitions = DailyPartitions(engine)

    # ------------------------------------------------------------- registry
    def add(self, resource: Resource) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(resources).values(**resource_row(resource)))
        except IntegrityError as exc:
            raise DuplicateResourceError(resource.resource_id) from exc

    def add_many(self, items: Sequence[Resource]) -> None:
        """Bulk registration (simulator and benchmarks); all or nothing."""
        if not items:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(resources), [resource_row(r) for r in items])
        except IntegrityError as exc:
            raise DuplicateResourceError("one of the resources") from exc

    def save(self, resource: Resource) -> None:
        values = resource_row(resource)
        rid = values.pop("resource_id")
        values.pop("created_at")
        with self.engine.begin() as conn:
            conn.execute(update(resources).where(resources.c.resource_id == rid).values(**values))

    def get(self, resource_id: str) -> Resource | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(resources).where(resources.c.resource_id == resource_id)
            ).first()
        return resource_from_row(row) if row else None

    def list(
        self,
        *,
        resource_type: str | None = None,
        grid_node: str | None = None,
        fleet_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Resource], int]:
        conds = []
        if resource_type:
            conds.append(resources.c.resource_type == resource_type)
        if grid_node:
            conds.append(resources.c.grid_node == grid_node)
        if fleet_id:
            conds.append(resources.c.fleet_id == fleet_id)
        if status:
            conds.append(resources.c.status == status)
        where = and_(*conds) if conds else None
        q = select(resources).order_by(resources.c.resource_id).limit(limit).offset(offset)
        cq = select(func.count()).select_from(resources)
        if where is not None:
            q, cq = q.where(where), cq.where(where)
        with self.engine.connect() as conn:
            items = [resource_from_row(r) for r in conn.execute(q)]
            total = int(conn.execute(cq).scalar_one())
        return items, total

    def live_resources(self) -> Iterable[Resource]:
        """Everything not deactivated, streamed (for rebuilding live state at start-up)."""
        q = select(resources).where(resources.c.status != ResourceStatus.INACTIVE.value)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=10_000).execute(q):
                yield resource_from_row(row)

    # ------------------------------------------------------------- telemetry
    def _stamps(self, timestamp_s: NDArray[np.float64]) -> builtins.list[Any]:
        return driver_stamps(timestamp_s, self._dialect)

    def insert_samples(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        soc_pct: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        power_kw: NDArray[np.float64],
        received_at: datetime,
    ) -> None:
        """Append history; a replayed (resource, timestamp) sample is ignored, not duplicated.

        Goes straight to the driver's executemany: per-row ORM type processing cost more than
        the database itself on 10,000-sample batches.
        """
        if not resource_ids:
            return
        if self._dialect == "postgresql":
            self._copy_samples(
                resource_ids, timestamp_s, soc_pct, plugged_in, power_kw, received_at
            )
            return
        received = self._stamps(np.array([received_at.timestamp()]))[0]
        sql = (
            "INSERT OR IGNORE INTO telemetry_samples (ts, resource_id, soc_pct, plugged_in, "
            f"power_kw, received_at) VALUES ({self._marks(6)})"
        )
        rows: builtins.list[tuple[Any, ...]] = builtins.list(
            zip(
                self._stamps(timestamp_s),
                resource_ids,
                soc_pct.tolist(),
                plugged_in.tolist(),
                power_kw.tolist(),
                [received] * len(resource_ids),
                strict=True,
            )
        )
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql, rows)

    def _copy_samples(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        soc_pct: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        power_kw: NDArray[np.float64],
        received_at: datetime,
    ) -> None:
        """Binary COPY straight into the day partitions. COPY cannot skip duplicates, so a
        batch holding a sample stored before (a replay after a crash) goes again through a
        session-private staging table and `ON CONFLICT DO NOTHING`, at about twice the cost."""
        ts = np.asarray(timestamp_s, dtype=np.float64)
        days = np.unique(np.floor(ts / 86_400.0)).astype(np.int64).tolist()
        self.partitions.ensure(date(1970, 1, 1) + timedelta(days=d) for d in days)
        payload = telemetry_copy_buffer(
            resource_ids, ts, soc_pct, plugged_in, power_kw, received_at.timestamp()
        )
        try:
            stored = self._copy_straight_in(payload)
        except psycopg.errors.CheckViolation:  # a day's partition another process dropped
            self.partitions.forget()
            self.partitions.ensure(date(1970, 1, 1) + timedelta(days=d) for d in days)
            stored = False
        if not stored:  # a replay of samples stored before, or a retry once the partition is back
            with self.engine.begin() as conn:
                self._staged(conn, payload)
                conn.exec_driver_sql(
                    f"INSERT INTO telemetry_samples ({COPY_COLUMNS}) SELECT {COPY_COLUMNS} "
                    "FROM telemetry_staging ON CONFLICT (ts, resource_id) DO NOTHING"
                )

    def _copy_straight_in(self, payload: bytes) -> bool:
        """COPY into the partitions; False when the batch repeats a stored sample (COPY then
        stores none of it, and the caller goes through staging)."""
        try:
            sql = f"COPY telemetry_samples ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            with self.engine.begin() as conn, _cursor(conn) as cur, cur.copy(sql) as copy:
                copy.write(payload)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    @staticmethod
    def _staged(conn: Connection, payload: bytes) -> None:
        """COPY into this session's private staging table (emptied at commit), from which an
        INSERT … ON CONFLICT can do what COPY cannot: skip or update rows already stored."""
        with _cursor(conn) as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS telemetry_staging "
                "(LIKE telemetry_samples INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            with cur.copy(
                f"COPY telemetry_staging ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(payload)

    def _marks(self, n: int) -> str:
        return ", ".join([param_mark(self._dialect)] * n)

    def upsert_latest(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        soc_pct: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        power_kw: NDArray[np.float64],
        snapshot_at: datetime,
    ) -> None:
        """Store the newest sample per resource (never replacing a newer one) and the snapshot time."""
        if self._dialect == "postgresql" and len(resource_ids):
            payload = telemetry_copy_buffer(
                resource_ids, timestamp_s, soc_pct, plugged_in, power_kw, snapshot_at.timestamp()
            )
            with self.engine.begin() as conn:
                self._staged(conn, payload)
                conn.exec_driver_sql(
                    "INSERT INTO telemetry_latest (resource_id, ts, soc_pct, plugged_in, power_kw) "
                    "SELECT resource_id, ts, soc_pct, plugged_in, power_kw FROM telemetry_staging "
                    "ON CONFLICT (resource_id) DO UPDATE SET ts = excluded.ts, "
                    "soc_pct = excluded.soc_pct, plugged_in = excluded.plugged_in, "
                    "power_kw = excluded.power_kw WHERE excluded.ts > telemetry_latest.ts"
                )
                self._set_meta(conn, "latest_snapshot_at", snapshot_at.isoformat())
            return
        sql = (
            "INSERT INTO telemetry_latest (resource_id, ts, soc_pct, plugged_in, power_kw) "
            f"VALUES ({self._marks(5)}) ON CONFLICT (resource_id) DO UPDATE SET ts = excluded.ts, "
            "soc_pct = excluded.soc_pct, plugged_in = excluded.plugged_in, power_kw = excluded.power_kw "
            "WHERE excluded.ts > telemetry_latest.ts"
        )
        # In blocks freed one by one: a million rows at once are objects the GC walks under the GIL.
        with self.engine.begin() as conn:
            for a in range(0, len(resource_ids), STAMP_BLOCK):
                b = a + STAMP_BLOCK
                rows = builtins.list(
                    zip(
                        resource_ids[a:b],
                        self._stamps(timestamp_s[a:b]),
                        soc_pct[a:b].tolist(),
                        plugged_in[a:b].tolist(),
                        power_kw[a:b].tolist(),
                        strict=True,
                    )
                )
                conn.exec_driver_sql(sql, rows)
                del rows
            self._set_meta(conn, "latest_snapshot_at", snapshot_at.isoformat())

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        sql = (
            f"INSERT INTO service_meta (key, value) VALUES ({self._marks(2)}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        conn.exec_driver_sql(sql, [(key, value)])

    def last_snapshot_at(self) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(service_meta.c.value).where(service_meta.c.key == "latest_snapshot_at")
            ).scalar_one_or_none()
        return datetime.fromisoformat(value) if value else None

    def latest_samples(self) -> Iterable[StoredSample]:
        """The newest sample of every resource as of the last snapshot."""
        t = telemetry_latest
        q = select(t.c.resource_id, t.c.ts, t.c.soc_pct, t.c.plugged_in, t.c.power_kw)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=10_000).execute(q):
                yield StoredSample(
                    row.resource_id, row.ts, row.soc_pct, row.plugged_in, row.power_kw
                )

    # ------------------------------------------------------------- forecast inputs
    def upsert_weather(self, hours: Sequence[tuple[datetime, float | None, float | None]]) -> None:
        if not hours:
            return
        sql = (
            f"INSERT INTO forecast_weather (hour_utc, temperature_c, precipitation_mm) VALUES ({self._marks(3)}) "
            "ON CONFLICT (hour_utc) DO UPDATE SET temperature_c = excluded.temperature_c, "
            "precipitation_mm = excluded.precipitation_mm"
        )
        stamps = self._stamps(np.array([h[0].timestamp() for h in hours]))
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                sql, [(st, h[1], h[2]) for st, h in zip(stamps, hours, strict=True)]
            )

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")


def _cursor(conn: Connection) -> psycopg.Cursor[Any]:
    """psycopg's own cursor inside SQLAlchemy's transaction (COPY has no SQLAlchemy API)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw.cursor()

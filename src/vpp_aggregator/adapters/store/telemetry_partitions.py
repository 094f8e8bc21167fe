"""Daily partitions of `telemetry_samples` on PostgreSQL.

Each day's partition is made ahead of time (today and the next days, at the start and hourly)
and, failing that, when the first sample of its day arrives; it is dropped whole once the day is
older than the raw retention: dropping a table costs nothing, where deleting a day of a million
devices' samples would rewrite it.

Creating a partition locks the parent table against every reader and writer, and waits for any
open transaction that read it: a creation waiting behind a long report would stall all ingest
behind it. So it waits at most LOCK_WAIT_S and fails with the cause; the samples are retried."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from datetime import date, timedelta

import psycopg.errors
from sqlalchemy import Engine

PARENT = "telemetry_samples"
LOCK_WAIT_S = 5
_NAME = re.compile(rf"^{PARENT}_p(\d{{8}})$")


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


class PartitionBusyError(RuntimeError):
    """A day's partition could not be created: a transaction holds the telemetry table."""


class DailyPartitions:
    """Knows which days have a partition; creates the missing ones (safe against other
    processes creating the same day at the same moment)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._known: set[date] = set()
        self._lock = threading.Lock()

    def existing(self) -> list[date]:
        sql = (
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s"
        )
        with self.engine.connect() as conn:
            names = [r[0] for r in conn.exec_driver_sql(sql, (PARENT,))]
        days = []
        for name in names:
            m = _NAME.match(name)
            if m:
                days.append(date(int(m[1][:4]), int(m[1][4:6]), int(m[1][6:])))
        return sorted(days)

    def ensure(self, days: Iterable[date]) -> None:
        missing = set(days) - self._known
        if not missing:
            return
        with self._lock:
            self._known.update(self.existing())
            for day in sorted(missing - self._known):
                self._create(day)
                self._known.add(day)

    def forget(self) -> None:
        """Read the partitions again next time (another process may have dropped some)."""
        with self._lock:
            self._known.clear()

    def _create(self, day: date) -> None:
        sql = (
            f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {PARENT} "
            f"FOR VALUES FROM ('{day.isoformat()} 00:00+00') "
            f"TO ('{(day + timedelta(days=1)).isoformat()} 00:00+00')"
        )
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'")
                conn.exec_driver_sql(sql)
        except Exception as exc:  # another process created it between our check and ours
            cause = getattr(exc, "orig", exc)
            if isinstance(cause, psycopg.errors.LockNotAvailable):
                raise PartitionBusyError(
                    f"the {PARENT} partition of {day} is not there and could not be made: a "
                    f"transaction has held {PARENT} for over {LOCK_WAIT_S} s (see "
                    "pg_stat_activity); its samples are tried again"
                ) from exc
            if not isinstance(
                cause, psycopg.errors.UniqueViolation | psycopg.errors.DuplicateTable
            ):
                raise

    def drop_before(self, day: date) -> list[date]:
        """Drop every day's partition before `day`; the days dropped."""
        with self._lock:
            old = [d for d in self.existing() if d < day]
            for d in old:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {partition_name(d)}")
                self._known.discard(d)
            return old

"""Days a data set marks as missing (`suspect_gap` in its hourly table): a replay leaves them out
of every figure, so a data outage never counts as a vehicle that did not come."""

from __future__ import annotations

import csv
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo


def hourly_beside(sessions: Path) -> Path | None:
    """The hourly table stored beside a sessions file (`hourly_<site>.csv`), if there is one."""
    found = sorted(sessions.parent.glob("hourly_*.csv"))
    return found[0] if len(found) == 1 else None


def gap_days(hourly: Path | None, timezone: str) -> frozenset[date]:
    """Local dates with at least one hour flagged `suspect_gap` (none when the table has no
    such column, as the Norwegian one)."""
    if hourly is None or not hourly.is_file():
        return frozenset()
    zone = ZoneInfo(timezone)
    out: set[date] = set()
    with hourly.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if "suspect_gap" not in (reader.fieldnames or []):
            return frozenset()
        for row in reader:
            if row["suspect_gap"].strip().lower() == "true":
                hour = datetime.fromisoformat(row["hour_utc"].replace(" ", "T") + "+00:00")
                out.add(hour.astimezone(zone).date())
    return frozenset(out)

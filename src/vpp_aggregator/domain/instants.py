"""The span of time the service deals in: every instant it takes in lies within it.

A trip in the year 9999 with a -14:00 offset is year 10000 in UTC; stored, it broke every later
read of its resource. Telemetry from the year 1 was stored as history."""

from __future__ import annotations

from datetime import UTC, datetime

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = f"must lie between {EARLIEST:%Y} and {LATEST:%Y} (UTC)"


def instant_problem(value: datetime) -> str | None:
    """Why `value` cannot be taken in, or None."""
    if value.tzinfo is None or value.utcoffset() is None:
        return "needs a time zone offset, e.g. 2026-11-25T12:00:00Z"
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return OUT_OF_RANGE
    return None if EARLIEST <= utc < LATEST else OUT_OF_RANGE

"""Session and weather CSV readers, and the local calendar (time zone, public holidays)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from vpp_aggregator.domain.forecast.features import Weather
from vpp_aggregator.domain.forecast.series import HOUR, HourlySeries, hourly_from_sessions

REQUIRED = ("connect_time_utc", "disconnect_time_utc", "user_id")


class DataFileError(ValueError):
    """A data file is missing or lacks what the forecaster needs."""


def _ts(value: str) -> float:
    dt = datetime.fromisoformat(
        value.replace(" ", "T") if "T" not in value and ":" in value else value
    )
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def read_sessions(path: Path, timezone: str, site: str | None = None) -> HourlySeries:
    """Hourly plugged-in vehicles from a sessions CSV (columns as in shared/data/acn_caltech);
    `site` keeps one site of a multi-site file (its `site` column)."""
    if not path.is_file():
        raise DataFileError(f"sessions file not found: {path}")
    connect, disconnect = [], []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFileError(f"{path} lacks column(s) {', '.join(missing)}")
        for row in reader:
            if site is not None and row.get("site") != site:
                continue
            a, b = row["connect_time_utc"], row["disconnect_time_utc"]
            if a and b:
                connect.append(_ts(a))
                disconnect.append(_ts(b))
    if not connect:
        raise DataFileError(f"{path} holds no complete session")
    s, e = np.array(connect), np.array(disconnect)
    offset = ZoneInfo(timezone).utcoffset(
        datetime.fromtimestamp(float(np.median(s)), UTC).replace(tzinfo=None)
    )
    hours = (offset.total_seconds() / 3600.0) if offset is not None else 0.0
    return hourly_from_sessions(s, e, np.array([hours]))


def read_weather(path: Path, series: HourlySeries) -> Weather:
    """Hourly temperature and precipitation aligned with the series (column `hour_utc`)."""
    if not path.is_file():
        raise DataFileError(f"weather file not found: {path}")
    n = len(series)
    temp, rain = np.full(n, np.nan), np.full(n, np.nan)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            i = int((_ts(row["hour_utc"]) - series.start_ts) // HOUR)
            if 0 <= i < n:
                temp[i] = float(row["temperature"]) if row.get("temperature") else np.nan
                rain[i] = float(row["precipitation"]) if row.get("precipitation") else np.nan
    return Weather(temp, rain)


def read_weather_hours(path: Path) -> list[tuple[datetime, float | None, float | None]]:
    """Every hour of a weather CSV as (hour, temperature, precipitation), as operators store
    weather for the forecast (`ForecastInputs.add_weather`)."""
    if not path.is_file():
        raise DataFileError(f"weather file not found: {path}")
    out: list[tuple[datetime, float | None, float | None]] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            hour = datetime.fromtimestamp(_ts(row["hour_utc"]), UTC)
            temp = float(row["temperature"]) if row.get("temperature") else None
            rain = float(row["precipitation"]) if row.get("precipitation") else None
            out.append((hour, temp, rain))
    return out

"""The simulator's physical and replay constants, and where its data lives."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SITE_TZ = "America/Los_Angeles"  # the Caltech garage; driver schedules are local to it
_ZONE = ZoneInfo(SITE_TZ)
WEEK_S = 7 * 86_400.0
LOOP_WEEKS = 4  # each EV replays four consecutive real weeks of one driver, then repeats
LOOP_S = LOOP_WEEKS * WEEK_S
MIN_SESSIONS_PER_LOOP = 8  # a driver must plug in at least ~twice a week to be a fleet vehicle
MIN_SESSION_S = 10 * 60.0
MAX_SESSION_S = 48 * 3600.0
MAX_L2_AVG_KW = 12.0  # faster sessions are DC fast charges: a top-up, not a parked fleet vehicle
MERGE_GAP_S = 10 * 60.0  # re-plugs within this gap are one stay (no trip in between)
DRIVE_LEG_S = 45 * 60.0  # trip energy is spent in a commute leg after leaving and before arriving
DRIVE_FLOOR_PCT = 5.0  # a driver charges elsewhere before running the pack flat
MIN_EV_BATTERY_KWH = 50.0
CHARGE_EFFICIENCY = 0.92
TAPER_START_PCT = 85.0  # constant-current/constant-voltage taper above this SoC
BESS_TAU_H = 1.0  # BESS follows its daily target with this time constant
MAX_BATCH = 10_000
DISPATCH_STATUSES = ("active", "partial", "scheduled")  # open; scheduled only once started
MAX_DISPATCHES = 50  # followed per tick, at most (one detail fetch each, when revised)
SETPOINT_STALE_S = 60.0  # a plan not confirmed by the service for this long is dropped
DISPATCH_TIMEOUT_S = 5.0
_STRIDE = 4 * LOOP_S  # key spacing per EV in the flat session index (three loop copies fit)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


PACKAGED_DATA_DIR = Path(__file__).resolve().parents[1] / "demo_data"

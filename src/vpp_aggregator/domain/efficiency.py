"""Conversion losses between the grid connection and the cells (docs/concepts.md, "Efficiency").

`VPP_ROUND_TRIP_EFFICIENCY` (η) is one figure for charging and discharging together. It is split
evenly, √η each way: a kWh taken from the grid stores √η kWh in the cells, and a kWh delivered to
the grid draws 1/√η kWh from them. Capacity, the forecast and the dispatch problem all convert
with this one split, so what capacity promises is what dispatch plans with.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


def one_way_efficiency(round_trip_efficiency: float) -> float:
    """The efficiency of charging, and equally of discharging: √η."""
    return math.sqrt(round_trip_efficiency)


def soc_change_pct(
    power_kw: NDArray[np.float64],
    seconds: NDArray[np.float64],
    capacity_kwh: NDArray[np.float64],
    round_trip_efficiency: float,
) -> NDArray[np.float64]:
    """SoC change (percentage points) of holding `power_kw` (+ discharging) for `seconds`:
    a discharge draws power / √η from the cells, a charge stores power · √η."""
    one_way = one_way_efficiency(round_trip_efficiency)
    cells_kw = np.where(power_kw > 0, power_kw / one_way, power_kw * one_way)
    return np.asarray(-cells_kw * seconds / 3600.0 / capacity_kwh * 100.0)

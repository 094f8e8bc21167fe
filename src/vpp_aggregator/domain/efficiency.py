"""Conversion losses between the grid connection and the cells (docs/concepts.md, "Efficiency").

`VPP_ROUND_TRIP_EFFICIENCY` (η) is one figure for charging and discharging together. It is split
evenly, √η each way: a kWh taken from the grid stores √η kWh in the cells, and a kWh delivered to
the grid draws 1/√η kWh from them. Capacity, the forecast and the dispatch problem all convert
with this one split, so what capacity promises is what dispatch plans with.
"""

from __future__ import annotations

import math


def one_way_efficiency(round_trip_efficiency: float) -> float:
    """The efficiency of charging, and equally of discharging: √η."""
    return math.sqrt(round_trip_efficiency)

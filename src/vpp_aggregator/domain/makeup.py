"""Energy a day's offers keep back for what the aggregation's own members draw beyond the baseline.

Settlement pays baseline − metered load over every member, so while an award runs its dispatch
also makes up what members outside it draw beyond the baseline (`app/award_tracking`). Where a
vehicle must charge as soon as it arrives (a floor of its driver's whole need), that is the
morning's arrivals, and on a day with more of them than the baseline's like days had (the first
weeks after a break, a busy day) the batteries spend on it energy the day's offers had sold.
So the offers keep back what the last award days needed by each hour: at the offer's own
quantile, an offer at P10 keeps what nine days in ten needed at most.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

HOURS = 24


def reserve_by_hour(days_kwh: NDArray[np.float64], level: float) -> NDArray[np.float64]:
    """Per local hour of day, the energy to keep back by that hour's end: of each past award
    day's make-up (days, 24; kWh in each local hour), the running total over the day, and of
    those the `1 − level` quantile (an offer at P10 keeps the 90th percentile). Zero without
    days."""
    if days_kwh.size == 0:
        return np.zeros(HOURS)
    running = np.cumsum(np.maximum(days_kwh, 0.0), axis=1)
    return np.asarray(np.quantile(running, 1.0 - level, axis=0), dtype=np.float64)

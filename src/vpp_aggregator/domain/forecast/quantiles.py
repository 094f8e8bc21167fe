"""The quantile levels every capacity forecast answers, in one list.

The forecast, the offers (`VPP_OFFER_QUANTILE`), the settings and the replay all read `QUANTILES`;
a level added here appears in each of them. P5 to P50 are the offer levels whose trade-off between
delivery and offered capacity the replay measures; P90 is the top of the band.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

Quantile = Literal["p5", "p10", "p20", "p30", "p50", "p90"]
QUANTILES: tuple[Quantile, ...] = get_args(Quantile)  # rising levels
LEVELS = np.array([int(q[1:]) / 100.0 for q in QUANTILES])
Z = np.array([NormalDist().inv_cdf(level) for level in LEVELS])  # standard normal scores
MEDIAN = QUANTILES.index("p50")
# The levels a trained model fits boosters for; the others follow from them (`from_three`).
TRAINED = (0.1, 0.5, 0.9)


def column(q: Quantile) -> int:
    """Where quantile `q` sits in a forecast's (..., len(QUANTILES)) arrays."""
    return QUANTILES.index(q)


def from_three(
    p10: NDArray[np.float64], p50: NDArray[np.float64], p90: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Every level from a P10 <= P50 <= P90, as (rows, len(QUANTILES)): each side of the median
    is a normal law's half with its own width (below from P10, above from P90), so P10, P50 and
    P90 come back unchanged, the levels between interpolate and P5 extends the lower width.
    Non-decreasing across levels whenever the three are."""
    scale = Z / Z[column("p90")]  # -1 at P10, 0 at P50, +1 at P90
    mid = p50[:, None]
    below = mid + (mid - p10[:, None]) * scale[None, :]
    above = mid + (p90[:, None] - mid) * scale[None, :]
    return np.asarray(np.where(scale[None, :] < 0, below, above), dtype=np.float64)

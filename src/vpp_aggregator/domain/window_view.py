"""A capacity window's per-row contributions and per-group sums (see `fleet_capacity`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.capacity import (
    DISCHARGE_KW,
    DISCHARGE_KWH,
    N_AVAILABLE,
    N_COLUMNS,
    N_RESOURCES,
)

I8 = NDArray[np.int64]
F8 = NDArray[np.float64]
GroupTables = tuple[I8, list[str], list[str]]  # type, grid node, fleet of each group
N_COEF = N_COLUMNS + 2
# Of a row's coefficients, the counts (available, resource) are 0 or 1: a byte each, not a float.
COUNTS = [N_AVAILABLE, N_RESOURCES]
REALS = [k for k in range(N_COEF) if k not in COUNTS]


@dataclass(slots=True)
class WindowView:
    """Per-row linear contributions (intercept at t_ref, then the two discharge slopes), stored
    as `reals` (float64) and `counts` (uint8); `coef` gives them back as N_COEF float64."""

    window_s: float
    t_ref: float
    reals: NDArray[np.float64]  # (rows, len(REALS))
    counts: NDArray[np.uint8]  # (rows, len(COUNTS))
    next_change: F8
    group_sums: NDArray[np.float64]  # (groups, N_COEF)
    evaluated_at: float = -np.inf
    updates_since_rebuild: int = 0
    # Built a chunk at a time: rows from here on not evaluated yet; read once complete (None).
    unfilled_from: int | None = None
    # The last answer (version, evaluated_at, valid until, group_sums, group tables), read
    # without the lock while still exact (`FleetCapacity._published`).
    published: tuple[int, float, float, F8, GroupTables] | None = None
    # When a read last answered from this view (clock s): touches soon after are evaluated at
    # once, later ones left to the next read (`FleetCapacity._touch`).
    read_ts: float = -np.inf

    @classmethod
    def empty(cls, window_s: float, t_ref: float, rows: int, groups: int) -> WindowView:
        return cls(
            window_s,
            t_ref,
            np.zeros((rows, len(REALS))),
            np.zeros((rows, len(COUNTS)), dtype=np.uint8),
            np.full(rows, np.inf),
            np.zeros((groups, N_COEF)),
        )

    def coef(self, rows: I8 | slice) -> NDArray[np.float64]:
        """The rows' coefficients, (rows, N_COEF)."""
        reals = self.reals[rows]
        out = np.empty((reals.shape[0], N_COEF))
        out[:, REALS] = reals
        out[:, COUNTS] = self.counts[rows]
        return out

    def put(self, rows: I8 | slice, coef: NDArray[np.float64]) -> None:
        self.reals[rows] = coef[:, REALS]
        self.counts[rows] = coef[:, COUNTS]

    def resize(self, rows: int) -> None:
        old = self.reals.shape[0]
        reals, counts = np.zeros((rows, len(REALS))), np.zeros((rows, len(COUNTS)), np.uint8)
        reals[:old], counts[:old] = self.reals, self.counts
        nxt = np.full(rows, np.inf)
        nxt[:old] = self.next_change
        self.reals, self.counts, self.next_change = reals, counts, nxt

    def at(self, sums: NDArray[np.float64], ts: float) -> NDArray[np.float64]:
        """Evaluate summed coefficients at time `ts`."""
        values = sums[..., :N_COLUMNS].copy()
        dt = ts - self.t_ref
        values[..., DISCHARGE_KWH] += sums[..., N_COLUMNS] * dt
        values[..., DISCHARGE_KW] += sums[..., N_COLUMNS + 1] * dt
        return values

"""Closed-form rates of one resource with a budget of energy, for the fast allocator.

Setpoints sit on a one-minute grid and energy is counted by trapezoids, so from the present
point on a resource spends the plain sum of its setpoints (the half step back to the last
point is already booked): every plan below is a sum of a ramp and a hold, piecewise linear in
the rate, and inverts exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F8 = NDArray[np.float64]


def full_power_kwmin(m: F8 | float, full_ramp_j: F8, max_kw: F8, r: float) -> F8:
    """The most a resource can spend over the `m` points after this one and still be at zero
    at the plan end: sum of min(max_kw, r*j), j = 1..m (its ramp up is not counted)."""
    j = np.minimum(full_ramp_j, m)
    out = m - j
    out *= max_kw
    out += (0.5 * r) * j * (j + 1.0)
    return out


def hold_kw(budget: F8, m: F8 | float, r: float) -> F8:
    """The rate it can hold for the `m` points up to the plan end and then ramp down after it:
    q*m + q^2/(2r) = budget."""
    q = budget * (2.0 / r)
    q += m * m
    np.sqrt(q, out=q)
    q -= m
    q *= r
    return q


def planned_kw(budget: F8, m: F8 | float, r: float) -> F8:
    """The rate to hold now so that holding it and then ramping down spends exactly `budget`
    kW·min with the ramp-down ending at the plan end (M points from now): the setpoints
    min(q, r*j), j = M..1, sum to E(q) = r*J*(J+1)/2 + q*(M-J) with J = floor(q/r), piecewise
    linear, so it inverts exactly. A resource with more than E(r*M) (the pure ramp-down) cannot
    spend it all inside; it starts the ramp-down higher by x, ends the plan at x and ramps down
    after it: the excess is x*(M+1/2) + x^2/(2r), solved for x."""
    b = budget * (1.0 / r)  # in units of r: E(r*j) = j*(j+1)/2
    e_max = m * (m + 1.0) * 0.5
    two_m1 = 2.0 * m + 1.0
    disc = two_m1 * two_m1 - 8.0 * b
    np.maximum(disc, 0.0, out=disc)
    j = two_m1 - np.sqrt(disc)
    j *= 0.5
    np.floor(j, out=j)
    np.minimum(j, m - 1.0, out=j)
    np.maximum(j, 0.0, out=j)
    inside = b - j * (j + 1.0) * 0.5
    inside /= np.maximum(m - j, 1.0)
    half = m + 0.5
    extra = b - e_max
    np.maximum(extra, 0.0, out=extra)
    extra = np.sqrt(half * half + 2.0 * extra) - half
    extra += m
    q = np.where(b <= e_max, inside, extra)
    q *= r
    return q


def energy_kw(budget: F8, r: float) -> F8:
    """Highest q whose minute plus the quickest ramp back to zero (q-r, q-2r, ..., 0) fits in
    `budget` kW·min: that energy g(q) is piecewise linear in q and g(j*r) = r*j*(j+1)/2, so it
    inverts exactly."""
    j1 = budget * (8.0 / r)
    j1 += 1.0
    np.sqrt(j1, out=j1)
    j1 += 1.0
    j1 *= 0.5
    np.floor(j1, out=j1)  # j + 1
    q_energy = j1 - 1.0
    q_energy *= j1
    q_energy *= 0.5 * r
    q_energy += budget
    q_energy /= j1
    q_energy *= 1.0 - 1e-12
    return q_energy

"""The ramp rule's one profile: power comes down to zero at the limit, never faster or slower."""

from __future__ import annotations

import numpy as np

from vpp_aggregator.domain.ramps import ramp_down_kw, toward_zero_kw


def test_a_ramp_down_steps_at_the_limit_and_ends_at_zero() -> None:
    assert ramp_down_kw(25.0, 10.0).tolist() == [25.0, 15.0, 5.0, 0.0]
    assert ramp_down_kw(-7.0, 10.0).tolist() == [-7.0, 0.0]  # charging stops the same way
    assert ramp_down_kw(0.0, 10.0).tolist() == [0.0]


def test_power_toward_zero_broadcasts_over_a_fleet_and_minutes() -> None:
    now = np.array([[30.0], [-12.0], [0.0]])
    got = toward_zero_kw(now, 10.0, np.arange(4)[None, :])
    assert got.tolist() == [[30, 20, 10, 0], [-12, -2, 0, 0], [0, 0, 0, 0]]
    assert not np.signbit(got).any(where=got == 0)  # no negative zeros on the wire

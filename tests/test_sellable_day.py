"""A day-ahead day's offers capped so the whole day can be awarded (`market.sellable_kw`): every
prefix of the day holds the energy sold in it, the cut is shared fairly, and the answer comes
back whatever the day looks like (a day whose early hours run out of energy while its later
hours are held by their own power used to loop for ever and stop the offers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp_aggregator.domain.market import sellable_kw

pytestmark = pytest.mark.unit


def holds(x: np.ndarray, e: np.ndarray, h: np.ndarray, spent: float) -> bool:
    return bool((np.cumsum(x * h) + spent <= e + 1e-6).all())


def test_an_energy_short_morning_and_a_power_bound_evening() -> None:
    # The first hour holds 50 kWh; the second is held to 10 kW by its own power.
    x = sellable_kw(np.array([100.0, 10.0]), np.array([50.0, 1000.0]), np.ones(2))
    assert x.tolist() == pytest.approx([50.0, 10.0])


def test_the_cut_is_shared_by_the_hours_that_share_the_energy() -> None:
    x = sellable_kw(np.array([100.0, 10.0, 80.0]), np.array([50.0, 1000.0, 70.0]), np.ones(3))
    assert x.tolist() == pytest.approx([30.0, 10.0, 30.0])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 500), st.floats(0, 2000), st.sampled_from([0.25, 0.5, 1.0])),
        min_size=1,
        max_size=24,
    ),
    st.floats(0, 300),
    st.sampled_from([0.0, 100.0]),
)
def test_any_day_gets_an_offer_every_prefix_can_deliver(
    day: list[tuple[float, float, float]], spent: float, min_kw: float
) -> None:
    p, e, h = (np.array(c) for c in zip(*day, strict=True))
    x = sellable_kw(p, e, h, spent, min_kw)
    assert ((x >= 0) & (x <= p + 1e-9)).all()
    if holds(np.zeros_like(p), e, h, spent):  # a day that can hold anything holds its offer
        assert holds(x, e, h, spent)
    cut = x < p - 1e-9  # an interval cut below the market minimum is not offered at all
    assert ((x[cut] == 0) | (x[cut] >= min_kw - 1e-9)).all()

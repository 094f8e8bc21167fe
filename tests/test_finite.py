"""The fast `nan_to_num` of the per-minute paths answers as numpy's, NaN and infinities included."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vpp_aggregator.domain.finite import nan_to_num


@given(arrays(np.float64, st.integers(0, 12), elements=st.floats(allow_nan=True)))
def test_it_answers_as_numpy_and_leaves_its_input_alone(x: np.ndarray) -> None:
    before = x.copy()
    out = nan_to_num(x)
    assert np.array_equal(out, np.nan_to_num(x))
    assert out is not x
    assert np.array_equal(x, before, equal_nan=True)


def test_nan_becomes_the_value_asked_for() -> None:
    x = np.array([np.nan, 1.0, np.inf, -np.inf])
    out = nan_to_num(x, nan=50.0)
    assert out.tolist() == [50.0, 1.0, np.finfo(np.float64).max, -np.finfo(np.float64).max]

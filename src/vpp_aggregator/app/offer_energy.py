"""The energy rule every offer of a market's intervals offered together keeps: each interval
clears on its own and may be awarded, so what is sold up to each one must fit the energy the
fleet holds then (`domain/market.sellable_kw`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.market import OfferInputs, sellable_kw

# (kW held by dispatches, energy offer's inputs, regulation offer's inputs, forecast model)
Row = tuple[float, OfferInputs, OfferInputs, str]
Span = tuple[datetime, datetime, float]  # start, end, kW


def kwh_between(spans: list[Span], now: datetime, first: datetime) -> float:
    """The energy (kWh) `spans` of kW take between now and `first`."""
    return sum(
        kw * max(0.0, (min(e, first) - max(s, now)).total_seconds()) / 3600.0 for s, e, kw in spans
    )


def capped(
    rows: list[Row],
    spent_kwh: float,
    kept_kwh: NDArray[np.float64],
    min_kw: float,
) -> list[Row]:
    """Rows whose energy offers' power every interval can be awarded at together
    (`domain/market.sellable_kw`); the regulation inputs stay as they were."""
    hours = [
        (datetime.fromisoformat(x.end) - datetime.fromisoformat(x.start)).total_seconds() / 3600.0
        for _, x, _, _ in rows
    ]
    cap = sellable_kw(
        np.array([r[1].discharge_kw for r in rows]),
        np.array([r[1].discharge_kwh for r in rows]) - kept_kwh,
        np.array(hours),
        spent_kwh,
        min_kw,
    )
    return [
        (held, replace(x, discharge_kw=min(x.discharge_kw, float(c))), x, model)
        for (held, x, _, model), c in zip(rows, cap, strict=True)
    ]


def committed_around(
    commitments: list[Span],
    starts: list[datetime],
    ends: list[datetime],
    now: datetime,
    day_ends: list[datetime],
) -> NDArray[np.float64]:
    """Per interval [start, end): the energy (kWh) the commitments take between now and its
    start, and that of those beginning at or after its end and before its day's end."""
    return np.array(
        [
            kwh_between(commitments, now, start)
            + sum(
                kw * (e - s).total_seconds() / 3600.0
                for s, e, kw in commitments
                if end <= s < day_end
            )
            for start, end, day_end in zip(starts, ends, day_ends, strict=True)
        ]
    )

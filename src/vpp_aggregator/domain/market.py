"""Wholesale market maths under FERC Order 2222: offers per aggregation, delivered energy.

An offer sells what the fleet will deliver with high confidence: the forecast's low quantile
(P10 by default) of discharge power per grid node, only where the aggregation reaches the
market minimum. Delivered energy is measured from telemetry, sample-and-hold, so settlement
compares what was awarded with what the batteries actually exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired

import numpy as np
from numpy.typing import NDArray
from typing_extensions import TypedDict

from vpp_aggregator.domain.metering import interval_energy


class PriceSegment(TypedDict):
    mw: float
    price_per_mwh: float


class Offer(TypedDict):
    """An offer as the market gateway reads it (`asyncapi.yaml`, Offer); the service adds what
    the forecast and the running dispatches say (the `NotRequired` fields) before it is sent."""

    offer_id: str
    aggregation_id: str  # the grid node
    interval_start: str  # ISO-8601
    interval_end: str
    quantity_kw: float
    quantile: str
    min_power_kw: float
    max_power_kw: float
    max_charge_kw: float
    energy_limit_kwh: float
    ramp_rate_kw_per_min: float
    price_segments: list[PriceSegment]
    committed_kw: NotRequired[float]
    model: NotRequired[str]
    generated_at: NotRequired[str]


class OfferCurveError(ValueError):
    """The configured offer curve cannot be read."""


@dataclass(frozen=True, slots=True)
class OfferCurve:
    """Price steps: each (cumulative share of the offered quantity, $/MWh), rising."""

    steps: tuple[tuple[float, float], ...]

    @classmethod
    def parse(cls, text: str) -> OfferCurve:
        """`"0.5:35,1.0:80"`: the first half of the quantity at $35/MWh, the rest at $80/MWh."""
        steps = []
        try:
            for part in text.split(","):
                share, price = part.split(":")
                steps.append((float(share), float(price)))
        except ValueError:
            raise OfferCurveError(
                f"offer curve {text!r}: expected share:price pairs like 0.5:35,1.0:80"
            ) from None
        shares = [s for s, _ in steps]
        prices = [p for _, p in steps]
        if not steps or shares != sorted(shares) or shares[-1] != 1.0 or shares[0] <= 0:
            raise OfferCurveError(f"offer curve {text!r}: shares must rise to exactly 1.0")
        if prices != sorted(prices):
            raise OfferCurveError(f"offer curve {text!r}: prices must not fall (a supply curve)")
        return cls(tuple(steps))

    def segments(self, quantity_kw: float) -> list[PriceSegment]:
        out: list[PriceSegment] = []
        before = 0.0
        for share, price in self.steps:
            mw = (share - before) * quantity_kw / 1000.0
            if mw > 0:
                out.append({"mw": round(mw, 4), "price_per_mwh": price})
            before = share
        return out


@dataclass(frozen=True, slots=True)
class OfferInputs:
    """One aggregation in one market interval, from the capacity forecast."""

    aggregation_id: str  # the grid node
    start: str  # ISO-8601
    end: str
    discharge_kw: float  # at the offered quantile
    discharge_kwh: float
    charge_kw: float
    resources: float  # resources expected available at that quantile


def build_offer(
    x: OfferInputs,
    curve: OfferCurve,
    *,
    min_capacity_kw: float,
    ramp_kw_per_min_per_resource: float,
    quantile: str,
) -> Offer | None:
    """The offer for one aggregation and interval, or None below the market minimum.
    Inputs may be net of commitments and so below zero; they count as nothing."""
    quantity = max(0.0, float(x.discharge_kw))
    if quantity < min_capacity_kw:
        return None
    return {
        "offer_id": f"{x.aggregation_id}:{x.start}",
        "aggregation_id": x.aggregation_id,
        "interval_start": x.start,
        "interval_end": x.end,
        "quantity_kw": round(quantity, 3),
        "quantile": quantile,
        "min_power_kw": float(min_capacity_kw),
        "max_power_kw": round(quantity, 3),
        "max_charge_kw": round(max(0.0, float(x.charge_kw)), 3),
        "energy_limit_kwh": round(max(0.0, float(x.discharge_kwh)), 3),
        "ramp_rate_kw_per_min": round(
            max(0.0, float(x.resources)) * ramp_kw_per_min_per_resource, 3
        ),
        "price_segments": curve.segments(quantity),
    }


def delivered_kwh(
    timestamp_s: NDArray[np.float64],
    power_kw: NDArray[np.float64],
    start_s: float,
    end_s: float,
    hold_s: float,
) -> float:
    """Energy exported in [start, end) from one resource's samples (sorted by time), held as
    `domain/metering` holds them; negative power (charging) counts against it."""
    energy, _ = interval_energy(timestamp_s, power_kw, np.array([start_s, end_s]), hold_s)
    return float(energy.sum())


@dataclass(frozen=True, slots=True)
class AwardRefusal:
    """Why an award cannot be taken, naming the field at fault."""

    field: str
    message: str


def award_refusal(
    offer: dict[str, Any] | None,
    aggregation_id: str,
    interval: tuple[datetime, datetime],
    awarded_kw: float,
) -> AwardRefusal | None:
    """An award must clear what we offered: the interval of one of our offers, on the side
    offered, for more than nothing and at most the quantity offered. Offers sell discharge to
    the grid ("up", positive kW) only; charging ("down", negative kW) is never offered."""
    if offer is None:
        return AwardRefusal(
            "interval_start",
            f"{aggregation_id} offered nothing (0 kW) for an interval starting at "
            f"{interval[0].isoformat()}",
        )
    offered = float(offer["quantity_kw"])
    what = f"{offered:g} kW up (discharge) offered for {offer['interval_start']}"
    if interval[1] != datetime.fromisoformat(offer["interval_end"]):
        return AwardRefusal(
            "interval_end", f"the offered interval ends at {offer['interval_end']} ({what})"
        )
    if awarded_kw < 0:
        return AwardRefusal(
            "awarded_kw", f"{awarded_kw:g} kW is down (charging), which was not offered; {what}"
        )
    if awarded_kw == 0:
        return AwardRefusal("awarded_kw", f"must be more than 0 kW; {what}")
    if round(awarded_kw, 3) > offered:  # the offered quantity is rounded to watts
        return AwardRefusal("awarded_kw", f"{awarded_kw:g} kW is more than the {what}")
    return None

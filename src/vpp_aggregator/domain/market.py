"""Wholesale market maths under FERC Order 2222: two-sided offers per aggregation in the
day-ahead and real-time markets, and whether an award clears one.

An offer sells what the fleet will deliver with high confidence: the forecast's low quantile
(P10 by default) per grid node, as storage takes part in ISO markets (FERC Order 841; CAISO's
non-generator resource is the model) — one continuous range from full charge (negative kW) to
full discharge (positive), with its energy limits and state of charge. A side is offered only
where the aggregation reaches the market minimum on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, NotRequired
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray
from typing_extensions import TypedDict

from vpp_aggregator.domain.metering import interval_energy


class PriceSegment(TypedDict):
    mw: float
    price_per_mwh: float


class Market(StrEnum):
    DAY_AHEAD = "day_ahead"  # hourly intervals of the next operating days, before gate closure
    REAL_TIME = "real_time"  # 5-minute intervals, up to their gate closure


class Offer(TypedDict):
    """An offer as the market gateway reads it (`asyncapi.yaml`, Offer); the service adds what
    the forecast and the running dispatches say (the `NotRequired` fields) before it is sent."""

    offer_id: str
    market: str  # a Market
    product: str  # energy | regulation
    aggregation_id: str  # the grid node
    interval_start: str  # ISO-8601
    interval_end: str
    quantity_kw: float  # the discharge side, as max_power_kw
    quantile: str
    min_power_kw: float  # full charge: negative, or 0 when the charge side is not offered
    max_power_kw: float  # full discharge, or 0 when the discharge side is not offered
    max_charge_kw: float  # -min_power_kw
    energy_limit_kwh: float  # energy it can discharge, down to every floor
    charge_energy_limit_kwh: float  # energy it can take, up to every ceiling
    state_of_charge_kwh: float  # energy stored when offered
    ramp_rate_kw_per_min: float
    price_segments: list[PriceSegment]  # charge (negative mw) then discharge, price rising
    committed_kw: NotRequired[float]
    power_limit_kw: NotRequired[float]  # energy: the kW it and regulation share (see sellable_kw)
    model: NotRequired[str]
    generated_at: NotRequired[str]


class OfferCurveError(ValueError):
    """The configured offer curve cannot be read."""


@dataclass(frozen=True, slots=True)
class OfferCurve:
    """Price steps: each (cumulative share of the offered quantity, $/MWh), rising."""

    steps: tuple[tuple[float, float], ...]

    falling: bool = False  # a bid to charge: the more it takes, the lower the price it pays

    @classmethod
    def parse(cls, text: str, *, falling: bool = False) -> OfferCurve:
        """`"0.5:35,1.0:80"`: the first half of the quantity at $35/MWh, the rest at $80/MWh.
        A charge bid falls: `"0.5:20,1.0:5"` takes the first half at up to $20/MWh, the rest
        only at up to $5/MWh."""
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
        if falling and prices != sorted(prices, reverse=True):
            raise OfferCurveError(f"charge bid {text!r}: prices must not rise (a demand curve)")
        if not falling and prices != sorted(prices):
            raise OfferCurveError(f"offer curve {text!r}: prices must not fall (a supply curve)")
        return cls(tuple(steps), falling)

    def segments(self, quantity_kw: float) -> list[PriceSegment]:
        """Priced steps of the quantity, price rising; a charge bid's are negative MW."""
        out: list[PriceSegment] = []
        before = 0.0
        for share, price in self.steps:
            mw = (share - before) * quantity_kw / 1000.0
            if mw > 0:
                out.append({"mw": round(-mw if self.falling else mw, 4), "price_per_mwh": price})
            before = share
        return out[::-1] if self.falling else out


@dataclass(frozen=True, slots=True)
class OfferInputs:
    """One aggregation in one market interval: the forecast at the offered quantile, less what
    dispatches hold then, and its energy now."""

    aggregation_id: str  # the grid node
    start: str  # ISO-8601
    end: str
    discharge_kw: float
    discharge_kwh: float
    charge_kw: float
    resources: float  # resources expected available at that quantile
    charge_kwh: float = 0.0
    stored_kwh: float = 0.0


def build_offer(
    x: OfferInputs,
    curve: OfferCurve,
    *,
    min_capacity_kw: float,
    ramp_kw_per_min_per_resource: float,
    quantile: str,
    market: Market = Market.DAY_AHEAD,
    charge_bid: OfferCurve | None = None,
) -> Offer | None:
    """The offer for one aggregation and interval, or None when neither side reaches the market
    minimum. Inputs may be net of commitments and so below zero; they count as nothing."""
    up = max(0.0, float(x.discharge_kw))
    down = max(0.0, float(x.charge_kw))
    up = up if up >= min_capacity_kw else 0.0
    down = down if down >= min_capacity_kw and charge_bid is not None else 0.0
    if up == 0.0 and down == 0.0:
        return None
    bids = charge_bid.segments(down) if charge_bid is not None and down else []
    return {
        "offer_id": f"{market.value}:{x.aggregation_id}:{x.start}",
        "market": market.value,
        "product": "energy",
        "aggregation_id": x.aggregation_id,
        "interval_start": x.start,
        "interval_end": x.end,
        "quantity_kw": round(up, 3),
        "quantile": quantile,
        "min_power_kw": round(-down, 3) or 0.0,
        "max_power_kw": round(up, 3),
        "max_charge_kw": round(down, 3),
        "energy_limit_kwh": round(max(0.0, float(x.discharge_kwh)), 3),
        "charge_energy_limit_kwh": round(max(0.0, float(x.charge_kwh)), 3),
        "state_of_charge_kwh": round(max(0.0, float(x.stored_kwh)), 3),
        "ramp_rate_kw_per_min": round(
            max(0.0, float(x.resources)) * ramp_kw_per_min_per_resource, 3
        ),
        "price_segments": bids + (curve.segments(up) if up else []),
    }


def build_regulation_offer(
    x: OfferInputs,
    curve: OfferCurve,
    *,
    min_capacity_kw: float,
    ramp_kw_per_min_per_resource: float,
    signal_rate_per_min: float,
    quantile: str,
    market: Market = Market.DAY_AHEAD,
) -> Offer | None:
    """Symmetric regulation capacity: what the aggregation can both give and take at the
    quantile, and no more than its resources can follow when the signal changes fast (each
    resource carries at most its ramp limit over the signal's change per minute)."""
    follow = max(0.0, float(x.resources)) * ramp_kw_per_min_per_resource / signal_rate_per_min
    c = min(max(0.0, float(x.discharge_kw)), max(0.0, float(x.charge_kw)), follow)
    if c < min_capacity_kw:
        return None
    c = round(c, 3)
    return {
        "offer_id": f"{market.value}:regulation:{x.aggregation_id}:{x.start}",
        "market": market.value,
        "product": "regulation",
        "aggregation_id": x.aggregation_id,
        "interval_start": x.start,
        "interval_end": x.end,
        "quantity_kw": c,
        "quantile": quantile,
        "min_power_kw": -c,
        "max_power_kw": c,
        "max_charge_kw": c,
        "energy_limit_kwh": round(max(0.0, float(x.discharge_kwh)), 3),
        "charge_energy_limit_kwh": round(max(0.0, float(x.charge_kwh)), 3),
        "state_of_charge_kwh": round(max(0.0, float(x.stored_kwh)), 3),
        "ramp_rate_kw_per_min": round(
            max(0.0, float(x.resources)) * ramp_kw_per_min_per_resource, 3
        ),
        "price_segments": curve.segments(c),
    }


@dataclass(frozen=True, slots=True)
class MarketGates:
    """When each market takes offers. Day-ahead: every interval of an operating day (local
    midnight to midnight), until the gate closes at a local time the day before. Real-time:
    each 5-minute interval until `rt_closure_minutes` before it starts, offered over the
    `rt_horizon_minutes` after that."""

    timezone: ZoneInfo
    da_closure: time
    rt_closure_minutes: int
    da_interval_minutes: int = 60
    rt_interval_minutes: int = 5
    rt_horizon_minutes: int = 60

    def da_gate(self, day: date) -> datetime:
        return datetime.combine(day - timedelta(days=1), self.da_closure, self.timezone)

    def day_ahead(self, now: datetime, horizon: timedelta) -> list[tuple[datetime, datetime]]:
        """The intervals of every operating day whose gate is still open and that begins
        within the horizon."""
        out = []
        day = now.astimezone(self.timezone).date()
        while (begin := datetime.combine(day, time(), self.timezone)) < now + horizon:
            if self.da_gate(day) > now:
                end = datetime.combine(day + timedelta(days=1), time(), self.timezone)
                step = timedelta(minutes=self.da_interval_minutes)
                t = begin.astimezone(UTC)
                while t < end:  # elapsed time: 23 or 25 hours on clock-change days
                    out.append((t, t + step))
                    t += step
            day += timedelta(days=1)
        return out

    def real_time(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """The 5-minute intervals whose gate is open, over the real-time horizon."""
        step = self.rt_interval_minutes * 60
        first = now.timestamp() + self.rt_closure_minutes * 60
        t = -(-first // step) * step  # the first boundary at or after the first open start
        last = first + self.rt_horizon_minutes * 60
        out = []
        while t < last:
            s = datetime.fromtimestamp(t, UTC)
            out.append((s, s + timedelta(seconds=step)))
            t += step
        return out


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
    offered_ends: Sequence[str] = (),
) -> AwardRefusal | None:
    """An award must clear what we offered: the interval of one of our offers, more than
    nothing, and within the offered range — up to full discharge (positive kW) or, where the
    charge side was offered, down to full charge (negative)."""
    if offer is None:
        if offered_ends:
            return AwardRefusal(
                "interval_end",
                f"{aggregation_id} offered the interval starting at {interval[0].isoformat()} "
                f"ending at {', '.join(offered_ends)}, not at {interval[1].isoformat()}",
            )
        return AwardRefusal(
            "interval_start",
            f"{aggregation_id} offered nothing (0 kW) for an interval starting at "
            f"{interval[0].isoformat()}",
        )
    up = float(offer.get("max_power_kw", offer["quantity_kw"]))
    down = -min(0.0, float(offer.get("min_power_kw", 0.0)))  # older offers: discharge only
    if offer.get("product") == "regulation":
        if awarded_kw <= 0:
            return AwardRefusal(
                "awarded_kw",
                f"regulation capacity is up and down at once: award it in kW above 0, at most "
                f"{up:g} kW offered for {offer['interval_start']}",
            )
        if round(awarded_kw, 3) > up:
            return AwardRefusal(
                "awarded_kw",
                f"{awarded_kw:g} kW is more than the {up:g} kW of regulation (up and down) "
                f"offered for {offer['interval_start']}",
            )
        return None
    what = (
        f"{offer.get('market', Market.DAY_AHEAD.value)} offer for {offer['interval_start']}: "
        f"{up:g} kW up (discharge), {down:g} kW down (charge)"
    )
    if awarded_kw == 0:
        return AwardRefusal("awarded_kw", f"must not be 0 kW; {what}")
    if awarded_kw < 0 and round(-awarded_kw, 3) > down:  # offered quantities are rounded to W
        side = "more charging than" if down else "charging, which was not"
        return AwardRefusal("awarded_kw", f"{awarded_kw:g} kW is {side} offered; {what}")
    if awarded_kw > 0 and round(awarded_kw, 3) > up:
        return AwardRefusal("awarded_kw", f"{awarded_kw:g} kW is more than offered; {what}")
    return None


def sellable_kw(
    power_kw: NDArray[np.float64],
    energy_kwh: NDArray[np.float64],
    hours: NDArray[np.float64],
    spent_kwh: float = 0.0,
    min_kw: float = 0.0,
) -> NDArray[np.float64]:
    """The discharge each interval of a day-ahead day (or of the real-time intervals offered
    together) can offer when every offer may be awarded.

    A market clears each interval on its own, so what sells in one interval is gone for the
    next. Interval h has `energy_kwh[h]` above every floor at the quantile offered; the energy
    sold in it and before it (and `spent_kwh`, awarded before the day and not yet delivered)
    may have come from resources still there, so the day holds if, for every h,
    Σ_{k≤h} offered_k × hours_k + spent ≤ energy_h.

    Among the offers that hold, this takes the max-min fair one (progressive filling): every
    interval's power rises together until a prefix of the day runs out of energy, that prefix
    stays, and the rest rise on. The energy spreads over the day instead of going to its first
    intervals, and a lean morning does not hold back an evening full of arrivals. Intervals left
    below the market minimum `min_kw` are not offered; where energy remains, the minimum is
    offered in as many of them as hold, in the day's order."""
    p = np.maximum(np.asarray(power_kw, dtype=np.float64), 0.0)
    e = np.maximum(np.asarray(energy_kwh, dtype=np.float64), 0.0)
    h = np.asarray(hours, dtype=np.float64)

    def slack(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return e - np.cumsum(x * h) - spent_kwh

    if p.size == 0 or (slack(p) >= -1e-9).all():
        return p
    x = np.zeros_like(p)
    free = np.ones(p.size, dtype=np.bool_)
    while free.any():
        lo, hi = 0.0, float(p[free].max())
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if (slack(np.where(free, np.minimum(p, mid), x)) >= -1e-9).all():
                lo = mid
            else:
                hi = mid
        x = np.where(free, np.minimum(p, lo), x)
        tight = np.flatnonzero(slack(x) <= 1e-6 * np.maximum(e, 1.0))
        if tight.size == 0 or not free[: int(tight.max()) + 1].any():
            break  # the intervals still free are at their own power: nothing left to fill
        free[: int(tight.max()) + 1] = False
    if min_kw > 0:
        x[x < min_kw] = 0.0
        for k in np.flatnonzero((x == 0.0) & (p >= min_kw)):
            x[k] = min_kw
            if (slack(x) < -1e-9).any():
                x[k] = 0.0
    return x

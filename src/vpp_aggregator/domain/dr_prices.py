"""Prices a utility sends in an event (OpenADR `PRICE`, `EXPORT_PRICE`), as $/kWh windows.

Definition: PRICE is "the price of energy", EXPORT_PRICE "the price of energy exported";
"units and currency defined in associated eventPayloadDescriptor". UG 7.3: a naturally single
payload may pack several values, each a sub-interval: "divide the duration of the interval by
the number of items in the values array". The recharge planner buys at these prices where they
apply (`domain/tariff.EventPrices`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vpp_aggregator.domain.dr_event import DrEvent, Payload, Window

PRICE_TYPES = ("PRICE", "EXPORT_PRICE")
PER_KWH = {"KWH": 1.0, "MWH": 0.001}  # a descriptor's energy unit: the price per kWh


@dataclass(frozen=True, slots=True)
class PriceWindow:
    start: datetime
    end: datetime | None  # None: open-ended
    usd_per_kwh: float
    export: bool  # EXPORT_PRICE: what energy sent to the grid earns


def _unit_factor(event: DrEvent, payload: Payload) -> tuple[float | None, str]:
    units = (event.units.get(payload.type) or "KWH").upper()
    currency = (event.currency.get(payload.type) or "USD").upper()
    if units not in PER_KWH:
        return None, f"units {units!r}: a price per KWH or MWH is needed"
    if currency != "USD":
        return None, f"currency {currency!r}: the tariff is in USD"
    return PER_KWH[units], ""


def prices_in(event: DrEvent, w: Window, payload: Payload) -> tuple[list[PriceWindow], str]:
    """The payload's prices over the window, split into sub-intervals when it packs several;
    none, and why, when they cannot be read."""
    factor, why = _unit_factor(event, payload)
    values = payload.values
    if factor is None:
        return [], why
    if not values or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return [], "values are not numbers"
    if w.end is None and len(values) > 1:
        return [], "several values over an open-ended interval"
    export = payload.type == "EXPORT_PRICE"
    if w.end is None:
        return [PriceWindow(w.start, None, float(values[0]) * factor, export)], ""
    step = (w.end - w.start) / len(values)
    return [
        PriceWindow(w.start + i * step, w.start + (i + 1) * step, float(v) * factor, export)
        for i, v in enumerate(values)
    ], ""

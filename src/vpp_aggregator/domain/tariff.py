"""Time-of-use prices (acnportal tariff format) and the cheapest window to recharge in."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from vpp_aggregator.domain.dr_prices import PriceWindow


class PriceCurve(Protocol):
    """What the recharge planner asks of prices."""

    def cheapest_start(
        self,
        earliest: datetime,
        latest_end: datetime,
        duration: timedelta,
        step: timedelta = ...,
        blocked: Callable[[datetime], bool] | None = None,
    ) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Tariff:
    name: str
    schedule: list[dict[str, Any]]
    timezone: str

    def price(self, at: datetime) -> float:
        """$/kWh at an aware instant, from the season, day type and hour that apply locally."""
        local = at.astimezone(ZoneInfo(self.timezone))
        for period in self.schedule:
            if not _in_season(local, period["effective_start"], period["effective_end"]):
                continue
            mask = period.get("dow_mask", "ALL")
            if (mask == "WEEKDAYS" and local.weekday() >= 5) or (
                mask == "WEEKENDS" and local.weekday() < 5
            ):
                continue
            hour = local.hour + local.minute / 60.0
            price = period["tariffs"][0]
            for start, value in zip(period["times"], period["tariffs"], strict=True):
                if hour >= start:
                    price = value
            return float(price)
        raise ValueError(f"tariff {self.name} has no price for {local.isoformat()}")

    def cheapest_start(
        self,
        earliest: datetime,
        latest_end: datetime,
        duration: timedelta,
        step: timedelta = timedelta(minutes=15),
        blocked: Callable[[datetime], bool] | None = None,
    ) -> datetime:
        return cheapest_start(self.price, earliest, latest_end, duration, step, blocked)


@dataclass(frozen=True, slots=True)
class EventPrices:
    """The tariff, with the prices utilities sent in events (OpenADR `PRICE`) where they apply;
    where two overlap, the one received later wins. `windows` gives them, oldest first."""

    tariff: Tariff
    windows: Callable[[], list[PriceWindow]]

    def cheapest_start(
        self,
        earliest: datetime,
        latest_end: datetime,
        duration: timedelta,
        step: timedelta = timedelta(minutes=15),
        blocked: Callable[[datetime], bool] | None = None,
    ) -> datetime:
        sent = [w for w in self.windows() if not w.export]

        def price(at: datetime) -> float:
            for w in reversed(sent):
                if w.start <= at and (w.end is None or at < w.end):
                    return w.usd_per_kwh
            return self.tariff.price(at)

        return cheapest_start(price, earliest, latest_end, duration, step, blocked)


def cheapest_start(
    price: Callable[[datetime], float],
    earliest: datetime,
    latest_end: datetime,
    duration: timedelta,
    step: timedelta = timedelta(minutes=15),
    blocked: Callable[[datetime], bool] | None = None,
) -> datetime:
    """Start of the cheapest `duration` block inside [earliest, latest_end] (earliest on ties)
    covering no step `blocked` says is taken; the first block when every one is."""
    # Candidates on the step grid (quarter hours), so a block can start when a price period does.
    step_s = step.total_seconds()
    first = datetime.fromtimestamp(
        math.ceil(earliest.timestamp() / step_s) * step_s, tz=earliest.tzinfo
    )
    best, best_cost = first, math.inf
    start = first
    while start + duration <= latest_end or start == first:
        cost, t = 0.0, start
        while t < start + duration:
            cost += math.inf if blocked is not None and blocked(t) else price(t)
            t += step
        if cost < best_cost - 1e-12:
            best, best_cost = start, cost
        start += step
        if start + duration > latest_end:
            break
    return best


def _in_season(local: datetime, start: str, end: str) -> bool:
    sm, sd = (int(x) for x in start.split("-"))
    em, ed = (int(x) for x in end.split("-"))
    key, s, e = (local.month, local.day), (sm, sd), (em, ed)
    return s <= key <= e if s <= e else (key >= s or key <= e)

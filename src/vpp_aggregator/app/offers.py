"""Offers per aggregation, in the day-ahead and the real-time market, each interval offered
once while its gate is open (`domain/market.MarketGates`).

Resources that a running or scheduled dispatch holds during an interval cannot take an award
then (a resource serves one dispatch at a time), so their capacity is taken off the forecast
before offering, and so is regulation awarded then (its kW up and down): an offer never sells
what is already committed. Energy and regulation offered for the same hour share the fleet;
an award of one is checked against what the other was awarded (`MarketService.award`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Protocol

from vpp_aggregator.app.forecast_service import ForecastService
from vpp_aggregator.app.makeup import MakeupLog
from vpp_aggregator.app.offer_energy import Row, capped, committed_around, kwh_between
from vpp_aggregator.app.outbound import Offer
from vpp_aggregator.app.results import ForecastInterval
from vpp_aggregator.domain.fleet_state import Figures, FleetState
from vpp_aggregator.domain.forecast.quantiles import LEVELS, QUANTILES, Quantile
from vpp_aggregator.domain.market import (
    Market,
    MarketGates,
    OfferCurve,
    OfferInputs,
    build_offer,
    build_regulation_offer,
)

NOTHING = Figures(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)  # what a node with no held resources holds
RT_FORECAST_MINUTES = 15  # the forecast's finest step; each 5-minute interval reads its own


@dataclass(frozen=True, slots=True)
class RegulationTerms:
    """Regulation offered beside energy in the day-ahead market: its price curve ($/MW-h of
    capacity) and the signal's fast changes a resource's share is sized for."""

    curve: OfferCurve
    signal_rate_per_min: float


class OfferStore(Protocol):
    def add_offers(self, offers: Sequence[Offer], topic: str, at: datetime) -> list[Offer]: ...
    def awarded_in(
        self, aggregation_id: str, start: datetime, end: datetime, product: str
    ) -> list[tuple[str, float, datetime]]: ...
    def offers(
        self, start: datetime, end: datetime, aggregation_id: str | None = None
    ) -> list[dict[str, Any]]: ...
    def award_spans(
        self, aggregation_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime, float]]: ...


class Commitments(Protocol):
    def busy_everywhere(self, start: datetime, end: datetime) -> list[str]: ...


class OfferMaker:
    def __init__(
        self,
        repo: OfferStore,
        forecast: ForecastService,
        state: FleetState,
        dispatch: Commitments,
        clock: Callable[[], datetime],
        *,
        gates: MarketGates,
        markets: Sequence[Market],
        curve: OfferCurve,
        charge_bid: OfferCurve | None,
        min_capacity_kw: float,
        ramp_kw_per_min: float,
        quantile: Quantile,
        horizon_hours: int,
        max_forecast_hours: int,
        topic: str,
        regulation: RegulationTerms | None = None,
        makeup: MakeupLog | None = None,
    ) -> None:
        self.repo = repo
        self.forecast = forecast
        self.state = state
        self.dispatch = dispatch
        self.clock = clock
        self.gates = gates
        self.markets = tuple(markets)
        self.curve = curve
        self.charge_bid = charge_bid
        self.min_capacity_kw = min_capacity_kw
        self.ramp_kw_per_min = ramp_kw_per_min
        self.quantile = quantile
        self.horizon_hours = horizon_hours
        self.max_forecast_hours = max_forecast_hours
        self.topic = topic
        self.regulation = regulation
        # what award dispatches made up, noted by the award tracking
        self.makeup = makeup or MakeupLog(gates.timezone)
        # (market, node, interval start) known to be offered: a stored offer is never removed,
        # so a tick whose every wanted interval is in here has nothing to read or to make
        self._offered: frozenset[tuple[str, str, str]] = frozenset()

    def wanted(self, now: datetime) -> dict[Market, list[tuple[datetime, datetime]]]:
        """The intervals each market takes offers for now; day-ahead only as far as the
        forecast reaches."""
        reach = now + timedelta(hours=self.max_forecast_hours)
        out: dict[Market, list[tuple[datetime, datetime]]] = {}
        if Market.DAY_AHEAD in self.markets:
            intervals = self.gates.day_ahead(now, timedelta(hours=self.horizon_hours))
            days: dict[object, list[tuple[datetime, datetime]]] = {}
            for s, e in intervals:
                days.setdefault(s.astimezone(self.gates.timezone).date(), []).append((s, e))
            # a whole operating day or none: once its gate closes, what was left out stays out
            out[Market.DAY_AHEAD] = [
                iv for day in days.values() if day[-1][1] <= reach for iv in day
            ]
        if Market.REAL_TIME in self.markets:
            out[Market.REAL_TIME] = self.gates.real_time(now)
        return out

    def generate(self) -> list[Offer]:
        """Offers for every interval a market takes now that is not offered yet, per grid node
        reaching the market minimum on a side; an interval already offered keeps its offer, and
        a day-ahead day with any offer is not offered again (`_days_begun`)."""
        now = self.clock()
        wanted = self.wanted(now)
        spans = [iv for ivs in wanted.values() for iv in ivs]
        if not spans:
            return []
        nodes = sorted(self.state.grid_nodes())
        keys = {
            (market.value, node, s.isoformat())
            for node in nodes
            for market, intervals in wanted.items()
            for s, _ in intervals
        }
        if keys <= self._offered:
            return []
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        made = {
            (o.get("market", Market.DAY_AHEAD.value), o["aggregation_id"], o["interval_start"])
            for o in self.repo.offers(first, last)
        }
        decided = made | self._days_begun(made, wanted)
        commitments = _Commitments(self, now, first, last)
        offers: list[Offer] = []
        for node in nodes:
            for market, intervals in wanted.items():
                todo = [
                    (s, e)
                    for s, e in intervals
                    if (market.value, node, s.isoformat()) not in decided
                ]
                if todo:
                    offers += self._offers(node, market, todo, now, commitments)
        created = self.repo.add_offers(offers, self.topic, now)
        made |= {(o["market"], o["aggregation_id"], o["interval_start"]) for o in created}
        self._offered = frozenset((made | self._days_begun(made, wanted)) & keys)
        return created

    def _days_begun(
        self,
        made: set[tuple[str, str, str]],
        wanted: dict[Market, list[tuple[datetime, datetime]]],
    ) -> set[tuple[str, str, str]]:
        """The day-ahead intervals of every (node, operating day) with an offer made: a day is
        offered once, whole. Its energy is shared out over the day (`_sellable`); the hours
        left without an offer then are left without one, or the next tick would sell the same
        stored energy again in them before any award came back (a 500 kWh battery sold
        1,200 kWh in four ticks that way)."""
        intervals = wanted.get(Market.DAY_AHEAD, [])
        if not intervals:
            return set()
        da, tz = Market.DAY_AHEAD.value, self.gates.timezone
        days: dict[object, list[str]] = {}
        for s, _ in intervals:
            days.setdefault(s.astimezone(tz).date(), []).append(s.isoformat())
        begun = {
            (node, datetime.fromisoformat(start).astimezone(tz).date())
            for market, node, start in made
            if market == da
        }
        return {(da, node, s) for node, day in begun for s in days.get(day, ())}

    def _offers(
        self,
        node: str,
        market: Market,
        intervals: list[tuple[datetime, datetime]],
        now: datetime,
        commitments: _Commitments,
    ) -> list[Offer]:
        step = self.gates.da_interval_minutes if market is Market.DAY_AHEAD else RT_FORECAST_MINUTES
        hours = math.ceil((intervals[-1][1] - now).total_seconds() / 3600.0) + 1
        doc = self.forecast.capacity_forecast(min(hours, self.max_forecast_hours), step, node)
        by_start = {datetime.fromisoformat(i["start"]): i for i in doc["intervals"]}
        live = commitments.live(step).get(node, NOTHING)
        q = self.quantile
        rows: list[Row] = []
        for start, end in intervals:
            f = self._covering(by_start, start, step)
            if f is None:
                continue
            held = commitments.held(start, end, step).get(node, NOTHING)
            # regulation awarded then holds its kW up and down: not offered again as energy
            regulating = commitments.regulating(node, start, end)
            inputs = OfferInputs(
                node,
                start.isoformat(),
                end.isoformat(),
                f["discharge_kw"][q] - held.discharge_kw - regulating,
                f["discharge_kwh"][q] - held.discharge_kwh,
                f["charge_kw"][q] - held.charge_kw - regulating,
                f["available_vehicles"][q] - held.available_resource_count,
                charge_kwh=live.charge_kwh - held.charge_kwh,
                stored_kwh=live.gross_energy_kwh,
            )
            rows.append((held.discharge_kw, inputs, inputs, doc["model"]["name"]))
        if market is Market.DAY_AHEAD and rows:
            rows = self._sellable(node, rows, now)
        elif rows:
            rows = self._sellable_real_time(node, rows, now)
        out: list[Offer] = []
        for held_kw, energy_inputs, inputs, model in rows:
            offer = build_offer(
                energy_inputs,
                self.curve,
                min_capacity_kw=self.min_capacity_kw,
                ramp_kw_per_min_per_resource=self.ramp_kw_per_min,
                quantile=q,
                market=market,
                charge_bid=self.charge_bid,
            )
            both = [offer]
            if self.regulation is not None and market is Market.DAY_AHEAD:
                both.append(
                    build_regulation_offer(
                        inputs,
                        self.regulation.curve,
                        min_capacity_kw=self.min_capacity_kw,
                        ramp_kw_per_min_per_resource=self.ramp_kw_per_min,
                        signal_rate_per_min=self.regulation.signal_rate_per_min,
                        quantile=q,
                    )
                )
            if offer is not None:  # the power energy and regulation awarded then share
                offer["power_limit_kw"] = round(max(0.0, float(inputs.discharge_kw)), 3)
            for made in both:
                if made is not None:
                    made["committed_kw"] = round(held_kw, 3)
                    made["model"] = model
                    made["generated_at"] = now.isoformat()
                    out.append(made)
        return out

    def _sellable(
        self,
        node: str,
        rows: list[Row],
        now: datetime,
    ) -> list[Row]:
        """A day-ahead day's energy offers, each interval's power capped so that the whole day
        can be awarded (`domain/market.sellable_kw`), counting what is awarded but not yet
        delivered before the day and keeping back what the last award days' dispatches made up
        by each hour (`app/makeup`); regulation keeps the uncapped inputs (it returns what it
        takes). Recharging between the two is not counted: recharges are booked after a
        discharge at the tariff's cheapest time, not before the next day's awards, and a replay
        that counted them delivered 38 % of what it sold instead of 97 % (docs/replay.md)."""
        first = datetime.fromisoformat(rows[0][1].start)
        spans = [(s, e, kw) for s, e, kw in self.repo.award_spans(node, now, first) if kw > 0]
        ends = [datetime.fromisoformat(r[1].end) for r in rows]
        # kept back for what the members outside the dispatch may draw beyond the baseline
        kept = self.makeup.reserve(node, ends, float(LEVELS[QUANTILES.index(self.quantile)]))
        return capped(rows, kwh_between(spans, now, first), kept, self.min_capacity_kw)

    def _sellable_real_time(
        self,
        node: str,
        rows: list[Row],
        now: datetime,
    ) -> list[Row]:
        """Real-time intervals' energy offers capped as a day-ahead day's are: each interval
        clears on its own, so the intervals offered together share the energy the fleet holds.
        Each keeps back what is committed before it (awards, and real-time offers made and not
        awarded yet: those may still be) and what awards and such offers beginning after it
        that operating day will take; recharging between is not counted, as a day's offers do
        not count it. Offered each at what the fleet could give for five minutes, a battery
        holding 95 kWh above its floor was offered 250 kWh."""
        starts = [datetime.fromisoformat(r[1].start) for r in rows]
        ends = [datetime.fromisoformat(r[1].end) for r in rows]
        tz = self.gates.timezone
        day_ends = [
            datetime.combine(s.astimezone(tz).date() + timedelta(days=1), time(), tz)
            for s in starts
        ]
        awards = self.repo.award_spans(node, now, max(day_ends))
        awarded = {(s, e) for s, e, _ in awards}
        since = now - timedelta(minutes=self.gates.rt_interval_minutes)
        pending = [
            (s, e, float(o["max_power_kw"]))
            for o in self.repo.offers(since, max(day_ends), node)
            if o.get("market") == Market.REAL_TIME.value
            and o.get("product", "energy") == "energy"
            and (
                (s := datetime.fromisoformat(o["interval_start"])),
                (e := datetime.fromisoformat(o["interval_end"])),
            )
            not in awarded
        ]
        committed = [(s, e, kw) for s, e, kw in awards if kw > 0] + pending
        kept = committed_around(committed, starts, ends, now, day_ends)
        return capped(rows, 0.0, kept, self.min_capacity_kw)

    @staticmethod
    def _covering(
        by_start: dict[datetime, ForecastInterval], start: datetime, step_minutes: int
    ) -> ForecastInterval | None:
        """The forecast interval an offered interval falls in."""
        ts = start.timestamp()
        begin = ts - ts % (step_minutes * 60)
        for key in (start, datetime.fromtimestamp(begin, start.tzinfo)):
            if key in by_start:
                return by_start[key]
        return None


class _Commitments:
    """What one `generate` run reads of the fleet and the store, read once and shared by every
    grid node and market: the live capacity per window (one snapshot of all nodes instead of one
    per node, each of which made the capacity engine re-evaluate the fleet under its lock), what
    dispatches hold per interval (the same for every node), and regulation awarded per node
    (one read over the whole span; per interval only where the node has any)."""

    def __init__(self, maker: OfferMaker, now: datetime, first: datetime, last: datetime) -> None:
        self.maker, self.now = maker, now
        self._live: dict[int, dict[str, Figures]] = {}
        self._held: dict[tuple[datetime, datetime, int], dict[str, Figures]] = {}
        self._span = (first, last)
        self._any_held: bool | None = None  # read when first needed: most ticks offer nothing
        self._regulated: dict[str, bool] = {}

    def live(self, step_minutes: int) -> dict[str, Figures]:
        if step_minutes not in self._live:
            snap = self.maker.state.capacity(self.now, step_minutes)
            self._live[step_minutes] = snap.by_grid_node
        return self._live[step_minutes]

    def held(self, start: datetime, end: datetime, step_minutes: int) -> dict[str, Figures]:
        if self._any_held is None:
            self._any_held = bool(self.maker.dispatch.busy_everywhere(*self._span))
        if not self._any_held:  # nothing held anywhere in the span: nothing in any interval
            return {}
        key = (start, end, step_minutes)
        if key not in self._held:
            busy = self.maker.dispatch.busy_everywhere(start, end)
            self._held[key] = self.maker.state.capacity_of(busy, self.now, step_minutes)
        return self._held[key]

    def regulating(self, node: str, start: datetime, end: datetime) -> float:
        repo = self.maker.repo
        if node not in self._regulated:
            self._regulated[node] = bool(repo.awarded_in(node, *self._span, "regulation"))
        if not self._regulated[node]:
            return 0.0
        return sum(kw for _, kw, _ in repo.awarded_in(node, start, end, "regulation"))

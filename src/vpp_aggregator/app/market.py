"""The market side of the aggregator (L4): offers per aggregation and interval, awards turned
into dispatches, and settlement of awarded against delivered energy measured from telemetry."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from vpp_aggregator.app.award_tracking import AwardTracking
from vpp_aggregator.app.awards import AwardRefusedError, AwardStatus, award_view, never_ran
from vpp_aggregator.app.back_to_back import BackToBack
from vpp_aggregator.app.dispatch import (
    Bus,
    DispatchNotFoundError,
    DispatchRejectedError,
    DispatchRequest,
    DispatchService,
)
from vpp_aggregator.app.dispatch_records import DispatchRecord
from vpp_aggregator.app.forecast_service import ForecastService
from vpp_aggregator.app.makeup import MakeupLog, MakeupStore
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.messages import MarketAward
from vpp_aggregator.app.offers import OfferMaker, OfferStore, RegulationTerms
from vpp_aggregator.app.outbound import Offer, Settlement
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.app.request_status import dispatch_status
from vpp_aggregator.app.settlement import BaselinePolicy, MeasurementStore, Meter
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.quantiles import QUANTILES
from vpp_aggregator.domain.market import (
    AwardRefusal,
    Market,
    MarketGates,
    OfferCurve,
    award_refusal,
)

log = logging.getLogger(__name__)


class MarketStore(OfferStore, MeasurementStore, MakeupStore, Protocol):
    """Offers (`app/offers`), measurement (`app/settlement`) and what dispatches made up
    (`app/makeup`), with awards and the outbox."""

    def offers_at(self, aggregation_id: str, interval_start: datetime) -> list[dict[str, Any]]: ...
    def regulation_awarded(self, at: datetime) -> dict[str, float]: ...
    def awarded_in(
        self, aggregation_id: str, start: datetime, end: datetime, product: str
    ) -> list[tuple[str, float, datetime]]: ...
    def add_award(self, award: dict[str, Any]) -> bool: ...
    def get_award(self, award_id: str) -> dict[str, Any] | None: ...
    def awards_to_settle(self, before: datetime) -> list[dict[str, Any]]: ...
    def settle(self, award_id: str, settlement: Settlement, topic: str, at: datetime) -> None: ...
    def dispatched_awards(
        self, start: datetime, end: datetime, aggregation_id: str | None = None
    ) -> list[dict[str, Any]]: ...
    def settlements(self, start: datetime, end: datetime) -> list[dict[str, Any]]: ...
    def relay(
        self,
        send: Callable[[list[tuple[str, str, dict[str, Any]]]], list[bool]],
        at: datetime,
        limit: int = 5_000,
    ) -> int: ...


class MarketService:
    def __init__(
        self,
        repo: MarketStore,
        forecast: ForecastService,
        state: FleetState,
        dispatch: DispatchService,
        bus: Bus,
        clock: Callable[[], datetime],
        *,
        curve: OfferCurve,
        min_capacity_kw: float,
        ramp_kw_per_min: float,
        gates: MarketGates,
        markets: Sequence[Market] = (Market.DAY_AHEAD, Market.REAL_TIME),
        charge_bid: OfferCurve | None = None,
        quantile: str = "p10",
        horizon_hours: int = 24,
        max_forecast_hours: int = 72,
        regulation: RegulationTerms | None = None,
        hold_seconds: float = 300.0,
        baselines: BaselinePolicy | None = None,
        offers_topic: str = "vpp.market.offers",
        settlement_topic: str = "vpp.market.settlement",
    ) -> None:
        if quantile not in QUANTILES:
            raise ValueError(f"offer quantile must be one of {', '.join(QUANTILES)}")
        self.repo = repo
        self.state = state
        self.dispatch = dispatch
        self.bus = bus
        self.clock = clock
        self.hold_seconds = hold_seconds
        self.settlement_topic = settlement_topic
        self.maker = OfferMaker(
            repo,
            forecast,
            state,
            dispatch,
            clock,
            gates=gates,
            markets=markets,
            curve=curve,
            charge_bid=charge_bid,
            min_capacity_kw=min_capacity_kw,
            ramp_kw_per_min=ramp_kw_per_min,
            quantile=next(q for q in QUANTILES if q == quantile),
            horizon_hours=horizon_hours,
            max_forecast_hours=max_forecast_hours,
            regulation=regulation,
            topic=offers_topic,
            makeup=MakeupLog(gates.timezone, repo),
        )
        self.meter = Meter(repo, state, baselines or BaselinePolicy(), hold_seconds, clock)
        # set by the aggregator once regulation runs: the score of an aggregation over a span
        self.regulation_score: Callable[[str, datetime, datetime], float | None] = lambda *_: None
        self._relay_lock = threading.Lock()
        self.back_to_back = BackToBack(
            repo, dispatch, clock, AwardTracking(self.meter, state, self.maker.makeup)
        )

    # ------------------------------------------------------------------ offers
    def generate_offers(self) -> list[Offer]:
        """Offer every interval the markets take now that is not offered yet (`app/offers`),
        and send them (what an earlier try left unsent goes with the outbox sweep)."""
        created = self.maker.generate()
        if created:
            self.relay()
        return created

    def offers(
        self, start: datetime, end: datetime, aggregation_id: str | None
    ) -> list[dict[str, Any]]:
        return self.repo.offers(start, end, aggregation_id)

    # ------------------------------------------------------------------ awards
    def award(self, a: MarketAward) -> Outcome:
        """A cleared offer: recorded once, dispatched once (`source="market_award"`), with what
        became of it (see `app/awards`). The HTTP route and the Kafka consumer both come here; an
        award that does not clear our offer is an `AwardRefusedError` and is not recorded."""
        if a.aggregation_id not in self.state.grid_nodes():
            raise AwardRefusedError(
                "aggregation_id", f"{a.aggregation_id!r} is not an aggregation of ours"
            )
        interval = (a.interval_start, a.interval_end)
        offered = self.repo.offers_at(a.aggregation_id, a.interval_start)
        offer = next(
            (
                o
                for o in offered
                if datetime.fromisoformat(o["interval_end"]) == a.interval_end
                and o.get("product", "energy") == a.product
            ),
            None,
        )
        same_span = [
            o.get("product", "energy")
            for o in offered
            if datetime.fromisoformat(o["interval_end"]) == a.interval_end
        ]
        if offer is None and same_span:  # the interval was offered, the product was not
            raise AwardRefusedError(
                "product",
                f"{a.aggregation_id} offered no {a.product} for the interval starting at "
                f"{a.interval_start.isoformat()}, only {', '.join(sorted(set(same_span)))}",
            )
        refusal = award_refusal(
            offer, a.aggregation_id, interval, a.awarded_kw, [o["interval_end"] for o in offered]
        )
        if refusal is None and offer is not None:
            refusal = self._beside_the_other_product(a, offer)
        if refusal is not None:
            raise AwardRefusedError(refusal.field, refusal.message)
        known = self.repo.get_award(a.award_id)
        if known is not None:
            return Outcome("duplicate", known["dispatch_id"] or a.award_id)
        now = self.clock()
        row: dict[str, Any] = {
            "award_id": a.award_id,
            "aggregation_id": a.aggregation_id,
            "interval_start": a.interval_start,
            "interval_end": a.interval_end,
            "awarded_kw": a.awarded_kw,
            "price_per_mwh": a.price_per_mwh,
            "received_at": now,
            "status": AwardStatus.EXPIRED.value,
            "reason": None,
            "dispatch_id": None,
            "product": a.product,
        }
        if a.interval_end <= now:
            row["reason"] = (
                f"received at {now.isoformat()}, after its interval ended at "
                f"{a.interval_end.isoformat()}"
            )
        elif a.product == "regulation":  # the signal is followed while it runs (app/regulation)
            row["status"] = AwardStatus.REGULATING.value
        else:
            record = self.back_to_back.follow_on(a) or self._dispatch(a, now)
            status, reason = dispatch_status(record)
            row["dispatch_id"] = record.dispatch_id
            row["status"] = AwardStatus(status).value
            row["reason"] = reason
        if not self.repo.add_award(row):  # another process recorded it meanwhile
            return Outcome("duplicate", a.award_id)
        return Outcome(row["status"], row["dispatch_id"] or a.award_id, row["reason"])

    def _beside_the_other_product(
        self, a: MarketAward, offer: dict[str, Any]
    ) -> AwardRefusal | None:
        """Energy and regulation are offered from the same fleet: what one product was awarded
        for overlapping intervals is not there for the other. A regulation award needs its kW
        up and down beyond the energy awarded; an energy award needs its side beyond the
        regulation awarded."""
        other = "energy" if a.product == "regulation" else "regulation"
        made = offer.get("generated_at")
        offered_at = datetime.fromisoformat(made) if made else None
        # awards that came before the offer was made were taken off it already
        taken = [
            (aid, kw)
            for aid, kw, received in self.repo.awarded_in(
                a.aggregation_id, a.interval_start, a.interval_end, other
            )
            if aid != a.award_id and (offered_at is None or received >= offered_at)
        ]
        if not taken:
            return None
        used = sum(abs(kw) for _, kw in taken)
        if a.product == "regulation":
            room = float(offer["quantity_kw"])
        else:  # the power the interval has (a day-ahead offer's energy is shared over the day)
            room = (
                float(offer.get("power_limit_kw", offer["max_power_kw"]))
                if a.awarded_kw > 0
                else -float(offer["min_power_kw"])
            )
        if abs(a.awarded_kw) + used > room + 1e-3:
            names = ", ".join(aid for aid, _ in taken[:3])
            return AwardRefusal(
                "awarded_kw",
                f"{abs(a.awarded_kw):g} kW of {a.product} and the {used:g} kW of {other} "
                f"already awarded over this interval ({names}) exceed the {room:g} kW offered",
            )
        return None

    def _dispatch(self, a: MarketAward, now: datetime) -> DispatchRecord:
        """The award's dispatch (once: a redelivered award finds the one made before)."""
        begin = max(a.interval_start, now)
        request = DispatchRequest(
            target_kw=a.awarded_kw,
            duration_minutes=max(1, math.ceil((a.interval_end - begin).total_seconds() / 60.0)),
            start=None if begin <= now + timedelta(seconds=1) else begin,
            grid_node=a.aggregation_id,
            source="market_award",
            reference=a.award_id,
            idempotency_key=f"award:{a.award_id}",
            ramp_in=True,
        )
        try:
            record, _ = self.dispatch.create(request)
        except DispatchRejectedError as exc:
            raise InvalidMessageError(f"dispatch refused: {exc}") from None
        return record

    def follow(self) -> int:
        """Call every dispatch tick (`app/back_to_back`)."""
        return self.back_to_back.follow()

    def get_award(self, award_id: str) -> dict[str, Any] | None:
        row = self.repo.get_award(award_id)
        return award_view(row) if row is not None else None

    # ------------------------------------------------------------------ settlement
    def settle_due(self) -> int:
        """Settle every award whose interval is over, once: measured from telemetry when its
        dispatch ran, `not_delivered` (with the reason) when nothing ran for it."""
        now = self.clock()
        done = 0
        for award in self.repo.awards_to_settle(now):
            self.repo.settle(award["award_id"], self._settle(award), self.settlement_topic, now)
            done += 1
        if done:
            self.relay()
        return done

    def _settle(self, award: dict[str, Any]) -> Settlement:
        record = None
        if award["dispatch_id"]:
            try:
                record, _, _ = self.dispatch.get(award["dispatch_id"])
            except DispatchNotFoundError:
                log.warning(
                    "award %s: dispatch %s not found", award["award_id"], award["dispatch_id"]
                )
        start, end = award["interval_start"], award["interval_end"]
        awarded_kwh = award["awarded_kw"] * (end - start).total_seconds() / 3600.0
        out: Settlement = {
            "award_id": award["award_id"],
            "aggregation_id": award["aggregation_id"],
            "interval_start": start.isoformat(),
            "interval_end": end.isoformat(),
            "awarded_kw": award["awarded_kw"],
            "awarded_kwh": round(awarded_kwh, 4),
            "price_per_mwh": award["price_per_mwh"],
            "dispatch_id": award["dispatch_id"],
            "status": "not_delivered",
            "reason": never_ran(award, record),
            "delivered_kwh": 0.0,
            "delivery_ratio": None,  # nothing ran, so nothing was measured
            "measured_from": None,
            "baseline_method": None,
            "baseline_kwh": None,
            "measured_kwh": None,
            "baseline_days": [],
            "baseline_adjustment": None,
            "baseline_note": None,
            "intervals": [],
            "resources": [],
            "product": award.get("product", "energy"),
            "performance_score": None,
        }
        if award.get("product") == "regulation" and out["reason"] is None:
            score = self.regulation_score(award["aggregation_id"], start, end)
            if score is None:  # no signal came, or this process did not follow it
                out["reason"] = "no signal and response were recorded over its interval"
                return out
            out["status"] = "settled"
            out["performance_score"] = round(score, 4)
            out["measured_from"] = "PJM performance score of the telemetry response"
            return out
        if out["reason"] is not None or record is None:
            return out
        m = self.meter.measure(award["aggregation_id"], start, end, award["awarded_kw"])
        out["status"] = "settled"
        out["delivered_kwh"] = m.delivered_kwh
        out["delivery_ratio"] = round(m.delivered_kwh / awarded_kwh, 4) if awarded_kwh else None
        out["measured_from"] = "telemetry power_kw, sample-and-hold, 5-minute intervals"
        out["baseline_method"] = m.method
        out["baseline_kwh"] = m.baseline_kwh
        out["measured_kwh"] = m.measured_kwh
        out["baseline_days"] = m.days_used
        out["baseline_adjustment"] = m.adjustment
        out["baseline_note"] = m.note
        out["intervals"] = m.intervals
        out["resources"] = m.resources
        return out

    def settlements(self, day: datetime) -> list[dict[str, Any]]:
        """Awards whose interval starts on this UTC day, with their settlement when settled and
        their status (see `app/awards`) either way."""
        start = day.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=UTC)
        out = []
        for a in self.repo.settlements(start, start + timedelta(days=1)):
            row = a["settlement"] or {
                "award_id": a["award_id"],
                "aggregation_id": a["aggregation_id"],
                "interval_start": a["interval_start"].isoformat(),
                "interval_end": a["interval_end"].isoformat(),
                "awarded_kw": a["awarded_kw"],
                "dispatch_id": a["dispatch_id"],
            }
            out.append({**row, "status": a["status"], "reason": a["reason"]})
        return out

    # ------------------------------------------------------------------ outbox
    def relay(self) -> int:
        """Send queued offers and settlements (grouped by topic, order kept within a topic).

        One relay at a time in this process, as for dispatch commands: on SQLite the store's row
        locks are no-ops, and two generations at once each relayed the other's offers too."""

        def send(items: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
            delivered = [False] * len(items)
            for topic in dict.fromkeys(t for t, _, _ in items):
                idx = [i for i, (t, _, _) in enumerate(items) if t == topic]
                acked = self.bus.publish_many(topic, [(items[i][1], items[i][2]) for i in idx])
                for i, ok in zip(idx, acked, strict=True):
                    delivered[i] = ok
            return delivered

        with self._relay_lock:  # the store's row locks cover other processes (PostgreSQL)
            return self.repo.relay(send, self.clock())

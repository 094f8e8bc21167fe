"""Wires the use cases to one store and one live state, and rebuilds that state at start-up."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.aggregate_telemetry import AggregateTelemetry
from vpp_aggregator.app.audit import AuditLog, AuditStore
from vpp_aggregator.app.baseline_policy import BaselinePolicy
from vpp_aggregator.app.capacity import CapacityService
from vpp_aggregator.app.dispatch import Bus, DispatchService, DispatchStore
from vpp_aggregator.app.dr_events import DemandResponseEvents
from vpp_aggregator.app.dr_reports import DrReports
from vpp_aggregator.app.dr_store import DrEventStore
from vpp_aggregator.app.events import EventBus, TelemetryAccepted
from vpp_aggregator.app.forecast_service import ForecastService
from vpp_aggregator.app.integration import IntegrationService
from vpp_aggregator.app.live_state import LiveStateLoader, StateImages
from vpp_aggregator.app.market import MarketService, MarketStore
from vpp_aggregator.app.offers import RT_FORECAST_MINUTES, RegulationTerms
from vpp_aggregator.app.ports import ResourceStore
from vpp_aggregator.app.reaction import ReactionTimer
from vpp_aggregator.app.registry import RegistryService
from vpp_aggregator.app.regulation import HORIZON_S, RegulationService, cached
from vpp_aggregator.app.telemetry import LatestSnapshotter, TelemetryService
from vpp_aggregator.config import Settings
from vpp_aggregator.domain.dispatch.problem import ResourceInputs
from vpp_aggregator.domain.dr_asks import Battery, Policy, Scope
from vpp_aggregator.domain.dr_caps import Departure
from vpp_aggregator.domain.dr_event import DrEvent
from vpp_aggregator.domain.efficiency import one_way_efficiency
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.market import Market, MarketGates, OfferCurve
from vpp_aggregator.domain.tariff import EventPrices, Tariff

# Middle-generation collections per full one while the forecast's history loads (default 10).
FULL_GC_EVERY_DURING_HISTORY = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


class Aggregator:
    def __init__(
        self,
        settings: Settings,
        store: ResourceStore,
        dispatch_store: DispatchStore,
        market_store: MarketStore,
        audit_store: AuditStore,
        bus: Bus,
        read_grid_signal: Callable[[Any], DrEvent],
        dr_event_store: DrEventStore,
        clock: Callable[[], datetime] = utc_now,
        images: StateImages | None = None,
    ) -> None:
        """`read_grid_signal` reads the wire form of a demand-response event (OpenADR 3:
        `adapters/openadr`, given by the bootstrap); `images` keeps images of the live state for
        a fast start (none: every start rebuilds it)."""
        self.settings = settings
        self.store = store
        self.clock = clock
        self.audit = AuditLog(audit_store, clock)
        self.events = EventBus()  # what follows from each event: `bootstrap.subscribe_handlers`
        self.state = FleetState(
            bess_min_soc_pct=settings.bess_min_soc_pct,
            stale_seconds=settings.telemetry_stale_seconds,
            round_trip_efficiency=settings.round_trip_efficiency,
            need_floor_early_leaves=settings.need_floor_early_leaves,
        )
        self.registry = RegistryService(
            store, self.state, settings.bess_min_soc_pct, clock, self.events
        )
        self.capacity = CapacityService(self.state, settings.min_capacity_kw, clock)
        self.snapshotter = LatestSnapshotter(store, self.state, clock)
        self.loader = LiveStateLoader(
            self.state,
            store,
            images,
            self.snapshotter,
            clock,
            # a view kept current is refreshed with every telemetry batch: the real-time
            # offers' only where real-time offers are made
            windows_minutes=(
                60.0,
                *((RT_FORECAST_MINUTES,) if Market.REAL_TIME.value in settings.markets else ()),
                settings.offer_interval_minutes,
            ),
        )
        self.bus = bus
        self.forecast = ForecastService(
            self.state,
            store,
            clock,
            max_horizon_hours=settings.forecast_horizon_hours,
            timezone=settings.site_timezone,
            hold_s=settings.telemetry_stale_seconds,
            model_dir=Path(settings.model_dir),
            holiday_country=settings.holiday_country,
            holiday_subdivision=settings.holiday_subdivision,
        )
        self.telemetry = TelemetryService(
            store,
            self.state,
            clock,
            settings.telemetry_max_clock_skew_seconds,
            self.events,
        )
        self.dispatch = DispatchService(
            self.state,
            dispatch_store,
            self.bus,
            clock,
            ramp_kw_per_min=settings.max_ramp_kw_per_min,
            round_trip_efficiency=settings.round_trip_efficiency,
            prefer_bess=settings.prefer_bess,
            lp_max_resources=settings.dispatch_lp_max_resources,
            max_target_kw=settings.dispatch_max_target_kw,
            soc_tolerance_pct=settings.dispatch_soc_tolerance_pct,
            recharge_target_soc_pct=settings.bess_recharge_target_soc,
            # The tariff, with the prices utilities send in events where they apply.
            tariff=EventPrices(
                load_tariff(settings.recharge_tariff, settings.site_timezone),
                lambda: self.demand_response.price_windows(),
            ),
            command_topic=settings.topic_v2g_commands,
            # renewed every third of it; a process that looks for its peers' work seldom
            # (VPP_PEER_POLL_SECONDS) claims its own for as long
            lease_seconds=max(
                30.0, 6 * settings.dispatch_tick_seconds, 3 * settings.peer_poll_seconds
            ),
            peer_poll_seconds=settings.peer_poll_seconds,
            events=self.events,
            # Site limits utilities send (OpenADR capacity limits) bound every dispatch.
            power_limit=lambda *args: self.demand_response.limit(*args),
        )

        self.aggregate_telemetry = AggregateTelemetry(
            self.state, bus, clock, topic=settings.topic_aggregate_telemetry
        )
        self.market = MarketService(
            market_store,
            self.forecast,
            self.state,
            self.dispatch,
            bus,
            clock,
            curve=OfferCurve.parse(settings.offer_curve),
            min_capacity_kw=settings.min_capacity_kw,
            ramp_kw_per_min=settings.max_ramp_kw_per_min,
            gates=MarketGates(
                ZoneInfo(settings.site_timezone),
                time.fromisoformat(settings.market_da_gate_closure),
                settings.market_rt_gate_closure_minutes,
                da_interval_minutes=settings.offer_interval_minutes,
                rt_horizon_minutes=settings.market_rt_horizon_minutes,
            ),
            markets=[Market(m) for m in settings.markets.split(",")],
            charge_bid=(
                OfferCurve.parse(settings.offer_charge_curve, falling=True)
                if settings.offer_charge_curve
                else None
            ),
            regulation=(
                RegulationTerms(
                    OfferCurve.parse(settings.regulation_offer_curve),
                    settings.regulation_signal_rate_per_min,
                )
                if settings.regulation_enabled
                else None
            ),
            quantile=settings.offer_quantile,
            horizon_hours=settings.offer_horizon_hours,
            max_forecast_hours=settings.forecast_horizon_hours,
            hold_seconds=settings.telemetry_stale_seconds,
            baselines=BaselinePolicy.parse(
                settings.baseline_default, settings.baseline_methods, settings.baseline_parameters
            ),
            offers_topic=settings.topic_market_offers,
            settlement_topic=settings.topic_market_settlement,
        )
        self.regulation = RegulationService(
            self.state,
            bus,
            clock,
            cached(market_store.regulation_awarded),
            lambda start, end: self.dispatch.busy_everywhere(start, end),
            commands_topic=settings.topic_regulation_commands,
            broadcast_topic=settings.topic_regulation_broadcast,
            horizon_s=HORIZON_S,
            ramp_kw_per_min=settings.max_ramp_kw_per_min,
            signal_rate_per_min=settings.regulation_signal_rate_per_min,
            round_trip_efficiency=settings.round_trip_efficiency,
            replan_s=settings.regulation_replan_seconds,
        )
        self.market.regulation_score = self.regulation.score_over
        self.demand_response = DemandResponseEvents(
            self.state.grid_nodes,
            self.dispatch,
            dr_event_store,
            read_grid_signal,
            lambda node: float(self.capacity.available(60, grid_node=node)["discharge"]["kw"]),
            clock,
            policy=settings.dr_policy,
            default_minutes=settings.dr_default_minutes,
            target_names=settings.openadr_targets,
            signal_policy=Policy.parse(
                settings.openadr_simple_levels,
                settings.openadr_emergency_share,
                settings.openadr_ven_name,
            ),
            batteries=self._batteries,
            departures=self._departures,
            charge_efficiency=one_way_efficiency(settings.round_trip_efficiency),
            peer_poll_seconds=settings.peer_poll_seconds,
        )
        self.dr_reports = DrReports(  # what a VTN's events ask to be told back
            self.dispatch,
            dr_event_store,
            self.state,
            market_store.power_history,
            read_grid_signal,
            clock,
            client_name=settings.openadr_ven_name,
            hold_s=settings.telemetry_stale_seconds,
            default_minutes=settings.dr_default_minutes,
        )
        self.reactions = ReactionTimer()  # grid event to first command, by stage (metrics)
        self.integration = IntegrationService(
            self.state,
            self.telemetry,
            self.dispatch,
            self.registry,
            self.demand_response,
            read_grid_signal,
            clock,
            market_award=self.market.award,
            regulation_signal=self.regulation.take,
            events=self.events,
            reactions=self.reactions,
        )

    def _inputs(
        self, scope: Scope, now: datetime, direction: int, busy: list[str]
    ) -> ResourceInputs:
        inputs, _ = self.state.dispatch_inputs(
            now,
            now,
            direction=direction,
            grid_node=scope.grid_node,
            fleet_id=scope.fleet_id,
            resource_ids=scope.resource_ids,
            busy=busy,
        )
        return inputs

    def _batteries(self, scope: Scope, now: datetime, direction: int) -> list[Battery]:
        """Batteries in the scope that can move now in `direction` (-1 charge, +1 discharge):
        available, not locked out that way, not held by a dispatch."""
        busy = self.dispatch.busy_everywhere(now, now + timedelta(minutes=1))
        inputs = self._inputs(scope, now, direction, busy)
        keep = np.flatnonzero(inputs.is_bess & inputs.available).tolist()
        return [
            Battery(
                inputs.resource_ids[i],
                float(inputs.soc_pct[i]),
                float(inputs.capacity_kwh[i]),
                float(inputs.max_charge_kw[i]),
                float(inputs.max_discharge_kw[i]),
            )
            for i in keep
        ]

    def _departures(self, scope: Scope, now: datetime) -> list[Departure]:
        """Plugged vehicles in the scope with a departure ahead."""
        inputs = self._inputs(scope, now, -1, [])
        keep = np.flatnonzero(
            ~inputs.is_bess & inputs.available & np.isfinite(inputs.departure_min)
        ).tolist()
        return [
            Departure(
                inputs.resource_ids[i],
                float(inputs.soc_pct[i]),
                float(inputs.capacity_kwh[i]),
                float(inputs.max_charge_kw[i]),
                now + timedelta(minutes=float(inputs.departure_min[i])),
                float(inputs.departure_soc_pct[i]),
            )
            for i in keep
        ]

    def load(self) -> int:
        """Bring the live state up (`app/live_state`), then what follows from it: dispatches
        resume; weeks of history for the forecaster load in the background meanwhile."""
        count = self.loader.load()
        self.dispatch.resume()
        self.loader.progress.ready.set()
        threading.Thread(target=self._load_history, name="forecast-history", daemon=True).start()
        return count

    def _load_history(self) -> None:
        """The forecast's history, with full garbage collections put off meanwhile: each one
        stops every thread (the API's too) for 0.1 s or more at a million resources, and the
        history's reads set one off every second or two. What it keeps lives as long as the
        process: collected once at the end, then frozen (not rescanned), as the load is."""
        young, middle, old = gc.get_threshold()
        gc.set_threshold(young, middle, max(old, FULL_GC_EVERY_DURING_HISTORY))
        try:
            self.forecast.load_history()
        finally:
            gc.collect()
            gc.freeze()
            gc.set_threshold(young, middle, old)

    @property
    def loaded(self) -> bool:
        return self.loader.progress.ready.is_set()

    def apply_shared_samples(
        self,
        resource_ids: list[str],
        timestamp_s: NDArray[np.float64],
        soc_pct: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        power_kw: NDArray[np.float64],
    ) -> None:
        """Telemetry another process accepted (and stored): into this process's live state."""
        rows, gens = self.state.history_rows(resource_ids)  # the history reuses them
        unknown = np.flatnonzero(rows < 0).tolist()
        for i in unknown:  # registered elsewhere a moment ago
            self.registry.reload(resource_ids[i])
        if unknown:
            rows, gens = self.state.history_rows(resource_ids)
        keep = rows >= 0
        now = self.clock()
        self.state.apply_telemetry(
            rows[keep], timestamp_s[keep], soc_pct[keep], plugged_in[keep], power_kw[keep], now
        )
        # Left dirty on purpose: this process's snapshot then covers it too (never replacing newer).
        kept = [rid for rid, k in zip(resource_ids, keep.tolist(), strict=True) if k]
        self.events.publish(
            TelemetryAccepted(
                kept,
                timestamp_s[keep],
                soc_pct[keep],
                plugged_in[keep],
                power_kw[keep],
                here=False,
                rows=(rows[keep], gens[keep]),
            )
        )


PACKAGED_TARIFF = Path(__file__).resolve().parent.parent / "tariffs" / "sce_tou_ev_8_june_2019.json"


def load_tariff(path: str, timezone: str) -> Tariff:
    """The configured TOU tariff (acnportal JSON), or the packaged SCE TOU-EV-8."""
    doc = json.loads(Path(path or PACKAGED_TARIFF).read_text())
    return Tariff(doc["name"], doc["schedule"], timezone)

"""What the aggregator does with each message from the other layers (transport-free).

The Kafka adapter decodes, calls `handle` with the message's kind, dead-letters what it refuses
and commits offsets only after it returns. `routes` is the one table of what reads each kind
(`app/messages`) and what handles it. Every handler is idempotent, so a redelivered message
changes nothing: telemetry is keyed by resource and sample time, demand-response events by event
id and interval (the dispatch idempotency key), charger and physics events set a state, not a
delta.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from vpp_aggregator.app.audit import Actor
from vpp_aggregator.app.dispatch import DispatchService
from vpp_aggregator.app.dr_events import DemandResponseEvents
from vpp_aggregator.app.events import EventBus, MessageHandled
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.messages import (
    ChargerPlugEvent,
    CommandAck,
    MarketAward,
    OtherChargingEvent,
    PhysicsAlert,
    RegulationSignal,
    read,
    read_charging_event,
)
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.app.reaction import ReactionTimer
from vpp_aggregator.app.registry import RegistryService
from vpp_aggregator.app.telemetry import TelemetryService, parse_samples
from vpp_aggregator.domain.dr_event import DrEvent
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.resources import ResourceStatus

log = logging.getLogger(__name__)
LOCKING_ALERTS = frozenset({"CAPACITY_VIOLATION", "PHYSICS_FRAUD"})
ACCEPTED = ("accepted", "ok", "applied")
REFUSED = ("rejected", "failed", "error", "faulted")


class MessageKind(StrEnum):
    """What a topic carries; the Kafka adapter maps its configured topic names to these."""

    TELEMETRY = "telemetry"
    GRID_SIGNAL = "grid_signal"
    CHARGING_EVENT = "charging_event"
    PHYSICS_ALERT = "physics_alert"
    MARKET_AWARD = "market_award"
    COMMAND_ACK = "command_ack"
    REGULATION_SIGNAL = "regulation_signal"


@dataclass(frozen=True, slots=True)
class Route:
    """How one kind of message is read (refusing it with the reasons) and then handled."""

    read: Callable[[Any], Any]
    handle: Callable[[Any], list[Outcome]]


class IntegrationService:
    def __init__(
        self,
        state: FleetState,
        telemetry: TelemetryService,
        dispatch: DispatchService,
        registry: RegistryService,
        demand_response: DemandResponseEvents,
        read_grid_signal: Callable[[Any], DrEvent],
        clock: Callable[[], datetime],
        *,
        market_award: Callable[[MarketAward], Outcome] | None = None,
        regulation_signal: Callable[[RegulationSignal], Outcome] | None = None,
        events: EventBus | None = None,
        reactions: ReactionTimer | None = None,
    ) -> None:
        self.state = state
        self.telemetry = telemetry
        self.dispatch = dispatch
        self.registry = registry
        self.demand_response = demand_response  # `app/dr_events`
        self.clock = clock
        self._market_award = market_award
        self.events = events  # `MessageHandled`: the audit trail
        self.reactions = reactions or ReactionTimer()  # a grid signal to its first command
        # Telemetry is not here: samples from many messages are handled as one batch
        # (`telemetry_samples`), after `messages.samples_in` took them out of each message.
        self.routes: dict[MessageKind, Route] = {
            MessageKind.GRID_SIGNAL: Route(
                lambda m: (read_grid_signal(m), m),
                lambda read_and_body: self.demand_response.handle(*read_and_body),
            ),
            MessageKind.CHARGING_EVENT: Route(read_charging_event, self._one(self.charging_event)),
            MessageKind.PHYSICS_ALERT: Route(
                lambda m: read(PhysicsAlert, m, "alert"), self._one(self.physics_alert)
            ),
            MessageKind.MARKET_AWARD: Route(
                lambda m: read(MarketAward, m, "award"), self._one(self.market_award)
            ),
            MessageKind.COMMAND_ACK: Route(
                lambda m: read(CommandAck, m, "acknowledgement"), self._one(self.command_ack)
            ),
        }
        if regulation_signal is not None:
            self.routes[MessageKind.REGULATION_SIGNAL] = Route(
                lambda m: read(RegulationSignal, m, "regulation signal"),
                self._one(regulation_signal),
            )

    @staticmethod
    def _one(handler: Callable[[Any], Outcome]) -> Callable[[Any], list[Outcome]]:
        return lambda message: [handler(message)]

    def handle(
        self,
        kind: MessageKind,
        message: Any,
        sender: Actor | None = None,
        received: float | None = None,
    ) -> list[Outcome]:
        """Read a decoded message of this kind and act on it; `InvalidMessageError` when it can
        never be handled. What it changed is audited as done by `sender`. A grid signal's
        reaction is timed from `received` (`time.perf_counter()` when it arrived)."""
        route = self.routes.get(kind)
        if route is None:
            raise InvalidMessageError(f"no handler for {kind} messages here")
        if kind is MessageKind.GRID_SIGNAL:
            with self.reactions.trace("grid_signals", received):
                outcomes = route.handle(route.read(message))
        else:
            outcomes = route.handle(route.read(message))
        if self.events is not None and sender is not None:
            for outcome in outcomes:
                self.events.publish(MessageHandled(sender, outcome))
        return outcomes

    def market_award(self, award: MarketAward) -> Outcome:
        """An award from the market gateway (L4): see `MarketService.award`."""
        if self._market_award is None:
            raise InvalidMessageError("this process does not take market awards")
        return self._market_award(award)

    # ------------------------------------------------------------------ telemetry
    def telemetry_samples(self, samples: list[Any]) -> list[tuple[int, str]]:
        """Ingest samples from many messages at once; returns (index, reason) of refused ones."""
        batch, rejected = parse_samples(samples)
        result = self.telemetry.ingest(batch, rejected)
        return [(r.index, r.reason) for r in result.rejected]

    # ----------------------------------------------------------------- device gateway
    def charging_event(self, event: ChargerPlugEvent | OtherChargingEvent) -> Outcome:
        """Connect/disconnect updates availability at once, from the charger's word."""
        if isinstance(event, OtherChargingEvent):
            return Outcome("ignored", f"event {event.event!r} does not change availability")
        cp = event.chargePointId
        resource_id = self.state.resource_of_charge_point(cp)
        if resource_id is None:
            return Outcome("ignored", f"charge point {cp!r} is not one of ours")
        live = self.state.live(resource_id, self.clock())
        if live is None or live.soc_pct is None:
            return Outcome("ignored", f"{resource_id} has no SoC yet; telemetry will tell")
        plugged_in = event.event == "CHARGER_CONNECTED"
        sample = {
            "resource_id": resource_id,
            "timestamp": event.timestamp or self.clock().isoformat(),
            "soc_pct": live.soc_pct,
            "plugged_in": plugged_in,
            "power_kw": 0.0,
        }
        refused = self.telemetry_samples([sample])
        if refused:
            raise InvalidMessageError(refused[0][1])
        return Outcome("applied", f"{resource_id} {'plugged in' if plugged_in else 'unplugged'}")

    def command_ack(self, message: CommandAck) -> Outcome:
        """The device gateway's answer to a command; a refusal re-plans without that resource."""
        dispatch_id = message.dispatch_id
        status = message.status.lower()
        rid = message.resource_id
        if rid is None and message.chargePointId is not None:
            rid = self.state.resource_of_charge_point(message.chargePointId)
        if rid is None:
            raise InvalidMessageError("needs resource_id (or a known chargePointId)")
        if status in ACCEPTED:
            return Outcome("accepted", f"{dispatch_id}/{rid}")
        if status in REFUSED:
            reason = message.reason or status
            done = self.dispatch.command_rejected(dispatch_id, rid, reason)
            if done == "replanned":
                return Outcome("replanned", f"{dispatch_id} without {rid}: {reason}")
            if done == "queued":
                return Outcome(
                    "queued", f"{dispatch_id} without {rid}: the process following it re-plans"
                )
            return Outcome("ignored", f"{dispatch_id}/{rid} is over or already released")
        raise InvalidMessageError(f"status {message.status!r}: expected Accepted or Rejected")

    # ----------------------------------------------------------------- physics engine
    def physics_alert(self, event: PhysicsAlert) -> Outcome:
        """A capacity violation or suspected fraud suspends the resource until an operator
        clears it (PATCH status back to active); an alert marked cleared does so itself."""
        kind, vehicle = event.event_type, event.vehicle_id
        if kind not in LOCKING_ALERTS:
            return Outcome("ignored", f"alert {kind!r} does not lock resources")
        if vehicle not in self.state:
            return Outcome("ignored", f"{vehicle!r} is not registered here")
        resource = self.registry.get(vehicle)
        cleared = (event.status or "").upper() == "CLEARED"
        wanted = ResourceStatus.ACTIVE if cleared else ResourceStatus.SUSPENDED
        if resource.status is not wanted and resource.status is not ResourceStatus.INACTIVE:
            self.registry.change(vehicle, {"status": wanted})
            log.warning("physics alert %s for %s: %s", kind, vehicle, wanted.value)
        return Outcome("cleared" if cleared else "locked", vehicle)

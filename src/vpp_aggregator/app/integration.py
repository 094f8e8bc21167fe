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
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vpp_aggregator.app.audit import Actor
from vpp_aggregator.app.dispatch import DispatchRejectedError, DispatchRequest, DispatchService
from vpp_aggregator.app.events import EventBus, MessageHandled
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.messages import (
    ChargerPlugEvent,
    CommandAck,
    GridSignal,
    MarketAward,
    OtherChargingEvent,
    PhysicsAlert,
    read,
    read_charging_event,
)
from vpp_aggregator.app.registry import RegistryService
from vpp_aggregator.app.request_status import RequestStatus, dispatch_status
from vpp_aggregator.app.telemetry import TelemetryService, parse_samples
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.resources import ResourceStatus

log = logging.getLogger(__name__)
LOCKING_ALERTS = frozenset({"CAPACITY_VIOLATION", "PHYSICS_FRAUD"})
MAX_MINUTES = 24 * 60
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a message came to: the word counted and audited (`dispatched`, `rejected` and
    `expired` as `app/request_status` says, or duplicate | ignored | applied | locked | cleared
    ...), what it concerns (the dispatch id where one was made, audited as the target), and why
    it was `rejected`."""

    outcome: str
    detail: str = ""
    reason: str | None = None


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
        available_discharge_kw: Callable[[str | None], float],
        clock: Callable[[], datetime],
        *,
        dr_policy: str = "all_available",
        dr_default_minutes: int = 60,
        market_award: Callable[[MarketAward], Outcome] | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.state = state
        self.telemetry = telemetry
        self.dispatch = dispatch
        self.registry = registry
        self.available_discharge_kw = available_discharge_kw
        self.clock = clock
        self.dr_policy = dr_policy
        self.dr_default_minutes = dr_default_minutes
        self._market_award = market_award
        self.events = events  # `MessageHandled`: the audit trail
        # Telemetry is not here: samples from many messages are handled as one batch
        # (`telemetry_samples`), after `messages.samples_in` took them out of each message.
        self.routes: dict[MessageKind, Route] = {
            MessageKind.GRID_SIGNAL: Route(
                lambda m: read(GridSignal, m, "event"), self.grid_signal
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

    @staticmethod
    def _one(handler: Callable[[Any], Outcome]) -> Callable[[Any], list[Outcome]]:
        return lambda message: [handler(message)]

    def handle(self, kind: MessageKind, message: Any, sender: Actor | None = None) -> list[Outcome]:
        """Read a decoded message of this kind and act on it; `InvalidMessageError` when it can
        never be handled. What it changed is audited as done by `sender`."""
        route = self.routes.get(kind)
        if route is None:
            raise InvalidMessageError(f"no handler for {kind} messages here")
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

    # ----------------------------------------------------------------- grid signals
    def grid_signal(self, event: GridSignal) -> list[Outcome]:
        """One outcome per request the event makes: its dispatch `dispatched`, or `rejected` with
        the reason when no resource could take it (the dispatch is stored either way, so the
        event is not dead-lettered), `duplicate` when redelivered, else `expired` or `ignored`."""
        requests = event.requests()
        if not requests:
            return [Outcome("ignored", "the event asks nothing of V2G")]
        nodes = self.state.grid_nodes()
        out = []
        for dr in requests:
            if len(dr.grid_nodes) > 1:
                raise InvalidMessageError(
                    "events targeting several grid nodes at once are not supported; send one per node"
                )
            scope = dr.grid_nodes[0] if dr.grid_nodes else dr.site
            if scope not in nodes:
                out.append(Outcome("ignored", f"no resource of this aggregator is on {scope!r}"))
                continue
            now = self.clock()
            start = dr.start or now
            span = dr.duration or timedelta(minutes=self.dr_default_minutes)
            # OpenADR writes an open-ended event as "P9999Y" (infinity), past any date: whatever
            # lasts beyond the longest dispatch from when it would begin is cut there.
            longest = max(start, now) - start + timedelta(minutes=MAX_MINUTES + 1)
            end = start + min(span, longest)
            if end <= now + timedelta(minutes=1):
                ended = f"event {dr.key} ended at {end.isoformat()}"
                out.append(Outcome(RequestStatus.EXPIRED.value, ended))
                continue
            start = max(start, now)
            minutes = min(MAX_MINUTES, math.ceil((end - start).total_seconds() / 60.0))
            target = dr.target_kw
            if target is None:
                if self.dr_policy != "all_available":
                    out.append(Outcome("ignored", "no power figure and VPP_DR_POLICY=ignore"))
                    continue
                target = self.available_discharge_kw(scope)
            if abs(target) < 1e-6:
                out.append(Outcome("ignored", "nothing to dispatch (0 kW)"))
                continue
            request = DispatchRequest(
                target_kw=target,
                duration_minutes=minutes,
                start=None if start <= now else start,
                grid_node=scope,
                source="dr_event",
                reference=dr.event_id,
                idempotency_key=f"grid_signal:{dr.key}",
            )
            try:
                record, created = self.dispatch.create(request)
            except DispatchRejectedError as exc:
                raise InvalidMessageError(f"dispatch refused: {exc}") from None
            if not created:
                out.append(Outcome("duplicate", record.dispatch_id))
                continue
            status, reason = dispatch_status(record)
            out.append(Outcome(status.value, record.dispatch_id, reason))
        return out

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
